// Reductions: sum, mean, var, max/min (all elements and along a dim), argmax/argmin, sum_to.
//
// Every reduction sees its input as a dense (outer, R, inner) block: out[o, i] reduces
// x[o, :, i] over R elements. The planner (row_layout) finds that view without copying
// when the reduced dims are adjacent in memory (any single dim of a contiguous tensor,
// trailing or leading groups, a transposed matrix reduced along either dim) and otherwise
// copies x with the kept dims first and the reduced dims last (inner = 1).
//   inner == 1  each output reduces one contiguous row: SIMD with independent
//               accumulators; long rows are cut into fixed blocks reduced in parallel.
//   inner  > 1  rows of length `inner` are accumulated into the output (SIMD along inner),
//               in column strips that stay in L1 and are spread over threads.
// Results never depend on the thread count: every partial covers a fixed range and
// partials are combined in one fixed order.
//
// Dimension letters: N = numel, R = elements reduced per output, O = outer, I = inner.
#include "ops/reduce.h"

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <utility>

#include "core/autograd.h"
#include "core/strided.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace sg {
namespace {

namespace hn = hwy::HWY_NAMESPACE;

// float32 and float64 accumulate in double, int64 in uint64: an int64 sum wraps around on
// overflow (as PyTorch's) instead of being undefined behaviour.
template <typename T> using Acc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;

// Long contiguous rows are reduced in blocks of this many elements (256 KB of float32):
// the unit of parallel work, and the fixed summation tree that makes results
// independent of the thread count.
constexpr int64_t kBlock = int64_t{1} << 16;
// Width of a column strip for inner > 1: its double accumulators (16 KB) stay in L1.
constexpr int64_t kColTile = 2048;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ============================================================================================
// Kernels (raw pointers and sizes; no Tensor)
// ============================================================================================

// ---- sum over a contiguous row ----

// x: (n) -> Σ x in double. Four independent accumulators hide the add latency.
double sum_contig(const float* x, int64_t n) {
  const hn::ScalableTag<double> d;
  const hn::Rebind<float, decltype(d)> df;  // as many floats as d has doubles
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 = hn::Add(a0, hn::PromoteTo(d, hn::LoadU(df, x + i)));
    a1 = hn::Add(a1, hn::PromoteTo(d, hn::LoadU(df, x + i + L)));
    a2 = hn::Add(a2, hn::PromoteTo(d, hn::LoadU(df, x + i + 2 * L)));
    a3 = hn::Add(a3, hn::PromoteTo(d, hn::LoadU(df, x + i + 3 * L)));
  }
  for (; i + L <= n; i += L) a0 = hn::Add(a0, hn::PromoteTo(d, hn::LoadU(df, x + i)));
  double s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  return s;
}

// x: (n) -> Σ x
double sum_contig(const double* x, int64_t n) {
  const hn::ScalableTag<double> d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 = hn::Add(a0, hn::LoadU(d, x + i));
    a1 = hn::Add(a1, hn::LoadU(d, x + i + L));
    a2 = hn::Add(a2, hn::LoadU(d, x + i + 2 * L));
    a3 = hn::Add(a3, hn::LoadU(d, x + i + 3 * L));
  }
  for (; i + L <= n; i += L) a0 = hn::Add(a0, hn::LoadU(d, x + i));
  double s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) s += x[i];
  return s;
}

// x: (n) -> Σ x (integer addition is associative: the compiler vectorizes it)
uint64_t sum_contig(const int64_t* x, int64_t n) {
  uint64_t s = 0;  // modular: see Acc
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<uint64_t>(x[i]);
  return s;
}

// ---- sum of squared deviations over a contiguous row (second pass of var) ----

// x: (n), m: the row's mean -> Σ (x - m)^2 in double
template <typename T> double sqdev_contig(const T* x, int64_t n, double m) {
  const hn::ScalableTag<double> d;
  const hn::Rebind<T, decltype(d)> dt;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  const auto vm = hn::Set(d, m);
  auto load = [&](int64_t i) {
    if constexpr (std::is_same_v<T, float>)
      return hn::Sub(hn::PromoteTo(d, hn::LoadU(dt, x + i)), vm);
    else
      return hn::Sub(hn::LoadU(d, x + i), vm);
  };
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    const auto v0 = load(i), v1 = load(i + L), v2 = load(i + 2 * L), v3 = load(i + 3 * L);
    a0 = hn::MulAdd(v0, v0, a0);
    a1 = hn::MulAdd(v1, v1, a1);
    a2 = hn::MulAdd(v2, v2, a2);
    a3 = hn::MulAdd(v3, v3, a3);
  }
  for (; i + L <= n; i += L) {
    const auto v = load(i);
    a0 = hn::MulAdd(v, v, a0);
  }
  double s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) {
    const double v = static_cast<double>(x[i]) - m;
    s += v * v;
  }
  return s;
}

// ---- max / min with the index of the first extremum ----

// NaN wins over any number (it propagates, as in PyTorch); among equals the first wins,
// so callers only replace on a strictly better value. Branch-free, so loops vectorize.
template <bool kMax, typename T> bool better(T v, T best) {
  const bool cmp = kMax ? v > best : v < best;
  if constexpr (std::is_floating_point_v<T>)
    return cmp || (v != v && best == best);  // v is NaN and best is not
  else
    return cmp;
}

template <typename T> struct ValueIndex {
  T value;
  int64_t index;
};

// x: (n), n >= 1 -> max (or min) of x; NaN if x holds a NaN.
template <bool kMax, typename T> T extreme_value_contig(const T* x, int64_t n) {
  if constexpr (std::is_integral_v<T>) {
    T m = x[0];
    if constexpr (kMax) {
#pragma omp simd reduction(max : m)
      for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
    } else {
#pragma omp simd reduction(min : m)
      for (int64_t i = 0; i < n; ++i) m = x[i] < m ? x[i] : m;
    }
    return m;
  } else {
    const hn::ScalableTag<T> d;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    auto ext = [](auto a, auto b) { return kMax ? hn::Max(a, b) : hn::Min(a, b); };
    // NOTE: hn::Max/Min do not propagate NaN (x86 returns one operand), so NaNs are
    // tracked apart, as an OR of IsNaN masks.
    auto a0 = hn::Set(d, x[0]), a1 = a0, a2 = a0, a3 = a0;
    auto nan = hn::Zero(d);
    int64_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
      const auto v0 = hn::LoadU(d, x + i), v1 = hn::LoadU(d, x + i + L);
      const auto v2 = hn::LoadU(d, x + i + 2 * L), v3 = hn::LoadU(d, x + i + 3 * L);
      a0 = ext(a0, v0);
      a1 = ext(a1, v1);
      a2 = ext(a2, v2);
      a3 = ext(a3, v3);
      nan = hn::Or(nan, hn::Or(hn::Or(hn::VecFromMask(d, hn::IsNaN(v0)), hn::VecFromMask(d, hn::IsNaN(v1))),
                               hn::Or(hn::VecFromMask(d, hn::IsNaN(v2)), hn::VecFromMask(d, hn::IsNaN(v3)))));
    }
    for (; i + L <= n; i += L) {
      const auto v = hn::LoadU(d, x + i);
      a0 = ext(a0, v);
      nan = hn::Or(nan, hn::VecFromMask(d, hn::IsNaN(v)));
    }
    if (!hn::AllFalse(d, hn::MaskFromVec(nan))) return std::numeric_limits<T>::quiet_NaN();
    const auto a = ext(ext(a0, a1), ext(a2, a3));
    T m = hn::GetLane(kMax ? hn::MaxOfLanes(d, a) : hn::MinOfLanes(d, a));
    for (; i < n; ++i) m = better<kMax>(x[i], m) ? x[i] : m;
    return std::isnan(x[0]) ? x[0] : m;  // (when n < L no vector saw x[0])
  }
}

// x: (n), n >= 1; `base` is the index of x[0] within its row. A vectorized pass finds the
// value; a second pass over the block (still in cache) finds its first position.
template <bool kMax, typename T> ValueIndex<T> extreme_contig(const T* x, int64_t n, int64_t base) {
  const T m = extreme_value_contig<kMax>(x, n);
  int64_t i = 0;
  if constexpr (std::is_floating_point_v<T>)
    if (std::isnan(m)) {
      while (!std::isnan(x[i])) ++i;
      return {x[i], base + i};
    }
  while (x[i] != m) ++i;
  return {x[i], base + i};  // x[i], not m: the first of -0.0 and 0.0 keeps its sign
}

// ---- column kernels (inner > 1): a strip of w columns, R rows, row stride ld ----

// Column kernels read kColRows rows per pass: eight concurrent streams keep the memory
// busy (measured: 1.5x over one row per pass) and the accumulators see 1/8 of the traffic.
constexpr int64_t kColRows = 8;

// x: (R, ld) strip of width w; acc: (w) += Σ_r x[r]
template <typename T, typename A>
void sum_cols(const T* __restrict x, int64_t R, int64_t ld, int64_t w, A* __restrict acc) {
  int64_t r = 0;
  for (; r + kColRows <= R; r += kColRows) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      A s = 0;
      for (int64_t u = 0; u < kColRows; ++u) s += static_cast<A>(xr[u * ld + i]);
      acc[i] += s;
    }
  }
  for (; r < R; ++r) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) acc[i] += static_cast<A>(xr[i]);
  }
}

// x: (R, ld) strip of width w; mean: (w); acc: (w) += Σ_r (x[r] - mean)^2
template <typename T>
void sqdev_cols(const T* __restrict x, int64_t R, int64_t ld, int64_t w, const double* __restrict mean,
                double* __restrict acc) {
  int64_t r = 0;
  for (; r + kColRows <= R; r += kColRows) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      double s = 0;
      for (int64_t u = 0; u < kColRows; ++u) {
        const double v = static_cast<double>(xr[u * ld + i]) - mean[i];
        s += v * v;
      }
      acc[i] += s;
    }
  }
  for (; r < R; ++r) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      const double v = static_cast<double>(xr[i]) - mean[i];
      acc[i] += v * v;
    }
  }
}

// x: (R, ld) strip of width w, R >= 1; best: (w) values, idx: (w) row of the first extremum
template <bool kMax, typename T>
void extreme_cols(const T* __restrict x, int64_t R, int64_t ld, int64_t w, T* __restrict best,
                  int64_t* __restrict idx) {
  for (int64_t i = 0; i < w; ++i) {
    best[i] = x[i];
    idx[i] = 0;
  }
  for (int64_t r = 1; r < R; ++r) {
    const T* xr = x + r * ld;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      const bool b = better<kMax>(xr[i], best[i]);
      best[i] = b ? xr[i] : best[i];
      idx[i] = b ? r : idx[i];
    }
  }
}

// dx: (O, R, I) zeroed; g, index: (O, I) -> dx[o, index[o, i], i] = g[o, i]
template <typename T>
void scatter_index_kernel(const T* g, const int64_t* index, int64_t O, int64_t R, int64_t I, T* dx) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) dx[(o * R + index[o * I + i]) * I + i] = g[o * I + i];
}

// ============================================================================================
// Drivers: split (O, R, I) into fixed pieces of work and run them on threads
// ============================================================================================

// inner == 1: reduces each of O contiguous rows of length R to one P.
//   block(o, begin, end) -> P  reduces x[o, begin:end]
//   combine(a, b) -> P         a covers elements before b
//   store(o, P)
// Rows longer than kBlock are cut into blocks reduced in parallel and combined in order.
template <typename P, typename Block, typename Combine, typename Store>
void reduce_rows(int64_t O, int64_t R, Block&& block, Combine&& combine, Store&& store) {
  const int64_t nblocks = std::max<int64_t>(1, ceil_div(R, kBlock));
  if (nblocks == 1) {
    parallel_for(O, std::max<int64_t>(R, 1), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) store(o, block(o, 0, R));
    });
    return;
  }
  std::vector<P> partial(static_cast<size_t>(O * nblocks));
  parallel_for(O * nblocks, kBlock, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const int64_t o = k / nblocks, j = k % nblocks;
      partial[k] = block(o, j * kBlock, std::min(R, (j + 1) * kBlock));
    }
  });
  for (int64_t o = 0; o < O; ++o) {
    P acc = partial[o * nblocks];
    for (int64_t j = 1; j < nblocks; ++j) acc = combine(acc, partial[o * nblocks + j]);
    store(o, acc);
  }
}

// inner > 1: calls strip(o, i0, i1) for column strips of every outer block, in parallel.
// Strips are at most kColTile wide, and narrower when there are fewer outer blocks than
// threads, so that the threads share the columns.
template <typename Strip> void reduce_cols(int64_t O, int64_t R, int64_t I, Strip&& strip) {
  const int64_t threads = get_num_threads();
  int64_t width = std::min(kColTile, ceil_div(I, ceil_div(threads, O)));
  width = std::max<int64_t>(16, ceil_div(width, 16) * 16);
  const int64_t ntiles = ceil_div(I, width);
  parallel_for(O * ntiles, std::max<int64_t>(R, 1) * width, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const int64_t o = k / ntiles, i0 = (k % ntiles) * width;
      strip(o, i0, std::min(I, i0 + width));
    }
  });
}

// ============================================================================================
// Typed reductions over a dense (O, R, I) block, R >= 0 (max/min: R >= 1)
// ============================================================================================

// out: (O, I) = Σ_r x[o, r, i] / divisor (divisor only for floating T: 1 for sum, R for mean)
template <typename T> void sum_oRi(const T* x, int64_t O, int64_t R, int64_t I, double divisor, T* out) {
  using A = Acc<T>;
  auto finish = [divisor](A a) {
    if constexpr (std::is_floating_point_v<T>)
      return static_cast<T>(a / divisor);
    else
      return a;
  };
  if (I == 1) {
    reduce_rows<A>(
        O, R, [&](int64_t o, int64_t b, int64_t e) { return sum_contig(x + o * R + b, e - b); },
        [](A a, A b) { return a + b; }, [&](int64_t o, A a) { out[o] = finish(a); });
    return;
  }
  std::vector<A> acc(static_cast<size_t>(O * I), A(0));
  reduce_cols(O, R, I, [&](int64_t o, int64_t i0, int64_t i1) {
    A* a = acc.data() + o * I + i0;
    sum_cols(x + o * R * I + i0, R, I, i1 - i0, a);
    for (int64_t i = 0; i < i1 - i0; ++i) out[o * I + i0 + i] = finish(a[i]);
  });
}

// Count, mean and sum of squared deviations (M2) of a set of elements.
struct Moments {
  double n = 0, mean = 0, m2 = 0;
};

// The moments of the union of two disjoint sets (Chan, Golub & LeVeque's pairwise update):
// delta = mean_b - mean_a, M2 = M2_a + M2_b + delta^2 n_a n_b / n.
Moments combine_moments(const Moments& a, const Moments& b) {
  const double n = a.n + b.n;
  if (b.n == 0) return a;
  const double delta = b.mean - a.mean;
  return {n, a.mean + delta * (b.n / n), a.m2 + b.m2 + delta * delta * (a.n * b.n / n)};
}

// x: (n), n >= 1 -> its moments, two passes (mean, then squared deviations from it) over
// a block small enough to stay in cache between them.
template <typename T> Moments moments_contig(const T* x, int64_t n) {
  const double mean = sum_contig(x, n) / static_cast<double>(n);
  return {static_cast<double>(n), mean, sqdev_contig(x, n, mean)};
}

// x: (R, ld) strip of width w -> mean, m2: (w) per column, two passes per chunk of rows
// that fits in cache (at most 32 x kColTile elements), chunks merged with
// combine_moments' formula. The chunk does not depend on w, which depends on the
// number of threads.
template <typename T>
void moments_cols(const T* x, int64_t R, int64_t ld, int64_t w, double* mean, double* m2) {
  constexpr int64_t chunk = 32;
  std::vector<double> cmean, cm2;  // a later chunk's moments (only when there are several)
  for (int64_t r0 = 0; r0 < R; r0 += chunk) {
    const int64_t rows = std::min(chunk, R - r0);
    const double na = static_cast<double>(r0), nb = static_cast<double>(rows), n = na + nb;
    const bool first = r0 == 0;
    if (!first && cmean.empty()) {
      cmean.resize(static_cast<size_t>(w));
      cm2.resize(static_cast<size_t>(w));
    }
    double* bm = first ? mean : cmean.data();
    double* b2 = first ? m2 : cm2.data();
    std::fill(bm, bm + w, 0.0);
    std::fill(b2, b2 + w, 0.0);
    sum_cols(x + r0 * ld, rows, ld, w, bm);
    for (int64_t i = 0; i < w; ++i) bm[i] /= nb;
    sqdev_cols(x + r0 * ld, rows, ld, w, bm, b2);
    if (first) continue;
    for (int64_t i = 0; i < w; ++i) {
      const double delta = bm[i] - mean[i];
      mean[i] += delta * (nb / n);
      m2[i] += b2[i] + delta * delta * (na * nb / n);
    }
  }
}

// out: (O, I) = Σ_r (x - mean)^2 / divisor; mean_out: (O, I) the mean (saved for backward).
// Reads x from memory once: blocks are reduced to moments in cache and merged.
template <typename T>
void var_oRi(const T* x, int64_t O, int64_t R, int64_t I, double divisor, T* out, T* mean_out) {
  if (I == 1) {
    reduce_rows<Moments>(
        O, R, [&](int64_t o, int64_t b, int64_t e) { return moments_contig(x + o * R + b, e - b); },
        combine_moments,
        [&](int64_t o, const Moments& m) {
          out[o] = static_cast<T>(m.m2 / divisor);
          mean_out[o] = static_cast<T>(m.mean);
        });
    return;
  }
  std::vector<double> mean(static_cast<size_t>(O * I)), m2(static_cast<size_t>(O * I));
  reduce_cols(O, R, I, [&](int64_t o, int64_t i0, int64_t i1) {
    const int64_t at = o * I + i0;
    moments_cols(x + o * R * I + i0, R, I, i1 - i0, mean.data() + at, m2.data() + at);
    for (int64_t i = at; i < o * I + i1; ++i) {
      out[i] = static_cast<T>(m2[i] / divisor);
      mean_out[i] = static_cast<T>(mean[i]);
    }
  });
}

// x: (N) dense, N >= 1 -> max/min of all elements (values only: one vectorized pass)
template <bool kMax, typename T> T extreme_all(const T* x, int64_t N) {
  T result{};
  reduce_rows<T>(
      1, N, [&](int64_t, int64_t b, int64_t e) { return extreme_value_contig<kMax>(x + b, e - b); },
      [](T a, T b) { return better<kMax>(b, a) ? b : a; }, [&](int64_t, T v) { result = v; });
  return result;
}

// values, index: (O, I) = max/min over r of x[o, r, i] and the first r attaining it
template <bool kMax, typename T>
void extreme_oRi(const T* x, int64_t O, int64_t R, int64_t I, T* values, int64_t* index) {
  using P = ValueIndex<T>;
  if (I == 1) {
    reduce_rows<P>(
        O, R, [&](int64_t o, int64_t b, int64_t e) { return extreme_contig<kMax>(x + o * R + b, e - b, b); },
        [](P a, P b) { return better<kMax>(b.value, a.value) ? b : a; },
        [&](int64_t o, P p) {
          values[o] = p.value;
          index[o] = p.index;
        });
    return;
  }
  reduce_cols(O, R, I, [&](int64_t o, int64_t i0, int64_t i1) {
    extreme_cols<kMax>(x + o * R * I + i0, R, I, i1 - i0, values + o * I + i0, index + o * I + i0);
  });
}

// ============================================================================================
// Wiring: dims, shapes, layout
// ============================================================================================

// Which dims of x the reduction covers. dims may be negative; they must be in range and
// distinct. A 0-d tensor accepts dim 0 or -1 (and has nothing to mark).
std::vector<bool> reduced_mask(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  check_defined(op, x);
  const int64_t nd = x.dim();
  const int64_t lo = nd == 0 ? -1 : -nd, hi = nd == 0 ? 0 : nd - 1;
  std::vector<bool> mask(static_cast<size_t>(nd), false);
  std::vector<bool> seen(static_cast<size_t>(std::max<int64_t>(nd, 1)), false);
  for (int64_t d : dims) {
    SG_CHECK(d >= lo && d <= hi, "{}: dim {} is out of range for a tensor of shape {} (expected a dim in [{}, {}])",
             op, d, x.shape(), lo, hi);
    const int64_t w = wrap_dim(d, nd, op);
    SG_CHECK(!seen[w], "{}: dim {} appears more than once in dims {} (tensor of shape {})", op, d, dims,
             x.shape());
    seen[w] = true;
    if (nd > 0) mask[w] = true;
  }
  return mask;
}

// Every dim of x (the all-element reductions). Like reduced_mask, the first look at x.
std::vector<bool> all_dims(const Tensor& x, const char* op) {
  check_defined(op, x);
  return std::vector<bool>(static_cast<size_t>(x.dim()), true);
}

// The output shape: reduced dims removed, or kept as 1.
Shape reduced_shape(const Shape& in, const std::vector<bool>& reduced, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < in.size(); ++d) {
    if (!reduced[d])
      out.push_back(in[d]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

int64_t reduced_count(const Shape& in, const std::vector<bool>& reduced) {
  int64_t n = 1;
  for (size_t d = 0; d < in.size(); ++d)
    if (reduced[d]) n *= in[d];
  return n;
}

// x seen as a dense (outer, R, inner) block of elements starting at data's first element.
struct RowLayout {
  Tensor data;  // x itself, or a copy with kept dims first and reduced dims last
  int64_t outer = 1, R = 1, inner = 1;
};

// Uses x's own memory when it is dense (a permutation of a contiguous tensor), its reduced
// dims are adjacent in memory, and its kept dims lie in memory in their logical order (so
// the outputs come out row-major). ordered_reduce also asks that the reduced dims keep
// their logical order (needed when the position within R is an index we return).
RowLayout row_layout(const Tensor& x, const std::vector<bool>& reduced, bool ordered_reduce) {
  const Shape& shape = x.shape();
  const Strides& strides = x.strides();
  const int64_t nd = x.dim();

  std::vector<int64_t> order;  // dims of size > 1, outermost in memory first
  for (int64_t d = 0; d < nd; ++d)
    if (shape[d] > 1) order.push_back(d);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return strides[a] > strides[b]; });
  bool ok = true;
  int64_t expected = 1;
  for (size_t k = order.size(); k-- > 0;) {
    ok &= strides[order[k]] == expected;
    expected *= shape[order[k]];
  }
  // Reduced dims one block in memory; kept dims (and maybe reduced dims) in logical order.
  size_t first = order.size(), last = 0;
  for (size_t k = 0; k < order.size(); ++k)
    if (reduced[order[k]]) {
      first = std::min(first, k);
      last = k;
    }
  int64_t prev_kept = -1, prev_red = -1;
  for (size_t k = 0; k < order.size() && ok; ++k) {
    const int64_t d = order[k];
    if (reduced[d]) {
      ok &= !ordered_reduce || d > prev_red;
      prev_red = d;
    } else {
      ok &= d > prev_kept && (k < first || k > last);
      prev_kept = d;
    }
  }
  RowLayout L;
  if (ok) {
    L.data = x;
    for (size_t k = 0; k < order.size(); ++k) {
      const int64_t s = shape[order[k]];
      if (first == order.size() || k > last)  // no reduced dim of size > 1: all inner
        L.inner *= s;
      else if (k >= first)
        L.R *= s;
      else
        L.outer *= s;
    }
    return L;
  }
  std::vector<int64_t> perm;
  for (int64_t d = 0; d < nd; ++d)
    if (!reduced[d]) {
      perm.push_back(d);
      L.outer *= shape[d];
    }
  for (int64_t d = 0; d < nd; ++d)
    if (reduced[d]) {
      perm.push_back(d);
      L.R *= shape[d];
    }
  L.data = x.detach().permute(perm).contiguous();
  if (L.R == 1) std::swap(L.outer, L.inner);  // nothing reduced: one long (1, 1, N) run
  return L;
}

void check_dtype(const Tensor& x, bool floating_only, const char* op) {
  check_defined(op, x);
  refuse_bfloat16(op, x.dtype());
  if (floating_only)
    SG_CHECK(is_floating(x.dtype()), "{}: expected a float32 or float64 tensor, got {} of shape {}", op, x.dtype(),
             x.shape());
  else
    SG_CHECK(x.dtype() != kBool, "{}: expected a float32, float64 or int64 tensor, got {} of shape {}", op,
             x.dtype(), x.shape());
}


// ---- forward passes, no autograd; `out_shape` is any shape with the output's numel ----

// sum (divisor 1) or mean (divisor R). sum of nothing is 0; mean of nothing is NaN.
Tensor sum_forward(const Tensor& x, const std::vector<bool>& reduced, const Shape& out_shape, bool mean) {
  Tensor out = empty(out_shape, x.dtype());
  const int64_t R = reduced_count(x.shape(), reduced);
  if (out.numel() == 0) return out;
  if (R == 0)  // empty reduction: zeros, or NaN for mean
    return full(out_shape, mean ? std::numeric_limits<double>::quiet_NaN() : 0.0, x.dtype());
  const RowLayout L = row_layout(x, reduced, false);
  visit_numeric(x.dtype(), [&]<typename T>() {
    sum_oRi(static_cast<const T*>(L.data.raw_data()), L.outer, L.R, L.inner, mean ? static_cast<double>(R) : 1.0,
            out.data_ptr<T>());
  });
  return out;
}

struct VarResult {
  Tensor var, mean;  // mean has var's shape
};
VarResult var_forward(const Tensor& x, const std::vector<bool>& reduced, const Shape& out_shape,
                      int64_t correction) {
  const int64_t R = reduced_count(x.shape(), reduced);
  const double divisor = static_cast<double>(std::max<int64_t>(0, R - correction));
  VarResult r{empty(out_shape, x.dtype()), empty(out_shape, x.dtype())};
  if (r.var.numel() == 0) return r;
  if (R == 0) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return {full(out_shape, nan, x.dtype()), full(out_shape, nan, x.dtype())};
  }
  const RowLayout L = row_layout(x, reduced, false);
  visit_dtype(x.dtype(), [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T>)
      var_oRi(static_cast<const T*>(L.data.raw_data()), L.outer, L.R, L.inner, divisor, r.var.data_ptr<T>(),
              r.mean.data_ptr<T>());
  });
  return r;
}

template <bool kMax>
ValuesIndices extreme_forward(const Tensor& x, const std::vector<bool>& reduced, const Shape& out_shape,
                              const char* op) {
  const int64_t R = reduced_count(x.shape(), reduced);
  SG_CHECK(R > 0, "{}: cannot reduce over zero elements (tensor of shape {})", op, x.shape());
  ValuesIndices r{empty(out_shape, x.dtype()), empty(out_shape, kInt64)};
  if (r.values.numel() == 0) return r;
  const RowLayout L = row_layout(x, reduced, true);
  visit_numeric(x.dtype(), [&]<typename T>() {
    extreme_oRi<kMax>(static_cast<const T*>(L.data.raw_data()), L.outer, L.R, L.inner, r.values.data_ptr<T>(),
                      r.indices.data_ptr<int64_t>());
  });
  return r;
}

// ============================================================================================
// Ops: forward and backward side by side
// ============================================================================================

// d(sum)/dx: the output gradient, its reduced dims restored as 1, expanded back.
Tensor expand_back(const Tensor& g, const Shape& keep_shape, const Shape& in_shape) {
  return expand(g.reshape(keep_shape), in_shape);
}

Tensor sum_op(const Tensor& x, const std::vector<bool>& reduced, bool keepdim) {
  refuse_bfloat16("sum", x.dtype());
  // PyTorch sums bool to int64 (counting true values).
  Tensor xs = x.dtype() == kBool ? x.to(kInt64) : x;
  Tensor out = sum_forward(xs, reduced, reduced_shape(x.shape(), reduced, keepdim), false);
  if (any_requires_grad({x}))
    record("sum", {x}, out, [in_shape = x.shape(), keep = reduced_shape(x.shape(), reduced, true)](const Tensor& g) {
      return grads(expand_back(g, keep, in_shape));
    });
  return out;
}

Tensor mean_op(const Tensor& x, const std::vector<bool>& reduced, bool keepdim) {
  check_dtype(x, true, "mean");
  Tensor out = sum_forward(x, reduced, reduced_shape(x.shape(), reduced, keepdim), true);
  if (any_requires_grad({x})) {
    const double n = static_cast<double>(reduced_count(x.shape(), reduced));
    record("mean", {x}, out,
           [in_shape = x.shape(), keep = reduced_shape(x.shape(), reduced, true), n](const Tensor& g) {
             return grads(expand_back(g / n, keep, in_shape));
           });
  }
  return out;
}

// var = Σ (x - mean)^2 / (n - correction);  dx = 2 (x - mean) / (n - correction) * g
Tensor var_op(const Tensor& x, const std::vector<bool>& reduced, bool keepdim, int64_t correction) {
  check_dtype(x, true, "var");
  SG_CHECK(correction >= 0, "var: correction must be >= 0, got {} (tensor of shape {})", correction, x.shape());
  const Shape keep = reduced_shape(x.shape(), reduced, true);
  VarResult r = var_forward(x, reduced, reduced_shape(x.shape(), reduced, keepdim), correction);
  if (any_requires_grad({x})) {
    const int64_t n = reduced_count(x.shape(), reduced);
    const double scale = 2.0 / static_cast<double>(std::max<int64_t>(0, n - correction));
    record("var", {x}, r.var,
           [xs = SavedTensor(x), ms = SavedTensor(r.mean.reshape(keep)), keep, scale](const Tensor& g) {
             return grads((xs.get() - ms.get()) * (g.reshape(keep) * scale));
           });
  }
  return r.var;
}

// All-element max/min: the gradient is split evenly among the elements equal to the
// result (NaN results: among the NaNs), as PyTorch's evenly_distribute_backward.
template <bool kMax> Tensor extreme_all_op(const Tensor& x, const char* op) {
  check_dtype(x, false, op);
  SG_CHECK(x.numel() > 0, "{}: cannot reduce an empty tensor of shape {}", op, x.shape());
  const RowLayout L = row_layout(x, all_dims(x, op), false);  // (1, numel, 1)
  Tensor out = empty({}, x.dtype());
  visit_numeric(x.dtype(), [&]<typename T>() {
    *out.data_ptr<T>() = extreme_all<kMax>(static_cast<const T*>(L.data.raw_data()), L.R);
  });
  if (any_requires_grad({x}))
    record(op, {x}, out, [xs = SavedTensor(x), vs = SavedTensor(out)](const Tensor& g) {
      const Tensor x = xs.get(), v = vs.get();
      const Tensor ties = (std::isnan(v.item<double>()) ? ne(x, x) : eq(x, v)).to(x.dtype());
      return grads(ties * (g / sum(ties)));
    });
  return out;
}

// Along one dim: the gradient goes to the first extremum's index.
template <bool kMax> ValuesIndices extreme_dim_op(const Tensor& x, int64_t dim, bool keepdim, const char* op) {
  check_dtype(x, false, op);
  const std::vector<bool> reduced = reduced_mask(x, {dim}, op);
  const int64_t R = reduced_count(x.shape(), reduced);
  SG_CHECK(R > 0, "{}: cannot reduce over dim {} of size 0 (tensor of shape {})", op, dim, x.shape());
  ValuesIndices r = extreme_forward<kMax>(x, reduced, reduced_shape(x.shape(), reduced, keepdim), op);
  if (any_requires_grad({x})) {
    // x as (O, R, I) in logical order: O = dims before `dim`, I = dims after it.
    int64_t O = 1, I = 1;
    const int64_t d = x.dim() == 0 ? 0 : wrap_dim(dim, x.dim(), op);
    for (int64_t k = 0; k < x.dim(); ++k) {
      if (k < d) O *= x.shape()[k];
      if (k > d) I *= x.shape()[k];
    }
    record(op, {x}, r.values,
           [in_shape = x.shape(), dtype = x.dtype(), is = SavedTensor(r.indices), O, R, I](const Tensor& g) {
             Tensor dx = zeros(in_shape, dtype);
             const Tensor gc = g.contiguous(), idx = is.get().contiguous();
             visit_dtype(dtype, [&]<typename T>() {
               if constexpr (std::is_floating_point_v<T>)
                 scatter_index_kernel(gc.data_ptr<T>(), idx.data_ptr<int64_t>(), O, R, I, dx.data_ptr<T>());
             });
             return grads(dx);
           });
  }
  return r;
}

}  // namespace

// ---- public API ----

Tensor sum(const Tensor& x) { return sum_op(x, all_dims(x, "sum"), false); }

// NOTE: an empty dims list reduces nothing (NumPy's axis=()), unlike PyTorch's
// sum(dim=[]) which reduces everything; use sum(x) for that.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_op(x, reduced_mask(x, dims, "sum"), keepdim);
}

Tensor mean(const Tensor& x) { return mean_op(x, all_dims(x, "mean"), false); }
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return mean_op(x, reduced_mask(x, dims, "mean"), keepdim);
}

Tensor var(const Tensor& x) { return var_op(x, all_dims(x, "var"), false, 1); }
Tensor var(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, int64_t correction) {
  return var_op(x, reduced_mask(x, dims, "var"), keepdim, correction);
}

Tensor max(const Tensor& x) { return extreme_all_op<true>(x, "max"); }
Tensor min(const Tensor& x) { return extreme_all_op<false>(x, "min"); }
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) { return extreme_dim_op<true>(x, dim, keepdim, "max"); }
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) { return extreme_dim_op<false>(x, dim, keepdim, "min"); }

Tensor argmax(const Tensor& x) {
  check_dtype(x, false, "argmax");
  SG_CHECK(x.numel() > 0, "argmax: cannot reduce an empty tensor of shape {}", x.shape());
  return extreme_forward<true>(x, all_dims(x, "argmax"), {}, "argmax").indices;
}
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  check_dtype(x, false, "argmax");
  const std::vector<bool> reduced = reduced_mask(x, {dim}, "argmax");
  SG_CHECK(reduced_count(x.shape(), reduced) > 0, "argmax: cannot reduce over dim {} of size 0 (tensor of shape {})",
           dim, x.shape());
  return extreme_forward<true>(x, reduced, reduced_shape(x.shape(), reduced, keepdim), "argmax").indices;
}
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) {
  check_dtype(x, false, "argmin");
  const std::vector<bool> reduced = reduced_mask(x, {dim}, "argmin");
  SG_CHECK(reduced_count(x.shape(), reduced) > 0, "argmin: cannot reduce over dim {} of size 0 (tensor of shape {})",
           dim, x.shape());
  return extreme_forward<false>(x, reduced, reduced_shape(x.shape(), reduced, keepdim), "argmin").indices;
}

// Reduces the leading extra dims and the dims where `shape` has 1 (x's shape is `shape`
// broadcast); the backward broadcasts the gradient back with expand.
Tensor sum_to(const Tensor& x, const Shape& shape) {
  check_defined("sum_to", x);
  const Shape& in = x.shape();
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  bool ok = lead >= 0;
  for (size_t k = 0; ok && k < shape.size(); ++k) ok = shape[k] == in[lead + k] || shape[k] == 1;
  SG_CHECK(ok, "sum_to: cannot sum a tensor of shape {} to shape {} (the target must broadcast to it)", in, shape);
  if (in == shape) return x;  // nothing to reduce: the gradient passes through unchanged
  std::vector<bool> reduced(static_cast<size_t>(x.dim()), false);
  for (int64_t d = 0; d < x.dim(); ++d) reduced[d] = d < lead || (shape[d - lead] == 1 && in[d] != 1);
  check_dtype(x, false, "sum_to");
  Tensor out = sum_forward(x, reduced, shape, false);
  if (any_requires_grad({x}))
    record("sum_to", {x}, out, [in](const Tensor& g) { return grads(expand(g, in)); });
  return out;
}

// ---- Tensor's method forms ----
Tensor Tensor::sum() const { return sg::sum(*this); }
Tensor Tensor::sum(const std::vector<int64_t>& dims, bool keepdim) const { return sg::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return sg::mean(*this); }
Tensor Tensor::mean(const std::vector<int64_t>& dims, bool keepdim) const { return sg::mean(*this, dims, keepdim); }
Tensor Tensor::var() const { return sg::var(*this); }
Tensor Tensor::max() const { return sg::max(*this); }
ValuesIndices Tensor::max(int64_t dim, bool keepdim) const { return sg::max(*this, dim, keepdim); }
Tensor Tensor::min() const { return sg::min(*this); }
ValuesIndices Tensor::min(int64_t dim, bool keepdim) const { return sg::min(*this, dim, keepdim); }
Tensor Tensor::argmax() const { return sg::argmax(*this); }
Tensor Tensor::argmax(int64_t dim, bool keepdim) const { return sg::argmax(*this, dim, keepdim); }
Tensor Tensor::argmin(int64_t dim, bool keepdim) const { return sg::argmin(*this, dim, keepdim); }

}  // namespace sg
