// scaled_dot_product_attention against this machine's sgemm throughput, measured in this
// process, and against PyTorch on the same shapes in the same run (bench/torch_peer.py).
//
//   build/bench/bench_attention [threads=2] [--quick]
//
// Rows: float32 (B, H, N, D) = (1, 8, 1024, 64), (1, 8, 4096, 64), (4, 4, 256, 64),
// (1, 8, 2048, 128), causal and not, forward and forward + backward; then forward +
// backward at (1, 8, 16384, 64), causal, to show memory staying O(N) (PyTorch's math path
// would hold 8 GiB of scores there and is not run). --quick skips the N = 4096 and 16384
// rows.
// Then autocast (bfloat16 tile products, ops/tile_gemm_bf16.h) against float32 on the ViT's
// shapes ((128, 4, 16, 16): the trainer's default, 16 tokens of head dim 16; (128, 4, 50,
// 16): patch 4 with a class token) and on (1, 8, 1024, 64), PyTorch under torch.autocast in
// its rows; their limit is oneDNN's bfloat16 GEMM rate at 2048^3 (sg::gemm_bf16). Last, the
// tile products alone, one thread, at the tile shapes those calls run: tile_gemm (float32),
// tile_gemm_bf16 (vdpbf16ps, rounding its float32 operands on each call) and oneDNN's
// bfloat16 matmul on operands already in bfloat16 (sg::gemm_bf16, primitive cached).
//
//   fwd      sg::scaled_dot_product_attention(q, k, v) on inputs that need no grad.
//   fwd+bwd  out = sdpa(q, k, v); out.backward(g) with q, k, v requiring grad and g made
//            before timing; the gradients are dropped untimed after each call.
// PyTorch 1.13 has no F.scaled_dot_product_attention: its side is the math composition
// softmax(q k^T / sqrt(D) [masked]) v (torch_peer.py), under the same OpenBLAS kernels
// (softgrad's start-up exports OPENBLAS_CORETYPE when it corrects OpenBLAS's choice, and the
// peer inherits it; see core/blas.h).
//
// FLOPs: forward 4 B H Nq Nk D (two products), backward 2.5x that (five products), both
// halved when causal. "% sgemm" compares with the median sgemm throughput (2048^3 through
// OpenBLAS on the same threads) of 3 sgemms right before and 3 right after the row's timed
// calls: this VM's clock drifts by up to 1.5x over minutes, and a limit measured once would
// misstate the rows timed in another minute.
// Memory: "tensor MB" is sg::memory_stats' peak during one call minus what was live
// before it (outputs, gradients and workspaces included); "RSS +MB" is how far the process's
// resident set rose above its size before that call (VmHWM after a reset through
// /proc/self/clear_refs, minus VmRSS before): memory the OS actually had to provide,
// per-thread tile buffers included.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ops/tile_gemm.h"
#include "ops/tile_gemm_bf16.h"
#include "softgrad.h"

namespace {

struct Problem {
  int64_t B, H, N, D;
};
constexpr Problem kProblems[] = {{1, 8, 1024, 64}, {1, 8, 4096, 64}, {4, 4, 256, 64}, {1, 8, 2048, 128}};
constexpr Problem kLong = {1, 8, 16384, 64};

// The process's resident set now (VmRSS) and its peak since the last reset (VmHWM), in MB;
// reset() starts a new peak at the current size.
struct Resident {
  static void reset() { std::ofstream("/proc/self/clear_refs") << "5"; }
  static double now_mb() { return field_mb("VmRSS:"); }
  static double peak_mb() { return field_mb("VmHWM:"); }

 private:
  static double field_mb(const std::string& name) {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind(name, 0) == 0) return std::strtod(line.c_str() + name.size(), nullptr) / 1024.0;  // kB
    return 0.0;
  }
};

double attention_flops(const Problem& p, bool causal, bool backward) {
  const double fwd = 4.0 * p.B * p.H * p.N * p.N * p.D;
  return (backward ? 3.5 * fwd : fwd) * (causal ? 0.5 : 1.0);
}

std::string shape_of(const Problem& p) { return fmt::format("({}, {}, {}, {})", p.B, p.H, p.N, p.D); }

constexpr Problem kPrecisionProblems[] = {{128, 4, 16, 16}, {128, 4, 50, 16}, {1, 8, 1024, 64}};

std::string torch_spec(const Problem& p, bool causal, bool backward, bool autocast = false) {
  const std::string s = fmt::format("{}x{}x{}x{}", p.B, p.H, p.N, p.D);
  return fmt::format("{} {} {} {} causal={} autocast={}", backward ? "sdpa_fwdbwd" : "sdpa", s, s, s, causal ? 1 : 0,
                     autocast ? 1 : 0);
}

struct Measured {
  double ms, tensor_mb, rss_mb;
  double sgemm_gflops;  // median of the sgemms run right before and right after the timed calls
};

// Median time of the op, with 3 sgemms right before and 3 right after its timed calls, so
// that the op and its limit are measured in the same minutes (sgemms between the calls
// would evict the op's inputs and slow it); then one more call for memory.
Measured measure(const Problem& p, bool causal, bool backward, int reps, int warmup, sgbench::GemmProbe& sgemm,
                 bool autocast = false) {
  sg::Generator gen(7);
  sg::Tensor q = sg::randn({p.B, p.H, p.N, p.D}, gen), k = sg::randn({p.B, p.H, p.N, p.D}, gen),
             v = sg::randn({p.B, p.H, p.N, p.D}, gen);
  const sg::Tensor g = sg::randn({p.B, p.H, p.N, p.D}, gen);
  if (backward)
    for (sg::Tensor* t : {&q, &k, &v}) t->requires_grad_();
  sg::SdpaOptions o;
  o.is_causal = causal;
  auto call = [&] {
    sg::AutocastGuard guard(sg::kBFloat16, autocast);
    const sg::Tensor out = sg::scaled_dot_product_attention(q, k, v, o);
    if (backward) out.backward(g);
  };
  auto drop_grads = [&] {
    for (sg::Tensor* t : {&q, &k, &v}) t->zero_grad();
  };
  Measured m{};
  std::vector<double> sgemm_rates;
  for (int r = 0; r < 3; ++r) sgemm_rates.push_back(sgemm.run());
  m.ms = sgbench::median_ms(call, reps, warmup, {}, drop_grads);
  for (int r = 0; r < 3; ++r) sgemm_rates.push_back(sgemm.run());
  m.sgemm_gflops = sgbench::median(sgemm_rates);
  sg::empty_cache();
  const int64_t before = sg::memory_stats().current_bytes;
  sg::reset_peak_memory();
  Resident::reset();
  const double rss_before = Resident::now_mb();
  call();
  m.tensor_mb = static_cast<double>(sg::memory_stats().peak_bytes - before) / (1 << 20);
  m.rss_mb = Resident::peak_mb() - rss_before;
  drop_grads();
  return m;
}

// Calls for a median that takes about 3 s (3 to 21), from one untimed estimate.
int reps_for(double estimate_ms) { return static_cast<int>(std::clamp(3000.0 / estimate_ms, 3.0, 21.0)) | 1; }

// The tile products alone: ms per call (median of 15 batches of enough calls for ~20 ms)
// and GFLOP/s of tile_gemm, tile_gemm_bf16 and oneDNN's bfloat16 matmul at (M, N, K).
void tile_products_table(bool bf16_native) {
  struct Shape3 {
    int64_t M, N, K;
    const char* what;
  };
  const Shape3 shapes[] = {{16, 16, 16, "ViT S = Q K^T"},  {16, 16, 16, "ViT O = P V"},
                           {50, 50, 16, "ViT-50 S"},        {50, 16, 50, "ViT-50 O = P V"},
                           {128, 128, 64, "N=1024 S tile"}, {128, 64, 128, "N=1024 O = P V"}};
  sg::Generator gen(3);
  sgbench::Table table({{"tile (M, N, K)", true}, {"product", true}, {"f32 us"}, {"bf16 us"}, {"oneDNN us"},
                        {"f32 GFLOP/s"}, {"bf16 GFLOP/s"}, {"oneDNN GFLOP/s"}});
  auto time_us = [](const std::function<void()>& fn) {
    int calls = 1;
    for (auto t0 = sgbench::Clock::now(); sgbench::ms_since(t0) < 20.0; calls *= 2) {
      t0 = sgbench::Clock::now();
      for (int i = 0; i < calls; ++i) fn();
      if (sgbench::ms_since(t0) >= 20.0) break;
    }
    return 1000.0 * sgbench::median_ms([&] { for (int i = 0; i < calls; ++i) fn(); }, 15) / calls;
  };
  for (const Shape3& t : shapes) {
    const sg::Tensor a = sg::randn({t.M, t.K}, gen), b = sg::randn({t.K, t.N}, gen);
    const sg::Tensor ab = a.to(sg::kBFloat16), bb = b.to(sg::kBFloat16);
    sg::Tensor c = sg::zeros({t.M, t.N});
    const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>();
    float* pc = c.data_ptr<float>();
    const double f32 = time_us([&] { sg::kernels::tile_gemm<float>(t.M, t.N, t.K, 1.f, pa, t.K, 1, pb, t.N, false, pc, t.N); });
    const double bf16 = sg::kernels::tile_gemm_bf16_supported()
                            ? time_us([&] {
                                sg::kernels::tile_gemm_bf16(t.M, t.N, t.K, 1.f, pa, t.K, 1, pb, t.N, false, pc, t.N);
                              })
                            : NAN;
    const double dnnl = bf16_native ? time_us([&] {
      sg::gemm_bf16(false, false, t.M, t.N, t.K, ab.data_ptr<sg::bfloat16>(), t.K, bb.data_ptr<sg::bfloat16>(), t.N,
                    0.0f, pc, t.N);
    })
                                    : NAN;
    const double flop = 2.0 * t.M * t.N * t.K;
    auto us = [](double x) { return std::isnan(x) ? std::string("-") : fmt::format("{:.2f}", x); };
    auto rate = [&](double x) { return std::isnan(x) ? std::string("-") : fmt::format("{:.1f}", flop / x / 1e3); };
    table.add_row({fmt::format("({}, {}, {})", t.M, t.N, t.K), t.what, us(f32), us(bf16), us(dnnl), rate(f32), rate(bf16),
               rate(dnnl)});
  }
  fmt::print("\nTile products alone, 1 thread (the attention kernels call them from inside their own parallel loop):\n");
  table.print();
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else threads = std::atoi(argv[i]);
  }
  sg::set_num_threads(threads);
  sgbench::SgemmProbe sgemm;
  double start_sgemm = 0.0;
  for (int r = 0; r < 5; ++r) start_sgemm = std::max(start_sgemm, sgemm.run());
  sgbench::TorchPeer peer(threads, 5, 1);

  fmt::print("scaled_dot_product_attention, float32, {} threads; OpenBLAS kernels: {}{}\n", threads,
             sg::blas_info().core,
             sg::blas_info().corrected ? fmt::format(" (OpenBLAS chose {}; see core/blas.h)", sg::blas_info().detected)
                                       : "");
  fmt::print("limit: sgemm GFLOP/s (2048^3 through OpenBLAS, same threads), the median of 3 runs right before and 3\n"
             "right after each row's timed calls (column `sgemm`): the VM's clock drifts by up to 1.5x over minutes,\n"
             "so each row's limit is taken in its own minutes. At the start: {:.1f} GFLOP/s (best of 5)\n",
             start_sgemm);
  peer.print_about();

  struct Row {
    std::vector<std::string> cells;
    double ms;
    std::optional<double> torch_ms;
  };
  std::vector<Row> rows;
  auto row = [&](const Problem& p, bool causal, bool backward, std::optional<int> fixed_reps, bool with_torch) {
    int reps = fixed_reps.value_or(0), warmup = fixed_reps ? 0 : 1;
    if (!fixed_reps) reps = reps_for(measure(p, causal, backward, 1, 0, sgemm).ms);
    const Measured m = measure(p, causal, backward, reps, warmup, sgemm);
    const double gflops = attention_flops(p, causal, backward) / m.ms / 1e6;
    const std::optional<double> torch_ms = with_torch ? peer.time(torch_spec(p, causal, backward)) : std::nullopt;
    rows.push_back({{backward ? "fwd+bwd" : "fwd", shape_of(p), causal ? "yes" : "no", sgbench::fmt_ms(m.ms),
                     fmt::format("{:.1f}", gflops), fmt::format("{:.1f}", m.sgemm_gflops),
                     fmt::format("{:.1f}%", 100.0 * gflops / m.sgemm_gflops), fmt::format("{:.1f}", m.tensor_mb),
                     fmt::format("{:.0f}", m.rss_mb)},
                    m.ms, torch_ms});
  };
  for (const Problem& p : kProblems) {
    if (quick && p.N > 2048) continue;
    for (bool causal : {false, true})
      for (bool backward : {false, true}) row(p, causal, backward, std::nullopt, true);
  }
  if (!quick) row(kLong, /*causal=*/true, /*backward=*/true, 1, false);

  sgbench::Table table = peer.table({{"op", true},
                                     {"(B, H, N, D)", true},
                                     {"causal", true},
                                     {"ms"},
                                     {"GFLOP/s"},
                                     {"sgemm"},
                                     {"% sgemm"},
                                     {"tensor MB"},
                                     {"RSS +MB"}});
  for (const Row& r : rows) peer.add_row(table, r.cells, r.torch_ms, r.ms);
  peer.print(table);
  fmt::print("sgemm: the best of the run {:.1f} GFLOP/s.\n", sgemm.best());

  // ---- autocast: bfloat16 tile products against float32 ----
  const bool bf16_native = sg::onednn_info().bf16_native;
  if (!bf16_native) {
    fmt::print("\nNo native bfloat16 here (oneDNN: {}): autocast would run float32; its rows are skipped.\n",
               sg::onednn_info().isa);
  } else {
    sgbench::GemmProbe bf16_gemm(sg::kBFloat16);
    fmt::print("\nAutocast (bfloat16 tile products: {}) against float32, {} threads. Limit: float32 rows sgemm, bf16 rows\n"
               "oneDNN's bfloat16 GEMM (2048^3, impl {}), each measured around the row. PyTorch rows: float32, and\n"
               "torch.autocast(\"cpu\", dtype=torch.bfloat16) for the bf16 rows.\n",
               sg::kernels::tile_gemm_bf16_supported() ? "AVX512-BF16 vdpbf16ps" : "none, float32 on rounded q, k, v",
               threads, sg::onednn_info().bf16_impl);
    std::vector<Row> prec_rows;
    for (const Problem& p : kPrecisionProblems)
      for (bool backward : {false, true})
        for (bool autocast : {false, true}) {
          sgbench::GemmProbe& limit = autocast ? bf16_gemm : sgemm;
          const int reps = reps_for(measure(p, false, backward, 1, 0, limit, autocast).ms);
          const Measured m = measure(p, false, backward, reps, 1, limit, autocast);
          const double gflops = attention_flops(p, false, backward) / m.ms / 1e6;
          prec_rows.push_back({{fmt::format("{} {}", backward ? "fwd+bwd" : "fwd", autocast ? "bf16" : "f32"),
                                shape_of(p), "no", sgbench::fmt_ms(m.ms), fmt::format("{:.1f}", gflops),
                                fmt::format("{:.1f}", m.sgemm_gflops),
                                fmt::format("{:.1f}%", 100.0 * gflops / m.sgemm_gflops),
                                fmt::format("{:.1f}", m.tensor_mb), fmt::format("{:.0f}", m.rss_mb)},
                               m.ms, peer.time(torch_spec(p, false, backward, autocast))});
        }
    sgbench::Table prec = peer.table({{"op", true},
                                      {"(B, H, N, D)", true},
                                      {"causal", true},
                                      {"ms"},
                                      {"GFLOP/s"},
                                      {"limit"},
                                      {"% limit"},
                                      {"tensor MB"},
                                      {"RSS +MB"}});
    for (const Row& r : prec_rows) peer.add_row(prec, r.cells, r.torch_ms, r.ms);
    peer.print(prec);
  }
  {
    const int saved = sg::get_num_threads();
    sg::set_num_threads(1);
    tile_products_table(bf16_native);
    sg::set_num_threads(saved);
  }
  if (!quick)
    fmt::print("The N = 16384 row runs once, without PyTorch: the math path would hold B H N^2 = 2^31 float32\n"
               "scores (8 GiB) forward and as much again for their gradient.\n");
  return 0;
}
