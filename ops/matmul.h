#pragma once
// matmul with PyTorch's rules: 1-D operands are promoted (and the added dim removed),
// 2-D is a GEMM, and 3-D/4-D operands batch with broadcast batch dims. float32 goes to
// cblas_sgemm, float64 to cblas_dgemm; a transposed view of the last two dims is passed
// to BLAS as a transpose flag instead of being copied.
// Under an AutocastGuard (core/autocast.h) matmul, bmm and linear take bfloat16 operands
// and accumulate in float32 on oneDNN (core/onednn.h), forward and backward; the result is
// float32.
#include "core/tensor.h"

namespace sg {

Tensor matmul(const Tensor& a, const Tensor& b);
// Batched product (B, M, K) @ (B, K, N) -> (B, M, N): matmul restricted to 3-D operands
// with equal batch sizes (no broadcasting), as torch.bmm.
Tensor bmm(const Tensor& a, const Tensor& b);

// y = x W^T + b: PyTorch's F.linear as one node. x (..., K), weight (N, K), bias (N) or
// undefined -> y (..., N). The forward writes the bias into y and lets the GEMM accumulate
// onto it (beta = 1): no broadcast-add pass after it. Backward: dx = dy W, dW = dy^T x
// (in W's layout), db = dy summed over rows.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// The triple-loop reference (no BLAS, no autograd) the tests compare matmul with.
Tensor matmul_naive(const Tensor& a, const Tensor& b);

}  // namespace sg
