#include "nn/linear.h"

#include <cmath>

#include "nn/init.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace sg::nn {

Linear::Linear(int64_t in, int64_t out, Generator& gen, LinearOptions options)
    : Module("Linear"), in_features(in), out_features(out) {
  SG_CHECK(in > 0 && out > 0, "Linear: in_features and out_features must be positive, got {} and {}", in, out);
  weight = empty({out, in}, options.dtype);
  init::kaiming_uniform_(weight, gen, std::sqrt(5.0));
  register_parameter("weight", &weight);
  if (options.bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    bias = empty({out}, options.dtype);
    init::uniform_(bias, -bound, bound, gen);
    register_parameter("bias", &bias);
  }
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

std::string Linear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", in_features, out_features, bias.defined());
}

}  // namespace sg::nn
