#pragma once
// nn::TransformerEncoderLayer: PyTorch's torch.nn.TransformerEncoderLayer, built on
// nn::MultiHeadAttention, nn::Linear, nn::LayerNorm and nn::Dropout, with PyTorch's defaults:
// post-norm, ReLU, batch_first = false (x is (T, B, d_model)), dim_feedforward 2048,
// dropout 0.1. The trainers set what they want (pre-norm, GELU, batch_first) explicitly.
//
//   sg::nn::TransformerEncoderLayer layer(64, 4, gen, {.dim_feedforward = 256, .dropout = 0.1,
//                                        .activation = sg::nn::Activation::GELU, .batch_first = true,
//                                        .norm_first = true});
//   sg::Tensor y = layer.forward(x);                                   // x (B, T, 64)
//   sg::Tensor z = layer.forward(x, {.key_padding_mask = pad, .is_causal = true});
//
// norm_first (pre-norm):
//   x = x + dropout1(self_attn(norm1(x)))
//   x = x + dropout2(linear2(dropout(activation(linear1(norm2(x))))))
// otherwise (post-norm, PyTorch's default):
//   x = norm1(x + dropout1(self_attn(x)))
//   x = norm2(x + dropout2(linear2(dropout(activation(linear1(x))))))
// self_attn gets x as query, key and value (one fused projection) and the masks
// (AttentionMasks: key_padding_mask, attn_mask — PyTorch's src_key_padding_mask and
// src_mask, with MultiHeadAttention's meaning — and is_causal).
//
// Children and parameters carry PyTorch's names, registered in PyTorch's order, so the
// state_dict of torch.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward,
// norm_first=True, activation="gelu", batch_first=True) maps onto named_parameters() one to
// one: self_attn.in_proj_weight (3E, E), self_attn.in_proj_bias (3E), self_attn.out_proj.weight,
// self_attn.out_proj.bias, linear1.weight (F, E), linear1.bias, linear2.weight (E, F),
// linear2.bias, norm1.weight, norm1.bias, norm2.weight, norm2.bias. Init as PyTorch's
// submodules (its TransformerEncoderLayer adds none of its own). bias = false drops every
// bias (attention, linear and norm), as PyTorch 2.1's bias flag.
// Dropout (attention probabilities, the feed-forward hidden layer, both residual branches,
// all with probability `dropout`) is active in training mode only; each of the four draws
// from its own generator seeded from the construction generator (named_generators():
// self_attn.dropout_generator, dropout.generator, dropout1.generator, dropout2.generator).
#include <memory>

#include "core/generator.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/multihead_attention.h"
#include "nn/normalization.h"

namespace sg::nn {

enum class Activation { ReLU, GELU };

struct TransformerEncoderLayerOptions {
  int64_t dim_feedforward = 2048;
  double dropout = 0.1;
  Activation activation = Activation::ReLU;
  double layer_norm_eps = 1e-5;
  bool batch_first = false;
  bool norm_first = false;
  bool bias = true;
  Dtype dtype = kFloat32;
};

class TransformerEncoderLayer : public Module {
 public:
  TransformerEncoderLayer(int64_t d_model, int64_t nhead, Generator& gen, TransformerEncoderLayerOptions options = {});
  // x: (B, T, d_model) with batch_first, else (T, B, d_model); or unbatched (T, d_model).
  Tensor forward(const Tensor& x, const AttentionMasks& masks);
  using Module::operator();  // layer(x)
  Tensor operator()(const Tensor& x, const AttentionMasks& masks) { return forward(x, masks); }
  Tensor forward(const Tensor& x) override;  // no masks
  std::string extra_repr() const override;

  std::shared_ptr<MultiHeadAttention> self_attn;
  std::shared_ptr<Linear> linear1, linear2;
  std::shared_ptr<Dropout> dropout, dropout1, dropout2;
  std::shared_ptr<LayerNorm> norm1, norm2;
  const int64_t d_model, nhead;
  const TransformerEncoderLayerOptions options;

 private:
  Tensor self_attention_block(const Tensor& x, const AttentionMasks& masks);
  Tensor feed_forward_block(const Tensor& x);
};

}  // namespace sg::nn
