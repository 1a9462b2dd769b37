#pragma once
// nn::ModuleList: PyTorch's torch.nn.ModuleList. Holds modules in order, registered as
// children "0", "1", ..., so a list registered as "h" names its parameters "h.0.attn.in_proj_weight"
// as PyTorch's state_dict does. It has no forward: iterate and call each module with whatever
// arguments it takes.
//
//   auto h = register_module("h", std::make_shared<sg::nn::ModuleList>());
//   for (int i = 0; i < 4; ++i) h->push_back(std::make_shared<Block>(cfg, gen));
//   for (const auto& block : h->as<Block>()) x = block->forward(x, /*is_causal=*/true);
//   auto first = h->at<Block>(0);            // typed access; the error names the actual type
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace sg::nn {

class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  ModuleList(std::initializer_list<std::shared_ptr<Module>> modules);

  // Appends a module under the next index; returns it (typed) for chaining.
  template <typename M> std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    SG_CHECK(module != nullptr, "{}: push_back of a null module (at index {})", type_name(), modules_.size());
    register_module(std::to_string(modules_.size()), module);
    modules_.push_back(module);
    return module;
  }

  size_t size() const { return modules_.size(); }
  bool empty() const { return modules_.empty(); }
  // The module at index i (bounds checked).
  const std::shared_ptr<Module>& operator[](size_t i) const;
  // The module at index i as an M (bounds and type checked).
  template <typename M> std::shared_ptr<M> at(size_t i) const {
    const std::shared_ptr<Module>& m = (*this)[i];
    auto typed = std::dynamic_pointer_cast<M>(m);
    SG_CHECK(typed != nullptr, "{}: module {} is a {}, not the type asked for", type_name(), i, m->type_name());
    return typed;
  }
  // Every module as an M (type checked), for range-for loops.
  template <typename M> std::vector<std::shared_ptr<M>> as() const {
    std::vector<std::shared_ptr<M>> out;
    for (size_t i = 0; i < modules_.size(); ++i) out.push_back(at<M>(i));
    return out;
  }
  auto begin() const { return modules_.begin(); }
  auto end() const { return modules_.end(); }

  // Throws: a ModuleList has no forward (as in PyTorch); Sequential overrides it.
  Tensor forward(const Tensor& x) override;

 protected:
  explicit ModuleList(std::string type_name) : Module(std::move(type_name)) {}
  const std::vector<std::shared_ptr<Module>>& modules() const { return modules_; }

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace sg::nn
