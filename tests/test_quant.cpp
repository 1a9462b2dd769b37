// Post-training int8 quantization (quant/quantize.h): a quantized Linear and the integer
// attention against the float ops within bounds derived from the scales, whole models (MLP
// and ViT) against their float forward, integer-only execution, save/load, threads, errors.
#include <cfenv>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <vector>

#include "examples/models.h"
#include "quant/quantize.h"
#include "quant/stage.h"
#include "test_util.h"

using sg::Tensor;
namespace fs = std::filesystem;
namespace q = sg::quant;

namespace {

std::vector<Tensor> batches_of(const Tensor& x, int64_t batch) {
  std::vector<Tensor> out;
  for (int64_t i = 0; i < x.size(0); i += batch) out.push_back(sg::narrow(x, 0, i, std::min(batch, x.size(0) - i)));
  return out;
}

double max_abs(const Tensor& t) { return sg::max(sg::abs(t.to(sg::kFloat64))).item<double>(); }

std::string scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "softgrad_test_quant";
  fs::create_directories(dir);
  return (dir / name).string();
}

}  // namespace

// One Linear, quantized: with input scale s_x (max|x| / 127) and weight scales s_c
// (max|W_c| / 127), rounding moves each x_k by at most s_x / 2 and each W_ck by s_c / 2, and
// the bias by s_x s_c / 2, so the int32 logits, dequantized, are within
//   sum_k (|x_k| s_c / 2 + |W_ck| s_x / 2 + s_x s_c / 4) + s_x s_c / 2
// of the float product (the products and sums are exact integers).
TEST_CASE("a quantized Linear is within the bound its scales give, for every output") {
  sg::Generator gen(1);
  sg::nn::Sequential net({std::make_shared<sg::nn::Linear>(37, 11, gen)});
  const auto lin = net.at<sg::nn::Linear>(0);
  const Tensor x = sg::randn({64, 37}, gen) * 3.0;
  const q::QuantizedModel qm = q::quantize(net, {x});
  const Tensor y = qm.forward(x);
  Tensor want;
  {
    sg::NoGradGuard no_grad;
    want = net.forward(x);
  }
  const double sx = max_abs(x) / 127.0;
  const std::vector<double> xv = x.to(sg::kFloat64).to_vector<double>(), wv = lin->weight.to(sg::kFloat64).to_vector<double>();
  const std::vector<double> yv = y.to(sg::kFloat64).to_vector<double>(), rv = want.to(sg::kFloat64).to_vector<double>();
  double worst = 0;
  for (int64_t c = 0; c < 11; ++c) {
    double wmax = 0;
    for (int64_t k = 0; k < 37; ++k) wmax = std::max(wmax, std::fabs(wv[c * 37 + k]));
    const double sc = wmax / 127.0;
    for (int64_t r = 0; r < 64; ++r) {
      double bound = sx * sc / 2;
      for (int64_t k = 0; k < 37; ++k)
        bound += std::fabs(xv[r * 37 + k]) * sc / 2 + std::fabs(wv[c * 37 + k]) * sx / 2 + sx * sc / 4;
      const double err = std::fabs(yv[r * 11 + c] - rv[r * 11 + c]);
      worst = std::max(worst, err / bound);
      REQUIRE(err <= bound * (1 + 1e-6) + 1e-6);
    }
  }
  MESSAGE("quantized Linear: worst error / bound = " << worst);
  CHECK(worst > 0.01);  // the bound is not vacuous
}

// A per-token Linear (QuantizeOptions::per_token): x is formed in int32 at a fine scale f_in
// (error <= f_in / 2), each row r then quantized at s_r = f_in m_r / 127 (m_r its largest
// |value|, error <= s_r / 2); weights per channel at s_c; the output rescaled to f_out in
// integers, bias there too (<= f_out / 2 each). So each output is within
//   sum_k (|x_k| s_c / 2 + |W_ck| e_k + e_k s_c / 2) + f_out,  e_k = (f_in + s_r) / 2,
// of the float product: the bound scales with the row's own magnitude, where one scale for
// the tensor (s = max|x| / 127) would round the small rows to nothing.
TEST_CASE("a per-token Linear: each row at its own scale, within the bound its scales give") {
  sg::Generator gen(7);
  const int64_t R = 40, in = 37, out = 11;
  sg::nn::Linear lin(in, out, gen);
  std::vector<double> xv;
  for (int64_t r = 0; r < R; ++r) {  // row magnitudes from 3 down to 0.01
    const double mag = 3.0 * std::pow(0.01 / 3.0, r / double(R - 1));
    for (int64_t k = 0; k < in; ++k) xv.push_back(mag * (2 * gen.uniform() - 1));
  }
  double xmax = 0;
  for (double v : xv) xmax = std::max(xmax, std::fabs(v));
  const double f_in = xmax / q::kFineSteps, f_out = 1e-5;
  std::vector<int32_t> wide;
  for (double v : xv) wide.push_back(static_cast<int32_t>(std::lround(v / f_in)));
  q::IntTensor x;
  x.type = q::IntType::kS8;
  x.shape = {R, in};
  x.scale = f_in / 127;
  x.s8.resize(wide.size());
  x.row_factor.resize(R);
  q::quantize_rows_s8(wide.data(), R, in, x.s8.data(), x.row_factor.data());
  q::LinearStage::Fields f = q::LinearStage::quantize_weights(lin.weight, lin.bias, x.scale, true);
  f.output = q::LinearOutput::kLogits;
  f.fine_scale = f_out;
  q::LinearStage::bias_at_targets(f, lin.bias);
  const q::LinearStage stage(f);
  const q::IntTensor y = stage.run(x);
  REQUIRE(y.type == q::IntType::kS32);
  const std::vector<double> w = lin.weight.to(sg::kFloat64).to_vector<double>(),
                            b = lin.bias.to(sg::kFloat64).to_vector<double>();
  double worst = 0;
  for (int64_t r = 0; r < R; ++r) {
    const double s_r = f_in * x.row_factor[r] / 127, e = (f_in + s_r) / 2;
    double row_err = 0, row_max = 0;
    for (int64_t c = 0; c < out; ++c) {
      const double s_c = f.weight_scale[c];
      double want = b[c], bound = f_out;
      for (int64_t k = 0; k < in; ++k) {
        want += xv[r * in + k] * w[c * in + k];
        bound += std::fabs(xv[r * in + k]) * s_c / 2 + std::fabs(w[c * in + k]) * e + e * s_c / 2;
      }
      const double got = y.s32[r * out + c] * y.column_scales[c], err = std::fabs(got - want);
      worst = std::max(worst, err / bound);
      REQUIRE(err <= bound * (1 + 1e-6));
      row_err = std::max(row_err, err);
      row_max = std::max(row_max, std::fabs(want - b[c]));  // the product's magnitude, bias aside
    }
    // The smallest rows keep their relative precision (one scale for the tensor would round
    // the 0.01 rows to a few levels of 3 / 127).
    CHECK(row_err <= 0.03 * row_max + 2 * f_out);
  }
  MESSAGE("per-token Linear: worst error / bound = " << worst);
  CHECK(worst > 0.01);
  // A per-tensor input to a per-token stage (and the reverse) is refused.
  x.row_factor.clear();
  CHECK_THROWS_WITH_AS(stage.run(x), doctest::Contains("expected a per-token input, got 0 row factors for 40 rows"),
                       sg::Error);
}

// Integer attention against float attention on the same (dequantized) int8 q, k, v: the
// scores are exact integers, each probability is within 1 LSB (1/256) of round(256 p), i.e.
// within 1.5/256 of p, so each output is within 1.5/256 sum_j |v_j| of the float one before
// its requantization, which adds half its scale.
TEST_CASE("integer attention is within the bound of its softmax's 1 LSB and the output scale") {
  sg::Generator gen(2);
  const int64_t B = 2, T = 17, H = 4, hd = 16, D = H * hd;
  q::IntTensor qkv;
  qkv.type = q::IntType::kS8;
  qkv.shape = {B, T, 3 * D};
  for (int64_t i = 0; i < B * T * 3 * D; ++i)
    qkv.s8.push_back(static_cast<int8_t>(std::lround(gen.uniform() * 254.0 - 127.0)));
  const double sq = 0.02, sk = 0.03, sv = 0.05, out_scale = sv;  // an average of v never leaves v's range
  const q::ExpParams exp = q::make_exp_params(sq * sk / std::sqrt(static_cast<double>(hd)));
  const q::IntTensor y = q::int8_attention(qkv, H, exp, q::to_fixed_point(sv / 256.0 / out_scale), out_scale);
  REQUIRE(y.shape == sg::Shape{B, T, D});
  auto part = [&](int64_t p, double s) {
    std::vector<double> v;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < D; ++c) v.push_back(qkv.s8[(b * T + t) * 3 * D + p * D + c] * s);
    return sg::from_vector<double>(v, {B, T, H, hd}).transpose(1, 2);
  };
  const Tensor qf = part(0, sq), kf = part(1, sk), vf = part(2, sv);
  const Tensor want = sg::scaled_dot_product_attention(qf, kf, vf).transpose(1, 2).reshape({B, T, D});
  const Tensor vsum = sg::sum(sg::abs(vf), {2}, true);  // (B, H, 1, hd): sum_j |v_j|
  const std::vector<double> w = want.to_vector<double>();
  double worst = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < D; ++c) {
        const double bound = 1.5 / 256.0 * vsum.at<double>({b, c / hd, 0, c % hd}) + out_scale / 2;
        const double err = std::fabs(y.s8[(b * T + t) * D + c] * out_scale - w[(b * T + t) * D + c]);
        worst = std::max(worst, err / bound);
        REQUIRE(err <= bound + 1e-12);
      }
  MESSAGE("integer attention: worst error / bound = " << worst);
  CHECK(worst > 0.05);
}

TEST_CASE("a quantized MLP tracks the float one; save and load are bit-exact; 1 and 2 threads agree") {
 for (const bool per_token : {false, true}) {
  CAPTURE(per_token);
  sg::Generator gen(3);
  auto net = std::make_shared<sg::nn::Sequential>(std::initializer_list<std::shared_ptr<sg::nn::Module>>{
      std::make_shared<sg::nn::Linear>(20, 32, gen), std::make_shared<sg::nn::ReLU>(),
      std::make_shared<sg::nn::Dropout>(0.5, gen), std::make_shared<sg::nn::Linear>(32, 16, gen),
      std::make_shared<sg::nn::GELU>(), std::make_shared<sg::nn::Linear>(16, 5, gen)});
  const Tensor x = sg::randn({200, 20}, gen);
  const q::QuantizedModel qm = q::quantize(*net, batches_of(x, 64), {.per_token = per_token});
  CHECK(net->is_training());  // quantize() restores the mode it found
  net->eval();
  Tensor want;
  {
    sg::NoGradGuard no_grad;
    want = net->forward(x);
  }
  const Tensor y = qm.forward(x);
  // Three layers of int8 rounding (each ~1/254 of the range): a few percent of the logits' range.
  CHECK(max_abs(y - want) <= 0.05 * max_abs(want));
  MESSAGE("MLP: max |int8 - float| = " << max_abs(y - want) << " of max |logit| " << max_abs(want));

  const std::string path = scratch("mlp.int8.safetensors");
  qm.save(path);
  const q::QuantizedModel back = q::QuantizedModel::load(path);
  CHECK(back.forward(x).to_vector<float>() == y.to_vector<float>());
  CHECK(back.describe() == qm.describe());
  const sg::SafetensorsFile f = sg::load_safetensors(path);
  CHECK(f.metadata.at("format") == "softgrad-int8/1");
  CHECK(f.dtypes.at("stage.0.weight") == "I8");
  CHECK(f.dtypes.at("stage.0.bias") == "I32");

  const int saved = sg::get_num_threads();
  sg::set_num_threads(1);
  const std::vector<float> one = qm.forward(x).to_vector<float>();
  sg::set_num_threads(2);
  const std::vector<float> two = qm.forward(x).to_vector<float>();
  sg::set_num_threads(saved);
  CHECK(one == two);
  CHECK(one == y.to_vector<float>());
 }
}

TEST_CASE("a quantized ViT tracks the float one, both poolings; save and load are bit-exact") {
  for (const std::string pool : {"mean", "cls"})
   for (const bool per_token : {false, true}) {
    CAPTURE(pool);
    CAPTURE(per_token);
    sg::Generator gen(4);
    sg::nn::VisionTransformer vit({.patch = 7, .dim = 32, .depth = 2, .heads = 4, .pool = pool}, gen);
    vit.eval();
    const Tensor images = sg::rand({96, 28, 28}, gen);
    const q::QuantizedModel qm = q::quantize(vit, batches_of(images, 32), {.per_token = per_token});
    Tensor want;
    {
      sg::NoGradGuard no_grad;
      want = vit.forward(images);
    }
    const Tensor y = qm.forward(images);
    MESSAGE("ViT (" << pool << "): max |int8 - float| = " << max_abs(y - want) << " of max |logit| "
                    << max_abs(want));
    CHECK(max_abs(y - want) <= 0.1 * max_abs(want));
    const std::string path = scratch("vit_" + pool + (per_token ? "_token" : "") + ".int8.safetensors");
    qm.save(path);
    CHECK(q::QuantizedModel::load(path).forward(images).to_vector<float>() == y.to_vector<float>());
  }
}

#if defined(__x86_64__) || defined(__i386__)
// No float arithmetic between the input's quantization and the logits' dequantization: with
// every floating-point exception trapping (SIGFPE), "inexact" included, any float operation
// that rounds aborts the test. One thread, so the trap mask (a per-thread register) covers
// all the work. A test that fails this way crashes with SIGFPE.
TEST_CASE("forward_integer runs with floating-point traps on: no float arithmetic on the hot path") {
  sg::Generator gen(5);
  sg::nn::VisionTransformer vit({.patch = 7, .dim = 32, .depth = 1, .heads = 2}, gen);
  auto mlp = std::make_shared<sg::nn::Sequential>(std::initializer_list<std::shared_ptr<sg::nn::Module>>{
      std::make_shared<sg::nn::Linear>(784, 64, gen), std::make_shared<sg::nn::ReLU>(),
      std::make_shared<sg::nn::Linear>(64, 10, gen)});
  const Tensor images = sg::rand({16, 28, 28}, gen);
  const Tensor flat = images.reshape({16, 784});
  const q::QuantizedModel qv = q::quantize(vit, {images}), qm = q::quantize(*mlp, {flat}),
                          qv_token = q::quantize(vit, {images}, {.per_token = true}),
                          qm_token = q::quantize(*mlp, {flat}, {.per_token = true});
  const int saved = sg::get_num_threads();
  sg::set_num_threads(1);
  for (const auto* model : {&qv, &qm, &qv_token, &qm_token}) {
    const bool is_vit = model == &qv || model == &qv_token;
    const q::IntTensor in = model->quantize_input(is_vit ? images : flat);
    // The first call creates oneDNN's primitives for these shapes (its set-up computes in
    // float, once per shape); the trapped call runs the cached kernels.
    const q::IntTensor untrapped = model->forward_integer(in);
    std::feclearexcept(FE_ALL_EXCEPT);
    feenableexcept(FE_INEXACT | FE_INVALID | FE_OVERFLOW | FE_UNDERFLOW | FE_DIVBYZERO);
    const q::IntTensor logits = model->forward_integer(in);
    fedisableexcept(FE_ALL_EXCEPT);
    CHECK(logits.type == q::IntType::kS32);
    CHECK(logits.s32 == untrapped.s32);
  }
  sg::set_num_threads(saved);
}
#endif

TEST_CASE("quantize and load refuse bad input by name") {
  sg::Generator gen(6);
  auto net = std::make_shared<sg::nn::Sequential>(std::initializer_list<std::shared_ptr<sg::nn::Module>>{
      std::make_shared<sg::nn::Linear>(8, 4, gen), std::make_shared<sg::nn::LayerNorm>(4),
      std::make_shared<sg::nn::Linear>(4, 2, gen)});
  const Tensor x = sg::randn({5, 8}, gen);
  CHECK_THROWS_WITH_AS(q::quantize(*net, {x}), doctest::Contains("Sequential layer 1 is a LayerNorm"), sg::Error);
  CHECK_THROWS_WITH_AS(q::quantize(*net, {}), doctest::Contains("calibration set is empty"), sg::Error);
  sg::nn::Sequential ok({std::make_shared<sg::nn::Linear>(8, 4, gen)});
  CHECK_THROWS_WITH_AS(q::quantize(ok, {x, sg::randn({5, 9}, gen)}),
                       doctest::Contains("calibration batch 1 has shape [5, 9], but batch 0 has [5, 8]"), sg::Error);
  sg::nn::LayerNorm norm(8);
  CHECK_THROWS_WITH_AS(q::quantize(norm, {x}), doctest::Contains("a LayerNorm has no integer pipeline"), sg::Error);
  const q::QuantizedModel qm = q::quantize(ok, {x});
  CHECK_THROWS_WITH_AS(qm.forward(sg::randn({5, 7}, gen)), doctest::Contains("expected a batch of shape (B, 8)"),
                       sg::Error);
  // A file that is not a quantized model, and one with a tampered field.
  const std::string plain = scratch("plain.safetensors");
  sg::save_safetensors(plain, {{"w", sg::randn({2, 2}, gen)}});
  CHECK_THROWS_WITH_AS(q::QuantizedModel::load(plain), doctest::Contains("metadata 'format' is missing"), sg::Error);
  const std::string path = scratch("tampered.safetensors");
  qm.save(path);
  sg::SafetensorsFile f = sg::load_safetensors(path);
  f.metadata["stage.0.in_scale"] = "-1";
  std::map<std::string, std::string> narrow;
  for (const auto& [name, dtype] : f.dtypes)
    if (dtype == "I8" || dtype == "I32") narrow[name] = dtype;
  sg::save_safetensors(path, f.tensors, f.metadata, narrow);
  CHECK_THROWS_WITH_AS(q::QuantizedModel::load(path), doctest::Contains("stage.0.in_scale' = '-1'"), sg::Error);
}

// The path a user takes (mnist_quantize): a float checkpoint whose weights do not fit the
// model its metadata describes is refused with the parameter and both shapes named.
TEST_CASE("a checkpoint of another shape gets a named error before any quantization") {
  sg::Generator gen(8);
  const auto mlp = models::make_mlp({64}, 0.0, gen);  // 784 -> 64 -> 10
  const std::string path = scratch("mlp_64.safetensors");
  sg::save_safetensors(path, sg::nn::state_dict(*mlp), {{"model", "mlp"}, {"model.hidden", "32"}});
  CHECK_THROWS_WITH_AS(models::load_checkpoint_model(path, ""), doctest::Contains("0.weight"), sg::Error);
  sg::save_safetensors(path, sg::nn::state_dict(*mlp), {{"model", "mlp"}, {"model.hidden", "64"}});
  CHECK(models::load_checkpoint_model(path, "").kind == "mlp");
  CHECK_THROWS_WITH_AS(models::load_checkpoint_model(path, "vit"), doctest::Contains("no 'model.patch'"), sg::Error);
}
