// max_pool2d, avg_pool2d, adaptive_avg_pool2d: per-plane kernels, then the ops and their
// backward nodes. Semantics in ops/pooling.h. A plane is one (n, c) image of H x W; P = N C
// planes, (Ho, Wo) the output.
#include "ops/pooling.h"

#include <omp.h>

#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "core/error.h"
#include "core/strided.h"

namespace sg {

namespace {

struct PoolGeometry {
  int64_t P, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo;
};

// PyTorch's pooling_output_shape: floor or ceil, and a ceil window may not start in the
// bottom/right padding.
int64_t pooled_extent(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dilation, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (k - 1) - 1;
  if (span < 0) return 0;  // the window does not fit (PyTorch: "output size is too small")
  int64_t out = (span + (ceil_mode ? stride - 1 : 0)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

PoolGeometry pool_geometry(const char* op, const Tensor& x, Size2d k, std::optional<Size2d> stride, Size2d pad,
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
  PoolGeometry g{x.size(0) * x.size(1), x.size(2), x.size(3), k.h, k.w, s.h, s.w, pad.h, pad.w, dil.h, dil.w, 0, 0};
  g.Ho = pooled_extent(g.H, k.h, pad.h, s.h, dil.h, ceil_mode);
  g.Wo = pooled_extent(g.W, k.w, pad.w, s.w, dil.w, ceil_mode);
  SG_CHECK(g.Ho >= 1 && g.Wo >= 1, "{}: input {} is too small for kernel ({}, {}) (output {} x {})", op, x.shape(),
           k.h, k.w, g.Ho, g.Wo);
  return g;
}

// ---- max ----
template <typename T> void max_pool_forward(const PoolGeometry& g, const T* x, T* y, int64_t* idx) {
  parallel_for(g.P, g.Ho * g.Wo * g.kh * g.kw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* in = x + p * g.H * g.W;
      for (int64_t oy = 0; oy < g.Ho; ++oy)
        for (int64_t ox = 0; ox < g.Wo; ++ox) {
          T best = -std::numeric_limits<T>::infinity();
          int64_t arg = -1;
          for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t yy = oy * g.sh - g.ph + i * g.dh;
            if (yy < 0 || yy >= g.H) continue;
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t xx = ox * g.sw - g.pw + j * g.dw;
              if (xx < 0 || xx >= g.W) continue;
              const T v = in[yy * g.W + xx];
              if (v > best || std::isnan(v) || arg < 0) {  // first maximum wins; NaN wins
                best = v;
                arg = yy * g.W + xx;
              }
            }
          }
          const int64_t o = (p * g.Ho + oy) * g.Wo + ox;
          y[o] = best;
          idx[o] = arg;
        }
    }
  });
}

template <typename T> void max_pool_backward(const PoolGeometry& g, const T* dy, const int64_t* idx, T* dx) {
  parallel_for(g.P, g.Ho * g.Wo, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      for (int64_t o = 0; o < g.Ho * g.Wo; ++o) {
        const int64_t at = p * g.Ho * g.Wo + o;
        dx[p * g.H * g.W + idx[at]] += dy[at];
      }
  });
}

// ---- average: window o covers [start, end) of a dim, divided by `count` ----
struct Window {
  int64_t y0, y1, x0, x1;
  double count;
};

Window avg_window(const PoolGeometry& g, int64_t oy, int64_t ox, bool count_include_pad) {
  int64_t y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
  int64_t y1 = std::min(y0 + g.kh, g.H + g.ph), x1 = std::min(x0 + g.kw, g.W + g.pw);
  const int64_t padded = (y1 - y0) * (x1 - x0);
  y0 = std::max<int64_t>(y0, 0);
  x0 = std::max<int64_t>(x0, 0);
  y1 = std::min(y1, g.H);
  x1 = std::min(x1, g.W);
  return {y0, y1, x0, x1, static_cast<double>(count_include_pad ? padded : (y1 - y0) * (x1 - x0))};
}

Window adaptive_window(const PoolGeometry& g, int64_t oy, int64_t ox) {
  auto start = [](int64_t o, int64_t in, int64_t out) { return o * in / out; };
  auto stop = [](int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; };
  const int64_t y0 = start(oy, g.H, g.Ho), y1 = stop(oy, g.H, g.Ho), x0 = start(ox, g.W, g.Wo), x1 = stop(ox, g.W, g.Wo);
  return {y0, y1, x0, x1, static_cast<double>((y1 - y0) * (x1 - x0))};
}

template <typename T, typename WindowOf>
void avg_forward(const PoolGeometry& g, const T* x, T* y, WindowOf&& window_of) {
  parallel_for(g.P, g.Ho * g.Wo * g.kh * g.kw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* in = x + p * g.H * g.W;
      for (int64_t oy = 0; oy < g.Ho; ++oy)
        for (int64_t ox = 0; ox < g.Wo; ++ox) {
          const Window w = window_of(oy, ox);
          T sum = 0;
          for (int64_t yy = w.y0; yy < w.y1; ++yy)
            for (int64_t xx = w.x0; xx < w.x1; ++xx) sum += in[yy * g.W + xx];
          y[(p * g.Ho + oy) * g.Wo + ox] = w.count > 0 ? sum / static_cast<T>(w.count) : T(0);
        }
    }
  });
}

template <typename T, typename WindowOf>
void avg_backward(const PoolGeometry& g, const T* dy, T* dx, WindowOf&& window_of) {
  parallel_for(g.P, g.Ho * g.Wo * g.kh * g.kw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* out = dx + p * g.H * g.W;
      for (int64_t oy = 0; oy < g.Ho; ++oy)
        for (int64_t ox = 0; ox < g.Wo; ++ox) {
          const Window w = window_of(oy, ox);
          if (w.count <= 0) continue;
          const T share = dy[(p * g.Ho + oy) * g.Wo + ox] / static_cast<T>(w.count);
          for (int64_t yy = w.y0; yy < w.y1; ++yy)
            for (int64_t xx = w.x0; xx < w.x1; ++xx) out[yy * g.W + xx] += share;
        }
    }
  });
}

Shape pooled_shape(const Tensor& x, const PoolGeometry& g) { return {x.size(0), x.size(1), g.Ho, g.Wo}; }

// The shared op body of the two average pools: window_of(g, oy, ox) -> Window.
template <typename WindowOf>
Tensor average_pool(const char* name, const Tensor& x_in, const PoolGeometry& g, WindowOf window_of) {
  const Tensor x = x_in.contiguous();
  Tensor y = empty(pooled_shape(x, g), x.dtype());
  visit_floating(x.dtype(), [&]<typename T>() {
    avg_forward<T>(g, x.data_ptr<T>(), y.data_ptr<T>(), [&](int64_t oy, int64_t ox) { return window_of(g, oy, ox); });
  });
  record(name, {x_in}, y, [g, window_of, shape = x.shape()](const Tensor& dy_in) {
    const Tensor dy = dy_in.contiguous();
    Tensor dx = zeros(shape, dy.dtype());
    visit_floating(dy.dtype(), [&]<typename T>() {
      avg_backward<T>(g, dy.data_ptr<T>(), dx.data_ptr<T>(), [&](int64_t oy, int64_t ox) { return window_of(g, oy, ox); });
    });
    return grads(dx);
  });
  return y;
}

}  // namespace

ValuesIndices max_pool2d(const Tensor& x_in, Size2d kernel_size, const MaxPool2dOptions& o) {
  const PoolGeometry g = pool_geometry("max_pool2d", x_in, kernel_size, o.stride, o.padding, o.dilation, o.ceil_mode);
  const Tensor x = x_in.contiguous();
  Tensor y = empty(pooled_shape(x, g), x.dtype()), idx = empty(pooled_shape(x, g), kInt64);
  visit_floating(x.dtype(), [&]<typename T>() {
    max_pool_forward<T>(g, x.data_ptr<T>(), y.data_ptr<T>(), idx.data_ptr<int64_t>());
  });
  record("max_pool2d", {x_in}, y, [g, is = SavedTensor(idx), shape = x.shape()](const Tensor& dy_in) {
    const Tensor dy = dy_in.contiguous();
    Tensor dx = zeros(shape, dy.dtype());
    visit_floating(dy.dtype(), [&]<typename T>() {
      max_pool_backward<T>(g, dy.data_ptr<T>(), is.get().data_ptr<int64_t>(), dx.data_ptr<T>());
    });
    return grads(dx);
  });
  return {y, idx};
}

Tensor avg_pool2d(const Tensor& x, Size2d kernel_size, const AvgPool2dOptions& o) {
  const PoolGeometry g = pool_geometry("avg_pool2d", x, kernel_size, o.stride, o.padding, 1, o.ceil_mode);
  const bool include_pad = o.count_include_pad;
  return average_pool("avg_pool2d", x, g, [include_pad](const PoolGeometry& geo, int64_t oy, int64_t ox) {
    return avg_window(geo, oy, ox, include_pad);
  });
}

Tensor adaptive_avg_pool2d(const Tensor& x, Size2d output_size) {
  check_defined("adaptive_avg_pool2d", x, "input");
  SG_CHECK(x.dim() == 4, "adaptive_avg_pool2d: input must be (N, C, H, W), got {}", x.shape());
  SG_CHECK(output_size.h >= 1 && output_size.w >= 1, "adaptive_avg_pool2d: output_size must be >= 1, got ({}, {})",
           output_size.h, output_size.w);
  SG_CHECK(x.size(2) >= 1 && x.size(3) >= 1, "adaptive_avg_pool2d: input {} has an empty plane", x.shape());
  // The geometry's kernel is only a cost hint here: the windows come from adaptive_window.
  PoolGeometry g = pool_geometry("adaptive_avg_pool2d", x, {1, 1}, Size2d{1, 1}, 0, 1, false);
  g.Ho = output_size.h;
  g.Wo = output_size.w;
  g.kh = (g.H + g.Ho - 1) / g.Ho + 1;
  g.kw = (g.W + g.Wo - 1) / g.Wo + 1;
  return average_pool("adaptive_avg_pool2d", x, g, adaptive_window);
}

}  // namespace sg
