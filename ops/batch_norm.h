#pragma once
// Batch normalization (PyTorch's torch.nn.functional.batch_norm), one fused graph node
// with the hand-derived backward. x (N, C) or (N, C, *): statistics per channel over N and
// every trailing dim (M values per channel). float32 and float64 (statistics in double).
//
//   y = (x - mean) / sqrt(var + eps) * weight + bias
//
// training: mean and the biased variance of this batch; running_mean and running_var
// (each (C), optional) are updated in place with momentum m: r = (1 - m) r + m stat, the
// variance unbiased (M / (M - 1)) as PyTorch; M must be > 1. Eval: the running statistics
// (then required). weight and bias (C) are optional. backward (training):
//   dx = weight rstd / M (M dy - sum dy - xhat sum(dy xhat)),  xhat = (x - mean) rstd
//   dweight = sum dy xhat, dbias = sum dy; in eval dx = dy weight rstd.
// The kernels (vectorized, with their naive references) are in ops/batch_norm_kernels.h.
#include "core/tensor.h"

namespace sg {

struct BatchNormOptions {
  bool training = true;
  double momentum = 0.1;
  double eps = 1e-5;
};

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), const BatchNormOptions& options = {});

}  // namespace sg
