#pragma once
// nn::Module: the base of every layer (PyTorch's torch::nn::Module, minus its weight).
//
//   struct Net : sg::nn::Module {
//     std::shared_ptr<sg::nn::Linear> fc1, fc2;
//     explicit Net(sg::Generator& gen) : Module("Net") {
//       fc1 = register_module("fc1", std::make_shared<sg::nn::Linear>(784, 64, gen));
//       fc2 = register_module("fc2", std::make_shared<sg::nn::Linear>(64, 10, gen));
//     }
//     sg::Tensor forward(const sg::Tensor& x) { return fc2->forward(sg::relu(fc1->forward(x))); }
//   };
//
// Parameters, buffers and children are kept in registration order; named_parameters()
// walks them depth first with dotted names ("fc1.weight"), the names PyTorch's state_dict
// uses for the same module tree. Modules are held by std::shared_ptr; a registered tensor is
// the same handle as the member that holds it, so in-place updates (optimizers, loading)
// reach both.
#include <memory>
#include <string>
#include <utility>
#include <vector>

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

  std::string type_name_;
  NamedTensors params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace sg::nn
