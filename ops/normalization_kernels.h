#pragma once
// Kernels of layer_norm, apart from the graph wiring in ops/normalization.cpp. They take
// raw pointers to contiguous buffers and know nothing about Tensor.
//
// Letters: N rows (the product of the leading dims), C the normalized elements of a row
// (the product of normalized_shape). Per row r:
//   mean_r = sum_c x[r, c] / C,  var_r = sum_c (x[r, c] - mean_r)^2 / C   (biased, as PyTorch)
//   rstd_r = 1 / sqrt(var_r + eps),  xhat = (x - mean_r) * rstd_r
//   y      = xhat * w + b                      (w = 1 and b = 0 when absent)
// backward, with gw = g * w:
//   dx   = rstd_r * (gw - mean_c(gw) - xhat * mean_c(gw * xhat))
//   dw_c = sum_r g[r, c] * xhat[r, c],  db_c = sum_r g[r, c]
// The forward saves mean and rstd per row; backward recomputes xhat from x.
#include <cstdint>

namespace sg::kernels {

struct LayerNormDims {
  int64_t N = 0;  // rows
  int64_t C = 0;  // elements normalized together
};

// x, y: (N, C); w, b: (C) or null; mean, rstd: (N). All contiguous.
template <typename T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, LayerNormDims dims, double eps);

// x, g, dx: (N, C); w: (C) or null; mean, rstd from the forward. dx, dw, db may each be null
// (not wanted); dw, db: (C), overwritten.
template <typename T>
void layer_norm_backward(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, T* dw, T* db,
                         LayerNormDims dims);

// Naive references (scalar, textbook formulas, sums in long double), kept for tests.
template <typename T>
void layer_norm_forward_naive(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, LayerNormDims dims,
                              double eps);
template <typename T>
void layer_norm_backward_naive(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, T* dw, T* db,
                               LayerNormDims dims);

}  // namespace sg::kernels
