// Elementwise ops against the machine's own limit, memory bandwidth, and against PyTorch.
//
// Measures, in one process, the copy bandwidth (bench_util.h: a parallel copy over 256 MB
// buffers with plain stores, memcpy and streaming stores, read + write bytes counted, the
// best run), once at the start and again between the timed calls of each row, since this
// machine's bandwidth drifts; then the median time of sg::add on two contiguous
// float32 tensors of 64M elements (12 bytes moved per element), sg::exp, sg::gelu (erf), a broadcast add
// (N, C) + (C), in-place add_ (no output allocation), and two diagnostics of what a fresh
// output costs: sg::empty alone and sg::full (a new tensor written once) next to fill_ (the
// same writes into memory already faulted in). Prints each as GB/s and as a share of the
// copy bandwidth, and beside it PyTorch's time for the same op and shapes, measured in the
// same run by bench/torch_peer.py. Two threads (the machine has two cores).
//
//   build-*/bench/bench_elementwise
#include <fmt/format.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "softgrad.h"

int main() {
  sg::set_num_threads(2);
  const int threads = sg::get_num_threads();
  constexpr int64_t kN = int64_t{64} << 20;  // 64M float32 = 256 MB per tensor
  constexpr int kReps = 9;

  sgbench::TorchPeer peer(threads, kReps);  // started now: torch's import stays out of the timings
  sgbench::CopyProbe probe(size_t{256} << 20, threads);
  const sgbench::CopyBandwidth copy = sgbench::copy_bandwidth(probe, 12);

  sg::Generator gen(0);
  const sg::Tensor a = sg::rand({kN}, gen);
  const sg::Tensor b = sg::rand({kN}, gen);
  constexpr int64_t kC = 1024, kRows = kN / kC;
  const sg::Tensor m = a.view({kRows, kC});
  const sg::Tensor row = sg::rand({kC}, gen);
  sg::Tensor acc = sg::zeros({kN});

  struct Row {
    std::string op, shape;
    double ms, bytes;  // bytes moved per call; 0: not a bandwidth figure
    double copy_gbs;   // the limit, measured between this row's timed calls
    std::optional<double> torch_ms;
  };
  std::vector<Row> rows;
  const double n = static_cast<double>(kN);
  // Times fn with copies in between, then the same op in PyTorch (`spec`, see torch_peer.py).
  auto bench = [&](const std::string& op, const std::string& shape, double bytes, const std::string& spec,
                   const std::function<void()>& fn) {
    const sgbench::Beside t = sgbench::median_ms_beside_copy(fn, kReps, probe);
    rows.push_back({op, shape, t.ms, bytes, t.copy_gbs, peer.time(spec)});
  };
  bench("add", fmt::format("({}) + ({})", kN, kN), 12 * n, fmt::format("add {} {}", kN, kN), [&] { sg::add(a, b); });
  bench("exp", fmt::format("({})", kN), 8 * n, fmt::format("exp {}", kN), [&] { sg::exp(a); });
  bench("gelu (erf)", fmt::format("({})", kN), 8 * n, fmt::format("gelu {}", kN), [&] { sg::gelu(a); });
  bench("add (broadcast)", fmt::format("({}, {}) + ({})", kRows, kC, kC), 8 * n + 4 * kC,
        fmt::format("add {}x{} {}", kRows, kC, kC), [&] { sg::add(m, row); });
  bench("add_ (in place)", fmt::format("({}) += ({})", kN, kN), 12 * n, fmt::format("add_ {} {}", kN, kN),
        [&] { sg::add_(acc, b); });
  // Diagnostics: what every op that returns a new 256 MB tensor pays around its kernel.
  // empty() maps fresh pages and touches none; full() writes them once (page faults + 4
  // bytes/elem); fill_ does the same writes into pages already there.
  bench("empty (alloc)", fmt::format("({})", kN), 0, fmt::format("empty {}", kN), [&] { sg::empty({kN}); });
  bench("full (new output)", fmt::format("({})", kN), 4 * n, fmt::format("full {}", kN), [&] { sg::full({kN}, 1.0); });
  bench("fill_ (in place)", fmt::format("({})", kN), 4 * n, fmt::format("fill_ {}", kN), [&] { sg::fill_(acc, 1.0); });

  sgbench::print_bandwidth_title(
      fmt::format("softgrad elementwise benchmark: {} threads, float32, median of {} runs", threads, kReps), copy);
  peer.print_about();
  sgbench::Table table = peer.table(sgbench::bandwidth_columns());
  for (const Row& r : rows)
    peer.add_row(table, sgbench::bandwidth_cells(r.op, r.shape, r.ms, r.bytes / (r.ms * 1e-3) / 1e9, r.copy_gbs),
                 r.torch_ms, r.ms);
  peer.print(table);
  fmt::print("\nBytes counted: add and add_ 12/elem (2 reads, 1 write), exp, gelu and broadcast add 8/elem, full and\n"
             "fill_ 4/elem. Ops that return a new tensor pay for faulting in its fresh pages (outputs >= 2 MiB\n"
             "are mmapped with MADV_HUGEPAGE) and for unmapping them when it dies, inside the timed call;\n"
             "the in-place rows show the kernels alone.\n");
  return 0;
}
