// Kernels of the softmax family (see ops/softmax_kernels.h for the layout and edge rules).
//
// Forward of one contiguous row of n elements (inner == 1):
//   pass 1  one read of x: the online normalizer. Blocks of 4 vectors; the running max m
//           is one scalar for the row, raised only when a block holds a larger value
//           (rare after the first few blocks), and then the running sum is rescaled by
//           exp(m_old - m_new). Sums are exact enough for float32: each lane adds at most
//           kFlushEvery blocks in float before the partial moves into a double.
//   pass 2  one write of y. Rows up to kScratchMaxElems keep exp(x - m_block) from pass 1
//           in a per-thread scratch row (in cache) and pass 2 only rescales it, so every
//           element costs one exp; longer rows recompute exp(x - M) from x instead.
//           softmax over several such rows per thread interleaves pass 2 of row r with
//           pass 1 of row r + 1 (two scratch rows), so the writes overlap the exps
//           (softmax_rows_scratch).
// Softmax over a non-last dim (inner > 1) vectorizes across the inner positions: each
// lane runs its own online normalizer down the C axis (no transpose copy).
#include "ops/softmax_kernels.h"

#include <hwy/cache_control.h>
#include <hwy/highway.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/prefetch.h"
#include "core/scratch.h"
#include "core/simd_exp.h"
#include "core/simd_partial.h"
#include "core/strided.h"

namespace sg::kernels {
namespace hn = hwy::HWY_NAMESPACE;

namespace {

template <typename T> constexpr T kLowest = std::numeric_limits<T>::lowest();
template <typename T> constexpr T kInf = std::numeric_limits<T>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

constexpr int kFlushEvery = 16;             // blocks summed in T before moving into double
constexpr int64_t kScratchMaxElems = 65536;  // rows up to this long reuse pass 1's exps
constexpr int64_t kSplitRowElems = 65536;    // rows this long are split when rows < threads
// Outputs this large are written with non-temporal stores: they cannot stay in the cache
// anyway, and streaming them saves the read of each output line before it is written.
// NOTE: 8 MiB, not 16: an output of 8 MiB comes with at least 8 MiB of input streaming
// through the same L3 (32 MiB on the Zen 4 this was tuned on), and (128, 32000) float32
// (15.6 MiB, a language model's logits) was just under 16 MiB: streaming its softmax
// output cut the forward by ~18% and the backward by ~30% (one thread; see the commit).
constexpr size_t kStreamBytes = size_t{8} << 20;
constexpr int64_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

template <typename T> using Tag = hn::ScalableTag<T>;
template <typename T> using Vec = hn::Vec<Tag<T>>;

// Pass 1 leaves sum = NaN when max = +inf (exp(inf - inf)); the rule is sum = k, the
// number of +inf entries, unless the row also holds a NaN.
template <typename T> MaxSum<T> settle_infinite_max(const T* x, int64_t n, int64_t stride, MaxSum<T> ms) {
  if (!(ms.max == kInf<T>)) return ms;
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i * stride];
    if (std::isnan(v)) return {ms.max, kNaN};
    k += v == kInf<T>;
  }
  return {ms.max, static_cast<double>(k)};
}

template <bool kStream, class D, class V, typename T> HWY_INLINE void store_vec(V v, D d, T* p) {
  if constexpr (kStream)
    hn::Stream(v, d, p);
  else
    hn::StoreU(v, d, p);
}

// ---- contiguous rows --------------------------------------------------------------------

// A sum of blocks of 4 vectors, exact enough for float32: each lane adds at most
// kFlushEvery blocks in T before the partial sums move into a double.
template <typename T> struct BlockSum {
  Vec<T> a0 = hn::Zero(Tag<T>()), a1 = a0, a2 = a0, a3 = a0;
  double total = 0;
  int pending = 0;
  HWY_INLINE void add(Vec<T> v0, Vec<T> v1, Vec<T> v2, Vec<T> v3) {
    a0 = hn::Add(a0, v0);
    a1 = hn::Add(a1, v1);
    a2 = hn::Add(a2, v2);
    a3 = hn::Add(a3, v3);
    if (++pending == kFlushEvery) flush();
  }
  HWY_INLINE void flush() {
    if (pending == 0) return;
    const Tag<T> d;
    total += static_cast<double>(hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)))));
    a0 = a1 = a2 = a3 = hn::Zero(d);
    pending = 0;
  }
};

// Pass 1's state over one contiguous row, fed a block of 4 vectors at a time. With kStore
// each block also writes e_i = exp(x_i - m_b) to e and the max m_b in force for it to
// block_max[b]. The running max m is one scalar for the row, raised only when a block
// holds a larger value (then the sum so far is rescaled by exp(m_old - m_new)).
// NOTE: the methods are forced inline and the state is a local of the caller's loop:
// GCC otherwise keeps the block out of line and the running sums live on the stack (2x
// slower pass 1).
template <bool kStore, typename T> struct OnlineRow {
  T m = kLowest<T>;
  Vec<T> vm = hn::Set(Tag<T>(), kLowest<T>);
  BlockSum<T> sum;

  HWY_INLINE void block(const T* HWY_RESTRICT xp, T* HWY_RESTRICT ep, T* HWY_RESTRICT block_max, int64_t b) {
    const Tag<T> d;
    using V = Vec<T>;
    const int64_t L = static_cast<int64_t>(hn::Lanes(d));
    const V v0 = hn::LoadU(d, xp), v1 = hn::LoadU(d, xp + L);
    const V v2 = hn::LoadU(d, xp + 2 * L), v3 = hn::LoadU(d, xp + 3 * L);
    const V top = hn::Max(hn::Max(v0, v1), hn::Max(v2, v3));
    if (HWY_UNLIKELY(!hn::AllFalse(d, hn::Gt(top, vm)))) {  // the running max rises
      sum.flush();
      const T m_new = hn::GetLane(hn::MaxOfLanes(d, top));
      if (sum.total != 0) sum.total *= std::exp(static_cast<double>(m) - static_cast<double>(m_new));
      m = m_new;
      vm = hn::Set(d, m);
    }
    const V e0 = simd::Exp(d, hn::Sub(v0, vm)), e1 = simd::Exp(d, hn::Sub(v1, vm));
    const V e2 = simd::Exp(d, hn::Sub(v2, vm)), e3 = simd::Exp(d, hn::Sub(v3, vm));
    sum.add(e0, e1, e2, e3);
    if constexpr (kStore) {
      hn::StoreU(e0, d, ep);
      hn::StoreU(e1, d, ep + L);
      hn::StoreU(e2, d, ep + 2 * L);
      hn::StoreU(e3, d, ep + 3 * L);
      block_max[b] = m;
    }
  }
  // Block b of a row of n elements (x, e: the row's start): full, or the last partial
  // block padded with -inf (exp gives 0, the max is unchanged).
  HWY_INLINE void block_of_row(const T* HWY_RESTRICT x, T* HWY_RESTRICT e, T* HWY_RESTRICT block_max, int64_t n,
                               int64_t b) {
    const int64_t B = 4 * static_cast<int64_t>(hn::Lanes(Tag<T>())), i = b * B;
    if (i + B <= n) {
      prefetch_lines_ahead(x + i, B);
      block(x + i, kStore ? e + i : nullptr, block_max, b);
      return;
    }
    HWY_ALIGN T xt[4 * kMaxLanes];
    HWY_ALIGN T et[4 * kMaxLanes];
    std::fill(xt, xt + B, -kInf<T>);
    std::copy(x + i, x + n, xt);
    block(xt, et, block_max, b);
    if constexpr (kStore) std::copy(et, et + (n - i), e + i);
  }
  HWY_INLINE MaxSum<T> finish() {
    sum.flush();
    return {m, sum.total};
  }
};

template <typename T> int64_t blocks_of_row(int64_t n) {
  const int64_t B = 4 * static_cast<int64_t>(hn::Lanes(Tag<T>()));
  return (n + B - 1) / B;
}

// Pass 1 over a contiguous row x: (n). With kStore it also writes e: (n) and block_max:
// (blocks_of_row(n)) (see OnlineRow).
template <bool kStore, typename T>
MaxSum<T> online_max_sum(const T* HWY_RESTRICT x, int64_t n, T* HWY_RESTRICT e, T* HWY_RESTRICT block_max) {
  OnlineRow<kStore, T> row;
  const int64_t blocks = blocks_of_row<T>(n);
  for (int64_t b = 0; b < blocks; ++b) row.block_of_row(x, e, block_max, n, b);
  return row.finish();
}

// y[i] = f(a[i], b[i]) over a contiguous row, a vector at a time; the last partial
// vector goes through a padded copy. With kStream, y + i must be vector-aligned (the
// caller only streams rows whose length is a multiple of the vector).
template <bool kStream, typename T, class F>
HWY_INLINE void map_row(const T* a, const T* b, T* y, int64_t n, F f) {
  const Tag<T> d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + L <= n; i += L) store_vec<kStream>(f(hn::LoadU(d, a + i), hn::LoadU(d, b + i)), d, y + i);
  if (i < n) {
    HWY_ALIGN T at[kMaxLanes] = {}, bt[kMaxLanes] = {}, yt[kMaxLanes];
    std::copy(a + i, a + n, at);
    std::copy(b + i, b + n, bt);
    hn::Store(f(hn::Load(d, at), hn::Load(d, bt)), d, yt);
    std::copy(yt, yt + (n - i), y + i);
  }
}

// Dot product or plain sum of a contiguous row, accumulated like pass 1 (4 vectors wide,
// flushed into a double every kFlushEvery blocks). kDot: sum a*b, else sum a.
template <bool kDot, typename T> double row_sum(const T* HWY_RESTRICT a, const T* HWY_RESTRICT b, int64_t n) {
  const Tag<T> d;
  using V = Vec<T>;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d)), B = 4 * L;
  BlockSum<T> sum;
  auto term = [&](int64_t k) HWY_ATTR {
    const V va = hn::LoadU(d, a + k);
    if constexpr (kDot) return hn::Mul(va, hn::LoadU(d, b + k));
    return va;
  };
  int64_t i = 0;
  for (; i + B <= n; i += B) {
    prefetch_lines_ahead(a + i, B);
    if constexpr (kDot) prefetch_lines_ahead(b + i, B);
    sum.add(term(i), term(i + L), term(i + 2 * L), term(i + 3 * L));
  }
  sum.flush();
  for (; i < n; ++i) sum.total += kDot ? static_cast<double>(a[i]) * b[i] : static_cast<double>(a[i]);
  return sum.total;
}

// Rows whose normalizer is not ordinary (all -inf, +inf entries, NaN): entry by entry.
template <typename T> void softmax_edge_row(const T* x, T* y, int64_t n, int64_t stride, MaxSum<T> ms) {
  for (int64_t i = 0; i < n; ++i) y[i * stride] = softmax_entry(x[i * stride], ms);
}
template <typename T> void log_softmax_edge_row(const T* x, T* y, int64_t n, int64_t stride, MaxSum<T> ms) {
  for (int64_t i = 0; i < n; ++i) y[i * stride] = log_softmax_entry(x[i * stride], ms);
}

// Pass 2 of softmax for the part [0, n) of a row whose normalizer over the whole row is ms
// (ordinary): y = exp(x - M) / S, recomputing the exps.
template <bool kStream, typename T> void softmax_write(const T* x, T* y, int64_t n, MaxSum<T> ms) {
  const Tag<T> d;
  const auto vmax = hn::Set(d, ms.max);
  const auto vinv = hn::Set(d, static_cast<T>(1.0 / ms.sum));
  map_row<kStream>(x, x, y, n, [&](Vec<T> v, Vec<T>) HWY_ATTR {
    return hn::Mul(simd::Exp(d, hn::Sub(v, vmax)), vinv);
  });
}

template <bool kStream, typename T> void log_softmax_write(const T* x, T* y, int64_t n, MaxSum<T> ms) {
  const Tag<T> d;
  const auto vmax = hn::Set(d, ms.max);
  const auto vlog = hn::Set(d, static_cast<T>(std::log(ms.sum)));
  // (x - M) first: exact when x is near M, so large logits keep their small differences.
  map_row<kStream>(x, x, y, n, [&](Vec<T> v, Vec<T>) HWY_ATTR {
    return hn::Sub(hn::Sub(v, vmax), vlog);
  });
}

enum class Kind { kSoftmax, kLogSoftmax };

// Rows of at most 4 vectors stay in registers: max, exp and sum, then scale and store.
// Returns false (writing nothing) when the max is not finite: the general path then
// applies the edge rules. A NaN needs no special case: it makes the sum, and so every
// output of the row, NaN.
template <Kind kKind, bool kStream, typename T> bool short_row(const T* x, T* y, int64_t n) {
  const Tag<T> d;
  using V = Vec<T>;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  const V neg_inf = hn::Set(d, -kInf<T>);
  prefetch_lines_ahead(x, n);  // rows come one after another: this asks for a later one
  V v[4];
  for (int k = 0; k < 4; ++k) {
    const int64_t left = n - k * L;
    if (left >= L) {
      v[k] = hn::LoadU(d, x + k * L);
    } else {
      const size_t valid = static_cast<size_t>(std::max<int64_t>(left, 0));
      v[k] = hn::IfThenElse(hn::FirstN(d, valid), simd::LoadFirstN(d, x + k * L, valid), neg_inf);
    }
  }
  const T m = hn::GetLane(hn::MaxOfLanes(d, hn::Max(hn::Max(v[0], v[1]), hn::Max(v[2], v[3]))));
  if (!(m > -kInf<T> && m < kInf<T>)) return false;
  const V vm = hn::Set(d, m);
  V e[4];
  for (int k = 0; k < 4; ++k) e[k] = simd::Exp(d, hn::Sub(v[k], vm));
  const T sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(e[0], e[1]), hn::Add(e[2], e[3]))));
  V out[4];
  if constexpr (kKind == Kind::kSoftmax) {
    const V inv = hn::Set(d, T(1) / sum);
    for (int k = 0; k < 4; ++k) out[k] = hn::Mul(e[k], inv);
  } else {
    const V log_sum = hn::Set(d, std::log(sum));
    for (int k = 0; k < 4; ++k) out[k] = hn::Sub(hn::Sub(v[k], vm), log_sum);
  }
  for (int k = 0; k < 4; ++k) {
    const int64_t left = n - k * L;
    if (left >= L)
      store_vec<kStream>(out[k], d, y + k * L);
    else if (left > 0)
      simd::StoreFirstN(out[k], d, y + k * L, static_cast<size_t>(left));
  }
  return true;
}

// Pass 2 of softmax over a row kept in scratch: y = e * exp(m_block - M) / S, block by
// block; m_block changes only where the running max rose. NOTE: walk blocks rather than
// look up block_max[i / B] per vector: a 64-bit division per vector made this pass 3x
// slower on Intel.
template <bool kStream, typename T> struct ScaleRow {
  MaxSum<T> ms;
  const T* block_max;
  // NOTE: the first block always sets the factor: a sentinel such as lowest() would
  // match a row whose max is lowest() (float32's -3.4e38, a common mask value) and
  // leave the factor at 0.
  T last_max = T(0);
  Vec<T> factor = hn::Zero(Tag<T>());

  HWY_INLINE void block(const T* e, T* y, int64_t n, int64_t b) {
    const Tag<T> d;
    const int64_t B = 4 * static_cast<int64_t>(hn::Lanes(d)), i = b * B;
    if (HWY_UNLIKELY(b == 0 || block_max[b] != last_max)) {
      last_max = block_max[b];
      const double rescale = last_max == ms.max ? 1.0 : std::exp(static_cast<double>(last_max) - ms.max);
      factor = hn::Set(d, static_cast<T>(rescale / ms.sum));
    }
    const Vec<T> f = factor;
    map_row<kStream>(e + i, e + i, y + i, std::min(B, n - i), [&](Vec<T> v, Vec<T>) HWY_ATTR { return hn::Mul(v, f); });
  }
};

// softmax of rows [begin, end) of x, y: (rows, n), 4L < n <= kScratchMaxElems, one thread.
// Each row is pass 1 into a scratch row (its exps) and pass 2 from it. Software-pipelined
// over rows: pass 2 of row r (scale the cached exps and write y, memory-bound) runs block
// by block interleaved with pass 1 of row r + 1 (read x and take its exps, exp-bound), so
// the exps overlap the writes; two scratch rows alternate. Every row's arithmetic is that
// of a row done alone.
template <bool kStream, typename T> void softmax_rows_scratch(const T* x, T* y, int64_t begin, int64_t end, int64_t n) {
  if (begin >= end) return;
  const int64_t B = 4 * static_cast<int64_t>(hn::Lanes(Tag<T>())), blocks = blocks_of_row<T>(n);
  T* e[2] = {thread_scratch<T>(n + B, 0), thread_scratch<T>(n + B, 2)};
  T* block_max[2] = {thread_scratch<T>(blocks + 2, 1), thread_scratch<T>(blocks + 2, 3)};
  OnlineRow<true, T> cur;
  for (int64_t b = 0; b < blocks; ++b) cur.block_of_row(x + begin * n, e[0], block_max[0], n, b);
  int k = 0;  // the scratch slot holding row r
  for (int64_t r = begin; r < end; ++r, k ^= 1) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    const MaxSum<T> ms = settle_infinite_max(xr, n, 1, cur.finish());
    const bool has_next = r + 1 < end;
    const T* xn = xr + n;
    OnlineRow<true, T> next;
    if (!is_ordinary(ms)) {
      softmax_edge_row(xr, yr, n, 1, ms);
      if (has_next)
        for (int64_t b = 0; b < blocks; ++b) next.block_of_row(xn, e[k ^ 1], block_max[k ^ 1], n, b);
    } else {
      ScaleRow<kStream, T> out{ms, block_max[k]};
      for (int64_t b = 0; b < blocks; ++b) {
        if (has_next) next.block_of_row(xn, e[k ^ 1], block_max[k ^ 1], n, b);
        out.block(e[k], yr, n, b);
      }
    }
    cur = next;
  }
}

template <bool kStream, typename T> void softmax_row(const T* x, T* y, int64_t n) {
  if (n <= 4 * static_cast<int64_t>(hn::Lanes(Tag<T>())) && short_row<Kind::kSoftmax, kStream>(x, y, n)) return;
  if (n <= kScratchMaxElems) return softmax_rows_scratch<kStream>(x, y, 0, 1, n);
  const MaxSum<T> ms = settle_infinite_max(x, n, 1, online_max_sum<false, T>(x, n, nullptr, nullptr));
  if (!is_ordinary(ms)) return softmax_edge_row(x, y, n, 1, ms);
  softmax_write<kStream>(x, y, n, ms);
}

template <bool kStream, typename T> void log_softmax_row(const T* x, T* y, int64_t n) {
  if (n <= 4 * static_cast<int64_t>(hn::Lanes(Tag<T>())) && short_row<Kind::kLogSoftmax, kStream>(x, y, n)) return;
  const MaxSum<T> ms = settle_infinite_max(x, n, 1, online_max_sum<false, T>(x, n, nullptr, nullptr));
  if (!is_ordinary(ms)) return log_softmax_edge_row(x, y, n, 1, ms);
  log_softmax_write<kStream>(x, y, n, ms);
}

// dx = s * (g - <s, g>)
template <bool kStream, typename T> void softmax_backward_write(const T* s, const T* g, T* dx, int64_t n, double dot) {
  const Tag<T> d;
  const auto vdot = hn::Set(d, static_cast<T>(dot));
  map_row<kStream>(s, g, dx, n, [&](Vec<T> vs, Vec<T> vg) HWY_ATTR {
    return hn::Mul(vs, hn::Sub(vg, vdot));
  });
}

// dx = g - exp(y) * sum(g)
template <bool kStream, typename T>
void log_softmax_backward_write(const T* y, const T* g, T* dx, int64_t n, double sum_g) {
  const Tag<T> d;
  const auto vsum = hn::Set(d, static_cast<T>(sum_g));
  map_row<kStream>(y, g, dx, n, [&](Vec<T> vy, Vec<T> vg) HWY_ATTR {
    return hn::NegMulAdd(simd::Exp(d, vy), vsum, vg);
  });
}

// Splits each of `rows` long rows of n elements over the threads: part(row, begin, end)
// gives a partial result per thread, combine(parts) the row's total, and
// write(row, begin, end, total) the output. Chunks start at multiples of `align`.
template <typename Part, typename Total, class PartFn, class CombineFn, class WriteFn>
void split_long_rows(int64_t rows, int64_t n, int64_t align, PartFn part, CombineFn combine, WriteFn write) {
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), n / kGrainElems));
  std::vector<Part> parts(static_cast<size_t>(std::max(threads, 1)));
  Total total{};
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t units = (n + align - 1) / align;
    const int64_t begin = std::min(n, units * t / nt * align);
    const int64_t end = std::min(n, units * (t + 1) / nt * align);
    for (int64_t r = 0; r < rows; ++r) {
      parts[static_cast<size_t>(t)] = part(r, begin, end);
#pragma omp barrier
#pragma omp single
      total = combine(r, std::vector<Part>(parts.begin(), parts.begin() + nt));
      // (implicit barrier after single: every thread sees the total)
      write(r, begin, end, total);
#pragma omp barrier
    }
  }
}

template <typename T> bool should_split(int64_t rows, int64_t n) {
  return rows < omp_get_max_threads() && n >= kSplitRowElems && omp_get_max_threads() > 1 && !omp_in_parallel();
}

// Streams the output when it is large and every row starts on a vector boundary.
template <typename T> bool should_stream(const T* y, RowsShape shape) {
  const int64_t L = static_cast<int64_t>(hn::Lanes(Tag<T>()));
  const size_t bytes = static_cast<size_t>(shape.outer * shape.C * shape.inner) * sizeof(T);
  return bytes >= kStreamBytes && shape.C % L == 0 && reinterpret_cast<uintptr_t>(y) % (L * sizeof(T)) == 0;
}

// Runs row(r) over rows [0, rows) in parallel, each row costing about n elements of work.
template <bool kStream, class RowFn> void for_rows(int64_t rows, int64_t n, RowFn row) {
  parallel_for(rows, std::max<int64_t>(n, 1), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row(r);
    if constexpr (kStream) hwy::FlushStream();
  });
}

template <Kind kKind, bool kStream, typename T> void forward_rows(const T* x, T* y, int64_t rows, int64_t n) {
  const int64_t L = static_cast<int64_t>(hn::Lanes(Tag<T>()));
  if (should_split<T>(rows, n)) {
    split_long_rows<MaxSum<T>, MaxSum<T>>(
        rows, n, L,
        [&](int64_t r, int64_t b, int64_t e) {
          return online_max_sum<false, T>(x + r * n + b, e - b, nullptr, nullptr);
        },
        [&](int64_t r, const std::vector<MaxSum<T>>& parts) {
          MaxSum<T> total{kLowest<T>, 0.0};
          for (const auto& p : parts) total = merge(total, p);
          return settle_infinite_max(x + r * n, n, 1, total);
        },
        [&](int64_t r, int64_t b, int64_t e, MaxSum<T> ms) {
          const T* xr = x + r * n + b;
          T* yr = y + r * n + b;
          if (!is_ordinary(ms)) {
            if constexpr (kKind == Kind::kSoftmax) softmax_edge_row(xr, yr, e - b, 1, ms);
            else log_softmax_edge_row(xr, yr, e - b, 1, ms);
          } else if constexpr (kKind == Kind::kSoftmax) {
            softmax_write<kStream>(xr, yr, e - b, ms);
          } else {
            log_softmax_write<kStream>(xr, yr, e - b, ms);
          }
          if constexpr (kStream) hwy::FlushStream();
        });
    return;
  }
  if (kKind == Kind::kSoftmax && n > 4 * L && n <= kScratchMaxElems) {  // pipelined over each thread's rows
    parallel_for(rows, n, [&](int64_t begin, int64_t end) {
      softmax_rows_scratch<kStream>(x, y, begin, end, n);
      if constexpr (kStream) hwy::FlushStream();
    });
    return;
  }
  for_rows<kStream>(rows, n, [&](int64_t r) {
    if constexpr (kKind == Kind::kSoftmax) softmax_row<kStream>(x + r * n, y + r * n, n);
    else log_softmax_row<kStream>(x + r * n, y + r * n, n);
  });
}

template <Kind kKind, bool kStream, typename T>
void backward_rows(const T* out, const T* g, T* dx, int64_t rows, int64_t n) {
  constexpr bool kDot = kKind == Kind::kSoftmax;  // softmax needs <s, g>, log_softmax sum(g)
  auto write = [&](const T* o, const T* gr, T* dr, int64_t len, double reduced) {
    if constexpr (kKind == Kind::kSoftmax) softmax_backward_write<kStream>(o, gr, dr, len, reduced);
    else log_softmax_backward_write<kStream>(o, gr, dr, len, reduced);
  };
  const int64_t L = static_cast<int64_t>(hn::Lanes(Tag<T>()));
  if (should_split<T>(rows, n)) {
    split_long_rows<double, double>(
        rows, n, L,
        [&](int64_t r, int64_t b, int64_t e) {
          return kDot ? row_sum<true>(out + r * n + b, g + r * n + b, e - b) : row_sum<false>(g + r * n + b, g, e - b);
        },
        [](int64_t, const std::vector<double>& parts) {
          double total = 0;
          for (double p : parts) total += p;
          return total;
        },
        [&](int64_t r, int64_t b, int64_t e, double reduced) {
          write(out + r * n + b, g + r * n + b, dx + r * n + b, e - b, reduced);
          if constexpr (kStream) hwy::FlushStream();
        });
    return;
  }
  for_rows<kStream>(rows, n, [&](int64_t r) {
    const T *o = out + r * n, *gr = g + r * n;
    write(o, gr, dx + r * n, n, kDot ? row_sum<true>(o, gr, n) : row_sum<false>(gr, gr, n));
  });
}

// ---- softmax over a non-last dim: vectorized across inner positions ---------------------
//
// One work item is (o, a group of up to L inner positions); its lanes walk down C with
// stride `inner`, each lane with its own running max and sum. A lane's float partial
// sum moves into a double every kFlushEvery steps.

template <typename T> struct LaneGroup {
  int64_t base;   // offset of (o, 0, j0)
  int64_t lanes;  // inner positions in this group (<= L)
};

template <typename T> LaneGroup<T> lane_group(RowsShape s, int64_t item) {
  const int64_t L = static_cast<int64_t>(hn::Lanes(Tag<T>()));
  const int64_t groups = (s.inner + L - 1) / L;
  const int64_t o = item / groups, j0 = (item % groups) * L;
  return {o * s.C * s.inner + j0, std::min(L, s.inner - j0)};
}

template <typename T> HWY_INLINE Vec<T> load_lanes(const T* p, int64_t lanes) {
  const Tag<T> d;
  if (lanes == static_cast<int64_t>(hn::Lanes(d))) return hn::LoadU(d, p);
  return simd::LoadFirstN(d, p, static_cast<size_t>(lanes));
}
template <typename T> HWY_INLINE void store_lanes(Vec<T> v, T* p, int64_t lanes) {
  const Tag<T> d;
  if (lanes == static_cast<int64_t>(hn::Lanes(d))) return hn::StoreU(v, d, p);
  simd::StoreFirstN(v, d, p, static_cast<size_t>(lanes));
}

// Per-lane sums in double, fed a float (or double) vector at a time.
template <typename T> struct LaneSums {
  double sum[kMaxLanes] = {};
  Vec<T> partial = hn::Zero(Tag<T>());
  int pending = 0;
  void flush() {
    HWY_ALIGN T p[kMaxLanes];
    hn::Store(partial, Tag<T>(), p);
    for (size_t l = 0; l < hn::Lanes(Tag<T>()); ++l) sum[l] += static_cast<double>(p[l]);
    partial = hn::Zero(Tag<T>());
    pending = 0;
  }
  void add(Vec<T> v) {
    partial = hn::Add(partial, v);
    if (++pending == kFlushEvery) flush();
  }
};

// Pass 1 for one lane group: ms[l] for each lane.
template <typename T> void lanes_max_sum(const T* x, RowsShape s, LaneGroup<T> g, MaxSum<T>* ms) {
  const Tag<T> d;
  auto vm = hn::Set(d, kLowest<T>);
  LaneSums<T> sums;
  for (int64_t c = 0; c < s.C; ++c) {
    const auto v = load_lanes(x + g.base + c * s.inner, g.lanes);
    if (HWY_UNLIKELY(!hn::AllFalse(d, hn::Gt(v, vm)))) {  // some lane's max rises
      sums.flush();
      const auto m_new = hn::Max(vm, v);
      HWY_ALIGN T scale[kMaxLanes] = {};
      hn::Store(simd::Exp(d, hn::Sub(vm, m_new)), d, scale);
      for (int64_t l = 0; l < g.lanes; ++l) sums.sum[l] *= static_cast<double>(scale[l]);
      vm = m_new;
    }
    sums.add(simd::Exp(d, hn::Sub(v, vm)));
  }
  sums.flush();
  HWY_ALIGN T m[kMaxLanes];
  hn::Store(vm, d, m);
  for (int64_t l = 0; l < g.lanes; ++l)
    ms[l] = settle_infinite_max(x + g.base + l, s.C, s.inner, MaxSum<T>{m[l], sums.sum[l]});
}

template <Kind kKind, typename T> void forward_inner(const T* x, T* y, RowsShape s) {
  const int64_t L = static_cast<int64_t>(hn::Lanes(Tag<T>()));
  const int64_t items = s.outer * ((s.inner + L - 1) / L);
  parallel_for(items, s.C * L, [&](int64_t begin, int64_t end) {
    const Tag<T> d;
    for (int64_t item = begin; item < end; ++item) {
      const LaneGroup<T> g = lane_group<T>(s, item);
      MaxSum<T> ms[kMaxLanes];
      lanes_max_sum(x, s, g, ms);
      HWY_ALIGN T shift[kMaxLanes] = {}, coef[kMaxLanes] = {};  // per lane: M, and 1/S or log S
      for (int64_t l = 0; l < g.lanes; ++l) {
        if (!is_ordinary(ms[l])) continue;
        shift[l] = ms[l].max;
        coef[l] = static_cast<T>(kKind == Kind::kSoftmax ? 1.0 / ms[l].sum : std::log(ms[l].sum));
      }
      const auto vshift = hn::Load(d, shift), vcoef = hn::Load(d, coef);
      for (int64_t c = 0; c < s.C; ++c) {
        const int64_t off = g.base + c * s.inner;
        const auto v = load_lanes(x + off, g.lanes);
        if constexpr (kKind == Kind::kSoftmax)
          store_lanes(hn::Mul(simd::Exp(d, hn::Sub(v, vshift)), vcoef), y + off, g.lanes);
        else
          store_lanes(hn::Sub(hn::Sub(v, vshift), vcoef), y + off, g.lanes);
      }
      for (int64_t l = 0; l < g.lanes; ++l) {  // lanes with an edge row: entry by entry
        if (is_ordinary(ms[l])) continue;
        if constexpr (kKind == Kind::kSoftmax) softmax_edge_row(x + g.base + l, y + g.base + l, s.C, s.inner, ms[l]);
        else log_softmax_edge_row(x + g.base + l, y + g.base + l, s.C, s.inner, ms[l]);
      }
    }
  });
}

template <Kind kKind, typename T> void backward_inner(const T* out, const T* gr, T* dx, RowsShape s) {
  const int64_t L = static_cast<int64_t>(hn::Lanes(Tag<T>()));
  const int64_t items = s.outer * ((s.inner + L - 1) / L);
  parallel_for(items, s.C * L, [&](int64_t begin, int64_t end) {
    const Tag<T> d;
    for (int64_t item = begin; item < end; ++item) {
      const LaneGroup<T> g = lane_group<T>(s, item);
      LaneSums<T> sums;  // softmax: <s, g> per lane; log_softmax: sum(g) per lane
      for (int64_t c = 0; c < s.C; ++c) {
        const int64_t off = g.base + c * s.inner;
        const auto vg = load_lanes(gr + off, g.lanes);
        sums.add(kKind == Kind::kSoftmax ? hn::Mul(load_lanes(out + off, g.lanes), vg) : vg);
      }
      sums.flush();
      HWY_ALIGN T reduced[kMaxLanes] = {};
      for (int64_t l = 0; l < g.lanes; ++l) reduced[l] = static_cast<T>(sums.sum[l]);
      const auto vred = hn::Load(d, reduced);
      for (int64_t c = 0; c < s.C; ++c) {
        const int64_t off = g.base + c * s.inner;
        const auto vo = load_lanes(out + off, g.lanes), vg = load_lanes(gr + off, g.lanes);
        if constexpr (kKind == Kind::kSoftmax)
          store_lanes(hn::Mul(vo, hn::Sub(vg, vred)), dx + off, g.lanes);
        else
          store_lanes(hn::NegMulAdd(simd::Exp(d, vo), vred, vg), dx + off, g.lanes);
      }
    }
  });
}

template <Kind kKind, typename T> void forward(const T* x, T* y, RowsShape s) {
  if (s.rows() == 0 || s.C == 0) return;
  if (s.inner > 1) return forward_inner<kKind>(x, y, s);
  if (should_stream(y, s)) return forward_rows<kKind, true>(x, y, s.outer, s.C);
  forward_rows<kKind, false>(x, y, s.outer, s.C);
}

template <Kind kKind, typename T> void backward(const T* out, const T* g, T* dx, RowsShape s) {
  if (s.rows() == 0 || s.C == 0) return;
  if (s.inner > 1) return backward_inner<kKind>(out, g, dx, s);
  if (should_stream(dx, s)) return backward_rows<kKind, true>(out, g, dx, s.outer, s.C);
  backward_rows<kKind, false>(out, g, dx, s.outer, s.C);
}

// ---- naive references: scalar, three passes, sums in long double -----------------------

template <typename T> MaxSum<T> naive_max_sum(const T* x, int64_t n, int64_t stride) {
  T m = kLowest<T>;
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    nan |= std::isnan(x[i * stride]);
    m = std::max(m, x[i * stride]);
  }
  if (nan) return {m, kNaN};
  long double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += m == kInf<T> ? (x[i * stride] == m) : std::exp((long double)x[i * stride] - m);
  return {m, static_cast<double>(sum)};
}

template <typename T, class RowFn> void naive_rows(RowsShape s, RowFn fn) {
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < s.inner; ++j) fn(o * s.C * s.inner + j);
}

}  // namespace

// ---- building blocks ---------------------------------------------------------------------

template <typename T> MaxSum<T> row_max_sum(const T* x, int64_t n) {
  return settle_infinite_max(x, n, 1, online_max_sum<false, T>(x, n, nullptr, nullptr));
}

template <typename T> MaxSum<T> merge(MaxSum<T> a, MaxSum<T> b) {
  if (std::isnan(a.sum) || std::isnan(b.sum)) return {std::max(a.max, b.max), kNaN};
  const T m = std::max(a.max, b.max);
  if (m == kInf<T>)  // the sums count +inf entries
    return {m, (a.max == m ? a.sum : 0.0) + (b.max == m ? b.sum : 0.0)};
  const double dm = m;
  return {m, a.sum * std::exp(a.max - dm) + b.sum * std::exp(b.max - dm)};
}

template <typename T> T log_sum_exp(MaxSum<T> ms) {
  if (std::isnan(ms.sum)) return std::numeric_limits<T>::quiet_NaN();
  if (ms.sum == 0) return -kInf<T>;
  if (ms.max == kInf<T>) return kInf<T>;
  return static_cast<T>(static_cast<double>(ms.max) + std::log(ms.sum));
}

template <typename T> T log_softmax_entry(T x, MaxSum<T> ms) {
  if (std::isnan(ms.sum) || std::isnan(x)) return std::numeric_limits<T>::quiet_NaN();
  if (ms.sum == 0) return -kInf<T>;
  if (ms.max == kInf<T>) return x == kInf<T> ? static_cast<T>(-std::log(ms.sum)) : -kInf<T>;
  return static_cast<T>((static_cast<double>(x) - ms.max) - std::log(ms.sum));
}

template <typename T> T softmax_entry(T x, MaxSum<T> ms) {
  if (std::isnan(ms.sum) || std::isnan(x)) return std::numeric_limits<T>::quiet_NaN();
  if (ms.sum == 0) return 0;
  if (ms.max == kInf<T>) return x == kInf<T> ? static_cast<T>(1.0 / ms.sum) : T(0);
  return static_cast<T>(std::exp(static_cast<double>(x) - ms.max) / ms.sum);
}

// ---- kernels -----------------------------------------------------------------------------

template <typename T> void softmax_forward(const T* x, T* y, RowsShape s) { forward<Kind::kSoftmax>(x, y, s); }
template <typename T> void log_softmax_forward(const T* x, T* y, RowsShape s) {
  forward<Kind::kLogSoftmax>(x, y, s);
}
template <typename T> void softmax_backward(const T* s_, const T* g, T* dx, RowsShape s) {
  backward<Kind::kSoftmax>(s_, g, dx, s);
}
template <typename T> void log_softmax_backward(const T* y, const T* g, T* dx, RowsShape s) {
  backward<Kind::kLogSoftmax>(y, g, dx, s);
}

template <typename T> void softmax_forward_naive(const T* x, T* y, RowsShape s) {
  naive_rows<T>(s, [&](int64_t r) {
    const MaxSum<T> ms = naive_max_sum(x + r, s.C, s.inner);
    softmax_edge_row(x + r, y + r, s.C, s.inner, ms);
  });
}
template <typename T> void log_softmax_forward_naive(const T* x, T* y, RowsShape s) {
  naive_rows<T>(s, [&](int64_t r) {
    const MaxSum<T> ms = naive_max_sum(x + r, s.C, s.inner);
    log_softmax_edge_row(x + r, y + r, s.C, s.inner, ms);
  });
}
template <typename T> void softmax_backward_naive(const T* s_, const T* g, T* dx, RowsShape s) {
  naive_rows<T>(s, [&](int64_t r) {
    long double dot = 0;
    for (int64_t c = 0; c < s.C; ++c) dot += (long double)s_[r + c * s.inner] * g[r + c * s.inner];
    for (int64_t c = 0; c < s.C; ++c) {
      const int64_t i = r + c * s.inner;
      dx[i] = static_cast<T>(s_[i] * (g[i] - dot));
    }
  });
}
template <typename T> void log_softmax_backward_naive(const T* y, const T* g, T* dx, RowsShape s) {
  naive_rows<T>(s, [&](int64_t r) {
    long double sum = 0;
    for (int64_t c = 0; c < s.C; ++c) sum += g[r + c * s.inner];
    for (int64_t c = 0; c < s.C; ++c) {
      const int64_t i = r + c * s.inner;
      dx[i] = static_cast<T>(g[i] - std::exp((long double)y[i]) * sum);
    }
  });
}

#define SG_INSTANTIATE_SOFTMAX_KERNELS(T)                                              \
  template void softmax_forward<T>(const T*, T*, RowsShape);                           \
  template void log_softmax_forward<T>(const T*, T*, RowsShape);                       \
  template void softmax_backward<T>(const T*, const T*, T*, RowsShape);                \
  template void log_softmax_backward<T>(const T*, const T*, T*, RowsShape);            \
  template void softmax_forward_naive<T>(const T*, T*, RowsShape);                     \
  template void log_softmax_forward_naive<T>(const T*, T*, RowsShape);                 \
  template void softmax_backward_naive<T>(const T*, const T*, T*, RowsShape);          \
  template void log_softmax_backward_naive<T>(const T*, const T*, T*, RowsShape);      \
  template MaxSum<T> row_max_sum<T>(const T*, int64_t);                                \
  template MaxSum<T> merge<T>(MaxSum<T>, MaxSum<T>);                                   \
  template T log_sum_exp<T>(MaxSum<T>);                                                \
  template T log_softmax_entry<T>(T, MaxSum<T>);                                       \
  template T softmax_entry<T>(T, MaxSum<T>);
SG_INSTANTIATE_SOFTMAX_KERNELS(float)
SG_INSTANTIATE_SOFTMAX_KERNELS(double)
#undef SG_INSTANTIATE_SOFTMAX_KERNELS

}  // namespace sg::kernels
