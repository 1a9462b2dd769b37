#pragma once
// TensorDataset and Normalize (PyTorch's torch.utils.data.TensorDataset and
// torchvision.transforms.Normalize, for whole tensors).
//
//   sg::data::TensorDataset ds(images, labels);            // (N, 784) float32, (N) int64
//   sg::data::Batch b = ds.get_batch(std::vector<int64_t>{4, 0, 7});
//   // b.x is (3, 784): rows 4, 0, 7; b.y is (3)
//   sg::data::kMnistNormalize.apply_(images);              // once, in place: (x - 0.1307) / 0.3081
//
// Data tensors never require grad: the dataset keeps detached contiguous copies' handles
// (no copy when the input already is contiguous), and every batch is a fresh tensor.
#include <cstdint>
#include <span>

#include "core/generator.h"
#include "core/tensor.h"

namespace sg::data {

// One mini-batch: x (B, ...) inputs, y (B, ...) targets. Both freshly allocated (never a
// view of the dataset or of another batch), contiguous, not requiring grad.
struct Batch {
  Tensor x;
  Tensor y;
};

class TensorDataset {
 public:
  // inputs (N, ...) and targets (N, ...): the first dim counts samples and must agree.
  // Non-contiguous tensors are copied once; tensors that require grad are refused (a data
  // set is not a parameter; detach() it explicitly if that is what you mean).
  TensorDataset(const Tensor& inputs, const Tensor& targets);

  int64_t size() const { return inputs_.size(0); }
  const Tensor& inputs() const { return inputs_; }
  const Tensor& targets() const { return targets_; }

  // Gathers the rows `indices` (each in [0, size())) into a new batch: one memcpy per row.
  Batch get_batch(std::span<const int64_t> indices) const;

 private:
  Tensor inputs_, targets_;
};

// x -> (x - mean) / std, elementwise, in x's floating dtype (float32 arithmetic for a
// float32 tensor, as torchvision does).
struct Normalize {
  double mean = 0.0;
  double std = 1.0;  // must be positive and finite

  Tensor operator()(const Tensor& x) const;  // a new contiguous tensor
  void apply_(const Tensor& x) const;        // in place; x must be contiguous and not require grad
  void check() const;                        // throws unless std > 0 and both are finite
};

// Random translation, the usual augmentation for MNIST-like digits: each image of a batch
// x (B, H, W) moves by its own (dy, dx), each uniform in [-max_pixels, max_pixels]; pixels
// moved in from outside take `fill` (the background: 0, or -mean/std after Normalize).
// Draws two numbers per image from gen.
struct RandomShift {
  int64_t max_pixels = 2;  // >= 0
  double fill = 0.0;

  void apply_(const Tensor& x, Generator& gen) const;  // in place; x contiguous floating (B, H, W)
  void check() const;
};

// The usual constants (per-pixel mean and standard deviation of the training images in [0, 1]).
inline constexpr Normalize kMnistNormalize{0.1307, 0.3081};
inline constexpr Normalize kFashionMnistNormalize{0.2860, 0.3530};

}  // namespace sg::data
