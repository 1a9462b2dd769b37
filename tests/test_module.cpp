// nn::Module's registry: weight tying (bound members, set_parameter, remove_duplicate,
// state_dict and checkpoints keep the tie), members that cannot go stale, ModuleList with
// PyTorch's dotted names, and the call operator.
#include <cstdio>
#include <string>
#include <vector>

#include "tests/test_util.h"

using sg::Tensor;
using sgtest::check_close;
using sgtest::check_error;

namespace {

std::vector<std::string> names(const sg::nn::NamedTensors& list) {
  std::vector<std::string> out;
  for (const auto& [n, _] : list) out.push_back(n);
  return out;
}

double max_abs(const Tensor& t) { return sg::max(sg::abs(t)).item<double>(); }

// A two-layer language model whose head shares the embedding matrix (GPT-2's tie):
// tokens (B, T) -> wte (V, E) -> relu(mix) -> head with weight wte (V, E) -> logits (B, T, V).
struct TiedLM : sg::nn::Module {
  std::shared_ptr<sg::nn::Embedding> wte;
  std::shared_ptr<sg::nn::Linear> mix, head;
  TiedLM(int64_t V, int64_t E, sg::Generator& gen, bool tie) : Module("TiedLM") {
    wte = register_module("wte", std::make_shared<sg::nn::Embedding>(V, E, gen, sg::nn::EmbeddingOptions{.dtype = sg::kFloat64}));
    mix = register_module("mix", std::make_shared<sg::nn::Linear>(E, E, gen, sg::nn::LinearOptions{.dtype = sg::kFloat64}));
    head = register_module("head", std::make_shared<sg::nn::Linear>(E, V, gen, sg::nn::LinearOptions{.bias = false, .dtype = sg::kFloat64}));
    if (tie) head->weight = wte->weight;  // the PyTorch way: one assignment
  }
  Tensor forward(const Tensor& tokens) override { return (*head)(sg::relu((*mix)((*wte)(tokens)))); }
};

Tensor lm_loss(TiedLM& m, const Tensor& tokens, const Tensor& targets) {
  const Tensor logits = m(tokens);
  return sg::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}));
}

}  // namespace

TEST_CASE("weight tying by assignment: counted once, one gradient from both uses, trained once, saved and loaded") {
  const int64_t V = 10, E = 8;
  sg::Generator gen(1);
  TiedLM tied(V, E, gen, true);
  CHECK(tied.head->weight.impl() == tied.wte->weight.impl());
  // num_parameters counts the shared matrix once: wte 80 + mix 72 (no head weight).
  CHECK(tied.num_parameters() == V * E + E * E + E);
  CHECK(names(tied.named_parameters()) == std::vector<std::string>{"wte.weight", "mix.weight", "mix.bias"});
  CHECK(tied.parameters().size() == 3);
  CHECK(names(tied.named_parameters(true, false)) ==
        std::vector<std::string>{"wte.weight", "mix.weight", "mix.bias", "head.weight"});
  CHECK(tied.get_parameter("head.weight").impl() == tied.wte->weight.impl());

  // The shared matrix's gradient is the sum of both uses' gradients: compare with an untied
  // copy holding the same values.
  sg::Generator gen2(1);
  TiedLM untied(V, E, gen2, false);
  {
    sg::NoGradGuard no_grad;
    Tensor w = untied.head->weight;
    sg::copy_(w, untied.wte->weight);
  }
  sg::Generator data(2);
  const Tensor tokens = sg::randint(0, V, {3, 5}, data), targets = sg::randint(0, V, {3, 5}, data);
  lm_loss(tied, tokens, targets).backward();
  lm_loss(untied, tokens, targets).backward();
  check_close(tied.wte->weight.grad(), untied.wte->weight.grad() + untied.head->weight.grad(), 1e-12, 1e-14);
  CHECK(max_abs(untied.head->weight.grad()) > 1e-3);  // the head's share is not negligible

  // The optimizer gets the matrix once; training keeps the tie and lowers the loss.
  sg::optim::AdamW opt(tied.parameters(), {.lr = 1e-2, .weight_decay = 0.0});
  const double before = lm_loss(tied, tokens, targets).item<double>();
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    lm_loss(tied, tokens, targets).backward();
    opt.step();
  }
  CHECK(lm_loss(tied, tokens, targets).item<double>() < 0.75 * before);  // 2.68 -> 1.81
  CHECK(tied.head->weight.impl() == tied.wte->weight.impl());

  // state_dict keeps both names (as PyTorch); a file round trip loads both into the one tensor.
  const auto state = sg::nn::state_dict(tied);
  CHECK(names(state) == std::vector<std::string>{"wte.weight", "mix.weight", "mix.bias", "head.weight"});
  const std::string path = "tied_lm.safetensors";
  sg::nn::save(tied, path);
  sg::Generator gen3(7);
  TiedLM fresh(V, E, gen3, true);
  sg::nn::load(fresh, path);
  CHECK(fresh.head->weight.impl() == fresh.wte->weight.impl());
  check_close(fresh.wte->weight, tied.wte->weight, 0.0, 0.0);
  check_close(fresh(tokens), tied(tokens), 0.0, 0.0);
  // A checkpoint (model + optimizer) resumes with the tie.
  sg::optim::AdamW opt2(fresh.parameters(), {.lr = 1e-2, .weight_decay = 0.0});
  sg::optim::save_checkpoint(path, {tied, opt});
  sg::optim::load_checkpoint(path, {fresh, opt2});
  CHECK(fresh.head->weight.impl() == fresh.wte->weight.impl());
  std::remove(path.c_str());

  // A state giving the tied names different values is refused, naming both.
  sg::nn::NamedTensors bad = sg::nn::state_dict(tied);
  bad[3].second = bad[3].second.clone() + 1.0;
  check_error([&] { sg::nn::load_state_dict(fresh, bad); }, {"tied parameters differ", "wte.weight", "head.weight"});
  // An untied model loads a tied model's file: each name gets its copy.
  sg::nn::load_state_dict(untied, state);
  check_close(untied.head->weight, untied.wte->weight, 0.0, 0.0);
  CHECK(untied.head->weight.impl() != untied.wte->weight.impl());
}

TEST_CASE("set_parameter ties and replaces by dotted name; a bound member cannot go stale") {
  sg::Generator gen(3);
  TiedLM m(6, 4, gen, false);
  CHECK(m.num_parameters() == 24 + 16 + 4 + 24);
  m.set_parameter("head.weight", m.wte->weight);
  CHECK(m.head->weight.impl() == m.wte->weight.impl());  // the member follows
  CHECK(m.num_parameters() == 24 + 16 + 4);
  // Replacing a member by plain assignment is what the registry reports.
  const Tensor w = sg::zeros({4, 4}, sg::kFloat64);
  m.mix->weight = w;
  CHECK(m.get_parameter("mix.weight").impl() == w.impl());
  CHECK(w.requires_grad());  // the registration's requires_grad is applied, as PyTorch's Parameter
  // Replacements that cannot be parameters are refused by name.
  m.mix->weight = m.wte->weight * 2.0;
  check_error([&] { m.parameters(); }, {"Linear", "parameter 'weight'", "not a leaf", "tie"});
  m.mix->weight = sg::zeros({4, 4}, sg::kInt64);
  check_error([&] { m.named_parameters(); }, {"Linear", "parameter 'weight'", "int64"});
  m.mix->weight = Tensor();
  check_error([&] { m.num_parameters(); }, {"Linear", "parameter 'weight'", "undefined"});
  m.mix->weight = w;
  check_error([&] { m.set_parameter("mix.weight", w * 2.0); }, {"set_parameter('mix.weight')", "non-leaf"});
  check_error([&] { m.set_parameter("mix.nothing", w); }, {"no parameter 'mix.nothing'"});
  check_error([&] { m.set_parameter("block.weight", w); }, {"no parameter 'block.weight'", "no child module 'block'"});
  check_error([&] { m.get_parameter("wte"); }, {"no parameter 'wte'"});

  // A module of one's own: the pointer form binds, the value form is replaced with set_parameter.
  struct Own : sg::nn::Module {
    Tensor bound, kept;
    Own() : Module("Own") {
      bound = sg::ones({2});
      register_parameter("bound", &bound);
      kept = register_parameter("kept", sg::ones({3}));
    }
  } own;
  own.bound = sg::zeros({2});
  CHECK(own.get_parameter("bound").impl() == own.bound.impl());
  const Tensor fresh = sg::full({3}, 2.0);
  own.set_parameter("kept", fresh);
  CHECK(own.get_parameter("kept").impl() == fresh.impl());
  check_error([&] { own.register_parameter("x", static_cast<Tensor*>(nullptr)); }, {"Own", "'x'", "null"});
  Tensor undefined;
  check_error([&] { own.register_parameter("y", &undefined); }, {"Own", "'y'", "undefined"});
  // Registration is public, and the refusal of dotted names points at ModuleList.
  check_error([&] { own.register_module("h.0", std::make_shared<sg::nn::ReLU>()); }, {"'h.0'", "ModuleList"});
}

TEST_CASE("ModuleList: PyTorch's dotted names, typed access, no forward; Sequential shares it") {
  sg::Generator gen(4);
  struct Stack : sg::nn::Module {
    std::shared_ptr<sg::nn::ModuleList> h;
    explicit Stack(sg::Generator& gen) : Module("Stack") {
      h = register_module("h", std::make_shared<sg::nn::ModuleList>());
      for (int i = 0; i < 2; ++i)
        h->push_back(std::make_shared<sg::nn::TransformerEncoderLayer>(
            8, 2, gen, sg::nn::TransformerEncoderLayerOptions{.dim_feedforward = 16, .dropout = 0.0, .batch_first = true}));
    }
    // Each block takes the mask: what Sequential cannot pass.
    Tensor forward(const Tensor& x) override {
      Tensor y = x;
      for (const auto& block : h->as<sg::nn::TransformerEncoderLayer>()) y = (*block)(y, {.is_causal = true});
      return y;
    }
  } stack(gen);
  const auto n = names(stack.named_parameters());
  CHECK(n.size() == 24);
  CHECK(n[0] == "h.0.self_attn.in_proj_weight");
  CHECK(n[12] == "h.1.self_attn.in_proj_weight");
  CHECK(n[23] == "h.1.norm2.bias");
  CHECK(stack.h->size() == 2);
  // The causal stack: position 0's output does not depend on later positions.
  const Tensor x = sg::randn({1, 4, 8}, gen);
  Tensor x2 = x.clone();
  {
    Tensor last = sg::narrow(x2, 1, 3, 1);
    sg::fill_(last, 5.0);
  }
  check_close(sg::narrow(stack(x), 1, 0, 3), sg::narrow(stack(x2), 1, 0, 3), 1e-6, 1e-6);
  // Typed access and errors.
  CHECK(stack.h->at<sg::nn::TransformerEncoderLayer>(1) == (*stack.h)[1]);
  check_error([&] { stack.h->at<sg::nn::Linear>(0); }, {"ModuleList", "module 0", "TransformerEncoderLayer"});
  check_error([&] { (*stack.h)[2]; }, {"ModuleList", "index 2", "2 modules"});
  check_error([&] { (*stack.h)(x); }, {"ModuleList", "no forward", "iterate"});
  sg::nn::ModuleList one({std::make_shared<sg::nn::ReLU>()});
  check_error([&] { one[1]; }, {"ModuleList", "index 1", "1 module"});
  // summary() shows the list as PyTorch does.
  CHECK(stack.summary().find("(h): ModuleList(\n    (0): TransformerEncoderLayer(") != std::string::npos);
  // Sequential is a ModuleList with a forward.
  sg::nn::Sequential seq({std::make_shared<sg::nn::Linear>(3, 2, gen), std::make_shared<sg::nn::ReLU>()});
  CHECK(names(seq.named_parameters()) == std::vector<std::string>{"0.weight", "0.bias"});
  CHECK(seq.at<sg::nn::Linear>(0)->out_features == 2);
  check_error([&] { seq[5]; }, {"Sequential", "index 5"});
  const Tensor in = sg::randn({4, 3}, gen);
  check_close(seq(in), sg::relu(seq.at<sg::nn::Linear>(0)->forward(in)), 0.0, 0.0);
}

TEST_CASE("module(x) is forward(x); multi-input modules have their own call operator") {
  sg::Generator gen(5);
  sg::nn::Linear lin(3, 2, gen);
  const Tensor x = sg::randn({4, 3}, gen);
  check_close(lin(x), lin.forward(x), 0.0, 0.0);
  sg::nn::Module& base = lin;
  check_close(base(x), lin.forward(x), 0.0, 0.0);  // virtual: the layer's forward
  sg::nn::MultiHeadAttention mha(4, 2, gen, {.batch_first = true});
  const Tensor q = sg::randn({2, 3, 4}, gen);
  check_close(mha(q, q, q, {.is_causal = true}), mha.forward(q, q, q, {.is_causal = true}), 0.0, 0.0);
  sg::nn::CrossEntropyLoss ce;
  const Tensor logits = sg::randn({4, 5}, gen), target = sg::tensor({0, 1, 4, 2});
  check_close(ce(logits, target), sg::cross_entropy(logits, target), 0.0, 0.0);
  sg::nn::TransformerEncoderLayer layer(4, 2, gen, {.dim_feedforward = 8, .dropout = 0.0});
  check_close(layer(q), layer.forward(q), 0.0, 0.0);
  check_close(layer(q, {.is_causal = true}), layer.forward(q, {.is_causal = true}), 0.0, 0.0);
}
