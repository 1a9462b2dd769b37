#pragma once
// Shared helpers for the doctest suites: random inputs (contiguous and not), closeness
// checks, error-message checks, and the one table-driven gradcheck helper every op uses.
#include <doctest/doctest.h>

#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "softgrad.h"

namespace sgtest {

using sg::Shape;
using sg::Tensor;

// Every dim of x: {0, 1, ..., dim - 1} (for all-element reductions with options).
inline std::vector<int64_t> all_dims(const Tensor& x) {
  std::vector<int64_t> dims(static_cast<size_t>(x.dim()));
  for (size_t d = 0; d < dims.size(); ++d) dims[d] = static_cast<int64_t>(d);
  return dims;
}

// Uniform float64 leaf in [lo, hi) that requires grad.
inline Tensor leaf(const Shape& shape, sg::Generator& gen, double lo = -1.0, double hi = 1.0) {
  Tensor u = sg::rand(shape, gen, sg::kFloat64);
  double* p = u.data_ptr<double>();
  for (int64_t i = 0; i < u.numel(); ++i) p[i] = lo + (hi - lo) * p[i];
  return u.requires_grad_();
}

// Same, but a non-contiguous view with a storage offset: allocated with the last two dims
// swapped and one extra leading column, narrowed past that column, then transposed back
// (for < 2 dims: every other element of a buffer twice as long).
inline Tensor leaf_noncontig(const Shape& shape, sg::Generator& gen, double lo = -1.0, double hi = 1.0) {
  Tensor base;
  if (shape.size() >= 2) {
    Shape swapped = shape;
    std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
    const int64_t cols = swapped.back();
    swapped.back() += 1;
    base = leaf(swapped, gen, lo, hi).detach();
    base = sg::narrow(base, -1, 1, cols).transpose(-1, -2);
  } else {
    const int64_t n = shape.empty() ? 1 : shape[0];
    base = sg::slice(leaf({2 * n}, gen, lo, hi).detach(), 0, 0, 2 * n, 2);
    if (shape.empty()) base = base.reshape({});
  }
  Tensor out = base.detach();
  out.requires_grad_();
  return out;
}

// Passes when gradcheck finds analytic and numerical Jacobians equal; shows the report.
inline void check_gradients(const sg::TensorFn& fn, const std::vector<Tensor>& inputs,
                            const sg::GradcheckOptions& opts = {}) {
  const std::string report = sg::gradcheck_report(fn, inputs, opts);
  CHECK_MESSAGE(report.empty(), report);
}

// One row of a gradcheck table: input shapes (float64 leaves drawn in [lo, hi)),
// whether to make them non-contiguous, and the function of those inputs.
struct GradCase {
  std::string label;
  std::vector<Shape> shapes;
  sg::TensorFn fn;
  double lo = -1.0, hi = 1.0;
  bool noncontig = false;
};

inline void run_grad_cases(const std::vector<GradCase>& cases, uint64_t seed = 1) {
  sg::Generator gen(seed);
  for (const GradCase& c : cases) {
    CAPTURE(c.label);
    std::vector<Tensor> inputs;
    for (const Shape& s : c.shapes)
      inputs.push_back(c.noncontig ? leaf_noncontig(s, gen, c.lo, c.hi) : leaf(s, gen, c.lo, c.hi));
    check_gradients(c.fn, inputs);
  }
}

// Elementwise closeness: |a - b| <= atol + rtol * |b| (b is the reference).
inline void check_close(const Tensor& a, const Tensor& b, double rtol = 1e-6, double atol = 1e-8) {
  REQUIRE_MESSAGE(a.shape() == b.shape(), fmt::format("shapes {} vs {}", a.shape(), b.shape()));
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i) {
    const bool both_nan = std::isnan(va[i]) && std::isnan(vb[i]);
    const bool ok = both_nan || va[i] == vb[i] || std::abs(va[i] - vb[i]) <= atol + rtol * std::abs(vb[i]);
    if (!ok) {
      FAIL_CHECK(fmt::format("element {}: {} vs expected {}", i, va[i], vb[i]));
      return;
    }
  }
}

inline void check_values(const Tensor& a, const std::vector<double>& expected, double rtol = 1e-6,
                         double atol = 1e-8) {
  check_close(a, sg::from_vector(expected, a.shape()), rtol, atol);
}

// Expects sg::Error whose message contains every fragment (op name, shapes, bad value).
template <typename Fn> void check_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    FAIL_CHECK("expected sg::Error, nothing was thrown");
  } catch (const sg::Error& e) {
    const std::string msg = e.what();
    for (const std::string& f : fragments) CHECK_MESSAGE(msg.find(f) != std::string::npos, "'" << f << "' not in: " << msg);
  }
}

}  // namespace sgtest
