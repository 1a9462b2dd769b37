#pragma once
// 2-D convolution and im2col (PyTorch's torch.nn.functional.conv2d, unfold and fold), each
// one graph node with a hand-derived backward. NCHW, float32 and float64.
//
//   sg::Tensor y = sg::conv2d(x, w, b);                                   // x (N, C, H, W), w (O, C, kh, kw)
//   sg::Tensor z = sg::conv2d(x, w, {}, {.stride = 2, .padding = 1});     // no bias
//   sg::Tensor s = sg::conv2d(x, w, b, {.padding = sg::Padding2d::same()});
//   sg::Tensor d = sg::conv2d(x, dw, {}, {.padding = 1, .groups = C});    // depthwise: dw (C, 1, 3, 3)
//
// Shapes: x (N, C, H, W); weight (O, C / groups, kh, kw); bias (O) or undefined; output
// (N, O, Ho, Wo) with Ho = floor((H + pad_top + pad_bottom - dh (kh - 1) - 1) / sh) + 1
// (Wo alike). Padding is symmetric (Padding2d{p} or {ph, pw}); "same" (stride 1 only) pads
// d (k - 1) in total per dim, the odd one at the bottom/right as PyTorch; "valid" is 0.
// groups divides C and O; group g maps channels [g C/G, (g+1) C/G) to [g O/G, (g+1) O/G).
//
// Kernel: im2col + GEMM (OpenBLAS), one image per thread (each thread its own column
// buffer and, in backward, its own weight-gradient partial, summed at the end):
//   cols (C/G kh kw, Ho Wo) of image n and group g; out_g = W_g (O/G, C/G kh kw) @ cols
//   backward: dW_g += dY_g @ cols^T,  dcols = W_g^T @ dY_g -> col2im into dx,  db = sum dY
// conv2d_naive is the direct 7-loop convolution, kept for the tests.
//
// unfold(x, kernel, {dilation, padding, stride}) is im2col over a batch: (N, C, H, W) ->
// (N, C kh kw, L) with L = Ho Wo; fold(cols, output_size, kernel, ...) is its adjoint
// (col2im: overlapping entries sum), (N, C kh kw, L) -> (N, C, H, W). Each is the other's
// backward.
//
// Errors name the op and the shapes: a 3-D or 5-D input, channels that do not match the
// weight, groups that do not divide C or O, a kernel larger than the padded input, a
// stride, dilation or padding out of range, "same" with a stride, a bias of the wrong size.
#include <array>
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace sg {

// (h, w) pair that an int converts to: {.stride = 2} is (2, 2).
struct Size2d {
  int64_t h = 1, w = 1;
  Size2d(int64_t v) : h(v), w(v) {}  // NOLINT: implicit, as PyTorch's int-or-tuple
  Size2d(int64_t h_, int64_t w_) : h(h_), w(w_) {}
};

struct Padding2d {
  enum class Mode { Explicit, Same, Valid };
  int64_t h = 0, w = 0;
  Mode mode = Mode::Explicit;
  Padding2d(int64_t v = 0) : h(v), w(v) {}  // NOLINT: implicit, as PyTorch's int-or-tuple
  Padding2d(int64_t h_, int64_t w_) : h(h_), w(w_) {}
  static Padding2d same() { Padding2d p; p.mode = Mode::Same; return p; }
  static Padding2d valid() { Padding2d p; p.mode = Mode::Valid; return p; }
};

struct Conv2dOptions {
  Size2d stride = 1;
  Padding2d padding = 0;
  Size2d dilation = 1;
  int64_t groups = 1;
};

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), const Conv2dOptions& options = {});

// Which kernel runs conv2d's float32 forward and backward (float64 is always im2col + GEMM;
// under autocast with native bfloat16 it is always oneDNN's direct convolution, in
// bfloat16). Process-wide.
//   Auto      per shape, by the rule bench/bench_conv.cpp measured (bench/RESULTS.md):
//             im2col + GEMM for an ungrouped convolution of fewer than 4 input channels (a
//             network's first layer: oneDNN's weight-gradient kernels fall back to a GEMM
//             there; depthwise and grouped ones stay on oneDNN) and for
//             strided 1x1 convolutions (a subsampled GEMM); oneDNN's Winograd kernels for
//             3x3, stride 1, undilated, ungrouped convolutions with at least 16 input and
//             16 output channels where this CPU has them; oneDNN's direct convolution else.
//   Im2col    im2col + OpenBLAS GEMM everywhere.
//   Onednn    oneDNN's direct convolution everywhere.
//   Winograd  oneDNN's Winograd where it applies (3x3, stride 1, no dilation or groups, and
//             the CPU has the kernels), its direct convolution elsewhere.
// Winograd rounds differently from a direct sum (larger error, bounded in
// tests/test_conv_onednn.cpp); Im2col or Onednn give the direct sums everywhere.
enum class ConvAlgorithm { Auto, Im2col, Onednn, Winograd };
void set_conv_algorithm(ConvAlgorithm algorithm);
ConvAlgorithm conv_algorithm();
// The kernel conv2d runs for this float32 convolution outside autocast: "im2col",
// "onednn" or "onednn winograd" (float64: always "im2col").
std::string conv_kernel(const Tensor& x, const Tensor& weight, const Conv2dOptions& options = {});
// The direct convolution (no im2col, no BLAS), for tests; same checks and semantics, no graph.
Tensor conv2d_naive(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                    const Conv2dOptions& options = {});

struct UnfoldOptions {
  Size2d dilation = 1;
  Padding2d padding = 0;  // explicit only
  Size2d stride = 1;
};
Tensor unfold(const Tensor& x, Size2d kernel_size, const UnfoldOptions& options = {});
Tensor fold(const Tensor& cols, Size2d output_size, Size2d kernel_size, const UnfoldOptions& options = {});

namespace kernels {
// The geometry of one convolution: input (C, H, W) per image, kernel, output (Ho, Wo) and
// the padding at the top and left (bottom and right follow from Ho, Wo).
struct ConvGeometry {
  int64_t C, H, W, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo;
  int64_t pb, pr;  // the padding at the bottom and right as given (rows beyond the last window go unused)
  int64_t col_rows() const { return C * kh * kw; }
  int64_t col_cols() const { return Ho * Wo; }
};
// cols (C kh kw, Ho Wo) from one image x (C, H, W); zeros where the window leaves the input.
template <typename T> void im2col(const T* x, const ConvGeometry& g, T* cols);
// dx (C, H, W) += the columns scattered back (overlapping entries sum).
template <typename T> void col2im(const T* cols, const ConvGeometry& g, T* dx);
}  // namespace kernels

}  // namespace sg
