// sort, argsort, topk and cumsum against PyTorch: values, indices and gradients from the
// committed table tests/reference/sort_ops.txt (written by tests/reference/gen_sort_ops.py;
// see tests/reference/README.md), read by tests/reference_table.h. mirrored_cases() mirrors
// the generator's CASES name for name (a case present on one side only fails). PyTorch's
// sort runs with stable=True there; topk_unsorted* cases hold PyTorch's answer in index
// order, which is what softgrad's sorted=false returns.
#include <cmath>
#include <string>
#include <vector>

#include "ops/sort.h"
#include "tests/reference_table.h"

using sg::Tensor;
using sgref::Args;
using sgref::CaseFn;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;

namespace {

const char* const kTable = "sort_ops.txt";

CaseFn sort(int64_t dim = -1, bool descending = false) {
  return [=](const Args& x) { return sg::sort(x["x"], dim, descending); };
}
CaseFn argsort(int64_t dim = -1, bool descending = false) {
  return [=](const Args& x) { return sg::argsort(x["x"], dim, descending); };
}
CaseFn topk(int64_t k, int64_t dim = -1, bool largest = true, bool sorted = true) {
  return [=](const Args& x) { return sg::topk(x["x"], k, dim, largest, sorted); };
}
CaseFn cumsum(int64_t dim) {
  return [=](const Args& x) { return sg::cumsum(x["x"], dim); };
}

const sgref::CaseMap& mirrored_cases() {
  static const sgref::CaseMap cases = {
      // sort
      {"sort_1d", sort()},
      {"sort_1d_desc", sort(0, true)},
      {"sort_2d_dim1", sort(1)},
      {"sort_2d_dim0_desc", sort(0, true)},
      {"sort_3d_dim1", sort(1)},
      {"sort_3d_dim0_desc", sort(0, true)},
      {"sort_3d_dim_neg1", sort(-1)},
      {"sort_transposed_input", [](const Args& x) { return sg::sort(x["x"].t(), 1); }},
      {"sort_ties", sort()},
      {"sort_ties_desc", sort(-1, true)},
      {"sort_ties_dim0", sort(0)},
      {"sort_signed_zeros", sort()},
      {"sort_signed_zeros_desc", sort(-1, true)},
      {"sort_nan", sort()},
      {"sort_nan_desc", sort(-1, true)},
      {"sort_nan_dim0_f32", sort(0)},
      {"sort_f32", sort(1)},
      {"sort_f32_ties_desc", sort(1, true)},
      {"sort_int64", sort()},
      {"sort_int64_ties_desc", sort(0, true)},
      {"sort_int64_extremes", sort()},
      {"sort_0d", sort(0)},
      {"sort_empty_dim0", sort(0)},
      {"sort_empty_dim1", sort(1)},
      // argsort
      {"argsort_ties", argsort()},
      {"argsort_ties_desc_dim0", argsort(0, true)},
      {"argsort_nan_desc", argsort(-1, true)},
      {"argsort_int64", argsort(1)},
      // topk
      {"topk_1d_k3", topk(3)},
      {"topk_1d_k3_smallest", topk(3, 0, false)},
      {"topk_2d_dim1_k2", topk(2, 1)},
      {"topk_2d_dim0_k2_smallest", topk(2, 0, false)},
      {"topk_3d_dim1_k3", topk(3, 1)},
      {"topk_3d_dim_neg1_k1", topk(1, -1)},
      {"topk_k0", topk(0, 1)},
      {"topk_k_size", topk(5, 1)},
      {"topk_k_size_smallest", topk(4, 0, false)},
      {"topk_transposed_input", [](const Args& x) { return sg::topk(x["x"].t(), 2, 1); }},
      {"topk_ties_below_cut", topk(2, 1)},
      {"topk_unsorted", topk(3, 1, true, false)},
      {"topk_unsorted_smallest_dim0", topk(2, 0, false, false)},
      {"topk_nan", topk(3, 1)},
      {"topk_nan_smallest_k_size", topk(6, 1, false)},
      {"topk_f32", topk(5, 1)},
      {"topk_f32_smallest", topk(4, 0, false)},
      {"topk_int64", topk(3, 1)},
      {"topk_0d", topk(1, 0)},
      // cumsum
      {"cumsum_1d", cumsum(0)},
      {"cumsum_2d_dim0", cumsum(0)},
      {"cumsum_2d_dim1", cumsum(1)},
      {"cumsum_3d_dim0", cumsum(0)},
      {"cumsum_3d_dim1", cumsum(1)},
      {"cumsum_3d_dim_neg1", cumsum(-1)},
      {"cumsum_transposed_input", [](const Args& x) { return sg::cumsum(x["x"].t(), 1); }},
      {"cumsum_f32", cumsum(1)},
      {"cumsum_f32_dim0", cumsum(0)},
      {"cumsum_f32_2pow24", cumsum(0)},
      {"cumsum_nan", cumsum(1)},
      {"cumsum_int64", cumsum(1)},
      {"cumsum_int64_wraps", cumsum(0)},
      {"cumsum_0d", cumsum(-1)},
      {"cumsum_empty", cumsum(1)},
  };
  return cases;
}

// Exact: sort and topk move values without arithmetic, and cumsum adds in the same order as
// PyTorch's CPU kernel (sequentially, float32 in double), forward and backward.
Tol tolerance(const RefCase&, sg::Dtype) { return {0.0, 0.0}; }

bool is_nan_case(const RefCase& c) { return c.name.find("nan") != std::string::npos; }

}  // namespace

TEST_CASE("sort reference table and the mirrored cases list the same names") {
  sgref::check_table_names(kTable, mirrored_cases(), 60);
}

TEST_CASE("sort reference table is well formed") {
  // Every floating input has a gradient when the first output is floating, so a gradient
  // missing from the file cannot pass. Only the `nan` cases hold NaN, in inputs and
  // outputs; each of them really has one.
  for (const RefCase& c : sgref::table(kTable)) {
    CAPTURE(c.name);
    sgref::check_weight(c);
    std::vector<std::string> floating_inputs;
    for (const RefTensor& r : c.inputs)
      if (c.weight && sg::is_floating(r.dtype)) floating_inputs.push_back(r.name);
    CHECK(sgref::grad_names(c) == floating_inputs);
    sgref::check_grads_match_inputs(c);
    if (!is_nan_case(c)) {
      sgref::check_all_finite(c);
      continue;
    }
    int64_t nans = 0;
    for (const RefTensor& r : c.inputs)
      for (double v : r.values) nans += std::isnan(v);
    CHECK(nans > 0);
    RefCase finite_part = c;  // weight and gradients must still be finite
    finite_part.inputs.clear();
    finite_part.outputs.clear();
    sgref::check_all_finite(finite_part);
  }
}

TEST_CASE("sort, argsort, topk and cumsum match PyTorch: values, indices and gradients") {
  sgref::run_all(sgref::table(kTable), mirrored_cases(), tolerance);
}
