#pragma once
// Kernels of scaled_dot_product_attention, apart from the graph wiring in ops/attention.cpp.
// They take raw pointers and strides and know nothing about Tensor.
//
// Letters: B batch, H heads, Nq query rows, Nk key/value rows, D the q/k head dim, Dv the
// v head dim. S = scale * Q K^T + mask (Nq, Nk) per head, P = softmax(S) along keys,
// O = dropout(P) V. The fused kernels never hold more than one (Br, Bc) tile of S:
//
// forward (seed note 5.3, FlashAttention's recurrence), per (b, h, q-tile of Br rows):
//   m = -inf, l = 0, O = 0
//   for each K/V tile j of Bc rows:
//     S_j   = scale * Q K_j^T + mask                  (tile_gemm)
//     m'    = max(m, rowmax S_j)
//     P_j   = exp(S_j - m'),  l = l * exp(m - m') + rowsum P_j
//     O     = O * exp(m - m') + dropout(P_j) V_j      (tile_gemm, accumulating)
//     m     = m'
//   O /= l;  save m and log l                         (for backward)
// backward (the analytic VJP), per (b, h, K/V tile j):
//   Delta = rowsum(dO * O)                            (one pass before the tiles)
//   for each q-tile i:
//     P    = exp((scale * Q_i K_j^T + mask - m_i) - log l_i)   (recomputed, never stored)
//     dV_j += dropout(P)^T dO_i
//     dP   = dropout'(dO_i V_j^T)
//     dS   = P * (dP - Delta_i)
//     dQ_i += scale * dS K_j,   dK_j += scale * dS^T Q_i
//
// Rules shared by the fused and the naive kernels:
//   * causal is aligned top-left as in PyTorch: query row i attends to keys j <= i;
//   * a query row with every key masked (by the mask, by causality, or Nk = 0) has no
//     probability mass: its output row is 0, its log l is +inf, and it passes no gradient
//     (PyTorch's math path returns NaN there);
//   * NOTE: the row statistic is kept as two numbers, m and log l, never as their sum
//     lse = m + log l (FlashAttention's L): under an additive mask of -1e9 (or -1e30, or
//     float32's lowest) on a whole row, m is that huge value and m + log l rounds to m, so
//     log l would be lost and every recomputed P of the row would be 1 instead of 1/Nk.
//   * dropout keeps P[b, h, i, j] when dropout_keep(seed, index) says so, index =
//     ((b * H + h) * Nq + i) * Nk + j, and scales kept entries by 1 / (keep probability)
//     (1 / (1 - p) up to the 2^-24 steps of the threshold); backward regenerates the same
//     decisions from the seed instead of storing them.
#include <cstdint>

namespace sg::kernels {

struct AttentionDims {
  int64_t B = 1, H = 1, Nq = 0, Nk = 0, D = 1, Dv = 1;
};

// One operand seen as (B, H, rows, cols) with unit column stride: element (b, h, r, c) is
// at data[b * sb + h * sh + r * ld + c].
template <typename T> struct HeadsView {
  const T* data = nullptr;
  int64_t sb = 0, sh = 0, ld = 0;
  const T* head(int64_t b, int64_t h) const { return data + b * sb + h * sh; }
};

enum class MaskKind { kNone, kBool, kAdditive };

// The mask broadcast to (B, H, Nq, Nk) through strides (0 along broadcast dims): bool
// (true = attend) or additive, of the operands' dtype.
struct MaskView {
  MaskKind kind = MaskKind::kNone;
  const void* data = nullptr;
  int64_t sb = 0, sh = 0, si = 0, sj = 0;
};

template <typename T> struct AttentionParams {
  T scale = 1;
  bool causal = false;
  MaskView mask;
  double dropout_p = 0.0;  // in [0, 1]; 0 turns dropout off, 1 drops everything
  uint64_t dropout_seed = 0;
  // float32 only, where tile_gemm_bf16_supported(): every tile product takes its operands
  // rounded to bfloat16 (tile_gemm_bf16) and accumulates in float32, as autocast asks. The
  // rounded operands are q, k, v, dO and the tiles of P and dS; m, l, Delta, the scores,
  // O's accumulator and dQ, dK, dV stay float32 (l sums P before its rounding).
  bool bf16_products = false;
};

// The counter-based keep decision (SplitMix64 at position `index` of the stream `seed`):
// keep when the top 24 bits of the hash are >= threshold = round(p * 2^24), so an entry is
// kept with probability exactly (2^24 - threshold) / 2^24, and kept entries are scaled by
// its inverse (0 when nothing is kept) to leave the expectation unchanged.
inline uint32_t dropout_threshold(double p) { return static_cast<uint32_t>(p * 16777216.0 + 0.5); }
inline double dropout_keep_scale(uint32_t threshold) {
  return threshold >= (1u << 24) ? 0.0 : 16777216.0 / static_cast<double>((1u << 24) - threshold);
}
inline bool dropout_keep(uint64_t seed, uint64_t index, uint32_t threshold) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 40) >= threshold;
}

// Scratch the caller provides, in elements of T (O(N): no Nq x Nk term). Forward: every
// head's K^T. Backward: Delta (B * H * Nq) and, when there are too few heads to spread over
// the threads, a private dq per thread (threads * B * H * Nq * D).
int64_t attention_forward_workspace(AttentionDims dims);
int64_t attention_backward_workspace(AttentionDims dims);

// The row statistics saved for backward: (2, B, H, Nq) contiguous, the row max m first,
// then log l (l = the row sum of exp(S - m)).
inline int64_t attention_row_stats_size(AttentionDims d) { return 2 * d.B * d.H * d.Nq; }

// out: (B, H, Nq, Dv) contiguous; row_stats: see attention_row_stats_size.
template <typename T>
void attention_forward(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                       AttentionDims dims, T* out, T* row_stats, T* workspace);

// out, dout: (B, H, Nq, Dv) contiguous; row_stats from the forward. Writes (overwrites) dq
// (B, H, Nq, D), dk (B, H, Nk, D), dv (B, H, Nk, Dv), all contiguous.
template <typename T>
void attention_backward(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                        AttentionDims dims, const T* out, const T* dout, const T* row_stats, T* dq, T* dk, T* dv,
                        T* workspace);

// Naive references, kept for tests: each head's full S and P (Nq x Nk) materialized, sums in
// double, the textbook formulas (P = softmax(S), dS = P * (dP - rowsum(P * dP))). Same
// layouts and rules as above.
template <typename T>
void attention_forward_naive(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                             AttentionDims dims, T* out, T* row_stats);
template <typename T>
void attention_backward_naive(HeadsView<T> q, HeadsView<T> k, HeadsView<T> v, const AttentionParams<T>& p,
                              AttentionDims dims, const T* dout, T* dq, T* dk, T* dv);

}  // namespace sg::kernels
