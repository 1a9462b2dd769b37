#pragma once
// The example trainers' models, shared with the benchmark (bench/bench_train.cpp), so both
// time exactly what the trainers train.
//
//   auto mlp = models::make_mlp({512, 256}, /*dropout=*/0.0, gen);   // 784 -> ... -> 10
//   models::VisionTransformer vit({.patch = 4, .dim = 64, .depth = 2, .pool = "cls"}, gen);
#include <softgrad.h>

#include <memory>
#include <string>
#include <vector>

namespace models {

// Linear + ReLU (+ Dropout) per hidden width, then a Linear head to 10 classes, as an
// nn::Sequential with PyTorch's names ("0.weight", "2.weight", ...). Input (B, 784).
inline std::shared_ptr<sg::nn::Sequential> make_mlp(const std::vector<int64_t>& hidden, double dropout,
                                                    sg::Generator& gen) {
  auto net = std::make_shared<sg::nn::Sequential>();
  int64_t width = 28 * 28;
  for (const int64_t h : hidden) {
    net->push_back(std::make_shared<sg::nn::Linear>(width, h, gen));
    net->push_back(std::make_shared<sg::nn::ReLU>());
    if (dropout > 0) net->push_back(std::make_shared<sg::nn::Dropout>(dropout, gen));
    width = h;
  }
  net->push_back(std::make_shared<sg::nn::Linear>(width, 10, gen));
  return net;
}

// A ViT for 28 x 28 images: the image is cut into (28 / patch)^2 patches of patch x patch
// pixels, each projected to `dim` features (a Linear on the flattened patch); a learned
// class token is prepended (pool "cls"; with "mean" the tokens are averaged at the end), a
// learned position embedding is added, then `depth` pre-norm encoder layers
// (nn::TransformerEncoderLayer: MultiHeadAttention on the fused attention kernel, a GELU
// MLP of width mlp_ratio * dim), a final LayerNorm and a Linear head to 10 classes.
// The default: 7 x 7 patches (16 tokens), width 64, 4 layers of 4 heads, mean pooling.
// (Measured on MNIST with the trainer's recipe: it beats 4 x 4 patches with 2 layers,
// which costs about as much per epoch, by ~1 point after 10 epochs.)
struct VitConfig {
  int64_t patch = 7, dim = 64, depth = 4, heads = 4, mlp_ratio = 4;
  double dropout = 0.0;
  std::string pool = "mean";
};

class VisionTransformer : public sg::nn::Module {
 public:
  VisionTransformer(const VitConfig& c, sg::Generator& gen)
      : Module("VisionTransformer"), config_(c), side_(28 / c.patch), tokens_(side_ * side_) {
    SG_CHECK(28 % c.patch == 0, "mnist_transformer: --patch {} does not divide 28", c.patch);
    SG_CHECK(c.dim % c.heads == 0, "mnist_transformer: --dim {} is not a multiple of --heads {}", c.dim, c.heads);
    const bool cls = c.pool == "cls";
    patch_embed_ = register_module("patch_embed", std::make_shared<sg::nn::Linear>(c.patch * c.patch, c.dim, gen));
    if (cls) {
      cls_token_ = sg::zeros({1, 1, c.dim});
      register_parameter("cls_token", &cls_token_);
    }
    pos_embed_ = sg::empty({1, tokens_ + (cls ? 1 : 0), c.dim});
    sg::nn::init::normal_(pos_embed_, 0.0, 0.02, gen);
    register_parameter("pos_embed", &pos_embed_);
    layers_ = register_module("layers", std::make_shared<sg::nn::Sequential>());
    for (int64_t i = 0; i < c.depth; ++i)
      layers_->push_back(std::make_shared<sg::nn::TransformerEncoderLayer>(
          c.dim, c.heads, gen,
          sg::nn::TransformerEncoderLayerOptions{.dim_feedforward = c.mlp_ratio * c.dim,
                                                 .dropout = c.dropout,
                                                 .activation = sg::nn::Activation::GELU,
                                                 .batch_first = true,
                                                 .norm_first = true}));
    norm_ = register_module("norm", std::make_shared<sg::nn::LayerNorm>(c.dim));
    head_ = register_module("head", std::make_shared<sg::nn::Linear>(c.dim, 10, gen));
  }

  // images (B, 28, 28) -> logits (B, 10)
  sg::Tensor forward(const sg::Tensor& images) override {
    const int64_t B = images.size(0), P = config_.patch, S = side_;
    // (B, S, P, S, P) -> (B, S, S, P, P) -> (B, T, P*P): patch (i, j) is token i * S + j.
    const sg::Tensor patches = images.reshape({B, S, P, S, P}).permute({0, 1, 3, 2, 4}).reshape({B, tokens_, P * P});
    sg::Tensor x = patch_embed_->forward(patches);  // (B, T, dim)
    if (cls_token_.defined()) x = sg::cat({cls_token_.expand({B, 1, config_.dim}), x}, 1);
    x = layers_->forward(x + pos_embed_);
    x = norm_->forward(x);
    x = cls_token_.defined() ? sg::select(x, 1, 0) : sg::mean(x, {1});  // (B, dim)
    return head_->forward(x);
  }

  std::string extra_repr() const override {
    return fmt::format("patch={}, tokens={}, pool={}", config_.patch, tokens_, config_.pool);
  }

 private:
  VitConfig config_;
  int64_t side_, tokens_;
  std::shared_ptr<sg::nn::Linear> patch_embed_, head_;
  sg::Tensor cls_token_, pos_embed_;
  std::shared_ptr<sg::nn::Sequential> layers_;
  std::shared_ptr<sg::nn::LayerNorm> norm_;
};


}  // namespace models
