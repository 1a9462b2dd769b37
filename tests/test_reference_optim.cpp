// optim against PyTorch 1.13: SGD, Adam and AdamW trajectories and final state, the
// learning-rate schedules, and clip_grad_norm_, from the committed table
// tests/reference/optim_ops.txt (written by tests/reference/gen_optim.py, whose docstring
// describes every case; see tests/reference/README.md), read by tests/reference_table.h.
//
// Each case's options and per-step gradients come from the table; the case name's prefix
// says what to build (sgd_, adam_, adamw_, sched_steplr, sched_cosine, sched_warmup_cosine,
// clip_). kCaseNames mirrors the generator's cases (a case present on one side only fails).
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/reference_table.h"

using sg::Tensor;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;
namespace optim = sg::optim;

namespace {

const char* const kTable = "optim_ops.txt";

// The generator's cases, in its order.
const std::vector<std::string> kCaseNames = {"sgd_momentum_dampening_f64",
                                             "sgd_nesterov_weight_decay_f64",
                                             "sgd_plain_maximize_f64",
                                             "sgd_momentum_schedule_f32",
                                             "sgd_nesterov_weight_decay_f32",
                                             "adam_f64",
                                             "adam_amsgrad_weight_decay_f64",
                                             "adam_maximize_f64",
                                             "adam_f32",
                                             "adam_amsgrad_f32",
                                             "adamw_f64",
                                             "adamw_amsgrad_schedule_f64",
                                             "adamw_f32",
                                             "adamw_amsgrad_maximize_f32",
                                             "sched_steplr",
                                             "sched_steplr_gamma_0_9",
                                             "sched_cosine",
                                             "sched_cosine_eta_min_0",
                                             "sched_warmup_cosine",
                                             "sched_warmup_cosine_start_factor",
                                             "sched_warmup_cosine_lambda_start_0",
                                             "sched_warmup_cosine_lambda_no_warmup",
                                             "clip_l2_f64",
                                             "clip_l2_no_clip_f64",
                                             "clip_inf_f64",
                                             "clip_l1_f64",
                                             "clip_p3_f64",
                                             "clip_l2_f32",
                                             "clip_inf_f32"};

// With fused multiply-adds (-march=native on x86-64) the optimizer trajectories and states
// match PyTorch's AVX2 kernels bit for bit, float32 included; the tolerances leave room for
// the portable build, whose Highway MulAdd rounds twice: a few ulps of the update formulas.
// clip_grad_norm_ sums in double where PyTorch sums float32 in float32.
Tol tolerance(sg::Dtype dtype) { return dtype == sg::kFloat32 ? Tol{1e-6, 1e-7} : Tol{1e-13, 1e-15}; }

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

const RefTensor& find(const std::vector<RefTensor>& list, const std::string& name) {
  for (const RefTensor& r : list)
    if (r.name == name) return r;
  throw std::runtime_error("the table has no '" + name + "'");
}
bool has(const std::vector<RefTensor>& list, const std::string& name) {
  for (const RefTensor& r : list)
    if (r.name == name) return true;
  return false;
}
double option(const RefCase& c, const std::string& name) { return find(c.inputs, "option." + name).values.at(0); }
bool flag(const RefCase& c, const std::string& name) {
  return has(c.inputs, "option." + name) && option(c, name) != 0.0;
}

// Row s of a (S, ...) reference tensor.
RefTensor row(const RefTensor& r, int64_t s) {
  RefTensor out;
  out.name = r.name;
  out.dtype = r.dtype;
  out.shape.assign(r.shape.begin() + 1, r.shape.end());
  const int64_t n = sg::shape_numel(out.shape);
  out.values.assign(r.values.begin() + s * n, r.values.begin() + (s + 1) * n);
  return out;
}

// ---- optimizers ----------------------------------------------------------------------------
std::unique_ptr<optim::Optimizer> make_optimizer(const RefCase& c, std::vector<optim::ParamGroup> groups) {
  const double lr = option(c, "lr");
  const double wd = has(c.inputs, "option.weight_decay") ? option(c, "weight_decay") : -1.0;
  if (starts_with(c.name, "sgd_"))
    return std::make_unique<optim::SGD>(
        std::move(groups),
        optim::SGDOptions{.lr = lr,
                          .momentum = has(c.inputs, "option.momentum") ? option(c, "momentum") : 0.0,
                          .dampening = has(c.inputs, "option.dampening") ? option(c, "dampening") : 0.0,
                          .weight_decay = wd >= 0 ? wd : 0.0,
                          .nesterov = flag(c, "nesterov"),
                          .maximize = flag(c, "maximize")});
  const std::array<double, 2> betas = {has(c.inputs, "option.beta1") ? option(c, "beta1") : 0.9,
                                       has(c.inputs, "option.beta2") ? option(c, "beta2") : 0.999};
  const double eps = has(c.inputs, "option.eps") ? option(c, "eps") : 1e-8;
  if (starts_with(c.name, "adamw_"))
    return std::make_unique<optim::AdamW>(std::move(groups), optim::AdamWOptions{.lr = lr,
                                                                                 .betas = betas,
                                                                                 .eps = eps,
                                                                                 .weight_decay = wd >= 0 ? wd : 1e-2,
                                                                                 .amsgrad = flag(c, "amsgrad"),
                                                                                 .maximize = flag(c, "maximize")});
  if (starts_with(c.name, "adam_"))
    return std::make_unique<optim::Adam>(std::move(groups), optim::AdamOptions{.lr = lr,
                                                                               .betas = betas,
                                                                               .eps = eps,
                                                                               .weight_decay = wd >= 0 ? wd : 0.0,
                                                                               .amsgrad = flag(c, "amsgrad"),
                                                                               .maximize = flag(c, "maximize")});
  throw std::runtime_error("no optimizer for case " + c.name);
}

void run_optimizer_case(const RefCase& c) {
  std::vector<Tensor> params;
  for (int i = 0; i < 3; ++i)
    params.push_back(sgref::make_tensor(find(c.inputs, fmt::format("p{}", i))).requires_grad_());
  std::vector<optim::ParamGroup> groups = {{.params = {params[0], params[1]}}, {.params = {params[2]}}};
  for (size_t g = 0; g < groups.size(); ++g) {
    groups[g].lr = find(c.inputs, fmt::format("group{}.lr", g)).values.at(0);
    groups[g].weight_decay = find(c.inputs, fmt::format("group{}.weight_decay", g)).values.at(0);
  }
  std::unique_ptr<optim::Optimizer> opt = make_optimizer(c, std::move(groups));
  const Tensor has_grad = sgref::make_tensor(find(c.inputs, "has_grad"));
  const int64_t steps = has_grad.size(0);
  const bool scheduled = has(c.inputs, "lrs");
  for (int64_t s = 0; s < steps; ++s) {
    CAPTURE(s);
    for (int i = 0; i < 3; ++i) {
      if (has_grad.at<bool>({s, i}))
        params[i].set_grad(sgref::make_tensor(row(find(c.inputs, fmt::format("g{}", i)), s)));
      else
        params[i].zero_grad();
    }
    if (scheduled)
      for (int64_t g = 0; g < 2; ++g) opt->param_groups()[g].lr = find(c.inputs, "lrs").values.at(s * 2 + g);
    opt->step();
    for (int i = 0; i < 3; ++i) {
      const RefTensor want = row(find(c.outputs, fmt::format("p{}", i)), s);
      sgref::check_matches(params[i], want, tolerance(want.dtype), fmt::format("p{} after step {}", i, s + 1));
    }
  }
  // The final state: the same entries as PyTorch's optimizer.state, the same values.
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : opt->state_dict())
    if (starts_with(name, "state.")) state[name] = t;
  std::set<std::string> torch_state;
  for (const RefTensor& r : c.outputs)
    if (starts_with(r.name, "state.")) {
      torch_state.insert(r.name);
      if (!state.count(r.name)) {
        FAIL_CHECK("softgrad's state_dict has no " << r.name);
        continue;
      }
      sgref::check_matches(state[r.name], r, tolerance(r.dtype), r.name);
    }
  for (const auto& [name, t] : state) CHECK_MESSAGE(torch_state.count(name) == 1, "PyTorch has no " << name);
}

// ---- schedules -----------------------------------------------------------------------------
void run_schedule_case(const RefCase& c) {
  const std::vector<double> base = find(c.inputs, "base_lrs").values;
  Tensor a = sg::zeros({1}).requires_grad_(), b = sg::zeros({1}).requires_grad_();
  optim::SGD opt({{.params = {a}, .lr = base.at(0)}, {.params = {b}, .lr = base.at(1)}}, {.lr = 1.0});
  std::unique_ptr<optim::LRScheduler> sched;
  if (starts_with(c.name, "sched_steplr"))
    sched = std::make_unique<optim::StepLR>(opt, static_cast<int64_t>(option(c, "step_size")), option(c, "gamma"));
  else if (starts_with(c.name, "sched_cosine"))
    sched =
        std::make_unique<optim::CosineAnnealingLR>(opt, static_cast<int64_t>(option(c, "T_max")), option(c, "eta_min"));
  else if (starts_with(c.name, "sched_warmup_cosine"))
    sched = std::make_unique<optim::WarmupCosine>(opt, static_cast<int64_t>(option(c, "warmup_steps")),
                                                  static_cast<int64_t>(option(c, "total_steps")), option(c, "eta_min"),
                                                  option(c, "start_factor"));
  else
    throw std::runtime_error("no schedule for case " + c.name);
  const RefTensor& lrs = find(c.outputs, "lrs");
  std::vector<double> got;
  for (int64_t t = 0; t < lrs.shape[0]; ++t) {
    if (t > 0) sched->step();
    for (int g = 0; g < 2; ++g) {
      got.push_back(sched->get_last_lr()[g]);
      CHECK(opt.param_groups()[g].lr == sched->get_last_lr()[g]);
    }
  }
  // The closed form against PyTorch's recursive products: agreement to rounding.
  sgref::check_matches(sg::from_vector(got, lrs.shape), lrs, Tol{1e-13, 1e-18}, "lrs");
}

// ---- clip_grad_norm_ -----------------------------------------------------------------------
void run_clip_case(const RefCase& c) {
  std::vector<Tensor> params;
  for (int i = 0; i < 2; ++i) {
    const Tensor g = sgref::make_tensor(find(c.inputs, fmt::format("g{}", i)));
    Tensor p = sg::zeros(g.shape(), g.dtype()).requires_grad_();
    p.set_grad(g);
    params.push_back(p);
  }
  const sg::Dtype dtype = params[0].dtype();
  params.push_back(sg::zeros({2}, dtype).requires_grad_());  // no gradient: skipped
  const double total = optim::clip_grad_norm_(params, option(c, "max_norm"), option(c, "norm_type"));
  // softgrad sums in double also for float32 gradients; PyTorch in float32.
  sgref::check_matches(sg::scalar_tensor(total, sg::kFloat64), find(c.outputs, "total_norm"), tolerance(dtype),
                       "total_norm");
  for (int i = 0; i < 2; ++i) {
    const RefTensor& want = find(c.outputs, fmt::format("g{}", i));
    sgref::check_matches(params[i].grad(), want, tolerance(dtype), want.name);
  }
}

}  // namespace

TEST_CASE("optim_ops.txt is well formed and lists the expected cases") {
  const std::vector<RefCase>* cases = nullptr;
  REQUIRE_NOTHROW(cases = &sgref::table(kTable));
  std::vector<std::string> names;
  for (const RefCase& c : *cases) {
    CAPTURE(c.name);
    names.push_back(c.name);
    CHECK(!c.weight.has_value());
    CHECK(c.grads.empty());
    for (const RefTensor& r : c.outputs)
      for (double v : r.values) CHECK(std::isfinite(v));
    for (const RefTensor& r : c.inputs)
      if (r.name != "option.norm_type")
        for (double v : r.values) CHECK(std::isfinite(v));
  }
  CHECK(names == kCaseNames);
}

TEST_CASE("SGD, Adam and AdamW match torch.optim step by step (groups, skipped grads, lr changes, state)") {
  int ran = 0;
  for (const RefCase& c : sgref::table(kTable)) {
    if (!starts_with(c.name, "sgd_") && !starts_with(c.name, "adam")) continue;
    CAPTURE(c.name);
    ++ran;
    try {
      run_optimizer_case(c);
    } catch (const std::exception& e) {
      FAIL_CHECK(fmt::format("case {} threw: {}", c.name, e.what()));
    }
  }
  CHECK(ran == 14);
}

TEST_CASE("StepLR, CosineAnnealingLR and WarmupCosine match torch.optim.lr_scheduler") {
  int ran = 0;
  for (const RefCase& c : sgref::table(kTable)) {
    if (!starts_with(c.name, "sched_")) continue;
    CAPTURE(c.name);
    ++ran;
    try {
      run_schedule_case(c);
    } catch (const std::exception& e) {
      FAIL_CHECK(fmt::format("case {} threw: {}", c.name, e.what()));
    }
  }
  CHECK(ran == 8);
}

TEST_CASE("clip_grad_norm_ matches torch.nn.utils.clip_grad_norm_") {
  int ran = 0;
  for (const RefCase& c : sgref::table(kTable)) {
    if (!starts_with(c.name, "clip_")) continue;
    CAPTURE(c.name);
    ++ran;
    try {
      run_clip_case(c);
    } catch (const std::exception& e) {
      FAIL_CHECK(fmt::format("case {} threw: {}", c.name, e.what()));
    }
  }
  CHECK(ran == 7);
}
