#pragma once
// The example trainers' models, shared with the benchmark (bench/bench_train.cpp), so both
// time exactly what the trainers train.
//
//   auto mlp = models::make_mlp({512, 256}, /*dropout=*/0.0, gen);   // 784 -> ... -> 10
//   models::VisionTransformer vit({.patch = 4, .dim = 64, .depth = 2, .pool = "cls"}, gen);
//   auto cnn = models::make_cnn({.channels = {32, 64}, .hidden = 128}, gen);  // (B, 28, 28) -> 10
#include <softgrad.h>

#include <cstdlib>
#include <map>
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

// A small CNN for 28 x 28 images, as an nn::Sequential with PyTorch's names:
//   Unflatten(1, (1, 28))                                   (B, 28, 28) -> (B, 1, 28, 28)
//   per width c of `channels`: Conv2d(c_in, c, 3, padding=1, bias=False), BatchNorm2d(c),
//                              ReLU, MaxPool2d(2)           (28 -> 14 -> 7 -> 3 ...)
//   Flatten, [Linear(., hidden), ReLU, Dropout(dropout)], Linear(., 10)
// The convolutions have no bias: the batch norm after each removes any constant.
// The defaults are examples/mnist_cnn's (chosen by measurement: README, "A convolutional
// network").
struct CnnConfig {
  std::vector<int64_t> channels = {32, 64};
  int64_t hidden = 128;  // 0: the flattened features go straight to the head
  double dropout = 0.25;
};
inline std::shared_ptr<sg::nn::Sequential> make_cnn(const CnnConfig& c, sg::Generator& gen) {
  SG_CHECK(!c.channels.empty(), "make_cnn: needs at least one convolution block");
  auto net = std::make_shared<sg::nn::Sequential>();
  net->push_back(std::make_shared<sg::nn::Unflatten>(1, sg::Shape{1, 28}));
  int64_t in = 1, side = 28;
  for (const int64_t width : c.channels) {
    SG_CHECK(width > 0 && side >= 2, "make_cnn: channels must be positive and at most 4 blocks fit 28 x 28, got {}",
             c.channels.size());
    net->push_back(std::make_shared<sg::nn::Conv2d>(in, width, 3, gen, sg::nn::Conv2dOptions{.padding = 1, .bias = false}));
    net->push_back(std::make_shared<sg::nn::BatchNorm2d>(width));
    net->push_back(std::make_shared<sg::nn::ReLU>());
    net->push_back(std::make_shared<sg::nn::MaxPool2d>(2));
    in = width;
    side /= 2;
  }
  net->push_back(std::make_shared<sg::nn::Flatten>());
  int64_t features = in * side * side;
  if (c.hidden > 0) {
    net->push_back(std::make_shared<sg::nn::Linear>(features, c.hidden, gen));
    net->push_back(std::make_shared<sg::nn::ReLU>());
    if (c.dropout > 0) net->push_back(std::make_shared<sg::nn::Dropout>(c.dropout, gen));
    features = c.hidden;
  }
  net->push_back(std::make_shared<sg::nn::Linear>(features, 10, gen));
  return net;
}

// The ViT is nn::VisionTransformer (nn/vision_transformer.h): patch embedding, class token
// (pool "cls") or mean pooling, position embedding, pre-norm encoder layers, LayerNorm, head.
// The default: 7 x 7 patches (16 tokens), width 64, 4 layers of 4 heads, mean pooling.
// (Measured on MNIST with the trainer's recipe: it beats 4 x 4 patches with 2 layers,
// which costs about as much per epoch, by ~1 point after 10 epochs.)
using VitConfig = sg::nn::VisionTransformerOptions;
using VisionTransformer = sg::nn::VisionTransformer;

// A checkpoint written by a trainer (--save), read back as its model: the configuration from
// the metadata the trainers write ("model" = "mlp" | "vit" | "cnn", "model.<flag>"), the weights from
// the tensors without a '/' in their name (the rest is optimizer and schedule state). The
// model is in eval mode. kind, when not empty, overrides "model".
struct CheckpointModel {
  std::string kind;  // "mlp", "vit" or "cnn"
  std::shared_ptr<sg::nn::Module> model;
  std::map<std::string, std::string> metadata;
};
inline CheckpointModel load_checkpoint_model(const std::string& path, std::string kind = "") {
  sg::SafetensorsFile file = sg::load_safetensors(path);
  const auto& meta = file.metadata;
  auto field = [&](const std::string& key) {
    const auto it = meta.find(key);
    SG_CHECK(it != meta.end(),
             "checkpoint {}: its metadata has no '{}' (checkpoints written by mnist_mlp, mnist_transformer or "
             "mnist_cnn --save have it)",
             path, key);
    return it->second;
  };
  auto positive = [&](const std::string& key) {
    const std::string v = field(key);
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    SG_CHECK(!v.empty() && end == v.c_str() + v.size() && n > 0, "checkpoint {}: metadata '{}' is '{}', not a positive "
             "integer", path, key, v);
    return static_cast<int64_t>(n);
  };
  if (kind.empty()) kind = field("model");
  SG_CHECK(kind == "mlp" || kind == "vit" || kind == "cnn", "checkpoint {}: model '{}' is not mlp, vit or cnn", path,
           kind);
  // A comma-separated list of positive integers ("512,256").
  auto widths_of = [&](const std::string& key) {
    std::vector<int64_t> out;
    const std::string widths = field(key);
    for (size_t at = 0; at <= widths.size();) {
      const size_t comma = std::min(widths.find(',', at), widths.size());
      const std::string w = widths.substr(at, comma - at);
      char* end = nullptr;
      const long long h = std::strtoll(w.c_str(), &end, 10);
      SG_CHECK(!w.empty() && end == w.c_str() + w.size() && h > 0, "checkpoint {}: {} '{}' is not a list of "
               "positive widths", path, key, widths);
      out.push_back(h);
      at = comma + 1;
    }
    return out;
  };
  sg::Generator gen(0);
  std::shared_ptr<sg::nn::Module> model;
  if (kind == "vit") {
    VitConfig c;
    c.patch = positive("model.patch");
    c.dim = positive("model.dim");
    c.depth = positive("model.depth");
    c.heads = positive("model.heads");
    c.mlp_ratio = positive("model.mlp_ratio");
    c.pool = field("model.pool");
    model = std::make_shared<VisionTransformer>(c, gen);
  } else if (kind == "cnn") {
    CnnConfig c;
    c.channels = widths_of("model.channels");
    const std::string hidden = field("model.hidden");
    c.hidden = hidden == "0" ? 0 : positive("model.hidden");
    model = make_cnn(c, gen);
  } else {
    model = make_mlp(widths_of("model.hidden"), /*dropout=*/0.0, gen);
  }
  sg::NamedTensors weights;
  for (auto& [name, t] : file.tensors)
    if (name.find('/') == std::string::npos) weights.emplace_back(name, t);
  sg::nn::load_state_dict(*model, weights);  // names and shapes checked: another shape is a named error
  model->eval();
  return {kind, model, meta};
}

}  // namespace models
