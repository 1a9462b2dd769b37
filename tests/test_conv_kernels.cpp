// The pooling and batch-norm kernels (ops/pooling_kernels.h, ops/batch_norm_kernels.h): the
// vectorized kernels against their naive references, float32 and float64, over widths that
// are not a multiple of the vector length, 1x1 and large planes (enough planes to thread),
// strides 1, 2 (the vector paths) and 3 (scalar), padding, dilation and ceil_mode; the max
// pool on data full of ties, NaN and infinities (values and indices bit for bit).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ops/batch_norm_kernels.h"
#include "ops/pooling_kernels.h"
#include "tests/test_util.h"

namespace {

using sg::kernels::BatchNormDims;
using sg::kernels::Pool2dDims;

struct PoolCase {
  int64_t kh, kw, sh, sw, ph, pw, dh = 1, dw = 1;
  bool ceil_mode = false;
};

std::string describe(const Pool2dDims& g, bool ceil_mode) {
  return "P " + std::to_string(g.P) + " H " + std::to_string(g.H) + " W " + std::to_string(g.W) + " k (" +
         std::to_string(g.kh) + ", " + std::to_string(g.kw) + ") s (" + std::to_string(g.sh) + ", " +
         std::to_string(g.sw) + ") p (" + std::to_string(g.ph) + ", " + std::to_string(g.pw) + ") d (" +
         std::to_string(g.dh) + ", " + std::to_string(g.dw) + ")" + (ceil_mode ? " ceil" : "");
}

// The geometry of case c on P planes of H x W, or Ho = 0 when the window does not fit.
Pool2dDims dims_of(const PoolCase& c, int64_t P, int64_t H, int64_t W) {
  Pool2dDims g{.P = P, .H = H, .W = W, .kh = c.kh, .kw = c.kw, .sh = c.sh, .sw = c.sw, .ph = c.ph, .pw = c.pw,
               .dh = c.dh, .dw = c.dw};
  g.Ho = sg::kernels::pool_output_size(H, c.kh, c.ph, c.sh, c.dh, c.ceil_mode);
  g.Wo = sg::kernels::pool_output_size(W, c.kw, c.pw, c.sw, c.dw, c.ceil_mode);
  if (g.Wo < 1) g.Ho = 0;
  return g;
}

// Windows common in CNNs (2x2 stride 2, 3x3 stride 2 padding 1, 3x3 stride 1 padding 1) and
// the rest of the geometry: both paddings, ceil_mode, dilation, mixed and scalar strides.
const std::vector<PoolCase>& pool_cases() {
  static const std::vector<PoolCase> all = {
      {2, 2, 2, 2, 0, 0},
      {3, 3, 2, 2, 1, 1},
      {3, 3, 1, 1, 1, 1},
      {3, 3, 1, 1, 0, 0},
      {2, 2, 1, 1, 0, 0},
      {1, 1, 1, 1, 0, 0},
      {1, 1, 2, 2, 0, 0},
      {5, 5, 2, 2, 2, 2},
      {1, 4, 1, 2, 0, 2},
      {3, 2, 2, 1, 1, 0},
      {2, 2, 2, 2, 0, 0, 1, 1, true},
      {3, 3, 2, 2, 1, 1, 1, 1, true},
      {2, 2, 2, 2, 1, 1, 1, 1, true},
      {3, 3, 1, 1, 2, 2, 2, 2},  // dilation (max only)
      {3, 3, 2, 2, 1, 2, 1, 2},
      {2, 3, 2, 2, 0, 1, 1, 3, true},
      {3, 3, 3, 3, 1, 1},  // stride 3: the scalar planes
  };
  return all;
}

// Plane sizes: 1x1, widths around the vector lengths (4, 8, 16 floats; 2, 4, 8 doubles) and
// not multiples of them, and large planes (with P, enough work to split over threads).
struct PlaneSize {
  int64_t P, H, W;
};
const std::vector<PlaneSize>& plane_sizes() {
  static const std::vector<PlaneSize> all = {{3, 1, 1},  {2, 5, 3},   {2, 4, 7},  {3, 9, 16}, {2, 7, 17},
                                             {2, 6, 31}, {1, 8, 33},  {2, 5, 64}, {2, 11, 65}, {1, 3, 100},
                                             {4, 56, 56}, {2, 57, 57}, {3, 131, 133}};
  return all;
}

// Max-pool data: small integers (ties everywhere) with NaN, -inf and +inf sprinkled in.
template <typename T> std::vector<T> tie_data(int64_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<T> x(static_cast<size_t>(n));
  for (T& v : x) {
    const int r = pick(rng);
    v = r < 2   ? std::numeric_limits<T>::quiet_NaN()
        : r < 5 ? -std::numeric_limits<T>::infinity()
        : r < 6 ? std::numeric_limits<T>::infinity()
                : static_cast<T>(r % 4);
  }
  return x;
}

template <typename T> std::vector<T> uniform_data(int64_t n, std::mt19937_64& rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> x(static_cast<size_t>(n));
  for (T& v : x) v = static_cast<T>(u(rng));
  return x;
}

template <typename T> bool same_bits(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof(T)) == 0;
}

// max |a - b| <= tol * max(1, max |b|)
template <typename T> void check_close(const std::vector<T>& a, const std::vector<T>& b, double tol, const char* what) {
  REQUIRE(a.size() == b.size());
  double worst = 0, scale = 1;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    const double e = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  INFO(what << ": worst at " << at << ": " << a[at] << " vs " << b[at]);
  CHECK(worst <= tol * scale);
}

template <typename T> void check_max_pool(const Pool2dDims& g, std::mt19937_64& rng) {
  const std::vector<T> x = tie_data<T>(g.P * g.H * g.W, rng);
  const size_t n_out = static_cast<size_t>(g.P * g.Ho * g.Wo);
  std::vector<T> y(n_out), y0(n_out);
  std::vector<int64_t> idx(n_out), idx0(n_out);
  sg::kernels::max_pool2d_forward<T>(x.data(), y.data(), idx.data(), g);
  sg::kernels::max_pool2d_forward_naive<T>(x.data(), y0.data(), idx0.data(), g);
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < n_out; ++i)
    if (!same_bits(y[i], y0[i]) || idx[i] != idx0[i]) {
      if (bad++ == 0) first_bad = i;
    }
  INFO("first mismatch at output " << first_bad << ": " << y[first_bad] << " @ " << idx[first_bad] << " vs naive "
                                   << y0[first_bad] << " @ " << idx0[first_bad]);
  CHECK(bad == 0);
}

// Forward bit for bit except a window that is the whole plane (a vector sum: another order);
// backward up to the order of the additions.
template <typename T> void check_avg_pool(const Pool2dDims& g, bool count_include_pad, std::mt19937_64& rng) {
  const double tol = sizeof(T) == 4 ? 2e-6 : 1e-14;
  const bool whole = g.Ho == 1 && g.Wo == 1 && g.kh == g.H && g.kw == g.W && g.ph == 0 && g.pw == 0;
  // The naive kernel sums a whole plane in one running T: its rounding grows with sqrt(H W).
  const double whole_tol = (sizeof(T) == 4 ? 2.4e-7 : 4.4e-16) * std::sqrt(static_cast<double>(g.H * g.W));
  const std::vector<T> x = uniform_data<T>(g.P * g.H * g.W, rng, -1, 3);
  const std::vector<T> dy = uniform_data<T>(g.P * g.Ho * g.Wo, rng);
  std::vector<T> y(dy.size()), y0(dy.size()), dx(x.size(), T(0)), dx0(x.size(), T(0));
  sg::kernels::avg_pool2d_forward<T>(x.data(), y.data(), g, count_include_pad);
  sg::kernels::avg_pool2d_forward_naive<T>(x.data(), y0.data(), g, count_include_pad);
  check_close(y, y0, whole ? whole_tol : 0.0, "avg_pool2d forward");
  sg::kernels::avg_pool2d_backward<T>(dy.data(), dx.data(), g, count_include_pad);
  sg::kernels::avg_pool2d_backward_naive<T>(dy.data(), dx0.data(), g, count_include_pad);
  check_close(dx, dx0, tol, "avg_pool2d backward");
}

}  // namespace

TEST_CASE("max_pool2d kernel equals the naive one bit for bit (values and indices) on ties, NaN and infinities") {
  std::mt19937_64 rng(1);
  for (const PoolCase& c : pool_cases())
    for (const PlaneSize& s : plane_sizes()) {
      const Pool2dDims g = dims_of(c, s.P, s.H, s.W);
      if (g.Ho < 1 || c.ph > (c.dh * (c.kh - 1) + 1) / 2 || c.pw > (c.dw * (c.kw - 1) + 1) / 2) continue;
      CAPTURE(describe(g, c.ceil_mode));
      check_max_pool<float>(g, rng);
      check_max_pool<double>(g, rng);
    }
  // Whole rows of -inf, of NaN, and a NaN after a NaN (the later one wins, as PyTorch).
  for (const int64_t W : {9, 40}) {
    const Pool2dDims g = dims_of({2, 2, 2, 2, 0, 0}, 1, 4, W);
    std::vector<float> x(static_cast<size_t>(4 * W), -std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < W; ++i) x[static_cast<size_t>(2 * W + i)] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> y(static_cast<size_t>(g.Ho * g.Wo)), y0(y.size());
    std::vector<int64_t> idx(y.size()), idx0(y.size());
    sg::kernels::max_pool2d_forward<float>(x.data(), y.data(), idx.data(), g);
    sg::kernels::max_pool2d_forward_naive<float>(x.data(), y0.data(), idx0.data(), g);
    CHECK(idx == idx0);
    CHECK(idx[0] == 0);              // all -inf: the first tap
    CHECK(idx[g.Wo] == 2 * W + 1);  // NaN, NaN / -inf, -inf: the last NaN
    CHECK(std::isnan(y[g.Wo]));
  }
}

TEST_CASE("avg_pool2d and adaptive_avg_pool2d kernels equal the naive ones, forward and backward") {
  std::mt19937_64 rng(2);
  for (const PoolCase& c : pool_cases()) {
    if (c.dh != 1 || c.dw != 1) continue;  // avg_pool2d has no dilation
    for (const PlaneSize& s : plane_sizes()) {
      const Pool2dDims g = dims_of(c, s.P, s.H, s.W);
      if (g.Ho < 1 || c.ph > c.kh / 2 || c.pw > c.kw / 2) continue;
      for (const bool include_pad : {true, false}) {
        CAPTURE(describe(g, c.ceil_mode));
        CAPTURE(include_pad);
        check_avg_pool<float>(g, include_pad, rng);
        check_avg_pool<double>(g, include_pad, rng);
      }
    }
  }
  // The whole plane as one window (the global average pool through avg_pool2d).
  for (const PlaneSize& s : plane_sizes()) {
    const Pool2dDims g = dims_of({s.H, s.W, s.H, s.W, 0, 0}, s.P, s.H, s.W);
    CAPTURE(describe(g, false));
    check_avg_pool<float>(g, true, rng);
    check_avg_pool<double>(g, true, rng);
  }
  // Adaptive: global, sizes that divide (the avg_pool2d kernels) and sizes that do not.
  auto adaptive = [&]<typename T>(int64_t P, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    CAPTURE(std::to_string(H) + "x" + std::to_string(W) + " -> " + std::to_string(Ho) + "x" + std::to_string(Wo));
    const double tol = sizeof(T) == 4 ? 2e-6 : 1e-14;
    const Pool2dDims g{.P = P, .H = H, .W = W, .Ho = Ho, .Wo = Wo};
    const std::vector<T> x = uniform_data<T>(P * H * W, rng), dy = uniform_data<T>(P * Ho * Wo, rng);
    std::vector<T> y(dy.size()), y0(dy.size()), dx(x.size(), T(0)), dx0(x.size(), T(0));
    sg::kernels::adaptive_avg_pool2d_forward<T>(x.data(), y.data(), g);
    sg::kernels::adaptive_avg_pool2d_forward_naive<T>(x.data(), y0.data(), g);
    // (a window of the whole plane is summed in another order: see check_avg_pool)
    check_close(y, y0, tol * std::sqrt(static_cast<double>(H * W / (Ho * Wo))), "adaptive_avg_pool2d forward");
    sg::kernels::adaptive_avg_pool2d_backward<T>(dy.data(), dx.data(), g);
    sg::kernels::adaptive_avg_pool2d_backward_naive<T>(dy.data(), dx0.data(), g);
    check_close(dx, dx0, tol, "adaptive_avg_pool2d backward");
  };
  for (const auto& [H, W, Ho, Wo] : std::vector<std::array<int64_t, 4>>{
           {7, 7, 1, 1}, {56, 56, 1, 1}, {1, 1, 1, 1}, {56, 56, 28, 28}, {34, 66, 17, 33}, {12, 20, 3, 5},
           {13, 17, 4, 6}, {5, 6, 7, 9}}) {
    adaptive.operator()<float>(6, H, W, Ho, Wo);
    adaptive.operator()<double>(3, H, W, Ho, Wo);
  }
}

TEST_CASE("batch_norm kernels equal the naive ones: statistics, forward, training and eval backward") {
  std::mt19937_64 rng(3);
  auto run = [&]<typename T>(BatchNormDims s, bool affine, double offset) {
    CAPTURE(std::to_string(s.N) + " x " + std::to_string(s.C) + " x " + std::to_string(s.S) +
            (affine ? " affine" : "") + " offset " + std::to_string(offset));
    // Both compute in double: float32 y and dx differ at most in their last bit.
    const double tol = sizeof(T) == 4 ? 3e-7 : 1e-12;
    const int64_t n = s.N * s.C * s.S;
    const std::vector<T> x = uniform_data<T>(n, rng, offset - 1.5, offset + 2.5), dy = uniform_data<T>(n, rng);
    const std::vector<T> w = uniform_data<T>(s.C, rng, 0.5, 1.5), b = uniform_data<T>(s.C, rng);
    const T* pw = affine ? w.data() : nullptr;
    const T* pb = affine ? b.data() : nullptr;
    std::vector<double> mean(static_cast<size_t>(s.C)), var(mean.size()), mean0(mean.size()), var0(mean.size());
    sg::kernels::batch_norm_stats<T>(x.data(), mean.data(), var.data(), s);
    sg::kernels::batch_norm_stats_naive<T>(x.data(), mean0.data(), var0.data(), s);
    check_close(mean, mean0, 1e-13, "mean");
    check_close(var, var0, 1e-13, "var");
    std::vector<double> rstd(mean.size());
    for (size_t c = 0; c < rstd.size(); ++c) rstd[c] = 1 / std::sqrt(var0[c] + 1e-5);
    std::vector<T> y(x.size()), y0(x.size());
    sg::kernels::batch_norm_forward<T>(x.data(), pw, pb, mean0.data(), rstd.data(), y.data(), s);
    sg::kernels::batch_norm_forward_naive<T>(x.data(), pw, pb, mean0.data(), rstd.data(), y0.data(), s);
    check_close(y, y0, tol, "y");
    for (const bool training : {true, false}) {
      CAPTURE(training);
      std::vector<T> dx(x.size()), dx0(x.size()), dw(w.size()), dw0(w.size()), db(w.size()), db0(w.size());
      sg::kernels::batch_norm_backward<T>(x.data(), pw, mean0.data(), rstd.data(), dy.data(), dx.data(), dw.data(),
                                          db.data(), s, training);
      sg::kernels::batch_norm_backward_naive<T>(x.data(), pw, mean0.data(), rstd.data(), dy.data(), dx0.data(),
                                                dw0.data(), db0.data(), s, training);
      check_close(dx, dx0, tol, "dx");
      check_close(dw, dw0, sizeof(T) == 4 ? 1e-6 : 1e-12, "dweight");
      check_close(db, db0, sizeof(T) == 4 ? 1e-6 : 1e-12, "dbias");
      // Only dx, or only the parameters: the same numbers.
      std::vector<T> dx_only(x.size()), db_only(w.size());
      sg::kernels::batch_norm_backward<T>(x.data(), pw, mean0.data(), rstd.data(), dy.data(), dx_only.data(), nullptr,
                                          nullptr, s, training);
      CHECK(dx_only == dx);
      sg::kernels::batch_norm_backward<T>(x.data(), pw, mean0.data(), rstd.data(), dy.data(), nullptr, nullptr,
                                          db_only.data(), s, training);
      CHECK(db_only == db);
    }
  };
  // S: 1 ((N, C) input), below (the kernels' by-column path), at and past the vector
  // lengths, 7x7 and 56x56 planes.
  for (const int64_t S : {1, 3, 7, 16, 17, 49, 100, 3136})
    for (const int64_t N : {2, 5})
      for (const int64_t C : {1, 3, 8}) {
        const BatchNormDims s{N, C, S};
        run.operator()<float>(s, C != 3, 0.5);
        run.operator()<double>(s, C != 3, 0.5);
      }
  // A mean far from 0 (y = x a + (b - mean a) in float32 would lose digits), and enough
  // channels and values for the kernels to thread.
  run.operator()<float>({4, 3, 300}, true, 40.0);
  run.operator()<float>({8, 32, 3136}, true, 0.0);
  run.operator()<double>({8, 32, 3136}, true, 0.0);
  run.operator()<float>({2048, 256, 1}, true, 0.0);  // BatchNorm1d's (N, C), by columns
  run.operator()<float>({300, 70, 3}, false, 2.0);
}
