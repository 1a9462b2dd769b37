// conv2d, unfold, fold, max_pool2d, avg_pool2d, adaptive_avg_pool2d, batch_norm and
// nn::BatchNorm1d/2d against PyTorch: values, indices, updated running statistics and
// gradients from the committed table tests/reference/conv_ops.txt (written by
// tests/reference/gen_conv_ops.py; see tests/reference/README.md), read by
// tests/reference_table.h. mirrored_list() mirrors the generator's CASES name for name,
// with the same options (a case present on one side only fails).
//
// batch_norm cases run their steps (train or eval, as the name lists) on x, x2, ... with
// the table's running statistics, which the training steps update in place; the outputs
// are the last step's output and the two statistics afterwards. Module cases build
// nn::BatchNorm1d/2d with its own init, put the table's weight and bias in through
// set_parameter() under PyTorch's state_dict names and read running_mean, running_var and
// num_batches_tracked back through get_buffer(), so the names are checked too.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nn/conv.h"
#include "ops/batch_norm.h"
#include "ops/conv.h"
#include "ops/pooling.h"
#include "tests/reference_table.h"

using sg::Tensor;
using sgref::Args;
using sgref::CaseFn;
using sgref::Outs;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;

namespace {

const char* const kTable = "conv_ops.txt";

CaseFn conv2d(sg::Conv2dOptions o, bool transposed = false) {
  return [o, transposed](const Args& a) -> Outs {
    const Tensor x = transposed ? a["x"].transpose(2, 3) : a["x"];
    return sg::conv2d(x, a["weight"], a.has("bias") ? a["bias"] : Tensor(), o);
  };
}

CaseFn unfold(sg::Size2d kernel, sg::UnfoldOptions o = {}) {
  return [kernel, o](const Args& a) -> Outs { return sg::unfold(a["x"], kernel, o); };
}

CaseFn fold(sg::Size2d output_size, sg::Size2d kernel, sg::UnfoldOptions o = {}) {
  return [output_size, kernel, o](const Args& a) -> Outs { return sg::fold(a["cols"], output_size, kernel, o); };
}

CaseFn max_pool(sg::Size2d kernel, sg::MaxPool2dOptions o = {}) {
  return [kernel, o](const Args& a) -> Outs { return sg::max_pool2d(a["x"], kernel, o); };
}

CaseFn avg_pool(sg::Size2d kernel, sg::AvgPool2dOptions o = {}) {
  return [kernel, o](const Args& a) -> Outs { return sg::avg_pool2d(a["x"], kernel, o); };
}

CaseFn adaptive_avg_pool(sg::Size2d output_size) {
  return [output_size](const Args& a) -> Outs { return sg::adaptive_avg_pool2d(a["x"], output_size); };
}

// Step i (0-based) normalizes input "x", "x2", "x3", ...
std::string step_input(size_t i) { return i == 0 ? std::string("x") : fmt::format("x{}", i + 1); }

enum Step { Train, Eval };

struct BnSpec {
  std::vector<Step> steps;
  double momentum = 0.1;
  double eps = 1e-5;
};

CaseFn batch_norm(BnSpec spec) {
  return [spec](const Args& a) -> Outs {
    // The table's running statistics, updated in place by the training steps.
    const Tensor rm = a.has("running_mean") ? a["running_mean"] : Tensor();
    const Tensor rv = a.has("running_var") ? a["running_var"] : Tensor();
    const Tensor w = a.has("weight") ? a["weight"] : Tensor();
    const Tensor b = a.has("bias") ? a["bias"] : Tensor();
    Tensor y;
    for (size_t i = 0; i < spec.steps.size(); ++i)
      y = sg::batch_norm(a[step_input(i)], rm, rv, w, b,
                         {.training = spec.steps[i] == Train, .momentum = spec.momentum, .eps = spec.eps});
    if (!rm.defined()) return y;
    return std::vector<Tensor>{y, rm, rv};
  };
}

struct BnModuleSpec {
  int dims;  // 2 or 3: BatchNorm1d, 4: BatchNorm2d
  std::vector<Step> steps;
  sg::nn::BatchNormOptions options{};
};

CaseFn bn_module(BnModuleSpec spec) {
  return [spec](const Args& a) -> Outs {
    const Tensor& x = a["x"];
    sg::nn::BatchNormOptions o = spec.options;
    o.dtype = x.dtype();
    std::unique_ptr<sg::nn::BatchNormBase> m;
    if (spec.dims == 4) m = std::make_unique<sg::nn::BatchNorm2d>(x.size(1), o);
    else m = std::make_unique<sg::nn::BatchNorm1d>(x.size(1), o);
    if (o.affine) {  // the table's leaves, so that the gradients land on them
      m->set_parameter("weight", a["weight"]);
      m->set_parameter("bias", a["bias"]);
    }
    Tensor y;
    for (size_t i = 0; i < spec.steps.size(); ++i) {
      m->train(spec.steps[i] == Train);
      y = m->forward(a[step_input(i)]);
    }
    if (!o.track_running_stats) return y;
    return std::vector<Tensor>{y, m->get_buffer("running_mean"), m->get_buffer("running_var"),
                               m->get_buffer("num_batches_tracked")};
  };
}

struct Mirrored {
  std::string name;
  CaseFn fn;
  std::vector<Step> steps{};  // batch_norm and module cases: the steps the name lists
};

Mirrored bn_case(std::string name, BnSpec spec) {
  std::vector<Step> steps = spec.steps;
  return {std::move(name), batch_norm(std::move(spec)), std::move(steps)};
}

Mirrored module_case(std::string name, BnModuleSpec spec) {
  std::vector<Step> steps = spec.steps;
  return {std::move(name), bn_module(std::move(spec)), std::move(steps)};
}

// The generator's CASES, in its order.
const std::vector<Mirrored>& mirrored_list() {
  using sg::Padding2d;
  static const std::vector<Mirrored> list = {
      // conv2d
      {"conv2d_3x3", conv2d({})},
      {"conv2d_3x3_pad1", conv2d({.padding = 1})},
      {"conv2d_stride2_pad1", conv2d({.stride = 2, .padding = 1})},
      {"conv2d_stride3_drops_edges", conv2d({.stride = 3})},
      {"conv2d_asym_kernel_stride_pad", conv2d({.stride = {1, 2}, .padding = {2, 1}})},
      {"conv2d_asym_stride_pad", conv2d({.stride = {2, 1}, .padding = {0, 2}})},
      {"conv2d_dilation2_pad2", conv2d({.padding = 2, .dilation = 2})},
      {"conv2d_dilation_2x3_stride2", conv2d({.stride = 2, .padding = {1, 0}, .dilation = {2, 3}})},
      {"conv2d_groups2", conv2d({.padding = 1, .groups = 2})},
      {"conv2d_groups3_stride2", conv2d({.stride = 2, .padding = 1, .groups = 3})},
      {"conv2d_depthwise", conv2d({.padding = 1, .groups = 3})},
      {"conv2d_depthwise_multiplier2_stride2", conv2d({.stride = 2, .padding = 1, .groups = 3})},
      {"conv2d_same_even_kernel", conv2d({.padding = Padding2d::same()})},
      {"conv2d_same_k4", conv2d({.padding = Padding2d::same()})},
      {"conv2d_same_dilated_2x1", conv2d({.padding = Padding2d::same(), .dilation = {2, 1}})},
      {"conv2d_same_k2_dilation3", conv2d({.padding = Padding2d::same(), .dilation = 3})},
      {"conv2d_valid", conv2d({.padding = Padding2d::valid()})},
      {"conv2d_1x1_nobias", conv2d({})},
      {"conv2d_odd_sizes_stride2", conv2d({.stride = 2, .padding = 1})},
      {"conv2d_kernel_equals_input", conv2d({})},
      {"conv2d_single_channel_nobias", conv2d({})},
      {"conv2d_transposed_input", conv2d({.padding = 1}, true)},
      {"conv2d_3x3_pad1_f32", conv2d({.padding = 1})},
      {"conv2d_wide_f32", conv2d({.padding = 1})},
      {"conv2d_groups2_stride2_f32", conv2d({.stride = 2, .padding = 1, .groups = 2})},
      {"conv2d_depthwise_f32", conv2d({.padding = 1, .groups = 4})},
      {"conv2d_same_even_kernel_dilation2_f32", conv2d({.padding = Padding2d::same(), .dilation = 2})},
      {"conv2d_1x1_nobias_f32", conv2d({})},
      // unfold / fold
      {"unfold_k3", unfold(3)},
      {"unfold_k2x3_dilation_pad_stride", unfold({2, 3}, {.dilation = {2, 1}, .padding = {1, 2}, .stride = {2, 3}})},
      {"unfold_k2_stride2", unfold(2, {.stride = 2})},
      {"unfold_k3_pad1_f32", unfold(3, {.padding = 1})},
      {"fold_k3", fold({5, 6}, 3)},
      {"fold_k2x3_dilation_pad_stride",
       fold({7, 8}, {2, 3}, {.dilation = {1, 2}, .padding = {1, 1}, .stride = {2, 1}})},
      {"fold_k2_stride2", fold({4, 6}, 2, {.stride = 2})},
      {"fold_k3_stride2_drops_edge", fold({6, 5}, 3, {.stride = 2})},
      {"fold_k3_pad1_f32", fold({5, 4}, 3, {.padding = 1})},
      // max_pool2d
      {"max_pool2d_k2", max_pool(2)},
      {"max_pool2d_k3_s2_pad1", max_pool(3, {.stride = 2, .padding = 1})},
      {"max_pool2d_k3_s1_overlap", max_pool(3, {.stride = 1})},
      {"max_pool2d_k2_s3_gaps", max_pool(2, {.stride = 3})},
      {"max_pool2d_asym_k2x3_s1x2_pad1", max_pool({2, 3}, {.stride = sg::Size2d{1, 2}, .padding = 1})},
      {"max_pool2d_ceil_k3_s2", max_pool(3, {.stride = 2, .ceil_mode = true})},
      {"max_pool2d_ceil_k3_s2_pad1", max_pool(3, {.stride = 2, .padding = 1, .ceil_mode = true})},
      {"max_pool2d_ceil_k2_s2_pad1_drops_window", max_pool(2, {.stride = 2, .padding = 1, .ceil_mode = true})},
      {"max_pool2d_dilation_2x3_pad1",
       max_pool({3, 2}, {.stride = sg::Size2d{1, 2}, .padding = 1, .dilation = {2, 3}})},
      {"max_pool2d_dilation2_ceil", max_pool(2, {.stride = 2, .padding = 0, .dilation = 2, .ceil_mode = true})},
      {"max_pool2d_negative_pad1", max_pool(3, {.stride = 2, .padding = 1})},
      {"max_pool2d_ties", max_pool(3, {.stride = 1, .padding = 1})},
      {"max_pool2d_nan", max_pool(2, {.stride = 2})},
      {"max_pool2d_k3_s2_pad1_f32", max_pool(3, {.stride = 2, .padding = 1})},
      {"max_pool2d_ceil_f32", max_pool(2, {.ceil_mode = true})},
      // avg_pool2d
      {"avg_pool2d_k2", avg_pool(2)},
      {"avg_pool2d_k3_s2_pad1", avg_pool(3, {.stride = 2, .padding = 1})},
      {"avg_pool2d_k3_s2_pad1_exclude_pad", avg_pool(3, {.stride = 2, .padding = 1, .count_include_pad = false})},
      {"avg_pool2d_k3_s1_overlap", avg_pool(3, {.stride = 1})},
      {"avg_pool2d_k2_s3_gaps", avg_pool(2, {.stride = 3})},
      {"avg_pool2d_asym_k2x3_s1x2_pad1", avg_pool({2, 3}, {.stride = sg::Size2d{1, 2}, .padding = 1})},
      {"avg_pool2d_ceil_k3_s2", avg_pool(3, {.stride = 2, .ceil_mode = true})},
      {"avg_pool2d_ceil_k3_s2_pad1", avg_pool(3, {.stride = 2, .padding = 1, .ceil_mode = true})},
      {"avg_pool2d_ceil_k3_s2_pad1_exclude_pad",
       avg_pool(3, {.stride = 2, .padding = 1, .ceil_mode = true, .count_include_pad = false})},
      {"avg_pool2d_ceil_k2_s2_pad1_drops_window", avg_pool(2, {.stride = 2, .padding = 1, .ceil_mode = true})},
      {"avg_pool2d_k3_s2_pad1_f32", avg_pool(3, {.stride = 2, .padding = 1})},
      {"avg_pool2d_ceil_pad1_exclude_pad_f32",
       avg_pool(3, {.stride = 2, .padding = 1, .ceil_mode = true, .count_include_pad = false})},
      // adaptive_avg_pool2d
      {"adaptive_avg_pool2d_5x7_to_3x2", adaptive_avg_pool({3, 2})},
      {"adaptive_avg_pool2d_8x6_to_4x3", adaptive_avg_pool({4, 3})},
      {"adaptive_avg_pool2d_global", adaptive_avg_pool(1)},
      {"adaptive_avg_pool2d_7x5_to_4x4", adaptive_avg_pool(4)},
      {"adaptive_avg_pool2d_3x4_to_5x6_upsample", adaptive_avg_pool({5, 6})},
      {"adaptive_avg_pool2d_5x7_to_3x2_f32", adaptive_avg_pool({3, 2})},
      // batch_norm
      bn_case("batch_norm_4d_train", {{Train}}),
      bn_case("batch_norm_4d_eval", {{Eval}}),
      bn_case("batch_norm_4d_train_train_m3", {{Train, Train}, 0.3}),
      bn_case("batch_norm_4d_train_eval_m3", {{Train, Eval}, 0.3}),
      bn_case("batch_norm_4d_train_noaffine", {{Train}}),
      bn_case("batch_norm_4d_eval_noaffine", {{Eval}}),
      bn_case("batch_norm_4d_train_weightonly", {{Train}}),
      bn_case("batch_norm_4d_train_nostats", {{Train}}),
      bn_case("batch_norm_4d_train_offset", {{Train}}),
      bn_case("batch_norm_4d_train_eps3", {{Train}, 0.1, 1e-3}),
      bn_case("batch_norm_2d_train", {{Train}}),
      bn_case("batch_norm_2d_train_n2", {{Train}}),
      bn_case("batch_norm_2d_eval", {{Eval}}),
      bn_case("batch_norm_2d_train_train_train_m3_noaffine", {{Train, Train, Train}, 0.3}),
      bn_case("batch_norm_2d_train_nostats_noaffine", {{Train}}),
      bn_case("batch_norm_3d_train", {{Train}}),
      bn_case("batch_norm_3d_train_eval", {{Train, Eval}}),
      bn_case("batch_norm_4d_train_f32", {{Train}}),
      bn_case("batch_norm_4d_train_train_m3_f32", {{Train, Train}, 0.3}),
      bn_case("batch_norm_4d_eval_f32", {{Eval}}),
      bn_case("batch_norm_2d_train_f32", {{Train}}),
      // nn::BatchNorm1d / BatchNorm2d
      module_case("bn2d_module_train_train_eval_m3", {4, {Train, Train, Eval}, {.momentum = 0.3}}),
      module_case("bn2d_module_train_eval_noaffine", {4, {Train, Eval}, {.affine = false}}),
      module_case("bn2d_module_eval_notrack", {4, {Eval}, {.track_running_stats = false}}),
      module_case("bn1d_module_train_train", {2, {Train, Train}}),
      module_case("bn1d_module_train_eval_3d", {3, {Train, Eval}}),
      module_case("bn2d_module_train_eval_f32", {4, {Train, Eval}}),
  };
  return list;
}

const sgref::CaseMap& mirrored_cases() {
  static const sgref::CaseMap cases = [] {
    sgref::CaseMap m;
    for (const Mirrored& c : mirrored_list())
      if (!m.emplace(c.name, c.fn).second) throw std::logic_error("case listed twice: " + c.name);
    return m;
  }();
  return cases;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// float64: the same math in double on both sides (softgrad: im2col + OpenBLAS dgemm, its
// own pooling and batch_norm loops; PyTorch: slow_conv2d's im2col + the same BLAS, its
// CPU kernels), summed in different orders. Measured worst 4.0e-15 absolute, 3.6e-14
// relative (a conv2d weight gradient of 0.11), at most 0.04 of the allowance; the atol
// covers sums that cancel to ~1e-4 (relative error up to 3.5e-12 there, 9e-16 absolute),
// where PyTorch's own answer moves as much between OpenBLAS kernels. Index outputs and
// num_batches_tracked compare exactly (integers). float32: the inputs are multiples of
// 2^-10, so the convolutions, unfold/fold and the pools come out bit-exact; the
// tolerance is for batch_norm, whose statistics and weight/bias gradient PyTorch's
// vectorized kernels reduce in float32 (its own answer moves by ~5e-7 relative with
// ATEN_CPU_CAPABILITY) while softgrad sums in double: measured worst 8.6e-7 relative (a
// weight gradient of 0.42), 0.07 of the allowance; the atol covers outputs and input
// gradients that cancel to ~1e-3 (2e-8 absolute there). A real error (a wrong window,
// divisor, padding side, unbiased factor or momentum) is O(1e-2) or more.
//
// batch_norm_4d_train_offset (mean 50, spread 0.01) is ill-conditioned on purpose: x - mean
// cancels, so a different summation order of the mean (softgrad's vectorized lanes vs
// PyTorch's) moves xhat, an O(1) quantity, by ~|mean| u / std = 5000 u absolute, and the
// variance and the gradients with it: atol 5000 x 32 u = 1.8e-11 -> 2e-11 and rtol 1e-10
// for it in float64 (measured: 1.7e-12 absolute at most).
Tol tolerance(const RefCase& c, sg::Dtype dtype) {
  if (dtype == sg::kFloat32) return {1e-5, 1e-6};
  if (c.name.ends_with("_offset")) return {1e-10, 2e-11};
  return {1e-12, 1e-13};
}

// "train_train_eval" for the steps, as the names spell them.
std::string steps_word(const std::vector<Step>& steps) {
  std::vector<std::string> words;
  for (Step st : steps) words.emplace_back(st == Train ? "train" : "eval");
  return fmt::format("{}", fmt::join(words, "_"));
}

}  // namespace

TEST_CASE("conv reference table and the mirrored cases list the same names") {
  sgref::check_table_names(kTable, mirrored_cases(), 90);
}

TEST_CASE("conv reference table is well formed") {
  // Each family has its inputs, outputs and gradients (so a gradient missing from the file
  // cannot pass); batch_norm and module names list the steps the C++ side runs, one input
  // per step. Only the `nan` case holds NaN (in x and the values); it really has one.
  std::map<std::string, const Mirrored*> by_name;
  for (const Mirrored& c : mirrored_list()) by_name[c.name] = &c;
  for (const RefCase& c : sgref::table(kTable)) {
    CAPTURE(c.name);
    REQUIRE(by_name.count(c.name) == 1);
    const Mirrored& m = *by_name.at(c.name);
    REQUIRE(!c.inputs.empty());
    const sg::Dtype dtype = c.inputs[0].dtype;
    CHECK((c.name.ends_with("_f32") == (dtype == sg::kFloat32)));
    std::vector<std::string> inputs, outputs, want_inputs, want_outputs = {"out"}, want_grads;
    for (const RefTensor& r : c.inputs) inputs.push_back(r.name);
    for (const RefTensor& r : c.outputs) outputs.push_back(r.name);
    for (const RefTensor& r : c.inputs) CHECK(r.dtype == dtype);
    if (c.name.starts_with("conv2d")) {
      want_inputs = {"x", "weight"};
      if (!contains(c.name, "nobias")) want_inputs.push_back("bias");
      want_grads = want_inputs;
    } else if (c.name.starts_with("fold")) {
      want_inputs = want_grads = {"cols"};
    } else if (c.name.starts_with("unfold") || c.name.starts_with("avg_pool2d") ||
               c.name.starts_with("adaptive_avg_pool2d")) {
      want_inputs = want_grads = {"x"};
    } else if (c.name.starts_with("max_pool2d")) {
      want_inputs = want_grads = {"x"};
      want_outputs = {"values", "indices"};
      REQUIRE(c.outputs.size() == 2);
      CHECK(c.outputs[1].dtype == sg::kInt64);
      CHECK(c.outputs[1].shape == c.outputs[0].shape);
    } else {
      const bool is_module = c.name.starts_with("bn1d_module_") || c.name.starts_with("bn2d_module_");
      REQUIRE((is_module || c.name.starts_with("batch_norm_")));
      if (is_module) CHECK(c.name.starts_with("bn2d") == (c.inputs[0].shape.size() == 4));
      REQUIRE(!m.steps.empty());
      const std::string prefix =
          is_module ? c.name.substr(0, 12) : fmt::format("batch_norm_{}d_", c.inputs[0].shape.size());
      CHECK(c.name.starts_with(prefix + steps_word(m.steps)));
      const std::string rest = c.name.substr(std::min(c.name.size(), prefix.size() + steps_word(m.steps).size()));
      CHECK((rest.empty() || (!rest.starts_with("_train") && !rest.starts_with("_eval"))));
      for (size_t i = 0; i < m.steps.size(); ++i) want_inputs.push_back(step_input(i));
      const bool stats = is_module ? !contains(c.name, "notrack") : !contains(c.name, "nostats");
      if (stats && !is_module) want_inputs.insert(want_inputs.end(), {"running_mean", "running_var"});
      if (!contains(c.name, "noaffine")) want_inputs.push_back("weight");
      if (!contains(c.name, "noaffine") && !contains(c.name, "weightonly")) want_inputs.push_back("bias");
      want_grads = {step_input(m.steps.size() - 1)};
      for (const char* p : {"weight", "bias"})
        if (std::find(want_inputs.begin(), want_inputs.end(), p) != want_inputs.end()) want_grads.push_back(p);
      if (stats) want_outputs.insert(want_outputs.end(), {"running_mean", "running_var"});
      if (stats && is_module) want_outputs.push_back("num_batches_tracked");
      for (const RefTensor& o : c.outputs)
        if (o.name == "num_batches_tracked") {
          CHECK(o.dtype == sg::kInt64);
          CHECK(o.shape.empty());
        } else if (o.name != "out") {
          CHECK(o.shape == sg::Shape{c.inputs[0].shape.at(1)});
        }
      CHECK(c.outputs[0].shape == c.inputs[0].shape);
    }
    CHECK(inputs == want_inputs);
    CHECK(outputs == want_outputs);
    CHECK(sgref::grad_names(c) == want_grads);
    sgref::check_weight(c);
    CHECK(c.outputs[0].dtype == dtype);
    sgref::check_grads_match_inputs(c);
    if (!contains(c.name, "nan")) {
      sgref::check_all_finite(c);
      continue;
    }
    int64_t nans = 0;
    for (double v : c.inputs[0].values) nans += std::isnan(v);
    CHECK(nans > 0);
    RefCase finite_part = c;  // indices, weight and gradients must still be finite
    finite_part.inputs.clear();
    finite_part.outputs.erase(finite_part.outputs.begin());
    sgref::check_all_finite(finite_part);
  }
}

TEST_CASE("conv2d, unfold, fold, pooling and batch_norm match PyTorch: outputs, running statistics, gradients") {
  sgref::run_all(sgref::table(kTable), mirrored_cases(), tolerance);
}
