// Kernels of layer_norm (see ops/normalization_kernels.h for the formulas and layouts).
//
// Forward, per row of C contiguous elements (rows in parallel when N * C is large):
//   pass 1  sum x                    -> mean    (vector sums in T, moved into a double every
//   pass 2  sum (x - mean)^2         -> rstd     kFlushEvery vectors: exact enough for float32)
//   pass 3  y = (x - mean) * (rstd * w) + b
// Two passes over a row that sits in L1 cost less than Welford's divisions and are as
// accurate (the variance never subtracts two large sums). Rows of at most 4 vectors (C <= 64
// floats with AVX-512, the transformer's rows) are loaded once and kept in registers for
// all three passes.
// Backward, per row: pass 1 sums gw = g * w and gw * xhat (xhat recomputed from x, mean,
// rstd) and adds g * xhat and g into this thread's dw, db partials; pass 2 writes dx. Rows
// of at most 4 vectors keep the row, w and the partials in registers. Each thread owns its
// partials (T, added into a double copy every kFlushRows rows) and the threads' doubles
// are summed at the end, so no two threads write one column.
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

// A row of kVecs vectors (C in ((kVecs - 1) L, kVecs L]): one load, three passes in
// registers. kVecs is a template argument so that the loops unroll and v[] never touches
// memory.
template <int kVecs, typename T>
HWY_INLINE RowStats short_row_forward(const T* x, const T* w, const T* b, T* y, int64_t C, double eps) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  const int64_t last = C - (kVecs - 1) * L;  // elements in the last vector, 1 .. L
  Vec<T> v[kVecs];
  Vec<T> sum = hn::Zero(d);
  for (int k = 0; k < kVecs; ++k) {
    v[k] = load_n(x + k * L, k + 1 < kVecs ? L : last);
    sum = hn::Add(sum, v[k]);
  }
  const double mean = static_cast<double>(hn::GetLane(hn::SumOfLanes(d, sum))) / static_cast<double>(C);
  const Vec<T> vmean = hn::Set(d, static_cast<T>(mean));
  Vec<T> sq = hn::Zero(d);
  for (int k = 0; k < kVecs; ++k) {
    Vec<T> c = hn::Sub(v[k], vmean);
    if (k + 1 == kVecs && last < L) c = hn::IfThenElseZero(hn::FirstN(d, static_cast<size_t>(last)), c);  // padding
    sq = hn::MulAdd(c, c, sq);
  }
  const RowStats s{mean, rstd_from(static_cast<double>(hn::GetLane(hn::SumOfLanes(d, sq))), C, eps)};
  const Vec<T> vrstd = hn::Set(d, static_cast<T>(s.rstd));
  for (int k = 0; k < kVecs; ++k) {
    const int64_t count = k + 1 < kVecs ? L : last;
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

// Adds a thread's T partials (C) into its double totals and clears them; null ones are skipped.
template <typename T> void flush_partials(T* dwp, T* dbp, double* dw_total, double* db_total, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    if (dwp) dw_total[c] += static_cast<double>(dwp[c]);
    if (dbp) db_total[c] += static_cast<double>(dbp[c]);
  }
  if (dwp) std::fill(dwp, dwp + C, T(0));
  if (dbp) std::fill(dbp, dbp + C, T(0));
}

// Backward of rows [begin, end) of kVecs vectors each (C in ((kVecs - 1) L, kVecs L]): w
// and the dw, db partials stay in registers across the rows, and are added into dw_total,
// db_total (C doubles each; null: not wanted) every kFlushRows rows. dx may be null.
// Padding lanes load g = 0 (and xhat is zeroed there): they add nothing to the sums or
// the partials.
template <int kVecs, typename T>
void short_rows_backward(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, double* dw_total,
                         double* db_total, int64_t begin, int64_t end, int64_t C) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  const int64_t last = C - (kVecs - 1) * L;
  auto count = [&](int k) { return k + 1 < kVecs ? L : last; };
  Vec<T> vw[kVecs], dw_acc[kVecs], db_acc[kVecs];
  for (int k = 0; k < kVecs; ++k) {
    vw[k] = w ? load_n(w + k * L, count(k)) : hn::Set(d, T(1));
    dw_acc[k] = db_acc[k] = hn::Zero(d);
  }
  auto flush = [&] {
    HWY_ALIGN T buf[kVecs * HWY_MAX_BYTES / sizeof(T)] = {};  // (= {}: GCC cannot see that C <= kVecs L)
    for (int k = 0; k < kVecs; ++k) hn::Store(dw_acc[k], d, buf + k * L);
    if (dw_total)
      for (int64_t c = 0; c < C; ++c) dw_total[c] += static_cast<double>(buf[c]);
    for (int k = 0; k < kVecs; ++k) hn::Store(db_acc[k], d, buf + k * L);
    if (db_total)
      for (int64_t c = 0; c < C; ++c) db_total[c] += static_cast<double>(buf[c]);
    for (int k = 0; k < kVecs; ++k) dw_acc[k] = db_acc[k] = hn::Zero(d);
  };
  const double inv_c = 1.0 / static_cast<double>(C);
  for (int64_t r = begin; r < end; ++r) {
    const Vec<T> vmean = hn::Set(d, mean[r]), vrstd = hn::Set(d, rstd[r]);
    Vec<T> xhat[kVecs], gw[kVecs];
    Vec<T> sum_gw = hn::Zero(d), sum_gw_xhat = hn::Zero(d);
    for (int k = 0; k < kVecs; ++k) {
      const Vec<T> vg = load_n(g + r * C + k * L, count(k));
      xhat[k] = hn::Mul(hn::Sub(load_n(x + r * C + k * L, count(k)), vmean), vrstd);
      if (k + 1 == kVecs && last < L) xhat[k] = hn::IfThenElseZero(hn::FirstN(d, static_cast<size_t>(last)), xhat[k]);
      gw[k] = hn::Mul(vg, vw[k]);
      sum_gw = hn::Add(sum_gw, gw[k]);
      sum_gw_xhat = hn::MulAdd(gw[k], xhat[k], sum_gw_xhat);
      dw_acc[k] = hn::MulAdd(vg, xhat[k], dw_acc[k]);
      db_acc[k] = hn::Add(db_acc[k], vg);
    }
    if (dx) {
      // rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
      const Vec<T> mean_gw = hn::Set(d, static_cast<T>(hn::GetLane(hn::SumOfLanes(d, sum_gw)) * inv_c));
      const Vec<T> mean_gw_xhat = hn::Set(d, static_cast<T>(hn::GetLane(hn::SumOfLanes(d, sum_gw_xhat)) * inv_c));
      for (int k = 0; k < kVecs; ++k)
        store_n(hn::Mul(hn::NegMulAdd(xhat[k], mean_gw_xhat, hn::Sub(gw[k], mean_gw)), vrstd), dx + r * C + k * L,
                count(k));
    }
    if ((r - begin + 1) % kFlushRows == 0) flush();
  }
  flush();
}

// The same for rows of any length, one vector at a time; the dw, db partials live in this
// thread's scratch rows.
template <typename T>
void long_rows_backward(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, double* dw_total,
                        double* db_total, int64_t begin, int64_t end, int64_t C) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  T* dwp = dw_total ? thread_scratch<T>(C, 0) : nullptr;
  T* dbp = db_total ? thread_scratch<T>(C, 1) : nullptr;
  if (dwp) std::fill(dwp, dwp + C, T(0));
  if (dbp) std::fill(dbp, dbp + C, T(0));
  const double inv_c = 1.0 / static_cast<double>(C);
  for (int64_t r = begin; r < end; ++r) {
    const T *xr = x + r * C, *gr = g + r * C;
    const Vec<T> vmean = hn::Set(d, mean[r]), vrstd = hn::Set(d, rstd[r]);
    VecSum<T> sum_gw, sum_gw_xhat;
    for (int64_t i = 0; i < C; i += L) {
      const int64_t count = std::min(L, C - i);
      const Vec<T> vg = load_n(gr + i, count);
      const Vec<T> xhat = hn::Mul(hn::Sub(load_n(xr + i, count), vmean), vrstd);
      const Vec<T> gw = w ? hn::Mul(vg, load_n(w + i, count)) : vg;
      sum_gw.add(gw);
      sum_gw_xhat.add(hn::Mul(gw, xhat));
      if (dwp) store_n(hn::MulAdd(vg, xhat, load_n(dwp + i, count)), dwp + i, count);
      if (dbp) store_n(hn::Add(vg, load_n(dbp + i, count)), dbp + i, count);
    }
    if (dx) {
      const Vec<T> mean_gw = hn::Set(d, static_cast<T>(sum_gw.flush() * inv_c));
      const Vec<T> mean_gw_xhat = hn::Set(d, static_cast<T>(sum_gw_xhat.flush() * inv_c));
      for (int64_t i = 0; i < C; i += L) {
        const int64_t count = std::min(L, C - i);
        const Vec<T> vg = load_n(gr + i, count);
        const Vec<T> xhat = hn::Mul(hn::Sub(load_n(xr + i, count), vmean), vrstd);
        const Vec<T> gw = w ? hn::Mul(vg, load_n(w + i, count)) : vg;
        const Vec<T> t = hn::NegMulAdd(xhat, mean_gw_xhat, hn::Sub(gw, mean_gw));
        store_n(hn::Mul(t, vrstd), dx + r * C + i, count);
      }
    }
    if ((r - begin + 1) % kFlushRows == 0) flush_partials(dwp, dbp, dw_total, db_total, C);
  }
  flush_partials(dwp, dbp, dw_total, db_total, C);
}

}  // namespace

// ---- kernels -----------------------------------------------------------------------------

template <typename T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, LayerNormDims dims, double eps) {
  const int64_t N = dims.N, C = dims.C;
  if (N == 0 || C == 0) return;
  // Every row runs the same row function: the register path for its vector count, or the
  // general one.
  auto run_rows = [&](auto row) {
    parallel_for(N, C, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const RowStats s = row(x + r * C, y + r * C);
        mean[r] = static_cast<T>(s.mean);
        rstd[r] = static_cast<T>(s.rstd);
      }
    });
  };
  const int64_t L = lanes<T>();
  switch ((C + L - 1) / L) {
    case 1: return run_rows([&](const T* xr, T* yr) { return short_row_forward<1>(xr, w, b, yr, C, eps); });
    case 2: return run_rows([&](const T* xr, T* yr) { return short_row_forward<2>(xr, w, b, yr, C, eps); });
    case 3: return run_rows([&](const T* xr, T* yr) { return short_row_forward<3>(xr, w, b, yr, C, eps); });
    case 4: return run_rows([&](const T* xr, T* yr) { return short_row_forward<4>(xr, w, b, yr, C, eps); });
    default: return run_rows([&](const T* xr, T* yr) { return long_row_forward(xr, w, b, yr, C, eps); });
  }
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
  const int64_t L = lanes<T>();
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = N * t / nt, end = N * (t + 1) / nt;
    double* dw_total = dw ? totals.data() + static_cast<size_t>(t) * 2 * C : nullptr;
    double* db_total = db ? totals.data() + static_cast<size_t>(t) * 2 * C + C : nullptr;
    switch ((C + L - 1) / L) {
      case 1: short_rows_backward<1>(x, w, mean, rstd, g, dx, dw_total, db_total, begin, end, C); break;
      case 2: short_rows_backward<2>(x, w, mean, rstd, g, dx, dw_total, db_total, begin, end, C); break;
      case 3: short_rows_backward<3>(x, w, mean, rstd, g, dx, dw_total, db_total, begin, end, C); break;
      case 4: short_rows_backward<4>(x, w, mean, rstd, g, dx, dw_total, db_total, begin, end, C); break;
      default: long_rows_backward(x, w, mean, rstd, g, dx, dw_total, db_total, begin, end, C);
    }
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
