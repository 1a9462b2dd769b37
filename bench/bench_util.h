#pragma once
// What the bench/ programs share: median timing, the copy-bandwidth limit, the exp
// throughput limit (sg::simd::Exp on cache-resident data), a markdown table printer, and
// the PyTorch peer (bench/torch_peer.py run by /usr/bin/python3 in the same run, on the
// same shapes, with the same methodology).
//
//   sgbench::TorchPeer peer(2);                                    // threads
//   const double sg_ms = sgbench::median_ms([&] { sg::exp(x); }, 9);
//   const std::optional<double> torch_ms = peer.time("exp 1024");  // right after
//   // (peer.answer(spec): every number of the reply, for specs answered with several)
//   peer.print_about();
//   sgbench::Table table = peer.table({{"op", true}, {"sg ms"}});  // + torch ms, speedup
//   peer.add_row(table, {"exp", sgbench::fmt_ms(sg_ms)}, torch_ms, sg_ms);
//   peer.print(table);
#include <fmt/format.h>
#include <hwy/cache_control.h>  // FlushStream
#include <hwy/highway.h>
#include <omp.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/blas.h"
#include "core/onednn.h"
#include "core/simd_exp.h"
#include "core/tensor.h"

namespace sgbench {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Median of the samples; the mean of the two middle ones for an even count (as Python's
// statistics.median, which torch_peer.py uses).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// Median wall time in ms of `reps` calls of fn, after `warmup` untimed calls; `between`, if
// given, runs untimed after timed call r; `after`, if given, runs untimed after every call,
// warm-up ones included (before `between`), e.g. to drop a gradient the call accumulated.
// torch_peer.py times its side the same way.
inline double median_ms(const std::function<void()>& fn, int reps, int warmup = 1,
                        const std::function<void(int)>& between = {}, const std::function<void()>& after = {}) {
  for (int w = 0; w < warmup; ++w) {
    fn();
    if (after) after();
  }
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    ms.push_back(ms_since(t0));
    if (after) after();
    if (between) between(r);
  }
  return median(ms);
}

// Two buffers for copy-bandwidth runs, allocated and faulted in once. A run is a parallel
// copy of the whole buffer one of three ways: a plain float loop (ordinary stores, like most
// kernels: every written line is first read, write-allocate), glibc memcpy, or non-temporal
// (streaming) stores. NOTE: on this Zen 4 VM glibc's memcpy does not stream at 128 MB per
// thread and is the slowest of the three; streaming stores are the fastest.
class CopyProbe {
 public:
  static constexpr int kMethods = 3;
  static constexpr const char* kNames[kMethods] = {"plain stores", "memcpy", "streaming stores"};

  CopyProbe(size_t nbytes, int threads)
      : nbytes_(nbytes / 64 * 64), threads_(threads), src_(alloc(nbytes_)), dst_(alloc(nbytes_)) {
    std::memset(src_.get(), 1, nbytes_);
    std::memset(dst_.get(), 0, nbytes_);
  }
  size_t nbytes() const { return nbytes_; }
  // GB/s (1 GB = 1e9 bytes) of a run that took `ms`, bytes read + bytes written (STREAM's count).
  double gbs(double ms) const { return 2.0 * static_cast<double>(nbytes_) / ms / 1e6; }

  // One copy, method 0..2 as in kNames; returns its wall time in ms.
  double run(int method) {
    namespace hn = hwy::HWY_NAMESPACE;
    const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads_)
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
      const size_t b = nbytes_ * t / nt / 64 * 64, e = t == nt - 1 ? nbytes_ : nbytes_ * (t + 1) / nt / 64 * 64;
      float* __restrict d = reinterpret_cast<float*>(dst_.get() + b);
      const float* __restrict s = reinterpret_cast<const float*>(src_.get() + b);
      const size_t n = (e - b) / sizeof(float);  // a multiple of 16: 64-byte chunks
      if (method == 0) {
        for (size_t i = 0; i < n; ++i) d[i] = s[i];
      } else if (method == 1) {
        std::memcpy(d, s, e - b);
      } else {
        const hn::CappedTag<float, 16> df;  // at most 64 bytes: chunks stay aligned
        for (size_t i = 0; i < n; i += hn::Lanes(df)) hn::Stream(hn::Load(df, s + i), df, d + i);
        hwy::FlushStream();
      }
    }
    return ms_since(t0);
  }

 private:
  static void free_bytes(char* p) { std::free(p); }
  using Buffer = std::unique_ptr<char, decltype(&free_bytes)>;
  static Buffer alloc(size_t n) { return Buffer(static_cast<char*>(std::aligned_alloc(64, n)), &free_bytes); }

  size_t nbytes_;
  int threads_;
  Buffer src_, dst_;
};

struct CopyBandwidth {
  // GB/s of the best run of each way (see CopyProbe); gbs is the best of the three.
  double gbs, plain_gbs, memcpy_gbs, stream_gbs;
  double ms;           // the best run's time
  const char* method;  // which way won
  size_t nbytes;       // copied per run
  int reps;            // runs, the three ways in turn
};

// The machine's memory limit: the best of `reps` copies, the three ways in turn.
inline CopyBandwidth copy_bandwidth(CopyProbe& probe, int reps) {
  double best_ms[CopyProbe::kMethods] = {1e300, 1e300, 1e300};
  for (int r = 0; r < reps; ++r) best_ms[r % 3] = std::min(best_ms[r % 3], probe.run(r % 3));
  auto gbs = [&](double ms) { return ms < 1e300 ? probe.gbs(ms) : 0.0; };
  const int win = static_cast<int>(std::min_element(best_ms, best_ms + 3) - best_ms);
  return {gbs(best_ms[win]), gbs(best_ms[0]),    gbs(best_ms[1]), gbs(best_ms[2]), best_ms[win],
          CopyProbe::kNames[win], probe.nbytes(), reps};
}

// "copy bandwidth 50.2 GB/s (streaming stores; plain stores 35.4, memcpy 30.5, streaming
// stores 50.2; 256 MB, read+write counted, best of 12 runs taking the three in turn)"
inline std::string describe(const CopyBandwidth& c) {
  return fmt::format("copy bandwidth {:.1f} GB/s ({}; plain stores {:.1f}, memcpy {:.1f}, streaming stores {:.1f}; "
                     "{} MB, read+write counted, best of {} runs taking the three in turn)",
                     c.gbs, c.method, c.plain_gbs, c.memcpy_gbs, c.stream_gbs, c.nbytes >> 20, c.reps);
}

struct Beside {
  double ms;        // median of the timed calls
  double copy_gbs;  // best copy bandwidth among the copies run between them
};

// Like median_ms, with a copy (the three ways in turn) after each timed call: this VM's
// memory bandwidth drifts by up to 2x over seconds, so a limit measured once at the start
// can be off for a row timed later. copy_gbs is the limit at the time of this row.
// `after` as in median_ms.
inline Beside median_ms_beside_copy(const std::function<void()>& fn, int reps, CopyProbe& probe, int warmup = 1,
                                    const std::function<void()>& after = {}) {
  double best_copy_ms = 1e300;
  const double ms = median_ms(
      fn, reps, warmup, [&](int r) { best_copy_ms = std::min(best_copy_ms, probe.run(r % CopyProbe::kMethods)); },
      after);
  return {ms, probe.gbs(best_copy_ms)};
}

// Throughput of sg::simd::Exp, the vector exp the softmax kernels call, on data that stays in
// L1: each thread maps its own 2048-float buffer (inputs in [-10, 0], the range of x - max in
// a softmax) into a second one, over and over. Taken both at the native vector width and at
// 256 bits (on Zen 4 the 512-bit form runs on 256-bit units and may not be faster); the
// limit is the better of the two, in Gelem/s over all threads.
struct ExpRate {
  double gelems;  // the best of the two widths
  double native_gelems, v256_gelems;
  size_t native_lanes;
  int threads, reps;
};

namespace detail {
// One run: every thread applies Exp to its L1 buffer `passes` times; returns the wall time in ms.
template <class D> double exp_run(D d, int threads, int passes) {
  namespace hn = hwy::HWY_NAMESPACE;
  constexpr size_t kN = 2048;  // 8 KB in + 8 KB out: within any 32 KB L1d
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  {
    alignas(64) float in[kN], out[kN];
    for (size_t i = 0; i < kN; ++i) in[i] = -10.0f * static_cast<float>((i * 7919) % kN) / kN;
    const size_t L = hn::Lanes(d);
    for (int p = 0; p < passes; ++p) {
      for (size_t i = 0; i < kN; i += L) hn::Store(sg::simd::Exp(d, hn::Load(d, in + i)), d, out + i);
      // NOTE: without this the compiler may see that every pass stores the same values and
      // keep only the last one; the clobber makes each pass's loads and stores happen.
      asm volatile("" : : "r"(out), "r"(in) : "memory");
    }
  }
  return ms_since(t0);
}
}  // namespace detail

// Best of `reps` runs per width of 10000 passes each (after one warm-up run per width).
inline ExpRate exp_rate(int threads, int reps = 5) {
  namespace hn = hwy::HWY_NAMESPACE;
  constexpr int kPasses = 10000;
  const double elems = 2048.0 * kPasses * threads;
  const hn::ScalableTag<float> dn;
  const hn::CappedTag<float, 8> d8;
  detail::exp_run(dn, threads, kPasses / 4);
  detail::exp_run(d8, threads, kPasses / 4);
  double best_n = 1e300, best_8 = 1e300;
  for (int r = 0; r < reps; ++r) {
    best_n = std::min(best_n, detail::exp_run(dn, threads, kPasses));
    best_8 = std::min(best_8, detail::exp_run(d8, threads, kPasses));
  }
  const double gn = elems / best_n / 1e6, g8 = elems / best_8 / 1e6;
  return {std::max(gn, g8), gn, g8, hn::Lanes(dn), threads, reps};
}

// "exp rate 11.8 Gelem/s (sg::simd::Exp, 2 threads on L1-resident data; 16 lanes 11.8, 8 lanes 10.9; best of 5)"
inline std::string describe(const ExpRate& e) {
  return fmt::format("exp rate {:.2f} Gelem/s (sg::simd::Exp, {} threads on L1-resident data; {} lanes {:.2f}, "
                     "8 lanes {:.2f}; best of {} runs each)",
                     e.gelems, e.threads, e.native_lanes, e.native_gelems, e.v256_gelems, e.reps);
}

// The time an op cannot beat on this machine: moving `bytes` at `gbs` (GB/s, read + write
// counted) or computing `exps` exponentials at `gelems` (Gelem/s), whichever is longer.
inline double limit_ms(double bytes, double gbs, double exps, double gelems) {
  return std::max(bytes / gbs / 1e6, exps / gelems / 1e6);
}

inline std::string fmt_ms(double ms) { return fmt::format("{:.3f}", ms); }

// A markdown table; column widths follow the contents.
struct Column {
  std::string header;
  bool left = false;  // text columns align left, numbers right
};

class Table {
 public:
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  void add_column(Column c) { columns_.push_back(std::move(c)); }
  void add_row(std::vector<std::string> cells) {
    cells.resize(columns_.size());
    rows_.push_back(std::move(cells));
  }
  void print() const {
    std::vector<size_t> w(columns_.size());
    for (size_t c = 0; c < columns_.size(); ++c) {
      w[c] = std::max<size_t>(3, columns_[c].header.size());  // markdown wants "--:" at least
      for (const auto& row : rows_) w[c] = std::max(w[c], row[c].size());
    }
    // One line of cells; cell(c) gives column c's text, already padded.
    auto line = [&](auto&& cell) {
      for (size_t c = 0; c < columns_.size(); ++c) fmt::print("| {} ", cell(c));
      fmt::print("|\n");
    };
    auto pad = [&](const std::string& text, size_t c) {
      return columns_[c].left ? fmt::format("{:<{}}", text, w[c]) : fmt::format("{:>{}}", text, w[c]);
    };
    line([&](size_t c) { return pad(columns_[c].header, c); });
    line([&](size_t c) {  // markdown alignment row: ":---" left, "---:" right
      return columns_[c].left ? fmt::format(":{:-<{}}", "", w[c] - 1) : fmt::format("{:-<{}}:", "", w[c] - 1);
    });
    for (const auto& row : rows_) line([&](size_t c) { return pad(row[c], c); });
  }

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// The title lines of a bandwidth bench, the columns of its table and the cells of a row
// (gbs: 0 when the row is not a bandwidth figure).
inline void print_bandwidth_title(const std::string& title, const CopyBandwidth& copy) {
  fmt::print("{}\nlimit: the copy bandwidth beside each row (copy GB/s: the best of the copies run between its timed\n"
             "calls, three ways in turn). At the start: {}\n",
             title, describe(copy));
}
inline std::vector<Column> bandwidth_columns() {
  return {{"op", true}, {"shape", true}, {"median ms"}, {"GB/s"}, {"copy GB/s"}, {"% copy"}};
}
inline std::vector<std::string> bandwidth_cells(const std::string& op, const std::string& shape, double ms,
                                                double gbs, double copy_gbs) {
  return {op,
          shape,
          fmt_ms(ms),
          gbs > 0 ? fmt::format("{:.1f}", gbs) : "-",
          fmt::format("{:.1f}", copy_gbs),
          gbs > 0 ? fmt::format("{:.1f}%", 100.0 * gbs / copy_gbs) : "-"};
}

// PyTorch timings of the same ops: bench/torch_peer.py (spec syntax there), started once
// and kept open; time(spec) sends it one spec and waits for its median, so a bench asks for
// each row right after timing its own side of it.
class TorchPeer {
 public:
  static constexpr const char* kPython = "/usr/bin/python3";  // Debian's, with python3-torch

  // Starts the peer with `threads` threads and the default reps/warm-up of its specs (a
  // spec may override them), and waits until torch is imported. When torch cannot be
  // imported or the script cannot start, prints a note; the peer is then unavailable and
  // the bench goes on without the torch columns.
  // NOTE: ignores SIGPIPE for the process, so that a peer that died cannot kill the bench.
  explicit TorchPeer(int threads, int reps = 9, int warmup = 1) {
    if (std::system(fmt::format("{} -c 'import torch' >/dev/null 2>&1", kPython).c_str()) != 0) {
      fmt::print("note: {} cannot import torch (tools/install-deps.sh --bench installs python3-torch); "
                 "no PyTorch columns\n\n",
                 kPython);
      return;
    }
    std::signal(SIGPIPE, SIG_IGN);
    const std::string script = (std::filesystem::path(__FILE__).parent_path() / "torch_peer.py").string();
    const std::string args[] = {kPython, script, "--threads", std::to_string(threads), "--reps", std::to_string(reps),
                                "--warmup", std::to_string(warmup)};
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int to_peer[2], from_peer[2];
    if (pipe(to_peer) != 0) return;
    if (pipe(from_peer) != 0) {
      close(to_peer[0]);
      close(to_peer[1]);
      return;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_peer[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_peer[1], STDOUT_FILENO);
    for (int fd : {to_peer[0], to_peer[1], from_peer[0], from_peer[1]}) posix_spawn_file_actions_addclose(&actions, fd);
    std::fflush(stdout);
    const int err = posix_spawn(&pid_, kPython, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(to_peer[0]);
    close(from_peer[1]);
    to_ = fdopen(to_peer[1], "w");
    from_ = fdopen(from_peer[0], "r");
    if (err != 0) {
      pid_ = -1;
      fmt::print("note: could not start {}: {}; no PyTorch columns\n\n", script, std::strerror(err));
      return;
    }
    const std::optional<std::string> hello = read_line();  // "# torch 1.13..., 2 threads, ..."
    if (!hello || hello->rfind("# ", 0) != 0) {
      fmt::print("note: {} did not start (its message is above); no PyTorch columns\n\n", script);
      return;
    }
    about_ = hello->substr(2);
    available_ = true;
  }
  ~TorchPeer() {
    if (to_) std::fclose(to_);  // end of input: the peer exits
    if (from_) std::fclose(from_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  TorchPeer(const TorchPeer&) = delete;
  TorchPeer& operator=(const TorchPeer&) = delete;

  bool available() const { return available_; }
  const std::string& about() const { return about_; }  // torch version, threads, reps

  // PyTorch's median ms for one spec ("exp 1024"); nullopt for an empty spec or when the
  // peer is unavailable. A peer that fails on a spec (its message goes to stderr) answers
  // nothing more.
  std::optional<double> time(const std::string& spec) {
    const std::optional<std::vector<double>> values = answer(spec);
    return values ? std::optional<double>(values->front()) : std::nullopt;
  }

  // All the numbers the peer answers one spec with: its median ms for most specs, several
  // for some (infer: accuracies and seconds). nullopt as for time().
  std::optional<std::vector<double>> answer(const std::string& spec) {
    if (!available_ || spec.empty()) return std::nullopt;
    fmt::print(to_, "{}\n", spec);
    std::fflush(to_);
    const std::optional<std::string> line = read_line();  // "NUMBER [NUMBER ...]\tSPEC"
    const size_t tab = line ? line->find('\t') : std::string::npos;
    std::vector<double> values;
    if (tab != std::string::npos && line->substr(tab + 1) == spec) {
      const std::string numbers = line->substr(0, tab);
      const char* at = numbers.c_str();
      for (char* end = nullptr;; at = end) {
        const double v = std::strtod(at, &end);
        if (end == at) break;
        values.push_back(v);
      }
      if (*at != '\0') values.clear();  // something other than numbers
    }
    if (values.empty()) {
      fmt::print("note: {} stopped answering at spec '{}'\n", "torch_peer.py", spec);
      available_ = false;
      failed_ = true;
      return std::nullopt;
    }
    return values;
  }

  // The bench's table: its own columns, then "torch ms" and "speedup" when the peer ran.
  Table table(std::vector<Column> columns) const {
    Table t(std::move(columns));
    if (ran()) {
      t.add_column({"torch ms"});
      t.add_column({"speedup"});
    }
    return t;
  }
  // Adds a row: the bench's cells, then PyTorch's time and speedup = torch ms / sg ms
  // (above 1: softgrad is faster); "-" for a row with no PyTorch time.
  void add_row(Table& table, std::vector<std::string> cells, std::optional<double> torch_ms, double sg_ms) const {
    if (ran()) {
      cells.push_back(torch_ms ? fmt_ms(*torch_ms) : "-");
      cells.push_back(torch_ms ? fmt::format("{:.2f}x", *torch_ms / sg_ms) : "-");
    }
    table.add_row(std::move(cells));
  }
  // The line under the bench's title: what the peer ran.
  void print_about() const {
    if (ran()) fmt::print("PyTorch peer (same run, each row right after softgrad's): {}\n", about_);
    fmt::print("\n");
  }
  void print(const Table& table) const {
    table.print();
    fmt::print("\n");
    if (ran()) fmt::print("speedup = torch ms / softgrad ms (above 1: softgrad is faster).\n");
  }

 private:
  bool ran() const { return available_ || failed_; }
  std::optional<std::string> read_line() {
    std::string line;
    for (int c; (c = std::fgetc(from_)) != EOF && c != '\n';) line += static_cast<char>(c);
    if (line.empty() && std::feof(from_)) return std::nullopt;
    return line;
  }

  bool available_ = false, failed_ = false;
  std::string about_;
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

// GFLOP/s of one 2048^3 product on the library's threads: OpenBLAS's sgemm (float32), or
// oneDNN's bfloat16 GEMM with float32 results (sg::gemm_bf16; only where
// sg::onednn_info().bf16_native), the limit of the bf16 rows.
class GemmProbe {
 public:
  explicit GemmProbe(sg::Dtype operands = sg::kFloat32) : bf16_(operands == sg::kBFloat16) {
    sg::Generator gen(1);
    a_ = sg::rand({kN, kN}, gen).to(operands);
    b_ = sg::rand({kN, kN}, gen).to(operands);
    c_ = sg::empty({kN, kN});
    run();  // warm-up (oneDNN creates its primitive here)
  }
  double run() {
    const auto t0 = Clock::now();
    if (bf16_) {
      sg::gemm_bf16(false, false, kN, kN, kN, a_.data_ptr<sg::bfloat16>(), kN, b_.data_ptr<sg::bfloat16>(), kN, 0.0f,
                    c_.data_ptr<float>(), kN);
    } else {
      sg::gemm<float>(false, false, kN, kN, kN, 1.0f, a_.data_ptr<float>(), kN, b_.data_ptr<float>(), kN, 0.0f,
                      c_.data_ptr<float>(), kN);
    }
    const double gflops = 2.0 * kN * kN * kN / ms_since(t0) / 1e6;
    best_ = std::max(best_, gflops);
    return gflops;
  }
  double best() const { return best_; }

 private:
  static constexpr int64_t kN = 2048;
  bool bf16_;
  sg::Tensor a_, b_, c_;
  double best_ = 0.0;
};
using SgemmProbe = GemmProbe;  // GemmProbe() is the sgemm probe

}  // namespace sgbench
