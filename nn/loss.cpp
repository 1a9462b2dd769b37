#include "nn/loss.h"

namespace sg::nn {

CrossEntropyLoss::CrossEntropyLoss(CrossEntropyLossOptions opts) : Module("CrossEntropyLoss"), options(opts) {
  SG_CHECK(opts.label_smoothing >= 0.0 && opts.label_smoothing <= 1.0,
           "CrossEntropyLoss: label_smoothing must be in [0, 1], got {}", opts.label_smoothing);
  if (opts.weight.defined()) register_buffer("weight", opts.weight);
}

Tensor CrossEntropyLoss::forward(const Tensor& logits, const Tensor& target) {
  return cross_entropy(logits, target, options);
}

}  // namespace sg::nn
