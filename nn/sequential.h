#pragma once
// nn::Sequential: PyTorch's torch.nn.Sequential. Holds modules in order, registered as
// children "0", "1", ... (so parameters are named "0.weight", "2.bias", as in PyTorch's
// state_dict), and forward(x) feeds x through each module's one-input forward in turn.
//
//   auto mlp = std::make_shared<sg::nn::Sequential>(std::initializer_list<std::shared_ptr<sg::nn::Module>>{
//       std::make_shared<sg::nn::Linear>(784, 256, gen), std::make_shared<sg::nn::ReLU>(),
//       std::make_shared<sg::nn::Dropout>(0.1, gen), std::make_shared<sg::nn::Linear>(256, 10, gen)});
//   sg::nn::Sequential net;                  // or grow one
//   net.push_back(std::make_shared<sg::nn::Linear>(4, 3, gen));
//   sg::Tensor y = net.forward(x);
//
// A module without a one-input forward (MultiHeadAttention, CrossEntropyLoss) throws when
// reached. An empty Sequential returns x.
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <vector>

#include "nn/module.h"

namespace sg::nn {

class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);

  // Appends a module under the next index; returns it (typed) for chaining.
  template <typename M> std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    SG_CHECK(module != nullptr, "Sequential: push_back of a null module (at index {})", modules_.size());
    register_module(std::to_string(modules_.size()), module);
    modules_.push_back(module);
    return module;
  }
  Tensor forward(const Tensor& x) override;

  size_t size() const { return modules_.size(); }
  bool empty() const { return modules_.empty(); }
  // The module at index i (bounds checked).
  const std::shared_ptr<Module>& operator[](size_t i) const;

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace sg::nn
