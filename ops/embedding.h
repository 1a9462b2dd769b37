#pragma once
// Embedding lookup (PyTorch's torch.nn.functional.embedding; arguments in ATen's order,
// weight first), one graph node.
//
//   weight   (V, D) float32 or float64: one row per index value
//   indices  int64 of any shape S (0-dim included), every value in [0, V)
//   result   S + (D): result[s, :] = weight[indices[s], :]
//
//   sg::Tensor tok = sg::embedding(wte, ids);                       // ids (B, T) -> (B, T, D)
//   sg::Tensor pad = sg::embedding(wte, ids, {.padding_idx = 0});   // row 0 gets no gradient
//
// backward scatter-adds the rows of the gradient into dweight (V, D): a repeated index
// sums its rows; rows never looked up get 0. padding_idx (optional, in [-V, V); negative
// counts from the end, as PyTorch) leaves its row's gradient at 0 — the forward still reads
// that row, as in PyTorch (nn::Embedding zeroes it at construction). No gradient flows to
// the indices. An out-of-range index is an sg::Error naming the index, its position and V.
#include <cstdint>
#include <optional>

#include "core/tensor.h"

namespace sg {

struct EmbeddingOptions {
  std::optional<int64_t> padding_idx{};
};

Tensor embedding(const Tensor& weight, const Tensor& indices, const EmbeddingOptions& options = {});

namespace kernels {
// out (n, D) = weight rows idx[0 .. n); idx already range-checked.
template <typename T> void embedding_forward(const T* weight, const int64_t* idx, T* out, int64_t n, int64_t D);
// dweight (V, D), zero on entry: dweight[idx[i]] += g[i] for every i with idx[i] != skip
// (skip = -1 for none). Parallel over ranges of V (each thread owns its rows).
template <typename T>
void embedding_backward(const T* g, const int64_t* idx, T* dweight, int64_t n, int64_t V, int64_t D, int64_t skip);
}  // namespace kernels

}  // namespace sg
