#pragma once
// Activation and softmax layers: module wrappers around the ops, with PyTorch's names and
// reprs, so that they can sit in an nn::Sequential.
//
//   sg::nn::Sequential mlp({std::make_shared<sg::nn::Linear>(784, 256, gen), std::make_shared<sg::nn::GELU>(),
//                           std::make_shared<sg::nn::Linear>(256, 10, gen)});
//
//   ReLU        relu(x)                                   (torch.nn.ReLU)
//   GELU        gelu(x, approximate) with None (erf) or Tanh (torch.nn.GELU(approximate=...))
//   Softmax     softmax(x, dim)                           (torch.nn.Softmax(dim))
//   LogSoftmax  log_softmax(x, dim)                       (torch.nn.LogSoftmax(dim))
// None has parameters.
#include <cstdint>

#include "nn/module.h"
#include "ops/elementwise.h"

namespace sg::nn {

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override;
};

class GELU : public Module {
 public:
  explicit GELU(GeluApprox approximate = GeluApprox::None) : Module("GELU"), approximate(approximate) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;  // approximate='none' or 'tanh'

  const GeluApprox approximate;
};

class Softmax : public Module {
 public:
  explicit Softmax(int64_t dim) : Module("Softmax"), dim(dim) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;  // dim=1

  const int64_t dim;
};

class LogSoftmax : public Module {
 public:
  explicit LogSoftmax(int64_t dim) : Module("LogSoftmax"), dim(dim) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  const int64_t dim;
};

}  // namespace sg::nn
