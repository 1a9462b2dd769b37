#pragma once
// scaled_dot_product_attention: PyTorch's torch.nn.functional.scaled_dot_product_attention
// as one fused graph node (seed note 5.3; the kernels are in ops/attention_kernels.h).
//
//   out = dropout(softmax(q k^T * scale + mask)) v
//
//   q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv) -> out (B, H, Nq, Dv); or the 3-D
//   forms (B, Nq, D), (B, Nk, D), (B, Nk, Dv) -> (B, Nq, Dv). float32 or float64, one dtype.
//   Any D and Dv; Nq and Nk may differ. Inputs may be strided views (e.g. heads split out
//   of a fused QKV projection): rows are read in place when the last dim is contiguous.
//
// Options (PyTorch's names and defaults):
//   attn_mask  bool (true = attend) or additive float of q's dtype, broadcastable to
//              (B, H, Nq, Nk) (3-D: (B, Nq, Nk)). Treated as a constant: a float mask that
//              requires grad is refused (detach() it).
//   is_causal  query row i attends to keys j <= i (top-left aligned, as PyTorch). May be
//              combined with attn_mask (PyTorch refuses the combination; here both apply).
//   scale      defaults to 1 / sqrt(D).
//   dropout_p  drops attention probabilities with probability p and scales the kept ones
//              by 1 / (1 - p). The keep mask comes from a counter-based generator keyed by
//              (seed, b, h, i, j), the seed drawn once per call from `generator`, which is
//              then required; backward regenerates the mask instead of storing it.
//
// Memory: the forward never holds an Nq x Nk matrix (tiles of K/V with the online
// softmax) and saves only out and the row log-sum-exp (B * H * Nq values); backward
// recomputes the probabilities tile by tile. Extra memory is O(B * H * (Nq + Nk) * D), times
// the thread count for dq when B * H is too small to spread over the threads.
//
// A fully masked query row (every key masked, or Nk = 0) has no probability mass: its
// output row is 0 and it passes no gradient to q, k or v. (PyTorch 1.13's math composition
// returns NaN there.) A NaN in q, k or v gives NaN in every output it reaches.
#include <optional>

#include "core/generator.h"
#include "core/tensor.h"

namespace sg {

struct SdpaOptions {
  Tensor attn_mask{};
  bool is_causal = false;
  std::optional<double> scale;
  double dropout_p = 0.0;
  Generator* generator = nullptr;  // required when dropout_p > 0
};

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const SdpaOptions& options = {});

// The unfused reference, kept for tests: every head's Nq x Nk scores and probabilities
// materialized, sums in double, the textbook VJP. Same arguments, rules and node shape.
Tensor scaled_dot_product_attention_naive(const Tensor& q, const Tensor& k, const Tensor& v,
                                          const SdpaOptions& options = {});

}  // namespace sg
