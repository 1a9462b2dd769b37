// Kernels of the 2-D pools (see ops/pooling_kernels.h for the layout and the rules).
//
// The naive kernels come first: they are the specification, one output at a time. The fast
// ones thread over the P planes as the naive loops would (parallel_for) and, inside a plane,
// vectorize across output columns: lane l holds output (oy, ox + l), and tap (i, j) loads
// input columns (ox + l) sw - pw + j dw of its row: one contiguous load when sw == 1, the
// even lanes of two loads when sw == 2 (ConcatEven; with dw == 1 ConcatOdd of the same two
// loads is tap j + 1). The taps come in the naive order, so each lane runs the naive loop:
//   max  best = v where v > best or v is NaN (the first tap inside the plane seeds it); the
//        index lanes (int32 beside float32, int64 beside float64) follow the same mask, and
//        are widened to int64 on the store. Values and indices equal the naive ones exactly.
//   avg  sum += v, then sum / count: the same additions in the same order, the same division.
// Only the columns whose every tap lies inside the row (no padding, nothing past the row
// end) take the vector path; the edge columns of each row (one or two with padding) run the
// naive per-output code. Strides of 3 and more stay scalar, as do single-lane (portable
// HWY_SCALAR) builds. The avg backward gathers instead of scattering: per output row, the
// shares dy / count are laid out at their window starts in a zero-padded scratch row
// (spread to every other lane with TableLookupLanes when sw == 2), and each vector of input
// columns sums the kw shifted loads of that row that cover it, then is added once to every
// input row of the window. A window that covers the whole plane (the global average pool)
// is a vector sum / fill.
// The max backward is a scatter (dx[idx] += dy) and stays scalar.
#include "ops/pooling_kernels.h"

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/scratch.h"
#include "core/simd_partial.h"
#include "core/strided.h"

namespace sg::kernels {
namespace hn = hwy::HWY_NAMESPACE;

int64_t pool_output_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dilation, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (k - 1) - 1;
  if (span < 0) return 0;  // the window does not fit (PyTorch: "output size is too small")
  int64_t out = (span + (ceil_mode ? stride - 1 : 0)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

namespace {

// ---- naive: one output at a time ------------------------------------------------------

// Output (oy, ox) of max_pool2d over the plane `in`.
template <typename T> void max_window(const T* in, const Pool2dDims& g, int64_t oy, int64_t ox, T* y, int64_t* idx) {
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
  *y = best;
  *idx = arg;
}

template <typename T> void max_pool_plane_naive(const T* in, T* y, int64_t* idx, const Pool2dDims& g) {
  for (int64_t oy = 0; oy < g.Ho; ++oy)
    for (int64_t ox = 0; ox < g.Wo; ++ox) max_window(in, g, oy, ox, y + oy * g.Wo + ox, idx + oy * g.Wo + ox);
}

// An average window: rows [y0, y1) and columns [x0, x1) of the plane, divided by count.
struct Window {
  int64_t y0, y1, x0, x1;
  double count;
};

Window avg_window(const Pool2dDims& g, int64_t oy, int64_t ox, bool count_include_pad) {
  int64_t y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
  int64_t y1 = std::min(y0 + g.kh, g.H + g.ph), x1 = std::min(x0 + g.kw, g.W + g.pw);
  const int64_t padded = (y1 - y0) * (x1 - x0);
  y0 = std::max<int64_t>(y0, 0);
  x0 = std::max<int64_t>(x0, 0);
  y1 = std::min(y1, g.H);
  x1 = std::min(x1, g.W);
  return {y0, y1, x0, x1, static_cast<double>(count_include_pad ? padded : (y1 - y0) * (x1 - x0))};
}

Window adaptive_window(const Pool2dDims& g, int64_t oy, int64_t ox) {
  auto start = [](int64_t o, int64_t in, int64_t out) { return o * in / out; };
  auto stop = [](int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; };
  const int64_t y0 = start(oy, g.H, g.Ho), y1 = stop(oy, g.H, g.Ho), x0 = start(ox, g.W, g.Wo), x1 = stop(ox, g.W, g.Wo);
  return {y0, y1, x0, x1, static_cast<double>((y1 - y0) * (x1 - x0))};
}

template <typename T> T window_mean(const T* in, int64_t W, const Window& w) {
  T sum = 0;
  for (int64_t yy = w.y0; yy < w.y1; ++yy)
    for (int64_t xx = w.x0; xx < w.x1; ++xx) sum += in[yy * W + xx];
  return w.count > 0 ? sum / static_cast<T>(w.count) : T(0);
}

template <typename T> void window_spread(T dy, T* out, int64_t W, const Window& w) {
  if (w.count <= 0) return;
  const T share = dy / static_cast<T>(w.count);
  for (int64_t yy = w.y0; yy < w.y1; ++yy)
    for (int64_t xx = w.x0; xx < w.x1; ++xx) out[yy * W + xx] += share;
}

// window_of(oy, ox) -> Window
template <typename T, typename WindowOf>
void avg_plane_naive(const T* in, T* y, const Pool2dDims& g, WindowOf window_of) {
  for (int64_t oy = 0; oy < g.Ho; ++oy)
    for (int64_t ox = 0; ox < g.Wo; ++ox) y[oy * g.Wo + ox] = window_mean(in, g.W, window_of(oy, ox));
}

template <typename T, typename WindowOf>
void avg_plane_backward_naive(const T* dy, T* out, const Pool2dDims& g, WindowOf window_of) {
  for (int64_t oy = 0; oy < g.Ho; ++oy)
    for (int64_t ox = 0; ox < g.Wo; ++ox) window_spread(dy[oy * g.Wo + ox], out, g.W, window_of(oy, ox));
}

}  // namespace

template <typename T> void max_pool2d_forward_naive(const T* x, T* y, int64_t* idx, const Pool2dDims& g) {
  for (int64_t p = 0; p < g.P; ++p)
    max_pool_plane_naive(x + p * g.H * g.W, y + p * g.Ho * g.Wo, idx + p * g.Ho * g.Wo, g);
}

template <typename T> void avg_pool2d_forward_naive(const T* x, T* y, const Pool2dDims& g, bool count_include_pad) {
  auto window_of = [&](int64_t oy, int64_t ox) { return avg_window(g, oy, ox, count_include_pad); };
  for (int64_t p = 0; p < g.P; ++p) avg_plane_naive(x + p * g.H * g.W, y + p * g.Ho * g.Wo, g, window_of);
}

template <typename T> void avg_pool2d_backward_naive(const T* dy, T* dx, const Pool2dDims& g, bool count_include_pad) {
  auto window_of = [&](int64_t oy, int64_t ox) { return avg_window(g, oy, ox, count_include_pad); };
  for (int64_t p = 0; p < g.P; ++p) avg_plane_backward_naive(dy + p * g.Ho * g.Wo, dx + p * g.H * g.W, g, window_of);
}

template <typename T> void adaptive_avg_pool2d_forward_naive(const T* x, T* y, const Pool2dDims& g) {
  auto window_of = [&](int64_t oy, int64_t ox) { return adaptive_window(g, oy, ox); };
  for (int64_t p = 0; p < g.P; ++p) avg_plane_naive(x + p * g.H * g.W, y + p * g.Ho * g.Wo, g, window_of);
}

template <typename T> void adaptive_avg_pool2d_backward_naive(const T* dy, T* dx, const Pool2dDims& g) {
  auto window_of = [&](int64_t oy, int64_t ox) { return adaptive_window(g, oy, ox); };
  for (int64_t p = 0; p < g.P; ++p) avg_plane_backward_naive(dy + p * g.Ho * g.Wo, dx + p * g.H * g.W, g, window_of);
}

// ---- fast: vectors across output columns ------------------------------------------------

namespace {

// NOTE: a single-lane target (HWY_SCALAR, the portable build's) has no ConcatEven and no
// half vectors, and one lane gains nothing: the pools run the naive planes there.
#if HWY_TARGET == HWY_SCALAR
constexpr bool kVectorPools = false;
#else
constexpr bool kVectorPools = true;
#endif

template <typename T> using Tag = hn::ScalableTag<T>;
template <typename T> using Vec = hn::Vec<Tag<T>>;
// Index lanes beside T's: int32 beside float32, int64 beside float64.
template <typename T> using ITag = hn::RebindToSigned<Tag<T>>;
template <typename T> using IVec = hn::Vec<ITag<T>>;

template <typename T> HWY_INLINE int64_t lanes() { return static_cast<int64_t>(hn::Lanes(Tag<T>())); }

// count elements from p (a whole vector when count >= lanes), zeros in the lanes past them.
template <class D> HWY_INLINE hn::Vec<D> load_n(D d, const hn::TFromD<D>* p, int64_t count) {
  if (count >= static_cast<int64_t>(hn::Lanes(d))) return hn::LoadU(d, p);
  return simd::LoadFirstN(d, p, static_cast<size_t>(count));
}
template <class D> HWY_INLINE void store_n(D d, hn::Vec<D> v, hn::TFromD<D>* p, int64_t count) {
  if (count >= static_cast<int64_t>(hn::Lanes(d))) return hn::StoreU(v, d, p);
  simd::StoreFirstN(v, d, p, static_cast<size_t>(count));
}

// Output columns [lo, hi) whose every tap lies inside the row: ox sw - pw >= 0 and
// ox sw - pw + (kw - 1) dw <= W - 1. Empty (lo == hi) when there are none.
struct Columns {
  int64_t lo, hi;
};
Columns interior_columns(const Pool2dDims& g) {
  const int64_t lo = std::min((g.pw + g.sw - 1) / g.sw, g.Wo);
  const int64_t last = g.W - 1 + g.pw - (g.kw - 1) * g.dw;  // the largest ox sw
  const int64_t hi = last < 0 ? 0 : std::min(last / g.sw + 1, g.Wo);
  return {lo, std::max(hi, lo)};
}

// Whether the vector planes apply: sw 1 or 2, some interior columns, and (float32) plane
// offsets that fit the int32 index lanes.
template <typename T> bool vector_plane_fits(const Pool2dDims& g, Columns cols) {
  if (!kVectorPools || (g.sw != 1 && g.sw != 2) || cols.hi == cols.lo) return false;
  return sizeof(T) == 8 || g.H * g.W <= std::numeric_limits<int32_t>::max();
}

// The scratch rows of avg_pool_plane_backward, in elements: `up` (zeroed once, then each row
// writes the same positions) and `share`.
struct BackwardScratch {
  int64_t up, share;
};
template <typename T> BackwardScratch backward_scratch(const Pool2dDims& g) {
  const int64_t L = lanes<T>();
  return {g.kw - 1 + std::max(g.W + g.pw, g.sw * g.Wo) + L, g.Wo + L};
}

#if HWY_TARGET != HWY_SCALAR

// Calls visit(v, at) for each tap of output row oy, columns [ox, ox + c) (all interior), in
// the naive order (rows i, then columns j): lane l of v is tap (i, j) of output ox + l, `at`
// the plane offset yy W + xx of lane 0's tap (lane l's is at + l sw).
template <int kSw, typename T, typename Visit>
HWY_INLINE void for_each_tap(const T* in, const Pool2dDims& g, int64_t oy, int64_t ox, int64_t c, Visit&& visit) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t yy = oy * g.sh - g.ph + i * g.dh;
    if (yy < 0 || yy >= g.H) continue;
    const T* row = in + yy * g.W;
    for (int64_t j = 0; j < g.kw;) {
      const int64_t x0 = ox * kSw - g.pw + j * g.dw;
      if constexpr (kSw == 1) {
        visit(load_n(d, row + x0, c), yy * g.W + x0);
        ++j;
      } else {
        // Columns x0, x0 + 2, ..., x0 + 2 (c - 1) are the even lanes of 2 c elements from x0
        // (fewer when the row ends first: the last one needed is inside, being interior).
        const int64_t n = std::min(2 * c, g.W - x0);
        const Vec<T> lo = load_n(d, row + x0, n);
        const Vec<T> hi = n > L ? load_n(d, row + x0 + L, n - L) : hn::Zero(d);
        visit(hn::ConcatEven(d, hi, lo), yy * g.W + x0);
        if (g.dw == 1 && j + 1 < g.kw) {  // tap j + 1 reads the odd lanes (interior: n == 2 c)
          visit(hn::ConcatOdd(d, hi, lo), yy * g.W + x0 + 1);
          j += 2;
        } else {
          ++j;
        }
      }
    }
  }
}

// Lanes [0, c) of the index vector v, widened to int64, to out.
template <typename T> HWY_INLINE void store_indices(IVec<T> v, int64_t* out, int64_t c) {
  const ITag<T> di;
  if constexpr (sizeof(T) == 8) {
    store_n(di, v, out, c);
  } else {
    const hn::Half<ITag<T>> dh;
    const hn::Rebind<int64_t, decltype(dh)> d64;
    const int64_t half = static_cast<int64_t>(hn::Lanes(dh));
    store_n(d64, hn::PromoteTo(d64, hn::LowerHalf(dh, v)), out, std::min(c, half));
    if (c > half) store_n(d64, hn::PromoteTo(d64, hn::UpperHalf(dh, v)), out + half, c - half);
  }
}

template <int kSw, typename T>
void max_pool_plane(const T* in, T* y, int64_t* idx, const Pool2dDims& g, Columns cols) {
  const Tag<T> d;
  const ITag<T> di;
  using TI = hn::TFromD<ITag<T>>;
  const int64_t L = lanes<T>();
  const IVec<T> step = kSw == 1 ? hn::Iota(di, 0) : hn::Add(hn::Iota(di, 0), hn::Iota(di, 0));  // lane l: l sw
  for (int64_t oy = 0; oy < g.Ho; ++oy) {
    T* yr = y + oy * g.Wo;
    int64_t* ir = idx + oy * g.Wo;
    for (int64_t ox = 0; ox < cols.lo; ++ox) max_window(in, g, oy, ox, yr + ox, ir + ox);
    for (int64_t ox = cols.lo; ox < cols.hi; ox += L) {
      const int64_t c = std::min(L, cols.hi - ox);
      Vec<T> best = hn::Zero(d);
      IVec<T> arg = hn::Zero(di);
      bool seeded = false;
      for_each_tap<kSw>(in, g, oy, ox, c, [&](Vec<T> v, int64_t at) {
        const IVec<T> vat = hn::Add(hn::Set(di, static_cast<TI>(at)), step);
        if (!seeded) {  // the first tap inside the plane: taken whatever it holds (even -inf)
          best = v;
          arg = vat;
          seeded = true;
          return;
        }
        const auto take = hn::Or(hn::Gt(v, best), hn::IsNaN(v));
        best = hn::IfThenElse(take, v, best);
        arg = hn::IfThenElse(hn::RebindMask(di, take), vat, arg);
      });
      if (!seeded) {  // no row of the window inside the plane (not with PyTorch's padding rule)
        for (int64_t k = ox; k < ox + c; ++k) max_window(in, g, oy, k, yr + k, ir + k);
        continue;
      }
      store_n(d, best, yr + ox, c);
      store_indices<T>(arg, ir + ox, c);
    }
    for (int64_t ox = cols.hi; ox < g.Wo; ++ox) max_window(in, g, oy, ox, yr + ox, ir + ox);
  }
}

// count_include_pad or not: the interior columns of a row share one count (their windows
// differ from each other only in where they start).
template <int kSw, typename T>
void avg_pool_plane(const T* in, T* y, const Pool2dDims& g, bool count_include_pad, Columns cols) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  for (int64_t oy = 0; oy < g.Ho; ++oy) {
    T* yr = y + oy * g.Wo;
    for (int64_t ox = 0; ox < cols.lo; ++ox) yr[ox] = window_mean(in, g.W, avg_window(g, oy, ox, count_include_pad));
    const double count = avg_window(g, oy, cols.lo, count_include_pad).count;
    const Vec<T> vcount = hn::Set(d, static_cast<T>(count));
    for (int64_t ox = cols.lo; ox < cols.hi; ox += L) {
      const int64_t c = std::min(L, cols.hi - ox);
      Vec<T> sum = hn::Zero(d);
      for_each_tap<kSw>(in, g, oy, ox, c, [&](Vec<T> v, int64_t) { sum = hn::Add(sum, v); });
      store_n(d, count > 0 ? hn::Div(sum, vcount) : hn::Zero(d), yr + ox, c);
    }
    for (int64_t ox = cols.hi; ox < g.Wo; ++ox) yr[ox] = window_mean(in, g.W, avg_window(g, oy, ox, count_include_pad));
  }
}

// The backward of a plane as a gather: one store per vector of dx where a scatter would
// store once per tap (and stall on loads of what the previous tap just stored). For each
// output row oy: share[ox] = dy / count goes to position u = ox sw of the zero-padded row
// `up` (the positions between them stay 0 when sw == 2), and input column xx of every row of
// the window gets sum_j up[xx + pw - j] over j < kw: exactly the shares of the windows that
// hold xx. The interior columns share one count; the edge columns take their own.
template <int kSw, typename T>
void avg_pool_plane_backward(const T* dy, T* out, const Pool2dDims& g, bool count_include_pad, Columns cols, T* up,
                             T* share) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  const int64_t off = g.kw - 1;  // up[off + u] holds position u: u >= -(kw - 1) is read
  T* row_share = kSw == 1 ? up + off : share;
  // sw == 2: lanes 2 m and 2 m + 1 of spread_lo take lane m of a share vector, spread_hi the
  // same from lane L / 2; `even` then zeros the odd lanes.
  using TI = hn::TFromD<ITag<T>>;
  HWY_ALIGN TI lo_lanes[hn::MaxLanes(d)], hi_lanes[hn::MaxLanes(d)];
  for (int64_t l = 0; l < L; ++l) {
    lo_lanes[l] = static_cast<TI>(l / 2);
    hi_lanes[l] = static_cast<TI>(L / 2 + l / 2);
  }
  const auto spread_lo = hn::SetTableIndices(d, lo_lanes), spread_hi = hn::SetTableIndices(d, hi_lanes);
  const ITag<T> di;
  const auto even = hn::RebindMask(d, hn::Eq(hn::And(hn::Iota(di, 0), hn::Set(di, TI{1})), hn::Zero(di)));
  for (int64_t oy = 0; oy < g.Ho; ++oy) {
    const Window rows = avg_window(g, oy, cols.lo, count_include_pad);  // rows and the interior count
    if (rows.y0 >= rows.y1 || rows.count <= 0) continue;
    const T* dyr = dy + oy * g.Wo;
    const Vec<T> vcount = hn::Set(d, static_cast<T>(rows.count));
    for (int64_t ox = 0; ox < g.Wo; ox += L)
      store_n(d, hn::Div(load_n(d, dyr + ox, g.Wo - ox), vcount), row_share + ox, g.Wo - ox);
    auto edge = [&](int64_t ox) {
      const Window w = avg_window(g, oy, ox, count_include_pad);
      row_share[ox] = w.count > 0 ? dyr[ox] / static_cast<T>(w.count) : T(0);
    };
    for (int64_t ox = 0; ox < cols.lo; ++ox) edge(ox);
    for (int64_t ox = cols.hi; ox < g.Wo; ++ox) edge(ox);
    if constexpr (kSw == 2) {
      for (int64_t ox = 0; ox < g.Wo; ox += L) {
        const int64_t n = 2 * std::min(L, g.Wo - ox);  // positions 2 ox .. 2 (ox + c) - 1
        const Vec<T> v = hn::LoadU(d, share + ox);
        store_n(d, hn::IfThenElseZero(even, hn::TableLookupLanes(v, spread_lo)), up + off + 2 * ox, n);
        if (n > L) store_n(d, hn::IfThenElseZero(even, hn::TableLookupLanes(v, spread_hi)), up + off + 2 * ox + L, n - L);
      }
    }
    for (int64_t xx = 0; xx < g.W; xx += L) {
      Vec<T> sum = hn::LoadU(d, up + off + xx + g.pw);
      for (int64_t j = 1; j < g.kw; ++j) sum = hn::Add(sum, hn::LoadU(d, up + off + xx + g.pw - j));
      for (int64_t yy = rows.y0; yy < rows.y1; ++yy) {
        T* p = out + yy * g.W + xx;
        store_n(d, hn::Add(load_n(d, p, g.W - xx), sum), p, g.W - xx);
      }
    }
  }
}

#endif  // HWY_TARGET != HWY_SCALAR

// A window that is the whole plane (no padding): the global average pool.
bool covers_plane(const Pool2dDims& g) {
  return g.Ho == 1 && g.Wo == 1 && g.ph == 0 && g.pw == 0 && g.kh == g.H && g.kw == g.W && g.dh == 1 && g.dw == 1;
}

// Σ x over n contiguous elements, in T (four vector accumulators, as the naive loop sums in T).
template <typename T> T plane_sum(const T* x, int64_t n) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  Vec<T> a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 = hn::Add(a0, hn::LoadU(d, x + i));
    a1 = hn::Add(a1, hn::LoadU(d, x + i + L));
    a2 = hn::Add(a2, hn::LoadU(d, x + i + 2 * L));
    a3 = hn::Add(a3, hn::LoadU(d, x + i + 3 * L));
  }
  for (; i < n; i += L) a0 = hn::Add(a0, load_n(d, x + i, n - i));
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

// out[0, n) += v
template <typename T> void plane_add(T* out, int64_t n, T v) {
  const Tag<T> d;
  const int64_t L = lanes<T>();
  const Vec<T> vv = hn::Set(d, v);
  for (int64_t i = 0; i < n; i += L) store_n(d, hn::Add(load_n(d, out + i, n - i), vv), out + i, n - i);
}

// The windows of adaptive_avg_pool2d when the sizes divide: avg_pool2d's with kernel =
// stride = H / Ho (W / Wo), no padding (the count is the window's area either way).
bool adaptive_as_avg(const Pool2dDims& g, Pool2dDims* as_avg) {
  if (g.H % g.Ho != 0 || g.W % g.Wo != 0) return false;
  *as_avg = g;
  as_avg->kh = as_avg->sh = g.H / g.Ho;
  as_avg->kw = as_avg->sw = g.W / g.Wo;
  as_avg->ph = as_avg->pw = 0;
  as_avg->dh = as_avg->dw = 1;
  return true;
}

// One plane of each fast kernel: the vector plane for its stride when `vector`, else the naive
// one.
template <typename T> void max_plane(const T* in, T* y, int64_t* idx, const Pool2dDims& g, Columns cols, bool vector) {
#if HWY_TARGET != HWY_SCALAR
  if (vector && g.sw == 1) return max_pool_plane<1>(in, y, idx, g, cols);
  if (vector) return max_pool_plane<2>(in, y, idx, g, cols);
#else
  (void)cols, (void)vector;
#endif
  max_pool_plane_naive(in, y, idx, g);
}

template <typename T>
void avg_plane(const T* in, T* y, const Pool2dDims& g, bool count_include_pad, Columns cols, bool vector) {
#if HWY_TARGET != HWY_SCALAR
  if (vector && g.sw == 1) return avg_pool_plane<1>(in, y, g, count_include_pad, cols);
  if (vector) return avg_pool_plane<2>(in, y, g, count_include_pad, cols);
#else
  (void)cols, (void)vector;
#endif
  avg_plane_naive(in, y, g, [&](int64_t oy, int64_t ox) { return avg_window(g, oy, ox, count_include_pad); });
}

// up, share: the vector plane's scratch rows (backward_scratch), or null.
template <typename T>
void avg_plane_backward(const T* dy, T* out, const Pool2dDims& g, bool count_include_pad, Columns cols, T* up,
                        T* share) {
#if HWY_TARGET != HWY_SCALAR
  if (up && g.sw == 1) return avg_pool_plane_backward<1>(dy, out, g, count_include_pad, cols, up, share);
  if (up) return avg_pool_plane_backward<2>(dy, out, g, count_include_pad, cols, up, share);
#else
  (void)cols, (void)up, (void)share;
#endif
  avg_plane_backward_naive(dy, out, g,
                           [&](int64_t oy, int64_t ox) { return avg_window(g, oy, ox, count_include_pad); });
}

}  // namespace

template <typename T> void max_pool2d_forward(const T* x, T* y, int64_t* idx, const Pool2dDims& g) {
  const Columns cols = interior_columns(g);
  const bool vector = vector_plane_fits<T>(g, cols);
  parallel_for(g.P, g.Ho * g.Wo * g.kh * g.kw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      max_plane(x + p * g.H * g.W, y + p * g.Ho * g.Wo, idx + p * g.Ho * g.Wo, g, cols, vector);
  });
}

template <typename T> void max_pool2d_backward(const T* dy, const int64_t* idx, T* dx, const Pool2dDims& g) {
  parallel_for(g.P, g.Ho * g.Wo, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      for (int64_t o = 0; o < g.Ho * g.Wo; ++o) {
        const int64_t at = p * g.Ho * g.Wo + o;
        dx[p * g.H * g.W + idx[at]] += dy[at];
      }
  });
}

template <typename T> void avg_pool2d_forward(const T* x, T* y, const Pool2dDims& g, bool count_include_pad) {
  const Columns cols = interior_columns(g);
  const bool whole = covers_plane(g), vector = vector_plane_fits<T>(g, cols);
  parallel_for(g.P, g.Ho * g.Wo * g.kh * g.kw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* in = x + p * g.H * g.W;
      T* yp = y + p * g.Ho * g.Wo;
      if (whole)
        yp[0] = plane_sum(in, g.H * g.W) / static_cast<T>(g.H * g.W);
      else
        avg_plane(in, yp, g, count_include_pad, cols, vector);
    }
  });
}

template <typename T> void avg_pool2d_backward(const T* dy, T* dx, const Pool2dDims& g, bool count_include_pad) {
  const Columns cols = interior_columns(g);
  const bool whole = covers_plane(g), vector = vector_plane_fits<T>(g, cols);
  const BackwardScratch sizes = backward_scratch<T>(g);
  parallel_for(g.P, g.Ho * g.Wo * g.kh * g.kw, [&](int64_t begin, int64_t end) {
    T* up = nullptr;
    T* share = nullptr;
    if (vector && !whole) {
      up = thread_scratch<T>(sizes.up, 0);
      share = thread_scratch<T>(sizes.share, 1);
      std::fill(up, up + sizes.up, T(0));
    }
    for (int64_t p = begin; p < end; ++p) {
      const T* dyp = dy + p * g.Ho * g.Wo;
      T* out = dx + p * g.H * g.W;
      if (whole)
        plane_add(out, g.H * g.W, dyp[0] / static_cast<T>(g.H * g.W));
      else
        avg_plane_backward(dyp, out, g, count_include_pad, cols, up, share);
    }
  });
}

template <typename T> void adaptive_avg_pool2d_forward(const T* x, T* y, const Pool2dDims& g) {
  Pool2dDims as_avg;
  if (adaptive_as_avg(g, &as_avg)) return avg_pool2d_forward(x, y, as_avg, true);
  const int64_t cost = g.H * g.W / (g.Ho * g.Wo) + g.H + g.W;  // ~ one window per output
  parallel_for(g.P, g.Ho * g.Wo * cost, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      avg_plane_naive(x + p * g.H * g.W, y + p * g.Ho * g.Wo, g,
                      [&](int64_t oy, int64_t ox) { return adaptive_window(g, oy, ox); });
  });
}

template <typename T> void adaptive_avg_pool2d_backward(const T* dy, T* dx, const Pool2dDims& g) {
  Pool2dDims as_avg;
  if (adaptive_as_avg(g, &as_avg)) return avg_pool2d_backward(dy, dx, as_avg, true);
  const int64_t cost = g.H * g.W / (g.Ho * g.Wo) + g.H + g.W;
  parallel_for(g.P, g.Ho * g.Wo * cost, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      avg_plane_backward_naive(dy + p * g.Ho * g.Wo, dx + p * g.H * g.W, g,
                               [&](int64_t oy, int64_t ox) { return adaptive_window(g, oy, ox); });
  });
}

#define SG_INSTANTIATE_POOLING_KERNELS(T)                                                              \
  template void max_pool2d_forward<T>(const T*, T*, int64_t*, const Pool2dDims&);                      \
  template void max_pool2d_backward<T>(const T*, const int64_t*, T*, const Pool2dDims&);               \
  template void avg_pool2d_forward<T>(const T*, T*, const Pool2dDims&, bool);                          \
  template void avg_pool2d_backward<T>(const T*, T*, const Pool2dDims&, bool);                         \
  template void adaptive_avg_pool2d_forward<T>(const T*, T*, const Pool2dDims&);                       \
  template void adaptive_avg_pool2d_backward<T>(const T*, T*, const Pool2dDims&);                      \
  template void max_pool2d_forward_naive<T>(const T*, T*, int64_t*, const Pool2dDims&);                \
  template void avg_pool2d_forward_naive<T>(const T*, T*, const Pool2dDims&, bool);                    \
  template void avg_pool2d_backward_naive<T>(const T*, T*, const Pool2dDims&, bool);                   \
  template void adaptive_avg_pool2d_forward_naive<T>(const T*, T*, const Pool2dDims&);                 \
  template void adaptive_avg_pool2d_backward_naive<T>(const T*, T*, const Pool2dDims&);
SG_INSTANTIATE_POOLING_KERNELS(float)
SG_INSTANTIATE_POOLING_KERNELS(double)
#undef SG_INSTANTIATE_POOLING_KERNELS

}  // namespace sg::kernels
