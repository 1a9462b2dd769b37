#include "nn/linear.h"

#include <cmath>

#include "nn/init.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace sg::nn {

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  SG_CHECK(x.defined() && weight.defined() && weight.dim() == 2,
           "linear: expected a defined input and a 2-D weight, got input {} and weight {}",
           x.defined() ? fmt::format("{}", x.shape()) : "undefined",
           weight.defined() ? fmt::format("{}", weight.shape()) : "undefined");
  SG_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1),
           "linear: input {} has {} features, the weight {} expects {}", x.shape(), x.dim() ? x.size(-1) : 0,
           weight.shape(), weight.size(1));
  const Tensor y = matmul(x, weight.t());  // the transposed view goes to BLAS as a flag
  if (!bias.defined()) return y;
  SG_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias {} does not match the weight {}",
           bias.shape(), weight.shape());
  return y + bias;
}

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
