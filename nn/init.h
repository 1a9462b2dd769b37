#pragma once
// Parameter initialization, PyTorch's torch.nn.init formulas, drawing from an explicit
// generator. Each fills the tensor in place (under no-grad) and returns it.
//
// fan_in / fan_out of a (out, in, k...) weight: in * prod(k), out * prod(k).
//   kaiming_uniform_  U(-b, b), b = gain * sqrt(3 / fan), gain = sqrt(2 / (1 + a^2))
//                     (leaky_relu's gain; a = 0 is ReLU's); fan = fan_in or fan_out
//   kaiming_normal_   N(0, (gain / sqrt(fan))^2)
//   xavier_uniform_   U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))
//   xavier_normal_    N(0, (gain * sqrt(2 / (fan_in + fan_out)))^2)
#include <cstdint>
#include <utility>

#include "core/generator.h"
#include "core/tensor.h"

namespace sg::nn::init {

enum class FanMode { FanIn, FanOut };

std::pair<int64_t, int64_t> fan_in_and_fan_out(const Tensor& t);  // needs >= 2 dims

Tensor& uniform_(Tensor& t, double low, double high, Generator& gen);
Tensor& normal_(Tensor& t, double mean, double std, Generator& gen);
Tensor& constant_(Tensor& t, double value);
Tensor& zeros_(Tensor& t);
Tensor& ones_(Tensor& t);
Tensor& kaiming_uniform_(Tensor& t, Generator& gen, double a = 0.0, FanMode mode = FanMode::FanIn);
Tensor& kaiming_normal_(Tensor& t, Generator& gen, double a = 0.0, FanMode mode = FanMode::FanIn);
Tensor& xavier_uniform_(Tensor& t, Generator& gen, double gain = 1.0);
Tensor& xavier_normal_(Tensor& t, Generator& gen, double gain = 1.0);

}  // namespace sg::nn::init
