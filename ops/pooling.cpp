// max_pool2d, avg_pool2d, adaptive_avg_pool2d: the ops and their backward nodes; the
// kernels are in ops/pooling_kernels.{h,cpp}. Semantics in ops/pooling.h. A plane is one
// (n, c) image of H x W; P = N C planes, (Ho, Wo) the output.
#include "ops/pooling.h"

#include "core/autograd.h"
#include "core/error.h"
#include "ops/pooling_kernels.h"

namespace sg {

namespace {

using kernels::Pool2dDims;

Pool2dDims pool_geometry(const char* op, const Tensor& x, Size2d k, std::optional<Size2d> stride, Size2d pad,
                         Size2d dil, bool ceil_mode) {
  check_defined(op, x, "input");
  SG_CHECK(x.dtype() == kFloat32 || x.dtype() == kFloat64, "{}: input is {}; float32 or float64 only", op, x.dtype());
  SG_CHECK(x.dim() == 4, "{}: input must be (N, C, H, W), got {}", op, x.shape());
  const Size2d s = stride.value_or(k);
  SG_CHECK(k.h >= 1 && k.w >= 1, "{}: kernel_size must be >= 1, got ({}, {})", op, k.h, k.w);
  SG_CHECK(s.h >= 1 && s.w >= 1, "{}: stride must be >= 1, got ({}, {})", op, s.h, s.w);
  SG_CHECK(dil.h >= 1 && dil.w >= 1, "{}: dilation must be >= 1, got ({}, {})", op, dil.h, dil.w);
  SG_CHECK(pad.h >= 0 && pad.w >= 0 && pad.h <= (dil.h * (k.h - 1) + 1) / 2 && pad.w <= (dil.w * (k.w - 1) + 1) / 2,
           "{}: padding ({}, {}) must be >= 0 and at most half the kernel ({}, {})", op, pad.h, pad.w, k.h, k.w);
  Pool2dDims g{.P = x.size(0) * x.size(1), .H = x.size(2), .W = x.size(3),
               .kh = k.h, .kw = k.w, .sh = s.h, .sw = s.w, .ph = pad.h, .pw = pad.w, .dh = dil.h, .dw = dil.w};
  g.Ho = kernels::pool_output_size(g.H, k.h, pad.h, s.h, dil.h, ceil_mode);
  g.Wo = kernels::pool_output_size(g.W, k.w, pad.w, s.w, dil.w, ceil_mode);
  SG_CHECK(g.Ho >= 1 && g.Wo >= 1, "{}: input {} is too small for kernel ({}, {}) (output {} x {})", op, x.shape(),
           k.h, k.w, g.Ho, g.Wo);
  return g;
}

Shape pooled_shape(const Tensor& x, const Pool2dDims& g) { return {x.size(0), x.size(1), g.Ho, g.Wo}; }

// The shared op body of the two average pools. x: (N, C, H, W) -> y: (N, C, Ho, Wo);
// forward(x, y) and backward(dy, dx) run the kernels on raw buffers of either dtype.
template <typename Forward, typename Backward>
Tensor average_pool(const char* name, const Tensor& x_in, const Pool2dDims& g, Forward forward, Backward backward) {
  const Tensor x = x_in.contiguous();
  Tensor y = empty(pooled_shape(x, g), x.dtype());
  visit_floating(x.dtype(), [&]<typename T>() { forward(x.data_ptr<T>(), y.data_ptr<T>()); });
  // dy: (N, C, Ho, Wo) -> dx: (N, C, H, W)
  record(name, {x_in}, y, [backward, shape = x.shape()](const Tensor& dy_in) {
    const Tensor dy = dy_in.contiguous();
    Tensor dx = zeros(shape, dy.dtype());
    visit_floating(dy.dtype(), [&]<typename T>() { backward(dy.data_ptr<T>(), dx.data_ptr<T>()); });
    return grads(dx);
  });
  return y;
}

}  // namespace

ValuesIndices max_pool2d(const Tensor& x_in, Size2d kernel_size, const MaxPool2dOptions& o) {
  const Pool2dDims g = pool_geometry("max_pool2d", x_in, kernel_size, o.stride, o.padding, o.dilation, o.ceil_mode);
  const Tensor x = x_in.contiguous();
  Tensor y = empty(pooled_shape(x, g), x.dtype()), idx = empty(pooled_shape(x, g), kInt64);
  visit_floating(x.dtype(), [&]<typename T>() {
    kernels::max_pool2d_forward<T>(x.data_ptr<T>(), y.data_ptr<T>(), idx.data_ptr<int64_t>(), g);
  });
  // dy: (N, C, Ho, Wo) -> dx: (N, C, H, W), each dy added at its argmax
  record("max_pool2d", {x_in}, y, [g, is = SavedTensor(idx), shape = x.shape()](const Tensor& dy_in) {
    const Tensor dy = dy_in.contiguous();
    Tensor dx = zeros(shape, dy.dtype());
    visit_floating(dy.dtype(), [&]<typename T>() {
      kernels::max_pool2d_backward<T>(dy.data_ptr<T>(), is.get().data_ptr<int64_t>(), dx.data_ptr<T>(), g);
    });
    return grads(dx);
  });
  return {y, idx};
}

Tensor avg_pool2d(const Tensor& x, Size2d kernel_size, const AvgPool2dOptions& o) {
  const Pool2dDims g = pool_geometry("avg_pool2d", x, kernel_size, o.stride, o.padding, 1, o.ceil_mode);
  const bool include_pad = o.count_include_pad;
  return average_pool(
      "avg_pool2d", x, g,
      [g, include_pad]<typename T>(const T* px, T* py) { kernels::avg_pool2d_forward(px, py, g, include_pad); },
      [g, include_pad]<typename T>(const T* dy, T* dx) { kernels::avg_pool2d_backward(dy, dx, g, include_pad); });
}

Tensor adaptive_avg_pool2d(const Tensor& x, Size2d output_size) {
  check_defined("adaptive_avg_pool2d", x, "input");
  SG_CHECK(x.dim() == 4, "adaptive_avg_pool2d: input must be (N, C, H, W), got {}", x.shape());
  SG_CHECK(output_size.h >= 1 && output_size.w >= 1, "adaptive_avg_pool2d: output_size must be >= 1, got ({}, {})",
           output_size.h, output_size.w);
  SG_CHECK(x.size(2) >= 1 && x.size(3) >= 1, "adaptive_avg_pool2d: input {} has an empty plane", x.shape());
  // Only the planes and sizes of the geometry matter: the windows follow from (H, W) and (Ho, Wo).
  Pool2dDims g = pool_geometry("adaptive_avg_pool2d", x, {1, 1}, Size2d{1, 1}, 0, 1, false);
  g.Ho = output_size.h;
  g.Wo = output_size.w;
  return average_pool(
      "adaptive_avg_pool2d", x, g,
      [g]<typename T>(const T* px, T* py) { kernels::adaptive_avg_pool2d_forward(px, py, g); },
      [g]<typename T>(const T* dy, T* dx) { kernels::adaptive_avg_pool2d_backward(dy, dx, g); });
}

}  // namespace sg
