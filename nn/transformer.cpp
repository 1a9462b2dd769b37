#include "nn/transformer.h"

#include <fmt/format.h>

#include "ops/elementwise.h"

namespace sg::nn {

TransformerEncoderLayer::TransformerEncoderLayer(int64_t E, int64_t H, Generator& gen,
                                                 TransformerEncoderLayerOptions opts)
    : Module("TransformerEncoderLayer"), d_model(E), nhead(H), options(opts) {
  SG_CHECK(opts.dim_feedforward > 0, "TransformerEncoderLayer: dim_feedforward must be positive, got {}",
           opts.dim_feedforward);
  SG_CHECK(opts.dropout >= 0.0 && opts.dropout < 1.0, "TransformerEncoderLayer: dropout must be in [0, 1), got {}",
           opts.dropout);
  // PyTorch's construction (and registration) order: the generator is drawn in this order.
  const LinearOptions lin{.bias = opts.bias, .dtype = opts.dtype};
  const LayerNormOptions ln{.eps = opts.layer_norm_eps, .bias = opts.bias, .dtype = opts.dtype};
  self_attn = register_module(
      "self_attn", std::make_shared<MultiHeadAttention>(
                       E, H, gen,
                       MultiHeadAttentionOptions{
                           .bias = opts.bias, .dropout = opts.dropout, .batch_first = opts.batch_first, .dtype = opts.dtype}));
  linear1 = register_module("linear1", std::make_shared<Linear>(E, opts.dim_feedforward, gen, lin));
  dropout = register_module("dropout", std::make_shared<Dropout>(opts.dropout, gen));
  linear2 = register_module("linear2", std::make_shared<Linear>(opts.dim_feedforward, E, gen, lin));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(E, ln));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(E, ln));
  dropout1 = register_module("dropout1", std::make_shared<Dropout>(opts.dropout, gen));
  dropout2 = register_module("dropout2", std::make_shared<Dropout>(opts.dropout, gen));
}

std::string TransformerEncoderLayer::extra_repr() const {
  return fmt::format("d_model={}, nhead={}, dim_feedforward={}, activation={}, norm_first={}, batch_first={}", d_model,
                     nhead, options.dim_feedforward, options.activation == Activation::GELU ? "gelu" : "relu",
                     options.norm_first, options.batch_first);
}

// dropout1(self_attn(x, x, x)): the same tensor as query, key and value takes the fused
// projection.
Tensor TransformerEncoderLayer::self_attention_block(const Tensor& x, const AttentionMasks& masks) {
  return dropout1->forward(self_attn->forward(x, x, x, masks));
}

// dropout2(linear2(dropout(activation(linear1(x)))))
Tensor TransformerEncoderLayer::feed_forward_block(const Tensor& x) {
  Tensor h = linear1->forward(x);
  h = options.activation == Activation::GELU ? gelu(h) : relu(h);
  return dropout2->forward(linear2->forward(dropout->forward(h)));
}

Tensor TransformerEncoderLayer::forward(const Tensor& x, const AttentionMasks& masks) {
  SG_CHECK(x.defined(), "TransformerEncoderLayer: the input tensor is undefined");
  SG_CHECK((x.dim() == 2 || x.dim() == 3) && x.size(-1) == d_model,
           "TransformerEncoderLayer: expected an input of shape ({}) with d_model = {} last, got shape {}",
           options.batch_first ? "batch, tokens, d_model" : "tokens, batch, d_model", d_model, x.shape());
  SG_CHECK(x.dtype() == options.dtype, "TransformerEncoderLayer: the layer is {}, got an input of {} (shape {})",
           options.dtype, x.dtype(), x.shape());
  if (options.norm_first) {
    const Tensor h = x + self_attention_block(norm1->forward(x), masks);
    return h + feed_forward_block(norm2->forward(h));
  }
  const Tensor h = norm1->forward(x + self_attention_block(x, masks));
  return norm2->forward(h + feed_forward_block(h));
}

Tensor TransformerEncoderLayer::forward(const Tensor& x) { return forward(x, AttentionMasks{}); }

}  // namespace sg::nn
