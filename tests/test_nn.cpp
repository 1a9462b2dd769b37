// nn: Module bookkeeping, init, Linear, and MultiHeadAttention (against the same
// computation composed from plain ops, gradcheck end to end, masks, dropout, errors).
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/test_util.h"

using sg::Tensor;
using sgtest::check_close;
using sgtest::check_error;

namespace {

struct Tiny : sg::nn::Module {
  std::shared_ptr<sg::nn::Linear> fc1, fc2;
  Tensor scale;
  explicit Tiny(sg::Generator& gen) : Module("Tiny") {
    fc1 = register_module("fc1", std::make_shared<sg::nn::Linear>(4, 3, gen));
    scale = register_parameter("scale", sg::ones({3}));
    fc2 = register_module("fc2", std::make_shared<sg::nn::Linear>(3, 2, gen, sg::nn::LinearOptions{.bias = false}));
    register_buffer("steps", sg::zeros({1}, sg::kInt64));
  }
  void add_again() { register_parameter("scale", sg::ones({1})); }
};

std::vector<std::string> names(const sg::nn::NamedTensors& list) {
  std::vector<std::string> out;
  for (const auto& [n, _] : list) out.push_back(n);
  return out;
}

}  // namespace

TEST_CASE("Module: registration order, dotted names, train/eval, zero_grad, summary") {
  sg::Generator gen(1);
  Tiny net(gen);
  CHECK(names(net.named_parameters()) ==
        std::vector<std::string>{"scale", "fc1.weight", "fc1.bias", "fc2.weight"});
  CHECK(names(net.named_parameters(false)) == std::vector<std::string>{"scale"});
  CHECK(names(net.named_buffers()) == std::vector<std::string>{"steps"});
  CHECK(net.num_parameters() == 3 + 12 + 3 + 6);
  for (const Tensor& p : net.parameters()) CHECK(p.requires_grad());
  // A registered tensor is the member's handle: an update through one shows in the other.
  CHECK(net.named_parameters()[1].second.impl() == net.fc1->weight.impl());
  net.eval();
  CHECK(!net.is_training());
  CHECK(!net.fc2->is_training());
  net.train();
  CHECK(net.fc1->is_training());
  sg::sum(net.fc2->forward(net.fc1->forward(sg::ones({2, 4})) * net.scale)).backward();
  CHECK(net.fc1->weight.grad().defined());
  net.zero_grad();
  for (const Tensor& p : net.parameters()) CHECK(!p.grad().defined());
  const std::string s = net.summary();
  CHECK(s.find("Tiny(") == 0);
  CHECK(s.find("(fc1): Linear(in_features=4, out_features=3, bias=true)") != std::string::npos);
  CHECK(s.find("(fc2): Linear(in_features=3, out_features=2, bias=false)") != std::string::npos);
  CHECK(s.find("parameters: 24") != std::string::npos);
  check_error([&] { net.add_again(); }, {"Tiny", "scale", "already registered"});
}

TEST_CASE("init: PyTorch's bounds and spreads") {
  sg::Generator gen(2);
  Tensor w = sg::empty({256, 1024});
  auto max_abs = [](const Tensor& t) {
    double m = 0;
    for (double x : t.to_vector<double>()) m = std::max(m, std::abs(x));
    return m;
  };
  auto stddev = [](const Tensor& t) { return std::sqrt(sg::var(t).item<double>()); };
  sg::nn::init::kaiming_uniform_(w, gen);  // bound sqrt(6 / fan_in)
  CHECK(max_abs(w) <= std::sqrt(6.0 / 1024));
  CHECK(max_abs(w) > 0.99 * std::sqrt(6.0 / 1024));
  sg::nn::init::xavier_uniform_(w, gen, 2.0);  // bound 2 sqrt(6 / (fan_in + fan_out))
  CHECK(max_abs(w) <= 2 * std::sqrt(6.0 / 1280));
  CHECK(max_abs(w) > 0.99 * 2 * std::sqrt(6.0 / 1280));
  sg::nn::init::kaiming_normal_(w, gen, 0.0, sg::nn::init::FanMode::FanOut);
  CHECK(stddev(w) == doctest::Approx(std::sqrt(2.0 / 256)).epsilon(0.01));
  sg::nn::init::xavier_normal_(w, gen);
  CHECK(stddev(w) == doctest::Approx(std::sqrt(2.0 / 1280)).epsilon(0.01));
  sg::Generator g(3);
  sg::nn::Linear lin(100, 10, g);  // weight and bias in U(-1/sqrt(100), 1/sqrt(100))
  CHECK(max_abs(lin.weight) <= 0.1);
  CHECK(max_abs(lin.weight) > 0.09);
  CHECK(max_abs(lin.bias) <= 0.1);
  check_error([&] { sg::nn::init::xavier_uniform_(lin.bias, gen); }, {"init", "[10]", "2 dims"});
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The MultiHeadAttention forward composed from plain ops (batch-first (B, L, E) inputs,
// an additive mask broadcastable to (B, H, L, S) or undefined).
Tensor composed_mha(const sg::nn::MultiHeadAttention& m, const Tensor& x, const Tensor& kv, const Tensor& mask,
                    bool causal) {
  const int64_t E = m.embed_dim, H = m.num_heads, Dh = m.head_dim;
  const int64_t B = x.size(0), L = x.size(1), S = kv.size(1);
  auto proj = [&](const Tensor& in, int64_t part, int64_t rows) {
    const Tensor w = sg::narrow(m.in_proj_weight, 0, part * E, E), b = sg::narrow(m.in_proj_bias, 0, part * E, E);
    return (sg::matmul(in, w.t()) + b).reshape({B, rows, H, Dh}).transpose(1, 2);
  };
  const Tensor q = proj(x, 0, L), k = proj(kv, 1, S), v = proj(kv, 2, S);
  Tensor scores = sg::matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(Dh)));
  if (mask.defined()) scores = scores + mask;
  if (causal) {
    std::vector<bool> above(static_cast<size_t>(L * S));
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < S; ++j) above[static_cast<size_t>(i * S + j)] = j > i;
    scores = sg::masked_fill(scores, sg::from_vector(above, {L, S}), -kInf);
  }
  const Tensor attn = sg::matmul(sg::softmax(scores, -1), v).transpose(1, 2).reshape({B, L, E});
  return sg::matmul(attn, m.out_proj->weight.t()) + m.out_proj->bias;
}

// Random biases (PyTorch initializes them to 0, which would hide a wrong bias slice).
void randomize_biases(sg::nn::MultiHeadAttention& m, sg::Generator& gen) {
  sg::nn::init::uniform_(m.in_proj_bias, -0.5, 0.5, gen);
  sg::nn::init::uniform_(m.out_proj->bias, -0.5, 0.5, gen);
}

}  // namespace

TEST_CASE("MultiHeadAttention: PyTorch's parameter names, shapes and init") {
  sg::Generator gen(4);
  const sg::nn::MultiHeadAttention m(12, 3, gen);
  CHECK(names(m.named_parameters()) ==
        std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
  CHECK(m.in_proj_weight.shape() == sg::Shape{36, 12});
  CHECK(m.num_parameters() == 4 * 12 * 12 + 4 * 12);
  CHECK(sg::sum(sg::abs(m.in_proj_bias)).item<double>() == 0.0);
  CHECK(sg::sum(sg::abs(m.out_proj->bias)).item<double>() == 0.0);
  CHECK(sg::max(sg::abs(m.in_proj_weight)).item<double>() <= std::sqrt(6.0 / (36 + 12)));
  CHECK(m.summary().find("MultiHeadAttention(embed_dim=12, num_heads=3") == 0);
}

TEST_CASE("MultiHeadAttention matches the composed computation (self, cross, masks, layouts)") {
  sg::Generator gen(5);
  const int64_t B = 2, L = 5, S = 7, E = 8, H = 2;
  for (const bool batch_first : {true, false}) {
    CAPTURE(batch_first);
    sg::nn::MultiHeadAttention m(E, H, gen, {.batch_first = batch_first, .dtype = sg::kFloat64});
    randomize_biases(m, gen);
    auto layout = [&](const Tensor& bf) { return batch_first ? bf : bf.transpose(0, 1).contiguous(); };
    const Tensor x = sg::randn({B, L, E}, gen, sg::kFloat64), mem = sg::randn({B, S, E}, gen, sg::kFloat64);

    // Self-attention, causal.
    const Tensor xs = layout(x);
    check_close(layout(composed_mha(m, x, x, Tensor(), true)), m.forward(xs, xs, xs, {.is_causal = true}), 1e-12,
                1e-13);
    // Cross-attention with a bool key-padding mask (true = ignore) and an additive (L, S) mask.
    std::vector<bool> pad(static_cast<size_t>(B * S), false);
    pad[S - 1] = pad[S - 2] = pad[S + 3] = true;
    const Tensor kpm = sg::from_vector(pad, {B, S});
    const Tensor am = sg::randn({L, S}, gen, sg::kFloat64);
    const Tensor want_mask = sg::masked_fill(sg::zeros({B, 1, 1, S}, sg::kFloat64), kpm.reshape({B, 1, 1, S}), -kInf) +
                             am.reshape({1, 1, L, S});
    const Tensor ms = layout(mem);
    check_close(layout(composed_mha(m, x, mem, want_mask, false)),
                m.forward(xs, ms, ms, {.key_padding_mask = kpm, .attn_mask = am}), 1e-12, 1e-13);
    // A bool (B * H, L, S) attention mask (true = may not attend), one entry per head.
    const Tensor blocked = sg::lt(sg::rand({B * H, L, S}, gen, sg::kFloat64), sg::scalar_tensor(0.3, sg::kFloat64));
    std::vector<bool> b = blocked.to_vector<bool>();
    for (int64_t r = 0; r < B * H * L; ++r) b[static_cast<size_t>(r * S)] = false;  // no fully masked row
    const Tensor bm = sg::from_vector(b, {B * H, L, S});
    const Tensor want_bm = sg::masked_fill(sg::zeros({B, H, L, S}, sg::kFloat64), bm.reshape({B, H, L, S}), -kInf);
    check_close(layout(composed_mha(m, x, mem, want_bm, false)), m.forward(xs, ms, ms, {.attn_mask = bm}), 1e-12,
                1e-13);
  }
  // Unbatched (L, E) input: the batch of one, squeezed.
  sg::nn::MultiHeadAttention m(E, H, gen, {.dtype = sg::kFloat64});
  const Tensor x = sg::randn({L, E}, gen, sg::kFloat64);
  check_close(m.forward(x, x, x), composed_mha(m, x.unsqueeze(0), x.unsqueeze(0), Tensor(), false).squeeze(0), 1e-12,
              1e-13);
}

TEST_CASE("gradcheck MultiHeadAttention end to end (input and every parameter)") {
  sg::Generator gen(6);
  for (const bool self : {true, false}) {
    CAPTURE(self);
    sg::nn::MultiHeadAttention m(6, 2, gen, {.batch_first = true, .dtype = sg::kFloat64});
    randomize_biases(m, gen);
    const Tensor x = sgtest::leaf({2, 4, 6}, gen), mem = sgtest::leaf({2, 3, 6}, gen);
    std::vector<bool> pad(6, false);
    pad[4] = true;
    const Tensor kpm = sg::from_vector(pad, {2, 3});
    std::vector<Tensor> inputs = {x, mem};
    for (const Tensor& p : m.parameters()) inputs.push_back(p);  // perturbed in place: the module sees it
    sgtest::check_gradients(
        [&](const std::vector<Tensor>& in) {
          return self ? m.forward(in[0], in[0], in[0], {.is_causal = true})
                      : m.forward(in[0], in[1], in[1], {.key_padding_mask = kpm});
        },
        self ? std::vector<Tensor>{x, m.in_proj_weight, m.in_proj_bias, m.out_proj->weight, m.out_proj->bias}
             : inputs);
  }
}

TEST_CASE("MultiHeadAttention dropout: active in training, off in eval, reproducible from the seed") {
  auto make = [](uint64_t seed) {
    sg::Generator gen(seed);
    return std::make_unique<sg::nn::MultiHeadAttention>(
        16, 4, gen, sg::nn::MultiHeadAttentionOptions{.dropout = 0.5, .batch_first = true});
  };
  sg::Generator gen(7);
  const Tensor x = sg::randn({2, 6, 16}, gen);
  auto m = make(1), same = make(1);
  const Tensor train1 = m->forward(x, x, x), train2 = m->forward(x, x, x);
  CHECK(sg::max(sg::abs(train1 - train2)).item<double>() > 1e-3);  // a new mask each call
  check_close(same->forward(x, x, x), train1, 0.0, 0.0);            // same seed, same masks
  m->eval();
  const Tensor eval1 = m->forward(x, x, x), eval2 = m->forward(x, x, x);
  check_close(eval1, eval2, 0.0, 0.0);
}

TEST_CASE("MultiHeadAttention errors name the shapes") {
  sg::Generator gen(8);
  check_error([&] { sg::nn::MultiHeadAttention(10, 3, gen); }, {"MultiHeadAttention", "10", "3", "divisible"});
  sg::nn::MultiHeadAttention m(8, 2, gen, {.batch_first = true});
  const Tensor x = sg::randn({2, 5, 8}, gen);
  check_error([&] { m.forward(x, sg::randn({2, 5, 6}, gen), x); },
              {"MultiHeadAttention", "embed_dim is 8", "[2, 5, 6]"});
  check_error([&] { m.forward(x, sg::randn({3, 4, 8}, gen), sg::randn({3, 4, 8}, gen)); },
              {"MultiHeadAttention", "[2, 5, 8]", "[3, 4, 8]"});
  check_error([&] { m.forward(x, x, x, {.key_padding_mask = sg::zeros({2, 4}, sg::kBool)}); },
              {"key_padding_mask", "[2, 4]", "(2, 5)"});
  check_error([&] { m.forward(x, x, x, {.attn_mask = sg::zeros({5, 4}, sg::kBool)}); },
              {"attn_mask", "[5, 4]", "(5, 5)", "(4, 5, 5)"});
  check_error([&] { m.forward(x.to(sg::kFloat64), x.to(sg::kFloat64), x.to(sg::kFloat64)); },
              {"MultiHeadAttention", "float32", "float64"});
  check_error([&] { m.forward(sg::randn({2, 2, 5, 8}, gen), x, x); }, {"MultiHeadAttention", "[2, 2, 5, 8]"});
}

TEST_CASE("the README's MultiHeadAttention snippet runs") {
  sg::Generator gen(0);
  sg::nn::MultiHeadAttention mha(64, 4, gen, {.batch_first = true});
  sg::Tensor x = sg::randn({8, 50, 64}, gen);  // (batch, tokens, embed)
  sg::Tensor y = mha.forward(x, x, x, {.is_causal = true});
  sg::sum(y).backward();  // mha.in_proj_weight.grad() ...
  CHECK(y.shape() == sg::Shape{8, 50, 64});
  CHECK(mha.in_proj_weight.grad().shape() == sg::Shape{192, 64});
  CHECK(mha.out_proj->bias.grad().defined());
}
