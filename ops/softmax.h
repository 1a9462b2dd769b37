#pragma once
// The softmax family: softmax, log_softmax, and the fused losses cross_entropy and
// nll_loss (see ../shared/seed/softmax-note.md). Each is one graph node with a
// hand-derived backward; the kernels live in ops/softmax_kernels.h.
//
//   s = softmax(x, dim)       s_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j
//   y = log_softmax(x, dim)   y_i = x_i - m - log(sum_j exp(x_j - m))
//   backward:  softmax      dx = s * (g - <s, g>)        (saves s)
//              log_softmax  dx = g - exp(y) * sum(g)     (saves y)
//
// Float32 and float64, any dim (negative counts from the end), any strides (a
// non-contiguous input is read through one contiguous copy).
//
// Rows without a finite answer. PyTorch returns NaN for the whole row in both cases
// below; softgrad returns the limit instead, the same choice scaled_dot_product_attention
// makes for a fully masked query:
//   * every entry -inf (a fully masked row): softmax gives 0 everywhere (the row carries
//     no probability mass), log_softmax gives -inf everywhere (log 0); the gradient
//     through softmax is 0, through log_softmax it is g (the formula above with exp(y) = 0).
//   * some entries +inf: the k entries at +inf share the mass, softmax gives 1/k there and
//     0 elsewhere, log_softmax gives -log k there and -inf elsewhere. This is the limit
//     of softmax as those logits grow together.
// A NaN anywhere in a row makes the whole row NaN (as in PyTorch).
#include <cstdint>

#include "core/tensor.h"

namespace sg {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

enum class Reduction { None, Mean, Sum };

// PyTorch's torch.nn.functional.cross_entropy, fused into one node.
//   logits  (C), (N, C) or (N, C, d1, ..., dk): unnormalized scores, float32 or float64
//   target  class indices: int64 of shape (), (N) or (N, d1, ..., dk), values in [0, C)
//           or equal to ignore_index; or class probabilities: the logits' shape and dtype
//   weight  optional (C) rescaling of each class, the logits' dtype
//   reduction Mean: index targets divide by the summed weight w[target] of the rows not
//           ignored (the row count without weights); probability targets divide by the
//           number of rows N*d1*...*dk. Sum adds, None returns one loss per row
//           (shape of the index target).
//   label_smoothing in [0, 1]: the target becomes (1 - eps) * target + eps / C, with
//           PyTorch's normalization of the smoothing term.
//   ignore_index (index targets only): those rows give loss 0 and gradient 0.
//   An empty batch (no rows) with reduction Mean throws (PyTorch returns NaN); Sum gives 0,
//   None an empty tensor. A batch whose every row is ignored gives NaN with Mean (0 / 0, as
//   PyTorch) and a zero gradient.
// Forward saves only each row's max and sum of exp(x - max) (N*d1*...*dk pairs; never
// max + log(sum), which loses the sum when max is huge, e.g. a -1e9 mask), never the
// probabilities; backward recomputes softmax on the fly:
//   dlogits = (softmax(logits) - target_distribution) * scale.
// Errors name the op, the shapes, and for a bad label the row and the value.
// Usage: sg::cross_entropy(z, y, {.ignore_index = 0, .reduction = sg::Reduction::Sum}).
// NOTE: the classes are dim 1, as in PyTorch. A sequence model's (B, T, V) logits with
// (B, T) targets go in as cross_entropy(logits.reshape({-1, V}), targets.reshape({-1}));
// passed as they are, the error says so, with the numbers.
struct CrossEntropyOptions {
  Tensor weight{};
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Reduction reduction = Reduction::Mean;
};
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options = {});

// PyTorch's torch.nn.functional.nll_loss: loss_i = -weight[t_i] * log_probs[i, t_i].
//   log_probs (C), (N, C) or (N, C, d1, ..., dk); target int64 (), (N) or (N, d1, ..., dk).
//   Mean divides by the summed weight of the rows not ignored (NaN when all are ignored,
//   as in PyTorch; an empty batch with Mean throws, as for cross_entropy).
struct NLLLossOptions {
  Tensor weight{};
  int64_t ignore_index = -100;
  Reduction reduction = Reduction::Mean;
};
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const NLLLossOptions& options = {});

}  // namespace sg
