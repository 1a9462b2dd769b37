// Elementwise ops against the machine's own limit: memory bandwidth.
//
// Measures, in one process, the copy bandwidth (a parallel copy loop over 256 MB buffers,
// read + write bytes counted, best of 10), then the median time of sg::add on two
// contiguous float32 tensors of 64M elements (12 bytes moved per element), sg::exp, a
// broadcast add (N, C) + (C), the allocation of a fresh output alone (sg::empty), and
// in-place add_ (no output allocation), and prints each
// as GB/s and as a share of the copy bandwidth. Two threads (the machine has two cores).
//
//   build-*/bench/bench_elementwise
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "softgrad.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Best-of-`reps` copy bandwidth in GB/s (1 GB = 1e9 bytes), bytes read + written.
double copy_bandwidth(size_t nbytes, int reps) {
  auto free_fn = [](char* p) { std::free(p); };
  std::unique_ptr<char, decltype(free_fn)> src(static_cast<char*>(std::aligned_alloc(64, nbytes)), free_fn);
  std::unique_ptr<char, decltype(free_fn)> dst(static_cast<char*>(std::aligned_alloc(64, nbytes)), free_fn);
  std::memset(src.get(), 1, nbytes);
  std::memset(dst.get(), 0, nbytes);  // fault the pages in before timing
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    // Odd reps: glibc memcpy (non-temporal stores at this size); even reps: a plain
    // vectorized float loop (ordinary stores, like the kernels). The better one counts.
    const bool use_memcpy = r % 2 == 1;
#pragma omp parallel
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const size_t b = nbytes * t / nt / 64 * 64, e = t == nt - 1 ? nbytes : nbytes * (t + 1) / nt / 64 * 64;
      if (use_memcpy) {
        std::memcpy(dst.get() + b, src.get() + b, e - b);
      } else {
        float* __restrict d = reinterpret_cast<float*>(dst.get() + b);
        const float* __restrict s = reinterpret_cast<const float*>(src.get() + b);
        const size_t n = (e - b) / sizeof(float);
        for (size_t i = 0; i < n; ++i) d[i] = s[i];
      }
    }
    best = std::max(best, 2.0 * static_cast<double>(nbytes) / seconds_since(t0) / 1e9);
  }
  return best;
}

double median_ms(const std::function<void()>& fn, int reps) {
  fn();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    ms.push_back(seconds_since(t0) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main() {
  sg::set_num_threads(2);
  const int threads = sg::get_num_threads();
  constexpr int64_t kN = int64_t{64} << 20;  // 64M float32 = 256 MB per tensor
  constexpr int kReps = 9;

  const double copy_gbs = copy_bandwidth(size_t{256} << 20, 10);

  sg::Generator gen(0);
  const sg::Tensor a = sg::rand({kN}, gen);
  const sg::Tensor b = sg::rand({kN}, gen);
  constexpr int64_t kC = 1024, kRows = kN / kC;
  const sg::Tensor m = a.view({kRows, kC});
  const sg::Tensor row = sg::rand({kC}, gen);
  sg::Tensor acc = sg::zeros({kN});

  struct Row {
    std::string op, shape;
    double ms, bytes;
  };
  std::vector<Row> rows;
  const double n = static_cast<double>(kN);
  rows.push_back({"add", fmt::format("({}) + ({})", kN, kN), median_ms([&] { sg::add(a, b); }, kReps), 12 * n});
  rows.push_back({"exp", fmt::format("({})", kN), median_ms([&] { sg::exp(a); }, kReps), 8 * n});
  rows.push_back({"add (broadcast)", fmt::format("({}, {}) + ({})", kRows, kC, kC),
                  median_ms([&] { sg::add(m, row); }, kReps), 8 * n + 4 * kC});
  // Diagnostic: what every op that returns a new 256 MB tensor pays before its kernel runs.
  rows.push_back({"empty (alloc)", fmt::format("({})", kN), median_ms([&] { sg::empty({kN}); }, kReps), 4 * n});
  rows.push_back({"add_ (in place)", fmt::format("({}) += ({})", kN, kN),
                  median_ms([&] { sg::add_(acc, b); }, kReps), 12 * n});

  fmt::print("softgrad elementwise benchmark: {} threads, float32, copy bandwidth {:.2f} GB/s "
             "(256 MB, read+write, best of 10)\n\n",
             threads, copy_gbs);
  fmt::print("| {:<16} | {:<26} | {:>9} | {:>7} | {:>7} |\n", "op", "shape", "median ms", "GB/s", "% copy");
  fmt::print("|{:-<18}|{:-<28}|{:->11}|{:->9}|{:->9}|\n", "", "", "", "", "");
  for (const Row& r : rows) {
    const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    fmt::print("| {:<16} | {:<26} | {:>9.2f} | {:>7.2f} | {:>6.1f}% |\n", r.op, r.shape, r.ms, gbs,
               100.0 * gbs / copy_gbs);
  }
  fmt::print("\nBytes counted: add 12/elem (2 reads, 1 write), exp and broadcast add 8/elem, add_ 12/elem.\n"
             "Ops that return a new tensor include allocating (and zero-filling) the output;\n"
             "the empty row is that cost alone (4 bytes/elem written).\n");
  return 0;
}
