#pragma once
// Kernels of batch_norm, apart from the graph wiring in ops/batch_norm.cpp. They take raw
// pointers to contiguous buffers and know nothing about Tensor.
//
// Letters: x is (N, C, S): N images, C channels, S trailing elements per image and channel
// (H W for (N, C, H, W), 1 for (N, C)); M = N S values per channel. Per channel c
// (PyTorch's BatchNorm documentation):
//   mean_c = sum x / M,  var_c = sum (x - mean_c)^2 / M   (biased; two passes, in double)
//   y      = x a_c + (b_c - mean_c a_c),  a_c = w_c rstd_c,  rstd_c = 1 / sqrt(var_c + eps)
// backward, with xhat = (x - mean_c) rstd_c:
//   training  dx = a_c / M (M dy - sum dy - xhat sum(dy xhat))
//   eval      dx = a_c dy   (mean and rstd are the running statistics, constants)
//   dw_c = sum dy xhat,  db_c = sum dy   (sums in double)
// w = 1 and b = 0 when absent.
#include <cstdint>

namespace sg::kernels {

struct BatchNormDims {
  int64_t N = 0, C = 0, S = 0;
  int64_t M() const { return N * S; }
};

// x: (N, C, S); mean, var: (C), written.
template <typename T> void batch_norm_stats(const T* x, double* mean, double* var, BatchNormDims dims);

// x, y: (N, C, S); w, b: (C) or null; mean, rstd: (C).
template <typename T>
void batch_norm_forward(const T* x, const T* w, const T* b, const double* mean, const double* rstd, T* y,
                        BatchNormDims dims);

// x, dy, dx: (N, C, S); w: (C) or null; mean, rstd: what the forward used. dx, dw, db may each
// be null (not wanted); dw, db: (C), overwritten.
template <typename T>
void batch_norm_backward(const T* x, const T* w, const double* mean, const double* rstd, const T* dy, T* dx, T* dw,
                         T* db, BatchNormDims dims, bool training);

// Naive references (scalar, one thread, the formulas above element by element with every
// product in double), kept for tests.
template <typename T> void batch_norm_stats_naive(const T* x, double* mean, double* var, BatchNormDims dims);
template <typename T>
void batch_norm_forward_naive(const T* x, const T* w, const T* b, const double* mean, const double* rstd, T* y,
                              BatchNormDims dims);
template <typename T>
void batch_norm_backward_naive(const T* x, const T* w, const double* mean, const double* rstd, const T* dy, T* dx,
                               T* dw, T* db, BatchNormDims dims, bool training);

}  // namespace sg::kernels
