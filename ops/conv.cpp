// conv2d, unfold and fold: the im2col / col2im kernels, then the ops and their backward
// nodes side by side. Semantics in ops/conv.h. Letters: N images, C input channels, O
// output channels, G groups, (H, W) input, (kh, kw) kernel, (Ho, Wo) output, K = C/G kh kw
// rows of a group's columns, L = Ho Wo.
#include "ops/conv.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/blas.h"
#include "core/error.h"
#include "core/onednn.h"
#include "ops/shape.h"

namespace sg {

// ---- kernels -----------------------------------------------------------------------------

namespace kernels {

template <typename T> void im2col(const T* x, const ConvGeometry& g, T* cols) {
  const int64_t L = g.Ho * g.Wo;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        T* row = cols + ((c * g.kh + i) * g.kw + j) * L;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
          const int64_t y = oy * g.sh - g.pt + i * g.dh;
          T* out = row + oy * g.Wo;
          if (y < 0 || y >= g.H) {
            std::fill(out, out + g.Wo, T(0));
            continue;
          }
          const T* in = x + (c * g.H + y) * g.W;
          for (int64_t ox = 0; ox < g.Wo; ++ox) {
            const int64_t xx = ox * g.sw - g.pl + j * g.dw;
            out[ox] = xx >= 0 && xx < g.W ? in[xx] : T(0);
          }
        }
      }
}

template <typename T> void col2im(const T* cols, const ConvGeometry& g, T* dx) {
  const int64_t L = g.Ho * g.Wo;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* row = cols + ((c * g.kh + i) * g.kw + j) * L;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
          const int64_t y = oy * g.sh - g.pt + i * g.dh;
          if (y < 0 || y >= g.H) continue;
          T* out = dx + (c * g.H + y) * g.W;
          const T* in = row + oy * g.Wo;
          for (int64_t ox = 0; ox < g.Wo; ++ox) {
            const int64_t xx = ox * g.sw - g.pl + j * g.dw;
            if (xx >= 0 && xx < g.W) out[xx] += in[ox];
          }
        }
      }
}

template void im2col<float>(const float*, const ConvGeometry&, float*);
template void im2col<double>(const double*, const ConvGeometry&, double*);
template void col2im<float>(const float*, const ConvGeometry&, float*);
template void col2im<double>(const double*, const ConvGeometry&, double*);

}  // namespace kernels

namespace {

using kernels::ConvGeometry;

// Threads for a loop over n images of `cost` elements each (one when inside a parallel
// region or when the work is small).
int image_threads(int64_t n, int64_t cost) {
  if (omp_in_parallel()) return 1;
  const int64_t by_work = std::max<int64_t>(1, n * cost / 32768);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({omp_get_max_threads(), n, by_work})));
}

// The output extent of one dim, or a named error.
int64_t out_extent(const char* op, const char* dim, int64_t in, int64_t pad_total, int64_t k, int64_t d, int64_t s,
                   const Shape& x_shape, const Shape& w_shape) {
  const int64_t span = d * (k - 1) + 1;  // the dilated kernel
  SG_CHECK(in + pad_total >= span,
           "{}: the kernel ({} {} with dilation {}: {} pixels) is larger than the padded input ({} + {} padding) "
           "for input {} and weight {}",
           op, dim, k, d, span, in, pad_total, x_shape, w_shape);
  return (in + pad_total - span) / s + 1;
}

// Checks and geometry for images (C, H, W) (x_shape: the whole input, for messages) and
// a kernel (kh, kw).
ConvGeometry geometry(const char* op, int64_t C, int64_t H, int64_t W, const Shape& x_shape, int64_t kh, int64_t kw,
                      const Size2d& stride, const Padding2d& padding, const Size2d& dilation, const Shape& w_shape) {
  SG_CHECK(stride.h >= 1 && stride.w >= 1, "{}: stride must be >= 1, got ({}, {})", op, stride.h, stride.w);
  SG_CHECK(dilation.h >= 1 && dilation.w >= 1, "{}: dilation must be >= 1, got ({}, {})", op, dilation.h, dilation.w);
  ConvGeometry g{};
  g.C = C;
  g.H = H;
  g.W = W;
  g.kh = kh;
  g.kw = kw;
  g.sh = stride.h;
  g.sw = stride.w;
  g.dh = dilation.h;
  g.dw = dilation.w;
  int64_t pad_h = 0, pad_w = 0;  // totals
  switch (padding.mode) {
    case Padding2d::Mode::Explicit:
      SG_CHECK(padding.h >= 0 && padding.w >= 0, "{}: padding must be >= 0, got ({}, {})", op, padding.h, padding.w);
      g.pt = padding.h;
      g.pl = padding.w;
      pad_h = 2 * padding.h;
      pad_w = 2 * padding.w;
      break;
    case Padding2d::Mode::Same:
      SG_CHECK(g.sh == 1 && g.sw == 1, "{}: padding='same' needs stride 1, got ({}, {}) (as PyTorch)", op, g.sh, g.sw);
      pad_h = g.dh * (kh - 1);
      pad_w = g.dw * (kw - 1);
      g.pt = pad_h / 2;  // the odd pixel goes to the bottom / right, as PyTorch
      g.pl = pad_w / 2;
      break;
    case Padding2d::Mode::Valid: break;
  }
  g.pb = pad_h - g.pt;
  g.pr = pad_w - g.pl;
  g.Ho = out_extent(op, "height", g.H, pad_h, kh, g.dh, g.sh, x_shape, w_shape);
  g.Wo = out_extent(op, "width", g.W, pad_w, kw, g.dw, g.sw, x_shape, w_shape);
  return g;
}

void check_float(const char* op, const Tensor& t, const char* role, Dtype dtype) {
  check_defined(op, t, role);
  SG_CHECK(t.dtype() == dtype, "{}: {} is {}, the input {} (float32 or float64, all alike)", op, role, t.dtype(),
           dtype);
}

struct ConvShapes {
  ConvGeometry g;
  int64_t N, O, G, Cg, Og, K, L;
};

ConvShapes conv_shapes(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Conv2dOptions& o) {
  check_defined(op, x, "input");
  SG_CHECK(x.dtype() == kFloat32 || x.dtype() == kFloat64, "{}: input is {}; float32 or float64 only", op, x.dtype());
  SG_CHECK(x.dim() == 4, "{}: input must be (N, C, H, W), got {}", op, x.shape());
  check_float(op, weight, "weight", x.dtype());
  SG_CHECK(weight.dim() == 4, "{}: weight must be (O, C / groups, kh, kw), got {}", op, weight.shape());
  const int64_t G = o.groups, C = x.size(1), O = weight.size(0);
  SG_CHECK(G >= 1, "{}: groups must be >= 1, got {}", op, G);
  SG_CHECK(C % G == 0 && O % G == 0, "{}: groups {} must divide the input channels {} and the output channels {} "
           "(input {}, weight {})", op, G, C, O, x.shape(), weight.shape());
  SG_CHECK(weight.size(1) * G == C,
           "{}: input {} has {} channels, but weight {} expects {} ({} per group x {} groups)", op, x.shape(), C,
           weight.shape(), weight.size(1) * G, weight.size(1), G);
  if (bias.defined()) {
    check_float(op, bias, "bias", x.dtype());
    SG_CHECK(bias.dim() == 1 && bias.size(0) == O, "{}: bias must be ({}) for weight {}, got {}", op, O,
             weight.shape(), bias.shape());
  }
  ConvShapes s{geometry(op, C, x.size(2), x.size(3), x.shape(), weight.size(2), weight.size(3), o.stride, o.padding,
                        o.dilation, weight.shape()),
               x.size(0), O, G, C / G, O / G, 0, 0};
  s.K = s.Cg * s.g.kh * s.g.kw;
  s.L = s.g.Ho * s.g.Wo;
  return s;
}

template <typename T>
void conv_forward(const ConvShapes& s, const T* x, const T* w, const T* b, T* y) {
  const ConvGeometry& g = s.g;
  ConvGeometry gg = g;  // one group's channels
  gg.C = s.Cg;
  const int threads = image_threads(s.N, s.O * s.K * s.L);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<T> cols(static_cast<size_t>(s.K * s.L));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t grp = 0; grp < s.G; ++grp) {
        kernels::im2col(x + (n * g.C + grp * s.Cg) * g.H * g.W, gg, cols.data());
        T* out = y + (n * s.O + grp * s.Og) * s.L;
        gemm<T>(false, false, s.Og, s.L, s.K, T(1), w + grp * s.Og * s.K, s.K, cols.data(), s.L, T(0), out, s.L);
        if (b)
          for (int64_t o = 0; o < s.Og; ++o)
            for (int64_t l = 0; l < s.L; ++l) out[o * s.L + l] += b[grp * s.Og + o];
      }
    }
  }
}

// dy (N, O, L) -> dx (N, C, H, W) (when wanted), dw (O, K) and db (O) (when wanted).
template <typename T>
void conv_backward(const ConvShapes& s, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db) {
  const ConvGeometry& g = s.g;
  ConvGeometry gg = g;
  gg.C = s.Cg;
  const int threads = image_threads(s.N, s.O * s.K * s.L);
  const int64_t wsize = s.O * s.K;
  std::vector<T> dw_parts(dw ? static_cast<size_t>(threads * wsize) : 0, T(0));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    std::vector<T> cols(static_cast<size_t>(s.K * s.L));
    T* my_dw = dw ? dw_parts.data() + t * wsize : nullptr;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t grp = 0; grp < s.G; ++grp) {
        const T* g_out = dy + (n * s.O + grp * s.Og) * s.L;
        if (my_dw) {
          kernels::im2col(x + (n * g.C + grp * s.Cg) * g.H * g.W, gg, cols.data());
          // dW_g (Og, K) += dY_g (Og, L) @ cols^T (L, K)
          gemm<T>(false, true, s.Og, s.K, s.L, T(1), g_out, s.L, cols.data(), s.L, T(1), my_dw + grp * s.Og * s.K, s.K);
        }
        if (dx) {
          // dcols (K, L) = W_g^T (K, Og) @ dY_g (Og, L), scattered into dx.
          gemm<T>(true, false, s.K, s.L, s.Og, T(1), w + grp * s.Og * s.K, s.K, g_out, s.L, T(0), cols.data(), s.L);
          kernels::col2im(cols.data(), gg, dx + (n * g.C + grp * s.Cg) * g.H * g.W);
        }
      }
    }
  }
  if (dw) {
    std::fill(dw, dw + wsize, T(0));
    for (int t = 0; t < threads; ++t)
      for (int64_t i = 0; i < wsize; ++i) dw[i] += dw_parts[static_cast<size_t>(t * wsize + i)];
  }
  if (db)
    for (int64_t o = 0; o < s.O; ++o) {
      T sum = 0;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t l = 0; l < s.L; ++l) sum += dy[(n * s.O + o) * s.L + l];
      db[o] = sum;
    }
}

template <typename T>
void conv_naive(const ConvShapes& s, const T* x, const T* w, const T* b, T* y) {
  const ConvGeometry& g = s.g;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o) {
      const int64_t grp = o / s.Og;
      for (int64_t oy = 0; oy < g.Ho; ++oy)
        for (int64_t ox = 0; ox < g.Wo; ++ox) {
          double acc = b ? static_cast<double>(b[o]) : 0.0;
          for (int64_t c = 0; c < s.Cg; ++c)
            for (int64_t i = 0; i < g.kh; ++i)
              for (int64_t j = 0; j < g.kw; ++j) {
                const int64_t yy = oy * g.sh - g.pt + i * g.dh, xx = ox * g.sw - g.pl + j * g.dw;
                if (yy < 0 || yy >= g.H || xx < 0 || xx >= g.W) continue;
                acc += static_cast<double>(x[((n * g.C + grp * s.Cg + c) * g.H + yy) * g.W + xx]) *
                       static_cast<double>(w[((o * s.Cg + c) * g.kh + i) * g.kw + j]);
              }
          y[((n * s.O + o) * g.Ho + oy) * g.Wo + ox] = static_cast<T>(acc);
        }
    }
}

// ---- the oneDNN path ------------------------------------------------------------------------

std::atomic<ConvAlgorithm> g_conv_algorithm{ConvAlgorithm::Auto};

OnednnConv onednn_conv(const ConvShapes& s, bool bf16, bool winograd = false) {
  const ConvGeometry& g = s.g;
  return {.N = s.N, .C = g.C, .H = g.H, .W = g.W, .O = s.O, .groups = s.G, .kh = g.kh, .kw = g.kw, .Ho = g.Ho,
          .Wo = g.Wo, .sh = g.sh, .sw = g.sw, .dh = g.dh, .dw = g.dw, .pad_top = g.pt, .pad_left = g.pl,
          .pad_bottom = g.pb, .pad_right = g.pr, .bf16 = bf16, .winograd = winograd};
}

enum class Kernel { Im2col, Onednn, OnednnWinograd };

// Whether oneDNN's Winograd kernels take this float32 convolution (asked once per shape:
// oneDNN caches the primitive).
bool winograd_applies(const ConvShapes& s) {
  const ConvGeometry& g = s.g;
  if (s.G != 1 || g.kh != 3 || g.kw != 3 || g.sh != 1 || g.sw != 1 || g.dh != 1 || g.dw != 1) return false;
  return !onednn_conv_impl(onednn_conv(s, false, true)).starts_with("none");
}

// float32 outside autocast: see ConvAlgorithm in ops/conv.h for the rule.
Kernel conv_kernel_for(const ConvShapes& s) {
  switch (g_conv_algorithm.load()) {
    case ConvAlgorithm::Im2col: return Kernel::Im2col;
    case ConvAlgorithm::Onednn: return Kernel::Onednn;
    case ConvAlgorithm::Winograd: return winograd_applies(s) ? Kernel::OnednnWinograd : Kernel::Onednn;
    case ConvAlgorithm::Auto: break;
  }
  const bool strided_1x1 = s.g.kh == 1 && s.g.kw == 1 && (s.g.sh > 1 || s.g.sw > 1);
  if ((s.G == 1 && s.Cg < 4) || strided_1x1) return Kernel::Im2col;
  if (s.Cg >= 16 && s.Og >= 16 && winograd_applies(s)) return Kernel::OnednnWinograd;
  return Kernel::Onednn;
}

}  // namespace

// ---- ops ---------------------------------------------------------------------------------

namespace {

// conv2d on oneDNN: float32, or under autocast bfloat16 operands (x, w and, in backward, dy
// cast; a parameter's cast cached) with float32 results and gradients.
Tensor conv2d_onednn(const ConvShapes& s, const Tensor& x_in, const Tensor& weight_in, const Tensor& bias,
                     bool bf16, bool winograd) {
  const Tensor x = (bf16 ? autocast::to_bf16(x_in) : x_in).contiguous();
  const Tensor w = (bf16 ? autocast::to_bf16(weight_in) : weight_in).contiguous();
  const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  const OnednnConv c = onednn_conv(s, bf16, winograd);
  const bool record_graph = any_requires_grad({x_in, weight_in, bias});
  const bool need_x = x_in.requires_grad(), need_w = weight_in.requires_grad(),
             need_b = bias.defined() && bias.requires_grad();
  // The weight gradient reads x again. Where oneDNN reorders x (to nChw16c, ...), the
  // forward keeps its reordered copy for it, held instead of x: no second reorder in
  // backward, and no more memory than holding x.
  Tensor x_saved;
  if (record_graph && (need_w || need_b)) {
    const size_t bytes = onednn_conv_saved_src_bytes(c, b.defined());
    x_saved = bytes > 0 ? empty({static_cast<int64_t>((bytes + 3) / 4)}, kFloat32) : x;
  }
  const bool reordered = x_saved.defined() && !x_saved.is_same(x);
  Tensor y = empty({s.N, s.O, s.g.Ho, s.g.Wo}, kFloat32);
  onednn_conv_forward(c, x.raw_data(), w.raw_data(), b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(),
                      reordered ? x_saved.raw_data() : nullptr);
  if (record_graph) {
    record(bf16 ? "conv2d (autocast bfloat16)" : winograd ? "conv2d (oneDNN Winograd)" : "conv2d (oneDNN)",
           {x_in, weight_in, bias}, y,
           [c, xs = SavedTensor(x_saved), ws = SavedTensor(w), reordered, has_bias = b.defined(), need_x, need_w,
            need_b, bf16](const Tensor& dy_in) {
             const Tensor dy = (bf16 ? autocast::to_bf16(dy_in) : dy_in).contiguous(), x = xs.get(), w = ws.get();
             Tensor dx = need_x ? empty({c.N, c.C, c.H, c.W}, kFloat32) : Tensor();
             Tensor dw = need_w || need_b ? empty(w.shape(), kFloat32) : Tensor();  // oneDNN computes db with dw
             Tensor db = need_b ? empty({c.O}, kFloat32) : Tensor();
             const void* x_plain = x.defined() && !reordered ? x.raw_data() : nullptr;
             onednn_conv_backward(c, x_plain, w.raw_data(), dy.raw_data(), need_x ? dx.data_ptr<float>() : nullptr,
                                  dw.defined() ? dw.data_ptr<float>() : nullptr, need_b ? db.data_ptr<float>() : nullptr,
                                  reordered ? x.raw_data() : nullptr, has_bias);
             if (!need_w) dw = Tensor();
             return grads(dx, dw, db);
           });
  }
  return y;
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias, const Conv2dOptions& options) {
  const ConvShapes s = conv_shapes("conv2d", x_in, weight_in, bias, options);
  if (x_in.dtype() == kFloat32 && s.N > 0 && s.O > 0 && s.K > 0) {
    if (autocast::use_bf16_product(x_in, weight_in)) return conv2d_onednn(s, x_in, weight_in, bias, true, false);
    const Kernel k = conv_kernel_for(s);
    if (k != Kernel::Im2col) return conv2d_onednn(s, x_in, weight_in, bias, false, k == Kernel::OnednnWinograd);
  }
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = empty({s.N, s.O, s.g.Ho, s.g.Wo}, x.dtype());
  if (y.numel() > 0)
    visit_floating(x.dtype(), [&]<typename T>() {
      conv_forward<T>(s, x.data_ptr<T>(), weight.data_ptr<T>(), b.defined() ? b.data_ptr<T>() : nullptr,
                      y.data_ptr<T>());
    });
  if (any_requires_grad({x_in, weight_in, bias})) {
    const bool need_x = x_in.requires_grad(), need_w = weight_in.requires_grad(),
               need_b = bias.defined() && bias.requires_grad();
    record("conv2d", {x_in, weight_in, bias}, y,
           [s, xs = SavedTensor(x), ws = SavedTensor(weight), need_x, need_w, need_b](const Tensor& dy_in) {
             const Tensor dy = dy_in.contiguous(), x = xs.get(), w = ws.get();
             Tensor dx = need_x ? zeros(x.shape(), x.dtype()) : Tensor();
             Tensor dw = need_w ? empty(w.shape(), w.dtype()) : Tensor();
             Tensor db = need_b ? empty({s.O}, w.dtype()) : Tensor();
             visit_floating(x.dtype(), [&]<typename T>() {
               conv_backward<T>(s, x.data_ptr<T>(), w.data_ptr<T>(), dy.data_ptr<T>(),
                                need_x ? dx.data_ptr<T>() : nullptr, need_w ? dw.data_ptr<T>() : nullptr,
                                need_b ? db.data_ptr<T>() : nullptr);
             });
             return grads(dx, dw, db);
           });
  }
  return y;
}

void set_conv_algorithm(ConvAlgorithm algorithm) { g_conv_algorithm = algorithm; }
ConvAlgorithm conv_algorithm() { return g_conv_algorithm.load(); }

std::string conv_kernel(const Tensor& x, const Tensor& weight, const Conv2dOptions& options) {
  const ConvShapes s = conv_shapes("conv2d", x, weight, Tensor(), options);
  if (x.dtype() != kFloat32) return "im2col";
  switch (conv_kernel_for(s)) {
    case Kernel::Im2col: return "im2col";
    case Kernel::Onednn: return "onednn";
    case Kernel::OnednnWinograd: return "onednn winograd";
  }
  return "?";
}

Tensor conv2d_naive(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias, const Conv2dOptions& options) {
  const ConvShapes s = conv_shapes("conv2d", x_in, weight_in, bias, options);
  const Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  const Tensor b = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = empty({s.N, s.O, s.g.Ho, s.g.Wo}, x.dtype());
  visit_floating(x.dtype(), [&]<typename T>() {
    conv_naive<T>(s, x.data_ptr<T>(), weight.data_ptr<T>(), b.defined() ? b.data_ptr<T>() : nullptr, y.data_ptr<T>());
  });
  return y;
}

// ---- unfold / fold -------------------------------------------------------------------------

namespace {
// The geometry of unfold over x (N, C, H, W) (or fold onto it).
ConvGeometry unfold_geometry(const char* op, const Shape& x_shape, int64_t C, int64_t H, int64_t W, Size2d k,
                             const UnfoldOptions& o) {
  SG_CHECK(k.h >= 1 && k.w >= 1, "{}: kernel_size must be >= 1, got ({}, {})", op, k.h, k.w);
  SG_CHECK(o.padding.mode == Padding2d::Mode::Explicit, "{}: padding must be explicit numbers", op);
  return geometry(op, C, H, W, x_shape, k.h, k.w, o.stride, o.padding, o.dilation, Shape{k.h, k.w});
}

Tensor fold_impl(const Tensor& cols_in, const ConvGeometry& g);  // unfold's backward, and the reverse

Tensor unfold_impl(const Tensor& x_in, const ConvGeometry& g) {
  const Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), K = g.col_rows(), L = g.col_cols();
  Tensor cols = empty({N, K, L}, x.dtype());
  visit_floating(x.dtype(), [&]<typename T>() {
    const T* px = x.data_ptr<T>();
    T* pc = cols.data_ptr<T>();
    const int threads = image_threads(N, K * L);
#pragma omp parallel for num_threads(threads) if (threads > 1)
    for (int64_t n = 0; n < N; ++n) kernels::im2col(px + n * g.C * g.H * g.W, g, pc + n * K * L);
  });
  if (x_in.requires_grad() && GradMode::is_enabled())
    record("unfold", {x_in}, cols, [g](const Tensor& dcols) { return grads(fold_impl(dcols, g)); });
  return cols;
}

Tensor fold_impl(const Tensor& cols_in, const ConvGeometry& g) {
  const Tensor cols = cols_in.contiguous();
  const int64_t N = cols.size(0), K = g.col_rows(), L = g.col_cols();
  Tensor x = zeros({N, g.C, g.H, g.W}, cols.dtype());
  visit_floating(cols.dtype(), [&]<typename T>() {
    const T* pc = cols.data_ptr<T>();
    T* px = x.data_ptr<T>();
    const int threads = image_threads(N, K * L);
#pragma omp parallel for num_threads(threads) if (threads > 1)
    for (int64_t n = 0; n < N; ++n) kernels::col2im(pc + n * K * L, g, px + n * g.C * g.H * g.W);
  });
  if (cols_in.requires_grad() && GradMode::is_enabled())
    record("fold", {cols_in}, x, [g](const Tensor& dx) { return grads(unfold_impl(dx, g)); });
  return x;
}
}  // namespace

Tensor unfold(const Tensor& x, Size2d kernel_size, const UnfoldOptions& options) {
  check_defined("unfold", x, "input");
  SG_CHECK(x.dtype() == kFloat32 || x.dtype() == kFloat64, "unfold: input is {}; float32 or float64 only", x.dtype());
  SG_CHECK(x.dim() == 4, "unfold: input must be (N, C, H, W), got {}", x.shape());
  return unfold_impl(x, unfold_geometry("unfold", x.shape(), x.size(1), x.size(2), x.size(3), kernel_size, options));
}

Tensor fold(const Tensor& cols, Size2d output_size, Size2d kernel_size, const UnfoldOptions& options) {
  check_defined("fold", cols, "input");
  SG_CHECK(cols.dtype() == kFloat32 || cols.dtype() == kFloat64, "fold: input is {}; float32 or float64 only",
           cols.dtype());
  SG_CHECK(cols.dim() == 3, "fold: input must be (N, C kh kw, L), got {}", cols.shape());
  SG_CHECK(kernel_size.h >= 1 && kernel_size.w >= 1, "fold: kernel_size must be >= 1, got ({}, {})", kernel_size.h,
           kernel_size.w);
  const int64_t k = kernel_size.h * kernel_size.w;
  SG_CHECK(cols.size(1) % k == 0, "fold: input {} has {} rows, not a multiple of the kernel's {} x {}", cols.shape(),
           cols.size(1), kernel_size.h, kernel_size.w);
  const ConvGeometry g =
      unfold_geometry("fold", cols.shape(), cols.size(1) / k, output_size.h, output_size.w, kernel_size, options);
  SG_CHECK(cols.size(2) == g.col_cols(),
           "fold: input {} has {} columns, but output_size ({}, {}) with this kernel gives {} x {} = {} blocks",
           cols.shape(), cols.size(2), output_size.h, output_size.w, g.Ho, g.Wo, g.col_cols());
  return fold_impl(cols, g);
}

}  // namespace sg
