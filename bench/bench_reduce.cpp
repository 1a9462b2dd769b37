// Reductions against the machine's own memory bandwidth, measured in this process.
//
//   build/bench/bench_reduce [threads=2] [repeats=15]
//
// Two references over a 256 MB buffer with the same thread count: a plain vectorized
// float sum (the read-bandwidth candidate: it does nothing but stream and add) and a
// memcpy split over the threads (copy bandwidth, counted STREAM-style as bytes read +
// bytes written). Then sg::sum over 64M float32 elements, a row sum of (4096, 4096) over
// dim 1 and a column sum over dim 0. GB/s for a reduction counts the bytes it reads.
#include <hwy/highway.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "softgrad.h"

namespace hn = hwy::HWY_NAMESPACE;

namespace {

// Median wall time in ms of `repeats` runs of fn, after one warm-up run.
double median_ms(int repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// x: (n) -> Σ x in float: four independent 8-lane accumulators, nothing but streaming
// loads and adds. (On this Zen 4 the 256-bit form streams faster than the 512-bit one.)
float read_sum(const float* x, int64_t n) {
  const hn::CappedTag<float, 8> d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 = hn::Add(a0, hn::LoadU(d, x + i));
    a1 = hn::Add(a1, hn::LoadU(d, x + i + L));
    a2 = hn::Add(a2, hn::LoadU(d, x + i + 2 * L));
    a3 = hn::Add(a3, hn::LoadU(d, x + i + 3 * L));
  }
  a0 = hn::Add(hn::Add(a0, a1), hn::Add(a2, a3));
  float s = hn::GetLane(hn::SumOfLanes(d, a0));
  for (; i < n; ++i) s += x[i];
  return s;
}

struct Row {
  std::string op, shape;
  double ms, gbs;
};

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 15;
  sg::set_num_threads(threads);

  const int64_t n = int64_t{1} << 26;  // 64M floats = 256 MB
  const double bytes = static_cast<double>(n) * sizeof(float);
  sg::Generator gen(0);
  sg::Tensor x = sg::rand({n}, gen);  // touched: no page faults in the timed runs
  sg::Tensor dst = sg::empty({n});
  const float* xp = x.data_ptr<float>();
  float* dp = dst.data_ptr<float>();

  std::vector<Row> rows;
  volatile float sink = 0;

  // ---- references ----
  const double read_ms = median_ms(repeats, [&] {
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t b = n * t / nt, e = n * (t + 1) / nt;
      total += read_sum(xp + b, e - b);
    }
    sink = total;
  });
  const double copy_ms = median_ms(repeats, [&] {
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t b = n * t / nt, e = n * (t + 1) / nt;
      std::memcpy(dp + b, xp + b, static_cast<size_t>(e - b) * sizeof(float));
    }
  });
  const double copy_gbs = 2 * bytes / copy_ms / 1e6;
  rows.push_back({"read: vectorized float sum", "[67108864]", read_ms, bytes / read_ms / 1e6});
  rows.push_back({"copy: memcpy (read + write)", "[67108864]", copy_ms, copy_gbs});

  // ---- softgrad ----
  auto time_op = [&](const std::string& op, const std::string& shape, const std::function<sg::Tensor()>& fn) {
    const double ms = median_ms(repeats, [&] { sink = fn().to_vector<float>()[0]; });
    rows.push_back({op, shape, ms, bytes / ms / 1e6});
  };
  time_op("sg::sum(x)", "[67108864]", [&] { return sg::sum(x); });
  const sg::Tensor m = x.reshape({4096, 4096 * 4});  // same 256 MB as (4096, 16384)
  // (4096, 4096) is 64 MB, twice the L3: successive runs take the four quarters of the
  // 256 MB buffer in turn, so every run reads from memory rather than from cache.
  std::vector<sg::Tensor> quarters;
  for (int q = 0; q < 4; ++q) quarters.push_back(x.narrow(0, q * 4096 * 4096, 4096 * 4096).reshape({4096, 4096}));
  const double sq_bytes = 4096.0 * 4096 * sizeof(float);
  auto time_sq = [&](const std::string& op, const std::function<sg::Tensor(const sg::Tensor&)>& fn) {
    int q = 0;
    const double ms = median_ms(repeats, [&] { sink = fn(quarters[q++ % 4]).to_vector<float>()[0]; });
    rows.push_back({op, "[4096, 4096]", ms, sq_bytes / ms / 1e6});
  };
  time_sq("sg::sum(x, {1}) rows", [](const sg::Tensor& s) { return sg::sum(s, {1}); });
  time_sq("sg::sum(x, {0}) columns", [](const sg::Tensor& s) { return sg::sum(s, {0}); });
  // For information: the other full reductions over the same 256 MB.
  time_op("sg::mean(x, {1}) rows", "[4096, 16384]", [&] { return sg::mean(m, {1}); });
  time_op("sg::var(x)", "[67108864]", [&] { return sg::var(x); });
  time_op("sg::max(x)", "[67108864]", [&] { return sg::max(x); });

  fmt::print("softgrad reductions, {} threads, median of {} runs; copy bandwidth {:.1f} GB/s\n", threads, repeats,
             copy_gbs);
  fmt::print("{:<30} {:<15} {:>10} {:>9} {:>8}\n", "op", "shape", "median ms", "GB/s", "% copy");
  for (const Row& r : rows)
    fmt::print("{:<30} {:<15} {:>10.2f} {:>9.1f} {:>7.0f}%\n", r.op, r.shape, r.ms, r.gbs, 100 * r.gbs / copy_gbs);
  return 0;
}
