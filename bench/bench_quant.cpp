// int8 inference (quant/) against float32: the integer kernels one by one, then whole
// quantized models over the 10,000 test images, with this machine's int8 GEMM limit
// (oneDNN's s8 rate at 2048^3, through sg::gemm_int8) and float32 one (sgemm) measured in
// the same run.
//
//   build/bench/bench_quant [threads=2] [--mlp CKPT] [--vit CKPT]
//
// Ops (median of 9 after a warm-up; each row int8 vs float32 on the same values):
//   GEMM          (256, 784) x (784, 512): the MLP's first layer, int8 x int8 -> int32 vs sgemm
//   softmax       4096 x 4096 int32 scores -> uint8 (softmax_u8, I-BERT's i-exp) vs
//                 sg::softmax on the same values in float32; and the table variant on int8
//                 scores (softmax_u8_lut); with each one's largest deviation, in 1/256 LSBs,
//                 from the float64 softmax rounded to 1/256
//   GELU          4M int32 -> int8 (gelu_s8) vs sg::gelu float32
//   LayerNorm     (16384, 64) int32 -> int8 (layer_norm_s8) vs sg::layer_norm float32
//   attention     (256, 4, 17, 16): int8_attention (Q K^T, softmax, P V, requantize) vs the
//                 fused float32 scaled_dot_product_attention
// Models (when a checkpoint is given: mnist_mlp / mnist_transformer --save): accuracy and
// time of one pass over the test set (trainer::score) at batch 1 and 256, float32 vs int8
// (statically quantized, integer from input to logits; and per-token at 256), and their
// parameter bytes. Beside
// them PyTorch on the same checkpoint in the same run (bench/torch_peer.py, spec `infer`,
// asked right after softgrad's two passes of the row): the same weights in float32, and
// torch.quantization.quantize_dynamic(model, {nn.Linear}, qint8), PyTorch 1.13's int8
// inference, where only the Linear GEMMs run int8 (activations quantized on the fly) and
// attention, softmax, LayerNorm and GELU stay float32. "vs torch int8" = torch int8 s /
// softgrad int8 s (above 1: softgrad's int8 model is faster). With the same weights and
// the same normalized images torch's float32 accuracy must equal softgrad's: a line under
// the table says whether it does (within 0.02 points) on every row.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "examples/models.h"
#include "examples/trainer.h"
#include "quant/quantize.h"
#include "quant/stage.h"
#include "softgrad.h"

namespace {

namespace q = sg::quant;

double ms_of(const std::function<void()>& fn) { return sgbench::median_ms(fn, 9, 1); }

// GOP/s of int8 GEMM at n^3 through gemm_int8.
double int8_gemm_rate(int64_t n) {
  std::vector<int8_t> a(n * n, 3), b(n * n, -5);
  std::vector<int32_t> c(n * n);
  sg::Int8Gemm g;
  g.M = g.N = g.K = n;
  g.a = a.data();
  g.lda = n;
  g.b = b.data();
  g.ldb = n;
  g.c = c.data();
  g.ldc = n;
  return 2.0 * n * n * n / ms_of([&] { sg::gemm_int8(g); }) / 1e6;
}

struct OpRow {
  std::string op, shape;
  double int8_ms, f32_ms;
  std::string note;
};

std::vector<OpRow> op_rows() {
  sg::Generator gen(1);
  std::vector<OpRow> rows;
  {  // GEMM
    const int64_t M = 256, K = 784, N = 512;
    std::vector<int8_t> a(M * K), w(N * K);
    for (auto& v : a) v = static_cast<int8_t>(gen.uniform() * 254 - 127);
    for (auto& v : w) v = static_cast<int8_t>(gen.uniform() * 254 - 127);
    std::vector<int32_t> c(M * N);
    sg::Int8Gemm g{.M = M, .N = N, .K = K, .a = a.data(), .lda = K, .b = w.data(), .trans_b = true, .ldb = K,
                   .c = c.data(), .ldc = N};
    const sg::Tensor x = sg::randn({M, K}, gen), wf = sg::randn({N, K}, gen);
    rows.push_back({"GEMM x W^T", "(256, 784) x (784, 512)", ms_of([&] { sg::gemm_int8(g); }),
                    ms_of([&] { sg::matmul(x, wf.t()); }), ""});
  }
  {  // softmax, i-exp and table
    const int64_t R = 4096, n = 4096;
    std::vector<int32_t> s(R * n);
    std::vector<int8_t> s8(R * n);
    for (auto& v : s) v = static_cast<int32_t>(gen.uniform() * 2e6 - 1e6);
    const double scale = 1e-5;  // scores within +-10
    for (size_t i = 0; i < s.size(); ++i) s8[i] = static_cast<int8_t>(std::lround(s[i] / 1e6 * 127));
    std::vector<float> f(s.begin(), s.end());
    for (auto& v : f) v = static_cast<float>(v * scale);
    const sg::Tensor x = sg::from_vector<float>(f, {R, n});
    std::vector<uint8_t> out(R * n), ref(64 * n), out8(R * n);
    const q::ExpParams p = q::make_exp_params(scale);
    const q::ExpTable t = q::make_exp_table(10.0 / 127.0);
    const double i_ms = ms_of([&] { q::softmax_u8(s.data(), R, n, n, p, out.data(), n); });
    const double lut_ms = ms_of([&] { q::softmax_u8_lut(s8.data(), R, n, n, t, out8.data(), n); });
    const double f_ms = ms_of([&] { sg::softmax(x, -1); });
    // deviation from the float64 reference (first 64 rows)
    q::softmax_u8_reference(s.data(), 64, n, n, scale, ref.data(), n);
    int worst = 0, worst8 = 0;
    for (int64_t i = 0; i < 64 * n; ++i) worst = std::max(worst, std::abs(int(out[i]) - int(ref[i])));
    std::vector<int32_t> s8wide(s8.begin(), s8.begin() + 64 * n);
    q::softmax_u8_reference(s8wide.data(), 64, n, n, 10.0 / 127.0, ref.data(), n);
    for (int64_t i = 0; i < 64 * n; ++i) worst8 = std::max(worst8, std::abs(int(out8[i]) - int(ref[i])));
    rows.push_back({"softmax (i-exp)", "4096 x 4096", i_ms, f_ms, fmt::format("max {} LSB off", worst)});
    rows.push_back({"softmax (256-entry table, int8 scores)", "4096 x 4096", lut_ms, f_ms,
                    fmt::format("max {} LSB off its own scores' softmax", worst8)});
  }
  {  // GELU
    const int64_t n = int64_t{1} << 22;
    std::vector<int32_t> x(n);
    for (auto& v : x) v = static_cast<int32_t>(gen.uniform() * 65536 - 32768);
    std::vector<int8_t> y(n);
    const q::GeluParams p = q::make_gelu_params(8.0 / 32768, 8.0 / 127);
    const sg::Tensor xf = sg::randn({n}, gen);
    rows.push_back({"GELU", "4M", ms_of([&] { q::gelu_s8(x.data(), n, p, y.data()); }),
                    ms_of([&] { sg::gelu(xf); }), ""});
  }
  {  // LayerNorm
    const int64_t R = 16384, D = 64;
    std::vector<int32_t> x(R * D), gamma(D, 2048), beta(D, 0);
    for (auto& v : x) v = static_cast<int32_t>(gen.uniform() * 2e6 - 1e6);
    std::vector<int8_t> y(R * D);
    q::LayerNormParams p{.n = D, .gamma = gamma.data(), .beta = beta.data(),
                         .to_output = q::to_fixed_point(std::ldexp(1.0 / 2048, -q::kNormBits) / (4.0 / 127))};
    const sg::Tensor xf = sg::randn({R, D}, gen), w = sg::ones({D}), b = sg::zeros({D});
    rows.push_back({"LayerNorm", "(16384, 64)", ms_of([&] { q::layer_norm_s8(x.data(), R, D, p, y.data(), D); }),
                    ms_of([&] { sg::layer_norm(xf, {D}, w, b); }), ""});
  }
  {  // attention
    const int64_t B = 256, T = 17, H = 4, hd = 16, D = H * hd;
    q::IntTensor qkv;
    qkv.type = q::IntType::kS8;
    qkv.shape = {B, T, 3 * D};
    for (int64_t i = 0; i < B * T * 3 * D; ++i) qkv.s8.push_back(static_cast<int8_t>(gen.uniform() * 254 - 127));
    const q::ExpParams e = q::make_exp_params(0.02 * 0.02 / 4);
    const sg::Tensor qf = sg::randn({B, H, T, hd}, gen), kf = sg::randn({B, H, T, hd}, gen),
                     vf = sg::randn({B, H, T, hd}, gen);
    rows.push_back({"attention", "(256, 4, 17, 16)",
                    ms_of([&] { q::int8_attention(qkv, H, e, q::to_fixed_point(0.5), 0.05); }),
                    ms_of([&] { sg::scaled_dot_product_attention(qf, kf, vf); }), ""});
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  std::string mlp_ckpt, vit_ckpt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mlp" && i + 1 < argc) mlp_ckpt = argv[++i];
    else if (a == "--vit" && i + 1 < argc) vit_ckpt = argv[++i];
    else threads = std::atoi(argv[i]);
  }
  sg::set_num_threads(threads);
  sgbench::TorchPeer peer(threads);  // started now: torch's import stays out of the timings
  sgbench::GemmProbe sgemm;
  double sgemm_rate = 0;
  for (int r = 0; r < 3; ++r) sgemm_rate = std::max(sgemm_rate, sgemm.run());
  const double s8_rate = int8_gemm_rate(2048);
  const sg::OnednnInfo& info = sg::onednn_info();
  fmt::print("int8 inference vs float32, {} threads. oneDNN {} on {}: int8 matmul {} (native: {}).\n", threads,
             info.version, info.isa, info.int8_impl, info.int8_native ? "yes" : "no");
  fmt::print("limits: int8 GEMM 2048^3 {:.0f} GOP/s (gemm_int8), sgemm 2048^3 {:.0f} GFLOP/s (OpenBLAS)\n", s8_rate,
             sgemm_rate);
  peer.print_about();

  sgbench::Table ops({{"op", true}, {"shape", true}, {"int8 ms"}, {"f32 ms"}, {"f32 / int8"}, {"note", true}});
  for (const OpRow& r : op_rows())
    ops.add_row({r.op, r.shape, sgbench::fmt_ms(r.int8_ms), sgbench::fmt_ms(r.f32_ms),
                 fmt::format("{:.2f}x", r.f32_ms / r.int8_ms), r.note});
  ops.print();

  // Whole models over the test set, each row followed by PyTorch's on the same checkpoint.
  const bool with_torch = peer.available();  // the torch columns, even if the peer fails on a row
  std::vector<sgbench::Column> columns = {{"model", true}, {"batch"},  {"fp32 acc"}, {"int8 acc"}, {"fp32 s"},
                                          {"int8 s"},      {"speedup"}, {"fp32 KB"}, {"int8 KB"}};
  if (with_torch)
    for (const char* header : {"torch fp32 s", "torch int8 acc", "torch int8 s", "vs torch int8"})
      columns.push_back({header});
  sgbench::Table models_table(columns);
  std::vector<std::string> accuracy_mismatches;  // rows where torch's float32 accuracy differs
  int torch_rows = 0;
  for (const auto& [kind, path] : {std::pair{std::string("mlp"), mlp_ckpt}, std::pair{std::string("vit"), vit_ckpt}}) {
    if (path.empty()) continue;
    const models::CheckpointModel loaded = models::load_checkpoint_model(path, kind);
    const std::shared_ptr<sg::nn::Module>& model = loaded.model;
    const auto& meta = loaded.metadata;
    trainer::Flags flags;
    flags.dataset = meta.count("dataset") ? meta.at("dataset") : "mnist";
    trainer::Data data = trainer::load_data(flags, kind == "mlp");
    std::vector<sg::Tensor> calibration;
    for (const sg::data::Batch& b : data.train) {
      if (calibration.size() == 8) break;
      calibration.push_back(b.x);
    }
    const q::QuantizedModel qm = q::quantize(*model, calibration);
    int64_t float_bytes = 0;
    for (const auto& [name, t] : sg::nn::state_dict(*model)) float_bytes += t.nbytes();
    // The peer reads the same checkpoint and the same IDX files (load_data found them here).
    const std::string ckpt_path = std::filesystem::absolute(path).string();
    const std::string data_dir =
        std::filesystem::absolute(sg::data::resolve_dataset_dir(data.kind, std::nullopt, /*allow_download=*/false))
            .string();
    SG_CHECK((ckpt_path + data_dir).find_first_of(" \t\n") == std::string::npos,
             "bench_quant: '{}' or '{}' holds whitespace, which torch_peer.py's specs cannot carry", ckpt_path,
             data_dir);
    auto float_logits = [&](const sg::Tensor& x) { return model->forward(x); };
    // model, batch, accuracies, seconds, speedup, parameter KB
    auto softgrad_cells = [&](const std::string& name, int64_t batch, const trainer::Score& fp32,
                              const trainer::Score& int8, const q::QuantizedModel& quantized) {
      return std::vector<std::string>{name,
                                      std::to_string(batch),
                                      fmt::format("{:.2f}%", fp32.accuracy),
                                      fmt::format("{:.2f}%", int8.accuracy),
                                      fmt::format("{:.3f}", fp32.seconds),
                                      fmt::format("{:.3f}", int8.seconds),
                                      fmt::format("{:.2f}x", fp32.seconds / int8.seconds),
                                      fmt::format("{:.1f}", float_bytes / 1024.0),
                                      fmt::format("{:.1f}", quantized.parameter_bytes() / 1024.0)};
    };
    auto int8_logits = [&](const sg::Tensor& x) { return qm.forward(x); };
    for (const int64_t batch : {int64_t{1}, int64_t{256}}) {
      const trainer::Score fp32 = trainer::score(data.test, batch, float_logits);
      const trainer::Score int8 = trainer::score(data.test, batch, int8_logits);
      const std::string name = fmt::format("{} ({})", kind, flags.dataset);
      std::vector<std::string> cells = softgrad_cells(name, batch, fp32, int8, qm);
      // {fp32 accuracy, fp32 s, int8 accuracy, int8 s}
      const std::optional<std::vector<double>> torch =
          peer.answer(fmt::format("infer {} {} data={} batch={}", kind, ckpt_path, data_dir, batch));
      if (torch && torch->size() == 4) {
        const double torch_fp32_acc = (*torch)[0], torch_fp32_s = (*torch)[1];
        const double torch_int8_acc = (*torch)[2], torch_int8_s = (*torch)[3];
        cells.insert(cells.end(), {fmt::format("{:.3f}", torch_fp32_s), fmt::format("{:.2f}%", torch_int8_acc),
                                   fmt::format("{:.3f}", torch_int8_s),
                                   fmt::format("{:.2f}x", torch_int8_s / int8.seconds)});
        ++torch_rows;
        if (std::abs(torch_fp32_acc - fp32.accuracy) > 0.02)
          accuracy_mismatches.push_back(fmt::format("{} batch {}: torch {:.2f}%, softgrad {:.2f}%", name, batch,
                                                    torch_fp32_acc, fp32.accuracy));
      } else if (with_torch) {
        cells.insert(cells.end(), {"-", "-", "-", "-"});
      }
      models_table.add_row(cells);
    }
    // The per-token variant (QuantizeOptions::per_token) at batch 256, without the peer.
    const q::QuantizedModel per_token = q::quantize(*model, calibration, {.per_token = true});
    const trainer::Score fp32 = trainer::score(data.test, 256, float_logits);
    const trainer::Score int8 = trainer::score(data.test, 256, [&](const sg::Tensor& x) { return per_token.forward(x); });
    std::vector<std::string> cells =
        softgrad_cells(fmt::format("{} ({}), per-token", kind, flags.dataset), 256, fp32, int8, per_token);
    if (with_torch) cells.insert(cells.end(), {"-", "-", "-", "-"});
    models_table.add_row(cells);
  }
  fmt::print("\nWhole models over the 10,000 test images (8 calibration batches of 128, min/max ranges):\n");
  models_table.print();
  if (with_torch && torch_rows > 0) {
    fmt::print("\nvs torch int8 = torch int8 s / softgrad int8 s (above 1: softgrad is faster); torch int8 is\n"
               "quantize_dynamic: int8 Linear GEMMs only, everything else float32.\n");
    if (accuracy_mismatches.empty())
      fmt::print("torch float32 accuracy equals softgrad's within 0.02 points on all {} rows (same weights).\n",
                 torch_rows);
    else
      fmt::print("WARNING: torch float32 accuracy differs from softgrad's on the same weights (a weight mapping or "
                 "input normalization bug): {}\n",
                 fmt::join(accuracy_mismatches, "; "));
  }
  return 0;
}
