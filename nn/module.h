#pragma once
// nn::Module: the base of every layer (PyTorch's torch::nn::Module, minus its weight).
//
//   struct Net : sg::nn::Module {
//     std::shared_ptr<sg::nn::Linear> fc1, fc2;
//     sg::Tensor scale;
//     explicit Net(sg::Generator& gen) : Module("Net") {
//       fc1 = register_module("fc1", std::make_shared<sg::nn::Linear>(784, 64, gen));
//       fc2 = register_module("fc2", std::make_shared<sg::nn::Linear>(64, 10, gen));
//       scale = sg::ones({10});
//       register_parameter("scale", &scale);    // bound to the member: it cannot go stale
//     }
//     sg::Tensor forward(const sg::Tensor& x) override { return scale * fc2->forward(sg::relu((*fc1)(x))); }
//   };
//
// Parameters, buffers and children are kept in registration order; named_parameters()
// walks them depth first with dotted names ("fc1.weight"), the names PyTorch's state_dict
// uses for the same module tree. Modules are held by std::shared_ptr.
//
// A parameter (or buffer) registered with a pointer to a member is read through that member:
// assigning the member re-registers it, as assigning a module attribute does in PyTorch.
// Every layer of nn/ binds its parameters this way, so weight tying is one assignment,
//   head->weight = wte->weight;             // or head->set_parameter("weight", wte->weight)
// after which both names yield the same tensor: named_parameters()/parameters() yield it
// once (the first name, PyTorch's remove_duplicate), so optimizers update it once and
// num_parameters() counts it once, while state_dict() keeps both names (as PyTorch) and
// load_state_dict() refuses a state that gives tied names different values.
// register_parameter(name, tensor) without a pointer keeps the tensor itself (LibTorch's
// form): a member assigned from its result is a copy of the handle and goes stale when
// reassigned, so replace such a parameter with set_parameter(). A bound member replaced by a
// non-leaf or a non-floating tensor is refused (by name) when parameters are next collected.
//
// forward(x) is the one-input call that nn::Sequential chains, also spelled module(x); a
// layer with one input overrides it (a layer with more inputs, like MultiHeadAttention, has
// its own forward and call operator and leaves this one throwing). A module that draws
// random numbers (dropout) owns a Generator and registers it, so that named_generators()
// finds it and a checkpoint can save and restore its state for an exact resume.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/generator.h"
#include "core/tensor.h"

namespace sg::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  explicit Module(std::string type_name = "Module") : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // With remove_duplicate, a tensor registered under several names (tied) comes once, under
  // the first name in depth-first registration order.
  NamedTensors named_parameters(bool recurse = true, bool remove_duplicate = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true, bool remove_duplicate = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  // Every registered generator of this module and (with recurse) its descendants, with
  // dotted names like named_parameters() ("layers.0.dropout1.generator"), depth first in
  // registration order. The pointers stay valid while the module lives.
  std::vector<std::pair<std::string, Generator*>> named_generators(bool recurse = true) const;

  // The one-input forward. The default throws "<Type>: forward(x) with one input is not
  // supported"; layers with one input override it. module(x) is forward(x).
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // The parameter (or buffer) registered under a dotted name ("blocks.0.fc1.weight").
  Tensor get_parameter(const std::string& name) const;
  Tensor get_buffer(const std::string& name) const;
  // Replaces the parameter registered under a dotted name with `t` (a floating leaf tensor,
  // e.g. another module's parameter to tie them); a bound member is assigned too. The
  // registration's requires_grad is applied to t. Shapes may differ (the layer's forward
  // checks them).
  void set_parameter(const std::string& name, Tensor t);

  // Registration (public, as in PyTorch). Names are non-empty, contain no '.', and are not
  // taken by another parameter, buffer, child or generator of this module.
  //   register_parameter("w", &member): the registry reads the member (it cannot go stale);
  //   member must be defined now and live as long as the module.
  //   register_parameter("w", tensor): the registry keeps the tensor; returns it.
  Tensor register_parameter(std::string name, Tensor* member, bool requires_grad = true);
  Tensor register_parameter(std::string name, Tensor t, bool requires_grad = true);
  Tensor register_buffer(std::string name, Tensor* member);
  Tensor register_buffer(std::string name, Tensor t);
  // gen must be a member of this module (it must live as long as the module).
  void register_generator(std::string name, Generator& gen);
  template <typename M> std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> module) {
    check_new_name(name, "module");
    SG_CHECK(module != nullptr, "{}: register_module('{}'): the module is null", type_name_, name);
    children_.emplace_back(std::move(name), module);
    return module;
  }

  // Training mode (dropout active) is on by default; train()/eval() set it for the whole tree.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  void zero_grad();                // drops every parameter's gradient
  int64_t num_parameters() const;  // elements over all parameters
  const std::string& type_name() const { return type_name_; }
  // The layer's arguments for summary(), e.g. "in_features=784, out_features=512".
  virtual std::string extra_repr() const { return ""; }
  // PyTorch's repr: the tree of modules with their arguments, then the parameter count.
  std::string summary() const;

 private:
  void check_new_name(const std::string& name, const char* what) const;
  // A registered parameter or buffer: read through `member` when bound, else `value`.
  struct Slot {
    std::string name;
    Tensor* member = nullptr;
    Tensor value = Tensor();
    bool requires_grad = false;
    const Tensor& get() const { return member ? *member : value; }
  };
  Tensor add_slot(std::vector<Slot>& slots, Slot slot, bool param);
  Tensor checked_parameter(const Slot& slot) const;
  // The module owning a dotted name's last part, and that part ("a.b.w" -> (a.b, "w")).
  std::pair<const Module*, std::string> owner_of(const std::string& dotted, const char* what) const;
  const Slot* find_slot(const std::vector<Slot>& slots, const std::string& name) const;
  void collect(const std::string& prefix, bool params, bool recurse, NamedTensors& out) const;
  void print_tree(std::string& out, int indent) const;
  void collect_generators(const std::string& prefix, bool recurse,
                          std::vector<std::pair<std::string, Generator*>>& out) const;

  std::string type_name_;
  std::vector<Slot> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::vector<std::pair<std::string, Generator*>> generators_;
  bool training_ = true;
};

}  // namespace sg::nn
