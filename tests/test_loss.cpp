// cross_entropy and nll_loss: float64 gradchecks over every layout, reduction and option;
// values hand-checked with PyTorch 1.13; the fused kernels against their naive references
// (edge rows, streamed output); numerics at the float range's ends; the single-node,
// no-N×C-saved design; and error messages.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ops/loss_kernels.h"
#include "ops/softmax.h"
#include "ops/softmax_kernels.h"
#include "test_util.h"

using sg::Reduction;
using sg::Shape;
using sg::Tensor;
using sgtest::GradCase;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

const Reduction kReductions[] = {Reduction::None, Reduction::Mean, Reduction::Sum};
const char* name_of(Reduction r) { return r == Reduction::None ? "none" : r == Reduction::Mean ? "mean" : "sum"; }

// Input shapes covering every layout: unbatched (C), (N, C), (N, C, d1), (N, C, d1, d2)
// and odd sizes.
const std::vector<Shape> kShapes = {{5}, {4, 5}, {3, 4, 2}, {2, 3, 2, 2}, {1, 1}, {3, 1}, {7, 13}};

Shape row_shape_of(const Shape& x) {
  if (x.size() == 1) return {};
  Shape s{x[0]};
  for (size_t d = 2; d < x.size(); ++d) s.push_back(x[d]);
  return s;
}
int64_t classes_of(const Shape& x) { return x.size() == 1 ? x[0] : x[1]; }

// Random labels in [0, C); with `ignore`, every third row from row 1 on holds ignore_index
// (row 0 does not when C > 1, so a Mean is never over zero rows).
Tensor labels(const Shape& x, sg::Generator& gen, bool ignore = false, int64_t ignore_index = -100) {
  Tensor t = sg::randint(0, classes_of(x), row_shape_of(x), gen);
  if (ignore) {
    int64_t* p = t.data_ptr<int64_t>();
    for (int64_t r = 1; r < t.numel(); r += 3) p[r] = ignore_index;
    if (p[0] == ignore_index && classes_of(x) > 1) p[0] = (p[0] + 1) % classes_of(x);
  }
  return t;
}

Tensor weights(int64_t C, sg::Generator& gen) {
  Tensor w = sg::rand({C}, gen, sg::kFloat64);
  double* p = w.data_ptr<double>();
  for (int64_t c = 0; c < C; ++c) p[c] = 0.25 + 2.0 * p[c];
  return w;
}

// Probabilities-like targets: each row's entries in [0, 1) (PyTorch does not require them to sum to 1).
Tensor probs(const Shape& x, sg::Generator& gen) { return sg::rand(x, gen, sg::kFloat64); }

struct IndexConfig {
  const char* name;
  bool weight, ignore;
  double eps;
  int64_t ignore_index = -100;
};
const IndexConfig kIndexConfigs[] = {
    {"plain", false, false, 0.0},
    {"weight", true, false, 0.0},
    {"ignore", false, true, 0.0},
    {"ignore an in-range class", false, true, 0.0, 0},
    {"smoothing", false, false, 0.3},
    {"smoothing 1", false, false, 1.0},
    {"weight+ignore+smoothing", true, true, 0.2},
    {"ignore+smoothing", false, true, 0.15},
};

}  // namespace

// ---- gradchecks ------------------------------------------------------------------------------

TEST_CASE("gradcheck cross_entropy with class indices") {
  sg::Generator gen(7);
  std::vector<GradCase> cases;
  for (const Shape& shape : kShapes)
    for (const IndexConfig& cfg : kIndexConfigs)
      for (Reduction red : kReductions) {
        // With one class, ignoring class 0 ignores every row: a Mean of NaN (tested apart).
        if (classes_of(shape) == 1 && cfg.ignore_index == 0 && red == Reduction::Mean) continue;
        const Tensor t = labels(shape, gen, cfg.ignore, cfg.ignore_index);
        sg::CrossEntropyOptions o;
        if (cfg.weight) o.weight = weights(classes_of(shape), gen);
        o.ignore_index = cfg.ignore_index;
        o.label_smoothing = cfg.eps;
        o.reduction = red;
        const bool noncontig = shape.size() >= 2 && cases.size() % 3 == 0;
        cases.push_back({fmt::format("{} {} {}", shape, cfg.name, name_of(red)), {shape},
                         [t, o](const std::vector<Tensor>& in) { return sg::cross_entropy(in[0], t, o); }, -2.0, 2.0,
                         noncontig});
      }
  sgtest::run_grad_cases(cases);
}

TEST_CASE("gradcheck cross_entropy with class probabilities") {
  sg::Generator gen(8);
  struct Config {
    const char* name;
    bool weight;
    double eps;
  };
  const Config configs[] = {{"plain", false, 0.0}, {"weight", true, 0.0}, {"smoothing", false, 0.25},
                            {"weight+smoothing", true, 0.1}};
  std::vector<GradCase> cases;
  for (const Shape& shape : kShapes)
    for (const Config& cfg : configs)
      for (Reduction red : kReductions) {
        const Tensor p = probs(shape, gen);
        sg::CrossEntropyOptions o;
        if (cfg.weight) o.weight = weights(classes_of(shape), gen);
        o.label_smoothing = cfg.eps;
        o.reduction = red;
        cases.push_back({fmt::format("{} {} {}", shape, cfg.name, name_of(red)), {shape},
                         [p, o](const std::vector<Tensor>& in) { return sg::cross_entropy(in[0], p, o); }, -2.0, 2.0,
                         shape.size() >= 2 && cases.size() % 4 == 1});
      }
  // The target is differentiable too (PyTorch gives it a gradient): both inputs checked.
  for (const Shape& shape : {Shape{5}, Shape{4, 5}, Shape{3, 4, 2}})
    for (Reduction red : kReductions) {
      sg::CrossEntropyOptions o;
      o.weight = weights(classes_of(shape), gen);
      o.label_smoothing = 0.2;
      o.reduction = red;
      cases.push_back({fmt::format("{} target grad {}", shape, name_of(red)), {shape, shape},
                       [o](const std::vector<Tensor>& in) { return sg::cross_entropy(in[0], in[1], o); }, 0.0, 1.0});
    }
  sgtest::run_grad_cases(cases);
}

TEST_CASE("gradcheck nll_loss") {
  sg::Generator gen(9);
  const IndexConfig configs[] = {{"plain", false, false, 0.0},
                                 {"weight", true, false, 0.0},
                                 {"ignore", false, true, 0.0, 1},
                                 {"weight+ignore", true, true, 0.0}};
  std::vector<GradCase> cases;
  for (const Shape& shape : kShapes)
    for (const IndexConfig& cfg : configs)
      for (Reduction red : kReductions) {
        const Tensor t = labels(shape, gen, cfg.ignore, cfg.ignore_index);
        sg::NLLLossOptions o;
        if (cfg.weight) o.weight = weights(classes_of(shape), gen);
        o.ignore_index = cfg.ignore_index;
        o.reduction = red;
        cases.push_back({fmt::format("{} {} {}", shape, cfg.name, name_of(red)), {shape},
                         [t, o](const std::vector<Tensor>& in) { return sg::nll_loss(in[0], t, o); }, -3.0, 0.0,
                         shape.size() >= 2 && cases.size() % 2 == 0});
      }
  sgtest::run_grad_cases(cases);
}

// ---- values hand-checked with PyTorch 1.13 -------------------------------------------------
// Every number below was computed with torch 1.13 (F.cross_entropy / F.nll_loss, float64)
// while this file was written, and pasted here; the gradients are of loss.sum().

namespace {

Tensor z4x3() {
  return sg::tensor({{1, 2, 3}, {0.5, -1, 2}, {3, 0, -2}, {0, 0, 0}}, sg::kFloat64).requires_grad_();
}
Tensor w3() { return sg::tensor({0.2, 1.0, 3.0}, sg::kFloat64); }
Tensor p4x3() {
  return sg::tensor({{0.1, 0.2, 0.7}, {1, 0, 0}, {0.3, 0.3, 0.4}, {0.5, 0.25, 0.25}}, sg::kFloat64);
}

void check_loss_and_grad(Tensor z, const Tensor& loss, const std::vector<double>& value,
                         const std::vector<double>& grad) {
  sgtest::check_values(loss, value, 1e-12, 1e-14);
  (loss.dim() == 0 ? loss : sg::sum(loss)).backward();
  sgtest::check_values(z.grad(), grad, 1e-12, 1e-14);
}

}  // namespace

TEST_CASE("cross_entropy matches PyTorch on hand-checked cases") {
  const Tensor t = sg::tensor({2, 0, 1, 2});
  const Tensor t_ign = sg::tensor({2, -100, 1, 2});
  SUBCASE("plain mean") {
    Tensor z = z4x3();
    check_loss_and_grad(z, sg::cross_entropy(z, t), {1.5756286962866988},
                        {0.02250764329259511, 0.06118211776369941, -0.08368976105629455, -0.20617740196499082,
                         0.009778143317671862, 0.19639925864731897, 0.23662478063822343, -0.23821914586883397,
                         0.0015943652306105742, 0.08333333333333333, 0.08333333333333333, -0.16666666666666669});
  }
  SUBCASE("weight + ignore + smoothing, mean") {
    Tensor z = z4x3();
    check_loss_and_grad(z, sg::cross_entropy(z, t_ign, {.weight = w3(), .label_smoothing = 0.2}),
                        {1.1127689008403037},
                        {0.03256408610904089, 0.0841722336800273, -0.11673631978906822, 0, 0, 0, 0.14412653128911315,
                         -0.11653905383143277, -0.027587477457680327, 0.12571428571428572, 0.1180952380952381,
                         -0.2438095238095238});
  }
  const std::vector<double> wis_sum_grad = {0.2279486027632863, 0.5892056357601911, -0.8171542385234778, 0, 0, 0,
                                            1.0088857190237919, -0.8157733768200294, -0.19311234220376233,
                                            0.8800000000000001, 0.8266666666666668, -1.706666666666667};
  SUBCASE("weight + ignore + smoothing, sum") {
    Tensor z = z4x3();
    check_loss_and_grad(
        z, sg::cross_entropy(z, t_ign, {.weight = w3(), .label_smoothing = 0.2, .reduction = Reduction::Sum}),
        {7.7893823058821265}, wis_sum_grad);
  }
  SUBCASE("weight + ignore + smoothing, none") {
    Tensor z = z4x3();
    check_loss_and_grad(
        z, sg::cross_entropy(z, t_ign, {.weight = w3(), .label_smoothing = 0.2, .reduction = Reduction::None}),
        {1.1857173180442728, 0.0, 3.6593840542073197, 2.944280933630534}, wis_sum_grad);
  }
  SUBCASE("ignore + smoothing, mean: the smoothing term divides by the rows not ignored") {
    // NOTE: torch 1.13 divides by 3 here (the non-ignored rows), not by all 4 rows.
    Tensor z = z4x3();
    check_loss_and_grad(z, sg::cross_entropy(z, t_ign, {.label_smoothing = 0.2}), {1.5648456072743238},
                        {0.007787968834571253, 0.05935393479604365, -0.06714190363061495, 0, 0, 0, 0.2932774852954089,
                         -0.2731810833806675, -0.02009640191474146, 0.08888888888888888, 0.08888888888888888,
                         -0.17777777777777776});
  }
  SUBCASE("probabilities, weight + smoothing, mean") {
    Tensor z = z4x3();
    check_loss_and_grad(z, sg::cross_entropy(z, p4x3(), {.weight = w3(), .label_smoothing = 0.1}),
                        {2.4410903649990794},
                        {0.04398036258923524, 0.08298042504418897, -0.12696078763342422, -0.032643435295463735,
                         -0.005204327471678337, 0.03784776276714207, 0.3501819946387503, -0.057643694554812976,
                         -0.29253830008393733, 0.07, 0.02958333333333333, -0.09958333333333336});
  }
  SUBCASE("probabilities, none") {
    Tensor z = z4x3();
    check_loss_and_grad(z, sg::cross_entropy(z, p4x3(), {.reduction = Reduction::None}),
                        {0.8076059644443805, 1.7413112966571571, 2.9549852353771473, 1.0986122886681098},
                        {-0.009969426829619571, 0.04472847105479763, -0.03475904422517817, -0.8247096078599633,
                         0.03911257327068745, 0.7855970345892759, 0.6464991225528938, -0.2528765834753358,
                         -0.39362253907755773, -0.16666666666666669, 0.08333333333333331, 0.08333333333333331});
  }
  SUBCASE("probabilities: gradient with respect to the target") {
    Tensor z = z4x3();
    Tensor p = p4x3().requires_grad_();
    sg::cross_entropy(z, p, {.weight = w3(), .label_smoothing = 0.1, .reduction = Reduction::Sum}).backward();
    sgtest::check_values(p.grad(),
                         {0.4333690735999885, 1.2668453679999423, 1.1005361039998272, 0.3134360333982883,
                          2.9171801669914417, 0.651540500974324, 0.009897342367886502, 2.749486711839433,
                          13.648460135518299, 0.1977502119602598, 0.9887510598012988, 2.966253179403896},
                         1e-12, 1e-14);
  }
  const std::vector<double> z3 = {1, -1, 0, 2, 3, 0.5, 0, 0, 1, 1, -2, 4};  // (2, 3, 2)
  const Tensor t3 = sg::from_vector<int64_t>({2, -100, 0, 1}, {2, 2});
  SUBCASE("(N, C, d1) with weight and an ignored position, none") {
    Tensor z = sg::from_vector(z3, {2, 3, 2}).requires_grad_();
    check_loss_and_grad(z, sg::cross_entropy(z, t3, {.weight = w3(), .reduction = Reduction::None}),
                        {0.509538058668857, 0.0, 0.2698024433536373, 3.0658839037574293},
                        {0.3425855981537834, 0.0, 0.12603019840219815, 0.0, -0.4686157965559816, 0.0,
                         -0.14810070793151617, 0.017147825545520388, 0.14107690253964825, -0.9533873774220261,
                         0.007023805391867946, 0.9362395518765058});
  }
  SUBCASE("(N, C, d1) with smoothing, mean") {
    Tensor z = sg::from_vector(z3, {2, 3, 2}).requires_grad_();
    check_loss_and_grad(z, sg::cross_entropy(z, t3, {.label_smoothing = 0.3}), {1.6615807133606337},
                        {0.004731733128198158, 0.0, -0.019329977955311318, 0.0, 0.014598244827113142, 0.0,
                         -0.18016784655252696, -0.027617391484826538, 0.20179483756608038, -0.25112912580734204,
                         -0.021626991013553424, 0.2787465172921686});
  }
  SUBCASE("unbatched (C) with a 0-dim target and smoothing") {
    Tensor z = sg::tensor({1.0, 2.0, 3.0}, sg::kFloat64).requires_grad_();
    const Tensor loss = sg::cross_entropy(z, sg::from_vector<int64_t>({0}, {}), {.label_smoothing = 0.1});
    CHECK(loss.dim() == 0);
    check_loss_and_grad(z, loss, {2.3076059644443805}, {-0.8433027601629529, 0.21139513772146432, 0.6319076224414885});
  }
}

TEST_CASE("nll_loss matches PyTorch on hand-checked cases") {
  SUBCASE("weight + ignore, mean") {
    Tensor x = z4x3();
    check_loss_and_grad(x, sg::nll_loss(x, sg::tensor({2, -100, 1, 2}), {.weight = w3()}), {-1.2857142857142858},
                        {0, 0, -0.42857142857142855, 0, 0, 0, 0, -0.14285714285714285, 0, 0, 0, -0.42857142857142855});
  }
  SUBCASE("none") {
    Tensor x = z4x3();
    check_loss_and_grad(x, sg::nll_loss(x, sg::tensor({2, 0, 1, 2}), {.reduction = Reduction::None}),
                        {-3.0, -0.5, 0.0, 0.0}, {0, 0, -1, -1, 0, 0, 0, -1, 0, 0, 0, -1});
  }
}

TEST_CASE("reduction None returns one loss per row, shaped like the index target") {
  sg::Generator gen(3);
  for (const Shape& shape : kShapes) {
    CAPTURE(shape);
    const Tensor z = sgtest::leaf(shape, gen);
    CHECK(sg::cross_entropy(z, labels(shape, gen), {.reduction = Reduction::None}).shape() == row_shape_of(shape));
    CHECK(sg::cross_entropy(z, probs(shape, gen), {.reduction = Reduction::None}).shape() == row_shape_of(shape));
    CHECK(sg::nll_loss(z, labels(shape, gen), {.reduction = Reduction::None}).shape() == row_shape_of(shape));
    CHECK(sg::cross_entropy(z, labels(shape, gen)).shape() == Shape{});
  }
}

TEST_CASE("mean over rows that are all ignored is NaN, with a zero gradient") {
  Tensor z = z4x3();
  const Tensor t = sg::tensor({-100, -100, -100, -100});
  for (double eps : {0.0, 0.3}) {
    CAPTURE(eps);
    const Tensor loss = sg::cross_entropy(z, t, {.label_smoothing = eps});
    CHECK(std::isnan(loss.item<double>()));
    loss.backward();
    sgtest::check_values(z.grad(), std::vector<double>(12, 0.0));
    z.zero_grad();
  }
  CHECK(std::isnan(sg::nll_loss(z, t).item<double>()));
  CHECK(sg::cross_entropy(z, t, {.reduction = Reduction::Sum}).item<double>() == 0.0);
}

TEST_CASE("an empty batch: mean refused (PyTorch: a silent NaN), sum 0, none empty") {
  Tensor z = sg::zeros({0, 3}, sg::kFloat64).requires_grad_();
  const Tensor t = sg::zeros({0}, sg::kInt64), p = sg::zeros({0, 3}, sg::kFloat64);
  sgtest::check_error([&] { sg::cross_entropy(z, t); }, {"cross_entropy", "mean over an empty batch", "[0, 3]"});
  sgtest::check_error([&] { sg::cross_entropy(z, p); }, {"cross_entropy", "mean over an empty batch"});
  sgtest::check_error([&] { sg::nll_loss(z, t); }, {"nll_loss", "mean over an empty batch", "[0, 3]"});
  sgtest::check_error([&] { sg::cross_entropy(sg::zeros({0, 3, 4}), sg::zeros({0, 4}, sg::kInt64)); }, {"[0, 3, 4]"});
  CHECK(sg::cross_entropy(z, t, {.reduction = Reduction::Sum}).item<double>() == 0.0);
  CHECK(sg::nll_loss(z, t, {.reduction = Reduction::Sum}).item<double>() == 0.0);
  const Tensor none = sg::cross_entropy(z, p, {.reduction = Reduction::None});
  CHECK(none.shape() == Shape{0});
  sg::cross_entropy(z, t, {.reduction = Reduction::Sum}).backward();
  CHECK(z.grad().shape() == Shape{0, 3});
}

TEST_CASE("cross_entropy equals nll_loss(log_softmax(z)) for class indices") {
  sg::Generator gen(11);
  for (const Shape& shape : kShapes)
    for (Reduction red : kReductions)
      for (bool weighted : {false, true}) {
        CAPTURE(shape);
        CAPTURE(name_of(red));
        CAPTURE(weighted);
        const Tensor t = labels(shape, gen, true);
        const Tensor w = weighted ? weights(classes_of(shape), gen) : Tensor();
        Tensor z1 = sgtest::leaf(shape, gen, -3, 3);
        Tensor z2 = z1.detach().clone().requires_grad_();
        const Tensor a = sg::cross_entropy(z1, t, {.weight = w, .reduction = red});
        const Tensor lp = sg::log_softmax(z2, shape.size() == 1 ? 0 : 1);
        const Tensor b = sg::nll_loss(lp, t, {.weight = w, .reduction = red});
        sgtest::check_close(a, b, 1e-12, 1e-14);
        sg::sum(a).backward();
        sg::sum(b).backward();
        sgtest::check_close(z1.grad(), z2.grad(), 1e-10, 1e-14);
      }
}

// ---- the fused design ------------------------------------------------------------------------

TEST_CASE("cross_entropy is one node that saves no N x C buffer") {
  sg::Generator gen(5);
  const int64_t N = 64, C = 4000;
  Tensor z = sg::randn({N, C}, gen).requires_grad_();
  const Tensor t = sg::randint(0, C, {N}, gen);
  const int64_t logits_bytes = static_cast<int64_t>(z.nbytes());
  for (double eps : {0.0, 0.1}) {
    CAPTURE(eps);
    const int64_t before = sg::memory_stats().current_bytes;
    sg::reset_peak_memory();
    Tensor loss = sg::cross_entropy(z, t, {.label_smoothing = eps});
    const sg::MemoryStats fwd = sg::memory_stats();
    CHECK(fwd.peak_bytes - before < logits_bytes / 20);
    REQUIRE(loss.grad_fn() != nullptr);
    CHECK(loss.grad_fn()->name() == "cross_entropy");
    REQUIRE(loss.grad_fn()->next_edges().size() == 1);
    CHECK(loss.grad_fn()->next_edges()[0].leaf == z.impl());
    // The node's backward alone: its only large allocation is dlogits itself.
    sg::reset_peak_memory();
    const int64_t held = sg::memory_stats().current_bytes;
    std::vector<Tensor> g;
    {
      sg::NoGradGuard no_grad;
      g = loss.grad_fn()->backward(sg::scalar_tensor(1.0));
    }
    CHECK(sg::memory_stats().peak_bytes - held - logits_bytes < logits_bytes / 20);
    REQUIRE(g.size() == 1);
    CHECK(g[0].shape() == z.shape());
  }
}

// ---- the fast kernels against the naive references -------------------------------------------

namespace {

// Random logits with edge rows: +inf entries, an all -inf row, a NaN, -inf entries, huge values.
template <typename T> std::vector<T> edge_logits(int64_t R, int64_t C, sg::Generator& gen) {
  const Tensor u = sg::randn({R, C}, gen, sg::kFloat64);
  std::vector<T> z(static_cast<size_t>(R * C));
  const double* p = u.data_ptr<double>();
  for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<T>(3.0 * p[i]);
  const T inf = std::numeric_limits<T>::infinity();
  auto row = [&](int64_t r) { return z.data() + r * C; };
  if (R > 1) row(1)[C / 2] = inf;
  if (R > 2) std::fill(row(2), row(2) + C, -inf);
  if (R > 3) row(3)[C - 1] = std::numeric_limits<T>::quiet_NaN();
  if (R > 4) row(4)[0] = -inf;
  if (R > 5 && C > 1) row(5)[0] = row(5)[C - 1] = inf;
  if (R > 6) row(6)[C / 3] = static_cast<T>(1e4);
  return z;
}

template <typename T> void check_same(const T* a, const T* b, size_t n, double rtol, double atol) {
  for (size_t i = 0; i < n; ++i) {
    const double x = a[i], y = b[i];
    const bool ok = (std::isnan(x) && std::isnan(y)) || x == y || std::abs(x - y) <= atol + rtol * std::abs(y);
    if (!ok) {
      FAIL_CHECK(fmt::format("element {}: {} vs reference {}", i, x, y));
      return;
    }
  }
}

template <typename T> void compare_with_naive(int64_t R, int64_t C, bool weighted, double eps, bool per_row_g,
                                              sg::Generator& gen) {
  namespace k = sg::kernels;
  const double rtol = std::is_same_v<T, float> ? 2e-5 : 1e-12, atol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  const std::vector<T> z = edge_logits<T>(R, C, gen);
  std::vector<T> w(static_cast<size_t>(C)), t(static_cast<size_t>(R * C));
  for (auto& v : w) v = static_cast<T>(0.5 + (&v - w.data()) % 3);
  for (auto& v : t) v = static_cast<T>(((&v - t.data()) % 5) / 4.0);
  std::vector<int64_t> label(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) label[r] = r % 4 == 3 ? -1 : (r * 7) % C;
  std::vector<double> g(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) g[r] = 0.5 + r % 3;
  const T* wp = weighted ? w.data() : nullptr;
  const double* gp = per_row_g ? g.data() : nullptr;
  const size_t RC = static_cast<size_t>(R * C);
  std::vector<double> stats(static_cast<size_t>(R * k::kStatCols)), stats_n = stats;
  std::vector<double> nll(R), nll_n(R), sm(R), sm_n(R);
  Tensor dz = sg::empty({R, C}, sg::dtype_of<T>), dz_n = sg::empty({R, C}, sg::dtype_of<T>);
  Tensor dt = sg::empty({R, C}, sg::dtype_of<T>), dt_n = sg::empty({R, C}, sg::dtype_of<T>);

  k::cross_entropy_index_forward(z.data(), label.data(), wp, R, C, -1, stats.data(), nll.data(),
                                 eps > 0 ? sm.data() : nullptr);
  k::cross_entropy_index_forward_naive(z.data(), label.data(), wp, R, C, -1, stats_n.data(), nll_n.data(),
                                       eps > 0 ? sm_n.data() : nullptr);
  check_same(nll.data(), nll_n.data(), nll.size(), rtol, atol);
  if (eps > 0) check_same(sm.data(), sm_n.data(), sm.size(), rtol, atol);
  const double nll_scale = (1 - eps) / 3.0, smooth_scale = eps / C / 3.0;
  k::cross_entropy_index_backward(z.data(), label.data(), wp, stats.data(), R, C, -1, gp, 0.75, nll_scale,
                                  smooth_scale, dz.data_ptr<T>());
  k::cross_entropy_index_backward_naive(z.data(), label.data(), wp, stats_n.data(), R, C, -1, gp, 0.75, nll_scale,
                                        smooth_scale, dz_n.data_ptr<T>());
  check_same(dz.data_ptr<T>(), dz_n.data_ptr<T>(), RC, rtol, atol);

  std::vector<double> loss(R), loss_n(R);
  k::cross_entropy_prob_forward(z.data(), t.data(), wp, R, C, eps, stats.data(), loss.data());
  k::cross_entropy_prob_forward_naive(z.data(), t.data(), wp, R, C, eps, stats_n.data(), loss_n.data());
  check_same(loss.data(), loss_n.data(), loss.size(), rtol, atol);
  k::cross_entropy_prob_backward(z.data(), t.data(), wp, stats.data(), R, C, eps, gp, 0.75, 0.5, dz.data_ptr<T>(),
                                 dt.data_ptr<T>());
  k::cross_entropy_prob_backward_naive(z.data(), t.data(), wp, stats_n.data(), R, C, eps, gp, 0.75, 0.5,
                                       dz_n.data_ptr<T>(), dt_n.data_ptr<T>());
  check_same(dz.data_ptr<T>(), dz_n.data_ptr<T>(), RC, rtol, atol);
  check_same(dt.data_ptr<T>(), dt_n.data_ptr<T>(), RC, rtol, atol);
}

}  // namespace

TEST_CASE("cross_entropy kernels match the naive references, edge rows included") {
  sg::Generator gen(21);
  for (int64_t C : {1, 2, 3, 16, 17, 100, 1003})
    for (bool weighted : {false, true})
      for (double eps : {0.0, 0.2})
        for (bool per_row_g : {false, true}) {
          CAPTURE(C);
          CAPTURE(weighted);
          CAPTURE(eps);
          CAPTURE(per_row_g);
          compare_with_naive<float>(11, C, weighted, eps, per_row_g, gen);
          compare_with_naive<double>(11, C, weighted, eps, per_row_g, gen);
        }
}

TEST_CASE("cross_entropy kernels on short rows (C <= one vector): chunks of rows, and row_max_sum bit for bit") {
  // Short float32 rows are taken 64 at a time with the per-row log and exp on vectors:
  // 150 rows cross two chunk boundaries.
  sg::Generator gen(23);
  for (int64_t C : {1, 5, 10, 16})
    for (bool weighted : {false, true})
      for (double eps : {0.0, 0.2}) {
        CAPTURE(C);
        CAPTURE(weighted);
        CAPTURE(eps);
        compare_with_naive<float>(150, C, weighted, eps, true, gen);
        compare_with_naive<double>(150, C, weighted, eps, false, gen);
      }
  for (int64_t C : {1, 5, 10, 16}) {
    CAPTURE(C);
    const int64_t R = 150;
    const std::vector<float> z = edge_logits<float>(R, C, gen);
    std::vector<int64_t> label(static_cast<size_t>(R), 0);
    std::vector<double> stats(static_cast<size_t>(R * sg::kernels::kStatCols)), nll(R);
    sg::kernels::cross_entropy_index_forward(z.data(), label.data(), static_cast<const float*>(nullptr), R, C, -1,
                                             stats.data(), nll.data(), nullptr);
    int64_t differ = 0;
    for (int64_t r = 0; r < R; ++r) {
      const auto ms = sg::kernels::row_max_sum(z.data() + r * C, C);
      const double mx = stats[r * sg::kernels::kStatCols], sum = stats[r * sg::kernels::kStatCols + 1];
      differ += !(mx == static_cast<double>(ms.max) || (std::isnan(mx) && std::isnan(ms.max)));
      differ += !(sum == ms.sum || (std::isnan(sum) && std::isnan(ms.sum)));
    }
    CHECK(differ == 0);
  }
}

TEST_CASE("cross_entropy kernels: large outputs (streamed stores) equal the same rows done in small parts") {
  // Rows are independent, so a 17 MB dlogits (written with non-temporal stores) must equal,
  // bit for bit, the same rows computed 64 at a time (2 MB each: plain stores).
  namespace k = sg::kernels;
  sg::Generator gen(22);
  const int64_t R = 520, C = 8192, part = 64;
  const std::vector<float> z = edge_logits<float>(R, C, gen);
  const Tensor tgt = sg::rand({R, C}, gen);
  const float* t = tgt.data_ptr<float>();
  std::vector<float> w(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) w[c] = 0.5f + static_cast<float>(c % 3);
  std::vector<int64_t> label(static_cast<size_t>(R));
  std::vector<double> g(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    label[r] = r % 4 == 3 ? -1 : (r * 7919) % C;
    g[r] = 0.5 + r % 3;
  }
  std::vector<double> stats(static_cast<size_t>(R * k::kStatCols)), nll(R), sm(R), loss(R);
  k::cross_entropy_index_forward(z.data(), label.data(), w.data(), R, C, -1, stats.data(), nll.data(), sm.data());
  Tensor dz = sg::empty({R, C}), dt = sg::empty({R, C}), dz_part = sg::empty({part, C}), dt_part = sg::empty({part, C});
  k::cross_entropy_index_backward(z.data(), label.data(), w.data(), stats.data(), R, C, -1, g.data(), 1.0, 0.3, 1e-3,
                                  dz.data_ptr<float>());
  for (int64_t r0 = 0; r0 < R; r0 += part) {
    const int64_t n = std::min(part, R - r0);
    k::cross_entropy_index_backward(z.data() + r0 * C, label.data() + r0, w.data(), stats.data() + r0 * k::kStatCols,
                                    n, C, -1, g.data() + r0, 1.0, 0.3, 1e-3, dz_part.data_ptr<float>());
    check_same(dz.data_ptr<float>() + r0 * C, dz_part.data_ptr<float>(), static_cast<size_t>(n * C), 0, 0);
  }
  k::cross_entropy_prob_forward(z.data(), t, w.data(), R, C, 0.1, stats.data(), loss.data());
  k::cross_entropy_prob_backward(z.data(), t, w.data(), stats.data(), R, C, 0.1, g.data(), 1.0, 0.5,
                                 dz.data_ptr<float>(), dt.data_ptr<float>());
  for (int64_t r0 = 0; r0 < R; r0 += part) {
    const int64_t n = std::min(part, R - r0);
    k::cross_entropy_prob_backward(z.data() + r0 * C, t + r0 * C, w.data(), stats.data() + r0 * k::kStatCols, n, C,
                                   0.1, g.data() + r0, 1.0, 0.5, dz_part.data_ptr<float>(), dt_part.data_ptr<float>());
    check_same(dz.data_ptr<float>() + r0 * C, dz_part.data_ptr<float>(), static_cast<size_t>(n * C), 0, 0);
    check_same(dt.data_ptr<float>() + r0 * C, dt_part.data_ptr<float>(), static_cast<size_t>(n * C), 0, 0);
  }
}

// ---- numerics ---------------------------------------------------------------------------------

TEST_CASE("cross_entropy stays finite and correct for huge logits") {
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    SUBCASE("+-1e4") {
      Tensor z = sg::tensor({{1e4, -1e4, 0}, {1e4, -1e4, 0}, {-1e4, -1e4, 1e4}}, dt).requires_grad_();
      const Tensor loss = sg::cross_entropy(z, sg::tensor({0, 1, 1}), {.reduction = Reduction::None});
      sgtest::check_values(loss, {0.0, 2e4, 2e4}, 1e-7, 1e-30);
      sg::sum(loss).backward();
      sgtest::check_values(z.grad(), {0, 0, 0, 1, -1, 0, 0, -1, 1}, 1e-7, 1e-30);
    }
    SUBCASE("+-3e38") {
      Tensor z = sg::tensor({{3e38, -3e38, 1}, {3e38, -3e38, 1}, {-3e38, -3e38, -3e38}}, dt).requires_grad_();
      const Tensor loss = sg::cross_entropy(z, sg::tensor({0, 2, 1}), {.reduction = Reduction::None});
      // 3e38 - 1 rounds to 3e38 (float32 too); a row of equal huge values is uniform.
      sgtest::check_values(loss, {0.0, 3e38, std::log(3.0)}, 1e-6, 1e-30);
      sg::sum(loss).backward();
      sgtest::check_values(z.grad(), {0, 0, 0, 1, 0, -1, 1.0 / 3, -2.0 / 3, 1.0 / 3}, 1e-6, 1e-30);
    }
  }
}

TEST_CASE("cross_entropy of rows of a huge negative mask value: uniform, never 0 or C times too large") {
  // Each row's (max, sum) is kept apart (in double), never as max + log(sum), which would
  // lose the sum when the max is -1e9 or float32's lowest.
  const double lowest = -3.4028234663852886e38;
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64})
    for (const double huge : {-1e4, -1e9, -1e30, lowest})
      for (int64_t C : {9, 150, 5000}) {
        CAPTURE(dt);
        CAPTURE(huge);
        CAPTURE(C);
        Tensor z = sg::full({2, C}, huge, dt);
        {
          sg::NoGradGuard no_grad;
          z.set({1, 0}, 0.0);  // row 1: one ordinary class, the rest masked
        }
        z.requires_grad_();
        const Tensor loss = sg::cross_entropy(z, sg::tensor({int64_t{3}, int64_t{0}}), {.reduction = Reduction::None});
        sgtest::check_values(loss, {std::log(static_cast<double>(C)), 0.0}, 1e-6, 1e-12);
        sg::sum(loss).backward();
        std::vector<double> want(static_cast<size_t>(2 * C), 0.0);
        for (int64_t c = 0; c < C; ++c) want[static_cast<size_t>(c)] = 1.0 / static_cast<double>(C) - (c == 3);
        sgtest::check_values(z.grad(), want, 1e-6, 1e-9);
      }
}

TEST_CASE("cross_entropy edge rows follow the documented rules") {
  // ops/softmax.h: k entries at +inf share the mass (log_softmax -log k there, -inf
  // elsewhere), an all -inf row has log_softmax -inf and softmax 0, NaN spreads over its row.
  for (sg::Dtype dt : {sg::kFloat32, sg::kFloat64}) {
    CAPTURE(dt);
    Tensor z = sg::tensor({{kInf, 0, kInf, 1},
                           {kInf, 0, kInf, 1},
                           {-kInf, -kInf, -kInf, -kInf},
                           {1, kNaN, 0, 2},
                           {-kInf, 0, 1, -kInf}},
                          dt)
                   .requires_grad_();
    const Tensor t = sg::tensor({2, 1, 3, 0, 2});
    const Tensor loss = sg::cross_entropy(z, t, {.reduction = Reduction::None});
    const double l4 = std::log(1 + std::exp(-1.0));  // the row {0, 1} with target 1
    sgtest::check_values(loss, {std::log(2.0), kInf, kInf, kNaN, l4}, 1e-6, 1e-12);
    sg::sum(loss).backward();
    const double p0 = 1 / (1 + std::exp(1.0));
    sgtest::check_values(z.grad(),
                         {0.5, 0, -0.5, 0,       //
                          0.5, -1, 0.5, 0,       // dz = p - onehot with p from the rule
                          0, 0, 0, -1,           // p = 0
                          kNaN, kNaN, kNaN, kNaN,  //
                          0, p0, -p0, 0},
                         1e-6, 1e-12);
  }
  SUBCASE("an ignored edge row gives loss 0 and gradient 0") {
    Tensor z = sg::tensor({{kNaN, 0}, {1, 2}}, sg::kFloat64).requires_grad_();
    const Tensor loss = sg::cross_entropy(z, sg::tensor({-100, 0}), {.reduction = Reduction::Sum});
    CHECK(std::isfinite(loss.item<double>()));
    loss.backward();
    CHECK(z.grad().at<double>({0, 0}) == 0.0);
    CHECK(z.grad().at<double>({0, 1}) == 0.0);
  }
  SUBCASE("NaN propagates through probability targets and nll_loss") {
    const Tensor z = sg::tensor({{1, kNaN, 0}, {1, 2, 3}}, sg::kFloat64);
    const Tensor p = sg::tensor({{0.2, 0.3, 0.5}, {1, 0, 0}}, sg::kFloat64);
    const Tensor loss = sg::cross_entropy(z, p, {.reduction = Reduction::None});
    CHECK(std::isnan(loss.at<double>({0})));
    CHECK(std::isfinite(loss.at<double>({1})));
    CHECK(std::isnan(sg::nll_loss(z, sg::tensor({1, 0})).item<double>()));
  }
}

TEST_CASE("float32 cross_entropy matches a float64 evaluation within 1e-6") {
  sg::Generator gen(31);
  const int64_t N = 512, C = 1000;
  Tensor z32 = sg::mul(sg::randn({N, C}, gen), sg::scalar_tensor(4.0)).requires_grad_();
  Tensor z64 = z32.detach().to(sg::kFloat64).requires_grad_();
  const Tensor t = sg::randint(0, C, {N}, gen);
  for (double eps : {0.0, 0.1}) {
    CAPTURE(eps);
    const Tensor rows32 = sg::cross_entropy(z32, t, {.label_smoothing = eps, .reduction = Reduction::None});
    const Tensor rows64 = sg::cross_entropy(z64, t, {.label_smoothing = eps, .reduction = Reduction::None});
    sgtest::check_close(rows32, rows64, 1e-6, 0);
    const Tensor m32 = sg::cross_entropy(z32, t, {.label_smoothing = eps});
    const Tensor m64 = sg::cross_entropy(z64, t, {.label_smoothing = eps});
    sgtest::check_close(m32, m64, 1e-6, 0);
    m32.backward();
    m64.backward();
    // dz = (p - target) / N: float32 rounding of p, relative to the row's largest entry.
    sgtest::check_close(z32.grad(), z64.grad(), 1e-5, 1e-6 / N);
    z32.zero_grad();
    z64.zero_grad();
  }
}

// ---- errors -----------------------------------------------------------------------------------

TEST_CASE("cross_entropy and nll_loss reject bad input with clear messages") {
  const Tensor z = sg::zeros({4, 3});
  const Tensor t = sg::tensor({0, 1, 2, 0});
  using sgtest::check_error;
  SUBCASE("labels out of range name the row and the value") {
    check_error([&] { sg::cross_entropy(z, sg::tensor({0, 1, 7, 0})); },
                {"cross_entropy", "target 7", "row 2", "3 classes", "[4, 3]"});
    check_error([&] { sg::cross_entropy(z, sg::tensor({0, -1, 2, 0})); }, {"target -1", "row 1"});
    check_error([&] { sg::nll_loss(z, sg::tensor({0, 1, 2, 3})); }, {"nll_loss", "target 3", "row 3"});
    check_error([&] { sg::cross_entropy(sg::zeros({2, 3, 2}), sg::from_vector<int64_t>({0, 1, 2, 5}, {2, 2})); },
                {"target 5", "position (1, 1)", "[2, 3, 2]", "[2, 2]"});
    check_error([&] { sg::cross_entropy(sg::zeros({3}), sg::from_vector<int64_t>({3}, {})); },
                {"target 3", "3 classes"});
  }
  SUBCASE("target shape mismatch names both shapes") {
    check_error([&] { sg::cross_entropy(z, sg::tensor({0, 1, 2})); }, {"cross_entropy", "[4, 3]", "[3]", "[4]"});
    check_error([&] { sg::nll_loss(z, sg::zeros({4, 1}, sg::kInt64)); }, {"nll_loss", "[4, 3]", "[4, 1]"});
    check_error([&] { sg::cross_entropy(z, sg::zeros({4, 2})); }, {"cross_entropy", "[4, 3]", "[4, 2]"});
  }
  SUBCASE("weight shape and dtype") {
    check_error([&] { sg::cross_entropy(z, t, {.weight = sg::ones({4})}); }, {"cross_entropy", "weight", "[3]", "[4]"});
    check_error([&] { sg::nll_loss(z, t, {.weight = sg::ones({3}, sg::kFloat64)}); },
                {"nll_loss", "weight", "float64", "float32"});
    const Tensor w = sg::ones({3}).requires_grad_();
    check_error([&] { sg::cross_entropy(z, t, {.weight = w}); }, {"cross_entropy", "weight", "requires grad"});
    check_error([&] { sg::nll_loss(z, t, {.weight = w}); }, {"nll_loss", "weight", "requires grad"});
    sg::NoGradGuard no_grad;  // under no_grad a weight that requires grad is just a constant
    CHECK(sg::cross_entropy(z, t, {.weight = w}).item<float>() == doctest::Approx(std::log(3.0)));
  }
  SUBCASE("label_smoothing outside [0, 1]") {
    check_error([&] { sg::cross_entropy(z, t, {.label_smoothing = 1.5}); },
                {"cross_entropy", "label_smoothing", "1.5"});
    check_error([&] { sg::cross_entropy(z, t, {.label_smoothing = -0.1}); }, {"label_smoothing", "-0.1"});
    check_error([&] { sg::cross_entropy(z, t, {.label_smoothing = kNaN}); }, {"label_smoothing", "nan"});
  }
  SUBCASE("dtypes") {
    check_error([&] { sg::cross_entropy(sg::zeros({4, 3}, sg::kInt64), t); }, {"cross_entropy", "int64", "[4, 3]"});
    check_error([&] { sg::cross_entropy(z, sg::zeros({4}, sg::kBool)); }, {"cross_entropy", "bool", "[4]"});
    check_error([&] { sg::cross_entropy(z, sg::zeros({4, 3}, sg::kFloat64)); },
                {"cross_entropy", "float64", "float32"});
    check_error([&] { sg::cross_entropy(z, sg::zeros({4})); }, {"cross_entropy", "int64", "[4]"});
    check_error([&] { sg::nll_loss(z, sg::zeros({4})); }, {"nll_loss", "int64", "float32"});
  }
  SUBCASE("undefined tensors, 0-dim logits, no classes, ignore_index with probabilities") {
    check_error([&] { sg::cross_entropy(Tensor(), t); }, {"cross_entropy", "undefined"});
    check_error([&] { sg::cross_entropy(z, Tensor()); }, {"cross_entropy", "undefined"});
    check_error([&] { sg::nll_loss(Tensor(), t); }, {"nll_loss", "undefined"});
    check_error([&] { sg::cross_entropy(sg::scalar_tensor(1.0), sg::from_vector<int64_t>({0}, {})); },
                {"cross_entropy", "0-dim"});
    check_error([&] { sg::cross_entropy(sg::zeros({4, 0}), t); }, {"cross_entropy", "no classes", "[4, 0]"});
    check_error([&] { sg::cross_entropy(z, sg::zeros({4, 3}), {.ignore_index = 1}); },
                {"cross_entropy", "ignore_index 1", "probabilit"});
  }
}

TEST_CASE("cross_entropy with (B, T, V) logits and (B, T) targets says how to reshape them, with the numbers") {
  sg::Generator gen(4);
  const Tensor logits = sg::randn({4, 8, 10}, gen);  // B = 4, T = 8, V = 10
  const Tensor targets = sg::randint(0, 10, {4, 8}, gen);
  sgtest::check_error([&] { sg::cross_entropy(logits, targets); },
              {"cross_entropy: expected a target of shape [4, 10] for an input of shape [4, 8, 10] (class dim 1), got "
               "target shape [4, 8]; the classes look like the last dim of logits (B, T, V) = (4, 8, 10): reshape "
               "logits to (B*T, V) = (32, 10) and targets to (B*T) = (32), as in "
               "cross_entropy(logits.reshape({-1, 10}), targets.reshape({-1}))"});
  // Targets already flat get the same advice; nll_loss names its log_probs.
  sgtest::check_error([&] { sg::cross_entropy(logits, targets.reshape({-1})); },
              {"got target shape [32]", "reshape logits to (B*T, V) = (32, 10) and targets to (B*T) = (32)"});
  sgtest::check_error([&] { sg::nll_loss(sg::log_softmax(logits, -1), targets); },
              {"nll_loss: expected", "reshape log_probs to (B*T, V) = (32, 10)", "nll_loss(log_probs.reshape({-1, 10})"});
  // More leading dims: the same reshape, without the letters.
  sgtest::check_error([&] { sg::cross_entropy(sg::randn({2, 3, 4, 5}, gen), sg::randint(0, 5, {2, 3, 4}, gen)); },
              {"last dim of logits [2, 3, 4, 5]: reshape logits to (-1, 5) = (24, 5) and targets to (-1) = (24)"});
  // The advice is right: the reshaped call works and equals the mean over all B*T rows.
  const Tensor loss = sg::cross_entropy(logits.reshape({-1, 10}), targets.reshape({-1}));
  const Tensor per_row = sg::cross_entropy(logits.reshape({-1, 10}), targets.reshape({-1}),
                                           {.reduction = sg::Reduction::None});
  CHECK(loss.item<double>() == doctest::Approx(sg::mean(per_row).item<double>()));
  // A target that fits neither layout gets no reshape advice.
  sgtest::check_error([&] { sg::cross_entropy(logits, sg::randint(0, 10, {4, 7}, gen)); }, {"got target shape [4, 7]"});
  try {
    sg::cross_entropy(logits, sg::randint(0, 10, {4, 7}, gen));
  } catch (const sg::Error& e) {
    CHECK(std::string(e.what()).find("reshape") == std::string::npos);
  }
}
