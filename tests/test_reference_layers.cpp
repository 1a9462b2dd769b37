// layer_norm, embedding, gelu and nn::TransformerEncoderLayer against PyTorch: values and
// gradients from the committed table tests/reference/layers_ops.txt (written by
// tests/reference/gen_layers.py; see tests/reference/README.md), read by
// tests/reference_table.h. mirrored_list() mirrors the generator's CASES name for name (a
// case present on one side only fails).
//
// Encoder cases build nn::TransformerEncoderLayer with the options the case name spells
// (`_h<H>` nhead, `prenorm`/`postnorm`, `gelu`/`relu`, `causal` -> is_causal; E, F and the
// dtype come from the table) and put the table's parameters, listed under their
// state_dict names, into it. A separate test loads them by name through
// named_parameters(), the way a checkpoint would, to show that PyTorch's state_dict maps
// onto the module one to one.
//
// Dropout is not in the table (softgrad's mask cannot match PyTorch's RNG); tests/test_layers.cpp
// covers it.
#include <map>
#include <string>
#include <vector>

#include "tests/reference_table.h"

using sg::Tensor;
using sgref::Args;
using sgref::CaseFn;
using sgref::RefCase;
using sgref::RefTensor;
using sgref::Tol;

namespace {

const char* const kTable = "layers_ops.txt";

const std::vector<std::string> kEncoderParams = {
    "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
    "linear1.weight",           "linear1.bias",           "linear2.weight",            "linear2.bias",
    "norm1.weight",             "norm1.bias",             "norm2.weight",              "norm2.bias"};

// layer_norm over the weight's shape, or the last k dims of x without a weight.
CaseFn layer_norm(int64_t k, double eps = 1e-5) {
  return [k, eps](const Args& a) -> Tensor {
    const Tensor& x = a["x"];
    const Tensor w = a.has("weight") ? a["weight"] : Tensor();
    const Tensor b = a.has("bias") ? a["bias"] : Tensor();
    const sg::Shape normalized = w.defined() ? w.shape() : sg::Shape(x.shape().end() - k, x.shape().end());
    return sg::layer_norm(x, normalized, w, b, eps);
  };
}

CaseFn embedding(std::optional<int64_t> padding_idx = std::nullopt) {
  return [padding_idx](const Args& a) -> Tensor {
    return sg::embedding(a["weight"], a["indices"], {.padding_idx = padding_idx});
  };
}

CaseFn gelu(sg::GeluApprox approximate) {
  return [approximate](const Args& a) -> Tensor { return sg::gelu(a["x"], approximate); };
}

struct EncoderOpts {
  int64_t heads = 1;
  bool norm_first = true;
  sg::nn::Activation activation = sg::nn::Activation::GELU;
  bool causal = false;
};

std::unique_ptr<sg::nn::TransformerEncoderLayer> make_encoder(const Args& a, const EncoderOpts& o) {
  const Tensor& x = a["x"];
  sg::Generator gen(3);
  return std::make_unique<sg::nn::TransformerEncoderLayer>(
      x.size(-1), o.heads, gen,
      sg::nn::TransformerEncoderLayerOptions{.dim_feedforward = a["linear1.weight"].size(0),
                                             .dropout = 0.0,
                                             .activation = o.activation,
                                             .batch_first = true,
                                             .norm_first = o.norm_first,
                                             .dtype = x.dtype()});
}

sg::nn::AttentionMasks encoder_masks(const Args& a, const EncoderOpts& o) {
  sg::nn::AttentionMasks masks;
  if (a.has("key_padding_mask")) masks.key_padding_mask = a["key_padding_mask"];
  masks.is_causal = o.causal;
  return masks;
}

CaseFn encoder(EncoderOpts o) {
  return [o](const Args& a) -> Tensor {
    auto layer = make_encoder(a, o);
    // Test-only trick (as in test_reference_mha.cpp): the members become the table's leaf
    // tensors, so that forward (which reads the members) uses PyTorch's values and the
    // gradients land on the leaves run_case() compares. The "loads by name" test below
    // goes through named_parameters() instead.
    sg::nn::TransformerEncoderLayer& L = *layer;
    L.self_attn->in_proj_weight = a["self_attn.in_proj_weight"];
    L.self_attn->in_proj_bias = a["self_attn.in_proj_bias"];
    L.self_attn->out_proj->weight = a["self_attn.out_proj.weight"];
    L.self_attn->out_proj->bias = a["self_attn.out_proj.bias"];
    L.linear1->weight = a["linear1.weight"];
    L.linear1->bias = a["linear1.bias"];
    L.linear2->weight = a["linear2.weight"];
    L.linear2->bias = a["linear2.bias"];
    L.norm1->weight = a["norm1.weight"];
    L.norm1->bias = a["norm1.bias"];
    L.norm2->weight = a["norm2.weight"];
    L.norm2->bias = a["norm2.bias"];
    return L.forward(a["x"], encoder_masks(a, o));
  };
}

struct Mirrored {
  std::string name;
  CaseFn fn;
  std::optional<EncoderOpts> encoder{};
};

// The generator's CASES, in its order.
const std::vector<Mirrored>& mirrored_list() {
  using sg::nn::Activation;
  static const std::vector<Mirrored> list = [] {
    std::vector<Mirrored> l = {
        {"layer_norm_rows", layer_norm(1)},
        {"layer_norm_offset_rows", layer_norm(1)},
        {"layer_norm_3d_over_2", layer_norm(2)},
        {"layer_norm_noaffine_k1", layer_norm(1)},
        {"layer_norm_noaffine_3d_k2", layer_norm(2)},
        {"layer_norm_weightonly", layer_norm(1)},
        {"layer_norm_1d_eps3", layer_norm(1, 1e-3)},
        {"layer_norm_rows_f32", layer_norm(1)},
        {"layer_norm_long_rows_f32", layer_norm(1)},
        {"layer_norm_noaffine_k1_f32", layer_norm(1)},
        {"embedding_1d_repeats", embedding()},
        {"embedding_2d", embedding()},
        {"embedding_0d", embedding()},
        {"embedding_2d_pad3", embedding(3)},
        {"embedding_3d_f32", embedding()},
        {"gelu_erf", gelu(sg::GeluApprox::None)},
        {"gelu_tanh", gelu(sg::GeluApprox::Tanh)},
        {"gelu_erf_f32", gelu(sg::GeluApprox::None)},
        {"gelu_tanh_f32", gelu(sg::GeluApprox::Tanh)},
    };
    const std::vector<std::pair<std::string, EncoderOpts>> encoders = {
        {"encoder_prenorm_gelu_h2_f16", {.heads = 2}},
        {"encoder_prenorm_gelu_causal_padding_h2_f12", {.heads = 2, .causal = true}},
        {"encoder_prenorm_gelu_h1_f8", {.heads = 1}},
        {"encoder_postnorm_relu_padding_h3_f10", {.heads = 3, .norm_first = false, .activation = Activation::ReLU}},
        {"encoder_postnorm_gelu_h2_f16", {.heads = 2, .norm_first = false}},
        {"encoder_prenorm_gelu_causal_h4_f24_f32", {.heads = 4, .causal = true}},
    };
    for (const auto& [name, o] : encoders) l.push_back({name, encoder(o), o});
    return l;
  }();
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

// float64: the same math in double on both sides (softgrad: its fused layer_norm, gemm
// and attention kernels; PyTorch: its layer_norm, bmm and softmax); measured worst 9.4e-13
// absolute on an output of 1.6 (the offset_rows case: a spread of 0.01 on a mean of 50
// costs 4 digits on either side), under 0.006 of the allowance; elsewhere within 1e-14
// relative. The atol covers the key-bias gradients, exactly 0 in theory, noise of 1e-16 on
// both sides. embedding matches exactly. float32: measured worst 2.1e-6 relative (an
// encoder norm2.bias gradient of 0.09), at most 0.1 of the allowance. A real error (a
// swapped parameter, a wrong normalized dim, the post-norm order) is O(1e-2) or more.
Tol tolerance(const RefCase&, sg::Dtype dtype) {
  if (dtype == sg::kFloat32) return {1e-5, 1e-6};
  return {1e-10, 1e-12};
}

}  // namespace

TEST_CASE("layers reference table and the mirrored cases list the same names") {
  sgref::check_table_names(kTable, mirrored_cases(), 25);
}

TEST_CASE("layers reference table is well formed") {
  std::map<std::string, const Mirrored*> by_name;
  for (const Mirrored& c : mirrored_list()) by_name[c.name] = &c;
  for (const RefCase& c : sgref::table(kTable)) {
    CAPTURE(c.name);
    REQUIRE(by_name.count(c.name) == 1);
    REQUIRE(c.outputs.size() == 1);
    REQUIRE(!c.inputs.empty());
    std::vector<std::string> names;
    for (const RefTensor& r : c.inputs) names.push_back(r.name);
    const sg::Dtype dtype = c.inputs[0].dtype;
    CHECK((c.name.ends_with("_f32") == (dtype == sg::kFloat32)));
    CHECK(c.outputs[0].dtype == dtype);
    std::vector<std::string> want_inputs, want_grads;
    if (c.name.starts_with("layer_norm")) {
      want_inputs = {"x"};
      if (!contains(c.name, "noaffine")) want_inputs.push_back("weight");
      if (!contains(c.name, "noaffine") && !contains(c.name, "weightonly")) want_inputs.push_back("bias");
      want_grads = want_inputs;
      CHECK(c.outputs[0].shape == c.inputs[0].shape);
    } else if (c.name.starts_with("embedding")) {
      want_inputs = {"weight", "indices"};
      want_grads = {"weight"};
      REQUIRE(c.inputs.size() == 2);
      CHECK(c.inputs[1].dtype == sg::kInt64);
      sg::Shape out = c.inputs[1].shape;
      out.push_back(c.inputs[0].shape.at(1));
      CHECK(c.outputs[0].shape == out);
    } else if (c.name.starts_with("gelu")) {
      want_inputs = want_grads = {"x"};
    } else {
      REQUIRE(c.name.starts_with("encoder"));
      const EncoderOpts& o = *by_name.at(c.name)->encoder;
      want_inputs = {"x"};
      if (contains(c.name, "padding")) want_inputs.push_back("key_padding_mask");
      want_inputs.insert(want_inputs.end(), kEncoderParams.begin(), kEncoderParams.end());
      want_grads = {"x"};
      want_grads.insert(want_grads.end(), kEncoderParams.begin(), kEncoderParams.end());
      CHECK(contains(c.name, fmt::format("_h{}_", o.heads)));
      CHECK(contains(c.name, "prenorm") == o.norm_first);
      CHECK(contains(c.name, "postnorm") == !o.norm_first);
      CHECK(contains(c.name, "relu") == (o.activation == sg::nn::Activation::ReLU));
      CHECK(contains(c.name, "causal") == o.causal);
      REQUIRE(c.inputs.size() == want_inputs.size());
      const int64_t F = c.inputs[names.size() - 8].shape.at(0);  // linear1.weight (F, E)
      CHECK(contains(c.name, fmt::format("_f{}", F)));
      CHECK(c.outputs[0].shape == c.inputs[0].shape);
    }
    CHECK(names == want_inputs);
    CHECK(sgref::grad_names(c) == want_grads);
    sgref::check_weight(c);
    sgref::check_grads_match_inputs(c);
    sgref::check_all_finite(c);
  }
}

TEST_CASE("layer_norm, embedding, gelu and TransformerEncoderLayer match PyTorch: values and gradients") {
  sgref::run_all(sgref::table(kTable), mirrored_cases(), tolerance);
}

TEST_CASE("a PyTorch TransformerEncoderLayer state_dict loads by name into nn::TransformerEncoderLayer") {
  // Every parameter of the module is found under its own name among the table's inputs,
  // with the same shape, in the same order; copied in through named_parameters() it gives
  // PyTorch's output.
  for (const Mirrored& m : mirrored_list()) {
    if (!m.encoder) continue;
    CAPTURE(m.name);
    const RefCase* c = nullptr;
    for (const RefCase& rc : sgref::table(kTable))
      if (rc.name == m.name) c = &rc;
    REQUIRE(c != nullptr);
    Args a;
    for (const RefTensor& r : c->inputs) a.by_name[r.name] = sgref::make_tensor(r);
    auto layer = make_encoder(a, *m.encoder);
    std::vector<std::string> loaded;
    {
      sg::NoGradGuard no_grad;
      for (auto& [name, p] : layer->named_parameters()) {
        REQUIRE(a.has(name));
        REQUIRE(p.shape() == a[name].shape());
        sg::copy_(p, a[name]);
        loaded.push_back(name);
      }
    }
    CHECK(loaded == kEncoderParams);
    sgref::check_matches(layer->forward(a["x"], encoder_masks(a, *m.encoder)), c->outputs[0],
                         tolerance(*c, c->outputs[0].dtype), "output");
  }
}
