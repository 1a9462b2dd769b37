#include "nn/init.h"

#include <cmath>

#include "core/autograd.h"
#include "ops/elementwise.h"

namespace sg::nn::init {

std::pair<int64_t, int64_t> fan_in_and_fan_out(const Tensor& t) {
  SG_CHECK(t.dim() >= 2, "init: fan in and fan out need a tensor of at least 2 dims, got shape {}", t.shape());
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

Tensor& uniform_(Tensor& t, double low, double high, Generator& gen) {
  NoGradGuard no_grad;
  return copy_(t, rand(t.shape(), gen, kFloat64) * (high - low) + low);
}

Tensor& normal_(Tensor& t, double mean, double std, Generator& gen) {
  NoGradGuard no_grad;
  return copy_(t, randn(t.shape(), gen, kFloat64) * std + mean);
}

Tensor& constant_(Tensor& t, double value) {
  NoGradGuard no_grad;
  return fill_(t, value);
}
Tensor& zeros_(Tensor& t) { return constant_(t, 0.0); }
Tensor& ones_(Tensor& t) { return constant_(t, 1.0); }

namespace {
double kaiming_std(const Tensor& t, double a, FanMode mode) {
  const auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  const double fan = static_cast<double>(mode == FanMode::FanIn ? fan_in : fan_out);
  SG_CHECK(fan > 0, "init: kaiming init of a tensor of shape {} with a zero fan", t.shape());
  return std::sqrt(2.0 / (1.0 + a * a)) / std::sqrt(fan);
}
double xavier_std(const Tensor& t, double gain) {
  const auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  return gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
}
}  // namespace

Tensor& kaiming_uniform_(Tensor& t, Generator& gen, double a, FanMode mode) {
  const double bound = std::sqrt(3.0) * kaiming_std(t, a, mode);
  return uniform_(t, -bound, bound, gen);
}
Tensor& kaiming_normal_(Tensor& t, Generator& gen, double a, FanMode mode) {
  return normal_(t, 0.0, kaiming_std(t, a, mode), gen);
}
Tensor& xavier_uniform_(Tensor& t, Generator& gen, double gain) {
  const double bound = std::sqrt(3.0) * xavier_std(t, gain);
  return uniform_(t, -bound, bound, gen);
}
Tensor& xavier_normal_(Tensor& t, Generator& gen, double gain) { return normal_(t, 0.0, xavier_std(t, gain), gen); }

}  // namespace sg::nn::init
