#pragma once
// nn::Linear: y = x W^T + b, x (..., in_features) -> y (..., out_features).
// PyTorch's init: W (out, in) from kaiming_uniform_(a = sqrt(5)), i.e. U(-1/sqrt(in),
// 1/sqrt(in)), and b (out) from U(-1/sqrt(in), 1/sqrt(in)).
#include "core/generator.h"
#include "nn/module.h"
#include "ops/matmul.h"

namespace sg::nn {

struct LinearOptions {
  bool bias = true;
  Dtype dtype = kFloat32;
};

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, LinearOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  Tensor weight;  // (out_features, in_features)
  Tensor bias;    // (out_features), undefined without bias
  const int64_t in_features, out_features;
};

// y = x W^T (+ b): the functional form (PyTorch's F.linear), one fused node (ops/matmul.h).
using sg::linear;

}  // namespace sg::nn
