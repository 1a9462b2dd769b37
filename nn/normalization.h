#pragma once
// nn::LayerNorm: PyTorch's torch.nn.LayerNorm on the fused sg::layer_norm
// (ops/normalization.h): normalizes over the last len(normalized_shape) dims.
//
//   sg::nn::LayerNorm norm(64);                                   // rows of 64
//   sg::nn::LayerNorm norm2({8, 8}, {.eps = 1e-6, .bias = false});
//
// Parameters (PyTorch's names and init), with elementwise_affine only:
//   weight  normalized_shape, ones
//   bias    normalized_shape, zeros (absent with bias = false)
#include "nn/module.h"

namespace sg::nn {

struct LayerNormOptions {
  double eps = 1e-5;
  bool elementwise_affine = true;
  bool bias = true;  // with elementwise_affine: learn a bias too
  Dtype dtype = kFloat32;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, LayerNormOptions options = {});
  explicit LayerNorm(int64_t normalized_size, LayerNormOptions options = {});  // normalized_shape {size}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;  // (64,), eps=1e-05, elementwise_affine=true

  Tensor weight;  // undefined without elementwise_affine
  Tensor bias;    // undefined without elementwise_affine or bias
  const Shape normalized_shape;
  const LayerNormOptions options;
};

}  // namespace sg::nn
