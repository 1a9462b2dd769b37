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

// The ViT is nn::VisionTransformer (nn/vision_transformer.h): patch embedding, class token
// (pool "cls") or mean pooling, position embedding, pre-norm encoder layers, LayerNorm, head.
// The default: 7 x 7 patches (16 tokens), width 64, 4 layers of 4 heads, mean pooling.
// (Measured on MNIST with the trainer's recipe: it beats 4 x 4 patches with 2 layers,
// which costs about as much per epoch, by ~1 point after 10 epochs.)
using VitConfig = sg::nn::VisionTransformerOptions;
using VisionTransformer = sg::nn::VisionTransformer;

}  // namespace models
