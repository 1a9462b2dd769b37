// nn::MultiHeadAttention against torch.nn.MultiheadAttention: values and gradients (for the
// attended inputs and all four parameters) from the committed table
// tests/reference/mha_ops.txt (written by tests/reference/gen_mha.py; see
// tests/reference/README.md), read by tests/reference_table.h. mirrored_cases() mirrors the
// generator's CASES name for name (a case present on one side only fails).
//
// Each lambda builds the module with the options the case name spells (num_heads `_h<H>`,
// `_bf` batch_first, `nobias`, `causal` -> is_causal; E and the dtype come from the
// table's in_proj_weight), puts the table's parameters into it and calls forward with
// the table's masks. Self-attention cases pass the one input `x` as query, key and value
// (the same tensor, so softgrad takes its fused-projection path); `kv` cases pass it as
// both key and value.
//
// The table has no dropout (softgrad's keep mask cannot match PyTorch's RNG) and no fully
// masked query rows (PyTorch: NaN, softgrad: 0); tests/test_nn.cpp covers those.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "nn/multihead_attention.h"
#include "tests/reference_table.h"

using sg::Tensor;
using sgref::Args;
using sgref::CaseFn;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;

namespace {

const char* const kTable = "mha_ops.txt";

// The options a case name spells (checked against the name in "well formed").
struct Opts {
  int64_t heads = 1;
  bool batch_first = false;
  bool bias = true;
  bool causal = false;
};

CaseFn mha(Opts o) {
  return [o](const Args& x) -> Tensor {
    const Tensor& w = x["in_proj_weight"];  // (3E, E)
    sg::Generator gen(11);
    sg::nn::MultiHeadAttention m(w.size(1), o.heads, gen,
                                 {.bias = o.bias, .batch_first = o.batch_first, .dtype = w.dtype()});
    // Test-only trick: replace the members with the table's leaf tensors, so that forward
    // (which reads these members directly) uses PyTorch's values and the gradients land on
    // the leaves run_case() compares. named_parameters() still holds the module's own
    // initial tensors; nothing here reads it.
    m.in_proj_weight = w;
    m.out_proj->weight = x["out_proj_weight"];
    if (o.bias) {
      m.in_proj_bias = x["in_proj_bias"];
      m.out_proj->bias = x["out_proj_bias"];
    }
    sg::nn::AttentionMasks masks;
    if (x.has("key_padding_mask")) masks.key_padding_mask = x["key_padding_mask"];
    if (x.has("attn_mask")) masks.attn_mask = x["attn_mask"];
    masks.is_causal = o.causal;
    if (x.has("x")) {
      const Tensor& s = x["x"];  // one tensor object as query, key and value
      return m.forward(s, s, s, masks);
    }
    if (x.has("kv")) return m.forward(x["query"], x["kv"], x["kv"], masks);
    return m.forward(x["query"], x["key"], x["value"], masks);
  };
}

struct Mirrored {
  std::string name;
  Opts opts;
};

// The generator's CASES, in its order.
const std::vector<Mirrored>& mirrored_list() {
  static const std::vector<Mirrored> list = {
      // Self-attention, cross-attention, key = value.
      {"self_bf_e8_h2", {.heads = 2, .batch_first = true}},
      {"self_e6_h3", {.heads = 3}},
      {"self_bf_e6_h1", {.heads = 1, .batch_first = true}},
      {"cross_bf_e8_h2", {.heads = 2, .batch_first = true}},
      {"cross_e12_h3", {.heads = 3}},
      {"cross_kv_shared_bf_e6_h2", {.heads = 2, .batch_first = true}},
      // key_padding_mask, attn_mask, both.
      {"key_padding_bool_bf_e6_h2", {.heads = 2, .batch_first = true}},
      {"key_padding_float_e6_h2", {.heads = 2}},
      {"attn_mask_bool_bf_e6_h2", {.heads = 2, .batch_first = true}},
      {"attn_mask_float_e6_h2", {.heads = 2}},
      {"attn_mask_bool_3d_bf_e6_h3", {.heads = 3, .batch_first = true}},
      {"attn_mask_float_3d_e6_h2", {.heads = 2}},
      {"key_padding_bool_attn_mask_bool_bf_e6_h2", {.heads = 2, .batch_first = true}},
      {"key_padding_bool_attn_mask_float_3d_e6_h3", {.heads = 3}},
      // is_causal (PyTorch: a triu(1) bool attn_mask), alone and with masks.
      {"causal_self_bf_e6_h2", {.heads = 2, .batch_first = true, .causal = true}},
      {"causal_self_key_padding_bool_e6_h3", {.heads = 3, .causal = true}},
      {"causal_self_attn_mask_float_bf_e6_h2", {.heads = 2, .batch_first = true, .causal = true}},
      {"causal_cross_l6_s4_e6_h1", {.heads = 1, .causal = true}},
      {"causal_cross_l3_s5_bf_e6_h3", {.heads = 3, .batch_first = true, .causal = true}},
      // Unbatched (L, E) inputs.
      {"unbatched_self_e6_h2", {.heads = 2}},
      {"unbatched_bf_cross_key_padding_float_e6_h3", {.heads = 3, .batch_first = true}},
      {"unbatched_self_key_padding_bool_attn_mask_bool_3d_e6_h2", {.heads = 2}},
      // No biases.
      {"nobias_self_bf_e8_h2", {.heads = 2, .batch_first = true, .bias = false}},
      {"nobias_cross_key_padding_bool_e6_h3", {.heads = 3, .bias = false}},
      // float32.
      {"causal_self_key_padding_bool_attn_mask_float_bf_e8_h2_f32", {.heads = 2, .batch_first = true, .causal = true}},
  };
  return list;
}

const sgref::CaseMap& mirrored_cases() {
  static const sgref::CaseMap cases = [] {
    sgref::CaseMap m;
    for (const Mirrored& c : mirrored_list())
      if (!m.emplace(c.name, mha(c.opts)).second) throw std::logic_error("case listed twice: " + c.name);
    return m;
  }();
  return cases;
}

// float64: both sides evaluate the same math in double (softgrad: its gemm and the fused
// attention kernel with the online softmax; PyTorch: bmm and a plain softmax); measured
// worst 2.6e-15 absolute (a gradient entry of 0.17), every element within 1e-3 of its
// allowance. The atol covers the key-bias gradients, which are exactly 0 in theory (a key
// bias shifts a whole score row) and come out as +-1e-16 noise on both sides. float32: the
// same in single precision; measured worst 9.5e-7 absolute on an entry of 3.4 (2.8e-7
// relative), at most 0.2 of the allowance. Any real error (a wrong bias slice, head split,
// mask meaning or layout) is O(1e-2) or more.
Tol tolerance(const RefCase&, sg::Dtype dtype) {
  if (dtype == sg::kFloat32) return {1e-5, 1e-6};
  return {1e-10, 1e-12};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("mha reference table and the mirrored cases list the same names") {
  sgref::check_table_names(kTable, mirrored_cases(), 25);
}

TEST_CASE("mha reference table is well formed") {
  // The inputs are x | query, kv | query, key, value, then the masks, then the parameters
  // (biases iff the case has bias); exactly the attended inputs and the parameters have a
  // grad line, so a gradient missing from the file cannot pass. The name spells the
  // options the lambda uses.
  std::map<std::string, Opts> opts;
  for (const Mirrored& c : mirrored_list()) opts[c.name] = c.opts;
  for (const RefCase& c : sgref::table(kTable)) {
    CAPTURE(c.name);
    REQUIRE(opts.count(c.name) == 1);
    const Opts o = opts.at(c.name);
    REQUIRE(c.outputs.size() == 1);
    std::vector<std::string> names;
    for (const RefTensor& r : c.inputs) names.push_back(r.name);
    REQUIRE(!names.empty());
    std::vector<std::string> attended;
    if (names[0] == "x") attended = {"x"};
    else if (names.size() > 1 && names[1] == "kv") attended = {"query", "kv"};
    else attended = {"query", "key", "value"};
    std::vector<std::string> params = {"in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias"};
    if (!o.bias) params = {"in_proj_weight", "out_proj_weight"};
    std::vector<std::string> want = attended;
    for (const char* mask : {"key_padding_mask", "attn_mask"})
      if (std::find(names.begin(), names.end(), mask) != names.end()) want.push_back(mask);
    want.insert(want.end(), params.begin(), params.end());
    CHECK(names == want);

    const RefTensor& w = c.inputs[names.size() - params.size()];
    REQUIRE(w.name == "in_proj_weight");
    REQUIRE(w.shape.size() == 2);
    const int64_t E = w.shape[1];
    CHECK(w.shape[0] == 3 * E);
    CHECK(contains(c.name + "_", fmt::format("_e{}_", E)));
    CHECK(contains(c.name, fmt::format("_h{}", o.heads)));
    CHECK(E % o.heads == 0);
    CHECK(contains(c.name, "_bf") == o.batch_first);
    CHECK(contains(c.name, "nobias") == !o.bias);
    CHECK(contains(c.name, "causal") == o.causal);
    const sg::Dtype dtype = w.dtype;
    CHECK((c.name.ends_with("_f32") == (dtype == sg::kFloat32)));
    for (const RefTensor& r : c.inputs) {
      CAPTURE(r.name);
      if (r.name.ends_with("_mask")) CHECK((r.dtype == sg::kBool || r.dtype == dtype));
      else CHECK(r.dtype == dtype);
      if (r.name == attended[0]) CHECK(r.shape.size() == (contains(c.name, "unbatched") ? 2u : 3u));
    }
    CHECK(c.outputs[0].dtype == dtype);
    CHECK(c.outputs[0].shape == c.inputs[0].shape);  // the query's shape
    REQUIRE(c.weight.has_value());
    sgref::check_weight(c);

    std::vector<std::string> want_grads = attended;
    want_grads.insert(want_grads.end(), params.begin(), params.end());
    CHECK(sgref::grad_names(c) == want_grads);
    sgref::check_grads_match_inputs(c);
    // Everything is finite: no fully masked rows, no -inf in an additive mask.
    sgref::check_all_finite(c);
  }
}

TEST_CASE("nn::MultiHeadAttention matches torch.nn.MultiheadAttention: values and gradients") {
  sgref::run_all(sgref::table(kTable), mirrored_cases(), tolerance);
}
