// Tests of the tester: gradcheck must pass correct backwards and catch wrong ones.
#include "test_util.h"

using sg::Tensor;
using sgtest::check_error;

namespace {

// y = x^3 whose backward is deliberately off by a factor on one entry.
struct WrongCube : sg::Function<WrongCube> {
  static Tensor forward(sg::Context& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * x * x;
  }
  static std::vector<Tensor> backward(sg::Context& ctx, const Tensor& dy) {
    Tensor x = ctx.get_saved_variables()[0];
    Tensor g = dy * 3.0 * x * x;
    Tensor bump = sg::zeros_like(g);
    bump.set({1}, 0.01);  // entry 1 is wrong by a little
    return {g + bump * dy};
  }
};

// y = x^2 with the derivative of x^3 / 3 * 4.5: 3x instead of 2x, wrong on every entry.
struct WrongSquare : sg::Function<WrongSquare> {
  static Tensor forward(sg::Context& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * x;
  }
  static std::vector<Tensor> backward(sg::Context& ctx, const Tensor& dy) {
    return {dy * 3.0 * ctx.get_saved_variables()[0]};
  }
};

// Backwards that break the engine's contract: a gradient of the wrong shape, count, dtype.
struct GradWrongShape : sg::Function<GradWrongShape> {
  static Tensor forward(sg::Context&, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(sg::Context&, const Tensor& dy) { return {sg::sum(dy)}; }
};
struct GradWrongCount : sg::Function<GradWrongCount> {
  static Tensor forward(sg::Context&, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(sg::Context&, const Tensor& dy) { return {dy * 2.0, dy}; }
};
struct GradWrongDtype : sg::Function<GradWrongDtype> {
  static Tensor forward(sg::Context&, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(sg::Context&, const Tensor& dy) { return {(dy * 2.0).to(sg::kFloat32)}; }
};

// Correct on every one-hot gradient but not linear in the gradient.
struct Squaring : sg::Function<Squaring> {
  static Tensor forward(sg::Context&, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(sg::Context&, const Tensor& dy) { return {dy * dy * 2.0}; }
};

}  // namespace

TEST_CASE("gradcheck passes a correct op and returns true") {
  sg::Generator gen(1);
  Tensor a = sgtest::leaf({3, 4}, gen), b = sgtest::leaf({3, 4}, gen);
  CHECK(sg::gradcheck([](const std::vector<Tensor>& in) { return in[0] * in[1]; }, {a, b}));
}

TEST_CASE("gradcheck catches a wrong backward and names the input and the entry") {
  sg::Generator gen(2);
  Tensor x = sgtest::leaf({3}, gen);
  auto fn = [](const std::vector<Tensor>& in) { return WrongCube::apply(in[0]); };
  const std::string report = sg::gradcheck_report(fn, {x});
  CHECK(report.find("input 0") != std::string::npos);
  CHECK(report.find("input entry (1)") != std::string::npos);
  CHECK(report.find("numerical") != std::string::npos);
  check_error([&] { sg::gradcheck(fn, {x}); }, {"gradcheck", "input 0", "(1)"});
  sg::GradcheckOptions quiet;
  quiet.raise = false;
  CHECK_FALSE(sg::gradcheck(fn, {x}, quiet));
}

TEST_CASE("gradcheck's report counts the entries that differ and shows the worst one") {
  sg::Generator gen(2);
  Tensor x = sgtest::leaf({3}, gen);
  // WrongCube is off by 0.01 on one entry of the 3 x 3 Jacobian.
  const std::string one = sg::gradcheck_report([](const std::vector<Tensor>& in) { return WrongCube::apply(in[0]); },
                                               {x});
  CHECK_MESSAGE(one.find("1 of 9 entries differs; the worst, at input entry (1), output entry (1): analytical ") !=
                    std::string::npos,
                one);
  CHECK_MESSAGE(one.find("error 0.01 (atol 1e-05, rtol 0.001)") != std::string::npos, one);

  // WrongSquare is wrong on the whole diagonal (3x for 2x): 3 of 9 entries, the worst where
  // |x| is largest (x = -2: analytical -6 vs numerical -4, error 2). Both inputs are wrong,
  // so the report has a line for each.
  Tensor a = sg::tensor({0.5, -2.0, 1.0}, sg::kFloat64).requires_grad_();
  Tensor b = sg::tensor({1.0, 0.25}, sg::kFloat64).requires_grad_();
  auto fn = [](const std::vector<Tensor>& in) {
    return sg::cat({WrongSquare::apply(in[0]), WrongSquare::apply(in[1])});
  };
  const std::string both = sg::gradcheck_report(fn, {a, b});
  CHECK_MESSAGE(both.find("Jacobian mismatch for input 0 (shape [3], output shape [5]): 3 of 15 entries differ; the "
                          "worst, at input entry (1), output entry (1): analytical -6 vs numerical -4") !=
                    std::string::npos,
                both);
  CHECK_MESSAGE(both.find("error 2 ") != std::string::npos, both);
  CHECK_MESSAGE(both.find("\ngradcheck: Jacobian mismatch for input 1 (shape [2], output shape [5]): 2 of 10 entries "
                          "differ; the worst, at input entry (0), output entry (3): analytical 3 vs numerical 2") !=
                    std::string::npos,
                both);
  check_error([&] { sg::gradcheck(fn, {a, b}); }, {"3 of 15 entries differ", "2 of 10 entries differ"});
}

TEST_CASE("gradcheck reports a backward that returns a gradient of the wrong shape, count or dtype") {
  sg::Generator gen(8);
  Tensor x = sgtest::leaf({3}, gen);
  sg::GradcheckOptions quiet;
  quiet.raise = false;
  struct Case {
    const char* name;
    sg::TensorFn fn;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {"shape", [](const std::vector<Tensor>& in) { return GradWrongShape::apply(in[0]); },
       {"the backward pass raised an error", "GradWrongShape", "returned a gradient [] float64 for input 0 of shape [3]"}},
      {"count", [](const std::vector<Tensor>& in) { return GradWrongCount::apply(in[0]); },
       {"the backward pass raised an error", "GradWrongCount", "returned 2 gradients for 1 input"}},
      {"dtype", [](const std::vector<Tensor>& in) { return GradWrongDtype::apply(in[0]); },
       {"the backward pass raised an error", "GradWrongDtype", "[3] float32 for input 0 of shape [3] float64"}},
      {"output dtype", [](const std::vector<Tensor>& in) { return (in[0] * 2.0).to(sg::kFloat32); },
       {"fn must return a float64 tensor, got float32 of shape [3]"}},
      {"forward error", [](const std::vector<Tensor>& in) { return sg::matmul(in[0], sg::ones({2, 2}, sg::kFloat64)); },
       {"fn raised an error at the inputs", "matmul"}},
  };
  const std::vector<double> before = x.to_vector<double>();
  for (const Case& c : cases) {
    CAPTURE(c.name);
    std::string report;
    CHECK_NOTHROW(report = sg::gradcheck_report(c.fn, {x}));
    CHECK(report.starts_with("gradcheck: "));
    for (const std::string& f : c.fragments) CHECK_MESSAGE(report.find(f) != std::string::npos, report);
    bool ok = true;
    CHECK_NOTHROW(ok = sg::gradcheck(c.fn, {x}, quiet));
    CHECK_FALSE(ok);
    CHECK_THROWS_AS(sg::gradcheck(c.fn, {x}), sg::Error);  // raise = true: the same report, thrown
    CHECK(x.to_vector<double>() == before);
    CHECK_FALSE(x.grad().defined());
  }
}

TEST_CASE("gradcheck's random projections catch a wrong backward on large inputs") {
  sg::Generator gen(3);
  Tensor x = sgtest::leaf({64}, gen);
  sg::GradcheckOptions opts;
  opts.max_full_entries = 16;  // force the projected mode
  auto wrong = [](const std::vector<Tensor>& in) { return WrongCube::apply(in[0]); };
  auto right = [](const std::vector<Tensor>& in) { return in[0] * in[0] * in[0]; };
  const std::string report = sg::gradcheck_report(wrong, {x}, opts);
  // (how many of the 8 projections differ depends on the random directions: at least one)
  CHECK_MESSAGE(report.find("projected Jacobian mismatch for input 0 (shape [64], output shape [64]): ") !=
                    std::string::npos,
                report);
  CHECK_MESSAGE(report.find(" of 8 projections differ") != std::string::npos, report);
  CHECK_MESSAGE(report.find("; the worst, at projection ") != std::string::npos, report);
  CHECK(sg::gradcheck_report(right, {x}, opts).empty());
}

TEST_CASE("gradcheck catches a backward that is not linear in the output gradient") {
  sg::Generator gen(4);
  Tensor x = sgtest::leaf({3}, gen);
  const std::string report =
      sg::gradcheck_report([](const std::vector<Tensor>& in) { return Squaring::apply(in[0]); }, {x});
  CHECK_MESSAGE(report.find("not linear in the output gradient for input 0 (shape [3]): 3 of 3 entries differ; the "
                            "worst, at entry (") != std::string::npos,
                report);
  CHECK_MESSAGE(report.find("vjp(2 g1 + 3 g2) ") != std::string::npos, report);
}

TEST_CASE("gradcheck needs float64 inputs that require grad, and keeps the callers' gradients") {
  sg::Generator gen(5);
  Tensor f = sg::randn({3}, gen).requires_grad_();
  auto id = [](const std::vector<Tensor>& in) { return in[0] * 1.0; };
  check_error([&] { sg::gradcheck(id, {f}); }, {"gradcheck", "float64", "[3]"});
  check_error([&] { sg::gradcheck(id, {sg::randn({3}, gen, sg::kFloat64)}); }, {"gradcheck", "no input"});
  Tensor x = sgtest::leaf({3}, gen);
  sg::sum(x * 5.0).backward();
  CHECK(sg::gradcheck([](const std::vector<Tensor>& in) { return sg::exp(in[0]); }, {x}));
  sgtest::check_values(x.grad(), {5.0, 5.0, 5.0});
}

TEST_CASE("jacobian and numerical_jacobian agree: exp has a diagonal Jacobian") {
  Tensor x = sg::tensor({0.5, -1.0, 2.0}, sg::kFloat64);
  auto fn = [](const Tensor& t) { return sg::exp(t); };
  Tensor J = sg::jacobian(fn, x), N = sg::numerical_jacobian(fn, x);
  CHECK(J.shape() == sg::Shape{3, 3});
  sgtest::check_values(J, {std::exp(0.5), 0, 0, 0, std::exp(-1.0), 0, 0, 0, std::exp(2.0)});
  sgtest::check_close(N, J, 1e-7, 1e-9);
}

TEST_CASE("gradcheck leaves its inputs bit-for-bit unchanged, also in projected mode and on errors") {
  sg::Generator gen(6);
  Tensor x = sgtest::leaf({40, 30}, gen);
  const std::vector<double> before = x.to_vector<double>();
  sg::GradcheckOptions opts;
  opts.max_full_entries = 16;  // projected mode
  CHECK(sg::gradcheck([](const std::vector<Tensor>& in) { return sg::tanh(in[0]); }, {x}, opts));
  CHECK(x.to_vector<double>() == before);
  int calls = 0;
  auto throws_later = [&calls](const std::vector<Tensor>& in) {
    if (++calls > 3) throw sg::Error("boom");
    return sg::exp(in[0]);
  };
  CHECK_THROWS_AS(sg::gradcheck(throws_later, {x}), sg::Error);
  CHECK(x.to_vector<double>() == before);
  // Without raise the same failure is a report: fn raised at a perturbed input.
  calls = 0;
  const std::string report = sg::gradcheck_report(throws_later, {x}, opts);
  CHECK_MESSAGE(report.find("fn raised an error at a perturbed input (numerical Jacobian): boom") != std::string::npos,
                report);
  CHECK(x.to_vector<double>() == before);
}

TEST_CASE("gradcheck works under a NoGradGuard and rejects expanded inputs") {
  sg::Generator gen(7);
  Tensor x = sgtest::leaf({3}, gen);
  {
    sg::NoGradGuard no_grad;
    CHECK(sg::gradcheck([](const std::vector<Tensor>& in) { return sg::exp(in[0]); }, {x}));
    CHECK(!sg::GradMode::is_enabled());
  }
  Tensor e = sg::expand(sg::zeros({1}, sg::kFloat64), {3}).detach();
  e.requires_grad_();
  check_error([&] { sg::gradcheck([](const std::vector<Tensor>& in) { return in[0] * 2.0; }, {e}); },
              {"gradcheck", "input 0", "expanded"});
}
