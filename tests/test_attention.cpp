// scaled_dot_product_attention: float64 gradchecks, the fused float32 kernels against the
// unfused reference kernel, masks, causality, dropout, fully masked rows, strided inputs,
// O(N) memory, and the error messages.
#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "ops/tile_gemm.h"
#include "ops/tile_gemm_bf16.h"
#include "tests/test_util.h"

using sg::Shape;
using sg::Tensor;
using sgtest::check_close;
using sgtest::check_error;

namespace {

enum class Mask { kNone, kBool, kAdditive };

struct Config {
  std::string label{};
  int64_t B = 1, H = 2, Nq = 5, Nk = 5, D = 3, Dv = -1;  // Dv < 0: Dv = D
  bool causal = false;
  Mask mask = Mask::kNone;
  bool three_d = false;   // (B, N, D) inputs
  bool mask_2d = false;   // an (Nq, Nk) mask broadcast over batch and heads
  double dropout_p = 0.0;
};

Shape shape_of(const Config& c, int64_t rows, int64_t cols) {
  return c.three_d ? Shape{c.B, rows, cols} : Shape{c.B, c.H, rows, cols};
}

// A mask for the config: bool with about a quarter of the entries false (a few whole rows
// masked when `full_rows`), or additive values in [-2, 1] with some -inf.
Tensor make_mask(const Config& c, sg::Dtype dtype, sg::Generator& gen, bool full_rows = false) {
  if (c.mask == Mask::kNone) return Tensor();
  const Shape s = c.mask_2d ? Shape{c.Nq, c.Nk} : shape_of(c, c.Nq, c.Nk);
  const Tensor u = sg::rand(s, gen, sg::kFloat64);
  std::vector<double> vals = u.to_vector<double>();
  for (size_t i = 0; i < vals.size(); ++i) {
    const int64_t row = static_cast<int64_t>(i) / c.Nk;
    const bool drop_row = full_rows && row % 3 == 1;
    if (c.mask == Mask::kBool)
      vals[i] = (vals[i] >= 0.25 && !drop_row) ? 1.0 : 0.0;
    else
      vals[i] = (vals[i] < 0.15 || drop_row) ? -INFINITY : -2.0 + 3.0 * vals[i];
  }
  const Tensor m = sg::from_vector(vals, s);
  return c.mask == Mask::kBool ? sg::ne(m, sg::scalar_tensor(0.0, sg::kFloat64)) : m.to(dtype);
}

sg::SdpaOptions options_of(const Config& c, const Tensor& mask, sg::Generator* gen) {
  sg::SdpaOptions o;
  o.attn_mask = mask;
  o.is_causal = c.causal;
  o.dropout_p = c.dropout_p;
  o.generator = gen;
  return o;
}

// Every case of the gradcheck table: the list (with and without causal, bool and
// additive masks, Nq != Nk, D = 1, 3, 17, 64) and a few combinations.
std::vector<Config> grad_configs() {
  std::vector<Config> cs;
  for (int64_t D : {1, 3, 17, 64}) {
    cs.push_back({.label = fmt::format("D={}", D), .Nq = 4, .Nk = 5, .D = D});
    cs.push_back({.label = fmt::format("D={} causal", D), .Nq = 5, .Nk = 5, .D = D, .causal = true});
  }
  cs.push_back({.label = "bool mask", .Nq = 6, .Nk = 4, .mask = Mask::kBool});
  cs.push_back({.label = "additive mask", .Nq = 4, .Nk = 6, .mask = Mask::kAdditive});
  cs.push_back({.label = "additive mask causal", .Nq = 6, .Nk = 6, .causal = true, .mask = Mask::kAdditive});
  cs.push_back({.label = "bool (Nq, Nk) mask broadcast", .B = 2, .Nq = 5, .Nk = 3, .mask = Mask::kBool,
                .mask_2d = true});
  cs.push_back({.label = "Nq > Nk causal", .Nq = 7, .Nk = 3, .causal = true});
  cs.push_back({.label = "Nq < Nk causal", .Nq = 3, .Nk = 7, .causal = true});
  cs.push_back({.label = "Dv != D", .Nq = 4, .Nk = 5, .D = 3, .Dv = 6});
  cs.push_back({.label = "3-D inputs", .B = 2, .Nq = 4, .Nk = 5, .D = 3, .three_d = true});
  cs.push_back({.label = "dropout 0.3", .Nq = 5, .Nk = 6, .D = 4, .dropout_p = 0.3});
  cs.push_back({.label = "dropout 0.5 causal mask", .Nq = 6, .Nk = 6, .D = 3, .causal = true,
                .mask = Mask::kBool, .dropout_p = 0.5});
  return cs;
}

int64_t dv_of(const Config& c) { return c.Dv < 0 ? c.D : c.Dv; }

}  // namespace

TEST_CASE("gradcheck scaled_dot_product_attention") {
  sg::Generator gen(11);
  for (const Config& c : grad_configs()) {
    CAPTURE(c.label);
    const Tensor mask = make_mask(c, sg::kFloat64, gen);
    const Tensor q = sgtest::leaf(shape_of(c, c.Nq, c.D), gen, -1.5, 1.5);
    const Tensor k = sgtest::leaf(shape_of(c, c.Nk, c.D), gen, -1.5, 1.5);
    const Tensor v = sgtest::leaf(shape_of(c, c.Nk, dv_of(c)), gen);
    // Dropout: each evaluation draws its seed from a fresh generator, so the keep mask is
    // the same in every evaluation and the function is deterministic.
    sgtest::check_gradients(
        [&](const std::vector<Tensor>& x) {
          sg::Generator g(99);
          return sg::scaled_dot_product_attention(x[0], x[1], x[2], options_of(c, mask, &g));
        },
        {q, k, v});
  }
}

TEST_CASE("gradcheck scaled_dot_product_attention on strided heads of a fused projection") {
  // (B, N, 3, H, D) -> q, k, v (B, H, N, D) views with row stride 3 * H * D: read in place.
  sg::Generator gen(12);
  const Tensor qkv = sgtest::leaf({2, 5, 3, 2, 4}, gen);
  sgtest::check_gradients(
      [](const std::vector<Tensor>& x) {
        const Tensor heads = x[0].permute({2, 0, 3, 1, 4});  // (3, B, H, N, D)
        sg::SdpaOptions o;
        o.is_causal = true;
        return sg::scaled_dot_product_attention(sg::select(heads, 0, 0), sg::select(heads, 0, 1),
                                                sg::select(heads, 0, 2), o);
      },
      {qkv});
}

namespace {

// out and the gradients of sum(out * w) for q, k and v: fused, or the naive reference.
struct Result {
  Tensor out, dq, dk, dv;
};

Result run(bool naive, const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& w,
           const sg::SdpaOptions& o) {
  Tensor q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(), v = v0.detach().requires_grad_();
  const Tensor out = naive ? sg::scaled_dot_product_attention_naive(q, k, v, o)
                           : sg::scaled_dot_product_attention(q, k, v, o);
  sg::sum(out * w).backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double x : t.to_vector<double>()) m = std::max(m, std::abs(x));
  return m;
}

// |a - b| <= 1e-5 (|b| + max |b|): relative to each entry and to the tensor's scale.
void check_relative(const Tensor& got, const Tensor& want, const char* what) {
  CAPTURE(what);
  check_close(got, want, 1e-5, 1e-5 * max_abs(want));
}

}  // namespace

TEST_CASE("fused float32 attention matches the unfused reference up to N = 512") {
  sg::Generator gen(21);
  std::vector<Config> cs = {
      {.label = "512x512 D=64", .B = 1, .H = 2, .Nq = 512, .Nk = 512, .D = 64},
      {.label = "512x512 D=64 causal", .B = 1, .H = 2, .Nq = 512, .Nk = 512, .D = 64, .causal = true},
      {.label = "300x200 D=17 bool mask", .B = 2, .H = 1, .Nq = 300, .Nk = 200, .D = 17, .mask = Mask::kBool},
      {.label = "130x257 D=33 Dv=7 additive mask causal", .B = 1, .H = 3, .Nq = 130, .Nk = 257, .D = 33, .Dv = 7,
       .causal = true, .mask = Mask::kAdditive},
      {.label = "257x129 D=128 (Nq, Nk) bool mask", .B = 2, .H = 2, .Nq = 257, .Nk = 129, .D = 128,
       .mask = Mask::kBool, .mask_2d = true},
      {.label = "3-D 200x300 D=1", .B = 3, .Nq = 200, .Nk = 300, .D = 1, .three_d = true},
      {.label = "1 head 1 batch 384x384 causal (key tiles split over threads)", .B = 1, .H = 1, .Nq = 384,
       .Nk = 384, .D = 64, .causal = true},
      {.label = "dropout 0.2 256x256", .B = 1, .H = 2, .Nq = 256, .Nk = 256, .D = 32, .dropout_p = 0.2},
      {.label = "dropout 0.1 causal 200x150 mask", .B = 2, .H = 1, .Nq = 200, .Nk = 150, .D = 16, .causal = true,
       .mask = Mask::kAdditive, .dropout_p = 0.1},
  };
  for (const Config& c : cs) {
    CAPTURE(c.label);
    const Tensor mask = make_mask(c, sg::kFloat32, gen);
    const Tensor q = sg::randn(shape_of(c, c.Nq, c.D), gen);
    const Tensor k = sg::randn(shape_of(c, c.Nk, c.D), gen);
    const Tensor v = sg::randn(shape_of(c, c.Nk, dv_of(c)), gen);
    const Tensor w = sg::randn(shape_of(c, c.Nq, dv_of(c)), gen);
    sg::Generator g1(5), g2(5);
    const Result fused = run(false, q, k, v, w, options_of(c, mask, &g1));
    const Result naive = run(true, q, k, v, w, options_of(c, mask, &g2));
    check_relative(fused.out, naive.out, "out");
    check_relative(fused.dq, naive.dq, "dq");
    check_relative(fused.dk, naive.dk, "dk");
    check_relative(fused.dv, naive.dv, "dv");
  }
}

TEST_CASE("float64 fused attention matches the reference to rounding") {
  sg::Generator gen(22);
  const Config c{.B = 2, .H = 2, .Nq = 150, .Nk = 270, .D = 20, .Dv = 9, .causal = true, .mask = Mask::kAdditive};
  const Tensor mask = make_mask(c, sg::kFloat64, gen);
  const Tensor q = sg::randn(shape_of(c, c.Nq, c.D), gen, sg::kFloat64);
  const Tensor k = sg::randn(shape_of(c, c.Nk, c.D), gen, sg::kFloat64);
  const Tensor v = sg::randn(shape_of(c, c.Nk, 9), gen, sg::kFloat64);
  const Tensor w = sg::randn(shape_of(c, c.Nq, 9), gen, sg::kFloat64);
  const Result fused = run(false, q, k, v, w, options_of(c, mask, nullptr));
  const Result naive = run(true, q, k, v, w, options_of(c, mask, nullptr));
  check_close(fused.out, naive.out, 1e-12, 1e-13);
  check_close(fused.dq, naive.dq, 1e-11, 1e-12);
  check_close(fused.dk, naive.dk, 1e-11, 1e-12);
  check_close(fused.dv, naive.dv, 1e-11, 1e-12);
}

TEST_CASE("attention with explicit scale, and against the composition softmax(q k^T s + mask) v") {
  sg::Generator gen(23);
  const Tensor q = sgtest::leaf({2, 3, 7, 5}, gen), k = sgtest::leaf({2, 3, 9, 5}, gen),
               v = sgtest::leaf({2, 3, 9, 4}, gen), mask = sg::randn({7, 9}, gen, sg::kFloat64);
  sg::SdpaOptions o;
  o.attn_mask = mask;
  o.scale = 0.7;
  const Tensor fused = sg::scaled_dot_product_attention(q, k, v, o);
  const Tensor composed = sg::matmul(sg::softmax(sg::matmul(q, k.transpose(-1, -2)) * 0.7 + mask, -1), v);
  check_close(fused, composed, 1e-12, 1e-14);
}

TEST_CASE("a fully masked query row gives a zero output row and zero gradients, never NaN") {
  sg::Generator gen(24);
  for (const Mask kind : {Mask::kBool, Mask::kAdditive}) {
    for (const sg::Dtype dtype : {sg::kFloat32, sg::kFloat64}) {
      const Config c{.B = 1, .H = 2, .Nq = 150, .Nk = 140, .D = 8, .mask = kind};
      CAPTURE(static_cast<int>(kind));
      CAPTURE(dtype);
      const Tensor mask = make_mask(c, dtype, gen, /*full_rows=*/true);  // rows 1, 4, 7, ... masked
      const Tensor q = sg::randn(shape_of(c, c.Nq, c.D), gen, dtype);
      const Tensor k = sg::randn(shape_of(c, c.Nk, c.D), gen, dtype);
      const Tensor v = sg::randn(shape_of(c, c.Nk, c.D), gen, dtype);
      const Tensor w = sg::randn(shape_of(c, c.Nq, c.D), gen, dtype);
      for (bool naive : {false, true}) {
        CAPTURE(naive);
        Result r = run(naive, q, k, v, w, options_of(c, mask, nullptr));
        for (Tensor* t : {&r.out, &r.dq, &r.dk, &r.dv}) *t = t->to(sg::kFloat64);
        for (const Tensor& t : {r.out, r.dq, r.dk, r.dv})
          for (double x : t.to_vector<double>()) REQUIRE(std::isfinite(x));
        for (int64_t h = 0; h < c.H; ++h)
          for (int64_t i = 1; i < c.Nq; i += 3)
            for (int64_t j = 0; j < c.D; ++j) {
              CHECK(r.out.at<double>({0, h, i, j}) == 0.0);
              CHECK(r.dq.at<double>({0, h, i, j}) == 0.0);
            }
        // An unmasked row has a non-zero output.
        CHECK(std::abs(r.out.at<double>({0, 0, 0, 0})) > 0.0);
      }
    }
  }
  // No keys at all (Nk = 0): every row is fully masked.
  const Tensor q = sg::randn({1, 1, 3, 4}, gen).requires_grad_();
  const Tensor kv = sg::randn({1, 1, 0, 4}, gen).requires_grad_();
  const Tensor out = sg::scaled_dot_product_attention(q, kv, kv);
  check_close(out, sg::zeros({1, 1, 3, 4}));
  sg::sum(out).backward();
  check_close(q.grad(), sg::zeros({1, 1, 3, 4}));
}

TEST_CASE("huge negative additive masks: whole and partial rows match the unfused composition, both dtypes") {
  // Padded rows get -1e9 (masked_fill), -1e30 or float32's lowest (Hugging Face) instead of
  // -inf. On a whole row the max is that value and max + log(sum) rounds to the max, so a
  // backward that recomputed P from that one number made every P of the row 1 (gradients
  // Nk times too large). Rows r % 3 == 0 carry the value on every key, rows r % 3 == 1 on
  // their first half, the others none. q and k are multiples of 1/4 with D = 4 (scale
  // 1/2): the scores are exact, so the fused op and the composition add the same numbers
  // to the mask and any difference is the op's own error.
  // -inf follows the fully masked row rule on both sides (zeros).
  sg::Generator gen(31);
  const double lowest = -3.4028234663852886e38;
  for (const sg::Dtype dtype : {sg::kFloat64, sg::kFloat32}) {
    for (const double huge : {-1e4, -1e9, -1e30, lowest, -double(INFINITY)}) {
      for (const auto [Nq, Nk] : {std::array<int64_t, 2>{6, 9}, std::array<int64_t, 2>{130, 150}}) {
        CAPTURE(dtype);
        CAPTURE(huge);
        CAPTURE(Nk);
        std::vector<double> m(static_cast<size_t>(Nq * Nk), 0.0);
        for (int64_t i = 0; i < Nq; ++i)
          for (int64_t j = 0; j < Nk; ++j)
            if (i % 3 == 0 || (i % 3 == 1 && j < Nk / 2)) m[static_cast<size_t>(i * Nk + j)] = huge;
        sg::SdpaOptions o;
        o.attn_mask = sg::from_vector(m, {Nq, Nk}).to(dtype);
        const auto dyadic = [&](int64_t rows) { return (sg::randint(-8, 9, {1, 2, rows, 4}, gen).to(dtype) * 0.25); };
        const Tensor q = dyadic(Nq), k = dyadic(Nk);
        const Tensor v = sg::randn({1, 2, Nk, 3}, gen, dtype), w = sg::randn({1, 2, Nq, 3}, gen, dtype);
        const Result fused = run(false, q, k, v, w, o);
        Tensor qc = q.detach().requires_grad_(), kc = k.detach().requires_grad_(), vc = v.detach().requires_grad_();
        const Tensor composed =
            sg::matmul(sg::softmax(sg::matmul(qc, kc.transpose(-1, -2)) * 0.5 + o.attn_mask, -1), vc);
        sg::sum(composed * w).backward();
        const double rtol = dtype == sg::kFloat64 ? 1e-12 : 1e-5;
        const auto check = [&](const Tensor& got, const Tensor& want, const char* what) {
          CAPTURE(what);
          check_close(got, want, rtol, rtol * max_abs(want));
        };
        check(fused.out, composed.detach(), "out");
        check(fused.dq, qc.grad(), "dq");
        check(fused.dk, kc.grad(), "dk");
        check(fused.dv, vc.grad(), "dv");
      }
    }
  }
}

TEST_CASE("causal attention: row i ignores keys after i") {
  // Changing key/value row j may change only output rows i >= j.
  sg::Generator gen(25);
  const Tensor q = sg::randn({1, 1, 300, 16}, gen), k = sg::randn({1, 1, 300, 16}, gen);
  Tensor v = sg::randn({1, 1, 300, 16}, gen);
  sg::SdpaOptions o;
  o.is_causal = true;
  const Tensor before = sg::scaled_dot_product_attention(q, k, v, o);
  const int64_t j = 200;
  for (int64_t c = 0; c < 16; ++c) v.set<float>({0, 0, j, c}, 100.0f);
  const Tensor after = sg::scaled_dot_product_attention(q, k, v, o);
  check_close(sg::narrow(after, 2, 0, j), sg::narrow(before, 2, 0, j), 0.0, 0.0);
  CHECK(std::abs(after.at<float>({0, 0, j, 0}) - before.at<float>({0, 0, j, 0})) > 1e-3);
}

TEST_CASE("attention dropout: the keep rate, the 1/(1-p) scale, and the same mask from the same seed") {
  sg::Generator gen(26);
  const Tensor q = sg::zeros({1, 2, 256, 8}), k = sg::zeros({1, 2, 512, 8});  // uniform P = 1/512
  const Tensor v = sg::ones({1, 2, 512, 1});
  sg::Generator g(7);
  sg::SdpaOptions o;
  o.dropout_p = 0.25;
  o.generator = &g;
  // Each output = (kept / 512) / 0.75: the mean over all rows estimates keep rate / 0.75 = 1.
  const Tensor out = sg::scaled_dot_product_attention(q, k, v, o);
  const double mean = sg::mean(out).item<double>();
  CHECK(mean == doctest::Approx(1.0).epsilon(0.01));  // 262144 draws: sd of the mean ~0.0011
  // Entries are multiples of 1 / (512 * 0.75).
  const double unit = 1.0 / (512 * 0.75);
  for (double x : out.to_vector<double>()) REQUIRE(std::abs(x / unit - std::round(x / unit)) < 1e-3);
  // A new call draws a new seed; the same generator state gives the same mask.
  const Tensor again = sg::scaled_dot_product_attention(q, k, v, o);
  CHECK(max_abs(again - out) > 0.0);
  sg::Generator g_same(7);
  o.generator = &g_same;
  check_close(sg::scaled_dot_product_attention(q, k, v, o), out, 0.0, 0.0);
  // p = 0 with no generator is plain attention; p = 1 drops everything.
  sg::SdpaOptions plain;
  plain.dropout_p = 0.0;
  check_close(sg::scaled_dot_product_attention(q, k, v, plain), sg::scaled_dot_product_attention(q, k, v), 0.0, 0.0);
  o.dropout_p = 1.0;
  check_close(sg::scaled_dot_product_attention(q, k, v, o), sg::zeros({1, 2, 256, 1}));
}

TEST_CASE("attention reads strided heads in place and non-contiguous inputs give the same answer") {
  sg::Generator gen(27);
  const Tensor qkv = sg::randn({2, 70, 3, 4, 16}, gen);  // (B, N, 3, H, D)
  const Tensor heads = qkv.permute({2, 0, 3, 1, 4});      // (3, B, H, N, D)
  const Tensor q = sg::select(heads, 0, 0), k = sg::select(heads, 0, 1), v = sg::select(heads, 0, 2);
  CHECK(!q.is_contiguous());
  const Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  // The strided call allocates exactly what the packed one does: no copies of q, k, v.
  auto extra_bytes = [](const std::function<Tensor()>& call) {
    sg::reset_peak_memory();
    const int64_t before = sg::memory_stats().current_bytes;
    const Tensor out = call();
    return sg::memory_stats().peak_bytes - before;
  };
  Tensor strided, packed;
  const int64_t strided_bytes = extra_bytes([&] { return strided = sg::scaled_dot_product_attention(q, k, v); });
  const int64_t packed_bytes = extra_bytes([&] { return packed = sg::scaled_dot_product_attention(qc, kc, vc); });
  CHECK(strided_bytes == packed_bytes);
  check_close(strided, packed, 0.0, 0.0);
  // A last dim that is not contiguous (a transposed view) is copied first.
  const Tensor kt = kc.transpose(-1, -2).contiguous().transpose(-1, -2);
  check_close(sg::scaled_dot_product_attention(q, kt, v), packed, 0.0, 0.0);
  const Tensor qt = sg::randn({2, 4, 16, 70}, gen).transpose(-1, -2);
  check_close(sg::scaled_dot_product_attention(qt, k, v),
              sg::scaled_dot_product_attention(qt.contiguous(), k, v), 0.0, 0.0);
}

TEST_CASE("attention memory stays O(N): no Nq x Nk buffer forward or backward") {
  // N = 4096, one head: scores alone would be 64 MiB in float32.
  sg::Generator gen(28);
  const int64_t N = 4096, D = 16;
  const Tensor q = sg::randn({1, 1, N, D}, gen).requires_grad_();
  const Tensor k = sg::randn({1, 1, N, D}, gen).requires_grad_();
  const Tensor v = sg::randn({1, 1, N, D}, gen).requires_grad_();
  sg::empty_cache();
  sg::reset_peak_memory();
  const int64_t base = sg::memory_stats().current_bytes;
  sg::SdpaOptions o;
  o.is_causal = true;
  const Tensor out = sg::scaled_dot_product_attention(q, k, v, o);
  out.backward(sg::ones_like(out));
  const int64_t extra = sg::memory_stats().peak_bytes - base;
  const int64_t qkv_bytes = N * D * 4;
  CAPTURE(extra);
  // out, lse, dout, dq, dk, dv, K^T (~7 q's) and, with one head, a private dq per thread:
  // a few MB, where the scores alone would take N * N * 4 = 64 MiB.
  CHECK(extra < (8 + sg::get_num_threads()) * qkv_bytes);
}

TEST_CASE("attention errors name the op, both shapes and the bad value") {
  sg::Generator gen(29);
  const Tensor q = sg::randn({2, 4, 5, 8}, gen), k = sg::randn({2, 4, 6, 8}, gen), v = sg::randn({2, 4, 6, 3}, gen);
  auto sdpa = [](const Tensor& a, const Tensor& b, const Tensor& c, const sg::SdpaOptions& o = {}) {
    return sg::scaled_dot_product_attention(a, b, c, o);
  };
  check_error([&] { sdpa(q, sg::randn({2, 3, 6, 8}, gen), v); },
              {"scaled_dot_product_attention", "[2, 4, 5, 8]", "[2, 3, 6, 8]", "head"});
  check_error([&] { sdpa(q, sg::randn({2, 4, 6, 7}, gen), v); },
              {"scaled_dot_product_attention", "[2, 4, 5, 8]", "[2, 4, 6, 7]", "8 vs 7"});
  check_error([&] { sdpa(q, k, sg::randn({2, 4, 5, 3}, gen)); },
              {"scaled_dot_product_attention", "[2, 4, 6, 8]", "[2, 4, 5, 3]", "6 vs 5"});
  check_error([&] { sdpa(sg::randn({5, 8}, gen), sg::randn({6, 8}, gen), sg::randn({6, 8}, gen)); },
              {"scaled_dot_product_attention", "[5, 8]", "[6, 8]"});
  check_error([&] { sdpa(q, k, sg::randn({2, 6, 3}, gen)); }, {"[2, 4, 5, 8]", "[2, 6, 3]"});
  check_error([&] { sdpa(q, k.to(sg::kFloat64), v); }, {"float32", "float64", "[2, 4, 6, 8]"});
  check_error([&] { sdpa(q.to(sg::kInt64), k.to(sg::kInt64), v.to(sg::kInt64)); }, {"int64", "floating"});
  sg::SdpaOptions o;
  o.attn_mask = sg::ones({5, 7}, sg::kBool);
  check_error([&] { sdpa(q, k, v, o); }, {"attn_mask", "[5, 7]", "[2, 4, 5, 6]", "[2, 4, 5, 8]"});
  o.attn_mask = sg::ones({3, 5, 6}, sg::kBool);
  check_error([&] { sdpa(q, k, v, o); }, {"attn_mask", "[3, 5, 6]", "[2, 4, 5, 6]"});
  o.attn_mask = sg::ones({5, 6}, sg::kInt64);
  check_error([&] { sdpa(q, k, v, o); }, {"attn_mask", "int64", "[5, 6]"});
  o.attn_mask = sg::ones({5, 6}, sg::kFloat64);
  check_error([&] { sdpa(q, k, v, o); }, {"attn_mask", "float64", "float32"});
  o.attn_mask = sg::zeros({5, 6}).requires_grad_();
  check_error([&] { sdpa(q, k, v, o); }, {"attn_mask", "requires grad", "[5, 6]"});
  sg::SdpaOptions d;
  d.dropout_p = 0.1;
  check_error([&] { sdpa(q, k, v, d); }, {"dropout_p = 0.1", "generator"});
  d.dropout_p = 1.5;
  check_error([&] { sdpa(q, k, v, d); }, {"dropout_p", "1.5"});
  check_error([&] { sdpa(Tensor(), k, v); }, {"scaled_dot_product_attention", "undefined"});
}

// tile_gemm_bf16 against its reference (the same bfloat16 roundings, sums in float64). The
// products of two bfloat16 values are exact in float32, so only the float32 sums differ:
// at most K additions and the multiply by alpha (and the add of C), each within 2^-24 of
// its result, so |c - ref| <= (K + 2) 2^-24 (|alpha| (|A| @ |B|) + |C_old|).
TEST_CASE("tile_gemm_bf16 matches its reference: odd sizes and K, transposed A, accumulate, every block width") {
  if (!sg::kernels::tile_gemm_bf16_supported()) {
    MESSAGE("no AVX512-BF16 on this CPU: checking that tile_gemm_bf16 refuses to run");
    float x = 0;
    CHECK_THROWS_WITH_AS(sg::kernels::tile_gemm_bf16(1, 1, 1, 1.f, &x, 1, 1, &x, 1, false, &x, 1),
                         doctest::Contains("AVX512-BF16"), sg::Error);
    return;
  }
  sg::Generator gen(31);
  auto check = [&](int64_t M, int64_t N, int64_t K, bool a_transposed, bool accumulate) {
    CAPTURE(M);
    CAPTURE(N);
    CAPTURE(K);
    CAPTURE(a_transposed);
    CAPTURE(accumulate);
    const int64_t lda = (a_transposed ? M : K) + 3, ldb = N + 5, ldc = N + 1;
    std::vector<float> a(static_cast<size_t>(std::max<int64_t>((a_transposed ? K : M) * lda, 1))),
        b(static_cast<size_t>(std::max<int64_t>(K * ldb, 1))), c(static_cast<size_t>(M * ldc));
    for (auto* v : {&a, &b, &c})
      for (float& x : *v) x = static_cast<float>(gen.uniform() * 4 - 2);
    const float alpha = -0.625f;
    const int64_t a_rs = a_transposed ? 1 : lda, a_ks = a_transposed ? lda : 1;
    std::vector<float> want = c, abs_prod(c.size());
    sg::kernels::tile_gemm_bf16_reference(M, N, K, alpha, a.data(), a_rs, a_ks, b.data(), ldb, accumulate,
                                          want.data(), ldc);
    std::vector<float> abs_a(a.size()), abs_b(b.size());
    for (size_t i = 0; i < a.size(); ++i) abs_a[i] = std::abs(a[i]);
    for (size_t i = 0; i < b.size(); ++i) abs_b[i] = std::abs(b[i]);
    sg::kernels::tile_gemm_bf16_reference(M, N, K, 1.f, abs_a.data(), a_rs, a_ks, abs_b.data(), ldb, false,
                                          abs_prod.data(), ldc);
    const std::vector<float> before = c;
    sg::kernels::tile_gemm_bf16(M, N, K, alpha, a.data(), a_rs, a_ks, b.data(), ldb, accumulate, c.data(), ldc);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t j = 0; j < ldc; ++j) {
        const size_t i = static_cast<size_t>(r * ldc + j);
        if (j >= N) {  // the padding between rows is never written
          REQUIRE(c[i] == before[i]);
          continue;
        }
        const double bound = static_cast<double>(K + 2) * std::ldexp(1.0, -24) *
                             (std::abs(alpha) * abs_prod[i] + (accumulate ? std::abs(before[i]) : 0.f));
        REQUIRE(std::abs(static_cast<double>(c[i]) - static_cast<double>(want[i])) <= bound);
      }
  };
  for (const auto& [M, N, K] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {1, 1, 0}, {5, 7, 3}, {6, 64, 64}, {13, 65, 17}, {128, 128, 64}, {7, 130, 1}, {25, 33, 129},
           {17, 16, 17}, {50, 16, 50}, {50, 8, 16}, {37, 32, 9}, {25, 48, 5}, {30, 24, 7}, {13, 40, 3}, {14, 79, 16},
           // a last block of 4 vectors, partial (49..63 columns) and full, after none or one wide block
           {50, 50, 16}, {9, 63, 5}, {7, 49, 2}, {11, 127, 3}})
    for (bool at : {false, true})
      for (bool acc : {false, true}) check(M, N, K, at, acc);
  // The operands are rounded, not truncated: 1 + 2^-8 + 2^-9 rounds up to 1 + 2^-7 (truncation
  // gives 1), so the product with 1 must be 1 + 2^-7.
  const float x = 1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -9), one = 1.0f;
  float y = 0;
  sg::kernels::tile_gemm_bf16(1, 1, 1, 1.f, &x, 1, 1, &one, 1, false, &y, 1);
  CHECK(y == 1.0f + std::ldexp(1.0f, -7));
}

TEST_CASE("tile_gemm matches a triple loop: odd sizes, strided and transposed A, accumulate") {
  sg::Generator gen(30);
  auto check = [&]<typename T>(int64_t M, int64_t N, int64_t K, bool a_transposed, bool accumulate) {
    CAPTURE(M);
    CAPTURE(N);
    CAPTURE(K);
    CAPTURE(a_transposed);
    CAPTURE(accumulate);
    const int64_t lda = (a_transposed ? M : K) + 3, ldb = N + 5, ldc = N + 1;
    std::vector<T> a(static_cast<size_t>((a_transposed ? K : M) * lda)), b(static_cast<size_t>(K * ldb)),
        c(static_cast<size_t>(M * ldc));
    for (auto* v : {&a, &b, &c})
      for (T& x : *v) x = static_cast<T>(gen.uniform() * 2 - 1);
    std::vector<T> want = c;
    const T alpha = T(0.75);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T a_rk = a_transposed ? a[k * lda + r] : a[r * lda + k];
          s += static_cast<double>(a_rk) * static_cast<double>(b[k * ldb + j]);
        }
        want[r * ldc + j] = static_cast<T>(alpha * s + (accumulate ? static_cast<double>(c[r * ldc + j]) : 0.0));
      }
    sg::kernels::tile_gemm<T>(M, N, K, alpha, a.data(), a_transposed ? 1 : lda, a_transposed ? lda : 1, b.data(), ldb,
                              accumulate, c.data(), ldc);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    for (int64_t r = 0; r < M; ++r)
      for (int64_t j = 0; j < ldc; ++j) {
        const size_t i = static_cast<size_t>(r * ldc + j);
        if (j >= N) {  // the padding between rows is never written
          REQUIRE(c[i] == want[i]);
          continue;
        }
        REQUIRE(std::abs(static_cast<double>(c[i]) - static_cast<double>(want[i])) <= tol * (1.0 + std::sqrt(K)));
      }
  };
  for (const auto& [M, N, K] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {5, 7, 3}, {6, 64, 64}, {13, 65, 17}, {128, 128, 64}, {7, 130, 1}, {25, 33, 129},
           // every narrow last block: 1, 2, 3 vectors, full and partial, for both dtypes
           {50, 16, 50}, {50, 8, 16}, {37, 32, 9}, {25, 48, 5}, {30, 24, 7}, {13, 40, 3}, {14, 79, 16}})
    for (bool at : {false, true})
      for (bool acc : {false, true}) {
        check.template operator()<float>(M, N, K, at, acc);
        check.template operator()<double>(M, N, K, at, acc);
      }
}

TEST_CASE("a NaN in q, k or v makes the outputs it reaches NaN, never a finite answer") {
  sg::Generator gen(31);
  for (const sg::Dtype dtype : {sg::kFloat32, sg::kFloat64}) {
    for (int which = 0; which < 3; ++which) {
      CAPTURE(dtype);
      CAPTURE(which);
      Tensor qkv[3] = {sg::randn({1, 2, 140, 16}, gen, dtype), sg::randn({1, 2, 150, 16}, gen, dtype),
                       sg::randn({1, 2, 150, 16}, gen, dtype)};
      qkv[which].set<double>({0, 1, 3, 5}, std::nan(""));
      for (bool naive : {false, true}) {
        CAPTURE(naive);
        const Tensor out = naive ? sg::scaled_dot_product_attention_naive(qkv[0], qkv[1], qkv[2])
                                 : sg::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
        // A NaN in query row 3 poisons output row 3; in key row 3, every row of head 1 (every
        // score row holds it); in value entry (3, 5), column 5 of every row of head 1.
        const Tensor head = sg::select(sg::select(out, 0, 0), 0, 1);  // (Nq, Dv)
        const Tensor poisoned = which == 0 ? sg::select(head, 0, 3) : which == 1 ? head : sg::select(head, 1, 5);
        for (double x : poisoned.to_vector<double>()) CHECK(std::isnan(x));
        const Tensor other_head = sg::select(sg::select(out, 0, 0), 0, 0);
        for (double x : other_head.to_vector<double>()) REQUIRE(std::isfinite(x));
      }
    }
  }
}

TEST_CASE("masks are read through any strides: broadcast along keys, transposed, every second column") {
  sg::Generator gen(32);
  const int64_t B = 2, H = 2, Nq = 150, Nk = 140, D = 8;
  const Tensor q = sg::randn({B, H, Nq, D}, gen), k = sg::randn({B, H, Nk, D}, gen), v = sg::randn({B, H, Nk, D}, gen);
  // A per-query additive bias (Nq, 1): stride 0 along the keys.
  const Tensor row_bias = sg::randn({Nq, 1}, gen);
  // A bool mask stored transposed: a (Nq, Nk) view of an (Nk, Nq) buffer (stride Nq along keys).
  const Tensor keep_t = sg::ge(sg::rand({Nk, Nq}, gen), sg::scalar_tensor(0.3)).transpose(0, 1);
  // An additive mask taken from every second column of a wider one (stride 2 along keys).
  const Tensor wide = sg::randn({H, 1, 2 * Nk}, gen);
  const Tensor every_second = sg::slice(wide, 2, 0, 2 * Nk, 2);  // (H, 1, Nk)
  for (const Tensor& mask : {row_bias, keep_t, every_second}) {
    const std::string layout = fmt::format("shape {} strides {}", mask.shape(), mask.strides());
    CAPTURE(layout);
    sg::SdpaOptions strided, packed;
    strided.attn_mask = mask;
    packed.attn_mask = mask.contiguous();
    const Tensor want = sg::scaled_dot_product_attention_naive(q, k, v, packed);
    check_relative(sg::scaled_dot_product_attention(q, k, v, strided), want, "out");
    check_close(sg::scaled_dot_product_attention(q, k, v, strided), sg::scaled_dot_product_attention(q, k, v, packed),
                0.0, 0.0);
  }
}
