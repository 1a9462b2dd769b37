// Reductions against the machine's own memory bandwidth, measured in this process, and
// against PyTorch on the same shapes in the same run (bench/torch_peer.py).
//
//   build/bench/bench_reduce [threads=2] [repeats=15]
//
// Two references with the same thread count: a plain vectorized float sum over a 256 MB
// buffer (the read-bandwidth candidate: it does nothing but stream and add) and the shared
// copy-bandwidth measurement (bench_util.h: best parallel copy of 256 MB with plain stores,
// memcpy or streaming stores, counted STREAM-style as bytes read + bytes written), taken at
// the start and again between the timed calls of every row, since this machine's
// bandwidth drifts: each row's % is against the copies run beside it. Then
// sg::sum over 64M float32 elements, a row sum of (4096, 4096) over dim 1, a column sum over
// dim 0, and for information mean over rows, var and max. GB/s for a reduction counts the
// bytes it reads.
#include <hwy/highway.h>
#include <omp.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "softgrad.h"

namespace hn = hwy::HWY_NAMESPACE;

namespace {

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
  double copy_gbs;                 // the limit, measured between this row's timed calls
  std::optional<double> torch_ms;  // PyTorch's time for the same reduction (none for the references)
};

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 15;
  sg::set_num_threads(threads);
  sgbench::TorchPeer peer(threads, repeats);  // started now: torch's import stays out of the timings

  const int64_t n = int64_t{1} << 26;  // 64M floats = 256 MB
  const double bytes = static_cast<double>(n) * sizeof(float);
  sg::Generator gen(0);
  sg::Tensor x = sg::rand({n}, gen);  // touched: no page faults in the timed runs
  const float* xp = x.data_ptr<float>();

  std::vector<Row> rows;
  volatile float sink = 0;
  sgbench::CopyProbe probe(static_cast<size_t>(bytes), threads);
  auto median_ms = [&](const std::function<void()>& fn) { return sgbench::median_ms_beside_copy(fn, repeats, probe); };

  // ---- references ----
  const sgbench::CopyBandwidth copy = sgbench::copy_bandwidth(probe, repeats);
  rows.push_back({fmt::format("copy: {}", copy.method), "[67108864]", copy.ms, copy.gbs, copy.gbs, std::nullopt});
  const sgbench::Beside read = median_ms([&] {
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t b = n * t / nt, e = n * (t + 1) / nt;
      total += read_sum(xp + b, e - b);
    }
    sink = total;
  });
  rows.push_back({"read: vectorized float sum", "[67108864]", read.ms, bytes / read.ms / 1e6, read.copy_gbs,
                  std::nullopt});

  // ---- softgrad ----
  // Each times softgrad with copies in between, then the same reduction in PyTorch (`spec`,
  // see torch_peer.py).
  auto time_op = [&](const std::string& op, const std::string& shape, const std::string& spec,
                     const std::function<sg::Tensor()>& fn) {
    const sgbench::Beside t = median_ms([&] { sink = fn().to_vector<float>()[0]; });
    rows.push_back({op, shape, t.ms, bytes / t.ms / 1e6, t.copy_gbs, peer.time(spec)});
  };
  time_op("sg::sum(x)", "[67108864]", "sum 67108864", [&] { return sg::sum(x); });
  const sg::Tensor m = x.reshape({4096, 4096 * 4});  // same 256 MB as (4096, 16384)
  // (4096, 4096) is 64 MB, twice the L3: successive runs take the four quarters of the
  // 256 MB buffer in turn, so every run reads from memory rather than from cache.
  // torch_peer.py's cycle=4 does the same.
  std::vector<sg::Tensor> quarters;
  for (int q = 0; q < 4; ++q) quarters.push_back(x.narrow(0, q * 4096 * 4096, 4096 * 4096).reshape({4096, 4096}));
  const double sq_bytes = 4096.0 * 4096 * sizeof(float);
  auto time_sq = [&](const std::string& op, const std::string& spec,
                     const std::function<sg::Tensor(const sg::Tensor&)>& fn) {
    int q = 0;
    const sgbench::Beside t = median_ms([&] { sink = fn(quarters[q++ % 4]).to_vector<float>()[0]; });
    rows.push_back({op, "[4096, 4096]", t.ms, sq_bytes / t.ms / 1e6, t.copy_gbs, peer.time(spec)});
  };
  time_sq("sg::sum(x, {1}) rows", "sum 4096x4096 dim=1 cycle=4", [](const sg::Tensor& s) { return sg::sum(s, {1}); });
  time_sq("sg::sum(x, {0}) columns", "sum 4096x4096 dim=0 cycle=4",
          [](const sg::Tensor& s) { return sg::sum(s, {0}); });
  // For information: the other full reductions over the same 256 MB.
  time_op("sg::mean(x, {1}) rows", "[4096, 16384]", "mean 4096x16384 dim=1", [&] { return sg::mean(m, {1}); });
  time_op("sg::var(x)", "[67108864]", "var 67108864", [&] { return sg::var(x); });
  time_op("sg::max(x)", "[67108864]", "max 67108864", [&] { return sg::max(x); });

  sgbench::print_bandwidth_title(fmt::format("softgrad reductions, {} threads, median of {} runs", threads, repeats),
                                 copy);
  peer.print_about();
  sgbench::Table table = peer.table(sgbench::bandwidth_columns());
  for (const Row& r : rows)
    peer.add_row(table, sgbench::bandwidth_cells(r.op, r.shape, r.ms, r.gbs, r.copy_gbs), r.torch_ms, r.ms);
  peer.print(table);
  return 0;
}
