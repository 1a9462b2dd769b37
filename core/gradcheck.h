#pragma once
// Gradient checking with PyTorch's semantics (torch.autograd.gradcheck): float64 inputs,
// central differences, every Jacobian entry compared as |a - n| <= atol + rtol * |n|,
// and backward checked to be linear in the output gradient. For large Jacobians a set of
// random projections u^T J v is compared instead of every entry.
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sg {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  // Jacobians with more entries than this are checked with random projections.
  int64_t max_full_entries = 1 << 18;
  int projections = 8;
  uint64_t seed = 0;
  bool raise = true;  // throw sg::Error with the report (else return false)
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs must be float64; the ones with requires_grad are checked. fn must return one
// float64 tensor. Returns true when everything matches.
//
// The report has one line per input whose Jacobian block differs, saying how many entries
// (or projections) differ and the worst one: where, analytical vs numerical, and the error:
//   gradcheck: Jacobian mismatch for input 0 (shape [3], output shape [3]): 3 of 9 entries
//   differ; the worst, at input entry (1), output entry (1): analytical -6 vs numerical -4,
//   error 2 (atol 1e-05, rtol 0.001)
// Whatever fn does is reported, not thrown (with raise = false): an sg::Error from fn or from
// its backward (a gradient of the wrong shape, count or dtype, ...) and an output that is not
// float64 are failed reports. Wrong arguments to gradcheck itself (a float32 or non-leaf
// input, an expanded one, no input that requires grad) throw sg::Error either way.
bool gradcheck(const TensorFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& opts = {});
// Like gradcheck, but returns "" on success or the failure report instead of throwing it.
std::string gradcheck_report(const TensorFn& fn, const std::vector<Tensor>& inputs,
                             const GradcheckOptions& opts = {});

// Full Jacobians of fn at x, as (numel(out), numel(x)) float64 matrices (row-major).
Tensor jacobian(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x);          // analytic (backward)
Tensor numerical_jacobian(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x, double eps = 1e-6);

}  // namespace sg
