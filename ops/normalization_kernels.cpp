// Kernels of layer_norm (see ops/normalization_kernels.h for the formulas and layouts).
//
// Forward, per row of C contiguous elements (rows in parallel when N * C is large):
//   pass 1  sum x                    -> mean    (vector sums in T, moved into a double every
//   pass 2  sum (x - mean)^2         -> rstd     kFlushEvery vectors: exact enough for float32)
//   pass 3  y = (x - mean) * (rstd * w) + b
// Two passes over a row that sits in L1 cost less than Welford's divisions and are as
// accurate (the variance never subtracts two large sums). Rows of at most kRegisterVecs
// vectors (C <= 64 floats with AVX-512, the transformer's rows) are loaded once and kept in
// registers for all three passes.
// Backward, per row: pass 1 sums gw = g * w and gw * xhat (xhat recomputed from x, mean,
// rstd) and adds g * xhat and g into this thread's dw, db partials; pass 2 writes dx. Each
// thread owns its partials (T, added into a double copy every kFlushRows rows) and the
// threads' doubles are summed at the end, so no two threads write one column.
#include "ops/normalization_kernels.h"

#include <hwy/highway.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/scratch.h"
#include "core/simd_partial.h"
#include "core/strided.h"

namespace sg::kernels {
namespace hn = hwy::HWY_NAMESPACE;

namespace {

template <typename T> using Tag = hn::ScalableTag<T>;
template <typename T> using Vec = hn::Vec<Tag<T>>;

constexpr int kFlushEvery = 64;    // vectors summed in T before the partial moves into a double
constexpr int64_t kFlushRows = 32;  // rows of dw, db partials summed in T before moving into doubles
constexpr int kRegisterVecs = 4;    // rows of at most this many vectors stay in registers

template <typename T> HWY_INLINE int64_t lanes() { return static_cast<int64_t>(hn::Lanes(Tag<T>())); }

// count (1 .. lanes) elements from p, zeros in the lanes past them.
template <typename T> HWY_INLINE Vec<T> load_n(const T* p, int64_t count) {
  const Tag<T> d;
  if (count == lanes<T>()) return hn::LoadU(d, p);
  return simd::LoadFirstN(d, p, static_cast<size_t>(count));
}
template <typename T> HWY_INLINE void store_n(Vec<T> v, T* p, int64_t count) {
  const Tag<T> d;
  if (count == lanes<T>()) return hn::StoreU(v, d, p);
  simd::StoreFirstN(v, d, p, static_cast<size_t>(count));
}

// A sum of vectors in T, moved into a double every kFlushEvery vectors.
template <typename T> struct VecSum {
  Vec<T> partial = hn::Zero(Tag<T>());
  double total = 0;
  int pending = 0;
  HWY_INLINE void add(Vec<T> v) {
    partial = hn::Add(partial, v);
    if (++pending == kFlushEvery) flush();
  }
  HWY_INLINE double flush() {
    total += static_cast<double>(hn::GetLane(hn::SumOfLanes(Tag<T>(), partial)));
    partial = hn::Zero(Tag<T>());
    pending = 0;
    return total;
  }
};

// ---- forward ---------------------------------------------------------------------------

struct RowStats {
  double mean, rstd;
};

// rstd from the sum of squared deviations (the biased variance, as PyTorch).
HWY_INLINE double rstd_from(double sum_sq, int64_t C, double eps) {
  return 1.0 / std::sqrt(sum_sq / static_cast<double>(C) + eps);
}

// y = (x - mean) * (rstd * w) + b for one vector of a row: the `count` elements from column i.
template <typename T>
HWY_INLINE Vec<T> normalize(Vec<T> vx, Vec<T> vmean, Vec<T> vrstd, const T* w, const T* b, int64_t i, int64_t count) {
  Vec<T> scale = vrstd;
  if (w) scale = hn::Mul(scale, load_n(w + i, count));
  const Vec<T> centered = hn::Sub(vx, vmean);
  if (b) return hn::MulAdd(centered, scale, load_n(b + i, count));
  return hn::Mul(centered, scale);
}

// A row of at most kRegisterVecs vectors: one load, three passes in registers.
template <typename T>
HWY_INLINE RowStats short_row_forward(const T* x, const T* w, const T* b, T* y, int64_t C, double eps) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  Vec<T> v[kRegisterVecs];
  const int nv = static_cast<int>((C + L - 1) / L);
  Vec<T> sum = hn::Zero(d);
  for (int k = 0; k < nv; ++k) {
    v[k] = load_n(x + k * L, std::min(L, C - k * L));
    sum = hn::Add(sum, v[k]);
  }
  const double mean = static_cast<double>(hn::GetLane(hn::SumOfLanes(d, sum))) / static_cast<double>(C);
  const Vec<T> vmean = hn::Set(d, static_cast<T>(mean));
  Vec<T> sq = hn::Zero(d);
  for (int k = 0; k < nv; ++k) {
    const int64_t count = std::min(L, C - k * L);
    Vec<T> c = hn::Sub(v[k], vmean);
    if (count < L) c = hn::IfThenElseZero(hn::FirstN(d, static_cast<size_t>(count)), c);  // padding lanes
    sq = hn::MulAdd(c, c, sq);
  }
  const RowStats s{mean, rstd_from(static_cast<double>(hn::GetLane(hn::SumOfLanes(d, sq))), C, eps)};
  const Vec<T> vrstd = hn::Set(d, static_cast<T>(s.rstd));
  for (int k = 0; k < nv; ++k) {
    const int64_t count = std::min(L, C - k * L);
    store_n(normalize(v[k], vmean, vrstd, w, b, k * L, count), y + k * L, count);
  }
  return s;
}

template <typename T>
RowStats long_row_forward(const T* x, const T* w, const T* b, T* y, int64_t C, double eps) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  VecSum<T> sum;
  for (int64_t i = 0; i < C; i += L) sum.add(load_n(x + i, std::min(L, C - i)));
  const double mean = sum.flush() / static_cast<double>(C);
  const Vec<T> vmean = hn::Set(d, static_cast<T>(mean));
  VecSum<T> sq;
  for (int64_t i = 0; i < C; i += L) {
    const int64_t count = std::min(L, C - i);
    Vec<T> c = hn::Sub(load_n(x + i, count), vmean);
    if (count < L) c = hn::IfThenElseZero(hn::FirstN(d, static_cast<size_t>(count)), c);
    sq.add(hn::Mul(c, c));
  }
  const RowStats s{mean, rstd_from(sq.flush(), C, eps)};
  const Vec<T> vrstd = hn::Set(d, static_cast<T>(s.rstd));
  for (int64_t i = 0; i < C; i += L) {
    const int64_t count = std::min(L, C - i);
    store_n(normalize(load_n(x + i, count), vmean, vrstd, w, b, i, count), y + i, count);
  }
  return s;
}

// ---- backward --------------------------------------------------------------------------

// How many threads the backward uses: parallel_for's rule (kGrainElems elements a thread).
int backward_threads(int64_t N, int64_t C) {
  if (omp_in_parallel()) return 1;
  const int64_t by_work = N * std::max<int64_t>(C, 1) * 2 / kGrainElems;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({omp_get_max_threads(), by_work, N})));
}

// One row's backward. dwp, dbp: this thread's partials (C) or null.
template <typename T>
HWY_INLINE void row_backward(const T* x, const T* w, T mean, T rstd, const T* g, T* dx, T* dwp, T* dbp, int64_t C) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  const Vec<T> vmean = hn::Set(d, mean), vrstd = hn::Set(d, rstd);
  VecSum<T> sum_gw, sum_gw_xhat;
  // Padding lanes load g = 0, so they add nothing to the sums or the partials.
  for (int64_t i = 0; i < C; i += L) {
    const int64_t count = std::min(L, C - i);
    const Vec<T> vg = load_n(g + i, count);
    const Vec<T> xhat = hn::Mul(hn::Sub(load_n(x + i, count), vmean), vrstd);
    const Vec<T> gw = w ? hn::Mul(vg, load_n(w + i, count)) : vg;
    sum_gw.add(gw);
    sum_gw_xhat.add(hn::Mul(gw, xhat));
    if (dwp) store_n(hn::MulAdd(vg, xhat, load_n(dwp + i, count)), dwp + i, count);
    if (dbp) store_n(hn::Add(vg, load_n(dbp + i, count)), dbp + i, count);
  }
  if (!dx) return;
  const double inv_c = 1.0 / static_cast<double>(C);
  const Vec<T> mean_gw = hn::Set(d, static_cast<T>(sum_gw.flush() * inv_c));
  const Vec<T> mean_gw_xhat = hn::Set(d, static_cast<T>(sum_gw_xhat.flush() * inv_c));
  for (int64_t i = 0; i < C; i += L) {
    const int64_t count = std::min(L, C - i);
    const Vec<T> vg = load_n(g + i, count);
    const Vec<T> xhat = hn::Mul(hn::Sub(load_n(x + i, count), vmean), vrstd);
    const Vec<T> gw = w ? hn::Mul(vg, load_n(w + i, count)) : vg;
    // rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
    const Vec<T> t = hn::NegMulAdd(xhat, mean_gw_xhat, hn::Sub(gw, mean_gw));
    store_n(hn::Mul(t, vrstd), dx + i, count);
  }
}

}  // namespace

// ---- kernels -----------------------------------------------------------------------------

template <typename T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, LayerNormDims dims, double eps) {
  const int64_t N = dims.N, C = dims.C;
  if (N == 0 || C == 0) return;
  const bool in_registers = C <= kRegisterVecs * lanes<T>();
  parallel_for(N, C, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const RowStats s = in_registers ? short_row_forward(x + r * C, w, b, y + r * C, C, eps)
                                      : long_row_forward(x + r * C, w, b, y + r * C, C, eps);
      mean[r] = static_cast<T>(s.mean);
      rstd[r] = static_cast<T>(s.rstd);
    }
  });
}

template <typename T>
void layer_norm_backward(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, T* dw, T* db,
                         LayerNormDims dims) {
  const int64_t N = dims.N, C = dims.C;
  if (C == 0) return;
  const bool want_params = dw || db;
  const int threads = backward_threads(N, C);
  // Per thread: dw then db, in double.
  std::vector<double> totals(want_params ? static_cast<size_t>(threads) * 2 * C : 0, 0.0);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = N * t / nt, end = N * (t + 1) / nt;
    T* dwp = nullptr;
    T* dbp = nullptr;
    double* dw_total = want_params ? totals.data() + static_cast<size_t>(t) * 2 * C : nullptr;
    double* db_total = want_params ? dw_total + C : nullptr;
    if (dw) dwp = thread_scratch<T>(C, 0);
    if (db) dbp = thread_scratch<T>(C, 1);
    auto flush = [&] {
      for (int64_t c = 0; c < C; ++c) {
        if (dwp) dw_total[c] += static_cast<double>(dwp[c]);
        if (dbp) db_total[c] += static_cast<double>(dbp[c]);
      }
      if (dwp) std::fill(dwp, dwp + C, T(0));
      if (dbp) std::fill(dbp, dbp + C, T(0));
    };
    if (dwp) std::fill(dwp, dwp + C, T(0));
    if (dbp) std::fill(dbp, dbp + C, T(0));
    for (int64_t r = begin; r < end; ++r) {
      row_backward(x + r * C, w, mean[r], rstd[r], g + r * C, dx ? dx + r * C : nullptr, dwp, dbp, C);
      if (want_params && (r - begin + 1) % kFlushRows == 0) flush();
    }
    if (want_params) flush();
  }
  if (!want_params) return;
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int t = 0; t < threads; ++t) {
      sw += totals[static_cast<size_t>(t) * 2 * C + c];
      sb += totals[static_cast<size_t>(t) * 2 * C + C + c];
    }
    if (dw) dw[c] = static_cast<T>(sw);
    if (db) db[c] = static_cast<T>(sb);
  }
}

// ---- naive references: scalar, textbook formulas, sums in long double ---------------------

template <typename T>
void layer_norm_forward_naive(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, LayerNormDims dims,
                              double eps) {
  const int64_t N = dims.N, C = dims.C;
  if (C == 0) return;
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * C;
    long double s = 0;
    for (int64_t c = 0; c < C; ++c) s += xr[c];
    const long double m = s / C;
    long double sq = 0;
    for (int64_t c = 0; c < C; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const long double rs = 1.0L / std::sqrt(sq / C + eps);
    for (int64_t c = 0; c < C; ++c)
      y[r * C + c] = static_cast<T>((xr[c] - m) * rs * (w ? w[c] : T(1)) + (b ? b[c] : T(0)));
    mean[r] = static_cast<T>(m);
    rstd[r] = static_cast<T>(rs);
  }
}

template <typename T>
void layer_norm_backward_naive(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, T* dw, T* db,
                               LayerNormDims dims) {
  const int64_t N = dims.N, C = dims.C;
  std::vector<long double> sw(C, 0.0L), sb(C, 0.0L);
  for (int64_t r = 0; r < N; ++r) {
    const T *xr = x + r * C, *gr = g + r * C;
    long double s1 = 0, s2 = 0;
    for (int64_t c = 0; c < C; ++c) {
      const long double xhat = (static_cast<long double>(xr[c]) - mean[r]) * rstd[r];
      const long double gw = static_cast<long double>(gr[c]) * (w ? w[c] : T(1));
      s1 += gw;
      s2 += gw * xhat;
      sw[c] += gr[c] * xhat;
      sb[c] += gr[c];
    }
    if (!dx) continue;
    for (int64_t c = 0; c < C; ++c) {
      const long double xhat = (static_cast<long double>(xr[c]) - mean[r]) * rstd[r];
      const long double gw = static_cast<long double>(gr[c]) * (w ? w[c] : T(1));
      dx[r * C + c] = static_cast<T>(rstd[r] * (gw - s1 / C - xhat * s2 / C));
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    if (dw) dw[c] = static_cast<T>(sw[c]);
    if (db) db[c] = static_cast<T>(sb[c]);
  }
}

#define SG_INSTANTIATE_LAYER_NORM_KERNELS(T)                                                                    \
  template void layer_norm_forward<T>(const T*, const T*, const T*, T*, T*, T*, LayerNormDims, double);         \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*,            \
                                       LayerNormDims);                                                          \
  template void layer_norm_forward_naive<T>(const T*, const T*, const T*, T*, T*, T*, LayerNormDims, double);   \
  template void layer_norm_backward_naive<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*,      \
                                             LayerNormDims);
SG_INSTANTIATE_LAYER_NORM_KERNELS(float)
SG_INSTANTIATE_LAYER_NORM_KERNELS(double)
#undef SG_INSTANTIATE_LAYER_NORM_KERNELS

}  // namespace sg::kernels
