#include "nn/conv.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "nn/init.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace sg::nn {

namespace {
std::string pair(const Size2d& s) { return fmt::format("({}, {})", s.h, s.w); }
}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, Size2d k, Generator& gen, Conv2dOptions o)
    : Module("Conv2d"), in_channels(in), out_channels(out), kernel_size(k), options(o) {
  SG_CHECK(in > 0 && out > 0, "Conv2d: in_channels and out_channels must be positive, got {} and {}", in, out);
  SG_CHECK(k.h > 0 && k.w > 0, "Conv2d: kernel_size must be positive, got {}", pair(k));
  SG_CHECK(o.groups >= 1 && in % o.groups == 0 && out % o.groups == 0,
           "Conv2d: groups {} must divide in_channels {} and out_channels {}", o.groups, in, out);
  weight = empty({out, in / o.groups, k.h, k.w}, o.dtype);
  init::kaiming_uniform_(weight, gen, std::sqrt(5.0));
  register_parameter("weight", &weight);
  if (o.bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in / o.groups * k.h * k.w));
    bias = empty({out}, o.dtype);
    init::uniform_(bias, -bound, bound, gen);
    register_parameter("bias", &bias);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight, bias, {.stride = options.stride, .padding = options.padding, .dilation = options.dilation,
                                  .groups = options.groups});
}

std::string Conv2d::extra_repr() const {
  std::string padding;
  switch (options.padding.mode) {
    case Padding2d::Mode::Same: padding = "same"; break;
    case Padding2d::Mode::Valid: padding = "valid"; break;
    case Padding2d::Mode::Explicit: padding = pair({options.padding.h, options.padding.w}); break;
  }
  return fmt::format("{}, {}, kernel_size={}, stride={}, padding={}, dilation={}, groups={}, bias={}", in_channels,
                     out_channels, pair(kernel_size), pair(options.stride), padding, pair(options.dilation),
                     options.groups, bias.defined());
}

MaxPool2d::MaxPool2d(Size2d k, MaxPool2dOptions o) : Module("MaxPool2d"), kernel_size(k), options(o) {}
std::string MaxPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}, dilation={}, ceil_mode={}", pair(kernel_size),
                     pair(options.stride.value_or(kernel_size)), pair(options.padding), pair(options.dilation),
                     options.ceil_mode);
}

AvgPool2d::AvgPool2d(Size2d k, AvgPool2dOptions o) : Module("AvgPool2d"), kernel_size(k), options(o) {}
std::string AvgPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}, ceil_mode={}, count_include_pad={}", pair(kernel_size),
                     pair(options.stride.value_or(kernel_size)), pair(options.padding), options.ceil_mode,
                     options.count_include_pad);
}

std::string AdaptiveAvgPool2d::extra_repr() const { return fmt::format("output_size={}", pair(output_size)); }

Tensor Flatten::forward(const Tensor& x) { return sg::flatten(x, start_dim, end_dim); }
std::string Flatten::extra_repr() const { return fmt::format("start_dim={}, end_dim={}", start_dim, end_dim); }

Tensor Unflatten::forward(const Tensor& x) {
  SG_CHECK(dim >= -x.dim() && dim < x.dim(), "Unflatten: dim {} is out of range for input {}", dim, x.shape());
  const size_t d = static_cast<size_t>(dim < 0 ? dim + x.dim() : dim);
  int64_t product = 1;
  for (const int64_t s : sizes) product *= s;
  SG_CHECK(product == x.size(static_cast<int64_t>(d)),
           "Unflatten: sizes {} (product {}) do not match dim {} of size {} of input {}", sizes, product, dim,
           x.size(static_cast<int64_t>(d)), x.shape());
  Shape shape(x.shape().begin(), x.shape().begin() + static_cast<std::ptrdiff_t>(d));
  shape.insert(shape.end(), sizes.begin(), sizes.end());
  shape.insert(shape.end(), x.shape().begin() + static_cast<std::ptrdiff_t>(d) + 1, x.shape().end());
  return x.reshape(shape);
}
std::string Unflatten::extra_repr() const { return fmt::format("dim={}, unflattened_size={}", dim, sizes); }

BatchNormBase::BatchNormBase(std::string type, int64_t C, BatchNormOptions o, std::vector<int64_t> dims)
    : Module(std::move(type)), num_features(C), options(o), dims_(std::move(dims)) {
  SG_CHECK(C > 0, "{}: num_features must be positive, got {}", type_name(), C);
  if (o.affine) {
    weight = ones({C}, o.dtype);
    bias = zeros({C}, o.dtype);
    register_parameter("weight", &weight);
    register_parameter("bias", &bias);
  }
  if (o.track_running_stats) {
    running_mean = zeros({C}, o.dtype);
    running_var = ones({C}, o.dtype);
    num_batches_tracked = zeros({}, kInt64);
    register_buffer("running_mean", &running_mean);
    register_buffer("running_var", &running_var);
    register_buffer("num_batches_tracked", &num_batches_tracked);
  }
}

Tensor BatchNormBase::forward(const Tensor& x) {
  check_defined(type_name(), x, "input");
  SG_CHECK(std::find(dims_.begin(), dims_.end(), x.dim()) != dims_.end(), "{}: expected a {}-D input, got {}",
           type_name(), fmt::join(dims_, "- or "), x.shape());
  SG_CHECK(x.size(1) == num_features, "{}: input {} has {} channels, the layer {}", type_name(), x.shape(), x.size(1),
           num_features);
  const bool use_batch_stats = is_training() || !options.track_running_stats;
  if (is_training() && options.track_running_stats) {
    NoGradGuard no_grad;
    num_batches_tracked = num_batches_tracked + 1.0;
  }
  return batch_norm(x, options.track_running_stats ? running_mean : Tensor(),
                    options.track_running_stats ? running_var : Tensor(), weight, bias,
                    {.training = use_batch_stats, .momentum = options.momentum, .eps = options.eps});
}

std::string BatchNormBase::extra_repr() const {
  return fmt::format("{}, eps={}, momentum={}, affine={}, track_running_stats={}", num_features, options.eps,
                     options.momentum, options.affine, options.track_running_stats);
}

}  // namespace sg::nn
