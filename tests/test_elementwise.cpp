// Elementwise ops: gradchecks (table-driven, incl. broadcasting, 0-d and non-contiguous
// inputs), forward values against hand-computed and PyTorch 1.13 numbers, the SIMD paths
// against naive scalar loops, in-place semantics, and error messages.
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "test_util.h"

using sg::Shape;
using sg::Tensor;
using sgtest::check_close;
using sgtest::check_error;
using sgtest::check_gradients;
using sgtest::check_values;
using sgtest::GradCase;
using sgtest::run_grad_cases;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A constant float64 tensor of `shape` cycling through `values` (no grad).
Tensor pattern(const Shape& shape, const std::vector<double>& values) {
  std::vector<double> v(static_cast<size_t>(sg::shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = values[i % values.size()];
  return sg::from_vector(v, shape);
}

// A constant bool tensor of `shape`: true at every index i with i % 3 == 0.
Tensor mask_pattern(const Shape& shape) {
  std::vector<bool> v(static_cast<size_t>(sg::shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = i % 3 == 0;
  return sg::from_vector(v, shape);
}

// x (drawn in [0.1, 1)) with alternating signs: |x| > 0.1, both signs present.
Tensor signed_away_from_zero(const Tensor& x) { return x * pattern(x.shape(), {1.0, -1.0}); }

// One table for every broadcasting binary op.
std::vector<GradCase> binary_cases(const sg::TensorFn& fn, double lo, double hi) {
  return {
      {"(3,4) (3,4)", {{3, 4}, {3, 4}}, fn, lo, hi},
      {"(3,4) (4)", {{3, 4}, {4}}, fn, lo, hi},
      {"(4) (3,4)", {{4}, {3, 4}}, fn, lo, hi},
      {"(2,1,3) (4,1)", {{2, 1, 3}, {4, 1}}, fn, lo, hi},
      {"() (3)", {{}, {3}}, fn, lo, hi},
      {"(2,3) ()", {{2, 3}, {}}, fn, lo, hi},
      {"() ()", {{}, {}}, fn, lo, hi},
      {"noncontig (3,4) (3,4)", {{3, 4}, {3, 4}}, fn, lo, hi, true},
      {"noncontig (2,3,4) (3,1)", {{2, 3, 4}, {3, 1}}, fn, lo, hi, true},
      {"noncontig (5) ()", {{5}, {}}, fn, lo, hi, true},
  };
}

std::vector<GradCase> unary_cases(const sg::TensorFn& fn, double lo, double hi) {
  return {
      {"()", {{}}, fn, lo, hi},
      {"(5)", {{5}}, fn, lo, hi},
      {"(3,4)", {{3, 4}}, fn, lo, hi},
      {"(2,3,4)", {{2, 3, 4}}, fn, lo, hi},
      {"noncontig (3,4)", {{3, 4}}, fn, lo, hi, true},
      {"noncontig (2,3,4)", {{2, 3, 4}}, fn, lo, hi, true},
      {"noncontig (5)", {{5}}, fn, lo, hi, true},
      {"noncontig ()", {{}}, fn, lo, hi, true},
  };
}

}  // namespace

// ============================================================================================
// Gradchecks
// ============================================================================================

TEST_CASE("gradcheck add") {
  run_grad_cases(binary_cases([](const std::vector<Tensor>& v) { return sg::add(v[0], v[1]); }, -1, 1));
}

TEST_CASE("gradcheck sub") {
  run_grad_cases(binary_cases([](const std::vector<Tensor>& v) { return sg::sub(v[0], v[1]); }, -1, 1));
}

TEST_CASE("gradcheck mul") {
  run_grad_cases(binary_cases([](const std::vector<Tensor>& v) { return sg::mul(v[0], v[1]); }, -1, 1));
}

TEST_CASE("gradcheck div") {
  run_grad_cases(binary_cases([](const std::vector<Tensor>& v) { return sg::div(v[0], v[1]); }, 0.5, 2));
}

TEST_CASE("gradcheck pow_scalar") {
  for (double e : {2.0, 3.0, 0.5, -1.0, -1.5, 1.0, 0.0}) {
    CAPTURE(e);
    run_grad_cases(unary_cases([e](const std::vector<Tensor>& v) { return sg::pow(v[0], e); }, 0.5, 2));
  }
}

TEST_CASE("gradcheck pow_tensor") {
  run_grad_cases(binary_cases([](const std::vector<Tensor>& v) { return sg::pow(v[0], v[1]); }, 0.5, 2));
  // negative exponents
  run_grad_cases(binary_cases([](const std::vector<Tensor>& v) { return sg::pow(v[0], sg::neg(v[1])); }, 0.5, 2));
}

TEST_CASE("gradcheck neg") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::neg(v[0]); }, -1, 1));
}

TEST_CASE("gradcheck exp") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::exp(v[0]); }, -2, 2));
}

TEST_CASE("gradcheck log") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::log(v[0]); }, 0.5, 3));
}

TEST_CASE("gradcheck sqrt") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::sqrt(v[0]); }, 0.5, 3));
}

TEST_CASE("gradcheck abs") {
  run_grad_cases(
      unary_cases([](const std::vector<Tensor>& v) { return sg::abs(signed_away_from_zero(v[0])); }, 0.1, 1));
}

TEST_CASE("gradcheck relu") {
  run_grad_cases(
      unary_cases([](const std::vector<Tensor>& v) { return sg::relu(signed_away_from_zero(v[0])); }, 0.1, 1));
}

TEST_CASE("gradcheck tanh") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::tanh(v[0]); }, -2, 2));
}

TEST_CASE("gradcheck sigmoid") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::sigmoid(v[0]); }, -4, 4));
}

TEST_CASE("gradcheck gelu_erf") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::gelu(v[0]); }, -3, 3));
}

TEST_CASE("gradcheck gelu_tanh") {
  run_grad_cases(unary_cases([](const std::vector<Tensor>& v) { return sg::gelu(v[0], sg::GeluApprox::Tanh); }, -3, 3));
}

TEST_CASE("gradcheck clamp") {
  // x in [0.1, 0.9) mapped to z = x * s + o cycling through
  // (0.1, 0.9), (-0.9, -0.1), (1.1, 1.9), (-1.9, -1.1): inside and outside [-1, 1],
  // never within 0.1 of a bound.
  auto spread = [](const Tensor& x) {
    return x * pattern(x.shape(), {1.0, -1.0, 1.0, -1.0}) + pattern(x.shape(), {0.0, 0.0, 1.0, -1.0});
  };
  using Bounds = std::pair<std::optional<double>, std::optional<double>>;
  for (const Bounds& bounds : {Bounds{-1.0, 1.0}, Bounds{-1.0, std::nullopt}, Bounds{std::nullopt, 1.0}}) {
    const double min = bounds.first.value_or(-kInf), max = bounds.second.value_or(kInf);
    CAPTURE(min);
    CAPTURE(max);
    run_grad_cases(unary_cases(
        [spread, bounds](const std::vector<Tensor>& v) { return sg::clamp(spread(v[0]), bounds.first, bounds.second); },
        0.1, 0.9));
  }
}

TEST_CASE("gradcheck where") {
  auto fn = [](const Shape& cond_shape) {
    return [cond_shape](const std::vector<Tensor>& v) { return sg::where(mask_pattern(cond_shape), v[0], v[1]); };
  };
  run_grad_cases({
      {"cond (3,4) a (3,4) b (3,4)", {{3, 4}, {3, 4}}, fn({3, 4})},
      {"cond (3,1) a (4) b (3,4)", {{4}, {3, 4}}, fn({3, 1})},
      {"cond (2,1,3) a (4,1) b (3)", {{4, 1}, {3}}, fn({2, 1, 3})},
      {"cond () a (2,3) b ()", {{2, 3}, {}}, fn({})},
      {"cond (5) a () b ()", {{}, {}}, fn({5})},
      {"noncontig cond (3,4) a (3,4) b (4)", {{3, 4}, {4}}, fn({3, 4}), -1, 1, true},
      {"noncontig cond (2,3,4) a (2,3,4) b (3,4)", {{2, 3, 4}, {3, 4}}, fn({2, 3, 4}), -1, 1, true},
  });
}

TEST_CASE("gradcheck masked_fill") {
  auto fn = [](const Shape& mask_shape) {
    return [mask_shape](const std::vector<Tensor>& v) { return sg::masked_fill(v[0], mask_pattern(mask_shape), 5.0); };
  };
  run_grad_cases({
      {"x (3,4) mask (3,4)", {{3, 4}}, fn({3, 4})},
      {"x (3,4) mask (4)", {{3, 4}}, fn({4})},
      {"x (2,3,4) mask (3,1)", {{2, 3, 4}}, fn({3, 1})},
      {"x () mask ()", {{}}, fn({})},
      {"x (5) mask ()", {{5}}, fn({})},
      {"noncontig x (3,4) mask (3,4)", {{3, 4}}, fn({3, 4}), -1, 1, true},
      {"noncontig x (2,3,4) mask (2,1,4)", {{2, 3, 4}}, fn({2, 1, 4}), -1, 1, true},
  });
}

TEST_CASE("gradcheck composite expression") {
  // Operators with scalars, chained: every operand's gradient flows through several ops.
  run_grad_cases({
      {"(3,4) (4)", {{3, 4}, {4}}, [](const std::vector<Tensor>& v) {
         return sg::tanh(v[0] * 2.0 - v[1]) / (1.0 + sg::exp(v[1])) + 3.0 * sg::sigmoid(v[0]);
       }},
  });
}

// ============================================================================================
// Forward values
// ============================================================================================

TEST_CASE("binary arithmetic values with broadcasting") {
  const Tensor a = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}, sg::kFloat64);  // (2, 3)
  const Tensor b = sg::tensor({10.0, 20.0, 40.0}, sg::kFloat64);                // (3)
  check_values(sg::add(a, b), {11, 22, 43, 14, 25, 46});
  check_values(sg::sub(b, a), {9, 18, 37, 6, 15, 34});
  check_values(sg::mul(a, b), {10, 40, 120, 40, 100, 240});
  check_values(sg::div(a, b), {0.1, 0.1, 0.075, 0.4, 0.25, 0.15});
  check_values(sg::pow(a, sg::tensor({2.0, 0.5, -1.0}, sg::kFloat64)),
               {1, std::sqrt(2.0), 1.0 / 3, 16, std::sqrt(5.0), 1.0 / 6});
  // (2, 1) + (3) -> (2, 3)
  const Tensor col = sg::from_vector(std::vector<double>{1.0, 2.0}, {2, 1});
  const Tensor s = sg::add(col, b);
  CHECK(s.shape() == Shape{2, 3});
  check_values(s, {11, 21, 41, 12, 22, 42});
  // 0-d with 0-d
  const Tensor z = sg::scalar_tensor(2.5, sg::kFloat64) * sg::scalar_tensor(4.0, sg::kFloat64);
  CHECK(z.dim() == 0);
  CHECK(z.item<double>() == 10.0);
  // float32 keeps float32
  const Tensor f = sg::tensor({1.5, 2.5}) + sg::tensor({0.25, 0.5});
  CHECK(f.dtype() == sg::kFloat32);
  check_values(f, {1.75, 3.0});
}

TEST_CASE("binary ops on non-contiguous operands") {
  sg::Generator gen(3);
  const Tensor a = sg::randn({4, 5}, gen, sg::kFloat64);
  const Tensor at = a.t();                     // (5, 4) non-contiguous
  const Tensor b = sg::randn({5, 4}, gen, sg::kFloat64);
  const Tensor r = sg::mul(at, b);
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>(), vr = r.to_vector<double>();
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 4; ++j) CHECK(vr[i * 4 + j] == va[j * 5 + i] * vb[i * 4 + j]);
  // a broadcast operand that is itself a non-contiguous view: column of a transposed matrix
  const Tensor col = sg::slice(at, 1, 0, 1);  // (5, 1)
  const Tensor s = sg::sub(b, col);
  const auto vs = s.to_vector<double>();
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 4; ++j) CHECK(vs[i * 4 + j] == vb[i * 4 + j] - va[i]);
}

TEST_CASE("int64 arithmetic") {
  const Tensor a = sg::tensor({1, -2, 3});
  const Tensor b = sg::tensor({4, 5, -6});
  const Tensor s = a + b;
  CHECK(s.dtype() == sg::kInt64);
  CHECK(s.to_vector<int64_t>() == std::vector<int64_t>{5, 3, -3});
  CHECK((a - b).to_vector<int64_t>() == std::vector<int64_t>{-3, -7, 9});
  CHECK((a * b).to_vector<int64_t>() == std::vector<int64_t>{4, -10, -18});
  CHECK(sg::neg(a).to_vector<int64_t>() == std::vector<int64_t>{-1, 2, -3});
  CHECK(sg::abs(a).to_vector<int64_t>() == std::vector<int64_t>{1, 2, 3});
  CHECK(sg::relu(a).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 3});
  CHECK(sg::clamp(a, -1.0, 2.0).to_vector<int64_t>() == std::vector<int64_t>{1, -1, 2});
  CHECK((a * 3.0).to_vector<int64_t>() == std::vector<int64_t>{3, -6, 9});  // double takes int64
  CHECK((10.0 - a).to_vector<int64_t>() == std::vector<int64_t>{9, 12, 7});
}

TEST_CASE("scalar operators") {
  const Tensor x = sg::tensor({1.0, 2.0, 4.0}, sg::kFloat64);
  check_values(x + 1.0, {2, 3, 5});
  check_values(1.0 + x, {2, 3, 5});
  check_values(x - 1.0, {0, 1, 3});
  check_values(1.0 - x, {0, -1, -3});
  check_values(x * 3.0, {3, 6, 12});
  check_values(3.0 * x, {3, 6, 12});
  check_values(x / 4.0, {0.25, 0.5, 1});
  check_values(4.0 / x, {4, 2, 1});
  check_values(-x, {-1, -2, -4});
  const Tensor xf = sg::tensor({1.0, 2.0});
  CHECK((xf * 0.5).dtype() == sg::kFloat32);  // a double operand takes the tensor's dtype
  CHECK((0.5 / xf).dtype() == sg::kFloat32);
}

TEST_CASE("unary values") {
  const Tensor x = sg::tensor({-2.0, -0.5, 0.0, 0.5, 2.0}, sg::kFloat64);
  check_values(sg::neg(x), {2, 0.5, 0, -0.5, -2});
  check_values(sg::abs(x), {2, 0.5, 0, 0.5, 2});
  check_values(sg::relu(x), {0, 0, 0, 0.5, 2});
  check_values(sg::exp(x), {std::exp(-2.0), std::exp(-0.5), 1, std::exp(0.5), std::exp(2.0)}, 1e-15);
  check_values(sg::tanh(x), {std::tanh(-2.0), std::tanh(-0.5), 0, std::tanh(0.5), std::tanh(2.0)}, 1e-15);
  check_values(sg::sigmoid(x), {1 / (1 + std::exp(2.0)), 1 / (1 + std::exp(0.5)), 0.5, 1 / (1 + std::exp(-0.5)),
                                1 / (1 + std::exp(-2.0))},
               1e-15);
  const Tensor p = sg::tensor({0.25, 1.0, 4.0, 9.0}, sg::kFloat64);
  check_values(sg::sqrt(p), {0.5, 1, 2, 3});
  check_values(sg::log(p), {std::log(0.25), 0, std::log(4.0), std::log(9.0)}, 1e-15);
  check_values(sg::pow(p, 2.0), {0.0625, 1, 16, 81});
  check_values(sg::pow(p, -0.5), {2, 1, 0.5, 1.0 / 3}, 1e-15);
  check_values(sg::pow(p, 0.0), {1, 1, 1, 1});
  // special values
  const Tensor s = sg::tensor({0.0, -1.0, kInf}, sg::kFloat64);
  check_values(sg::log(s), {-kInf, kNaN, kInf});
  check_values(sg::sqrt(sg::tensor({-1.0, 0.0, kInf})), {kNaN, 0, kInf});
  check_values(sg::relu(sg::tensor({kNaN, -1.0})), {kNaN, 0});  // NaN propagates (as PyTorch)
  check_values(sg::tanh(sg::tensor({-30.0, 30.0, kNaN})), {-1, 1, kNaN});
}

TEST_CASE("exp float32 at the edges of its range matches std::exp") {
  const std::vector<float> xs = {-200.f, -104.f, -100.f, -90.f, -87.5f, -87.f, -10.f, 0.f,   10.f,
                                 88.f,   88.5f,  88.8f,  89.f,  100.f,  200.f, 1e30f, -1e30f};
  std::vector<float> padded;  // repeated so that every value lands in a full vector and in the tail
  for (int r = 0; r < 3; ++r) padded.insert(padded.end(), xs.begin(), xs.end());
  const Tensor x = sg::from_vector(padded, {static_cast<int64_t>(padded.size())});
  const auto y = sg::exp(x).to_vector<float>();
  for (size_t i = 0; i < padded.size(); ++i) {
    CAPTURE(padded[i]);
    const float ref = std::exp(padded[i]);
    if (std::isinf(ref) || ref == 0.0f || ref < std::numeric_limits<float>::min()) {
      CHECK(y[i] == ref);  // overflow, underflow and subnormal results exactly as std::exp
    } else {
      CHECK(std::abs(y[i] - ref) <= 2.5e-7f * ref);
    }
  }
  CHECK(std::isinf(sg::exp(sg::tensor({100.0})).item<float>()));
  CHECK(sg::exp(sg::tensor({-100.0})).item<float>() == std::exp(-100.0f));  // subnormal, not flushed
  CHECK(std::isnan(sg::exp(sg::tensor({kNaN})).item<float>()));
  CHECK(sg::exp(sg::tensor({-kInf})).item<float>() == 0.0f);
}

TEST_CASE("sigmoid at large |x| neither overflows nor loses the tail") {
  // float64 reference from PyTorch: torch.sigmoid(x.double())
  const std::vector<double> ref = {3.7200759760208356e-44, 9.3576229688392989e-14, 0.2689414213699951, 0.5,
                                   0.7310585786300049,     0.99999999999990652,    1.0};
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    const Tensor y = sg::sigmoid(sg::tensor({-100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0}, dt));
    const auto v = y.to_vector<double>();
    for (double e : v) CHECK(std::isfinite(e));
    check_values(y, ref, dt == sg::kFloat32 ? 1e-6 : 1e-14, 1e-45);
  }
  check_values(sg::sigmoid(sg::tensor({-kInf, kInf, kNaN})), {0, 1, kNaN});
  check_values(sg::sigmoid(sg::tensor({-1000.0, 1000.0}, sg::kFloat64)), {0, 1});
}

TEST_CASE("gelu values and gradients match PyTorch") {
  const std::vector<double> xs = {-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0};
  // torch.nn.functional.gelu(x) and gelu(x, approximate='tanh'), float64, and their grads
  const std::vector<double> erf_y = {-0.0040496940948903104, -0.15865525393145702, -0.15426876936299344, 0,
                                     0.34573123063700656,    0.84134474606854304,  2.9959503059051098};
  const std::vector<double> tanh_y = {-0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0,
                                      0.34571400982514394,    0.84119199060827676,  2.9963626079182268};
  const std::vector<double> erf_dx = {-0.01194564720418392, -0.083315470587686347, 0.13250487534383712, 0.5,
                                      0.86749512465616285,  1.0833154705876864,    1.0119456472041839};
  const std::vector<double> tanh_dx = {-0.011584166630969648, -0.082964083845782521, 0.13263009646535764, 0.5,
                                       0.86736990353464238,   1.0829640838457826,    1.0115841666309695};
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    const double rtol = dt == sg::kFloat32 ? 2e-6 : 1e-13;
    for (bool tanh_form : {false, true}) {
      CAPTURE(tanh_form);
      Tensor x = sg::from_vector(xs, {7}).to(dt).requires_grad_();
      const Tensor y = sg::gelu(x, tanh_form ? sg::GeluApprox::Tanh : sg::GeluApprox::None);
      check_values(y, tanh_form ? tanh_y : erf_y, rtol, 1e-12);
      y.backward(sg::ones_like(y));
      check_values(x.grad(), tanh_form ? tanh_dx : erf_dx, rtol, 1e-12);
    }
  }
  // The erf form's far negative tail: 0.5 x erfc(-x/sqrt2) keeps relative accuracy in float32.
  const Tensor tail = sg::gelu(sg::tensor({-5.0, -8.0}));
  check_values(tail, {-0.5 * 5.0 * std::erfc(5.0 / std::sqrt(2.0)), -0.5 * 8.0 * std::erfc(8.0 / std::sqrt(2.0))},
               1e-6);
}

TEST_CASE("clamp values") {
  const Tensor x = sg::tensor({-3.0, -1.0, 0.0, 1.0, 3.0, kNaN}, sg::kFloat64);
  check_values(sg::clamp(x, -2.0, 2.0), {-2, -1, 0, 1, 2, kNaN});
  check_values(sg::clamp(x, 0.5, std::nullopt), {0.5, 0.5, 0.5, 1, 3, kNaN});
  check_values(sg::clamp(x, std::nullopt, -0.5), {-3, -1, -0.5, -0.5, -0.5, kNaN});
  check_values(sg::clamp(x, 2.0, 1.0), {1, 1, 1, 1, 1, kNaN});  // min > max: everything is max (as PyTorch)
  // gradient passes where min <= x <= max, bounds included (as PyTorch)
  Tensor xg = sg::tensor({-3.0, -2.0, 0.0, 2.0, 3.0}, sg::kFloat64).requires_grad_();
  const Tensor y = sg::clamp(xg, -2.0, 2.0);
  y.backward(sg::ones_like(y));
  check_values(xg.grad(), {0, 1, 1, 1, 0});
  check_error([&] { sg::clamp(x, std::nullopt, std::nullopt); }, {"clamp", "min", "max"});
}

TEST_CASE("relu and abs gradients at zero are zero (as PyTorch)") {
  Tensor x = sg::tensor({-1.0, 0.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor y = sg::relu(x);
  y.backward(sg::ones_like(y));
  check_values(x.grad(), {0, 0, 1});
  Tensor x2 = sg::tensor({-1.0, 0.0, 2.0}, sg::kFloat64).requires_grad_();
  Tensor y2 = sg::abs(x2);
  y2.backward(sg::ones_like(y2));
  check_values(x2.grad(), {-1, 0, 1});
}

TEST_CASE("comparisons") {
  const Tensor a = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
  const Tensor b = sg::tensor({2.0, 2.0, 7.0});
  auto bools = [](const Tensor& t) {
    CHECK(t.dtype() == sg::kBool);
    CHECK(t.shape() == Shape{2, 3});
    return t.to_vector<int64_t>();
  };
  CHECK(bools(sg::eq(a, b)) == std::vector<int64_t>{0, 1, 0, 0, 0, 0});
  CHECK(bools(sg::ne(a, b)) == std::vector<int64_t>{1, 0, 1, 1, 1, 1});
  CHECK(bools(sg::lt(a, b)) == std::vector<int64_t>{1, 0, 1, 0, 0, 1});
  CHECK(bools(sg::le(a, b)) == std::vector<int64_t>{1, 1, 1, 0, 0, 1});
  CHECK(bools(sg::gt(a, b)) == std::vector<int64_t>{0, 0, 0, 1, 1, 0});
  CHECK(bools(sg::ge(a, b)) == std::vector<int64_t>{0, 1, 0, 1, 1, 0});
  CHECK(bools(a < b) == bools(sg::lt(a, b)));
  CHECK(bools(a >= b) == bools(sg::ge(a, b)));
  CHECK(bools(a > 3.0) == std::vector<int64_t>{0, 0, 0, 1, 1, 1});
  CHECK(bools(a <= 2.0) == std::vector<int64_t>{1, 1, 0, 0, 0, 0});
  CHECK(bools(a < 2.0) == std::vector<int64_t>{1, 0, 0, 0, 0, 0});
  CHECK(bools(a >= 6.0) == std::vector<int64_t>{0, 0, 0, 0, 0, 1});
  // int64 and bool operands; NaN compares unequal
  CHECK(sg::lt(sg::tensor({1, 5}), sg::tensor({3, 3})).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(sg::eq(sg::tensor({true, false}), sg::tensor({true, true})).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(sg::ne(sg::tensor({kNaN}), sg::tensor({kNaN})).item<bool>());
  // no gradient flows through a comparison, and it records nothing
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  const Tensor c = x > 1.5;
  CHECK(!c.requires_grad());
  CHECK(c.grad_fn() == nullptr);
}

TEST_CASE("where and masked_fill values") {
  const Tensor cond = sg::tensor({true, false, true});                       // (3)
  const Tensor a = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}, sg::kFloat64);  // (2, 3)
  const Tensor b = sg::scalar_tensor(-1.0, sg::kFloat64);                    // ()
  const Tensor w = sg::where(cond, a, b);
  CHECK(w.shape() == Shape{2, 3});
  check_values(w, {1, -1, 3, 4, -1, 6});
  // cond (2, 1) broadcast against a (3) and b (2, 3)
  const Tensor cond2 = sg::from_vector(std::vector<bool>{false, true}, {2, 1});
  check_values(sg::where(cond2, sg::tensor({7.0, 8.0, 9.0}, sg::kFloat64), a), {1, 2, 3, 7, 8, 9});
  // int64 operands
  CHECK(sg::where(cond, sg::tensor({1, 2, 3}), sg::tensor({-1, -2, -3})).to_vector<int64_t>() ==
        std::vector<int64_t>{1, -2, 3});

  check_values(sg::masked_fill(a, cond, 0.5), {0.5, 2, 0.5, 0.5, 5, 0.5});
  check_values(sg::masked_fill(a, cond2, -kInf), {1, 2, 3, -kInf, -kInf, -kInf});
  check_values(sg::masked_fill(a.t(), cond2.t(), 0.0), {1, 0, 2, 0, 3, 0});  // non-contiguous x
  CHECK(sg::masked_fill(sg::tensor({1, 2, 3}), cond, 9.0).to_vector<int64_t>() == std::vector<int64_t>{9, 2, 9});
  // the gradient is zeroed where masked
  Tensor x = sg::tensor({1.0, 2.0, 3.0}, sg::kFloat64).requires_grad_();
  const Tensor y = sg::masked_fill(x, cond, 0.0);
  y.backward(sg::tensor({10.0, 20.0, 30.0}, sg::kFloat64));
  check_values(x.grad(), {0, 20, 0});
}

TEST_CASE("outputs are fresh tensors") {
  Tensor x = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  const Tensor p = sg::pow(x, 1.0);
  CHECK(p.impl() != x.impl());
  CHECK(p.impl()->storage != x.impl()->storage);
  CHECK(p.grad_fn() != nullptr);
  CHECK(x.grad_fn() == nullptr);
  const Tensor m = sg::masked_fill(x, sg::tensor({false, false}), 0.0);
  CHECK(m.impl()->storage != x.impl()->storage);
}

// ============================================================================================
// SIMD paths against naive scalar loops (vector bodies, tails, threads)
// ============================================================================================

namespace {
template <typename T> Tensor random_vector(int64_t n, sg::Generator& gen, double lo, double hi) {
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& e : v) e = static_cast<T>(lo + (hi - lo) * gen.uniform());
  return sg::from_vector(v, {n});
}

// rtol is a number, or a function of x for ops whose float32 error grows with |x|.
template <typename T, typename Ref, typename Rtol>
void check_against_naive(const Tensor& x, const Tensor& y, Ref ref, Rtol rtol_of, double atol) {
  REQUIRE(y.shape() == x.shape());
  const T* px = x.data_ptr<T>();
  const T* py = y.data_ptr<T>();
  int64_t bad = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double r = static_cast<double>(ref(px[i]));
    const double got = static_cast<double>(py[i]);
    double rtol;
    if constexpr (std::is_arithmetic_v<Rtol>)
      rtol = rtol_of;
    else
      rtol = rtol_of(static_cast<double>(px[i]));
    const bool ok = (std::isnan(r) && std::isnan(got)) || got == r || std::abs(got - r) <= atol + rtol * std::abs(r);
    if (!ok && bad++ < 3)
      FAIL_CHECK(fmt::format("element {} of {}: x={} got {} expected {}", i, x.numel(), px[i], got, r));
  }
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE("float32 add and exp match naive loops at every length") {
  sg::Generator gen(11);
  for (int64_t n : {1, 7, 15, 16, 17, 63, 65, 1000, 1000003}) {
    CAPTURE(n);
    const Tensor a = random_vector<float>(n, gen, -50, 50);
    const Tensor b = random_vector<float>(n, gen, -50, 50);
    const Tensor s = sg::add(a, b);
    const float* pa = a.data_ptr<float>();
    const float* pb = b.data_ptr<float>();
    const float* ps = s.data_ptr<float>();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) mismatches += ps[i] != pa[i] + pb[i];
    CHECK(mismatches == 0);
    // broadcast: (n) + () and () + (n)
    const Tensor c = sg::scalar_tensor(0.375f);
    const Tensor r1 = sg::add(a, c), r2 = sg::sub(c, a);
    const float* pc1 = r1.data_ptr<float>();
    const float* pc2 = r2.data_ptr<float>();
    mismatches = 0;
    for (int64_t i = 0; i < n; ++i) mismatches += (pc1[i] != pa[i] + 0.375f) + (pc2[i] != 0.375f - pa[i]);
    CHECK(mismatches == 0);

    // exp over a range that includes the slow-path lanes (|x| > 87.3, subnormal results).
    // The reference is exp in double rounded once: glibc's expf misrounds some subnormal
    // results, which sg::exp rounds correctly.
    const Tensor e = sg::exp(a * 2.0f);
    const Tensor a2 = a * 2.0f;
    check_against_naive<float>(a2, e, [](float v) { return static_cast<float>(std::exp(static_cast<double>(v))); },
                               2.5e-7, 0);
  }
}

TEST_CASE("SIMD unary kernels match naive loops (float32 and float64, odd lengths)") {
  sg::Generator gen(12);
  for (int64_t n : {1, 5, 13, 31, 1001, 200003}) {
    CAPTURE(n);
    {
      const Tensor x = random_vector<float>(n, gen, -8, 8);
      check_against_naive<float>(x, sg::tanh(x), [](float v) { return std::tanh(v); }, 5e-7, 1e-30);
      check_against_naive<float>(
          x, sg::sigmoid(x), [](float v) { return 1.0 / (1.0 + std::exp(-double(v))); }, 5e-7, 0);
      // gelu references in double, in forms that do not cancel for x << 0
      // NOTE: float32 rounding of the exp argument 2u costs |2u| * 6e-8 relative for x << 0
      auto two_u = [](double d) { return 2.0 * 0.7978845608028654 * (d + 0.044715 * d * d * d); };
      check_against_naive<float>(x, sg::gelu(x, sg::GeluApprox::Tanh), [&](float v) {
        return double(v) / (1.0 + std::exp(-two_u(v)));
      }, [&](double d) { return 3e-7 * (1.0 + std::abs(two_u(d))); }, 0);
      check_against_naive<float>(x, sg::gelu(x), [](float v) {
        const double d = v;
        return 0.5 * d * std::erfc(-d * 0.70710678118654752440);
      }, 3e-7, 0);
      const Tensor p = random_vector<float>(n, gen, 1e-3, 1e3);
      check_against_naive<float>(p, sg::log(p), [](float v) { return std::log(v); }, 5e-7, 1e-7);
      check_against_naive<float>(p, sg::sqrt(p), [](float v) { return std::sqrt(v); }, 0, 0);
    }
    {
      const Tensor x = random_vector<double>(n, gen, -30, 30);
      check_against_naive<double>(x, sg::exp(x), [](double v) { return std::exp(v); }, 1e-15, 0);
      check_against_naive<double>(x, sg::tanh(x), [](double v) { return std::tanh(v); }, 1e-15, 1e-300);
      check_against_naive<double>(x, sg::sigmoid(x), [](double v) { return 1.0 / (1.0 + std::exp(-v)); }, 1e-15, 0);
      check_against_naive<double>(
          x, sg::gelu(x), [](double v) { return 0.5 * v * std::erfc(-v * 0.70710678118654752440); }, 1e-15, 0);
      const Tensor p = random_vector<double>(n, gen, 1e-6, 1e6);
      check_against_naive<double>(p, sg::log(p), [](double v) { return std::log(v); }, 1e-15, 1e-15);
    }
  }
}

TEST_CASE("float32 gelu's SIMD gradient matches the derivative in double, tails and non-finite values included") {
  sg::Generator gen(14);
  auto derivative = [](float v) {  // Phi(x) + x phi(x)
    const double d = v;
    return 0.5 * std::erfc(-d * 0.70710678118654752440) + d * 0.39894228040143267794 * std::exp(-0.5 * d * d);
  };
  for (int64_t n : {1, 5, 13, 31, 1001, 200003}) {
    CAPTURE(n);
    Tensor x = random_vector<float>(n, gen, -12, 12).requires_grad_();
    sg::gelu(x).backward(sg::ones({n}));
    // NOTE: the derivative crosses zero near x = -0.75, where only an absolute bound holds.
    check_against_naive<float>(x.detach(), x.grad(), derivative, 3e-7, 2e-7);
  }
  Tensor special = sg::tensor({-INFINITY, INFINITY, NAN, -40.0f, 40.0f, -38.5f, 0.0f, -1e30f, 1e30f, -0.75179f})
                       .requires_grad_();
  sg::gelu(special).backward(sg::ones({10}));
  const std::vector<float> g = special.grad().to_vector<float>();
  CHECK(std::isnan(g[0]));  // x phi(x) = inf * 0, as PyTorch
  CHECK(std::isnan(g[1]));
  CHECK(std::isnan(g[2]));
  CHECK(g[3] == 0.0f);
  CHECK(g[4] == 1.0f);
  CHECK(g[5] == 0.0f);
  CHECK(g[6] == 0.5f);
  CHECK(g[7] == 0.0f);
  CHECK(g[8] == 1.0f);
  CHECK(std::abs(g[9]) < 1e-5f);
}

// Error of a float result r in units of the float ulp at the exact value ref (subnormal
// ulps below 2^-126).
double ulps_from(float r, double ref) {
  if (std::isnan(ref) || std::isinf(ref)) return (r == ref || (std::isnan(r) && std::isnan(ref))) ? 0.0 : INFINITY;
  int e = 0;
  std::frexp(std::abs(ref), &e);
  return std::abs(double(r) - ref) / std::ldexp(1.0, std::max(e - 24, -149));
}

TEST_CASE("float32 gelu (erf) is within 4 ulp of the double result over the float range") {
  // Every 4096th bit pattern (both signs, 0 to NaN) plus [-10, 10] in steps of 2^-12. The
  // kernel's measured maximum over every 16th pattern and steps of 2^-16 is 3.894 ulp.
  std::vector<float> v;
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 4096) v.push_back(std::bit_cast<float>(static_cast<uint32_t>(b)));
  for (int i = -10 * 4096; i <= 10 * 4096; ++i) v.push_back(static_cast<float>(i) / 4096.0f);
  const int64_t n = static_cast<int64_t>(v.size());
  Tensor x = sg::empty({n}, sg::kFloat32);
  std::copy(v.begin(), v.end(), x.data_ptr<float>());
  const std::vector<float> y = sg::gelu(x).to_vector<float>();
  double worst = 0;
  float worst_x = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = v[i];
    const double e = ulps_from(y[i], 0.5 * d * std::erfc(-d * 0.70710678118654752440));
    if (e > worst) worst = e, worst_x = v[i];
  }
  CAPTURE(worst_x);
  CHECK(worst <= 4.0);
  MESSAGE("float32 gelu: max error ", worst, " ulp at x = ", worst_x);
}

TEST_CASE("SIMD unary ops on non-contiguous input equal the contiguous result") {
  sg::Generator gen(13);
  const Tensor base = sg::randn({37, 29}, gen);
  const Tensor xt = base.t();  // (29, 37) non-contiguous
  const Tensor xc = xt.contiguous();
  REQUIRE(!xt.is_contiguous());
  for (auto fn : {+[](const Tensor& x) { return sg::exp(x); }, +[](const Tensor& x) { return sg::tanh(x); },
                  +[](const Tensor& x) { return sg::sigmoid(x); }, +[](const Tensor& x) { return sg::gelu(x); },
                  +[](const Tensor& x) { return sg::abs(x); }, +[](const Tensor& x) { return sg::relu(x); }}) {
    const Tensor a = fn(xt), b = fn(xc);
    CHECK(a.is_contiguous());
    CHECK(a.to_vector<float>() == b.to_vector<float>());
  }
}

// ============================================================================================
// In-place ops
// ============================================================================================

TEST_CASE("in-place ops update values and bump the version") {
  Tensor x = sg::tensor({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}, sg::kFloat64);
  auto version = [&] { return x.impl()->storage->version; };
  const uint64_t v0 = version();
  sg::add_(x, sg::tensor({1.0, 1.0, 2.0}, sg::kFloat64), 0.5);  // broadcast (3) -> (2, 3)
  check_values(x, {1.5, 2.5, 4, 4.5, 5.5, 7});
  CHECK(version() == v0 + 1);
  sg::mul_(x, 2.0);
  check_values(x, {3, 5, 8, 9, 11, 14});
  CHECK(version() == v0 + 2);
  sg::add_(x, sg::scalar_tensor(1.0, sg::kFloat64));
  check_values(x, {4, 6, 9, 10, 12, 15});
  sg::fill_(x, 7.0);
  check_values(x, {7, 7, 7, 7, 7, 7});
  sg::zero_(x);
  check_values(x, {0, 0, 0, 0, 0, 0});
  CHECK(version() == v0 + 5);
  // copy_ broadcasts and converts the dtype
  sg::copy_(x, sg::from_vector(std::vector<float>{1.0f, 2.0f}, {2, 1}));  // float32 (2, 1) -> float64 (2, 3)
  check_values(x, {1, 1, 1, 2, 2, 2});
  sg::copy_(x, sg::tensor({7, 8, 9}));  // int64 (3)
  check_values(x, {7, 8, 9, 7, 8, 9});
  CHECK(version() == v0 + 7);
  // through a non-contiguous view: writes land in the base, and its version moves too
  Tensor col = sg::select(x, 1, 1);  // x[:, 1]
  sg::add_(col, sg::tensor({100.0, 200.0}, sg::kFloat64));
  check_values(x, {7, 108, 9, 7, 208, 9});
  CHECK(version() == v0 + 8);
  // self += self.t() reads the source before writing
  Tensor sq = sg::tensor({{1.0, 2.0}, {3.0, 4.0}}, sg::kFloat64);
  Tensor sq_t = sq.t();
  sg::add_(sq, sq_t);
  check_values(sq, {2, 5, 5, 8});
  // int64
  Tensor i = sg::tensor({1, 2, 3});
  sg::add_(i, sg::tensor({10, 10, 10}), 2.0);
  sg::mul_(i, 3.0);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{63, 66, 69});
}

TEST_CASE("in-place ops refuse tensors that require grad under grad mode") {
  Tensor w = sg::tensor({1.0, 2.0}, sg::kFloat64).requires_grad_();
  const Tensor g = sg::tensor({0.5, 0.5}, sg::kFloat64);
  check_error([&] { sg::add_(w, g); }, {"add_", "requires grad"});
  check_error([&] { sg::mul_(w, 2.0); }, {"mul_"});
  check_error([&] { sg::fill_(w, 0.0); }, {"fill_"});
  check_error([&] { sg::zero_(w); }, {"zero_"});
  check_error([&] { sg::copy_(w, g); }, {"copy_"});
  check_values(w, {1, 2});  // untouched
  {
    sg::NoGradGuard no_grad;  // an optimizer step
    sg::add_(w, g, -2.0);
    sg::mul_(w, 2.0);
  }
  check_values(w, {0, 2});
  CHECK(w.requires_grad());
}

TEST_CASE("an in-place write to a saved tensor makes backward throw") {
  Tensor x = sg::tensor({0.5, 1.0}, sg::kFloat64).requires_grad_();
  Tensor y = sg::exp(x);  // saves y
  {
    sg::NoGradGuard no_grad;
    sg::add_(y, sg::tensor({1.0, 1.0}, sg::kFloat64));
  }
  check_error([&] { y.backward(sg::ones_like(y)); }, {"exp", "modified in place"});
}

TEST_CASE("in-place errors") {
  Tensor x = sg::zeros({2, 3}, sg::kFloat64);
  check_error([&] { sg::add_(x, sg::zeros({4}, sg::kFloat64)); }, {"add_", "[2, 3]", "[4]"});
  check_error([&] { sg::add_(x, sg::zeros({2, 3})); }, {"add_", "float64", "float32"});
  check_error([&] { sg::add_(x, sg::zeros({3, 2, 3}, sg::kFloat64)); }, {"add_", "[3, 2, 3]", "[2, 3]"});
  check_error([&] { sg::copy_(x, sg::zeros({4})); }, {"copy_", "[4]", "[2, 3]"});
}

// ============================================================================================
// Errors
// ============================================================================================

TEST_CASE("dtype mismatch errors name the op and both dtypes") {
  const Tensor f32 = sg::ones({2});
  const Tensor f64 = sg::ones({2}, sg::kFloat64);
  check_error([&] { sg::add(f32, f64); }, {"add", "float32", "float64"});
  check_error([&] { sg::mul(f64, sg::tensor({1, 2})); }, {"mul", "float64", "int64"});
  check_error([&] { sg::div(f32, f64); }, {"div", "float32", "float64"});
  check_error([&] { sg::pow(f32, f64); }, {"pow", "float32", "float64"});
  check_error([&] { sg::lt(f32, f64); }, {"lt", "float32", "float64"});
  check_error([&] { sg::where(sg::tensor({true, false}), f32, f64); }, {"where", "float32", "float64"});
}

TEST_CASE("broadcast shape mismatch errors name the op and both shapes") {
  const Tensor a = sg::ones({2, 3});
  const Tensor b = sg::ones({4});
  check_error([&] { sg::add(a, b); }, {"add", "[2, 3]", "[4]"});
  check_error([&] { a * b; }, {"mul", "[2, 3]", "[4]"});
  check_error([&] { sg::eq(a, b); }, {"eq", "[2, 3]", "[4]"});
  check_error([&] { sg::where(sg::ones({2, 3}, sg::kBool), a, b); }, {"where", "[2, 3]", "[4]"});
  check_error([&] { sg::masked_fill(a, sg::ones({4}, sg::kBool), 0.0); }, {"masked_fill", "[2, 3]", "[4]"});
  // the mask must broadcast to x's shape, not x to the mask's
  check_error([&] { sg::masked_fill(sg::ones({3}), sg::ones({2, 3}, sg::kBool), 0.0); },
              {"masked_fill", "[2, 3]", "[3]"});
}

TEST_CASE("float-only ops reject int64 and bool") {
  const Tensor i = sg::tensor({1, 2});
  check_error([&] { sg::exp(i); }, {"exp", "int64"});
  check_error([&] { sg::log(i); }, {"log", "int64"});
  check_error([&] { sg::sqrt(i); }, {"sqrt", "int64"});
  check_error([&] { sg::tanh(i); }, {"tanh", "int64"});
  check_error([&] { sg::sigmoid(i); }, {"sigmoid", "int64"});
  check_error([&] { sg::gelu(i); }, {"gelu", "int64"});
  check_error([&] { sg::div(i, i); }, {"div", "int64"});
  check_error([&] { sg::pow(i, 2.0); }, {"pow", "int64"});
  const Tensor b = sg::tensor({true, false});
  check_error([&] { sg::exp(b); }, {"exp", "bool"});
  check_error([&] { sg::add(b, b); }, {"add", "bool"});
  check_error([&] { sg::neg(b); }, {"neg", "bool"});
  check_error([&] { sg::where(sg::ones({2}), sg::ones({2}), sg::ones({2})); }, {"where", "cond", "float32"});
  check_error([&] { sg::masked_fill(sg::ones({2}), sg::ones({2}), 0.0); }, {"masked_fill", "mask", "float32"});
}

TEST_CASE("in-place ops refuse expanded views (one element in several places)") {
  Tensor x = sg::ones({1});
  Tensor e = sg::expand(x, {3});
  sgtest::check_error([&] { sg::mul_(e, 2.0); }, {"mul_", "[3]", "expanded"});
  sgtest::check_error([&] { sg::add_(e, sg::ones({3})); }, {"add_", "[3]", "expanded"});
  sgtest::check_error([&] { sg::copy_(e, sg::tensor({1.0, 2.0, 3.0})); }, {"copy_", "[3]", "expanded"});
  sgtest::check_error([&] { sg::fill_(e, 2.0); }, {"fill_", "[3]", "expanded"});
  sgtest::check_values(x, {1.0});
  Tensor one = sg::expand(sg::ones({1}), {1});  // stride 0 on a size-1 dim is harmless
  sg::mul_(one, 2.0);
  sgtest::check_values(one, {2.0});
}

TEST_CASE("an int64 tensor with a fractional scalar is an error, not a truncation") {
  Tensor i = sg::tensor({1, 2, 3});
  sgtest::check_error([&] { (void)(i * 0.5); }, {"mul", "0.5", "int64", "[3]"});
  sgtest::check_error([&] { (void)(i + 0.5); }, {"add", "0.5", "int64"});
  sgtest::check_error([&] { (void)(i < 1.5); }, {"lt", "1.5", "int64"});
  sgtest::check_error([&] { sg::add_(i, sg::tensor({1, 1, 1}), 0.5); }, {"add_", "alpha 0.5", "int64"});
  sgtest::check_error([&] { sg::mul_(i, 0.5); }, {"mul_", "0.5", "int64"});
  sgtest::check_values(i * 2.0, {2, 4, 6});
  sgtest::check_values((i < 2.0).to(sg::kInt64), {1, 0, 0});
}

TEST_CASE("pow(a, b) has zero gradient wherever the exponent is 0 (a^0 is constant), as PyTorch") {
  Tensor a = sg::tensor({0.0, 2.0, 0.0}, sg::kFloat64).requires_grad_();
  Tensor b = sg::tensor({0.0, 0.0, 2.0}, sg::kFloat64).requires_grad_();
  sg::sum(sg::pow(a, b)).backward();
  sgtest::check_values(a.grad(), {0.0, 0.0, 0.0});            // 0 * 0^-1 must not leak NaN
  sgtest::check_values(b.grad(), {0.0, std::log(2.0), 0.0});  // a^b log a, masked where a == 0
}

TEST_CASE("isfinite, isnan and isinf classify values as PyTorch; integers are finite") {
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    const Tensor x = sg::tensor({1.0, std::nan(""), double(INFINITY), -double(INFINITY), -0.0, 1e-310}, dt);
    const std::vector<int64_t> finite = {1, 0, 0, 0, 1, 1};
    CHECK(sg::isfinite(x).to_vector<int64_t>() == finite);
    CHECK(sg::isnan(x).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 0, 0, 0, 0});
    CHECK(sg::isinf(x).to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1, 1, 0, 0});
    CHECK(sg::isfinite(x.reshape({2, 3}).transpose(0, 1)).to_vector<int64_t>() ==
          std::vector<int64_t>{1, 0, 0, 1, 0, 1});
  }
  CHECK(sg::isfinite(sg::tensor({int64_t{1}, INT64_MIN})).to_vector<int64_t>() == std::vector<int64_t>{1, 1});
  CHECK(sg::isnan(sg::tensor({true, false})).to_vector<int64_t>() == std::vector<int64_t>{0, 0});
  CHECK(sg::isinf(sg::zeros({0, 3})).shape() == Shape{0, 3});
}

TEST_CASE("int64 arithmetic wraps around on overflow (two's complement, as PyTorch), never UB") {
  const Tensor big = sg::tensor({INT64_MAX, INT64_MIN, int64_t{3}});
  CHECK((big + 1.0).to_vector<int64_t>() == std::vector<int64_t>{INT64_MIN, INT64_MIN + 1, 4});
  CHECK((big - 1.0).to_vector<int64_t>() == std::vector<int64_t>{INT64_MAX - 1, INT64_MAX, 2});
  CHECK((big * 2.0).to_vector<int64_t>() == std::vector<int64_t>{-2, 0, 6});
  CHECK(sg::neg(big).to_vector<int64_t>() == std::vector<int64_t>{INT64_MIN + 1, INT64_MIN, -3});
  CHECK(sg::abs(big).to_vector<int64_t>() == std::vector<int64_t>{INT64_MAX, INT64_MIN, 3});
  CHECK(sg::sum(sg::tensor({INT64_MAX, int64_t{2}})).item<int64_t>() == INT64_MIN + 1);
  CHECK(sg::sum(sg::full({4, 3}, 4.0e18, sg::kInt64), {0}).to_vector<int64_t>() ==
        std::vector<int64_t>(3, static_cast<int64_t>(uint64_t{16000000000000000000u})));
  Tensor i = sg::tensor({INT64_MAX});
  sg::add_(i, sg::tensor({int64_t{1}}), 2.0);
  CHECK(i.item<int64_t>() == INT64_MIN + 1);
  sg::mul_(i, -1.0);
  CHECK(i.item<int64_t>() == INT64_MAX);
  sgtest::check_error([&] { sg::mul_(i, 1e30); }, {"mul_", "cannot be converted"});
  sgtest::check_error([&] { (void)(i * 1e19); }, {"cannot be converted"});
}
