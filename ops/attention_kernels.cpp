// Kernels of scaled_dot_product_attention (see ops/attention_kernels.h for the recurrences,
// layouts and rules). Tile products run on ops/tile_gemm.h (register-blocked, reading A
// through any strides, so P^T and dS^T are free; only K^T and V^T are packed); the row work
// between them (mask, max, exp, sums) is Highway vector code on a tile that stays in L1/L2.
// Under autocast the same sweeps run their products on ops/tile_gemm_bf16.h instead.
#include "ops/attention_kernels.h"

#include <hwy/highway.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/scratch.h"
#include "core/simd_exp.h"
#include "core/simd_partial.h"
#include "ops/tile_gemm.h"
#include "ops/tile_gemm_bf16.h"

namespace sg::kernels {
namespace hn = hwy::HWY_NAMESPACE;

namespace {

// Tile sizes: a (kTileQ, kTileK) tile of S is 64 KB in float32 and stays in L2 with the
// K/V tile it came from.
constexpr int64_t kTileQ = 128;  // Br: query rows per tile
constexpr int64_t kTileK = 128;  // Bc: key/value rows per tile
// Row strides of the tiles and packed operands are padded by 16 elements (a cache line of
// float, two of double): with a power-of-two stride (512 B, 4 KB) the rows of a tile map to
// a few L1 sets and evict each other while the product walks down them.
constexpr int64_t kPad = 16;
constexpr int64_t kLdTile = kTileK + kPad;
// Below this many multiply-adds in all, one thread is faster than waking the others.
constexpr int64_t kSerialMacs = int64_t{1} << 18;

template <typename T> constexpr T kInf = std::numeric_limits<T>::infinity();
template <typename T> using Tag = hn::ScalableTag<T>;

// ---- row operations on one tile row of n elements ----

template <typename T> T row_max(const T* x, int64_t n) {
  const Tag<T> d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  auto acc = hn::Set(d, -kInf<T>);
  int64_t i = 0;
  for (; i + L <= n; i += L) acc = hn::Max(acc, hn::LoadU(d, x + i));
  T m = hn::GetLane(hn::MaxOfLanes(d, acc));
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// x = exp((x - max) - log_sum) for x <= max, log_sum >= 0 (every exponent is <= 0; masked
// -inf entries give 0); returns the sum of the new x when kSum. The two shifts are applied
// one after the other: x - max is exact when x is near a huge max, and log_sum survives.
template <bool kSum, typename T> T exp_shifted(T* x, int64_t n, T max, T log_sum = T(0)) {
  const Tag<T> d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  const auto vmax = hn::Set(d, max), vlog_sum = hn::Set(d, log_sum);
  auto acc = hn::Zero(d);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const auto e = simd::ExpNonPositive(d, hn::Sub(hn::Sub(hn::LoadU(d, x + i), vmax), vlog_sum));
    hn::StoreU(e, d, x + i);
    if constexpr (kSum) acc = hn::Add(acc, e);
  }
  if (i < n) {  // the tail: one partial vector
    const size_t left = static_cast<size_t>(n - i);
    const auto e = hn::IfThenElseZero(
        hn::FirstN(d, left),
        simd::ExpNonPositive(d, hn::Sub(hn::Sub(simd::LoadFirstN(d, x + i, left), vmax), vlog_sum)));
    simd::StoreFirstN(e, d, x + i, left);
    if constexpr (kSum) acc = hn::Add(acc, e);
  }
  if constexpr (kSum) return hn::GetLane(hn::SumOfLanes(d, acc));
  return T(0);
}

template <typename T> void scale_row(T* x, int64_t n, T factor) {
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;  // n = Dv: the compiler vectorizes it
}

// ds = p * (dp - delta), in place over dp.
template <typename T> void softmax_vjp_row(const T* p, T* dp, int64_t n, T delta) {
  for (int64_t i = 0; i < n; ++i) dp[i] = p[i] * (dp[i] - delta);
}

template <typename T> T dot(const T* a, const T* b, int64_t n) {
  const Tag<T> d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  auto acc = hn::Zero(d);
  int64_t i = 0;
  for (; i + L <= n; i += L) acc = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), acc);
  T s = hn::GetLane(hn::SumOfLanes(d, acc));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// dst (cols, rows) = src (rows, cols)^T; src rows ld_src apart, dst rows ld_dst apart.
template <typename T> void transpose(const T* src, int64_t rows, int64_t cols, int64_t ld_src, T* dst, int64_t ld_dst) {
  constexpr int64_t kBlock = 16;  // 16 x 16 blocks: both sides touch whole cache lines
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock)
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock)
      for (int64_t r = r0; r < std::min(rows, r0 + kBlock); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kBlock); ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
}

// The tile product: tile_gemm, or its bfloat16 form when the params ask for it.
template <typename T>
using TileProduct = void (*)(int64_t, int64_t, int64_t, T, const T*, int64_t, int64_t, const T*, int64_t, bool, T*,
                             int64_t);
template <typename T> TileProduct<T> tile_product(const AttentionParams<T>& p) {
  if constexpr (std::is_same_v<T, float>)
    if (p.bf16_products) return tile_gemm_bf16;
  return tile_gemm<T>;
}

// ---- one tile of S: (br, bc) at query row i0, key row j0 of head (b, h) ----

// S += mask; S = -inf where the mask is false or j > i under causality.
template <typename T>
void apply_masks(T* S, int64_t ldS, int64_t br, int64_t bc, int64_t b, int64_t h, int64_t i0, int64_t j0,
                 const AttentionParams<T>& p) {
  const MaskView& m = p.mask;
  if (m.kind != MaskKind::kNone) {
    for (int64_t r = 0; r < br; ++r) {
      T* s = S + r * ldS;
      const int64_t at = b * m.sb + h * m.sh + (i0 + r) * m.si + j0 * m.sj;
      if (m.kind == MaskKind::kBool) {
        const bool* keep = static_cast<const bool*>(m.data) + at;
        if (m.sj == 1) {
          for (int64_t c = 0; c < bc; ++c) s[c] = keep[c] ? s[c] : -kInf<T>;
        } else {
          for (int64_t c = 0; c < bc; ++c) s[c] = keep[c * m.sj] ? s[c] : -kInf<T>;
        }
      } else {
        const T* add = static_cast<const T*>(m.data) + at;
        if (m.sj == 1) {
          for (int64_t c = 0; c < bc; ++c) s[c] += add[c];
        } else {
          for (int64_t c = 0; c < bc; ++c) s[c] += add[c * m.sj];
        }
      }
    }
  }
  if (p.causal && j0 + bc - 1 > i0) {  // the tile reaches past the diagonal
    for (int64_t r = 0; r < br; ++r) {
      const int64_t first_masked = std::max<int64_t>(0, i0 + r + 1 - j0);
      std::fill(S + r * ldS + std::min(first_masked, bc), S + r * ldS + bc, -kInf<T>);
    }
  }
}

// X *= keep / (1 - p) with the counter-based keep decisions of this tile.
template <typename T>
void apply_dropout(T* X, int64_t ldX, int64_t br, int64_t bc, int64_t b, int64_t h, int64_t i0, int64_t j0,
                   const AttentionParams<T>& p, AttentionDims d) {
  const uint32_t threshold = dropout_threshold(p.dropout_p);
  const T keep_scale = static_cast<T>(dropout_keep_scale(threshold));
  for (int64_t r = 0; r < br; ++r) {
    T* x = X + r * ldX;
    const uint64_t base = static_cast<uint64_t>(((b * d.H + h) * d.Nq + i0 + r) * d.Nk + j0);
    for (int64_t c = 0; c < bc; ++c)
      x[c] *= dropout_keep(p.dropout_seed, base + static_cast<uint64_t>(c), threshold) ? keep_scale : T(0);
  }
}

// The thread count for a problem of `macs` multiply-adds split into `items`.
int threads_for(int64_t macs, int64_t items) {
  if (omp_in_parallel() || macs < kSerialMacs) return 1;
  return static_cast<int>(std::clamp<int64_t>(items, 1, omp_get_max_threads()));
}

// ---- forward ----

// Rows [i0, i0 + br) of head (b, h): the online-softmax sweep over the K/V tiles.
// kt: every head's K^T, (B * H, D, ld_kt).
template <typename T>
void forward_q_tile(HeadsView<T> q, const T* kt, HeadsView<T> v, const AttentionParams<T>& p, AttentionDims d,
                    int64_t b, int64_t h, int64_t i0, int64_t br, T* out, T* row_stats, int64_t ld_kt) {
  constexpr int64_t ldS = kLdTile;
  T* S = thread_scratch<T>(kTileQ * ldS, 0);  // (br, bc): scores, then P in place
  T* m = thread_scratch<T>(kTileQ, 1);           // running row max
  T* l = thread_scratch<T>(kTileQ, 2);           // running row sum of exp(S - m)
  const T* Q = q.head(b, h) + i0 * q.ld;  // (br, D)
  const T* Kt = kt + (b * d.H + h) * d.D * ld_kt;  // (D, Nk), rows ld_kt apart
  const T* V = v.head(b, h);                       // (Nk, Dv)
  T* O = out + ((b * d.H + h) * d.Nq + i0) * d.Dv;  // (br, Dv), unnormalized until the end
  const TileProduct<T> product = tile_product(p);
  std::fill(m, m + br, -kInf<T>);
  std::fill(l, l + br, T(0));
  std::fill(O, O + br * d.Dv, T(0));

  // Under causality no row of this tile sees a key past its last row.
  const int64_t j_end = p.causal ? std::min(d.Nk, i0 + br) : d.Nk;
  for (int64_t j0 = 0; j0 < j_end; j0 += kTileK) {
    const int64_t bc = std::min(kTileK, j_end - j0);
    product(br, bc, d.D, p.scale, Q, q.ld, 1, Kt + j0, ld_kt, false, S, ldS);  // S = s Q K_j^T
    apply_masks(S, ldS, br, bc, b, h, i0, j0, p);
    for (int64_t r = 0; r < br; ++r) {
      T* s = S + r * ldS;
      const T m_new = std::max(m[r], row_max(s, bc));
      if (m_new == -kInf<T>) {  // every key so far masked (or NaN): nothing to add
        if (std::any_of(s, s + bc, [](T x) { return std::isnan(x); })) l[r] = std::numeric_limits<T>::quiet_NaN();
        std::fill(s, s + bc, T(0));
        continue;
      }
      const T sum = exp_shifted<true>(s, bc, m_new);
      if (m_new == m[r]) {  // the common case after the first tiles: nothing to rescale
        l[r] += sum;
        continue;
      }
      const T alpha = std::exp(m[r] - m_new);  // rescales the old sum and output (0 from -inf)
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      scale_row(O + r * d.Dv, d.Dv, alpha);
    }
    if (p.dropout_p > 0) apply_dropout(S, ldS, br, bc, b, h, i0, j0, p, d);
    product(br, d.Dv, bc, T(1), S, ldS, 1, V + j0 * v.ld, v.ld, true, O, d.Dv);  // O += P V_j
  }
  const int64_t rows = d.B * d.H * d.Nq, first_row = (b * d.H + h) * d.Nq + i0;
  T* row_max = row_stats + first_row;
  T* row_log_sum = row_stats + rows + first_row;
  for (int64_t r = 0; r < br; ++r) {
    T* o = O + r * d.Dv;
    row_max[r] = m[r];
    if (l[r] == T(0)) {  // a fully masked row: no mass, zero output, no gradient
      std::fill(o, o + d.Dv, T(0));
      row_log_sum[r] = kInf<T>;
    } else {
      scale_row(o, d.Dv, T(1) / l[r]);
      row_log_sum[r] = std::log(l[r]);
    }
  }
}

// ---- backward ----

// Keys [j0, j0 + bc) of head (b, h) against every query tile that sees them: writes dK_j
// and dV_j (owned by this call) and adds into dq_head (Nq, D), which the caller makes
// private to the thread; dq_zero says dq_head holds no values yet (then this call, which
// must see every query tile, writes it instead of adding).
template <typename T>
void backward_kv_tile(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p, AttentionDims d,
                      int64_t b, int64_t h, int64_t j0, int64_t bc, const T* dout, const T* row_stats, const T* delta,
                      T* dq_head, bool dq_zero, T* dk, T* dv) {
  constexpr int64_t ldS = kLdTile;
  T* P = thread_scratch<T>(kTileQ * ldS, 0);   // (br, bc) probabilities
  T* dP = thread_scratch<T>(kTileQ * ldS, 1);  // (br, bc) dP, then dS in place
  T* Pdrop = p.dropout_p > 0 ? thread_scratch<T>(kTileQ * ldS, 2) : P;  // dropout(P)
  T* KVt = thread_scratch<T>((d.D + d.Dv) * ldS, 3);                    // K_j^T, then V_j^T
  const int64_t bh = b * d.H + h;
  const T* Kj = k.head(b, h) + j0 * k.ld;  // (bc, D)
  const T* Vj = v.head(b, h) + j0 * v.ld;  // (bc, Dv)
  T* Kjt = KVt;              // (D, bc), rows ldS apart
  T* Vjt = KVt + d.D * ldS;  // (Dv, bc)
  transpose(Kj, bc, d.D, k.ld, Kjt, ldS);
  transpose(Vj, bc, d.Dv, v.ld, Vjt, ldS);
  T* dKj = dk + (bh * d.Nk + j0) * d.D;    // (bc, D)
  T* dVj = dv + (bh * d.Nk + j0) * d.Dv;   // (bc, Dv)
  const TileProduct<T> product = tile_product(p);

  // Under causality the query tiles above key row j0 see none of these keys.
  const int64_t i_begin = p.causal ? (j0 / kTileQ) * kTileQ : 0;
  bool first = true;  // dK_j, dV_j hold no values yet
  for (int64_t i0 = i_begin; i0 < d.Nq; i0 += kTileQ, first = false) {
    const int64_t br = std::min(kTileQ, d.Nq - i0);
    const T* Qi = q.head(b, h) + i0 * q.ld;              // (br, D)
    const T* dOi = dout + (bh * d.Nq + i0) * d.Dv;       // (br, Dv)
    const T* Mi = row_stats + bh * d.Nq + i0;                         // (br) row max
    const T* LogLi = row_stats + d.B * d.H * d.Nq + bh * d.Nq + i0;   // (br) log row sum
    const T* Di = delta + bh * d.Nq + i0;                // (br)
    T* dQi = dq_head + i0 * d.D;                         // (br, D)

    product(br, bc, d.D, p.scale, Qi, q.ld, 1, Kjt, ldS, false, P, ldS);  // S = s Q_i K_j^T
    apply_masks(P, ldS, br, bc, b, h, i0, j0, p);
    for (int64_t r = 0; r < br; ++r) {
      if (LogLi[r] == kInf<T>)  // fully masked row
        std::fill(P + r * ldS, P + r * ldS + bc, T(0));
      else
        exp_shifted<false>(P + r * ldS, bc, Mi[r], LogLi[r]);
    }
    if (p.dropout_p > 0) {
      for (int64_t r = 0; r < br; ++r) std::copy(P + r * ldS, P + r * ldS + bc, Pdrop + r * ldS);
      apply_dropout(Pdrop, ldS, br, bc, b, h, i0, j0, p, d);
    }
    product(bc, d.Dv, br, T(1), Pdrop, 1, ldS, dOi, d.Dv, !first, dVj, d.Dv);  // dV_j += P'^T dO_i
    product(br, bc, d.Dv, T(1), dOi, d.Dv, 1, Vjt, ldS, false, dP, ldS);       // dP' = dO_i V_j^T
    if (p.dropout_p > 0) apply_dropout(dP, ldS, br, bc, b, h, i0, j0, p, d);            // dP = dP' * keep/(1-p)
    for (int64_t r = 0; r < br; ++r) softmax_vjp_row(P + r * ldS, dP + r * ldS, bc, Di[r]);
    product(br, d.D, bc, p.scale, dP, ldS, 1, Kj, k.ld, !dq_zero, dQi, d.D);  // dQ_i += s dS K_j
    product(bc, d.D, br, p.scale, dP, 1, ldS, Qi, q.ld, !first, dKj, d.D);    // dK_j += s dS^T Q_i
  }
  if (first) {  // no query sees these keys
    std::fill(dKj, dKj + bc * d.D, T(0));
    std::fill(dVj, dVj + bc * d.Dv, T(0));
  }
}

// How backward spreads over the threads: heads in parallel, each over all its key tiles and
// writing dq directly, when they spread evenly; otherwise key tiles in parallel, each thread
// adding into a private dq (O(N) memory) that is summed at the end.
struct BackwardSplit {
  int threads = 1;
  bool by_head = true;
};
BackwardSplit plan_backward(AttentionDims d) {
  const int64_t BH = d.B * d.H, k_tiles = (d.Nk + kTileK - 1) / kTileK;
  BackwardSplit s;
  s.threads = threads_for(BH * d.Nq * d.Nk * (2 * d.D + 2 * d.Dv), BH * k_tiles);
  s.by_head = s.threads == 1 || BH % s.threads == 0 || BH >= 4 * s.threads;
  return s;
}

// Row stride of the packed K^T: Nk rounded up to kPad, plus kPad.
int64_t kt_stride(AttentionDims d) { return (d.Nk + kPad - 1) / kPad * kPad + kPad; }

}  // namespace

int64_t attention_forward_workspace(AttentionDims d) { return d.B * d.H * d.D * kt_stride(d); }

int64_t attention_backward_workspace(AttentionDims d) {
  const BackwardSplit s = plan_backward(d);
  const int64_t rows = d.B * d.H * d.Nq;
  return rows + (s.by_head ? 0 : s.threads * rows * d.D);
}

template <typename T>
void attention_forward(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                       AttentionDims d, T* out, T* row_stats, T* workspace) {
  const int64_t BH = d.B * d.H, q_tiles = (d.Nq + kTileQ - 1) / kTileQ;
  const int64_t items = BH * q_tiles;
  const int threads = threads_for(BH * d.Nq * d.Nk * (d.D + d.Dv), items);
  const int64_t ld_kt = kt_stride(d);
  T* kt = workspace;  // (B * H, D, ld_kt): every head's K^T, the layout the S products read
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < BH; ++bh)
      transpose(k.head(bh / d.H, bh % d.H), d.Nk, d.D, k.ld, kt + bh * d.D * ld_kt, ld_kt);
    // Dynamic, last query tile first: under causality the later tiles cost the most.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t bh = item / q_tiles, qt = q_tiles - 1 - item % q_tiles;
      const int64_t i0 = qt * kTileQ;
      forward_q_tile(q, kt, v, p, d, bh / d.H, bh % d.H, i0, std::min(kTileQ, d.Nq - i0), out, row_stats, ld_kt);
    }
  }
}

template <typename T>
void attention_backward(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                        AttentionDims d, const T* out, const T* dout, const T* row_stats, T* dq, T* dk, T* dv,
                        T* workspace) {
  const int64_t BH = d.B * d.H, rows = BH * d.Nq;
  const int64_t k_tiles = (d.Nk + kTileK - 1) / kTileK;
  if (rows == 0 || d.Nk == 0) {  // no keys, or no queries: every gradient is 0
    std::fill(dq, dq + rows * d.D, T(0));
    std::fill(dk, dk + BH * d.Nk * d.D, T(0));
    std::fill(dv, dv + BH * d.Nk * d.Dv, T(0));
    return;
  }
  const BackwardSplit split = plan_backward(d);
  T* delta = workspace;               // (B, H, Nq): rowsum(dO * O) = rowsum(P * dP)
  T* dq_private = workspace + rows;   // (threads, B * H * Nq, D) when key tiles are split
#pragma omp parallel num_threads(split.threads) if (split.threads > 1)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) delta[r] = dot(dout + r * d.Dv, out + r * d.Dv, d.Dv);
    if (split.by_head) {
      // Dynamic: each head is one thread's work whichever thread takes it, so the result
      // does not depend on the schedule, and a thread on a slower core (this VM's two
      // vCPUs often run at different speeds) takes fewer heads.
#pragma omp for schedule(dynamic, 1)
      for (int64_t bh = 0; bh < BH; ++bh)
        for (int64_t j0 = 0; j0 < d.Nk; j0 += kTileK)
          backward_kv_tile(q, k, v, p, d, bh / d.H, bh % d.H, j0, std::min(kTileK, d.Nk - j0), dout, row_stats, delta,
                           dq + bh * d.Nq * d.D, /*dq_zero=*/j0 == 0, dk, dv);
    } else {
      // Static, so that which key tiles add into which private dq, and so the rounding of
      // their sum, is the same from run to run.
      // The team may be smaller than split.threads (OMP_DYNAMIC, a thread limit): only the
      // buffers of threads that run are used, and summed.
      const int team = omp_get_num_threads();
      T* mine = dq_private + omp_get_thread_num() * rows * d.D;
      std::fill(mine, mine + rows * d.D, T(0));
#pragma omp for schedule(static, 1)
      for (int64_t item = 0; item < BH * k_tiles; ++item) {
        const int64_t bh = item / k_tiles, j0 = (item % k_tiles) * kTileK;
        backward_kv_tile(q, k, v, p, d, bh / d.H, bh % d.H, j0, std::min(kTileK, d.Nk - j0), dout, row_stats, delta,
                         mine + bh * d.Nq * d.D, /*dq_zero=*/false, dk, dv);
      }
#pragma omp for schedule(static)
      for (int64_t i = 0; i < rows * d.D; ++i) {
        T s = 0;
        for (int t = 0; t < team; ++t) s += dq_private[t * rows * d.D + i];
        dq[i] = s;
      }
    }
  }
}

// ---- naive references ----

namespace {

// One head's scores row i in double: scale * q_i . k_j + mask, -inf where masked.
template <typename T>
void naive_scores(HeadsView<T> q, HeadsView<T> k, const AttentionParams<T>& p, AttentionDims d, int64_t b,
                  int64_t h, int64_t i, std::vector<double>& s) {
  const T* qi = q.head(b, h) + i * q.ld;
  for (int64_t j = 0; j < d.Nk; ++j) {
    const T* kj = k.head(b, h) + j * k.ld;
    double acc = 0;
    for (int64_t c = 0; c < d.D; ++c) acc += static_cast<double>(qi[c]) * static_cast<double>(kj[c]);
    s[j] = static_cast<double>(p.scale) * acc;
    const MaskView& m = p.mask;
    const int64_t at = b * m.sb + h * m.sh + i * m.si + j * m.sj;
    if (m.kind == MaskKind::kBool && !static_cast<const bool*>(m.data)[at]) s[j] = -kInf<double>;
    if (m.kind == MaskKind::kAdditive) s[j] += static_cast<double>(static_cast<const T*>(m.data)[at]);
    if (p.causal && j > i) s[j] = -kInf<double>;
  }
}

// P row (softmax of s) in place, and the row's max and log of its sum of exp(s - max);
// false for a fully masked row (P = 0 then, log_sum = +inf). A NaN score makes the whole
// row NaN.
bool naive_softmax(std::vector<double>& s, double* max, double* log_sum) {
  if (std::any_of(s.begin(), s.end(), [](double x) { return std::isnan(x); })) {
    std::fill(s.begin(), s.end(), std::numeric_limits<double>::quiet_NaN());
    *max = *log_sum = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  double m = -kInf<double>;
  for (double x : s) m = std::max(m, x);
  *max = m;
  if (m == -kInf<double>) {
    std::fill(s.begin(), s.end(), 0.0);
    *log_sum = kInf<double>;
    return false;
  }
  double l = 0;
  for (double& x : s) l += (x = std::exp(x - m));
  for (double& x : s) x /= l;
  *log_sum = std::log(l);
  return true;
}

// The dropout factor keep / (1 - p) of entry (b, h, i, j).
template <typename T> double naive_dropout(const AttentionParams<T>& p, AttentionDims d, int64_t b, int64_t h,
                                           int64_t i, int64_t j) {
  if (p.dropout_p <= 0) return 1.0;
  const uint64_t index = static_cast<uint64_t>(((b * d.H + h) * d.Nq + i) * d.Nk + j);
  const uint32_t threshold = dropout_threshold(p.dropout_p);
  return dropout_keep(p.dropout_seed, index, threshold) ? dropout_keep_scale(threshold) : 0.0;
}

}  // namespace

template <typename T>
void attention_forward_naive(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                             AttentionDims d, T* out, T* row_stats) {
  std::vector<double> s(static_cast<size_t>(d.Nk));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t i = 0; i < d.Nq; ++i) {
        const int64_t row = (b * d.H + h) * d.Nq + i;
        naive_scores(q, k, p, d, b, h, i, s);
        double max, log_sum;
        naive_softmax(s, &max, &log_sum);
        row_stats[row] = static_cast<T>(max);
        row_stats[d.B * d.H * d.Nq + row] = static_cast<T>(log_sum);
        for (int64_t c = 0; c < d.Dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < d.Nk; ++j)
            acc += s[j] * naive_dropout(p, d, b, h, i, j) * static_cast<double>(v.head(b, h)[j * v.ld + c]);
          out[row * d.Dv + c] = static_cast<T>(acc);
        }
      }
}

template <typename T>
void attention_backward_naive(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                              AttentionDims d, const T* dout, T* dq, T* dk, T* dv) {
  std::vector<double> P(static_cast<size_t>(d.Nk)), dP(static_cast<size_t>(d.Nk));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t bh = b * d.H + h;
      std::vector<double> gq(static_cast<size_t>(d.Nq * d.D)), gk(static_cast<size_t>(d.Nk * d.D)),
          gv(static_cast<size_t>(d.Nk * d.Dv));
      const T* Q = q.head(b, h);
      const T* K = k.head(b, h);
      const T* V = v.head(b, h);
      for (int64_t i = 0; i < d.Nq; ++i) {
        const T* g = dout + (bh * d.Nq + i) * d.Dv;
        naive_scores(q, k, p, d, b, h, i, P);
        double unused_max, unused_log_sum;
        naive_softmax(P, &unused_max, &unused_log_sum);
        double sum_p_dp = 0;
        for (int64_t j = 0; j < d.Nk; ++j) {
          const double z = naive_dropout(p, d, b, h, i, j);
          double g_dot_v = 0;
          for (int64_t c = 0; c < d.Dv; ++c) {
            gv[j * d.Dv + c] += P[j] * z * static_cast<double>(g[c]);
            g_dot_v += static_cast<double>(g[c]) * static_cast<double>(V[j * v.ld + c]);
          }
          dP[j] = g_dot_v * z;
          sum_p_dp += P[j] * dP[j];
        }
        for (int64_t j = 0; j < d.Nk; ++j) {
          const double ds = P[j] * (dP[j] - sum_p_dp) * static_cast<double>(p.scale);
          for (int64_t c = 0; c < d.D; ++c) {
            gq[i * d.D + c] += ds * static_cast<double>(K[j * k.ld + c]);
            gk[j * d.D + c] += ds * static_cast<double>(Q[i * q.ld + c]);
          }
        }
      }
      std::transform(gq.begin(), gq.end(), dq + bh * d.Nq * d.D, [](double x) { return static_cast<T>(x); });
      std::transform(gk.begin(), gk.end(), dk + bh * d.Nk * d.D, [](double x) { return static_cast<T>(x); });
      std::transform(gv.begin(), gv.end(), dv + bh * d.Nk * d.Dv, [](double x) { return static_cast<T>(x); });
    }
}

#define SG_INSTANTIATE_ATTENTION(T)                                                                          \
  template void attention_forward<T>(HeadsView<T>, HeadsView<T>, HeadsView<T>, const AttentionParams<T>&,   \
                                     AttentionDims, T*, T*, T*);                                              \
  template void attention_backward<T>(HeadsView<T>, HeadsView<T>, HeadsView<T>, const AttentionParams<T>&,  \
                                      AttentionDims, const T*, const T*, const T*, T*, T*, T*, T*);           \
  template void attention_forward_naive<T>(HeadsView<T>, HeadsView<T>, HeadsView<T>,                        \
                                           const AttentionParams<T>&, AttentionDims, T*, T*);                 \
  template void attention_backward_naive<T>(HeadsView<T>, HeadsView<T>, HeadsView<T>,                       \
                                            const AttentionParams<T>&, AttentionDims, const T*, T*, T*, T*);
SG_INSTANTIATE_ATTENTION(float)
SG_INSTANTIATE_ATTENTION(double)
#undef SG_INSTANTIATE_ATTENTION

}  // namespace sg::kernels
