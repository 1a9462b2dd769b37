// Kernels of batch_norm (see ops/batch_norm_kernels.h for the layout and the formulas).
//
// The naive kernels come first: they are the specification. The fast ones compute the same
// formulas in vectors of double (float32 loads half a vector of floats and widens it, as
// ops/reduce.cpp; results are rounded to T once), so they match the naive ones up to the
// order of the additions in the sums and a last-bit rounding of y and dx. Each segment (the
// S contiguous values of one image and channel) is walked with full vectors and a scalar tail:
//   statistics  per channel (channels in parallel): pass 1 sum x, pass 2 sum (x - mean)^2,
//               over the channel's N segments.
//   forward     per (n, c) segment (N C of them in parallel): y = (x - mean) a + b.
//   backward    per channel (channels in parallel): pass 1 sums dy and dy (x - mean)
//               (sum dy xhat = rstd sum dy (x - mean)); pass 2, while the channel is still in
//               cache, writes dx = a dy - (k0 + (x - mean) k1) with k0 = a sum dy / M and
//               k1 = a rstd sum(dy xhat) / M (the formula expanded; a dy in eval).
// Segments shorter than a double vector (S = 1: (N, C) inputs, BatchNorm1d) take the same
// formulas by columns instead (see "short segments" below).
// NOTE: float32 lanes would do no better: every pass here is bound by memory (and the naive
// statistics by the latency of one chain of double additions, which the vectors break).
#include "ops/batch_norm_kernels.h"

#include <hwy/highway.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/simd_partial.h"
#include "core/strided.h"

namespace sg::kernels {
namespace hn = hwy::HWY_NAMESPACE;

// ---- naive ----------------------------------------------------------------------------------

template <typename T> void batch_norm_stats_naive(const T* x, double* mean, double* var, BatchNormDims s) {
  for (int64_t c = 0; c < s.C; ++c) {
    double sum = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < s.S; ++i) sum += x[(n * s.C + c) * s.S + i];
    const double m = sum / static_cast<double>(s.M());
    double sq = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < s.S; ++i) {
        const double dev = x[(n * s.C + c) * s.S + i] - m;
        sq += dev * dev;
      }
    mean[c] = m;
    var[c] = sq / static_cast<double>(s.M());
  }
}

template <typename T>
void batch_norm_forward_naive(const T* x, const T* w, const T* b, const double* mean, const double* rstd, T* y,
                              BatchNormDims s) {
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t i = 0; i < s.S; ++i) {
        const int64_t at = (n * s.C + c) * s.S + i;
        const double xhat = (x[at] - mean[c]) * rstd[c];
        y[at] = static_cast<T>(xhat * (w ? static_cast<double>(w[c]) : 1.0) + (b ? static_cast<double>(b[c]) : 0.0));
      }
}

template <typename T>
void batch_norm_backward_naive(const T* x, const T* w, const double* mean, const double* rstd, const T* dy, T* dx,
                               T* dw, T* db, BatchNormDims s, bool training) {
  const double M = static_cast<double>(s.M());
  for (int64_t c = 0; c < s.C; ++c) {
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < s.S; ++i) {
        const int64_t at = (n * s.C + c) * s.S + i;
        sum_dy += dy[at];
        sum_dy_xhat += dy[at] * (x[at] - mean[c]) * rstd[c];
      }
    if (dw) dw[c] = static_cast<T>(sum_dy_xhat);
    if (db) db[c] = static_cast<T>(sum_dy);
    if (!dx) continue;
    const double a = rstd[c] * (w ? static_cast<double>(w[c]) : 1.0);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t i = 0; i < s.S; ++i) {
        const int64_t at = (n * s.C + c) * s.S + i;
        const double xhat = (x[at] - mean[c]) * rstd[c];
        dx[at] = static_cast<T>(training ? a / M * (M * dy[at] - sum_dy - xhat * sum_dy_xhat) : a * dy[at]);
      }
  }
}

// ---- fast -----------------------------------------------------------------------------------

namespace {

using DTag = hn::ScalableTag<double>;
using DVec = hn::Vec<DTag>;

template <class D> HWY_INLINE int64_t lanes(D d) { return static_cast<int64_t>(hn::Lanes(d)); }

// Elements [i, i + lanes(DTag)) of p as doubles: float32 loads that many floats and widens.
template <typename T> HWY_INLINE DVec load_double(const T* p) {
  const DTag d;
  if constexpr (std::is_same_v<T, float>) {
    const hn::Rebind<float, DTag> df;  // as many floats as d has doubles
    return hn::PromoteTo(d, hn::LoadU(df, p));
  } else {
    return hn::LoadU(d, p);
  }
}

// Σ x over one segment of n elements, in double (two accumulators hide the add latency).
template <typename T> double segment_sum(const T* x, int64_t n) {
  const DTag d;
  const int64_t L = lanes(d);
  DVec a0 = hn::Zero(d), a1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    a0 = hn::Add(a0, load_double(x + i));
    a1 = hn::Add(a1, load_double(x + i + L));
  }
  for (; i + L <= n; i += L) a0 = hn::Add(a0, load_double(x + i));
  double s = i > 0 ? hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1))) : 0.0;  // (S = 1: no vector at all)
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  return s;
}

// Σ (x - m)^2 over one segment, in double.
template <typename T> double segment_sq_dev(const T* x, int64_t n, double m) {
  const DTag d;
  const int64_t L = lanes(d);
  const DVec vm = hn::Set(d, m);
  DVec a0 = hn::Zero(d), a1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const DVec v0 = hn::Sub(load_double(x + i), vm), v1 = hn::Sub(load_double(x + i + L), vm);
    a0 = hn::MulAdd(v0, v0, a0);
    a1 = hn::MulAdd(v1, v1, a1);
  }
  for (; i + L <= n; i += L) {
    const DVec v = hn::Sub(load_double(x + i), vm);
    a0 = hn::MulAdd(v, v, a0);
  }
  double s = i > 0 ? hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1))) : 0.0;
  for (; i < n; ++i) {
    const double v = static_cast<double>(x[i]) - m;
    s += v * v;
  }
  return s;
}

// Σ dy and Σ dy (x - m) over one segment, in double, added to *sum_dy and *sum_dy_xc.
template <typename T>
void segment_dy_sums(const T* x, const T* dy, int64_t n, double m, double* sum_dy, double* sum_dy_xc) {
  const DTag d;
  const int64_t L = lanes(d);
  const DVec vm = hn::Set(d, m);
  DVec g0 = hn::Zero(d), g1 = hn::Zero(d), gx0 = hn::Zero(d), gx1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const DVec dy0 = load_double(dy + i), dy1 = load_double(dy + i + L);
    g0 = hn::Add(g0, dy0);
    g1 = hn::Add(g1, dy1);
    gx0 = hn::MulAdd(dy0, hn::Sub(load_double(x + i), vm), gx0);
    gx1 = hn::MulAdd(dy1, hn::Sub(load_double(x + i + L), vm), gx1);
  }
  for (; i + L <= n; i += L) {
    const DVec v = load_double(dy + i);
    g0 = hn::Add(g0, v);
    gx0 = hn::MulAdd(v, hn::Sub(load_double(x + i), vm), gx0);
  }
  double sg = 0, sgx = 0;
  if (i > 0) {
    sg = hn::GetLane(hn::SumOfLanes(d, hn::Add(g0, g1)));
    sgx = hn::GetLane(hn::SumOfLanes(d, hn::Add(gx0, gx1)));
  }
  for (; i < n; ++i) {
    sg += static_cast<double>(dy[i]);
    sgx += static_cast<double>(dy[i]) * (static_cast<double>(x[i]) - m);
  }
  *sum_dy += sg;
  *sum_dy_xc += sgx;
}

// The lanes of a double vector, rounded to T, to p.
template <typename T> HWY_INLINE void store_double(DVec v, T* p) {
  if constexpr (std::is_same_v<T, float>) {
    const hn::Rebind<float, DTag> df;
    hn::StoreU(hn::DemoteTo(df, v), df, p);
  } else {
    hn::StoreU(v, DTag(), p);
  }
}

// y = (x - m) a + b over one segment, in double, rounded to T once.
template <typename T> void segment_normalize(const T* x, T* y, int64_t n, double m, double a, double b) {
  const DTag d;
  const int64_t L = lanes(d);
  const DVec vm = hn::Set(d, m), va = hn::Set(d, a), vb = hn::Set(d, b);
  int64_t i = 0;
  for (; i + L <= n; i += L) store_double(hn::MulAdd(hn::Sub(load_double(x + i), vm), va, vb), y + i);
  for (; i < n; ++i) y[i] = static_cast<T>((static_cast<double>(x[i]) - m) * a + b);
}

// dx = a dy over one segment (eval), in double, rounded to T once.
template <typename T> void segment_scale(const T* dy, T* dx, int64_t n, double a) {
  const DTag d;
  const int64_t L = lanes(d);
  const DVec va = hn::Set(d, a);
  int64_t i = 0;
  for (; i + L <= n; i += L) store_double(hn::Mul(va, load_double(dy + i)), dx + i);
  for (; i < n; ++i) dx[i] = static_cast<T>(a * static_cast<double>(dy[i]));
}

// dx = a dy - (k0 + (x - m) k1) over one segment (training), in double, rounded to T once.
template <typename T>
void segment_dx(const T* x, const T* dy, T* dx, int64_t n, double m, double a, double k0, double k1) {
  const DTag d;
  const int64_t L = lanes(d);
  const DVec vm = hn::Set(d, m), va = hn::Set(d, a), vk0 = hn::Set(d, k0), vk1 = hn::Set(d, k1);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const DVec t = hn::MulAdd(hn::Sub(load_double(x + i), vm), vk1, vk0);
    store_double(hn::MulSub(va, load_double(dy + i), t), dx + i);
  }
  for (; i < n; ++i)
    dx[i] = static_cast<T>(a * static_cast<double>(dy[i]) - (k0 + (static_cast<double>(x[i]) - m) * k1));
}

// ---- short segments (S < the lanes of a double vector; S = 1 for (N, C) inputs) ----------
// Segments this short leave the vectors idle, so these walk x as the (N, J) matrix it is,
// J = C S: lanes run along a row's J contiguous columns (column j belongs to channel j / S),
// the sums go down the N rows per column, and the S column sums of a channel are added up
// afterwards. Per-channel constants are spread to per-column rows first.

// count (1 .. lanes) elements from p as doubles, zeros past them.
template <typename T> HWY_INLINE DVec load_double_n(const T* p, int64_t count) {
  const DTag d;
  if (count >= lanes(d)) return load_double(p);
  if constexpr (std::is_same_v<T, float>) {
    const hn::Rebind<float, DTag> df;
    return hn::PromoteTo(d, simd::LoadFirstN(df, p, static_cast<size_t>(count)));
  } else {
    return simd::LoadFirstN(d, p, static_cast<size_t>(count));
  }
}

// The first count (1 .. lanes) lanes of v, rounded to T, to p; memory past them untouched.
template <typename T> HWY_INLINE void store_double_n(DVec v, T* p, int64_t count) {
  const DTag d;
  if (count >= lanes(d)) return store_double(v, p);
  if constexpr (std::is_same_v<T, float>) {
    const hn::Rebind<float, DTag> df;
    simd::StoreFirstN(hn::DemoteTo(df, v), df, p, static_cast<size_t>(count));
  } else {
    simd::StoreFirstN(v, d, p, static_cast<size_t>(count));
  }
}

// For each block of columns [j, j + count) in parallel: fn(j, count).
template <typename Fn> void for_column_blocks(int64_t J, int64_t cost_per_column, Fn&& fn) {
  const int64_t L = lanes(DTag());
  parallel_for((J + L - 1) / L, L * cost_per_column, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) fn(b * L, std::min(L, J - b * L));
  });
}

// Per channel: the sum of its S columns. Per column: its channel's value.
void fold_columns(const double* col, double* channel, BatchNormDims s) {
  for (int64_t c = 0; c < s.C; ++c) {
    double t = 0;
    for (int64_t i = 0; i < s.S; ++i) t += col[c * s.S + i];
    channel[c] = t;
  }
}
std::vector<double> spread_to_columns(BatchNormDims s, const auto& value_of_channel) {
  std::vector<double> col(static_cast<size_t>(s.C * s.S));
  for (int64_t j = 0; j < s.C * s.S; ++j) col[static_cast<size_t>(j)] = value_of_channel(j / s.S);
  return col;
}

template <typename T> void short_stats(const T* x, double* mean, double* var, BatchNormDims s) {
  const DTag d;
  const int64_t J = s.C * s.S;
  const double M = static_cast<double>(s.M());
  std::vector<double> col(static_cast<size_t>(J));
  for_column_blocks(J, s.N, [&](int64_t j, int64_t count) {
    DVec acc = hn::Zero(d);
    for (int64_t n = 0; n < s.N; ++n) acc = hn::Add(acc, load_double_n(x + n * J + j, count));
    store_double_n(acc, col.data() + j, count);
  });
  fold_columns(col.data(), mean, s);
  for (int64_t c = 0; c < s.C; ++c) mean[c] /= M;
  const std::vector<double> mcol = spread_to_columns(s, [&](int64_t c) { return mean[c]; });
  for_column_blocks(J, s.N, [&](int64_t j, int64_t count) {
    const DVec vm = load_double_n(mcol.data() + j, count);
    DVec acc = hn::Zero(d);
    for (int64_t n = 0; n < s.N; ++n) {
      const DVec v = hn::Sub(load_double_n(x + n * J + j, count), vm);
      acc = hn::MulAdd(v, v, acc);
    }
    store_double_n(acc, col.data() + j, count);
  });
  fold_columns(col.data(), var, s);
  for (int64_t c = 0; c < s.C; ++c) var[c] /= M;
}

template <typename T>
void short_forward(const T* x, const T* w, const T* b, const double* mean, const double* rstd, T* y, BatchNormDims s) {
  const int64_t J = s.C * s.S, L = lanes(DTag());
  const std::vector<double> mcol = spread_to_columns(s, [&](int64_t c) { return mean[c]; });
  const std::vector<double> acol =
      spread_to_columns(s, [&](int64_t c) { return rstd[c] * (w ? static_cast<double>(w[c]) : 1.0); });
  const std::vector<double> bcol = spread_to_columns(s, [&](int64_t c) { return b ? static_cast<double>(b[c]) : 0.0; });
  parallel_for(s.N, J, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int64_t j = 0; j < J; j += L) {
        const int64_t count = std::min(L, J - j);
        const DVec xc = hn::Sub(load_double_n(x + n * J + j, count), load_double_n(mcol.data() + j, count));
        store_double_n(hn::MulAdd(xc, load_double_n(acol.data() + j, count), load_double_n(bcol.data() + j, count)),
                       y + n * J + j, count);
      }
  });
}

template <typename T>
void short_backward(const T* x, const T* w, const double* mean, const double* rstd, const T* dy, T* dx, T* dw, T* db,
                    BatchNormDims s, bool training) {
  const DTag d;
  const int64_t J = s.C * s.S, L = lanes(d);
  const double M = static_cast<double>(s.M());
  const std::vector<double> mcol = spread_to_columns(s, [&](int64_t c) { return mean[c]; });
  std::vector<double> col_dy(static_cast<size_t>(J)), col_dy_xc(static_cast<size_t>(J));
  for_column_blocks(J, 2 * s.N, [&](int64_t j, int64_t count) {
    const DVec vm = load_double_n(mcol.data() + j, count);
    DVec g = hn::Zero(d), gx = hn::Zero(d);
    for (int64_t n = 0; n < s.N; ++n) {
      const DVec vdy = load_double_n(dy + n * J + j, count);
      g = hn::Add(g, vdy);
      gx = hn::MulAdd(vdy, hn::Sub(load_double_n(x + n * J + j, count), vm), gx);
    }
    store_double_n(g, col_dy.data() + j, count);
    store_double_n(gx, col_dy_xc.data() + j, count);
  });
  std::vector<double> sum_dy(static_cast<size_t>(s.C)), sum_dy_xhat(static_cast<size_t>(s.C));
  fold_columns(col_dy.data(), sum_dy.data(), s);
  fold_columns(col_dy_xc.data(), sum_dy_xhat.data(), s);
  for (int64_t c = 0; c < s.C; ++c) {
    sum_dy_xhat[static_cast<size_t>(c)] *= rstd[c];
    if (dw) dw[c] = static_cast<T>(sum_dy_xhat[static_cast<size_t>(c)]);
    if (db) db[c] = static_cast<T>(sum_dy[static_cast<size_t>(c)]);
  }
  if (!dx) return;
  auto a_of = [&](int64_t c) { return rstd[c] * (w ? static_cast<double>(w[c]) : 1.0); };
  const std::vector<double> acol = spread_to_columns(s, a_of);
  const std::vector<double> k0col =
      spread_to_columns(s, [&](int64_t c) { return a_of(c) * sum_dy[static_cast<size_t>(c)] / M; });
  const std::vector<double> k1col = spread_to_columns(
      s, [&](int64_t c) { return a_of(c) * rstd[c] * sum_dy_xhat[static_cast<size_t>(c)] / M; });
  parallel_for(s.N, 2 * J, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int64_t j = 0; j < J; j += L) {
        const int64_t count = std::min(L, J - j), at = n * J + j;
        const DVec out = hn::Mul(load_double_n(acol.data() + j, count), load_double_n(dy + at, count));
        if (!training) {
          store_double_n(out, dx + at, count);
          continue;
        }
        const DVec xc = hn::Sub(load_double_n(x + at, count), load_double_n(mcol.data() + j, count));
        const DVec t = hn::MulAdd(xc, load_double_n(k1col.data() + j, count), load_double_n(k0col.data() + j, count));
        store_double_n(hn::Sub(out, t), dx + at, count);
      }
  });
}

}  // namespace

template <typename T> void batch_norm_stats(const T* x, double* mean, double* var, BatchNormDims s) {
  if (s.S < lanes(DTag())) return short_stats(x, mean, var, s);
  const double M = static_cast<double>(s.M());
  parallel_for(s.C, 2 * s.M(), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < s.N; ++n) sum += segment_sum(x + (n * s.C + c) * s.S, s.S);
      const double m = sum / M;
      double sq = 0;
      for (int64_t n = 0; n < s.N; ++n) sq += segment_sq_dev(x + (n * s.C + c) * s.S, s.S, m);
      mean[c] = m;
      var[c] = sq / M;
    }
  });
}

template <typename T>
void batch_norm_forward(const T* x, const T* w, const T* b, const double* mean, const double* rstd, T* y,
                        BatchNormDims s) {
  if (s.S < lanes(DTag())) return short_forward(x, w, b, mean, rstd, y, s);
  parallel_for(s.N * s.C, s.S, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t c = nc % s.C;
      const double a = rstd[c] * (w ? static_cast<double>(w[c]) : 1.0);
      segment_normalize(x + nc * s.S, y + nc * s.S, s.S, mean[c], a, b ? static_cast<double>(b[c]) : 0.0);
    }
  });
}

template <typename T>
void batch_norm_backward(const T* x, const T* w, const double* mean, const double* rstd, const T* dy, T* dx, T* dw,
                         T* db, BatchNormDims s, bool training) {
  if (s.S < lanes(DTag())) return short_backward(x, w, mean, rstd, dy, dx, dw, db, s, training);
  const double M = static_cast<double>(s.M());
  parallel_for(s.C, 3 * s.M(), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double sum_dy = 0, sum_dy_xc = 0;  // Σ dy, Σ dy (x - mean)
      for (int64_t n = 0; n < s.N; ++n) {
        const int64_t at = (n * s.C + c) * s.S;
        segment_dy_sums(x + at, dy + at, s.S, mean[c], &sum_dy, &sum_dy_xc);
      }
      const double sum_dy_xhat = sum_dy_xc * rstd[c];
      if (dw) dw[c] = static_cast<T>(sum_dy_xhat);
      if (db) db[c] = static_cast<T>(sum_dy);
      if (!dx) continue;
      // training: dx = a dy - (k0 + (x - mean) k1); eval: dx = a dy
      const double a = rstd[c] * (w ? static_cast<double>(w[c]) : 1.0);
      const double k0 = a * sum_dy / M, k1 = a * rstd[c] * sum_dy_xhat / M;
      for (int64_t n = 0; n < s.N; ++n) {
        const int64_t at = (n * s.C + c) * s.S;
        if (training)
          segment_dx(x + at, dy + at, dx + at, s.S, mean[c], a, k0, k1);
        else
          segment_scale(dy + at, dx + at, s.S, a);
      }
    }
  });
}

#define SG_INSTANTIATE_BATCH_NORM_KERNELS(T)                                                                      \
  template void batch_norm_stats<T>(const T*, double*, double*, BatchNormDims);                                   \
  template void batch_norm_forward<T>(const T*, const T*, const T*, const double*, const double*, T*,             \
                                      BatchNormDims);                                                             \
  template void batch_norm_backward<T>(const T*, const T*, const double*, const double*, const T*, T*, T*, T*,    \
                                       BatchNormDims, bool);                                                      \
  template void batch_norm_stats_naive<T>(const T*, double*, double*, BatchNormDims);                             \
  template void batch_norm_forward_naive<T>(const T*, const T*, const T*, const double*, const double*, T*,       \
                                            BatchNormDims);                                                       \
  template void batch_norm_backward_naive<T>(const T*, const T*, const double*, const double*, const T*, T*, T*,  \
                                             T*, BatchNormDims, bool);
SG_INSTANTIATE_BATCH_NORM_KERNELS(float)
SG_INSTANTIATE_BATCH_NORM_KERNELS(double)
#undef SG_INSTANTIATE_BATCH_NORM_KERNELS

}  // namespace sg::kernels
