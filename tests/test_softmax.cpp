// softmax and log_softmax: float64 gradchecks along every dim and layout, the exact
// Jacobians, the kernels against their naive references (float32 within 2e-6 of a float64
// reference) over every row length and layout the kernels distinguish, the edge rules of
// ops/softmax.h (+-inf, NaN, huge logits) in every layout, error messages and the autograd
// wiring. PyTorch's values are in test_reference_softmax.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "ops/softmax.h"
#include "ops/softmax_kernels.h"
#include "test_util.h"

using sg::Shape;
using sg::Tensor;
using sgtest::check_error;
using sgtest::GradCase;
using sg::kernels::RowsShape;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

using Op = Tensor (*)(const Tensor&, int64_t);
struct NamedOp {
  const char* name;
  Op fn;
  bool log;  // log_softmax
};
const NamedOp kOps[] = {{"softmax", &sg::softmax, false}, {"log_softmax", &sg::log_softmax, true}};

// |got - want| <= atol + rtol * |want|, NaN only against NaN, an infinity only against itself.
bool near(double got, double want, double rtol, double atol) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (std::isinf(want) || std::isinf(got)) return got == want;
  return std::abs(got - want) <= atol + rtol * std::abs(want);
}

// One CHECK per vector: the count of bad entries and the first one.
void check_vec(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol,
               const std::string& what) {
  REQUIRE(got.size() == want.size());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (!near(got[i], want[i], rtol, atol) && bad++ == 0) first = static_cast<int64_t>(i);
  CHECK_MESSAGE(bad == 0, fmt::format("{}: {} of {} entries off (rtol {}, atol {}); first [{}]: got {:.17g}, want {:.17g}",
                                      what, bad, got.size(), rtol, atol, first, first < 0 ? 0.0 : got[first],
                                      first < 0 ? 0.0 : want[first]));
}

// ---- an independent reference for one row, in long double, with the documented edge rules
struct RowRef {
  std::vector<double> s, y;
};

// Rounds to T, overflowing to +-inf (the exact log_softmax of +-3e38 is -6e38: -inf in float32).
template <typename T> double round_to(long double v) {
  if (std::isnan(v)) return kNaN;
  if (std::abs(v) > static_cast<long double>(std::numeric_limits<T>::max())) return v > 0 ? kInf : -kInf;
  return static_cast<double>(static_cast<T>(v));
}

template <typename T> RowRef reference_row(const std::vector<double>& x) {
  const size_t n = x.size();
  RowRef r{std::vector<double>(n), std::vector<double>(n)};
  const bool nan = std::any_of(x.begin(), x.end(), [](double v) { return std::isnan(v); });
  const auto k = std::count(x.begin(), x.end(), kInf);
  const bool all_masked = std::all_of(x.begin(), x.end(), [](double v) { return v == -kInf; });
  long double m = -kInf, l = 0;
  for (double v : x) m = std::max<long double>(m, v);
  if (!nan && k == 0 && !all_masked)
    for (double v : x) l += std::exp(static_cast<long double>(v) - m);
  for (size_t i = 0; i < n; ++i) {
    if (nan) {
      r.s[i] = r.y[i] = kNaN;
    } else if (k > 0) {  // the k entries at +inf share the mass
      r.s[i] = x[i] == kInf ? round_to<T>(1.0L / k) : 0.0;
      r.y[i] = x[i] == kInf ? round_to<T>(-std::log(static_cast<long double>(k))) : -kInf;
    } else if (all_masked) {
      r.s[i] = 0.0;
      r.y[i] = -kInf;
    } else {
      const long double d = static_cast<long double>(x[i]) - m;
      r.s[i] = round_to<T>(std::exp(d) / l);
      r.y[i] = round_to<T>(d - std::log(l));
    }
  }
  return r;
}

// dx of the documented backward for a row with output s (log_softmax: exp(y) = s).
std::vector<double> reference_backward(bool log, const std::vector<double>& s, const std::vector<double>& g) {
  long double dot = 0, sum = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    dot += static_cast<long double>(s[i]) * g[i];
    sum += g[i];
  }
  std::vector<double> dx(s.size());
  for (size_t i = 0; i < s.size(); ++i)
    dx[i] = static_cast<double>(log ? g[i] - s[i] * sum : s[i] * (g[i] - dot));
  return dx;
}

std::vector<double> transposed(const std::vector<double>& m, int64_t rows, int64_t cols) {
  std::vector<double> t(m.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = m[r * cols + c];
  return t;
}

// ---- the edge-rule harness -------------------------------------------------------------
// A batch of R rows of C logits runs through the op in three layouts: (R, C) along the last
// dim (contiguous rows), (C, R) along dim 0 (the inner > 1 path: each row is a vector lane
// next to ordinary rows) and a transposed (R, C) view along dim 1 (strided input). Each
// layout is checked row by row against reference_row, forward and backward (a random g).
// `special` lists the rows built by the test; the others are ordinary random rows that
// must come out unaffected.
struct Batch {
  int64_t R, C;
  std::vector<double> x;  // (R, C)
};

Batch batch_with(int64_t R, int64_t C, const std::vector<std::pair<int64_t, std::vector<double>>>& special,
                 uint64_t seed) {
  sg::Generator gen(seed);
  Batch b{R, C, sg::randn({R, C}, gen, sg::kFloat64).to_vector<double>()};
  for (double& v : b.x) v *= 3.0;
  for (const auto& [row, values] : special) {
    REQUIRE(static_cast<int64_t>(values.size()) == C);
    std::copy(values.begin(), values.end(), b.x.begin() + row * C);
  }
  return b;
}

// A row of C values: `head` first, then the filler value.
std::vector<double> row_of(int64_t C, std::vector<double> head, double fill) {
  head.resize(static_cast<size_t>(C), fill);
  return head;
}

template <typename T> void check_batch_in_every_layout(const Batch& b, int layouts = 3) {
  const sg::Dtype dt = sg::dtype_of<T>;
  const bool f32 = dt == sg::kFloat32;
  const double rtol = f32 ? 2e-6 : 1e-13, atol = f32 ? 1e-6 : 1e-14;
  sg::Generator gen(99);
  const std::vector<double> g = sg::randn({b.R, b.C}, gen, dt).to_vector<double>();
  // The inputs as T sees them (the references start from the rounded values).
  const std::vector<double> xt = sg::from_vector(b.x, {b.R, b.C}).to(dt).to_vector<double>();

  for (const NamedOp& op : kOps) {
    std::vector<double> want_out, want_dx;
    for (int64_t r = 0; r < b.R; ++r) {
      const std::vector<double> xr(xt.begin() + r * b.C, xt.begin() + (r + 1) * b.C);
      const std::vector<double> gr(g.begin() + r * b.C, g.begin() + (r + 1) * b.C);
      const RowRef ref = reference_row<T>(xr);
      const std::vector<double>& out = op.log ? ref.y : ref.s;
      want_out.insert(want_out.end(), out.begin(), out.end());
      const std::vector<double> dx = reference_backward(op.log, ref.s, gr);
      want_dx.insert(want_dx.end(), dx.begin(), dx.end());
    }
    for (int layout = 0; layout < layouts; ++layout) {
      CAPTURE(std::string(op.name));
      CAPTURE(fmt::format("{}", dt));
      CAPTURE(layout);
      Tensor leaf, out;
      const Tensor G = sg::from_vector(g, {b.R, b.C}).to(dt);
      if (layout == 0) {  // (R, C), dim -1
        leaf = sg::from_vector(b.x, {b.R, b.C}).to(dt).requires_grad_();
        out = op.fn(leaf, -1);
        out.backward(G);
      } else {  // (C, R) contiguous: along dim 0, or its transposed view along dim 1
        leaf = sg::from_vector(transposed(b.x, b.R, b.C), {b.C, b.R}).to(dt).requires_grad_();
        if (layout == 1) {
          out = op.fn(leaf, 0);
          out.backward(sg::transpose(G, 0, 1).contiguous());
          out = sg::transpose(out, 0, 1);
        } else {
          out = op.fn(sg::transpose(leaf, 0, 1), 1);
          out.backward(G);
        }
      }
      REQUIRE(out.dtype() == dt);
      check_vec(out.contiguous().to_vector<double>(), want_out, rtol, atol, std::string(op.name) + " forward");
      Tensor dx = leaf.grad();
      REQUIRE(dx.defined());
      if (layout != 0) dx = sg::transpose(dx, 0, 1);
      check_vec(dx.contiguous().to_vector<double>(), want_dx, rtol, 4 * atol, std::string(op.name) + " backward");
    }
  }
}

void check_batch(const Batch& b, int layouts = 3) {
  check_batch_in_every_layout<float>(b, layouts);
  check_batch_in_every_layout<double>(b, layouts);
}

// ---- kernels against the naive references ----------------------------------------------
// Buffers reused across calls: the long rows would otherwise spend most of their time
// having fresh pages zeroed by the OS.
template <typename T> T* buffer(int slot, int64_t n) {
  static std::vector<std::vector<T>> pool(12);
  auto& b = pool.at(static_cast<size_t>(slot));
  if (static_cast<int64_t>(b.size()) < n) b.resize(static_cast<size_t>(n));
  return b.data();
}

// Bad entries of `got` against `want` under a per-entry bound; one CHECK per array.
template <typename T, class Bound>
void check_bound(const T* got, const double* want, int64_t n, Bound bound, const char* what) {
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= bound(i)) && bad++ == 0) first = i;
  }
  CHECK_MESSAGE(bad == 0, fmt::format("{}: {} of {} entries off; first [{}]: got {:.9g}, reference {:.17g}, bound {:.3g}",
                                      what, bad, n, first, first < 0 ? 0.0 : static_cast<double>(got[first]),
                                      first < 0 ? 0.0 : want[first], first < 0 ? 0.0 : bound(first)));
}

// For every row (o, :, j) of the (outer, C, inner) layout: fn(first element, stride).
template <class Fn> void for_each_row(RowsShape s, Fn fn) {
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < s.inner; ++j) fn(o * s.C * s.inner + j, s.inner);
}

// out[i] = sum over the row of entry i of |a_c * b_c| (b == nullptr: |a_c|).
void row_abs_sum(RowsShape s, const double* a, const double* b, double* out) {
  for_each_row(s, [&](int64_t r, int64_t st) {
    double acc = 0;
    for (int64_t c = 0; c < s.C; ++c) acc += std::abs(a[r + c * st] * (b ? b[r + c * st] : 1.0));
    for (int64_t c = 0; c < s.C; ++c) out[r + c * st] = acc;
  });
}

// All four kernels in float32 and float64 against the float64 naive references computed
// from the same inputs. Bounds:
//   forward, float32: |s - s_ref| <= 2e-6 |s_ref| + 1e-37 (the abs term only admits float32
//     underflow; inputs randn * 3 keep every probability far above it), rows sum to 1
//     within 1e-6; log_softmax |y - y_ref| <= 2e-6 |y_ref| + 2e-6 (x - max is rounded to
//     float32: an absolute error of half an ulp of |x - max| ~ 1e-6).
//   forward, float64: the same with 1e-13 / 1e-14 (long double vs double sums).
//   backward: error <= tol * (the magnitudes that enter the formula), tol 1e-6 (float32),
//     1e-14 (float64): softmax s_i (|g_i| + sum_c |s_c g_c|), log_softmax
//     |g_i| + exp(y_i) sum_c |g_c|.
void check_kernels(RowsShape sh, sg::Generator& gen) {
  namespace k = sg::kernels;
  CAPTURE(fmt::format("outer {} C {} inner {}", sh.outer, sh.C, sh.inner));
  const int64_t n = sh.outer * sh.C * sh.inner;
  float *x32 = buffer<float>(0, n), *g32 = buffer<float>(1, n), *in32 = buffer<float>(2, n),
        *out32 = buffer<float>(3, n);
  double *x64 = buffer<double>(0, n), *g64 = buffer<double>(1, n), *in64 = buffer<double>(2, n),
         *out64 = buffer<double>(3, n), *ref = buffer<double>(4, n), *ref2 = buffer<double>(5, n),
         *sum1 = buffer<double>(6, n), *sum2 = buffer<double>(7, n);
  for (int64_t i = 0; i < n; ++i) {
    x32[i] = static_cast<float>(3.0 * gen.normal());
    x64[i] = x32[i];
    g32[i] = static_cast<float>(gen.normal());
    g64[i] = g32[i];
  }

  // softmax forward: ref = naive float64 from the float32 inputs.
  k::softmax_forward_naive<double>(x64, ref, sh);
  k::softmax_forward<float>(x32, out32, sh);
  check_bound(out32, ref, n, [&](int64_t i) { return 2e-6 * ref[i] + 1e-37; }, "softmax_forward<float>");
  {
    int64_t bad = 0;
    double worst = 0;
    for_each_row(sh, [&](int64_t r, int64_t st) {
      double sum = 0;
      for (int64_t c = 0; c < sh.C; ++c) sum += out32[r + c * st];
      worst = std::max(worst, std::abs(sum - 1.0));
      bad += !(std::abs(sum - 1.0) <= 1e-6);
    });
    CHECK_MESSAGE(bad == 0, fmt::format("{} float32 rows do not sum to 1 within 1e-6 (worst {:.3g})", bad, worst));
  }
  k::softmax_forward<double>(x64, out64, sh);
  check_bound(out64, ref, n, [&](int64_t i) { return 1e-13 * ref[i] + 1e-300; }, "softmax_forward<double>");

  // softmax backward from the reference output rounded to float32 (the same s in both dtypes).
  for (int64_t i = 0; i < n; ++i) {
    in32[i] = static_cast<float>(ref[i]);
    in64[i] = in32[i];
  }
  row_abs_sum(sh, in64, g64, sum1);  // sum_c |s_c g_c|
  k::softmax_backward_naive<double>(in64, g64, ref2, sh);
  auto softmax_scale = [&](int64_t i) { return in64[i] * (std::abs(g64[i]) + sum1[i]) + 1e-300; };
  k::softmax_backward<float>(in32, g32, out32, sh);
  check_bound(out32, ref2, n, [&](int64_t i) { return 1e-6 * softmax_scale(i); }, "softmax_backward<float>");
  k::softmax_backward<double>(in64, g64, out64, sh);
  check_bound(out64, ref2, n, [&](int64_t i) { return 1e-14 * softmax_scale(i); }, "softmax_backward<double>");

  // log_softmax forward.
  k::log_softmax_forward_naive<double>(x64, ref, sh);
  k::log_softmax_forward<float>(x32, out32, sh);
  check_bound(out32, ref, n, [&](int64_t i) { return 2e-6 * std::abs(ref[i]) + 2e-6; }, "log_softmax_forward<float>");
  k::log_softmax_forward<double>(x64, out64, sh);
  check_bound(out64, ref, n, [&](int64_t i) { return 1e-13 * std::abs(ref[i]) + 1e-14; }, "log_softmax_forward<double>");

  // log_softmax backward.
  for (int64_t i = 0; i < n; ++i) {
    in32[i] = static_cast<float>(ref[i]);
    in64[i] = in32[i];
  }
  row_abs_sum(sh, g64, nullptr, sum2);  // sum_c |g_c|
  k::log_softmax_backward_naive<double>(in64, g64, ref2, sh);
  auto log_scale = [&](int64_t i) { return std::abs(g64[i]) + std::exp(in64[i]) * sum2[i]; };
  k::log_softmax_backward<float>(in32, g32, out32, sh);
  check_bound(out32, ref2, n, [&](int64_t i) { return 1e-6 * log_scale(i); }, "log_softmax_backward<float>");
  k::log_softmax_backward<double>(in64, g64, out64, sh);
  check_bound(out64, ref2, n, [&](int64_t i) { return 1e-14 * log_scale(i); }, "log_softmax_backward<double>");
}

template <typename T> T* ptr(const Tensor& t) { return t.data_ptr<T>(); }

}  // namespace

// ======================================================================================
// Gradchecks (float64, PyTorch tolerances)
// ======================================================================================

TEST_CASE("gradcheck along every dim (negative too) of 1-D to 4-D inputs, contiguous and strided") {
  std::vector<GradCase> cases;
  for (const Shape& shape : {Shape{5}, Shape{3, 4}, Shape{2, 3, 4}, Shape{2, 3, 2, 3}}) {
    const int64_t nd = static_cast<int64_t>(shape.size());
    for (int64_t dim = -nd; dim < nd; ++dim)
      for (bool noncontig : {false, true})
        for (const NamedOp& op : kOps)
          cases.push_back({fmt::format("{} {} dim {}{}", op.name, shape, dim, noncontig ? " strided" : ""),
                           {shape},
                           [fn = op.fn, dim](const std::vector<Tensor>& in) { return fn(in[0], dim); },
                           -3.0,
                           3.0,
                           noncontig});
  }
  CHECK(cases.size() == 2 * 2 * (1 + 2 + 3 + 4) * 2);
  sgtest::run_grad_cases(cases, 11);
}

TEST_CASE("gradcheck on odd sizes: 1x1, 3x1, 7x13 along both dims") {
  std::vector<GradCase> cases;
  for (const Shape& shape : {Shape{1, 1}, Shape{3, 1}, Shape{7, 13}})
    for (int64_t dim : {0, 1})
      for (bool noncontig : {false, true})
        for (const NamedOp& op : kOps)
          cases.push_back({fmt::format("{} {} dim {}{}", op.name, shape, dim, noncontig ? " strided" : ""),
                           {shape},
                           [fn = op.fn, dim](const std::vector<Tensor>& in) { return fn(in[0], dim); },
                           -3.0,
                           3.0,
                           noncontig});
  sgtest::run_grad_cases(cases, 12);
}

TEST_CASE("gradcheck of a 1x70000 row with random projections, which catch a missing <s,g> term") {
  sg::Generator gen(13);
  // Tighter than PyTorch's defaults: the projections u^T J v here are ~1e-3, and central
  // differences in float64 are good to ~1e-10 on this smooth function.
  sg::GradcheckOptions opts;
  opts.atol = 1e-9;
  opts.rtol = 1e-6;
  opts.projections = 4;  // each is a full u^T J v; the wrong backward below fails the first
  REQUIRE(int64_t{70000} * 70000 > opts.max_full_entries);  // projected mode
  for (bool noncontig : {false, true}) {
    const Tensor x = noncontig ? sgtest::leaf_noncontig({1, 70000}, gen, -4.0, 4.0) : sgtest::leaf({1, 70000}, gen, -4.0, 4.0);
    for (const NamedOp& op : kOps)
      for (int64_t dim : {-1, 0}) {
        CAPTURE(std::string(op.name));
        CAPTURE(dim);
        CAPTURE(noncontig);
        sgtest::check_gradients([&](const std::vector<Tensor>& in) { return op.fn(in[0], dim); }, {x}, opts);
      }
  }
  // A softmax whose backward forgets the -<s,g> term (the normalizer is a constant to
  // autograd): the same projected check must reject it.
  const Tensor x = sgtest::leaf({1, 70000}, gen, -4.0, 4.0);
  auto wrong = [](const std::vector<Tensor>& in) {
    const Tensor lse = sg::log(sg::sum(sg::exp(in[0]), {-1}, true)).detach();
    return sg::exp(in[0] - lse);
  };
  CHECK_FALSE(sg::gradcheck_report(wrong, {x}, opts).empty());
}

TEST_CASE("the upstream gradient matters through <s,g>: grad of sum(softmax(x) * w) is s * (w - <s,w>)") {
  sg::Generator gen(14);
  const Tensor x = sgtest::leaf({3, 6}, gen, -2.0, 2.0);
  const Tensor w = sg::randn({3, 6}, gen, sg::kFloat64);
  const Tensor s = sg::softmax(x, 1);
  sg::sum(s * w).backward();
  const std::vector<double> sv = s.to_vector<double>(), wv = w.to_vector<double>();
  std::vector<double> want(sv.size()), without_dot(sv.size());
  for (int64_t r = 0; r < 3; ++r) {
    long double dot = 0;
    for (int64_t c = 0; c < 6; ++c) dot += sv[r * 6 + c] * wv[r * 6 + c];
    for (int64_t c = 0; c < 6; ++c) {
      want[r * 6 + c] = static_cast<double>(sv[r * 6 + c] * (wv[r * 6 + c] - dot));
      without_dot[r * 6 + c] = sv[r * 6 + c] * wv[r * 6 + c];
    }
  }
  sgtest::check_values(x.grad(), want, 1e-13, 1e-15);
  // The data must make the <s,w> term visible, or the check above proves nothing.
  double diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff = std::max(diff, std::abs(want[i] - without_dot[i]));
  CHECK(diff > 1e-2);

  // log_softmax: dx = w - exp(y) * sum(w).
  const Tensor x2 = sgtest::leaf({3, 6}, gen, -2.0, 2.0);
  const Tensor y = sg::log_softmax(x2, 1);
  sg::sum(y * w).backward();
  const std::vector<double> yv = y.to_vector<double>();
  for (int64_t r = 0; r < 3; ++r) {
    long double sum = 0;
    for (int64_t c = 0; c < 6; ++c) sum += wv[r * 6 + c];
    for (int64_t c = 0; c < 6; ++c) want[r * 6 + c] = static_cast<double>(wv[r * 6 + c] - std::exp(yv[r * 6 + c]) * sum);
  }
  sgtest::check_values(x2.grad(), want, 1e-13, 1e-15);
}

TEST_CASE("Jacobians: softmax's is diag(s) - s s^T, log_softmax's is I - 1 s^T") {
  sg::Generator gen(15);
  for (int64_t C : {1, 2, 5, 9}) {
    CAPTURE(C);
    const Tensor x = sgtest::leaf({C}, gen, -2.0, 2.0).detach();
    const std::vector<double> s = sg::softmax(x, 0).to_vector<double>();
    std::vector<double> js(static_cast<size_t>(C * C)), jl(js.size());
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) {
        js[i * C + j] = (i == j ? s[i] : 0.0) - s[i] * s[j];
        jl[i * C + j] = (i == j ? 1.0 : 0.0) - s[j];
      }
    auto f_s = [](const Tensor& t) { return sg::softmax(t, 0); };
    auto f_l = [](const Tensor& t) { return sg::log_softmax(t, -1); };
    const Tensor Js = sg::jacobian(f_s, x), Jl = sg::jacobian(f_l, x);
    REQUIRE(Js.shape() == Shape{C, C});
    sgtest::check_values(Js, js, 0, 1e-15);
    sgtest::check_values(Jl, jl, 0, 1e-15);
    // Forward and backward agree (central differences).
    sgtest::check_values(sg::numerical_jacobian(f_s, x), js, 0, 1e-9);
    sgtest::check_values(sg::numerical_jacobian(f_l, x), jl, 0, 1e-9);
  }
  // Rows are independent: (2, 4) along dim 1 is block diagonal, exactly 0 across rows; along
  // dim 0 of (3, 2) each column is its own softmax.
  for (int64_t dim : {1, 0}) {
    CAPTURE(dim);
    const Shape shape = dim == 1 ? Shape{2, 4} : Shape{3, 2};
    const int64_t R = 2, C = dim == 1 ? 4 : 3;  // rows, row length
    const Tensor x = sgtest::leaf(shape, gen, -2.0, 2.0).detach();
    const std::vector<double> s = sg::softmax(x, dim).to_vector<double>();
    const int64_t n = R * C;
    // Flat index of entry c of row r.
    auto at = [&](int64_t r, int64_t c) { return dim == 1 ? r * C + c : c * R + r; };
    std::vector<double> js(static_cast<size_t>(n * n), 0.0), jl(js.size(), 0.0);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t a = 0; a < C; ++a)
        for (int64_t b = 0; b < C; ++b) {
          const int64_t i = at(r, a), j = at(r, b);
          js[i * n + j] = (a == b ? s[i] : 0.0) - s[i] * s[j];
          jl[i * n + j] = (a == b ? 1.0 : 0.0) - s[j];
        }
    sgtest::check_values(sg::jacobian([dim](const Tensor& t) { return sg::softmax(t, dim); }, x), js, 0, 1e-15);
    sgtest::check_values(sg::jacobian([dim](const Tensor& t) { return sg::log_softmax(t, dim); }, x), jl, 0, 1e-15);
  }
}

// ======================================================================================
// Kernels against the naive references
// ======================================================================================

TEST_CASE("kernels match the naive references: every C from 1 to 70, inner 1..33, outer 1..5") {
  sg::Generator gen(21);
  const int64_t inners[] = {1, 2, 3, 5, 16, 17, 33};
  // Every row length (the vector loops' tails) with every inner size; outer cycles 1..5.
  for (int64_t C = 1; C <= 70; ++C)
    for (size_t i = 0; i < std::size(inners); ++i)
      check_kernels({.outer = 1 + static_cast<int64_t>((C + i) % 5), .C = C, .inner = inners[i]}, gen);
  // The full outer x inner product for a few lengths around the vector widths.
  for (int64_t C : {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 64})
    for (int64_t outer = 1; outer <= 5; ++outer)
      for (int64_t inner : inners) check_kernels({.outer = outer, .C = C, .inner = inner}, gen);
}

TEST_CASE("kernels match the naive references: long rows 4096, 32000, 70000, 1<<20 and 1<<20 + 3") {
  sg::Generator gen(22);
  check_kernels({.outer = 3, .C = 4096, .inner = 1}, gen);
  check_kernels({.outer = 2, .C = 4096, .inner = 17}, gen);
  check_kernels({.outer = 2, .C = 32000, .inner = 1}, gen);
  check_kernels({.outer = 1, .C = 32000, .inner = 3}, gen);
  check_kernels({.outer = 3, .C = 70001, .inner = 1}, gen);   // past the scratch row: exps recomputed
  check_kernels({.outer = 1, .C = 1 << 20, .inner = 1}, gen);  // one row split across threads
  check_kernels({.outer = 1, .C = (1 << 20) + 3, .inner = 1}, gen);
  check_kernels({.outer = 1, .C = 70000, .inner = 1}, gen);
}

// Outputs of 8 MiB and more are written with non-temporal stores when every row starts on
// a vector boundary. The same call with the output one element off alignment takes the
// ordinary stores and the same arithmetic, so the two must agree bit for bit (the
// arithmetic itself is checked against the naive references above, on rows as long).
template <typename T> void check_streamed_equals_cached(RowsShape sh, sg::Generator& gen) {
  namespace k = sg::kernels;
  CAPTURE(fmt::format("{}: outer {} C {} inner {}", sg::dtype_of<T>, sh.outer, sh.C, sh.inner));
  const int64_t n = sh.outer * sh.C * sh.inner;
  REQUIRE(n * static_cast<int64_t>(sizeof(T)) >= (int64_t{8} << 20));
  const Tensor x = sg::randn({n}, gen, sg::dtype_of<T>) * 3.0, g = sg::randn({n}, gen, sg::dtype_of<T>);
  const Tensor out = sg::empty({n}, sg::dtype_of<T>), shifted = sg::empty({n + 1}, sg::dtype_of<T>);
  T* const a = ptr<T>(out);       // 64-byte aligned (streamed)
  T* const b = ptr<T>(shifted) + 1;  // misaligned (cached stores)
  auto same = [&](const char* what) {
    CHECK_MESSAGE(std::memcmp(a, b, static_cast<size_t>(n) * sizeof(T)) == 0, what << ": streamed != cached");
  };
  k::softmax_forward<T>(ptr<T>(x), a, sh);
  k::softmax_forward<T>(ptr<T>(x), b, sh);
  same("softmax_forward");
  const Tensor s = out.clone();
  k::softmax_backward<T>(ptr<T>(s), ptr<T>(g), a, sh);
  k::softmax_backward<T>(ptr<T>(s), ptr<T>(g), b, sh);
  same("softmax_backward");
  k::log_softmax_forward<T>(ptr<T>(x), a, sh);
  k::log_softmax_forward<T>(ptr<T>(x), b, sh);
  same("log_softmax_forward");
  const Tensor y = out.clone();
  k::log_softmax_backward<T>(ptr<T>(y), ptr<T>(g), a, sh);
  k::log_softmax_backward<T>(ptr<T>(y), ptr<T>(g), b, sh);
  same("log_softmax_backward");
  // And the streamed output is a softmax at all (the stores reached memory).
  double sum = 0;
  for (int64_t i = 0; i < sh.C; ++i) sum += ptr<T>(s)[i * sh.inner];
  CHECK(sum == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("kernels: softmax rows pipelined through two scratch rows equal each row done alone, edge rows between") {
  // Rows of 4L < C <= 65536 run pass 2 of row r interleaved with pass 1 of row r + 1; a row
  // done alone (outer = 1) runs the same arithmetic without a neighbour.
  namespace k = sg::kernels;
  sg::Generator gen(25);
  const float inf = std::numeric_limits<float>::infinity(), lowest = std::numeric_limits<float>::lowest();
  for (int64_t C : {65, 100, 1000, 32000}) {
    CAPTURE(C);
    const int64_t R = 9;
    Tensor x = sg::randn({R, C}, gen) * 3.0f;
    float* px = ptr<float>(x);
    std::fill(px + 1 * C, px + 2 * C, -inf);         // all -inf
    px[2 * C + C / 2] = inf;                          // one +inf
    px[4 * C + C - 1] = std::numeric_limits<float>::quiet_NaN();
    std::fill(px + 5 * C, px + 6 * C, lowest);        // all lowest(), a mask value
    for (int64_t c = 0; c < C; ++c) px[7 * C + c] = static_cast<float>(c) * 0.01f;  // the max rises every block
    Tensor y = sg::empty({R, C}, sg::kFloat32), alone = sg::empty({R, C}, sg::kFloat32);
    k::softmax_forward<float>(px, ptr<float>(y), {.outer = R, .C = C, .inner = 1});
    for (int64_t r = 0; r < R; ++r)
      k::softmax_forward<float>(px + r * C, ptr<float>(alone) + r * C, {.outer = 1, .C = C, .inner = 1});
    CHECK(std::memcmp(ptr<float>(y), ptr<float>(alone), static_cast<size_t>(R * C) * sizeof(float)) == 0);
    const float* py = ptr<float>(y);
    CHECK(py[5 * C] == doctest::Approx(1.0 / C));  // lowest() row: uniform
    CHECK(py[2 * C + C / 2] == 1.0f);               // the +inf entry takes everything
  }
}

TEST_CASE("kernels: outputs of 8 MiB and more (streamed stores) equal the cached-store outputs") {
  sg::Generator gen(23);
  check_streamed_equals_cached<float>({.outer = 128, .C = 32000, .inner = 1}, gen);   // rows through the scratch
  check_streamed_equals_cached<float>({.outer = 1, .C = 1 << 22, .inner = 1}, gen);   // split + streamed
  check_streamed_equals_cached<double>({.outer = 2, .C = 1 << 20, .inner = 1}, gen);  // rows >= threads
}

TEST_CASE("backward kernels may write dx over g") {
  namespace k = sg::kernels;
  sg::Generator gen(24);
  for (RowsShape sh : {RowsShape{3, 37, 1}, RowsShape{2, 9, 17}, RowsShape{1, 1 << 20, 1}}) {
    CAPTURE(fmt::format("outer {} C {} inner {}", sh.outer, sh.C, sh.inner));
    const int64_t n = sh.outer * sh.C * sh.inner;
    const Tensor x = sg::randn({n}, gen, sg::kFloat32) * 3.0, g = sg::randn({n}, gen, sg::kFloat32);
    Tensor s = sg::empty({n}, sg::kFloat32), y = sg::empty({n}, sg::kFloat32);
    k::softmax_forward<float>(ptr<float>(x), ptr<float>(s), sh);
    k::log_softmax_forward<float>(ptr<float>(x), ptr<float>(y), sh);
    Tensor ds = sg::empty({n}, sg::kFloat32), dy = sg::empty({n}, sg::kFloat32);
    k::softmax_backward<float>(ptr<float>(s), ptr<float>(g), ptr<float>(ds), sh);
    k::log_softmax_backward<float>(ptr<float>(y), ptr<float>(g), ptr<float>(dy), sh);
    Tensor g1 = g.clone(), g2 = g.clone();
    k::softmax_backward<float>(ptr<float>(s), ptr<float>(g1), ptr<float>(g1), sh);
    k::log_softmax_backward<float>(ptr<float>(y), ptr<float>(g2), ptr<float>(g2), sh);
    CHECK(g1.to_vector<float>() == ds.to_vector<float>());
    CHECK(g2.to_vector<float>() == dy.to_vector<float>());
  }
}

// ======================================================================================
// Numerics: the edge rules of ops/softmax.h, float32 and float64, last dim and non-last dim
// ======================================================================================

TEST_CASE("large logits: +-1e4 and +-3e38 give finite, correct answers") {
  sg::Generator gen(31);
  for (int64_t C : {5, 37}) {
    CAPTURE(C);
    // 19 rows: with the (C, R) layout the special rows share vector lanes with ordinary ones.
    check_batch(batch_with(19, C,
                           {{0, row_of(C, {3e38, -3e38}, -3e38)},
                            {3, row_of(C, {1e4, -1e4, 1e4 - 1.0, 1e4 - 0.5}, -1e4)},
                            {7, row_of(C, {-1e4, -1e4 + 2.0}, -1e4 + 1.0)},
                            {16, row_of(C, {3e38, 3e38, 2.9e38}, 1.0)},
                            {18, row_of(C, {-3e38, 1e4}, -3e38)}},
                           C));
  }
  // The documented example, exactly.
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(fmt::format("{}", dt));
    CHECK(sg::softmax(sg::tensor({3e38, -3e38}, dt), 0).to_vector<double>() == std::vector<double>{1.0, 0.0});
    CHECK(sg::softmax(sg::tensor({-3e38, 3e38}, dt), -1).to_vector<double>() == std::vector<double>{0.0, 1.0});
    const std::vector<double> y = sg::log_softmax(sg::tensor({3e38, -3e38}, dt), 0).to_vector<double>();
    CHECK(y[0] == 0.0);
    CHECK(y[1] == (dt == sg::kFloat32 ? -kInf : -6e38));  // -6e38 overflows float32, as in PyTorch
  }
}

TEST_CASE("rows of a huge negative mask value (-1e4, -1e9, -1e30, lowest) on every kernel path") {
  // Masks written as masked_fill(-1e9) or float32's lowest instead of -inf: a row made of
  // that one value is uniform, and the value must never be taken for "no max yet" (the
  // cached-exp path once started from lowest() and wrote zeros for such rows). C covers
  // the register path (9), the cached-exp path (150, 5000) and the streaming path
  // (70000); the layouts cover the non-last dim.
  const double lowest = -3.4028234663852886e38;
  for (const double huge : {-1e4, -1e9, -1e30, lowest})
    for (int64_t C : {9, 150, 5000, 70000}) {
      CAPTURE(huge);
      CAPTURE(C);
      check_batch(batch_with(5, C,
                             {{0, row_of(C, {}, huge)},
                              {2, row_of(C, {0.5, -1.0, 2.0}, huge)},
                              {3, row_of(C, {huge, huge}, 0.25)}},
                             static_cast<uint64_t>(C)),
                  C > 5000 ? 1 : 3);
    }
}

TEST_CASE("+inf entries share the mass: softmax 1/k there, log_softmax -log k, -inf elsewhere") {
  for (int64_t C : {5, 37}) {
    CAPTURE(C);
    check_batch(batch_with(19, C,
                           {{0, row_of(C, {1.0, kInf, 2.0}, 0.5)},                 // one +inf
                            {4, row_of(C, {kInf, -1.0, kInf}, 3.0)},               // two
                            {9, row_of(C, {kInf, kInf, kInf}, -kInf)},             // three, rest masked
                            {17, row_of(C, {-kInf, 1e4, kInf, -3e38}, -kInf)}},    // with huge and -inf
                           40 + C));
  }
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(fmt::format("{}", dt));
    CHECK(sg::softmax(sg::tensor({1.0, kInf, 2.0}, dt), 0).to_vector<double>() == std::vector<double>{0, 1, 0});
    CHECK(sg::softmax(sg::tensor({kInf, 0.0, kInf}, dt), 0).to_vector<double>() ==
          std::vector<double>{0.5, 0, 0.5});
    const std::vector<double> y = sg::log_softmax(sg::tensor({kInf, 0.0, kInf}, dt), 0).to_vector<double>();
    CHECK(y[0] == doctest::Approx(-std::log(2.0)).epsilon(1e-7));
    CHECK(y[1] == -kInf);
    CHECK(y[2] == y[0]);
    CHECK(sg::log_softmax(sg::tensor({1.0, kInf}, dt), 0).to_vector<double>() == std::vector<double>{-kInf, 0.0});
  }
}

TEST_CASE("-inf entries get zero probability and leave the others exact") {
  for (int64_t C : {5, 37}) {
    CAPTURE(C);
    check_batch(batch_with(19, C,
                           {{1, row_of(C, {-kInf, 1.0, -kInf, 2.0}, -kInf)},   // two finite entries
                            {2, row_of(C, {0.3, -kInf}, -0.7)},                 // one masked entry
                            {16, row_of(C, {-kInf, -kInf, 5.0}, -kInf)}},       // one finite entry
                           50 + C));
  }
  const std::vector<double> s = sg::softmax(sg::tensor({1.0, -kInf, 2.0}, sg::kFloat64), 0).to_vector<double>();
  const double e = std::exp(1.0);
  CHECK(s[0] == doctest::Approx(1 / (1 + e)).epsilon(1e-15));
  CHECK(s[1] == 0.0);
  CHECK(s[2] == doctest::Approx(e / (1 + e)).epsilon(1e-15));
}

TEST_CASE("a fully masked row: softmax 0, log_softmax -inf, gradients 0 and g; other rows unaffected") {
  for (int64_t C : {1, 5, 37}) {
    CAPTURE(C);
    check_batch(batch_with(19, C, {{0, row_of(C, {}, -kInf)}, {6, row_of(C, {}, -kInf)}, {18, row_of(C, {}, -kInf)}},
                           60 + C));
  }
  // The documented gradients, spelled out on a 2-row batch.
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(fmt::format("{}", dt));
    Tensor x = sg::tensor({{-kInf, -kInf, -kInf}, {0.0, 1.0, 2.0}}, dt).requires_grad_();
    const Tensor g = sg::tensor({{0.5, -1.0, 2.0}, {1.0, 1.0, 1.0}}, dt);
    const Tensor s = sg::softmax(x, 1);
    CHECK(s.to_vector<double>()[0] == 0.0);
    s.backward(g);
    const std::vector<double> dx = x.grad().to_vector<double>();
    for (int i = 0; i < 6; ++i) CHECK(std::abs(dx[i]) <= 1e-6);  // row 1: 0 by the rule; row 2: g is uniform
    x.zero_grad();
    const Tensor y = sg::log_softmax(x, 1);
    CHECK(y.to_vector<double>()[1] == -kInf);
    y.backward(g);
    const std::vector<double> dl = x.grad().to_vector<double>();
    CHECK(std::vector<double>(dl.begin(), dl.begin() + 3) == std::vector<double>{0.5, -1.0, 2.0});
  }
}

TEST_CASE("NaN makes its own row NaN and no other") {
  for (int64_t C : {1, 5, 37}) {
    CAPTURE(C);
    check_batch(batch_with(19, C,
                           {{2, row_of(C, {1.0, kNaN}, 0.0)},
                            {5, row_of(C, {kNaN, kInf}, 0.0)},        // NaN beats +inf
                            {8, row_of(C, {-kInf, kNaN}, -kInf)},     // and a masked row
                            {17, row_of(C, {3e38, kNaN}, -3e38)}},
                           70 + C));
  }
}

TEST_CASE("the edge rules hold on a single long row split across threads") {
  // Each thread reduces part of the row and the parts' (max, sum) are merged: the +inf
  // count, NaN and the all -inf row must survive the merge. 1<<17 is past the kernels'
  // split threshold (64Ki elements when there are fewer rows than threads).
  const int64_t n = int64_t{1} << 17;
  auto row = [&](double fill, std::vector<std::pair<int64_t, double>> at, uint64_t seed) {
    Batch b{1, n, std::vector<double>(static_cast<size_t>(n), fill)};
    if (std::isnan(fill)) {  // random ordinary values
      sg::Generator gen(seed);
      for (double& v : b.x) v = 3.0 * gen.normal();
    }
    for (auto [i, v] : at) b.x[static_cast<size_t>(i)] = v;
    return b;
  };
  SUBCASE("two +inf entries in different halves") { check_batch(row(kNaN, {{10, kInf}, {n - 5, kInf}}, 1), 1); }
  SUBCASE("one NaN at the end") { check_batch(row(kNaN, {{n - 7, kNaN}}, 2), 1); }
  SUBCASE("all -inf") { check_batch(row(-kInf, {}, 3), 1); }
  SUBCASE("two finite entries among -inf") { check_batch(row(-kInf, {{3, 0.0}, {n - 2, 1.0}}, 4), 1); }
  SUBCASE("one huge entry in the second half") { check_batch(row(kNaN, {{n - 100, 3e38}}, 5), 1); }
}

// ======================================================================================
// Errors, 0-dim and empty inputs
// ======================================================================================

TEST_CASE("errors name the op, the dim and the shape") {
  const Tensor x = sg::zeros({2, 3}, sg::kFloat32);
  for (const NamedOp& op : kOps) {
    CAPTURE(std::string(op.name));
    check_error([&] { op.fn(x, 2); }, {op.name, "dim 2", "[2, 3]"});
    check_error([&] { op.fn(x, -3); }, {op.name, "dim -3", "[2, 3]"});
    check_error([&] { op.fn(sg::zeros({4}, sg::kInt64), 0); }, {op.name, "int64", "[4]"});
    check_error([&] { op.fn(sg::tensor({true, false}), 0); }, {op.name, "bool"});
    check_error([&] { op.fn(Tensor(), 0); }, {op.name, "undefined"});
    check_error([&] { op.fn(sg::scalar_tensor(1.0), 1); }, {op.name, "dim 1", "[]"});
    check_error([&] { op.fn(sg::scalar_tensor(1.0), -2); }, {op.name, "dim -2", "[]"});
  }
}

TEST_CASE("a 0-dim input is a row of one element along dim 0 or -1 (as PyTorch)") {
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64})
    for (int64_t dim : {0, -1}) {
      CAPTURE(fmt::format("{}", dt));
      CAPTURE(dim);
      const Tensor x = sg::scalar_tensor(2.5, dt).requires_grad_();
      const Tensor s = sg::softmax(x, dim), y = sg::log_softmax(x, dim);
      CHECK(s.shape() == Shape{});
      CHECK(y.shape() == Shape{});
      CHECK(s.item<double>() == 1.0);
      CHECK(y.item<double>() == 0.0);
      (s * 3.0 + y * 2.0).backward();
      CHECK(x.grad().item<double>() == 0.0);
    }
  sgtest::check_gradients([](const std::vector<Tensor>& in) { return sg::log_softmax(in[0], 0) + sg::softmax(in[0], -1); },
                          {sg::scalar_tensor(0.3, sg::kFloat64).requires_grad_()});
}

TEST_CASE("empty inputs give empty outputs (as PyTorch)") {
  for (const NamedOp& op : kOps)
    for (const Shape& shape : {Shape{0, 3}, Shape{3, 0}, Shape{2, 0, 4}})
      for (int64_t dim = 0; dim < static_cast<int64_t>(shape.size()); ++dim) {
        CAPTURE(std::string(op.name));
        CAPTURE(shape);
        CAPTURE(dim);
        const Tensor x = sg::zeros(shape, sg::kFloat64).requires_grad_();
        const Tensor y = op.fn(x, dim);
        CHECK(y.shape() == shape);
        sg::sum(y).backward();
        CHECK(x.grad().shape() == shape);
      }
}

// ======================================================================================
// Autograd wiring
// ======================================================================================

TEST_CASE("modifying the output in place before backward throws") {
  for (const NamedOp& op : kOps) {
    CAPTURE(std::string(op.name));
    const Tensor x = sg::tensor({{1.0, 2.0, 3.0}}, sg::kFloat64).requires_grad_();
    Tensor y = op.fn(x, 1);
    {
      sg::NoGradGuard g;
      sg::mul_(y, 2.0);
    }
    // The op's own node finds its saved output changed (nothing else saved it).
    check_error([&] { y.backward(sg::tensor({{1.0, -1.0, 2.0}}, sg::kFloat64)); },
                {op.name, "output shape [1, 3]", "modified in place"});
  }
}

TEST_CASE("an output used twice: both uses' gradients reach the input") {
  sg::Generator gen(41);
  const Tensor a = sg::randn({3, 4}, gen, sg::kFloat64), b = sg::randn({3, 4}, gen, sg::kFloat64);
  for (const NamedOp& op : kOps) {
    CAPTURE(std::string(op.name));
    const Tensor x1 = sgtest::leaf({3, 4}, gen, -2.0, 2.0);
    const Tensor x2 = x1.detach().clone().requires_grad_();
    const Tensor y1 = op.fn(x1, 1);
    (sg::sum(y1 * a) + sg::sum(y1 * b)).backward();
    sg::sum(op.fn(x2, 1) * (a + b)).backward();
    sgtest::check_close(x1.grad(), x2.grad(), 1e-14, 1e-15);
    // Reuse inside one expression, and a second softmax on top of the first.
    sgtest::check_gradients(
        [fn = op.fn](const std::vector<Tensor>& in) {
          const Tensor y = fn(in[0], 1);
          return y * y + sg::softmax(y, 0) + fn(y, -1);
        },
        {x1.detach().clone().requires_grad_()});
  }
}

TEST_CASE("the gradient of sum(softmax(x)) is ~0 along every dim") {
  sg::Generator gen(42);
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64})
    for (int64_t dim : {0, 1, 2, -1}) {
      CAPTURE(fmt::format("{}", dt));
      CAPTURE(dim);
      Tensor x = (sg::randn({3, 5, 33}, gen, dt) * 3.0).requires_grad_();
      sg::sum(sg::softmax(x, dim)).backward();
      const std::vector<double> g = x.grad().to_vector<double>();
      double worst = 0;
      for (double v : g) worst = std::max(worst, std::abs(v));
      CHECK(worst <= (dt == sg::kFloat32 ? 1e-6 : 1e-15));
      // and sum(exp(log_softmax(x))) too
      x.zero_grad();
      sg::sum(sg::exp(sg::log_softmax(x, dim))).backward();
      worst = 0;
      for (double v : x.grad().to_vector<double>()) worst = std::max(worst, std::abs(v));
      CHECK(worst <= (dt == sg::kFloat32 ? 1e-6 : 1e-15));
    }
}

TEST_CASE("graph wiring: fresh output, node name, no graph without grad, strided upstream gradient") {
  sg::Generator gen(43);
  for (const NamedOp& op : kOps) {
    CAPTURE(std::string(op.name));
    Tensor x = sgtest::leaf({4, 6}, gen);
    const std::vector<double> before = x.to_vector<double>();
    const Tensor y = op.fn(x, 1);
    CHECK(y.impl() != x.impl());
    CHECK(y.impl()->storage != x.impl()->storage);
    CHECK(x.to_vector<double>() == before);
    REQUIRE(y.grad_fn() != nullptr);
    CHECK(y.grad_fn()->name() == op.name);
    CHECK(y.requires_grad());
    CHECK(op.fn(x.detach(), 1).grad_fn() == nullptr);
    {
      sg::NoGradGuard g;
      const Tensor z = op.fn(x, 1);
      CHECK(z.grad_fn() == nullptr);
      CHECK_FALSE(z.requires_grad());
    }
    // A transposed (non-contiguous) upstream gradient gives the same dx as its copy.
    const Tensor gt = sg::randn({6, 4}, gen, sg::kFloat64).t();
    REQUIRE_FALSE(gt.is_contiguous());
    y.backward(gt, /*retain_graph=*/true);
    const Tensor dx1 = x.grad().clone();
    x.zero_grad();
    y.backward(gt.contiguous());
    sgtest::check_close(dx1, x.grad(), 0, 0);
    // float32 in, float32 gradient out.
    const Tensor x32 = sg::randn({2, 5}, gen, sg::kFloat32).requires_grad_();
    sg::sum(op.fn(x32, 0) * 1.5).backward();
    CHECK(x32.grad().dtype() == sg::kFloat32);
  }
}
