#pragma once
// Elementwise ops. Binary ops broadcast NumPy-style; both operands must share a dtype
// (a C++ scalar takes the tensor's dtype). Floating ops (exp, log, ...) take float32 or
// float64; add/sub/mul/neg/abs/relu/clamp and comparisons also take int64.
// Every floating op is differentiable.
#include <optional>

#include "core/tensor.h"

namespace sg {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);  // floating only
Tensor pow(const Tensor& a, const Tensor& b);  // floating only; d/db needs a > 0
Tensor pow(const Tensor& a, double exponent);

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);  // gradient sign(x), 0 at 0 (as PyTorch)
Tensor relu(const Tensor& x);  // gradient 0 at 0 (as PyTorch)
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
enum class GeluApprox { None, Tanh };  // exact erf form, or the tanh approximation
Tensor gelu(const Tensor& x, GeluApprox approximate = GeluApprox::None);
// Either bound may be omitted; gradient passes where min <= x <= max (as PyTorch).
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);

// Comparisons broadcast and return bool tensors; no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
// Classification of values (as PyTorch): bool tensors of x's shape, no gradient. Integer
// and bool tensors are finite everywhere.
Tensor isfinite(const Tensor& x);
Tensor isnan(const Tensor& x);
Tensor isinf(const Tensor& x);

// cond ? a : b with broadcasting over all three; cond is bool. Differentiable in a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// x with `value` where mask (bool, broadcastable to x) is true. Differentiable in x.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// In-place updates for optimizers and initialization. They refuse a tensor that requires
// grad while grad mode is on, and bump the storage version.
Tensor& add_(Tensor& self, const Tensor& other, double alpha = 1.0);  // self += alpha * other
Tensor& mul_(Tensor& self, double factor);
Tensor& fill_(Tensor& self, double value);
Tensor& zero_(Tensor& self);
Tensor& copy_(Tensor& self, const Tensor& src);  // src broadcast to self; dtype converted

// Operators forward to the functions above. A double operand takes the tensor's dtype.
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<=(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>=(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, double b);
Tensor operator<=(const Tensor& a, double b);
Tensor operator>(const Tensor& a, double b);
Tensor operator>=(const Tensor& a, double b);

}  // namespace sg
