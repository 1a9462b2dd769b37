// The softmax family against PyTorch: values and gradients of softmax, log_softmax,
// cross_entropy and nll_loss from the committed table tests/reference/softmax_ops.txt
// (written by tests/reference/gen_softmax_ops.py; see tests/reference/README.md), read by
// tests/reference_table.h. mirrored_cases() mirrors the generator's CASES name for name
// (a case present on one side only fails); each lambda builds the op call from the named
// inputs and the options the name spells. The losses differentiate their first input and a
// probability target.
#include <cmath>
#include <string>
#include <vector>

#include "ops/softmax.h"
#include "tests/reference_table.h"

using sg::Tensor;
using sgref::Args;
using sgref::CaseFn;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;

namespace {

const char* const kTable = "softmax_ops.txt";

// The loss options a case name spells; the class weights are the input named "weight" when
// the table has one. (Options are assigned, not designated-initialized: the options
// structs' Tensor member has no initializer, and -Wextra warns about leaving it out.)
struct LossOpts {
  sg::Reduction reduction = sg::Reduction::Mean;
  double label_smoothing = 0.0;
  int64_t ignore_index = -100;
};

CaseFn ce(LossOpts o = {}) {
  return [o](const Args& x) {
    sg::CrossEntropyOptions opt;
    opt.reduction = o.reduction;
    opt.label_smoothing = o.label_smoothing;
    opt.ignore_index = o.ignore_index;
    if (x.has("weight")) opt.weight = x["weight"];
    return sg::cross_entropy(x["logits"], x["target"], opt);
  };
}

CaseFn nll(LossOpts o = {}) {
  return [o](const Args& x) {
    sg::NLLLossOptions opt;
    opt.reduction = o.reduction;
    opt.ignore_index = o.ignore_index;
    if (x.has("weight")) opt.weight = x["weight"];
    return sg::nll_loss(x["log_probs"], x["target"], opt);
  };
}

const sgref::CaseMap& mirrored_cases() {
  using sg::Reduction;
  static const sgref::CaseMap cases = [] {
    sgref::CaseMap m;
    auto add = [&m](const std::string& name, CaseFn fn) {
      if (!m.emplace(name, std::move(fn)).second) throw std::logic_error("case listed twice: " + name);
    };

    // softmax and log_softmax along every dim, float64 and float32.
    using Op = Tensor (*)(const Tensor&, int64_t);
    const std::pair<std::string, Op> ops[] = {{"softmax", &sg::softmax}, {"log_softmax", &sg::log_softmax}};
    for (const std::string sfx : {"", "_f32"}) {
      for (const auto& [name, op] : ops) {
        auto along = [op = op](int64_t dim) { return [op, dim](const Args& x) { return op(x["x"], dim); }; };
        add(name + "_1d" + sfx, along(0));
        for (int64_t d : {0, 1, -1, -2}) add(fmt::format("{}_2d_dim{}{}", name, d, sfx), along(d));
        for (int64_t d : {0, 1, 2, -1, -3}) add(fmt::format("{}_3d_dim{}{}", name, d, sfx), along(d));
        add(name + "_4x37_dim1" + sfx, along(1));
        add(name + "_37x3_dim0" + sfx, along(0));
        add(name + "_large_1e4" + sfx, along(1));
        add(name + "_offset_1e4" + sfx, along(1));
        add(name + "_huge_3e38" + sfx, along(1));
        add(name + "_size1_dim" + sfx, along(1));
        add(name + "_ties_dominant" + sfx, along(1));
      }
    }
    add("softmax_transposed_input", [](const Args& x) { return sg::softmax(x["x"].t(), 1); });
    add("log_softmax_transposed_input", [](const Args& x) { return sg::log_softmax(x["x"].t(), 1); });
    add("softmax_0d", [](const Args& x) { return sg::softmax(x["x"], 0); });
    add("log_softmax_0d", [](const Args& x) { return sg::log_softmax(x["x"], -1); });
    add("softmax_used_twice", [](const Args& x) {
      const Tensor s = sg::softmax(x["x"], 1);
      return sg::log_softmax(s * 3.0, 0) + s;
    });
    add("log_softmax_nll_loss", [](const Args& x) { return sg::nll_loss(sg::log_softmax(x["x"], 1), x["target"]); });

    // cross_entropy.
    const std::pair<std::string, Reduction> reductions[] = {
        {"mean", Reduction::Mean}, {"sum", Reduction::Sum}, {"none", Reduction::None}};
    for (const auto& [r, red] : reductions) {
      add("ce_index_" + r, ce({.reduction = red}));
      add("ce_index_3d_" + r, ce({.reduction = red}));
      add("ce_unbatched_" + r, ce({.reduction = red}));
      add("ce_weight_" + r, ce({.reduction = red}));
      add("ce_ignore_" + r, ce({.reduction = red}));
      add("ce_weight_ignore_" + r, ce({.reduction = red}));
      add("ce_smooth_" + r, ce({.reduction = red, .label_smoothing = 0.1}));
      add("ce_smooth_weight_" + r, ce({.reduction = red, .label_smoothing = 0.25}));
      add("ce_smooth_weight_ignore_" + r, ce({.reduction = red, .label_smoothing = 0.3}));
      add("ce_prob_" + r, ce({.reduction = red}));
      add("ce_prob_weight_" + r, ce({.reduction = red}));
      add("ce_prob_smooth_" + r, ce({.reduction = red, .label_smoothing = 0.2}));
      add("ce_prob_smooth_weight_" + r, ce({.reduction = red, .label_smoothing = 0.15}));
      add("ce_prob_3d_" + r, ce({.reduction = red}));
    }
    add("ce_index_4d", ce());
    add("ce_index_3d_weight_ignore_smooth", ce({.label_smoothing = 0.2}));
    add("ce_index_3d_weight_ignore_smooth_sum", ce({.reduction = Reduction::Sum, .label_smoothing = 0.2}));
    add("ce_ignore_index_1", ce({.ignore_index = 1}));
    add("ce_ignore_index_1_weight_smooth", ce({.label_smoothing = 0.1, .ignore_index = 1}));
    add("ce_unbatched_weight_smooth", ce({.label_smoothing = 0.1}));
    add("ce_unbatched_prob", ce());
    add("ce_unbatched_prob_weight_smooth", ce({.label_smoothing = 0.1}));
    add("ce_prob_3d_weight_smooth", ce({.label_smoothing = 0.1}));
    add("ce_smooth_1", ce({.label_smoothing = 1.0}));
    add("ce_prob_with_zeros", ce());
    add("ce_all_ignored_mean", ce());
    add("ce_all_ignored_sum", ce({.reduction = Reduction::Sum}));
    add("ce_all_ignored_smooth_mean", ce({.label_smoothing = 0.1}));
    add("ce_large_logits", ce());
    add("ce_large_logits_prob_smooth", ce({.label_smoothing = 0.1}));
    add("ce_offset_1e4", ce());
    add("ce_offset_1e4_f32", ce());
    add("ce_offset_100_f32", ce({.reduction = Reduction::None}));
    add("ce_offset_100_prob_smooth_f32", ce({.reduction = Reduction::None, .label_smoothing = 0.1}));
    add("ce_index_f32", ce());
    add("ce_index_none_f32", ce({.reduction = Reduction::None}));
    add("ce_weight_ignore_smooth_f32", ce({.label_smoothing = 0.1}));
    add("ce_prob_smooth_weight_f32", ce({.reduction = Reduction::Sum, .label_smoothing = 0.1}));
    add("ce_index_3d_f32", ce({.reduction = Reduction::None}));

    // nll_loss.
    for (const auto& [r, red] : reductions) {
      add("nll_" + r, nll({.reduction = red}));
      add("nll_weight_" + r, nll({.reduction = red}));
      add("nll_ignore_" + r, nll({.reduction = red}));
      add("nll_weight_ignore_" + r, nll({.reduction = red}));
      add("nll_3d_" + r, nll({.reduction = red}));
      add("nll_unbatched_" + r, nll({.reduction = red}));
    }
    add("nll_4d", nll());
    add("nll_ignore_index_2", nll({.ignore_index = 2}));
    add("nll_unbatched_weight", nll());
    add("nll_all_ignored_mean", nll());
    add("nll_all_ignored_weight_mean", nll());
    add("nll_all_ignored_sum", nll({.reduction = Reduction::Sum}));
    add("nll_f32", nll());
    add("nll_none_f32", nll({.reduction = Reduction::None}));
    return m;
  }();
  return cases;
}

// float64: a few ulp (both sides evaluate the same formulas in double, summing in another
// order); the atol covers entries near 0 after cancellation (the log_softmax of a dominant
// entry, a gradient s * (g - <s,g>) with g ~ <s,g>). float32: a few float32 ulp (softgrad's
// vector exp vs PyTorch's Sleef exp, another summation order). No allowance for large
// logits: PyTorch keeps full accuracy there (x - max is exact), and so must softgrad.
Tol tolerance(const RefCase&, sg::Dtype dtype) {
  if (dtype == sg::kFloat32) return {1e-6, 1e-6};
  return {1e-12, 5e-14};
}

}  // namespace

TEST_CASE("softmax reference table and the mirrored cases list the same names") {
  sgref::check_table_names(kTable, mirrored_cases(), 150);
}

TEST_CASE("softmax reference table is well formed") {
  // Every case differentiates its first input (x, logits or log_probs), and a loss its
  // probability target; nothing else. So a gradient missing from the file cannot pass.
  for (const RefCase& c : sgref::table(kTable)) {
    CAPTURE(c.name);
    REQUIRE(c.outputs.size() == 1);
    REQUIRE(!c.inputs.empty());
    CHECK(sg::is_floating(c.outputs[0].dtype));
    REQUIRE(c.weight.has_value());
    sgref::check_weight(c);
    std::vector<std::string> want = {c.inputs[0].name};
    for (const RefTensor& r : c.inputs)
      if (r.name == "target" && sg::is_floating(r.dtype)) want.push_back(r.name);
    CHECK(sgref::grad_names(c) == want);
    sgref::check_grads_match_inputs(c);
    // Only outputs may hold PyTorch's NaN/inf.
    sgref::check_all_finite(c, /*include_outputs=*/false);
  }
}

TEST_CASE("softmax family matches PyTorch: values and gradients") {
  sgref::run_all(sgref::table(kTable), mirrored_cases(), tolerance);
}

TEST_CASE("reference comparison: non-finite values match only the same non-finite value") {
  const RefTensor want{"out", sg::kFloat64, {4}, {std::nan(""), -INFINITY, INFINITY, 0.5}};
  const Tol tol{1e-12, 1e-14};
  CHECK(sgref::mismatch(sgref::make_tensor(want), want, tol).empty());
  for (size_t i = 0; i < 3; ++i) {
    RefTensor got = want;
    got.values[i] = 1.0;  // a finite value where PyTorch has NaN/inf
    CHECK_FALSE(sgref::mismatch(sgref::make_tensor(got), want, tol).empty());
  }
  RefTensor flipped = want;
  flipped.values[1] = INFINITY;
  CHECK_FALSE(sgref::mismatch(sgref::make_tensor(flipped), want, tol).empty());
  RefTensor nan_got = want;
  nan_got.values[3] = std::nan("");
  CHECK_FALSE(sgref::mismatch(sgref::make_tensor(nan_got), want, tol).empty());
}
