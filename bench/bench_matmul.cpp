// bench_matmul: sg::matmul against direct cblas_sgemm calls on the same buffers, in the
// same process (the machine's measured GEMM limit). float32, 2 threads by default.
//
//   build/bench/bench_matmul [threads]
//
// Each row times sg::matmul (output allocation and dispatch included) and the BLAS calls
// it stands for, interleaved rep by rep so that noise from a shared machine hits both.
// For batched rows the direct side is a serial loop of cblas_sgemm calls (OpenBLAS
// threading each one), i.e. what a straightforward implementation would do.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "softgrad.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct Timing {
  double sg_ms, ref_ms;
};

// Interleaves the two candidates; medians after a few warm-up calls each (the first
// calls also pay for faulting in fresh output pages until malloc settles).
Timing time_pair(const std::function<void()>& sg_fn, const std::function<void()>& ref_fn, int reps) {
  for (int w = 0; w < 3; ++w) {
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
  return {median(a), median(b)};
}

void print_row(const std::string& shape, double flops, Timing t) {
  const double gf = flops / (t.sg_ms * 1e6), gf_ref = flops / (t.ref_ms * 1e6);
  fmt::print("{:<44} {:>9.3f} {:>8.1f} {:>11.3f} {:>8.1f} {:>8.1f}%\n", shape, t.sg_ms, gf, t.ref_ms, gf_ref,
             100.0 * t.ref_ms / t.sg_ms);
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
  sg::NoGradGuard no_grad;
  sg::Generator gen(0);
  auto randn = [&](const sg::Shape& s) { return sg::randn(s, gen, sg::kFloat32); };

  fmt::print("matmul, float32, {} threads; median ms; % = direct sgemm time / sg::matmul time\n", threads);
  fmt::print("{:<44} {:>9} {:>8} {:>11} {:>8} {:>9}\n", "shape", "sg ms", "GFLOP/s", "direct ms", "GFLOP/s",
             "% direct");

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
    print_row(shape, 2.0 * g.M * g.N * g.K, t);
  }

  // Linear on a 3-D input: (B, T, C) @ (C, C) is one (B*T, C) @ (C, C) GEMM.
  {
    const int B = 32, T = 128, C = 512;
    sg::Tensor x = randn({B, T, C}), w = randn({C, C});
    std::vector<float> c(static_cast<size_t>(B) * T * C);
    const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>();
    Timing t = time_pair([&] { sg::Tensor out = sg::matmul(x, w); },
                         [&] { sgemm(false, false, B * T, C, C, px, C, pw, C, c.data()); }, 30);
    print_row("(32, 128, 512) @ (512, 512) folded", 2.0 * B * T * C * C, t);
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
    print_row(g.label, 2.0 * g.B * g.M * g.N * g.K, t);
  }

  return 0;
}
