#pragma once
// Loss modules: PyTorch's torch.nn.CrossEntropyLoss around the fused sg::cross_entropy
// (ops/softmax.h, which documents the shapes, options and semantics).
//
//   sg::nn::CrossEntropyLoss criterion({.label_smoothing = 0.1});
//   sg::Tensor loss = criterion.forward(logits, labels);   // logits (N, C), labels (N) int64
//
// The class weights, when given, are registered as the buffer "weight" (PyTorch's name).
#include "nn/module.h"
#include "ops/softmax.h"

namespace sg::nn {

using CrossEntropyLossOptions = CrossEntropyOptions;  // weight, ignore_index, label_smoothing, reduction

class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(CrossEntropyLossOptions options = {});
  Tensor forward(const Tensor& logits, const Tensor& target);
  Tensor operator()(const Tensor& logits, const Tensor& target) { return forward(logits, target); }
  using Module::forward;  // the one-input forward throws: a loss takes two inputs

  const CrossEntropyLossOptions options;
};

}  // namespace sg::nn
