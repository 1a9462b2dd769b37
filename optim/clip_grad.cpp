// clip_grad_norm_ (see optim/clip_grad.h): one pass over each gradient for the norm, one
// in-place scale.
#include "optim/clip_grad.h"

#include <omp.h>

#include <cmath>

#include "ops/elementwise.h"

namespace sg::optim {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 15;

// g: (n) -> sum |g|^p in double (p = 1 and 2 without pow).
template <typename T> double sum_abs_pow(const T* g, int64_t n, double p) {
  double s = 0.0;
  if (p == 2.0) {
#pragma omp parallel for simd reduction(+ : s) if (n >= kParallelMin && !omp_in_parallel())
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  } else if (p == 1.0) {
#pragma omp parallel for simd reduction(+ : s) if (n >= kParallelMin && !omp_in_parallel())
    for (int64_t i = 0; i < n; ++i) s += std::abs(static_cast<double>(g[i]));
  } else {
#pragma omp parallel for reduction(+ : s) if (n >= kParallelMin && !omp_in_parallel())
    for (int64_t i = 0; i < n; ++i) s += std::pow(std::abs(static_cast<double>(g[i])), p);
  }
  return s;
}

// g: (n) -> max |g|, NaN when any entry is NaN (torch.max propagates it).
template <typename T> double max_abs(const T* g, int64_t n) {
  double m = 0.0;
  bool nan = false;
#pragma omp parallel for simd reduction(max : m) reduction(|| : nan) if (n >= kParallelMin && !omp_in_parallel())
  for (int64_t i = 0; i < n; ++i) {
    const double a = std::abs(static_cast<double>(g[i]));
    m = a > m ? a : m;
    nan = nan || a != a;
  }
  return nan ? std::nan("") : m;
}

}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  SG_CHECK(norm_type > 0.0, "clip_grad_norm_: norm_type must be > 0 (or kInfNorm), got {}", norm_type);
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    SG_CHECK(params[i].defined(), "clip_grad_norm_: parameter {} is undefined", i);
    if (params[i].grad().defined()) grads.push_back(params[i].grad());
  }
  if (grads.empty()) return 0.0;

  const bool inf_norm = std::isinf(norm_type);
  double acc = 0.0;  // sum of |g|^p, or the running max
  for (const Tensor& grad : grads) {
    const Tensor g = grad.contiguous();
    const double part = visit_floating(g.dtype(), [&]<typename T>() {
      return inf_norm ? max_abs(g.data_ptr<T>(), g.numel()) : sum_abs_pow(g.data_ptr<T>(), g.numel(), norm_type);
    });
    acc = inf_norm ? (std::isnan(part) || std::isnan(acc) ? std::nan("") : std::max(acc, part)) : acc + part;
  }
  const double total = inf_norm ? acc : norm_type == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / norm_type);

  SG_CHECK(!error_if_nonfinite || std::isfinite(total),
           "clip_grad_norm_: the total norm of order {} of the gradients is non-finite ({}), so it cannot be clipped "
           "(pass error_if_nonfinite = false to scale the gradients by it anyway)",
           norm_type, total);
  const double clip_coef = max_norm / (total + 1e-6);
  const double clamped = std::isnan(clip_coef) ? clip_coef : std::min(clip_coef, 1.0);  // torch.clamp keeps NaN
  for (Tensor& g : grads) mul_(g, clamped);
  return total;
}

}  // namespace sg::optim
