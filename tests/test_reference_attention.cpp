// scaled_dot_product_attention against PyTorch: values and gradients from the committed
// table tests/reference/attention_ops.txt (written by tests/reference/gen_attention_ops.py;
// see tests/reference/README.md), read by tests/reference_table.h. mirrored_cases()
// mirrors the generator's CASES name for name (a case present on one side only fails);
// each lambda calls the op on the named inputs q, k, v (and mask when the table has one)
// with the options the name spells. q, k and v are differentiated, never the mask.
//
// The table has no dropout cases (softgrad's keep mask cannot match PyTorch's RNG) and no
// fully masked query rows (PyTorch: NaN, softgrad: 0); tests/test_attention.cpp covers both.
#include <optional>
#include <string>
#include <vector>

#include "ops/attention.h"
#include "tests/reference_table.h"

using sg::Tensor;
using sgref::Args;
using sgref::CaseFn;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;

namespace {

const char* const kTable = "attention_ops.txt";

// The options a case name spells; the mask is the input named "mask" when the table has
// one. heads_last: the inputs are stored (B, N, H, D) and attention runs over their
// transpose(1, 2), a strided (B, H, N, D) view (as the generator does).
struct Opts {
  bool causal = false;
  std::optional<double> scale = std::nullopt;
  bool heads_last = false;
};

CaseFn sdpa(Opts o = {}) {
  return [o](const Args& x) {
    sg::SdpaOptions opt;  // assigned, not designated: its Tensor member has no initializer
    opt.is_causal = o.causal;
    opt.scale = o.scale;
    if (x.has("mask")) opt.attn_mask = x["mask"];
    Tensor q = x["q"], k = x["k"], v = x["v"];
    if (o.heads_last) {
      q = q.transpose(1, 2);
      k = k.transpose(1, 2);
      v = v.transpose(1, 2);
    }
    return sg::scaled_dot_product_attention(q, k, v, opt);
  };
}

const sgref::CaseMap& mirrored_cases() {
  static const sgref::CaseMap cases = [] {
    sgref::CaseMap m;
    auto add = [&m](const std::string& name, CaseFn fn) {
      if (!m.emplace(name, std::move(fn)).second) throw std::logic_error("case listed twice: " + name);
    };
    // Shapes (no options).
    for (const char* name : {"basic", "nq5_nk7_d8", "nq7_nk3_d4", "d1", "d17", "d64", "dv5_d3", "nq1", "nk1",
                             "peaked_scores", "nk135_multi_tile", "3d", "3d_nq4_nk6_dv2"})
      add(name, sdpa());
    // is_causal.
    for (const char* name : {"causal", "causal_nq3_nk6", "causal_nq6_nk3", "causal_3d"})
      add(name, sdpa({.causal = true}));
    // Masks (the input "mask"), alone and with is_causal.
    for (const char* name : {"bool_mask", "bool_mask_2d_bcast", "bool_mask_key_padding", "bool_mask_3d",
                             "additive_mask", "additive_mask_2d_bcast"})
      add(name, sdpa());
    add("bool_mask_causal", sdpa({.causal = true}));
    add("additive_mask_causal", sdpa({.causal = true}));
    // An explicit scale.
    add("scale_0_5", sdpa({.scale = 0.5}));
    add("scale_0_5_additive_mask_causal", sdpa({.causal = true, .scale = 0.5}));
    // Strided inputs.
    add("heads_last", sdpa({.heads_last = true}));
    add("heads_last_causal", sdpa({.causal = true, .heads_last = true}));
    // float32.
    add("basic_f32", sdpa());
    add("n37_causal_bool_mask_f32", sdpa({.causal = true}));
    add("additive_mask_f32", sdpa());
    add("key_padding_nk140_f32", sdpa());
    add("tiles_130x70_d8_dv4_f32", sdpa());
    // Whole and partial rows of huge negative additive masks (-1e4, -1e9, -1e30, float32's
    // lowest), float64 and float32.
    for (const char* value : {"1e4", "1e9", "1e30", "lowest"})
      for (const char* suffix : {"", "_f32"}) add(std::string("huge_mask_") + value + suffix, sdpa());
    return m;
  }();
  return cases;
}

// float64: both sides evaluate the same math in double, softgrad with the online softmax
// (exp(s - running max), rescaled per 128-key tile) and its own gemm summation order,
// PyTorch with a plain softmax; measured worst: 1.3e-15 absolute, 2.7e-13 relative (a
// gradient entry of 3e-3 in peaked_scores), so {1e-10, 1e-12} leaves wide headroom while
// any real error (a wrong scale, mask or causal edge) is O(1e-2) or more. float32: the
// same, in single precision; measured worst 4.8e-7 absolute, 5e-5 relative on entries
// near 1e-3 (at most 0.14 of the allowance).
Tol tolerance(const RefCase&, sg::Dtype dtype) {
  if (dtype == sg::kFloat32) return {1e-5, 1e-6};
  return {1e-10, 1e-12};
}

}  // namespace

TEST_CASE("attention reference table and the mirrored cases list the same names") {
  sgref::check_table_names(kTable, mirrored_cases(), 38);
}

TEST_CASE("attention reference table is well formed") {
  // Every case has the inputs q, k, v[, mask] and differentiates exactly q, k and v, so a
  // gradient missing from the file cannot pass; the mask is bool or of q's dtype.
  for (const RefCase& c : sgref::table(kTable)) {
    CAPTURE(c.name);
    REQUIRE(c.outputs.size() == 1);
    REQUIRE(c.inputs.size() >= 3);
    REQUIRE(c.inputs.size() <= 4);
    CHECK(c.inputs[0].name == "q");
    CHECK(c.inputs[1].name == "k");
    CHECK(c.inputs[2].name == "v");
    const sg::Dtype dtype = c.inputs[0].dtype;
    CHECK(sg::is_floating(dtype));
    CHECK(c.inputs[1].dtype == dtype);
    CHECK(c.inputs[2].dtype == dtype);
    CHECK(c.outputs[0].dtype == dtype);
    CHECK((c.name.ends_with("_f32") == (dtype == sg::kFloat32)));
    if (c.inputs.size() == 4) {
      CHECK(c.inputs[3].name == "mask");
      CHECK((c.inputs[3].dtype == sg::kBool || c.inputs[3].dtype == dtype));
    }
    REQUIRE(c.weight.has_value());
    sgref::check_weight(c);
    CHECK(sgref::grad_names(c) == std::vector<std::string>{"q", "k", "v"});
    sgref::check_grads_match_inputs(c);
    // Everything is finite: no fully masked rows, no -inf in an additive mask.
    sgref::check_all_finite(c);
  }
}

TEST_CASE("scaled_dot_product_attention matches PyTorch: values and gradients") {
  sgref::run_all(sgref::table(kTable), mirrored_cases(), tolerance);
}
