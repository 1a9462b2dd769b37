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

TEST_CASE("gradcheck's random projections catch a wrong backward on large inputs") {
  sg::Generator gen(3);
  Tensor x = sgtest::leaf({64}, gen);
  sg::GradcheckOptions opts;
  opts.max_full_entries = 16;  // force the projected mode
  auto wrong = [](const std::vector<Tensor>& in) { return WrongCube::apply(in[0]); };
  auto right = [](const std::vector<Tensor>& in) { return in[0] * in[0] * in[0]; };
  CHECK(sg::gradcheck_report(wrong, {x}, opts).find("projected") != std::string::npos);
  CHECK(sg::gradcheck_report(right, {x}, opts).empty());
}

TEST_CASE("gradcheck catches a backward that is not linear in the output gradient") {
  sg::Generator gen(4);
  Tensor x = sgtest::leaf({3}, gen);
  const std::string report =
      sg::gradcheck_report([](const std::vector<Tensor>& in) { return Squaring::apply(in[0]); }, {x});
  CHECK(report.find("not linear") != std::string::npos);
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
