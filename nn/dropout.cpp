#include "nn/dropout.h"

#include <fmt/format.h>

#include "ops/dropout.h"

namespace sg::nn {

Dropout::Dropout(double p, Generator& gen) : Module("Dropout"), p(p), gen_(0) {
  SG_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability p must be in [0, 1], got {}", p);
  gen_.manual_seed(gen.next_u64());
  register_generator("generator", gen_);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training(), gen_); }

std::string Dropout::extra_repr() const { return fmt::format("p={}", p); }

}  // namespace sg::nn
