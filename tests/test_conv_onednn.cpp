// conv2d on oneDNN's convolution primitive (ops/conv.h ConvAlgorithm::Onednn; core/onednn.h):
// forward, input gradient, weight and bias gradients against the float64 im2col path, over
// channel counts oneDNN runs its blocked AVX-512 kernels on (multiples of 16), its 1x1 and
// depthwise kernels, strides, dilation, groups, "same" padding with an even kernel (more
// padding at the bottom/right than the top/left) and rows a stride leaves unused; then the
// same under autocast in bfloat16.
//
// Tolerances, derived. Every output element is a sum of n products (forward n = C/G kh kw,
// input gradient n = O/G kh kw at most, weight gradient n = N Ho Wo, bias gradient n = N Ho Wo
// terms of dy); float32 accumulation in any order errs by at most n u S with u = 2^-24 and
// S the same sum over absolute values (|x| and |w|, computed by the float64 path on absolute
// inputs), so each check is |got - ref| <= 2 n u S + 1e-30.
// - float32 on oneDNN vs float64 on the same inputs: that bound.
// - bfloat16 under autocast vs float64 on the bfloat16-rounded inputs: the products of two
//   bfloat16 values are exact in float32, so the same bound.
// - bfloat16 vs float64 on the unrounded inputs (looser): each operand rounds by at most
//   2^-8 relative (bfloat16 keeps 8 significant bits), a product by (1 + 2^-8)^2 - 1 =
//   2^-7 + 2^-16, so (2^-7 + 2^-16 + 2 n u) S.
// - Winograd F(4x4, 3x3) (float32) vs float64: the input, kernel and output transforms add
//   their own rounding, which scales with the transform matrices (entries up to 8 for
//   oneDNN's points 0, +-1, +-2, +-1/2), not with n. Measured on the shapes below and on
//   (4, 64, 14, 14), (8, 32, 28, 28), (2, 256, 14, 14): |error| / S at most 1.2e-6 (20 u);
//   the check allows (2 n + 256) u S, a 12x margin over that. Where this CPU has no
//   Winograd kernels, Winograd falls back to the direct convolution and the direct bound
//   applies (it is the smaller of the two).
#include <cmath>

#include "core/autocast.h"
#include "core/onednn.h"
#include "ops/conv.h"
#include "tests/test_util.h"

using sg::Tensor;

namespace {

struct Case {
  const char* name;
  sg::Shape x, w;
  sg::Conv2dOptions options;
  bool bias = true;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"16 -> 32, 3x3, pad 1 (blocked)", {2, 16, 9, 7}, {32, 16, 3, 3}, {.padding = 1}},
      {"3 -> 16, 5x5, stride 2, pad 2", {3, 3, 11, 10}, {16, 3, 5, 5}, {.stride = 2, .padding = 2}},
      {"1 -> 8, 3x3 (an MNIST stem)", {4, 1, 12, 12}, {8, 1, 3, 3}, {.padding = 1}},
      {"32 -> 16, 1x1, stride 2", {2, 32, 9, 9}, {16, 32, 1, 1}, {.stride = 2}, false},
      {"depthwise 16", {2, 16, 8, 9}, {16, 1, 3, 3}, {.padding = 1, .groups = 16}},
      {"groups 2, 32 -> 32", {2, 32, 6, 6}, {32, 16, 3, 3}, {.padding = 1, .groups = 2}},
      {"dilation 2", {2, 16, 11, 11}, {16, 16, 3, 3}, {.padding = 2, .dilation = 2}},
      {"same, even kernel", {2, 8, 7, 6}, {16, 8, 4, 2}, {.padding = sg::Padding2d::same()}},
      {"stride 2 leaves the last row and column unused", {2, 16, 8, 8}, {16, 16, 3, 3}, {.stride = 2}},
      {"odd: 3 -> 5, (2, 3) kernel, stride (2, 1), pad (0, 1)", {2, 3, 7, 5}, {5, 3, 2, 3},
       {.stride = {2, 1}, .padding = {0, 1}}},
  };
  return all;
}

struct Result {
  Tensor y, dx, dw, db;  // float64
};

// y = conv2d(x, w, b) and the gradients of sum(y * dy), computed in x's dtype.
Result run(const Case& c, const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, const Tensor& dy) {
  const Tensor x = x_in.detach().requires_grad_(), w = w_in.detach().requires_grad_();
  const Tensor b = c.bias ? b_in.detach().requires_grad_() : Tensor();
  const Tensor y = sg::conv2d(x, w, b, c.options);
  y.backward(dy.to(y.dtype()));
  auto f64 = [](const Tensor& t) { return t.defined() ? t.to(sg::kFloat64) : Tensor(); };
  return {f64(y), f64(x.grad()), f64(w.grad()), c.bias ? f64(b.grad()) : Tensor()};
}

// The float64 path's result on these inputs, and on their absolute values (the bound's S).
std::pair<Result, Result> reference(const Case& c, const Tensor& x, const Tensor& w, const Tensor& b,
                                    const Tensor& dy) {
  sg::set_conv_algorithm(sg::ConvAlgorithm::Auto);  // float64 always runs im2col + GEMM
  auto f64 = [](const Tensor& t) { return t.to(sg::kFloat64); };
  return {run(c, f64(x), f64(w), f64(b), f64(dy)),
          run(c, sg::abs(f64(x)), sg::abs(f64(w)), sg::abs(f64(b)), sg::abs(f64(dy)))};
}

// |got - ref| <= (rel + 2 n u) S elementwise.
void check_close(const char* what, const Tensor& got, const Tensor& ref, const Tensor& abs_sum, int64_t n,
                 double rel) {
  const std::string quantity = what;
  CAPTURE(quantity);
  REQUIRE(got.shape() == ref.shape());
  const double u = std::ldexp(1.0, -24);
  const Tensor excess = sg::abs(got - ref) - (rel + 2.0 * static_cast<double>(n) * u) * abs_sum - 1e-30;
  CHECK(sg::max(excess).item<double>() <= 0.0);
}

void check_all(const Case& c, const Result& got, const Result& ref, const Result& abs_ref, double rel) {
  const int64_t G = c.options.groups, N = c.x[0];
  const int64_t L = ref.y.size(2) * ref.y.size(3), kk = c.w[2] * c.w[3];
  check_close("y", got.y, ref.y, abs_ref.y, c.w[1] * kk, rel);
  check_close("dx", got.dx, ref.dx, abs_ref.dx, c.w[0] / G * kk, rel);
  check_close("dw", got.dw, ref.dw, abs_ref.dw, N * L, rel);
  if (c.bias) check_close("db", got.db, ref.db, abs_ref.db, N * L, rel);
}

struct AlgorithmGuard {
  explicit AlgorithmGuard(sg::ConvAlgorithm a) { sg::set_conv_algorithm(a); }
  ~AlgorithmGuard() { sg::set_conv_algorithm(sg::ConvAlgorithm::Auto); }
};

}  // namespace

TEST_CASE("conv2d on oneDNN (float32): forward and all three gradients against float64, within the derived bound") {
  sg::Generator gen(11);
  for (const Case& c : cases()) {
    const std::string name = c.name;
    CAPTURE(name);
    const Tensor x = sg::randn(c.x, gen), w = sg::randn(c.w, gen), b = sg::randn({c.w[0]}, gen);
    const sg::Shape y_shape = sg::conv2d(x, w, {}, c.options).shape();
    const Tensor dy = sg::randn(y_shape, gen);
    const auto [ref, abs_ref] = reference(c, x, w, b, dy);
    AlgorithmGuard onednn(sg::ConvAlgorithm::Onednn);
    CHECK(sg::conv_kernel(x, w, c.options) == "onednn");
    check_all(c, run(c, x, w, b, dy), ref, abs_ref, 0.0);
    // Only the input needs a gradient; only the weight does.
    const Tensor xg = x.detach().requires_grad_();
    sg::conv2d(xg, w, b, c.options).backward(dy);
    check_close("dx alone", xg.grad().to(sg::kFloat64), ref.dx, abs_ref.dx, c.w[0] * c.w[2] * c.w[3], 0.0);
    const Tensor wg = w.detach().requires_grad_();
    sg::conv2d(x, wg, {}, c.options).backward(dy);
    check_close("dw alone", wg.grad().to(sg::kFloat64), ref.dw, abs_ref.dw, y_shape[0] * y_shape[2] * y_shape[3], 0.0);
  }
  // A non-contiguous input and weight (transposed views) give the contiguous result.
  AlgorithmGuard onednn(sg::ConvAlgorithm::Onednn);
  const Tensor x = sg::randn({2, 16, 7, 9}, gen).transpose(2, 3), w = sg::randn({16, 16, 3, 3}, gen).transpose(2, 3);
  CHECK(sg::max(sg::abs(sg::conv2d(x, w, {}, {.padding = 1}) -
                        sg::conv2d(x.contiguous(), w.contiguous(), {}, {.padding = 1})))
            .item<float>() == 0.0f);
  CHECK(!sg::onednn_conv_impls_used().empty());
}

TEST_CASE("conv2d with oneDNN's Winograd kernels (float32): forward and gradients within the stated bound") {
  sg::Generator gen(14);
  const std::vector<Case> winograd_cases = {
      {"16 -> 32, 3x3, pad 1", {2, 16, 9, 7}, {32, 16, 3, 3}, {.padding = 1}},
      {"32 -> 64 at 14x14 (mnist_cnn's second layer)", {4, 32, 14, 14}, {64, 32, 3, 3}, {.padding = 1}},
      {"48 -> 16, no padding, odd sizes", {3, 48, 11, 13}, {16, 48, 3, 3}, {}},
      {"same padding", {2, 16, 6, 10}, {16, 16, 3, 3}, {.padding = sg::Padding2d::same()}, false},
  };
  AlgorithmGuard winograd(sg::ConvAlgorithm::Winograd);
  int used = 0;
  for (const Case& c : winograd_cases) {
    const std::string name = c.name;
    CAPTURE(name);
    const Tensor x = sg::randn(c.x, gen), w = sg::randn(c.w, gen), b = sg::randn({c.w[0]}, gen);
    const std::string kernel = sg::conv_kernel(x, w, c.options);
    CHECK((kernel == "onednn winograd" || kernel == "onednn"));
    used += kernel == "onednn winograd";
    const Tensor dy = sg::randn(sg::conv2d(x, w, {}, c.options).shape(), gen);
    const auto [ref, abs_ref] = reference(c, x, w, b, dy);
    sg::set_conv_algorithm(sg::ConvAlgorithm::Winograd);  // reference() resets it
    check_all(c, run(c, x, w, b, dy), ref, abs_ref, 256.0 * std::ldexp(1.0, -24));
  }
  MESSAGE("Winograd kernels ran for " << used << " of " << winograd_cases.size() << " cases");
  // Not a 3x3 stride-1 convolution: the direct kernel.
  CHECK(sg::conv_kernel(sg::zeros({1, 16, 8, 8}), sg::zeros({16, 16, 3, 3}), {.stride = 2}) == "onednn");
  CHECK(sg::conv_kernel(sg::zeros({1, 16, 8, 8}), sg::zeros({16, 16, 5, 5})) == "onednn");
}

TEST_CASE("conv2d: Auto's rule; float64 never takes oneDNN, and Im2col / Onednn / Auto agree in float32") {
  // The rule (ops/conv.h): im2col below 4 input channels (ungrouped) and for strided 1x1.
  CHECK(sg::conv_kernel(sg::zeros({1, 3, 8, 8}), sg::zeros({16, 3, 3, 3})) == "im2col");
  CHECK(sg::conv_kernel(sg::zeros({1, 16, 8, 8}), sg::zeros({16, 1, 3, 3}), {.groups = 16}) == "onednn");
  CHECK(sg::conv_kernel(sg::zeros({1, 16, 8, 8}), sg::zeros({32, 16, 1, 1}), {.stride = 2}) == "im2col");
  CHECK(sg::conv_kernel(sg::zeros({1, 16, 8, 8}), sg::zeros({32, 16, 1, 1})) == "onednn");
  CHECK(sg::conv_kernel(sg::zeros({1, 8, 8, 8}), sg::zeros({32, 8, 3, 3}), {.padding = 1}) == "onednn");
  CHECK(sg::conv_kernel(sg::zeros({1, 16, 8, 8}, sg::kFloat64), sg::zeros({16, 16, 3, 3}, sg::kFloat64)) == "im2col");
  sg::Generator gen(12);
  const Tensor x = sg::randn({2, 16, 9, 9}, gen), w = sg::randn({16, 16, 3, 3}, gen);
  Tensor y[3];
  const sg::ConvAlgorithm algorithms[] = {sg::ConvAlgorithm::Im2col, sg::ConvAlgorithm::Onednn,
                                          sg::ConvAlgorithm::Auto};
  for (int i = 0; i < 3; ++i) {
    AlgorithmGuard guard(algorithms[i]);
    y[i] = sg::conv2d(x, w, {}, {.padding = 1});
  }
  CHECK(sg::max(sg::abs(y[0] - y[1])).item<float>() <= 1e-4f);
  CHECK(sg::max(sg::abs(y[0] - y[2])).item<float>() <= 1e-4f);
  // float64 with oneDNN forced still runs im2col: exactly the naive result's precision.
  AlgorithmGuard onednn(sg::ConvAlgorithm::Onednn);
  const Tensor x64 = x.to(sg::kFloat64), w64 = w.to(sg::kFloat64);
  CHECK(sg::max(sg::abs(sg::conv2d(x64, w64, {}, {.padding = 1}) - sg::conv2d_naive(x64, w64, {}, {.padding = 1})))
            .item<double>() <= 1e-12);
}

TEST_CASE("conv2d under autocast: bfloat16 on oneDNN against the rounded-input reference (tight) and float32 (loose)") {
  sg::Generator gen(13);
  for (const Case& c : cases()) {
    const std::string name = c.name;
    CAPTURE(name);
    const Tensor x = sg::randn(c.x, gen), w = sg::randn(c.w, gen), b = sg::randn({c.w[0]}, gen);
    const Tensor dy = sg::randn(sg::conv2d(x, w, {}, c.options).shape(), gen);
    Result got;
    {
      sg::AutocastGuard autocast(sg::kBFloat16);
      got = run(c, x, w, b, dy);
    }
    if (!sg::autocast_bf16_active()) {  // no native bfloat16 here: the float32 path, exactly
      const Result f32 = run(c, x, w, b, dy);
      CHECK(sg::max(sg::abs(got.y - f32.y)).item<double>() == 0.0);
      continue;
    }
    // The gradient of the bias never passes through a bfloat16 product, but dy is rounded
    // for the two backward products: the bias sees the float32 dy.
    const auto round = [](const Tensor& t) { return sg::autocast::round_to_bf16(t); };
    const auto [ref, abs_ref] = reference(c, round(x), round(w), b, round(dy));
    const Result got_no_db{got.y, got.dx, got.dw, Tensor()};
    Case no_bias = c;
    no_bias.bias = false;
    check_all(no_bias, got_no_db, ref, abs_ref, 0.0);
    const auto [ref32, abs32] = reference(c, x, w, b, dy);
    check_all(no_bias, got_no_db, ref32, abs32, std::ldexp(1.0, -7) + std::ldexp(1.0, -16));
    if (c.bias) {  // db = sum of the rounded dy (oneDNN's bias gradient reads the same bfloat16 dy)
      const Tensor db_ref = sg::sum(round(dy).to(sg::kFloat64), {0, 2, 3});
      const Tensor db_abs = sg::sum(sg::abs(round(dy).to(sg::kFloat64)), {0, 2, 3});
      check_close("db", got.db, db_ref, db_abs, dy.size(0) * dy.size(2) * dy.size(3), 0.0);
    }
  }
}
