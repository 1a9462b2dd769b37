#include "nn/embedding.h"

#include <fmt/format.h>

#include "nn/init.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/shape.h"

namespace sg::nn {
namespace {

// Checks the sizes too: the constructor calls this first (in its member initializers).
std::optional<int64_t> checked_padding_idx(std::optional<int64_t> p, int64_t V, int64_t D) {
  SG_CHECK(V > 0 && D > 0, "Embedding: num_embeddings and embedding_dim must be positive, got {} and {}", V, D);
  if (!p) return p;
  SG_CHECK(*p >= -V && *p < V, "Embedding: padding_idx {} is out of range for {} embeddings (expected -{} <= "
           "padding_idx < {})", *p, V, V, V);
  return *p < 0 ? *p + V : *p;
}

}  // namespace

Embedding::Embedding(int64_t V, int64_t D, Generator& gen, EmbeddingOptions options)
    : Module("Embedding"), num_embeddings(V), embedding_dim(D), padding_idx(checked_padding_idx(options.padding_idx, V, D)) {
  SG_CHECK(is_floating(options.dtype), "Embedding: dtype must be float32 or float64, got {}", options.dtype);
  weight = empty({V, D}, options.dtype);
  init::normal_(weight, 0.0, 1.0, gen);
  if (padding_idx) {
    Tensor row = narrow(weight, 0, *padding_idx, 1);
    zero_(row);
  }
  register_parameter("weight", &weight);
}

Tensor Embedding::forward(const Tensor& indices) {
  return embedding(weight, indices, {.padding_idx = padding_idx});
}

std::string Embedding::extra_repr() const {
  std::string out = fmt::format("{}, {}", num_embeddings, embedding_dim);
  if (padding_idx) out += fmt::format(", padding_idx={}", *padding_idx);
  return out;
}

}  // namespace sg::nn
