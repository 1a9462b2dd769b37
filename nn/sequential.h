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
#include <initializer_list>
#include <memory>

#include "nn/module_list.h"

namespace sg::nn {

class Sequential : public ModuleList {
 public:
  Sequential() : ModuleList("Sequential") {}
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
  // push_back, size, empty, operator[], at<M>, as<M>, begin/end: see nn::ModuleList.
  Tensor forward(const Tensor& x) override;
};

}  // namespace sg::nn
