// Core ops against PyTorch: values and gradients from the committed table
// tests/reference/core_ops.txt (written by tests/reference/gen_core_ops.py; see
// tests/reference/README.md), read by tests/reference_table.h. For each case the table
// holds the inputs, PyTorch's outputs, a weight w and the gradients of sum(output * w);
// mirrored_cases() below mirrors the generator's CASES table name for name, and a case
// present on one side only fails the suite.
#include <cmath>
#include <string>
#include <vector>

#include "tests/reference_table.h"

using sg::Tensor;
using sgref::Args;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;
using sgref::make_tensor;
using sgref::mismatch;

namespace {

const char* const kTable = "core_ops.txt";

// ---- the mirrored cases: name -> the same computation in softgrad ---------------------
const sgref::CaseMap& mirrored_cases() {
  using sg::GeluApprox;
  static const sgref::CaseMap cases = {
      // Binary arithmetic with broadcasting.
      {"add_same", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"add_bcast_234_31", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"add_bcast_both", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"add_0d", [](const Args& x) { return sg::add(x["a"], x["b"]); }},
      {"sub_bcast_234_4", [](const Args& x) { return sg::sub(x["a"], x["b"]); }},
      {"sub_bcast_31_234", [](const Args& x) { return sg::sub(x["a"], x["b"]); }},
      {"mul_bcast_234_31", [](const Args& x) { return sg::mul(x["a"], x["b"]); }},
      {"mul_bcast_41_15", [](const Args& x) { return sg::mul(x["a"], x["b"]); }},
      {"div_bcast_234_31", [](const Args& x) { return sg::div(x["a"], x["b"]); }},
      {"div_bcast_31_234", [](const Args& x) { return sg::div(x["a"], x["b"]); }},
      // Powers.
      {"pow_scalar_2.5", [](const Args& x) { return sg::pow(x["x"], 2.5); }},
      {"pow_scalar_-1.5", [](const Args& x) { return sg::pow(x["x"], -1.5); }},
      {"pow_scalar_3_mixed_sign", [](const Args& x) { return sg::pow(x["x"], 3.0); }},
      {"pow_scalar_0.5", [](const Args& x) { return sg::pow(x["x"], 0.5); }},
      {"pow_tensor", [](const Args& x) { return sg::pow(x["a"], x["b"]); }},
      {"pow_tensor_bcast", [](const Args& x) { return sg::pow(x["a"], x["b"]); }},
      // Unary.
      {"neg", [](const Args& x) { return sg::neg(x["x"]); }},
      {"exp", [](const Args& x) { return sg::exp(x["x"]); }},
      {"log", [](const Args& x) { return sg::log(x["x"]); }},
      {"sqrt", [](const Args& x) { return sg::sqrt(x["x"]); }},
      {"abs", [](const Args& x) { return sg::abs(x["x"]); }},
      {"relu", [](const Args& x) { return sg::relu(x["x"]); }},
      {"tanh", [](const Args& x) { return sg::tanh(x["x"]); }},
      {"sigmoid", [](const Args& x) { return sg::sigmoid(x["x"]); }},
      {"gelu_none", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::None); }},
      {"gelu_tanh", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::Tanh); }},
      {"clamp_min", [](const Args& x) { return sg::clamp(x["x"], -0.3, std::nullopt); }},
      {"clamp_max", [](const Args& x) { return sg::clamp(x["x"], std::nullopt, 0.4); }},
      {"clamp_both", [](const Args& x) { return sg::clamp(x["x"], -0.5, 0.5); }},
      // Reductions.
      {"sum_all", [](const Args& x) { return sg::sum(x["x"]); }},
      {"sum_dim1", [](const Args& x) { return sg::sum(x["x"], {1}); }},
      {"sum_dims02_keepdim", [](const Args& x) { return sg::sum(x["x"], {0, 2}, true); }},
      {"sum_dim_neg1", [](const Args& x) { return sg::sum(x["x"], {-1}); }},
      {"mean_all", [](const Args& x) { return sg::mean(x["x"]); }},
      {"mean_dim1", [](const Args& x) { return sg::mean(x["x"], {1}); }},
      {"mean_dims02_keepdim", [](const Args& x) { return sg::mean(x["x"], {0, 2}, true); }},
      {"var_all", [](const Args& x) { return sg::var(x["x"]); }},
      {"var_all_correction0", [](const Args& x) { return sg::var(x["x"], sgtest::all_dims(x["x"]), false, 0); }},
      // NOTE: sg::var(x, {1}) would pick var(x, correction = 1) (braced int64 beats the
      // vector's initializer_list), so the dims are spelled out.
      {"var_dim1", [](const Args& x) { return sg::var(x["x"], std::vector<int64_t>{1}); }},
      {"var_dim1_correction0", [](const Args& x) { return sg::var(x["x"], std::vector<int64_t>{1}, false, 0); }},
      {"var_dims02_keepdim", [](const Args& x) { return sg::var(x["x"], std::vector<int64_t>{0, 2}, true); }},
      {"max_all", [](const Args& x) { return sg::max(x["x"]); }},
      {"min_all", [](const Args& x) { return sg::min(x["x"]); }},
      {"max_dim1_keepdim", [](const Args& x) { return sg::max(x["x"], 1, true); }},
      {"min_dim1_keepdim", [](const Args& x) { return sg::min(x["x"], 1, true); }},
      {"max_dim_neg1", [](const Args& x) { return sg::max(x["x"], -1); }},
      {"min_dim0", [](const Args& x) { return sg::min(x["x"], 0); }},
      {"argmax_all", [](const Args& x) { return sg::argmax(x["x"]); }},
      {"argmax_dim1", [](const Args& x) { return sg::argmax(x["x"], 1); }},
      {"argmax_dim0_keepdim", [](const Args& x) { return sg::argmax(x["x"], 0, true); }},
      {"argmin_dim1", [](const Args& x) { return sg::argmin(x["x"], 1); }},
      // matmul.
      {"matmul_2d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_1d_2d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_2d_1d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_1d_1d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_batched_3d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_bcast_3d_2d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"matmul_bcast_4d_3d", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      // Shape ops.
      {"reshape", [](const Args& x) { return sg::reshape(x["x"], {4, 6}); }},
      {"reshape_neg1", [](const Args& x) { return sg::reshape(x["x"], {6, -1}); }},
      {"transpose_0_2", [](const Args& x) { return sg::transpose(x["x"], 0, 2); }},
      {"permute_201", [](const Args& x) { return sg::permute(x["x"], {2, 0, 1}); }},
      {"narrow_dim1", [](const Args& x) { return sg::narrow(x["x"], 1, 1, 2); }},
      {"slice_step2", [](const Args& x) { return sg::slice(x["x"], 1, 1, 6, 2); }},    // x[:, 1::2]
      {"slice_dim0_step3", [](const Args& x) { return sg::slice(x["x"], 0, 1, 7, 3); }},  // x[1:7:3]
      {"squeeze_all", [](const Args& x) { return sg::squeeze(x["x"]); }},
      {"squeeze_dim1", [](const Args& x) { return sg::squeeze(x["x"], 1); }},
      {"unsqueeze_dim1", [](const Args& x) { return sg::unsqueeze(x["x"], 1); }},
      {"expand_31_234", [](const Args& x) { return sg::expand(x["x"], {2, 3, 4}); }},
      {"cat_dim1", [](const Args& x) { return sg::cat({x["a"], x["b"], x["c"]}, 1); }},
      {"stack_dim0", [](const Args& x) { return sg::stack({x["a"], x["b"], x["c"]}, 0); }},
      {"stack_dim1", [](const Args& x) { return sg::stack({x["a"], x["b"]}, 1); }},
      {"index_select_dim0", [](const Args& x) { return sg::index_select(x["x"], 0, x["index"]); }},
      {"index_select_dim1", [](const Args& x) { return sg::index_select(x["x"], 1, x["index"]); }},
      {"gather_dim1", [](const Args& x) { return sg::gather(x["x"], 1, x["index"]); }},
      {"gather_dim1_3d", [](const Args& x) { return sg::gather(x["x"], 1, x["index"]); }},
      // Selection by masks.
      {"where", [](const Args& x) { return sg::where(x["cond"], x["a"], x["b"]); }},
      {"where_bcast", [](const Args& x) { return sg::where(x["cond"], x["a"], x["b"]); }},
      {"masked_fill", [](const Args& x) { return sg::masked_fill(x["x"], x["mask"], -2.5); }},
      {"masked_fill_bcast", [](const Args& x) { return sg::masked_fill(x["x"], x["mask"], 0.75); }},
      // Comparisons.
      {"lt", [](const Args& x) { return sg::lt(x["a"], x["b"]); }},
      {"ge", [](const Args& x) { return sg::ge(x["a"], x["b"]); }},
      {"eq", [](const Args& x) { return sg::eq(x["a"], x["b"]); }},
      {"lt_bcast", [](const Args& x) { return sg::lt(x["a"], x["b"]); }},
      // float32 kernels.
      {"exp_f32", [](const Args& x) { return sg::exp(x["x"]); }},
      {"tanh_f32", [](const Args& x) { return sg::tanh(x["x"]); }},
      {"sigmoid_f32", [](const Args& x) { return sg::sigmoid(x["x"]); }},
      {"gelu_none_f32", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::None); }},
      {"gelu_tanh_f32", [](const Args& x) { return sg::gelu(x["x"], GeluApprox::Tanh); }},
      {"matmul_f32", [](const Args& x) { return sg::matmul(x["a"], x["b"]); }},
      {"sum_all_f32", [](const Args& x) { return sg::sum(x["x"]); }},
      {"sum_dim1_f32", [](const Args& x) { return sg::sum(x["x"], {1}); }},
  };
  return cases;
}

// ---- comparison ------------------------------------------------------------------------
// |got - want| <= atol + rtol * |want|. float64 is held to a few ulp; float32 to a few
// float32 ulp (softgrad's SIMD exp/tanh/erf approximations vs PyTorch's Sleef ones).
// Integer and bool outputs must match exactly.
Tol tolerance(const RefCase& c, sg::Dtype dtype) {
  if (dtype == sg::kFloat32) return {1e-6, 1e-6};
  (void)c;
  return {1e-10, 1e-12};
}

}  // namespace

TEST_CASE("reference table and the mirrored cases list the same names") {
  sgref::check_table_names(kTable, mirrored_cases(), 90);
}

TEST_CASE("reference table is well formed") {
  // Guards the comparison itself: a case whose output is floating must carry a gradient
  // for each floating input, so a grad silently missing from the file cannot pass.
  for (const RefCase& c : sgref::table(kTable)) {
    CAPTURE(c.name);
    sgref::check_weight(c);
    std::vector<std::string> floating_inputs;
    for (const RefTensor& r : c.inputs)
      if (c.weight && sg::is_floating(r.dtype)) floating_inputs.push_back(r.name);
    CHECK(sgref::grad_names(c) == floating_inputs);
    sgref::check_grads_match_inputs(c);
    sgref::check_all_finite(c);
  }
}

TEST_CASE("core ops match PyTorch: values and gradients") {
  sgref::run_all(sgref::table(kTable), mirrored_cases(), tolerance);
}

TEST_CASE("reference comparison rejects a wrong value, shape or dtype") {
  // The comparison itself must be able to fail: perturb PyTorch's numbers and expect a
  // report (one float64 ulp-scale slip passes, a 1e-9 relative error does not).
  const RefTensor want{"out", sg::kFloat64, {2, 2}, {1.0, -2.0, 3.0, 0.5}};
  const Tol tol = tolerance(RefCase{}, sg::kFloat64);
  CHECK(mismatch(make_tensor(want), want, tol).empty());
  RefTensor near = want, off = want, nan = want;
  near.values[1] = std::nextafter(-2.0, 0.0);
  CHECK(mismatch(make_tensor(near), want, tol).empty());
  off.values[2] = 3.0 * (1 + 1e-9);
  CHECK(mismatch(make_tensor(off), want, tol).find("1 of 4 elements differ") != std::string::npos);
  nan.values[0] = std::nan("");
  CHECK_FALSE(mismatch(make_tensor(nan), want, tol).empty());
  CHECK_FALSE(mismatch(make_tensor(want).reshape({4}), want, tol).empty());
  CHECK_FALSE(mismatch(make_tensor(want).to(sg::kFloat32), want, tol).empty());
  const RefTensor idx{"indices", sg::kInt64, {2}, {1, 0}};
  CHECK(mismatch(sg::from_vector<int64_t>({1, 0}, {2}), idx, tol).empty());
  CHECK_FALSE(mismatch(sg::from_vector<int64_t>({0, 0}, {2}), idx, tol).empty());
}
