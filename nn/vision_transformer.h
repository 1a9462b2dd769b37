#pragma once
// nn::VisionTransformer: a ViT for small square images (MNIST's 28 x 28 by default), the
// model of examples/mnist_transformer and of int8 quantization (quant/quantize.h).
//
//   sg::nn::VisionTransformer vit({.patch = 4, .dim = 64, .depth = 2, .pool = "cls"}, gen);
//   sg::Tensor logits = vit.forward(images);   // (B, 28, 28) -> (B, 10)
//
// The image is cut into (image_size / patch)^2 patches of patch x patch pixels, each
// projected to `dim` features (a Linear on the flattened patch); a learned class token is
// prepended (pool "cls"; with "mean" the tokens are averaged at the end), a learned position
// embedding is added, then `depth` pre-norm encoder layers (TransformerEncoderLayer:
// MultiHeadAttention on the fused attention kernel, a GELU MLP of width mlp_ratio * dim), a
// final LayerNorm and a Linear head to num_classes. Parameter names: patch_embed.*,
// cls_token, pos_embed, layers.<i>.*, norm.*, head.*.
#include <memory>
#include <string>

#include "nn/linear.h"
#include "nn/module.h"
#include "nn/normalization.h"
#include "nn/sequential.h"

namespace sg::nn {

struct VisionTransformerOptions {
  int64_t patch = 7, dim = 64, depth = 4, heads = 4, mlp_ratio = 4;
  double dropout = 0.0;
  std::string pool = "mean";  // "mean" or "cls"
  int64_t image_size = 28, num_classes = 10;
};

class VisionTransformer : public Module {
 public:
  VisionTransformer(const VisionTransformerOptions& options, Generator& gen);

  // images (B, image_size, image_size) -> logits (B, num_classes)
  Tensor forward(const Tensor& images) override;
  // images (B, S * P, S * P) -> (B, S * S, P * P): patch (i, j) is token i * S + j.
  Tensor patchify(const Tensor& images) const;

  const VisionTransformerOptions& options() const { return options_; }
  int64_t tokens() const { return tokens_; }  // patches, without the class token
  std::string extra_repr() const override;

  // The parts (read by quant/ to build the integer model).
  std::shared_ptr<Linear> patch_embed, head;
  Tensor cls_token;  // (1, 1, dim); undefined with pool "mean"
  Tensor pos_embed;  // (1, tokens (+1 with a class token), dim)
  std::shared_ptr<Sequential> layers;  // of TransformerEncoderLayer
  std::shared_ptr<LayerNorm> norm;

 private:
  VisionTransformerOptions options_;
  int64_t side_, tokens_;
};

}  // namespace sg::nn
