#pragma once
// matmul with PyTorch's rules: 1-D operands are promoted (and the added dim removed),
// 2-D is a GEMM, and 3-D/4-D operands batch with broadcast batch dims. float32 goes to
// cblas_sgemm, float64 to cblas_dgemm; a transposed view of the last two dims is passed
// to BLAS as a transpose flag instead of being copied.
#include "core/tensor.h"

namespace sg {

Tensor matmul(const Tensor& a, const Tensor& b);
// The triple-loop reference (no BLAS, no autograd) the tests compare matmul with.
Tensor matmul_naive(const Tensor& a, const Tensor& b);

}  // namespace sg
