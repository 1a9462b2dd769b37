#pragma once
// nn::MultiHeadAttention: PyTorch's torch.nn.MultiheadAttention on the fused
// scaled_dot_product_attention (ops/attention.h).
//
//   sg::nn::MultiHeadAttention mha(64, 4, gen, {.dropout = 0.1, .batch_first = true});
//   sg::Tensor y = mha.forward(x, x, x);                     // self-attention, (B, L, E)
//   sg::Tensor z = mha.forward(x, mem, mem, {.key_padding_mask = pad, .is_causal = false});
//
// Shapes: query (B, L, E), key/value (B, S, E) with batch_first, else (L, B, E) and
// (S, B, E) (PyTorch's default); unbatched (L, E) and (S, E) also work. Output: the
// query's shape.
// Parameters, with PyTorch's names (a state_dict of torch.nn.MultiheadAttention maps onto
// them) and init: in_proj_weight (3E, E) xavier_uniform_, in_proj_bias (3E) zeros,
// out_proj.weight (E, E) Linear's default, out_proj.bias (E) zeros. q, k and v each come
// from their own row block of in_proj_weight (also in self-attention: see the .cpp for why
// not one fused projection); the heads are strided views of each projection that the
// attention kernel reads in place.
// Masks, with PyTorch's MultiheadAttention meaning (the opposite of attn_mask in
// scaled_dot_product_attention for bool masks):
//   key_padding_mask  (B, S) (or (S) unbatched): bool, true = this key is padding and is
//                     ignored; or float, added to the scores.
//   attn_mask         (L, S) or (B * num_heads, L, S): bool, true = may NOT attend; or
//                     float, added to the scores.
//   is_causal         query i attends to keys j <= i (may be combined with the masks).
// A query whose every key is masked gets a zero attention row (PyTorch 1.13: NaN).
// Dropout on the attention probabilities applies in training mode only and draws from
// the module's own generator, seeded from the construction generator.
// Differences from PyTorch: forward returns the output only (need_weights is not
// offered: the fused kernel never forms the attention matrix); no add_bias_kv,
// add_zero_attn, kdim/vdim.
#include "core/generator.h"
#include "nn/linear.h"
#include "nn/module.h"

namespace sg::nn {

struct MultiHeadAttentionOptions {
  bool bias = true;
  double dropout = 0.0;
  bool batch_first = false;
  Dtype dtype = kFloat32;
};

struct AttentionMasks {
  Tensor key_padding_mask{};
  Tensor attn_mask{};
  bool is_causal = false;
};

class MultiHeadAttention : public Module {
 public:
  MultiHeadAttention(int64_t embed_dim, int64_t num_heads, Generator& gen, MultiHeadAttentionOptions options = {});
  Tensor forward(const Tensor& query, const Tensor& key, const Tensor& value, const AttentionMasks& masks = {});
  Tensor operator()(const Tensor& query, const Tensor& key, const Tensor& value, const AttentionMasks& masks = {}) {
    return forward(query, key, value, masks);
  }
  std::string extra_repr() const override;

  Tensor in_proj_weight;  // (3E, E): rows [0, E) make q, [E, 2E) k, [2E, 3E) v
  Tensor in_proj_bias;    // (3E), undefined without bias
  std::shared_ptr<Linear> out_proj;
  const int64_t embed_dim, num_heads, head_dim;
  const MultiHeadAttentionOptions options;

 private:
  Tensor combined_mask(const AttentionMasks& masks, int64_t B, int64_t L, int64_t S, Dtype dtype) const;
  Generator dropout_gen_;
};

}  // namespace sg::nn
