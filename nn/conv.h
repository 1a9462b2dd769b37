#pragma once
// Convolutional layers with PyTorch's names, arguments and default init:
//   Conv2d(in, out, kernel, gen, {stride, padding, dilation, groups, bias, dtype})
//       weight (out, in / groups, kh, kw) from kaiming_uniform_(a = sqrt(5)), i.e.
//       U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups kh kw; bias (out) alike
//   MaxPool2d(kernel, {stride, padding, dilation, ceil_mode}), AvgPool2d(kernel, {...}),
//   AdaptiveAvgPool2d(output_size), Flatten(start_dim = 1, end_dim = -1),
//   Unflatten(dim, sizes): dim of x becomes `sizes` (Unflatten(1, {1, 28}) turns MNIST's
//       (N, 28, 28) into the (N, 1, 28, 28) a Conv2d takes)
//   BatchNorm1d / BatchNorm2d(num_features, {eps, momentum, affine, track_running_stats, dtype}):
//       weight ones, bias zeros; buffers running_mean zeros, running_var ones and
//       num_batches_tracked (int64 scalar), saved and loaded with the module (PyTorch's
//       state_dict names). Training mode normalizes with the batch's statistics and
//       updates the running ones; eval mode uses the running ones (module.eval()).
#include <string>

#include "core/generator.h"
#include "nn/module.h"
#include "ops/batch_norm.h"
#include "ops/conv.h"
#include "ops/pooling.h"

namespace sg::nn {

struct Conv2dOptions {
  Size2d stride = 1;
  Padding2d padding = 0;
  Size2d dilation = 1;
  int64_t groups = 1;
  bool bias = true;
  Dtype dtype = kFloat32;
};

class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Size2d kernel_size, Generator& gen, Conv2dOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  Tensor weight;  // (out_channels, in_channels / groups, kh, kw)
  Tensor bias;    // (out_channels), undefined without bias
  const int64_t in_channels, out_channels;
  const Size2d kernel_size;
  const Conv2dOptions options;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Size2d kernel_size, MaxPool2dOptions options = {});
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel_size, options).values; }
  std::string extra_repr() const override;
  const Size2d kernel_size;
  const MaxPool2dOptions options;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Size2d kernel_size, AvgPool2dOptions options = {});
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, kernel_size, options); }
  std::string extra_repr() const override;
  const Size2d kernel_size;
  const AvgPool2dOptions options;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Size2d output_size) : Module("AdaptiveAvgPool2d"), output_size(output_size) {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, output_size); }
  std::string extra_repr() const override;
  const Size2d output_size;
};

class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : Module("Flatten"), start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  const int64_t start_dim, end_dim;
};

class Unflatten : public Module {
 public:
  Unflatten(int64_t dim, Shape sizes) : Module("Unflatten"), dim(dim), sizes(std::move(sizes)) {}
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  const int64_t dim;
  const Shape sizes;
};

struct BatchNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
  Dtype dtype = kFloat32;
};

// The shared body of BatchNorm1d and BatchNorm2d; `dims` the input ranks it accepts.
class BatchNormBase : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  Tensor weight, bias;                                  // (C), when affine
  Tensor running_mean, running_var, num_batches_tracked;  // buffers, when tracking
  const int64_t num_features;
  const BatchNormOptions options;

 protected:
  BatchNormBase(std::string type, int64_t num_features, BatchNormOptions options, std::vector<int64_t> dims);

 private:
  std::vector<int64_t> dims_;
};

class BatchNorm1d : public BatchNormBase {  // (N, C) or (N, C, L)
 public:
  explicit BatchNorm1d(int64_t num_features, BatchNormOptions options = {})
      : BatchNormBase("BatchNorm1d", num_features, options, {2, 3}) {}
};

class BatchNorm2d : public BatchNormBase {  // (N, C, H, W)
 public:
  explicit BatchNorm2d(int64_t num_features, BatchNormOptions options = {})
      : BatchNormBase("BatchNorm2d", num_features, options, {4}) {}
};

}  // namespace sg::nn
