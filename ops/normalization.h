#pragma once
// Layer normalization (PyTorch's torch.nn.functional.layer_norm), one fused graph node.
//
//   y = (x - mean) / sqrt(var + eps) * weight + bias
//
// mean and the biased variance are taken over the last len(normalized_shape) dims of x,
// whose sizes must equal normalized_shape; every leading index is one row. weight and
// bias are optional (undefined tensors), each of shape normalized_shape and x's dtype.
// Float32 and float64; any strides (a non-contiguous x is read through one contiguous copy).
//
//   sg::Tensor y = sg::layer_norm(x, {64}, ln_weight, ln_bias);          // x (B, T, 64)
//   sg::Tensor z = sg::layer_norm(x, {x.size(-2), x.size(-1)});          // no affine
//
// The node saves x, the weight and each row's mean and 1/sqrt(var + eps); its backward is
// the hand-derived VJP (ops/normalization_kernels.h):
//   dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w * xhat)),  xhat = (x - mean) * rstd
//   dweight = sum over rows of g * xhat,  dbias = sum over rows of g
// Errors name the op, the shapes and the bad value (an empty normalized_shape, an input
// whose trailing dims differ, a weight or bias of the wrong shape or dtype, eps < 0).
#include "core/tensor.h"

namespace sg {

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);

}  // namespace sg
