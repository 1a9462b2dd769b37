// gradcheck: compares the analytic Jacobian (one backward per output entry, or per random
// projection) with central differences, entry by entry, like torch.autograd.gradcheck.
#include "core/gradcheck.h"

#include <cmath>
#include <limits>
#include <string_view>

#include "core/autograd.h"
#include "core/kernels.h"

namespace sg {

namespace {

// Offset (in elements, from the data pointer) of the logical row-major entry `j`.
int64_t strided_offset(const Tensor& t, int64_t j) {
  int64_t off = 0;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (j % t.shape()[d]) * t.strides()[d];
    j /= t.shape()[d];
  }
  return off;
}

std::string index_str(const Shape& shape, int64_t j) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = j % shape[d];
    j /= shape[d];
  }
  return fmt::format("({})", fmt::join(idx, ", "));
}

// NOTE: an sg::Error from fn or from its backward is a finding about fn, not a failure of
// gradcheck: these wrappers say where it came from, and gradcheck_report returns it.
std::vector<double> eval(const TensorFn& fn, const std::vector<Tensor>& inputs) {
  NoGradGuard no_grad;
  try {
    Tensor out = fn(inputs);
    return out.to_vector<double>();
  } catch (const Error& e) {
    throw Error(fmt::format("fn raised an error at a perturbed input (numerical Jacobian): {}", e.what()));
  }
}

// Runs fn with graph, then one backward per gradient in `seeds`; returns, per seed, the
// gradients of every input (flattened, zeros where none reached).
struct Analytic {
  const TensorFn& fn;
  const std::vector<Tensor>& inputs;
  Tensor out;

  Analytic(const TensorFn& f, const std::vector<Tensor>& in) : fn(f), inputs(in) {
    try {
      out = fn(inputs);
    } catch (const Error& e) {
      throw Error(fmt::format("fn raised an error at the inputs: {}", e.what()));
    }
  }

  std::vector<std::vector<double>> vjp(const Tensor& seed) {
    for (const Tensor& x : inputs)
      if (x.requires_grad()) Tensor(x).zero_grad();
    try {
      if (out.requires_grad()) out.backward(seed, /*retain_graph=*/true);
    } catch (const Error& e) {
      throw Error(fmt::format("the backward pass raised an error (analytical Jacobian): {}", e.what()));
    }
    std::vector<std::vector<double>> result;
    for (const Tensor& x : inputs) {
      Tensor g = x.requires_grad() ? x.grad() : Tensor();
      result.push_back(g.defined() ? g.to_vector<double>() : std::vector<double>(static_cast<size_t>(x.numel()), 0.0));
    }
    return result;
  }
};

Tensor one_hot_like(const Tensor& out, int64_t k) {
  Tensor seed = zeros(out.shape(), out.dtype());
  visit_dtype(out.dtype(), [&]<typename T>() { seed.data_ptr<T>()[k] = cast_value<T>(1, "gradcheck"); });
  return seed;
}

bool close(double a, double n, const GradcheckOptions& o) {
  if (std::isnan(a) || std::isnan(n)) return std::isnan(a) && std::isnan(n);
  return std::abs(a - n) <= o.atol + o.rtol * std::abs(n);
}

// The entries that differ among those compared: how many, and the worst (largest
// |analytical - numerical|; a NaN or infinite difference is the worst there is).
struct Mismatches {
  int64_t compared = 0, failed = 0;
  double analytic = 0, numeric = 0, error = -1;
  std::string where;  // of the worst

  template <typename Where> void add(double a, double n, bool ok, Where&& where_fn) {
    ++compared;
    if (ok) return;
    ++failed;
    double err = std::abs(a - n);
    if (std::isnan(err)) err = std::numeric_limits<double>::infinity();
    if (err > error) {
      error = err;
      analytic = a;
      numeric = n;
      where = where_fn();
    }
  }
  // "2 of 12 entries differ; the worst, at <where>: analytical a vs numerical n, error e"
  std::string summary(std::string_view noun, std::string_view noun_plural, std::string_view a_label = "analytical",
                      std::string_view n_label = "numerical") const {
    return fmt::format("{} of {} {}; the worst, at {}: {} {:.9g} vs {} {:.9g}, error {:.3g}", failed,
                       plural(compared, noun, noun_plural), failed == 1 ? "differs" : "differ", where, a_label,
                       analytic, n_label, numeric, error);
  }
};

// Central difference of fn's outputs w.r.t. input entry j (perturbing storage in place).
std::vector<double> numerical_column(const TensorFn& fn, const std::vector<Tensor>& inputs, const Tensor& x,
                                     int64_t j, double eps) {
  double* p = static_cast<double*>(x.raw_data()) + strided_offset(x, j);
  const double orig = *p;
  *p = orig + eps;
  std::vector<double> plus = eval(fn, inputs);
  *p = orig - eps;
  std::vector<double> minus = eval(fn, inputs);
  *p = orig;
  for (size_t k = 0; k < plus.size(); ++k) plus[k] = (plus[k] - minus[k]) / (2 * eps);
  return plus;
}

// Every entry of input i's Jacobian block, analytical (rows from backward) vs numerical.
std::string check_full(const TensorFn& fn, const std::vector<Tensor>& inputs, size_t i, Analytic& an,
                       const std::vector<std::vector<double>>& analytic_rows, const GradcheckOptions& o) {
  const Tensor& x = inputs[i];
  const int64_t m = an.out.numel();
  Mismatches bad;
  for (int64_t j = 0; j < x.numel(); ++j) {
    const std::vector<double> col = numerical_column(fn, inputs, x, j, o.eps);
    for (int64_t k = 0; k < m; ++k) {
      const double a = analytic_rows[k][j], n = col[k];
      bad.add(a, n, close(a, n, o), [&] {
        return fmt::format("input entry {}, output entry {}", index_str(x.shape(), j), index_str(an.out.shape(), k));
      });
    }
  }
  if (bad.failed == 0) return "";
  return fmt::format("gradcheck: Jacobian mismatch for input {} (shape {}, output shape {}): {} (atol {}, rtol {})", i,
                     x.shape(), an.out.shape(), bad.summary("entry", "entries"), o.atol, o.rtol);
}

// o.projections random projections u^T J v of input i's Jacobian block.
std::string check_projected(const TensorFn& fn, const std::vector<Tensor>& inputs, size_t i, Analytic& an,
                            const GradcheckOptions& o, Generator& gen) {
  const Tensor& x = inputs[i];
  Mismatches bad;
  for (int p = 0; p < o.projections; ++p) {
    Tensor u = randn(an.out.shape(), gen, an.out.dtype());
    std::vector<double> v(static_cast<size_t>(x.numel()));
    for (double& e : v) e = gen.normal();
    // analytic: <grad_x(u), v>
    const std::vector<double> gx = an.vjp(u)[i];
    double a = 0;
    for (size_t j = 0; j < v.size(); ++j) a += gx[j] * v[j];
    // numerical: <u, (f(x + eps v) - f(x - eps v)) / 2eps>
    double* base = static_cast<double*>(x.raw_data());
    const Tensor original = make_contiguous_copy(x);
    auto shifted_eval = [&](double s) {  // f(x + s v), then x restored exactly
      for (int64_t j = 0; j < x.numel(); ++j) base[strided_offset(x, j)] += s * v[static_cast<size_t>(j)];
      std::vector<double> out = eval(fn, inputs);
      copy_kernel(x, original);
      return out;
    };
    const std::vector<double> plus = shifted_eval(o.eps);
    const std::vector<double> minus = shifted_eval(-o.eps);
    const std::vector<double> uv = u.to_vector<double>();
    double n = 0;
    for (size_t k = 0; k < uv.size(); ++k) n += uv[k] * (plus[k] - minus[k]) / (2 * o.eps);
    bad.add(a, n, close(a, n, o), [&] { return fmt::format("projection {}", p); });
  }
  if (bad.failed == 0) return "";
  return fmt::format("gradcheck: projected Jacobian mismatch for input {} (shape {}, output shape {}): {} (atol {}, "
                     "rtol {})",
                     i, x.shape(), an.out.shape(), bad.summary("projection", "projections"), o.atol, o.rtol);
}

// backward must be linear in the output gradient: vjp(2 g1 + 3 g2) = 2 vjp(g1) + 3 vjp(g2).
std::string check_linearity(Analytic& an, Generator& gen, const GradcheckOptions& o) {
  Tensor g1 = randn(an.out.shape(), gen, an.out.dtype()), g2 = randn(an.out.shape(), gen, an.out.dtype());
  Tensor mix = make_contiguous_copy(g1);
  double* pm = static_cast<double*>(mix.raw_data());
  const double* p1 = static_cast<const double*>(g1.raw_data());
  const double* p2 = static_cast<const double*>(g2.raw_data());
  for (int64_t k = 0; k < mix.numel(); ++k) pm[k] = 2 * p1[k] + 3 * p2[k];
  const auto a1 = an.vjp(g1), a2 = an.vjp(g2), am = an.vjp(mix);
  std::string report;
  for (size_t i = 0; i < am.size(); ++i) {
    Mismatches bad;
    for (size_t j = 0; j < am[i].size(); ++j) {
      const double expect = 2 * a1[i][j] + 3 * a2[i][j];
      bad.add(am[i][j], expect, std::abs(am[i][j] - expect) <= o.atol + 1e-7 * std::abs(expect),
              [&] { return fmt::format("entry {}", index_str(an.inputs[i].shape(), static_cast<int64_t>(j))); });
    }
    if (bad.failed == 0) continue;
    if (!report.empty()) report += "\n";
    report += fmt::format(
        "gradcheck: backward is not linear in the output gradient for input {} (shape {}): {}", i,
        an.inputs[i].shape(), bad.summary("entry", "entries", "vjp(2 g1 + 3 g2)", "2 vjp(g1) + 3 vjp(g2)"));
  }
  return report;
}

// Puts the caller's inputs (values) and their gradients back when gradcheck ends, even
// when fn or a backward throws halfway through a perturbation.
class RestoreInputs {
 public:
  explicit RestoreInputs(const std::vector<Tensor>& inputs) : inputs_(inputs) {
    for (const Tensor& x : inputs_) {
      const bool checked = x.defined() && x.requires_grad();
      values_.push_back(checked ? make_contiguous_copy(x) : Tensor());
      grads_.push_back(checked ? x.impl()->grad : nullptr);
    }
  }
  ~RestoreInputs() {
    for (size_t i = 0; i < inputs_.size(); ++i) {
      if (!values_[i].defined()) continue;
      copy_kernel(inputs_[i], values_[i]);
      inputs_[i].impl()->grad = grads_[i];
    }
  }
  RestoreInputs(const RestoreInputs&) = delete;
  RestoreInputs& operator=(const RestoreInputs&) = delete;

 private:
  const std::vector<Tensor>& inputs_;
  std::vector<Tensor> values_;
  std::vector<std::shared_ptr<TensorImpl>> grads_;
};

// Every check, in order; "" when all pass.
std::string check_all(const TensorFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& o) {
  Generator gen(o.seed);
  Analytic an(fn, inputs);
  if (!an.out.defined() || an.out.dtype() != kFloat64)
    return fmt::format("gradcheck: fn must return a float64 tensor, got {}",
                       an.out.defined() ? fmt::format("{} of shape {}", an.out.dtype(), an.out.shape())
                                        : std::string("an undefined tensor"));
  std::string report;
  const int64_t m = an.out.numel();

  std::vector<std::vector<std::vector<double>>> rows;  // [k][input][j], only in full mode
  auto analytic_rows = [&](size_t i) {
    if (rows.empty())
      for (int64_t k = 0; k < m; ++k) rows.push_back(an.vjp(one_hot_like(an.out, k)));
    std::vector<std::vector<double>> r;
    for (int64_t k = 0; k < m; ++k) r.push_back(rows[static_cast<size_t>(k)][i]);
    return r;
  };
  for (size_t i = 0; i < inputs.size(); ++i) {  // one line per input whose block differs
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    const std::string r = m * x.numel() <= o.max_full_entries ? check_full(fn, inputs, i, an, analytic_rows(i), o)
                                                               : check_projected(fn, inputs, i, an, o, gen);
    if (!r.empty()) report += (report.empty() ? "" : "\n") + r;
  }
  if (report.empty() && m > 0) report = check_linearity(an, gen, o);
  return report;
}

}  // namespace

std::string gradcheck_report(const TensorFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& o) {
  bool any = false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    SG_CHECK(!x.defined() || x.dtype() != kBFloat16,
             "gradcheck: input {} (shape {}) is bfloat16; gradcheck needs float64 inputs (bfloat16 tensors cannot "
             "require grad: pass x.to(kFloat64).requires_grad_())",
             i, x.shape());
    if (!x.defined() || !x.requires_grad()) continue;
    any = true;
    SG_CHECK(x.dtype() == kFloat64, "gradcheck: input {} (shape {}) is {}; gradcheck needs float64 inputs", i,
             x.shape(), x.dtype());
    SG_CHECK(x.is_leaf(), "gradcheck: input {} (shape {}) is not a leaf; pass x.detach().requires_grad_()", i,
             x.shape());
    for (int64_t d = 0; d < x.dim() && x.numel() > 0; ++d)
      SG_CHECK(x.strides()[d] != 0 || x.shape()[d] <= 1,
               "gradcheck: input {} (shape {}, strides {}) is an expanded view whose elements share memory; "
               "perturbing one would move several (pass a contiguous copy)",
               i, x.shape(), x.strides());
  }
  SG_CHECK(any, "gradcheck: no input requires grad");

  AutoGradMode grad_on(true);        // the analytic pass needs a graph, whatever the caller's mode
  RestoreInputs restore(inputs);     // gradcheck works on its own: values and grads come back
  try {
    return check_all(fn, inputs, o);
  } catch (const Error& e) {  // from fn or its backward (eval and Analytic say which)
    return fmt::format("gradcheck: {}", e.what());
  }
}

bool gradcheck(const TensorFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& opts) {
  const std::string report = gradcheck_report(fn, inputs, opts);
  if (!report.empty() && opts.raise) throw Error(report);
  return report.empty();
}

Tensor jacobian(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x) {
  SG_CHECK(is_floating(x.dtype()), "jacobian: input must be floating, got {}", x.dtype());
  AutoGradMode grad_on(true);
  Tensor xl = make_contiguous_copy(x);
  xl.requires_grad_();
  const std::vector<Tensor> inputs{xl};
  const TensorFn f = [&](const std::vector<Tensor>& in) { return fn(in[0]); };
  Analytic an(f, inputs);
  const int64_t m = an.out.numel(), n = xl.numel();
  Tensor J = zeros({m, n}, kFloat64);
  double* pj = J.data_ptr<double>();
  for (int64_t k = 0; k < m; ++k) {
    const std::vector<double> row = an.vjp(one_hot_like(an.out, k))[0];
    std::copy(row.begin(), row.end(), pj + k * n);
  }
  return J;
}

Tensor numerical_jacobian(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x, double eps) {
  SG_CHECK(x.dtype() == kFloat64, "numerical_jacobian: input must be float64, got {}", x.dtype());
  Tensor xl = make_contiguous_copy(x);
  const std::vector<Tensor> inputs{xl};
  const TensorFn f = [&](const std::vector<Tensor>& in) { return fn(in[0]); };
  const int64_t m = static_cast<int64_t>(eval(f, inputs).size()), n = xl.numel();
  Tensor J = zeros({m, n}, kFloat64);
  double* pj = J.data_ptr<double>();
  for (int64_t j = 0; j < n; ++j) {
    const std::vector<double> col = numerical_column(f, inputs, xl, j, eps);
    for (int64_t k = 0; k < m; ++k) pj[k * n + j] = col[static_cast<size_t>(k)];
  }
  return J;
}

}  // namespace sg
