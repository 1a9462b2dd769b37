#pragma once
// Gradient clipping by total norm: PyTorch 1.13's torch.nn.utils.clip_grad_norm_.
//
//   loss.backward();
//   double norm = sg::optim::clip_grad_norm_(net.parameters(), /*max_norm=*/1.0);
//   opt.step();
//
// The total norm is the norm_type-norm of all gradients together, as if concatenated into
// one vector (parameters without a gradient are skipped):
//   total = (sum over all gradient entries of |g|^p)^(1/p),   p = norm_type > 0
//   total = max |g|                                           p = +infinity
// Every gradient is then multiplied in place by min(1, max_norm / (total + 1e-6)) (also
// when that is 1, as PyTorch does), and total is returned. Sums run in double for float32
// gradients too. With no gradient at all the result is 0 and nothing changes.
// error_if_nonfinite: throw instead of scaling when total is NaN or infinite (PyTorch's
// RuntimeError); otherwise a NaN total makes every gradient NaN, as in PyTorch.
#include <limits>
#include <vector>

#include "core/tensor.h"

namespace sg::optim {

inline constexpr double kInfNorm = std::numeric_limits<double>::infinity();

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

}  // namespace sg::optim
