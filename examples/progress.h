#pragma once
// A live progress line for the example trainers, and the metrics CSV they write.
//
//   ProgressLine progress(stdout);            // live when stdout is a terminal
//   progress.update(step, steps, "loss 0.0712  acc 97.8%");
//   progress.finish("epoch 1/10  loss ...");  // the epoch's summary, always its own line
//
// On a terminal the line redraws in place ('\r', erase to end of line) at most ten times a
// second with a bar, samples/s and the epoch's ETA. When the output is a file or a pipe
// (CI logs, `| tee`) nothing is redrawn: the same text is printed as plain lines at each
// quarter of the epoch.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace trainer {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// "1m 05s", "12s", "0.4s".
inline std::string format_duration(double s) {
  if (s < 10) return fmt::format("{:.1f}s", s);
  if (s < 60) return fmt::format("{:.0f}s", s);
  const int total = static_cast<int>(s + 0.5);
  return fmt::format("{}m {:02d}s", total / 60, total % 60);
}

class ProgressLine {
 public:
  explicit ProgressLine(std::FILE* out = stdout) : out_(out), live_(isatty(fileno(out)) == 1) {}

  // Starts timing an epoch of `steps` steps of `batch` samples; `prefix` leads every line.
  void start(std::string prefix, int64_t steps, int64_t samples) {
    prefix_ = std::move(prefix);
    steps_ = steps;
    samples_ = samples;
    t0_ = Clock::now();
    last_draw_ = t0_ - std::chrono::seconds(1);
    next_plain_quarter_ = 1;
  }

  // After `done` of the epoch's steps (covering `samples_done` samples); `stats` is the
  // caller's text (running loss and accuracy).
  void update(int64_t done, int64_t samples_done, std::string_view stats) {
    const auto now = Clock::now();
    if (live_) {
      if (now - last_draw_ < std::chrono::milliseconds(100) && done < steps_) return;
      last_draw_ = now;
      fmt::print(out_, "\r{}\x1b[K", line(done, samples_done, stats));
      std::fflush(out_);
    } else if (steps_ >= 4 && done < steps_ && done * 4 >= next_plain_quarter_ * steps_) {
      while (done * 4 >= next_plain_quarter_ * steps_) ++next_plain_quarter_;
      fmt::print(out_, "{}\n", line(done, samples_done, stats));
      std::fflush(out_);
    }
  }

  // The epoch's last line: replaces the live line, or follows the plain ones.
  void finish(std::string_view text) {
    if (live_)
      fmt::print(out_, "\r{}\x1b[K\n", text);
    else
      fmt::print(out_, "{}\n", text);
    std::fflush(out_);
  }

  double elapsed() const { return seconds_since(t0_); }

 private:
  std::string line(int64_t done, int64_t samples_done, std::string_view stats) const {
    constexpr int kBar = 20;
    const double t = seconds_since(t0_);
    const double frac = steps_ > 0 ? static_cast<double>(done) / static_cast<double>(steps_) : 1.0;
    const int filled = static_cast<int>(frac * kBar);
    const double rate = t > 0 ? static_cast<double>(samples_done) / t : 0.0;
    const double eta = done > 0 ? t * static_cast<double>(steps_ - done) / static_cast<double>(done) : 0.0;
    return fmt::format("{} [{}{}] {}/{}  {}  {:.0f} samples/s  ETA {}", prefix_, std::string(filled, '#'),
                       std::string(kBar - filled, '.'), done, steps_, stats, rate, format_duration(eta));
  }

  std::FILE* out_;
  bool live_;
  std::string prefix_;
  int64_t steps_ = 0, samples_ = 0;
  Clock::time_point t0_, last_draw_;
  int64_t next_plain_quarter_ = 1;
};

// One row per epoch; the header is written when the file is created. A resumed run
// appends to the file it is given.
class MetricsCsv {
 public:
  MetricsCsv() = default;
  MetricsCsv(const std::string& path, const std::vector<std::string>& columns, bool append) : columns_(columns.size()) {
    if (path.empty()) return;
    const bool exists = std::filesystem::exists(path);
    file_.open(path, append ? std::ios::app : std::ios::trunc);
    SG_CHECK(file_.good(), "--metrics: cannot open '{}' for writing", path);
    if (!(append && exists)) file_ << fmt::format("{}\n", fmt::join(columns, ","));
    file_.flush();
  }
  void row(const std::vector<std::string>& values) {
    if (!file_.is_open()) return;
    SG_CHECK(values.size() == columns_, "MetricsCsv: {} for {}", sg::plural(values.size(), "value"),
             sg::plural(columns_, "column"));
    file_ << fmt::format("{}\n", fmt::join(values, ",")) << std::flush;
  }

 private:
  std::ofstream file_;
  size_t columns_ = 0;
};

}  // namespace trainer
