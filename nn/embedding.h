#pragma once
// nn::Embedding: PyTorch's torch.nn.Embedding on sg::embedding (ops/embedding.h): a table
// of num_embeddings rows of embedding_dim values, looked up by int64 indices.
//
//   sg::nn::Embedding wte(vocab, 64, gen);
//   sg::Tensor h = wte.forward(ids);          // ids (B, T) int64 -> (B, T, 64)
//
// Parameter (PyTorch's name and init): weight (num_embeddings, embedding_dim) from N(0, 1),
// with the padding_idx row (if any) zeroed; that row never receives a gradient.
// padding_idx may be negative (counts from the end) and is stored normalized.
#include <optional>

#include "core/generator.h"
#include "nn/module.h"

namespace sg::nn {

struct EmbeddingOptions {
  std::optional<int64_t> padding_idx{};
  Dtype dtype = kFloat32;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, Generator& gen, EmbeddingOptions options = {});
  Tensor forward(const Tensor& indices) override;
  std::string extra_repr() const override;  // 10, 3, padding_idx=0

  Tensor weight;  // (num_embeddings, embedding_dim)
  const int64_t num_embeddings, embedding_dim;
  const std::optional<int64_t> padding_idx;  // in [0, num_embeddings)
};

}  // namespace sg::nn
