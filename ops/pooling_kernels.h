#pragma once
// Kernels of max_pool2d, avg_pool2d and adaptive_avg_pool2d, apart from the graph wiring in
// ops/pooling.cpp. They take raw pointers to contiguous buffers and know nothing about Tensor.
//
// Letters: P = N C planes, each H x W (row-major); (Ho, Wo) the output plane; window
// (kh, kw), stride (sh, sw), padding (ph, pw), dilation (dh, dw). Output (oy, ox) reads
// input rows oy sh - ph + i dh (i < kh) and columns ox sw - pw + j dw (j < kw); a tap outside
// the plane is padding.
//   max       y = the largest tap (padding is -inf), idx = its h W + w in the input plane;
//             taps in row-major order: the first maximum wins a tie, a NaN wins (a later NaN
//             over an earlier one: PyTorch's CPU rule `v > best || isnan(v)`)
//   avg       y = (sum of the taps inside the plane) / count, count = the window clipped to
//             the padded input (count_include_pad) or to the input; no dilation
//   adaptive  window o of a dim spans [floor(o H / Ho), ceil((o + 1) H / Ho)), count its area
// Backward: max adds dy to dx at idx; avg and adaptive add dy / count to every tap of the
// window. dx must hold zeros (or a gradient to add to) on entry.
#include <cstdint>

namespace sg::kernels {

struct Pool2dDims {
  int64_t P = 0, H = 0, W = 0;  // planes and the input plane
  int64_t Ho = 0, Wo = 0;       // the output plane
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;  // unused by adaptive
};

// Outputs along one dim, as PyTorch's pooling_output_shape: floor((in + 2 pad - dilation
// (k - 1) - 1) / stride) + 1, or ceil with ceil_mode, where a last window that would start in
// the bottom/right padding is dropped. 0 when the window does not fit.
int64_t pool_output_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dilation, bool ceil_mode);

// x: (P, H, W); y, idx: (P, Ho, Wo).
template <typename T> void max_pool2d_forward(const T* x, T* y, int64_t* idx, const Pool2dDims& g);
// dy: (P, Ho, Wo), idx from the forward; dx: (P, H, W), added to.
template <typename T> void max_pool2d_backward(const T* dy, const int64_t* idx, T* dx, const Pool2dDims& g);

// x: (P, H, W); y: (P, Ho, Wo). Backward: dy (P, Ho, Wo); dx (P, H, W), added to.
template <typename T> void avg_pool2d_forward(const T* x, T* y, const Pool2dDims& g, bool count_include_pad);
template <typename T> void avg_pool2d_backward(const T* dy, T* dx, const Pool2dDims& g, bool count_include_pad);
template <typename T> void adaptive_avg_pool2d_forward(const T* x, T* y, const Pool2dDims& g);
template <typename T> void adaptive_avg_pool2d_backward(const T* dy, T* dx, const Pool2dDims& g);

// Naive references (scalar, one output at a time, one thread), kept for tests. The fast
// kernels give the same max_pool2d values and indices bit for bit, and the same averages
// up to the order of the additions (bit for bit too in the forward, except for a window
// that covers the whole plane).
template <typename T> void max_pool2d_forward_naive(const T* x, T* y, int64_t* idx, const Pool2dDims& g);
template <typename T> void avg_pool2d_forward_naive(const T* x, T* y, const Pool2dDims& g, bool count_include_pad);
template <typename T> void avg_pool2d_backward_naive(const T* dy, T* dx, const Pool2dDims& g, bool count_include_pad);
template <typename T> void adaptive_avg_pool2d_forward_naive(const T* x, T* y, const Pool2dDims& g);
template <typename T> void adaptive_avg_pool2d_backward_naive(const T* dy, T* dx, const Pool2dDims& g);

}  // namespace sg::kernels
