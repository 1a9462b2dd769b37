#pragma once
// nn::Module: the base of every layer (PyTorch's torch::nn::Module, minus its weight).
//
//   struct Net : sg::nn::Module {
//     std::shared_ptr<sg::nn::Linear> fc1, fc2;
//     explicit Net(sg::Generator& gen) : Module("Net") {
//       fc1 = register_module("fc1", std::make_shared<sg::nn::Linear>(784, 64, gen));
//       fc2 = register_module("fc2", std::make_shared<sg::nn::Linear>(64, 10, gen));
//     }
//     sg::Tensor forward(const sg::Tensor& x) override { return fc2->forward(sg::relu(fc1->forward(x))); }
//   };
//
// Parameters, buffers and children are kept in registration order; named_parameters()
// walks them depth first with dotted names ("fc1.weight"), the names PyTorch's state_dict
// uses for the same module tree. Modules are held by std::shared_ptr; a registered tensor is
// the same handle as the member that holds it, so in-place updates (optimizers, loading)
// reach both.
//
// forward(x) is the one-input call that nn::Sequential chains; a layer with one input
// overrides it (a layer with more inputs, like MultiHeadAttention, has its own forward and
// leaves this one throwing). A module that draws random numbers (dropout) owns a Generator
// and registers it, so that named_generators() finds it and a checkpoint can save and
// restore its state for an exact resume.
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

  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  // Every registered generator of this module and (with recurse) its descendants, with
  // dotted names like named_parameters() ("layers.0.dropout1.generator"), depth first in
  // registration order. The pointers stay valid while the module lives.
  std::vector<std::pair<std::string, Generator*>> named_generators(bool recurse = true) const;

  // The one-input forward. The default throws "<Type>: forward(x) with one input is not
  // supported"; layers with one input override it.
  virtual Tensor forward(const Tensor& x);

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

 protected:
  Tensor register_parameter(std::string name, Tensor t, bool requires_grad = true);
  Tensor register_buffer(std::string name, Tensor t);
  // gen must be a member of this module (it must live as long as the module).
  void register_generator(std::string name, Generator& gen);
  template <typename M> std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> module) {
    check_new_name(name, "module");
    SG_CHECK(module != nullptr, "{}: register_module('{}'): the module is null", type_name_, name);
    children_.emplace_back(std::move(name), module);
    return module;
  }

 private:
  void check_new_name(const std::string& name, const char* what) const;
  void collect(const std::string& prefix, bool params, bool recurse, NamedTensors& out) const;
  void print_tree(std::string& out, int indent) const;
  void collect_generators(const std::string& prefix, bool recurse,
                          std::vector<std::pair<std::string, Generator*>>& out) const;

  std::string type_name_;
  NamedTensors params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::vector<std::pair<std::string, Generator*>> generators_;
  bool training_ = true;
};

}  // namespace sg::nn
