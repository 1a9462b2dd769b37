// See nn/vision_transformer.h.
#include "nn/vision_transformer.h"

#include <fmt/format.h>

#include "core/error.h"
#include "nn/init.h"
#include "nn/transformer.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace sg::nn {

VisionTransformer::VisionTransformer(const VisionTransformerOptions& c, Generator& gen)
    : Module("VisionTransformer"), options_(c), side_(c.patch > 0 ? c.image_size / c.patch : 0), tokens_(side_ * side_) {
  SG_CHECK(c.patch > 0 && c.image_size > 0 && c.image_size % c.patch == 0,
           "VisionTransformer: patch {} does not divide image_size {}", c.patch, c.image_size);
  SG_CHECK(c.dim > 0 && c.heads > 0 && c.dim % c.heads == 0, "VisionTransformer: dim {} is not a multiple of heads {}",
           c.dim, c.heads);
  SG_CHECK(c.pool == "cls" || c.pool == "mean", "VisionTransformer: pool must be \"cls\" or \"mean\", got \"{}\"",
           c.pool);
  SG_CHECK(c.depth >= 0 && c.mlp_ratio > 0 && c.num_classes > 0,
           "VisionTransformer: depth {}, mlp_ratio {}, num_classes {} must be positive (depth may be 0)", c.depth,
           c.mlp_ratio, c.num_classes);
  const bool cls = c.pool == "cls";
  patch_embed = register_module("patch_embed", std::make_shared<Linear>(c.patch * c.patch, c.dim, gen));
  if (cls) {
    cls_token = zeros({1, 1, c.dim});
    register_parameter("cls_token", &cls_token);
  }
  pos_embed = empty({1, tokens_ + (cls ? 1 : 0), c.dim});
  init::normal_(pos_embed, 0.0, 0.02, gen);
  register_parameter("pos_embed", &pos_embed);
  layers = register_module("layers", std::make_shared<Sequential>());
  for (int64_t i = 0; i < c.depth; ++i)
    layers->push_back(std::make_shared<TransformerEncoderLayer>(
        c.dim, c.heads, gen,
        TransformerEncoderLayerOptions{.dim_feedforward = c.mlp_ratio * c.dim,
                                       .dropout = c.dropout,
                                       .activation = Activation::GELU,
                                       .batch_first = true,
                                       .norm_first = true}));
  norm = register_module("norm", std::make_shared<LayerNorm>(c.dim));
  head = register_module("head", std::make_shared<Linear>(c.dim, c.num_classes, gen));
}

Tensor VisionTransformer::patchify(const Tensor& images) const {
  SG_CHECK(images.defined() && images.dim() == 3 && images.size(1) == options_.image_size &&
               images.size(2) == options_.image_size,
           "VisionTransformer: expected images (B, {}, {}), got {}", options_.image_size, options_.image_size,
           images.defined() ? fmt::format("{}", images.shape()) : std::string("an undefined tensor"));
  const int64_t B = images.size(0), P = options_.patch, S = side_;
  // (B, S, P, S, P) -> (B, S, S, P, P) -> (B, T, P*P)
  return images.reshape({B, S, P, S, P}).permute({0, 1, 3, 2, 4}).reshape({B, tokens_, P * P});
}

Tensor VisionTransformer::forward(const Tensor& images) {
  const int64_t B = images.defined() && images.dim() > 0 ? images.size(0) : 0;
  Tensor x = patch_embed->forward(patchify(images));  // (B, T, dim)
  if (cls_token.defined()) x = cat({cls_token.expand({B, 1, options_.dim}), x}, 1);
  x = layers->forward(x + pos_embed);
  x = norm->forward(x);
  x = cls_token.defined() ? select(x, 1, 0) : mean(x, {1});  // (B, dim)
  return head->forward(x);
}

std::string VisionTransformer::extra_repr() const {
  return fmt::format("patch={}, tokens={}, pool={}", options_.patch, tokens_, options_.pool);
}

}  // namespace sg::nn
