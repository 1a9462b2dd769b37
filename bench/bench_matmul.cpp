// bench_matmul: sg::matmul against direct cblas_sgemm calls on the same buffers, in the
// same process (the machine's measured GEMM limit), and against PyTorch's matmul on the same
// shapes in the same run (bench/torch_peer.py). float32, 2 threads by default.
//
//   build/bench/bench_matmul [threads]
//
// Each row times sg::matmul (output allocation and dispatch included) and the BLAS calls
// it stands for, interleaved rep by rep so that noise from a shared machine hits both.
// For batched rows the direct side is a serial loop of cblas_sgemm calls (OpenBLAS
// threading each one), i.e. what a straightforward implementation would do. PyTorch's
// matmul on the same shapes runs right after each row, with the same warm-up and reps.
#include <cblas.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "softgrad.h"

namespace {

using sgbench::Clock;
using sgbench::ms_since;

constexpr int kWarmup = 3;

struct Timing {
  double sg_ms, ref_ms;
};

// Interleaves the two candidates; medians after a few warm-up calls each (the first
// calls also pay for faulting in fresh output pages until malloc settles).
Timing time_pair(const std::function<void()>& sg_fn, const std::function<void()>& ref_fn, int reps) {
  for (int w = 0; w < kWarmup; ++w) {
    sg_fn();
    ref_fn();
  }
  std::vector<double> a, b;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    sg_fn();
    a.push_back(ms_since(t0));
    t0 = Clock::now();
    ref_fn();
    b.push_back(ms_since(t0));
  }
  return {sgbench::median(a), sgbench::median(b)};
}

struct Row {
  std::string shape;
  double flops;
  Timing t;
  std::optional<double> torch_ms;  // PyTorch's time for the same matmul
};

// torch_peer.py's spec of a matmul ("matmul 2048x2048 t2048x2048 reps=7 warmup=3": a
// leading t marks a transposed view), with this bench's repetitions and warm-up.
std::string peer_spec(const std::string& a, const std::string& b, int reps) {
  return fmt::format("matmul {} {} reps={} warmup={}", a, b, reps, kWarmup);
}

// C (M, N) = op(A) @ op(B), row-major, on raw buffers.
void sgemm(bool ta, bool tb, int M, int N, int K, const float* a, int lda, const float* b, int ldb, float* c) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, a, lda,
              b, ldb, 0.0f, c, N);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  sg::set_num_threads(threads);
  sgbench::TorchPeer peer(threads);  // started now: torch's import stays out of the timings
  sg::NoGradGuard no_grad;
  sg::Generator gen(0);
  auto randn = [&](const sg::Shape& s) { return sg::randn(s, gen, sg::kFloat32); };

  std::vector<Row> rows;

  // Plain 2-D GEMMs, and the transposed views a backward pass feeds in (no copies).
  struct Gemm2 {
    int M, K, N;
    bool ta, tb;
    int reps;
  };
  for (const Gemm2& g : {Gemm2{2048, 2048, 2048, false, false, 7}, Gemm2{2048, 2048, 2048, true, false, 5},
                         Gemm2{128, 784, 512, false, false, 200}, Gemm2{128, 512, 784, false, true, 200},
                         Gemm2{784, 128, 512, true, false, 200}}) {
    // Stored as BLAS wants it; sg sees the logical (M, K) / (K, N) through views.
    sg::Tensor a = g.ta ? randn({g.K, g.M}) : randn({g.M, g.K});
    sg::Tensor b = g.tb ? randn({g.N, g.K}) : randn({g.K, g.N});
    sg::Tensor av = g.ta ? a.t() : a, bv = g.tb ? b.t() : b;
    std::vector<float> c(static_cast<size_t>(g.M) * g.N);
    const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>();
    Timing t = time_pair([&] { sg::Tensor out = sg::matmul(av, bv); },
                         [&] { sgemm(g.ta, g.tb, g.M, g.N, g.K, pa, g.ta ? g.M : g.K, pb, g.tb ? g.K : g.N, c.data()); },
                         g.reps);
    const std::string shape = fmt::format("({}{}, {}) @ ({}{}, {})", g.ta ? "T " : "", g.M, g.K, g.tb ? "T " : "",
                                          g.K, g.N);
    rows.push_back({shape, 2.0 * g.M * g.N * g.K, t,
                    peer.time(peer_spec(fmt::format("{}{}x{}", g.ta ? "t" : "", g.M, g.K),
                                        fmt::format("{}{}x{}", g.tb ? "t" : "", g.K, g.N), g.reps))});
  }

  // Linear on a 3-D input: (B, T, C) @ (C, C) is one (B*T, C) @ (C, C) GEMM.
  {
    const int B = 32, T = 128, C = 512;
    sg::Tensor x = randn({B, T, C}), w = randn({C, C});
    std::vector<float> c(static_cast<size_t>(B) * T * C);
    const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>();
    Timing t = time_pair([&] { sg::Tensor out = sg::matmul(x, w); },
                         [&] { sgemm(false, false, B * T, C, C, px, C, pw, C, c.data()); }, 30);
    rows.push_back({"(32, 128, 512) @ (512, 512) folded", 2.0 * B * T * C * C, t,
                    peer.time(peer_spec(fmt::format("{}x{}x{}", B, T, C), fmt::format("{}x{}", C, C), 30))});
  }

  // Batched small GEMMs: OpenMP over the batch, BLAS single-threaded inside.
  struct Batched {
    int B, M, K, N;
    bool tb;
    int reps;
    const char* label;
  };
  for (const Batched& g : {Batched{64, 64, 512, 64, false, 50, "(64, 64, 512) @ (64, 512, 64)"},
                           Batched{32, 128, 64, 128, true, 100, "(32, 128, 64) @ (32, T 64, 128) [q k^T]"},
                           Batched{32, 128, 128, 64, false, 100, "(32, 128, 128) @ (32, 128, 64) [p v]"},
                           Batched{8, 384, 384, 384, false, 30, "(8, 384, 384) @ (8, 384, 384)"}}) {
    sg::Tensor a = randn({g.B, g.M, g.K});
    sg::Tensor b = g.tb ? randn({g.B, g.N, g.K}) : randn({g.B, g.K, g.N});
    sg::Tensor bv = g.tb ? b.transpose(-1, -2) : b;
    std::vector<float> c(static_cast<size_t>(g.B) * g.M * g.N);
    const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>();
    const int64_t sa = int64_t{g.M} * g.K, sb = int64_t{g.K} * g.N, sc = int64_t{g.M} * g.N;
    Timing t = time_pair([&] { sg::Tensor out = sg::matmul(a, bv); },
                         [&] {
                           for (int i = 0; i < g.B; ++i)
                             sgemm(false, g.tb, g.M, g.N, g.K, pa + i * sa, g.K, pb + i * sb, g.tb ? g.K : g.N,
                                   c.data() + i * sc);
                         },
                         g.reps);
    rows.push_back({g.label, 2.0 * g.B * g.M * g.N * g.K, t,
                    peer.time(peer_spec(fmt::format("{}x{}x{}", g.B, g.M, g.K),
                                        fmt::format("{}{}x{}x{}", g.tb ? "t" : "", g.B, g.K, g.N), g.reps))});
  }

  fmt::print("matmul, float32, {} threads; median ms after {} warm-up calls; % direct = direct sgemm time / "
             "sg::matmul time\n",
             threads, kWarmup);
  peer.print_about();
  sgbench::Table table =
      peer.table({{"shape", true}, {"sg ms"}, {"sg GFLOP/s"}, {"direct ms"}, {"direct GFLOP/s"}, {"% direct"}});
  for (const Row& r : rows) {
    std::vector<std::string> cells = {r.shape,
                                      sgbench::fmt_ms(r.t.sg_ms),
                                      fmt::format("{:.1f}", r.flops / (r.t.sg_ms * 1e6)),
                                      sgbench::fmt_ms(r.t.ref_ms),
                                      fmt::format("{:.1f}", r.flops / (r.t.ref_ms * 1e6)),
                                      fmt::format("{:.1f}%", 100.0 * r.t.ref_ms / r.t.sg_ms)};
    peer.add_row(table, std::move(cells), r.torch_ms, r.t.sg_ms);
  }
  peer.print(table);

  return 0;
}
