// optim: SGD, Adam and AdamW single steps checked by hand; parameter groups; skipped
// parameters without a gradient; gradients left untouched; state_dict round trips (also
// through a safetensors file) that continue bit for bit; load_state_dict's one error listing
// every mismatch; the schedules' values and state; clip_grad_norm_; bad options; the fused
// kernels against their naive references. PyTorch's values: tests/test_reference_optim.cpp.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <numbers>
#include <string>
#include <vector>

#include "optim/optim_kernels.h"
#include "tests/test_util.h"

using sg::Tensor;
using sgtest::check_error;
using sgtest::check_values;
namespace optim = sg::optim;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// A leaf that requires grad, holding `values`.
Tensor param(const std::vector<double>& values, sg::Dtype dtype = sg::kFloat64) {
  Tensor t = sg::from_vector(values, {static_cast<int64_t>(values.size())}).to(dtype);
  return t.requires_grad_();
}

void set_grad(Tensor& p, const std::vector<double>& values) {
  p.set_grad(sg::from_vector(values, p.shape()).to(p.dtype()));
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

// Bit-for-bit equality of two tensors' values.
void check_identical(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  CHECK(values(a) == values(b));
}

const Tensor* find(const optim::NamedTensors& named, const std::string& name) {
  for (const auto& [n, t] : named)
    if (n == name) return &t;
  return nullptr;
}

std::vector<std::string> names_of(const optim::NamedTensors& named) {
  std::vector<std::string> out;
  for (const auto& [n, t] : named) out.push_back(n);
  return out;
}

}  // namespace

// ---- single steps by hand ----------------------------------------------------------------

TEST_CASE("SGD: plain, momentum with dampening, Nesterov with weight decay, maximize") {
  SUBCASE("plain: p -= lr g") {
    Tensor p = param({1.0, 2.0});
    optim::SGD opt({p}, {.lr = 0.1});
    set_grad(p, {0.5, -1.0});
    opt.step();
    check_values(p, {0.95, 2.1}, 1e-15);
  }
  SUBCASE("momentum 0.9, dampening 0.5: buf = g, then 0.9 buf + 0.5 g") {
    Tensor p = param({1.0});
    optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.5});
    set_grad(p, {2.0});
    opt.step();  // buf = 2 (undamped first step), p = 1 - 0.2
    check_values(p, {0.8}, 1e-15);
    set_grad(p, {1.0});
    opt.step();  // buf = 1.8 + 0.5 = 2.3, p = 0.8 - 0.23
    check_values(p, {0.57}, 1e-14);
    const optim::NamedTensors sd = opt.state_dict();
    REQUIRE(find(sd, "state.0.momentum_buffer"));
    check_values(*find(sd, "state.0.momentum_buffer"), {2.3}, 1e-15);
  }
  SUBCASE("Nesterov, weight decay 0.1") {
    Tensor p = param({1.0});
    optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.5, .weight_decay = 0.1, .nesterov = true});
    set_grad(p, {1.0});
    opt.step();  // d = 1 + 0.1 = 1.1, buf = 1.1, d = 1.1 + 0.55 = 1.65, p = 1 - 0.165
    check_values(p, {0.835}, 1e-15);
    set_grad(p, {1.0});
    opt.step();  // d = 1.0835, buf = 0.55 + 1.0835 = 1.6335, d = 1.0835 + 0.81675 = 1.90025
    check_values(p, {0.835 - 0.190025}, 1e-14);
  }
  SUBCASE("maximize: p += lr g (the sign flips before the weight decay)") {
    Tensor p = param({1.0});
    optim::SGD opt({p}, {.lr = 0.1, .weight_decay = 0.5, .maximize = true});
    set_grad(p, {2.0});
    opt.step();  // d = -2 + 0.5 = -1.5, p = 1 + 0.15
    check_values(p, {1.15}, 1e-15);
  }
  SUBCASE("float32") {
    Tensor p = param({1.0, -3.0}, sg::kFloat32);
    optim::SGD opt({p}, {.lr = 0.5, .momentum = 0.9});
    set_grad(p, {1.0, 2.0});
    opt.step();
    set_grad(p, {1.0, 2.0});
    opt.step();  // buf = 1.9 g
    check_values(p, {1.0 - 0.5 - 0.95, -3.0 - 1.0 - 1.9}, 1e-6);
    CHECK(p.dtype() == sg::kFloat32);
  }
}

TEST_CASE("Adam: first step moves by lr * g / (|g| + eps); later steps by the bias-corrected ratio") {
  const double lr = 0.01, eps = 1e-8, b1 = 0.9, b2 = 0.999;
  Tensor p = param({1.0, -2.0, 0.5});
  optim::Adam opt({p}, {.lr = lr});
  const std::vector<double> g1 = {0.3, -4.0, 0.0}, g2 = {-0.1, 1.0, 2.0};
  set_grad(p, g1);
  opt.step();
  std::vector<double> want = {1.0 - lr * 0.3 / (0.3 + eps), -2.0 + lr * 4.0 / (4.0 + eps), 0.5};
  check_values(p, want, 1e-14, 0.0);
  set_grad(p, g2);
  opt.step();
  for (size_t i = 0; i < 3; ++i) {
    const double m = b1 * (1 - b1) * g1[i] + (1 - b1) * g2[i];
    const double v = b2 * (1 - b2) * g1[i] * g1[i] + (1 - b2) * g2[i] * g2[i];
    const double m_hat = m / (1 - b1 * b1), v_hat = v / (1 - b2 * b2);
    want[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
  check_values(p, want, 1e-13, 1e-15);
  const optim::NamedTensors sd = opt.state_dict();
  CHECK(find(sd, "state.0.step")->item<int64_t>() == 2);
  check_values(*find(sd, "state.0.exp_avg"), {b1 * 0.1 * 0.3 + 0.1 * -0.1, b1 * 0.1 * -4.0 + 0.1 * 1.0, 0.1 * 2.0},
               1e-14);
}

TEST_CASE("Adam: L2 weight decay goes through the gradient; AdamW decays the weights first") {
  const double lr = 0.1, wd = 0.5, eps = 1e-8;
  SUBCASE("Adam") {
    Tensor p = param({2.0});
    optim::Adam opt({p}, {.lr = lr, .weight_decay = wd});
    set_grad(p, {1.0});
    opt.step();  // g = 1 + 0.5 * 2 = 2: first step moves by lr * sign
    check_values(p, {2.0 - lr * 2.0 / (2.0 + eps)}, 1e-15);
  }
  SUBCASE("AdamW") {
    Tensor p = param({2.0});
    optim::AdamW opt({p}, {.lr = lr, .weight_decay = wd});
    set_grad(p, {-1.0});
    opt.step();  // p = 2 (1 - 0.05) = 1.9, then + lr
    check_values(p, {1.9 + lr * 1.0 / (1.0 + eps)}, 1e-15);
    CHECK(opt.name() == "AdamW");
  }
  SUBCASE("AdamW's default weight decay is 1e-2, Adam's 0") {
    Tensor p = param({1.0});
    CHECK(optim::AdamW({p}).param_groups()[0].weight_decay == 1e-2);
    CHECK(optim::Adam({p}).param_groups()[0].weight_decay == 0.0);
    CHECK(optim::Adam({p}).param_groups()[0].lr == 1e-3);
  }
}

TEST_CASE("Adam amsgrad: the denominator keeps the largest second moment") {
  const double lr = 0.1, b1 = 0.9, b2 = 0.999;
  Tensor p = param({0.0}), q = param({0.0});
  optim::Adam with({p}, {.lr = lr, .amsgrad = true});
  optim::Adam without({q}, {.lr = lr});
  for (double g : {10.0, 0.1}) {
    set_grad(p, {g});
    set_grad(q, {g});
    with.step();
    without.step();
  }
  // Step 2: v = b2 (1 - b2) 100 + (1 - b2) 0.01 < v_max = (1 - b2) 100 from step 1.
  const double m = b1 * (1 - b1) * 10.0 + (1 - b1) * 0.1;
  const double v = b2 * (1 - b2) * 100.0 + (1 - b2) * 0.01, v_max = (1 - b2) * 100.0;
  const double first = -lr * 10.0 / (10.0 + 1e-8);
  const double bc1 = 1 - b1 * b1, bc2 = std::sqrt(1 - b2 * b2);
  check_values(p, {first - lr / bc1 * m / (std::sqrt(v_max) / bc2 + 1e-8)}, 1e-13);
  check_values(q, {first - lr / bc1 * m / (std::sqrt(v) / bc2 + 1e-8)}, 1e-13);
  const optim::NamedTensors sd = with.state_dict();
  REQUIRE(find(sd, "state.0.max_exp_avg_sq"));
  check_values(*find(sd, "state.0.max_exp_avg_sq"), {v_max}, 1e-15);
  CHECK(!find(without.state_dict(), "state.0.max_exp_avg_sq"));
}

// ---- groups, skipping, gradients, versions -------------------------------------------------

TEST_CASE("param groups: each group's own lr and weight decay, the rest from the defaults") {
  Tensor a = param({1.0}), b = param({1.0}), c = param({1.0});
  optim::SGD opt({{.params = {a, b}, .lr = 0.5}, {.params = {c}, .weight_decay = 1.0}},
                 {.lr = 0.1, .weight_decay = 0.25});
  REQUIRE(opt.param_groups().size() == 2);
  CHECK(opt.param_groups()[0].lr == 0.5);
  CHECK(opt.param_groups()[0].weight_decay == 0.25);
  CHECK(opt.param_groups()[1].lr == 0.1);
  CHECK(opt.param_groups()[1].weight_decay == 1.0);
  CHECK(opt.num_params() == 3);
  for (Tensor* t : {&a, &b, &c}) set_grad(*t, {1.0});
  opt.step();
  check_values(a, {1.0 - 0.5 * 1.25}, 1e-15);
  check_values(b, {1.0 - 0.5 * 1.25}, 1e-15);
  check_values(c, {1.0 - 0.1 * 2.0}, 1e-15);
  // A schedule (or the user) sets a group's lr between steps.
  opt.param_groups()[1].lr = 0.0;
  set_grad(c, {1.0});
  opt.step();
  check_values(c, {0.8}, 1e-15);
}

TEST_CASE("parameters without a gradient are skipped and their state does not advance") {
  Tensor a = param({1.0, 2.0}), b = param({3.0});
  optim::Adam opt({a, b}, {.lr = 0.1});
  set_grad(a, {1.0, 1.0});
  opt.step();  // b has no grad yet
  CHECK(values(b) == std::vector<double>{3.0});
  optim::NamedTensors sd = opt.state_dict();
  CHECK(find(sd, "state.0.step"));
  CHECK(!find(sd, "state.1.step"));
  CHECK(!find(sd, "state.1.exp_avg"));
  set_grad(b, {1.0});
  opt.step();  // a's gradient is still there: a takes its second step, b its first
  sd = opt.state_dict();
  CHECK(find(sd, "state.0.step")->item<int64_t>() == 2);
  CHECK(find(sd, "state.1.step")->item<int64_t>() == 1);
  check_values(b, {3.0 - 0.1 / (1.0 + 1e-8)}, 1e-15);  // a first step: bias corrections of t = 1
  opt.zero_grad();
  CHECK(!a.grad().defined());
  CHECK(!b.grad().defined());
  const std::vector<double> before = values(a);
  opt.step();  // nothing has a gradient: nothing moves
  CHECK(values(a) == before);
}

TEST_CASE("a step reads gradients without changing them and bumps the parameters' versions") {
  for (int which = 0; which < 3; ++which) {
    CAPTURE(which);
    Tensor p = param({1.0, 2.0, 3.0});
    const std::vector<Tensor> params = {p};
    std::unique_ptr<optim::Optimizer> opt;
    if (which == 0)
      opt = std::make_unique<optim::SGD>(
          params, optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1, .maximize = true});
    if (which == 1)
      opt = std::make_unique<optim::Adam>(params, optim::AdamOptions{.weight_decay = 0.1, .maximize = true});
    if (which == 2) opt = std::make_unique<optim::AdamW>(params);
    // A graph that saved p: after the step its backward must refuse the stale value.
    Tensor loss = sg::sum(p * p);
    set_grad(p, {0.5, -0.25, 1.0});
    const Tensor grad = p.grad();
    opt->step();
    CHECK(values(grad) == std::vector<double>{0.5, -0.25, 1.0});
    CHECK(p.grad().impl() == grad.impl());
    CHECK_THROWS_AS(loss.backward(), sg::Error);
  }
}

// ---- state dict ----------------------------------------------------------------------------

namespace {

// Three float32/float64 parameters in two groups; gradients that depend on the step.
struct Setup {
  Tensor w = param({0.5, -1.0, 2.0, 0.25}).reshape({2, 2}).detach().requires_grad_();
  Tensor b = param({0.1, 0.2});
  Tensor c = param({1.0, -1.0, 3.0}, sg::kFloat32);
  std::vector<optim::ParamGroup> groups() { return {{.params = {w, b}}, {.params = {c}, .lr = 0.05}}; }
  std::vector<Tensor*> all() { return {&w, &b, &c}; }
  void grads(int step) {
    int k = 0;
    for (Tensor* t : all()) {
      std::vector<double> g(static_cast<size_t>(t->numel()));
      for (size_t i = 0; i < g.size(); ++i) g[i] = std::sin(1.0 + step * 0.7 + k++ * 1.3);
      t->set_grad(sg::from_vector(g, t->shape()).to(t->dtype()));
    }
  }
};

template <typename Opt, typename Options> void check_round_trip(Options options, bool through_file) {
  Setup one, two;
  Opt a(one.groups(), options);
  for (int s = 0; s < 3; ++s) {
    one.grads(s);
    if (s == 1) one.b.zero_grad();  // b skips a step: its step count differs from w's
    a.step();
  }
  // The second optimizer starts from the first one's parameters and state.
  for (size_t i = 0; i < 3; ++i) {
    sg::NoGradGuard no_grad;
    sg::copy_(*two.all()[i], *one.all()[i]);
  }
  Opt b(two.groups(), options);
  b.param_groups()[0].lr = 123.0;  // restored by the load
  if (through_file) {
    const std::string path = "optim_round_trip.safetensors";
    optim::save(a, path);
    optim::load(b, path);
    std::filesystem::remove(path);
  } else {
    b.load_state_dict(a.state_dict());
  }
  CHECK(b.param_groups()[0].lr == a.param_groups()[0].lr);
  for (int s = 3; s < 6; ++s) {
    one.grads(s);
    two.grads(s);
    a.step();
    b.step();
  }
  for (size_t i = 0; i < 3; ++i) check_identical(*one.all()[i], *two.all()[i]);
  const optim::NamedTensors sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(names_of(sa) == names_of(sb));
  for (size_t i = 0; i < sa.size(); ++i) {
    CAPTURE(sa[i].first);
    check_identical(sa[i].second, sb[i].second);
  }
}

}  // namespace

TEST_CASE("state_dict: names, dtypes and shapes") {
  Setup s;
  optim::Adam opt(s.groups(), {.lr = 0.01, .betas = {0.8, 0.9}, .amsgrad = true});
  s.grads(0);
  s.b.zero_grad();
  opt.step();
  const optim::NamedTensors sd = opt.state_dict();
  const std::vector<std::string> want = {"param_groups.0.lr",
                                         "param_groups.0.weight_decay",
                                         "param_groups.0.params",
                                         "param_groups.1.lr",
                                         "param_groups.1.weight_decay",
                                         "param_groups.1.params",
                                         "options.beta1",
                                         "options.beta2",
                                         "options.eps",
                                         "options.amsgrad",
                                         "options.maximize",
                                         "options.decoupled_weight_decay",
                                         "state.0.step",
                                         "state.0.exp_avg",
                                         "state.0.exp_avg_sq",
                                         "state.0.max_exp_avg_sq",
                                         "state.2.step",
                                         "state.2.exp_avg",
                                         "state.2.exp_avg_sq",
                                         "state.2.max_exp_avg_sq"};
  CHECK(names_of(sd) == want);
  CHECK(find(sd, "param_groups.1.lr")->dtype() == sg::kFloat64);
  CHECK(find(sd, "param_groups.1.lr")->dim() == 0);
  CHECK(find(sd, "param_groups.1.lr")->item<double>() == 0.05);
  CHECK(find(sd, "param_groups.0.params")->to_vector<int64_t>() == std::vector<int64_t>{0, 1});
  CHECK(find(sd, "param_groups.1.params")->to_vector<int64_t>() == std::vector<int64_t>{2});
  CHECK(find(sd, "options.beta1")->item<double>() == 0.8);
  CHECK(find(sd, "options.amsgrad")->dtype() == sg::kInt64);
  CHECK(find(sd, "options.amsgrad")->item<int64_t>() == 1);
  CHECK(find(sd, "state.0.exp_avg")->shape() == sg::Shape{2, 2});
  CHECK(find(sd, "state.2.exp_avg")->dtype() == sg::kFloat32);
  CHECK(find(sd, "state.2.step")->dtype() == sg::kInt64);
  // A snapshot: stepping again does not change what was returned.
  const std::vector<double> before = values(*find(sd, "state.0.exp_avg"));
  s.grads(1);
  opt.step();
  CHECK(values(*find(sd, "state.0.exp_avg")) == before);
  // SGD without momentum keeps no per-parameter state.
  optim::SGD sgd(s.groups(), {.lr = 0.1});
  sgd.step();
  for (const std::string& n : names_of(sgd.state_dict())) CHECK(n.rfind("state.", 0) != 0);
}

TEST_CASE("state_dict round trip: a loaded optimizer continues bit for bit") {
  SUBCASE("SGD") {
    check_round_trip<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1}, false);
  }
  SUBCASE("Adam") { check_round_trip<optim::Adam>(optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1}, false); }
  SUBCASE("Adam amsgrad") { check_round_trip<optim::Adam>(optim::AdamOptions{.lr = 0.01, .amsgrad = true}, false); }
  SUBCASE("AdamW") { check_round_trip<optim::AdamW>(optim::AdamWOptions{.lr = 0.01}, false); }
  SUBCASE("AdamW through a safetensors file") { check_round_trip<optim::AdamW>(optim::AdamWOptions{.lr = 0.01}, true); }
  SUBCASE("SGD through a safetensors file") {
    check_round_trip<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.5, .nesterov = true}, true);
  }
}

TEST_CASE("load_state_dict: one error lists every mismatch, and nothing changes") {
  Setup s;
  optim::Adam opt(s.groups(), {.lr = 0.01});
  s.grads(0);
  opt.step();
  const optim::NamedTensors good = opt.state_dict();

  optim::NamedTensors bad;
  for (const auto& [name, t] : good) {
    if (name == "state.0.exp_avg_sq") continue;  // missing
    if (name == "state.2.exp_avg")
      bad.emplace_back(name, sg::zeros({4}, sg::kFloat32));  // wrong shape
    else if (name == "state.1.exp_avg")
      bad.emplace_back(name, sg::zeros({2}, sg::kFloat32));  // wrong dtype
    else if (name == "param_groups.0.params")
      bad.emplace_back(name, sg::tensor({0, 1, 2}));  // wrong count
    else if (name == "options.beta1")
      bad.emplace_back(name, sg::scalar_tensor(0.5, sg::kFloat64));  // other option
    else if (name == "param_groups.1.lr")
      bad.emplace_back(name, sg::scalar_tensor(-1.0, sg::kFloat64));
    else
      bad.emplace_back(name, t);
  }
  bad.emplace_back("state.7.exp_avg", sg::zeros({1}));  // no parameter 7
  bad.emplace_back("extra", sg::zeros({1}));
  Setup other;
  optim::Adam fresh(other.groups(), {.lr = 0.01});
  fresh.param_groups()[1].lr = 0.5;
  check_error([&] { fresh.load_state_dict(bad); },
              {"Adam.load_state_dict", "8 problems", "missing: state.0.exp_avg_sq",
               "state.2.exp_avg: got float32 [4], expected float32 [3]",
               "state.1.exp_avg: got float32 [2], expected float64 [2] (parameter 1 is float64 [2])",
               "param_groups.0.params: param group 0 has 3 parameters in the checkpoint, 2 here",
               "options.beta1: the checkpoint has 0.5, this optimizer 0.9", "param_groups.1.lr: -1 is not >= 0",
               "unexpected: state.7.exp_avg (this optimizer has 3 parameters)", "unexpected: extra"});
  CHECK(fresh.param_groups()[1].lr == 0.5);                                        // untouched
  for (const auto& [n, t] : fresh.state_dict()) CHECK(n.rfind("state.", 0) != 0);  // still no state

  // An SGD state dict in an Adam: every option differs by name.
  optim::SGD sgd(other.groups(), {.lr = 0.1, .momentum = 0.9});
  check_error([&] { fresh.load_state_dict(sgd.state_dict()); },
              {"missing: options.beta1", "missing: options.amsgrad", "unexpected: options.momentum",
               "unexpected: options.nesterov"});
  // Another number of groups.
  optim::Adam one_group(std::vector<Tensor>{other.w, other.b, other.c});
  check_error([&] { fresh.load_state_dict(one_group.state_dict()); },
              {"missing: param_groups.1.lr", "param group 0 has 3 parameters in the checkpoint, 2 here"});
  check_error([&] { one_group.load_state_dict(fresh.state_dict()); },
              {"unexpected: param_groups.1.lr", "more than the 1 param groups"});
  // A duplicate name.
  optim::NamedTensors twice = good;
  twice.push_back(good.front());
  check_error([&] { fresh.load_state_dict(twice); }, {"param_groups.0.lr: given more than once"});
  // The good one loads.
  fresh.load_state_dict(good);
  CHECK(fresh.param_groups()[1].lr == 0.05);
}

// ---- schedules -----------------------------------------------------------------------------

namespace {
struct TwoGroups {
  Tensor a = param({1.0}), b = param({1.0});
  optim::SGD opt{{{.params = {a}, .lr = 0.1}, {.params = {b}, .lr = 0.02}}, {.lr = 1.0}};
};
}  // namespace

TEST_CASE("StepLR, CosineAnnealingLR, WarmupCosine: values, groups, state") {
  SUBCASE("StepLR") {
    TwoGroups t;
    optim::StepLR sched(t.opt, 3, 0.5);
    std::vector<double> lr0;
    for (int e = 0; e < 8; ++e) {
      CHECK(sched.last_epoch() == e);
      CHECK(t.opt.param_groups()[0].lr == sched.get_last_lr()[0]);
      lr0.push_back(sched.get_last_lr()[0]);
      CHECK(sched.get_last_lr()[1] == doctest::Approx(0.02 * std::pow(0.5, e / 3)).epsilon(1e-15));
      sched.step();
    }
    CHECK(lr0 == std::vector<double>{0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025});
    CHECK(sched.base_lrs() == std::vector<double>{0.1, 0.02});
  }
  SUBCASE("CosineAnnealingLR") {
    TwoGroups t;
    optim::CosineAnnealingLR sched(t.opt, 4, 0.01);
    const double want[] = {0.1,  0.01 + 0.09 * (1 + std::sqrt(0.5)) / 2, 0.055, 0.01 + 0.09 * (1 - std::sqrt(0.5)) / 2,
                           0.01, 0.01 + 0.09 * (1 - std::sqrt(0.5)) / 2, 0.055};
    for (double w : want) {
      CHECK(sched.get_last_lr()[0] == doctest::Approx(w).epsilon(1e-14));
      sched.step();
    }
  }
  SUBCASE("WarmupCosine") {
    TwoGroups t;
    optim::WarmupCosine sched(t.opt, 3, 7, 0.001);  // start factor 1/4: lr = base (t + 1) / 4
    const double b = 0.1, m = 0.001;
    const double want[] = {b / 4,
                           b / 2,
                           3 * b / 4,
                           b,
                           m + (b - m) * (1 + std::sqrt(0.5)) / 2,
                           m + (b - m) / 2,
                           m + (b - m) * (1 - std::sqrt(0.5)) / 2,
                           m,
                           m,
                           m};
    for (double w : want) {
      CHECK(sched.get_last_lr()[0] == doctest::Approx(w).epsilon(1e-14));
      CHECK(t.opt.param_groups()[0].lr == sched.get_last_lr()[0]);
      sched.step();
    }
    optim::WarmupCosine zero(t.opt, 2, 4, 0.0, 0.0);  // bases 0 (the groups' lrs now): lr 0
    CHECK(zero.base_lrs()[0] == m);
    CHECK(zero.get_last_lr()[0] == 0.0);
    TwoGroups fresh;
    optim::WarmupCosine none(fresh.opt, 0, 2);  // no warmup: cosine from the start
    CHECK(none.get_last_lr()[0] == 0.1);
    none.step();
    CHECK(none.get_last_lr()[0] == doctest::Approx(0.05).epsilon(1e-15));
  }
  SUBCASE("state dict round trip resumes the schedule and the optimizer's lr") {
    TwoGroups t, u;
    optim::WarmupCosine a(t.opt, 5, 20, 1e-4);
    for (int e = 0; e < 7; ++e) a.step();
    optim::WarmupCosine b(u.opt, 5, 20, 1e-4);
    b.load_state_dict(a.state_dict());
    CHECK(b.last_epoch() == 7);
    CHECK(u.opt.param_groups()[1].lr == t.opt.param_groups()[1].lr);
    for (int e = 0; e < 5; ++e) {
      a.step();
      b.step();
      CHECK(b.get_last_lr() == a.get_last_lr());
    }
    optim::NamedTensors bad = a.state_dict();
    bad[1].second = sg::zeros({3}, sg::kFloat64);
    bad.erase(bad.begin());
    bad.emplace_back("step_size", sg::zeros({}));
    check_error([&] { b.load_state_dict(bad); },
                {"WarmupCosine.load_state_dict", "3 problems", "base_lrs: got float64 [3], expected float64 [2]",
                 "missing: last_epoch", "unexpected: step_size"});
  }
}

TEST_CASE("schedules reject bad arguments") {
  TwoGroups t;
  check_error([&] { optim::StepLR(t.opt, 0); }, {"StepLR", "step_size must be positive, got 0"});
  check_error([&] { optim::StepLR(t.opt, 2, -0.5); }, {"StepLR", "gamma", "-0.5"});
  check_error([&] { optim::CosineAnnealingLR(t.opt, 0); }, {"CosineAnnealingLR", "T_max must be positive, got 0"});
  check_error([&] { optim::CosineAnnealingLR(t.opt, 5, -1.0); }, {"eta_min must be >= 0, got -1"});
  check_error([&] { optim::WarmupCosine(t.opt, 10, 10); }, {"WarmupCosine", "total_steps (10)", "warmup_steps (10)"});
  check_error([&] { optim::WarmupCosine(t.opt, -1, 10); }, {"warmup_steps must be >= 0, got -1"});
  check_error([&] { optim::WarmupCosine(t.opt, 1, 10, 0.0, 1.5); }, {"start_factor must be in [0, 1], got 1.5"});
}

// ---- clip_grad_norm_ -----------------------------------------------------------------------

TEST_CASE("clip_grad_norm_: total norm over all gradients, scale min(1, max / (total + 1e-6))") {
  Tensor a = param({3.0, 0.0}), b = param({4.0}, sg::kFloat32), c = param({7.0});
  set_grad(a, {3.0, 0.0});
  set_grad(b, {-4.0});  // c has no gradient: skipped
  double total = optim::clip_grad_norm_({a, b, c}, 2.5);
  CHECK(total == 5.0);
  const double coef = 2.5 / (5.0 + 1e-6);
  check_values(a.grad(), {3.0 * coef, 0.0}, 1e-15);
  check_values(b.grad(), {-4.0 * coef}, 1e-7);
  CHECK(!c.grad().defined());
  // Below max_norm: multiplied by 1, unchanged.
  total = optim::clip_grad_norm_({a, b}, 100.0);
  CHECK(total == doctest::Approx(2.5).epsilon(1e-6));
  check_values(a.grad(), {3.0 * coef, 0.0}, 1e-15);
  // Other norms.
  set_grad(a, {3.0, -1.0});
  set_grad(b, {-4.0});
  CHECK(optim::clip_grad_norm_({a, b}, 1e9, 1.0) == 8.0);
  CHECK(optim::clip_grad_norm_({a, b}, 1e9, optim::kInfNorm) == 4.0);
  CHECK(optim::clip_grad_norm_({a, b}, 1e9, 3.0) == doctest::Approx(std::cbrt(27.0 + 1.0 + 64.0)).epsilon(1e-15));
  set_grad(a, {3.0, -1.0});
  optim::clip_grad_norm_({a}, 1.0, optim::kInfNorm);
  check_values(a.grad(), {3.0 / (3.0 + 1e-6), -1.0 / (3.0 + 1e-6)}, 1e-15);
  // No gradients at all: 0, nothing to do.
  CHECK(optim::clip_grad_norm_({c}, 1.0) == 0.0);
  // A large gradient split over threads.
  Tensor big = sg::ones({100003}).requires_grad_();
  big.set_grad(sg::full({100003}, 2.0));
  CHECK(optim::clip_grad_norm_({big}, 1.0) == doctest::Approx(2.0 * std::sqrt(100003.0)).epsilon(1e-12));
}

TEST_CASE("clip_grad_norm_: non-finite norms") {
  Tensor a = param({1.0, 2.0});
  set_grad(a, {1.0, kNaN});
  check_error([&] { optim::clip_grad_norm_({a}, 1.0, 2.0, true); }, {"clip_grad_norm_", "non-finite (nan)"});
  CHECK(std::isnan(optim::clip_grad_norm_({a}, 1.0)));
  CHECK(std::isnan(a.grad().to_vector<double>()[0]));  // PyTorch scales by a NaN coefficient too
  set_grad(a, {1.0, kNaN});
  CHECK(std::isnan(optim::clip_grad_norm_({a}, 1.0, optim::kInfNorm)));
  set_grad(a, {1.0, std::numeric_limits<double>::infinity()});
  check_error([&] { optim::clip_grad_norm_({a}, 1.0, optim::kInfNorm, true); }, {"non-finite (inf)"});
  check_error([&] { optim::clip_grad_norm_({a}, 1.0, 0.0); }, {"norm_type must be > 0", "got 0"});
}

// ---- bad options and parameters ------------------------------------------------------------

TEST_CASE("optimizers reject bad options and parameters with clear errors") {
  Tensor p = param({1.0});
  check_error([&] { optim::SGD({p}, {}); }, {"SGD", "lr is required"});
  check_error([&] { optim::SGD({p}, {.lr = -0.1}); }, {"SGD", "invalid learning rate -0.1"});
  check_error([&] { optim::SGD({p}, {.lr = 0.1, .momentum = -0.5}); }, {"SGD", "invalid momentum -0.5"});
  check_error([&] { optim::SGD({p}, {.lr = 0.1, .weight_decay = -1}); }, {"SGD", "invalid weight_decay -1"});
  check_error([&] { optim::SGD({p}, {.lr = 0.1, .nesterov = true}); },
              {"Nesterov momentum requires a momentum and zero dampening", "momentum 0 and dampening 0"});
  check_error([&] { optim::SGD({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}); },
              {"dampening 0.1"});
  check_error([&] { optim::Adam({p}, {.lr = -1.0}); }, {"Adam", "invalid learning rate -1"});
  check_error([&] { optim::Adam({p}, {.eps = -1e-8}); }, {"Adam", "invalid epsilon -1e-08"});
  check_error([&] { optim::Adam({p}, {.betas = {1.0, 0.999}}); }, {"Adam", "beta parameter at index 0: 1"});
  check_error([&] { optim::AdamW({p}, {.betas = {0.9, -0.1}}); }, {"AdamW", "beta parameter at index 1: -0.1"});
  check_error([&] { optim::AdamW({p}, {.weight_decay = -0.01}); }, {"AdamW", "invalid weight_decay -0.01"});

  check_error([&] { optim::Adam(std::vector<Tensor>{}); }, {"Adam", "param group 0 has no parameters"});
  check_error([&] { optim::Adam(std::vector<optim::ParamGroup>{}); }, {"Adam", "got no parameter groups"});
  check_error([&] { optim::Adam({sg::ones({2})}); }, {"parameter 0 of param group 0 (float32 [2])", "requires grad"});
  check_error([&] { optim::Adam({p * 2.0}); }, {"floating leaf", "computed by an op"});
  check_error([&] { optim::Adam({Tensor()}); }, {"parameter 0 of param group 0 is undefined"});
  check_error(
      [&] {
        optim::Adam({{.params = {p}}, {.params = {param({1.0}), p}}});
      },
      {"parameter 1 of param group 1", "listed more than once"});
  Tensor strided = sg::zeros({3, 2}, sg::kFloat64).t().detach().requires_grad_();
  check_error([&] { optim::Adam({strided}); }, {"is not contiguous", "[2, 3]"});
  check_error([&] { optim::SGD({{.params = {p}, .lr = -1.0}}, {.lr = 0.1}); },
              {"SGD", "invalid lr -1 in param group 0"});

  // Values set between steps are checked at the step.
  optim::Adam opt({p});
  set_grad(p, {1.0});
  opt.param_groups()[0].lr = -0.5;
  check_error([&] { opt.step(); }, {"Adam.step", "param group 0 has lr -0.5"});
  opt.param_groups()[0].lr = 0.1;
  opt.param_groups()[0].params.push_back(param({2.0}));
  check_error([&] { opt.step(); }, {"Adam.step", "parameter lists", "held 1 parameter, now 2"});
}

// ---- kernels -------------------------------------------------------------------------------

namespace {

template <typename T> std::vector<T> random_values(int64_t n, sg::Generator& gen, double lo, double hi) {
  const std::vector<double> u = sg::rand({n}, gen, sg::kFloat64).to_vector<double>();
  std::vector<T> out(static_cast<size_t>(n));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(lo + (hi - lo) * u[i]);
  return out;
}

// Fast and naive differ only where the fast kernel fuses a multiply-add (PyTorch's
// vectorized add with alpha does too): a few ulps of the terms, which are O(1) here (the
// second moments are kept away from 0, so the Adam steps stay O(lr)).
template <typename T> void check_near(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  const double ulp = std::numeric_limits<T>::epsilon();
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(double(got[i]) - double(want[i])) <= 8 * ulp * (std::abs(double(want[i])) + 1.0))) {
      if (bad++ == 0) first = static_cast<int64_t>(i);
    }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << got.size() << " differ; first [" << first
                               << "]: " << (first >= 0 ? double(got[first]) : 0.0) << " vs "
                               << (first >= 0 ? double(want[first]) : 0.0));
}

template <typename T> void compare_sgd(int64_t n, const optim::kernels::SGDStep& s, sg::Generator& gen) {
  std::vector<T> p = random_values<T>(n, gen, -1, 1), g = random_values<T>(n, gen, -1, 1);
  std::vector<T> buf = random_values<T>(n, gen, -1, 1);
  std::vector<T> p2 = p, buf2 = buf;
  for (int rep = 0; rep < 3; ++rep) {
    optim::kernels::sgd_step<T>(p.data(), g.data(), buf.data(), n, s);
    optim::kernels::sgd_step_naive<T>(p2.data(), g.data(), buf2.data(), n, s);
  }
  check_near(p, p2, "p");
  check_near(buf, buf2, "buf");
}

template <typename T> void compare_adam(int64_t n, optim::kernels::AdamStep s, sg::Generator& gen) {
  std::vector<T> p = random_values<T>(n, gen, -1, 1), g = random_values<T>(n, gen, -1, 1);
  std::vector<T> m = random_values<T>(n, gen, -0.1, 0.1), v = random_values<T>(n, gen, 0.001, 0.01);
  std::vector<T> vmax = random_values<T>(n, gen, 0.001, 0.01);
  std::vector<T> p2 = p, m2 = m, v2 = v, vmax2 = vmax;
  for (int rep = 0; rep < 3; ++rep, ++s.step) {
    optim::kernels::adam_step<T>(p.data(), g.data(), m.data(), v.data(), vmax.data(), n, s);
    optim::kernels::adam_step_naive<T>(p2.data(), g.data(), m2.data(), v2.data(), vmax2.data(), n, s);
  }
  check_near(p, p2, "p");
  check_near(m, m2, "m");
  check_near(v, v2, "v");
  if (s.amsgrad) check_near(vmax, vmax2, "vmax");
}

}  // namespace

TEST_CASE("the fused kernels match their naive references (tails, threads, every option)") {
  sg::Generator gen(7);
  for (int64_t n : {1, 3, 15, 16, 17, 33, 1000, 100003}) {
    CAPTURE(n);
    for (int opts = 0; opts < 16; ++opts) {
      if (n > 1000 && opts % 5 != 0) continue;  // the threaded size: a few combinations (0, 5, 10, 15)
      CAPTURE(opts);
      const bool a = opts & 1, b = opts & 2, c = opts & 4, d = opts & 8;
      const optim::kernels::SGDStep sgd{.lr = 0.1,
                                        .momentum = a ? 0.9 : 0.0,
                                        .dampening = b && !c ? 0.3 : 0.0,
                                        .weight_decay = d ? 0.01 : 0.0,
                                        .nesterov = a && c,
                                        .maximize = b,
                                        .first = n == 17};
      compare_sgd<float>(n, sgd, gen);
      compare_sgd<double>(n, sgd, gen);
      const optim::kernels::AdamStep adam{.lr = 0.01,
                                          .beta1 = 0.9,
                                          .beta2 = 0.99,
                                          .eps = 1e-8,
                                          .weight_decay = d ? 0.1 : 0.0,
                                          .amsgrad = a,
                                          .maximize = b,
                                          .decoupled = c,
                                          .step = 1 + n % 5};
      compare_adam<float>(n, adam, gen);
      compare_adam<double>(n, adam, gen);
    }
  }
}

TEST_CASE("amsgrad keeps a NaN in max_exp_avg_sq, as torch.maximum does") {
  const optim::kernels::AdamStep s{.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .amsgrad = true};
  for (int64_t n : {1, 20}) {
    std::vector<float> p(n, 1.0f), g(n, 1.0f), m(n, 0.0f), v(n, 0.0f), vmax(n, 0.0f);
    vmax[0] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> p2 = p, m2 = m, v2 = v, vmax2 = vmax;
    optim::kernels::adam_step<float>(p.data(), g.data(), m.data(), v.data(), vmax.data(), n, s);
    optim::kernels::adam_step_naive<float>(p2.data(), g.data(), m2.data(), v2.data(), vmax2.data(), n, s);
    CHECK(std::isnan(vmax[0]));
    CHECK(std::isnan(vmax2[0]));
    CHECK(std::isnan(p[0]));
    if (n > 1) CHECK(!std::isnan(p[1]));
  }
}
