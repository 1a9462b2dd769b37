#include "nn/linear.h"

#include <cmath>

#include "nn/init.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace sg::nn {

Linear::Linear(int64_t in, int64_t out, Generator& gen, LinearOptions options)
    : Module("Linear"), in_features(in), out_features(out) {
  SG_CHECK(in > 0 && out > 0, "Linear: in_features and out_features must be positive, got {} and {}", in, out);
  Tensor w = empty({out, in}, options.dtype);
  init::kaiming_uniform_(w, gen, std::sqrt(5.0));
  weight = register_parameter("weight", w);
  if (options.bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    Tensor b = empty({out}, options.dtype);
    init::uniform_(b, -bound, bound, gen);
    bias = register_parameter("bias", b);
  }
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

std::string Linear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", in_features, out_features, bias.defined());
}

}  // namespace sg::nn
