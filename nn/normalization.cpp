#include "nn/normalization.h"

#include <fmt/format.h>

#include "ops/normalization.h"

namespace sg::nn {

LayerNorm::LayerNorm(Shape shape, LayerNormOptions opts)
    : Module("LayerNorm"), normalized_shape(std::move(shape)), options(opts) {
  SG_CHECK(!normalized_shape.empty(), "LayerNorm: normalized_shape must have at least one dim, got []");
  for (int64_t d : normalized_shape)
    SG_CHECK(d > 0, "LayerNorm: normalized_shape {} must have positive sizes", normalized_shape);
  SG_CHECK(opts.eps >= 0.0, "LayerNorm: eps must be >= 0, got {}", opts.eps);
  SG_CHECK(is_floating(opts.dtype), "LayerNorm: dtype must be float32 or float64, got {}", opts.dtype);
  if (!opts.elementwise_affine) return;
  weight = ones(normalized_shape, opts.dtype);
  register_parameter("weight", &weight);
  if (!opts.bias) return;
  bias = zeros(normalized_shape, opts.dtype);
  register_parameter("bias", &bias);
}

LayerNorm::LayerNorm(int64_t normalized_size, LayerNormOptions opts) : LayerNorm(Shape{normalized_size}, opts) {}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, normalized_shape, weight, bias, options.eps); }

std::string LayerNorm::extra_repr() const {
  // normalized_shape as a Python tuple, as PyTorch prints it: (64,) or (8, 8).
  std::string shape = "(";
  for (size_t d = 0; d < normalized_shape.size(); ++d) shape += (d ? ", " : "") + std::to_string(normalized_shape[d]);
  shape += normalized_shape.size() == 1 ? ",)" : ")";
  std::string out = fmt::format("{}, eps={}, elementwise_affine={}", shape, options.eps, options.elementwise_affine);
  if (options.elementwise_affine && !options.bias) out += ", bias=false";
  return out;
}

}  // namespace sg::nn
