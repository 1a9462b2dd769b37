// The integer kernels of quant/int_kernels.h: fixed-point multipliers and requantization (with
// and without a fused bias) bit for bit against an exact reference; i-exp's vector kernel bit
// for bit against its scalar twin and within stated bounds of its float64 form and of exp; the
// integer softmax (polynomial and table) within 1 LSB of round(256 softmax) in float64, rows
// summing to 256 +- 1, the same bits on 1 and 2 threads; i-GELU and the integer LayerNorm
// within bounds derived from their scales, the LayerNorm's vector kernel bit for bit against
// its scalar twin; isqrt exhaustively. Measured errors are printed (MESSAGE) so a run shows
// how close each kernel comes to its bound.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "quant/int_kernels.h"
#include "test_util.h"

using sgtest::check_error;
namespace q = sg::quant;

namespace {

__extension__ typedef unsigned __int128 uint128;

int64_t rand_int(sg::Generator& gen, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(gen.below(static_cast<uint64_t>(hi - lo + 1)));
}

// The exact value of round_half_away(x * m 2^-s): x m < 2^63 and the scaling by a power of
// two are exact in long double (64-bit significand on x86), and roundl rounds ties away.
int64_t exact_fixed(int64_t x, q::FixedPoint f) {
  const long double v = std::ldexp(static_cast<long double>(x) * f.multiplier, -f.shift);
  return static_cast<int64_t>(std::roundl(v));
}

// Thread count for a scope, restored after (softgrad's setting is global).
struct Threads {
  int saved = sg::get_num_threads();
  explicit Threads(int n) { sg::set_num_threads(n); }
  ~Threads() { sg::set_num_threads(saved); }
};

// Row-wise comparison of an integer softmax against the float64 reference: the largest
// |out - ref| and |256 - row sum| seen, and the first offending row.
struct SoftmaxStats {
  int max_dev = 0, max_sum_dev = 0;
  int64_t rows = 0;
  std::string first_bad;
  void add(const uint8_t* out, const uint8_t* ref, int64_t n, const std::string& label) {
    int dev = 0, sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      dev = std::max(dev, std::abs(int{out[j]} - int{ref[j]}));
      sum += out[j];
    }
    const int sum_dev = std::abs(256 - sum);
    if ((dev > 1 || sum_dev > 1) && first_bad.empty())
      first_bad = fmt::format("{}: |out - ref| = {}, row sum {}", label, dev, sum);
    max_dev = std::max(max_dev, dev);
    max_sum_dev = std::max(max_sum_dev, sum_dev);
    ++rows;
  }
  void check(const char* what) const {
    MESSAGE(fmt::format("{}: {} rows, max |out - round(256 softmax)| = {} LSB, max |256 - row sum| = {}", what, rows,
                        max_dev, max_sum_dev));
    CHECK_MESSAGE(first_bad.empty(), first_bad);
  }
};

// softmax_u8 on rows (rows, n): bit-identical to the scalar twin, then against the reference.
void run_softmax(const std::vector<int32_t>& s, int64_t rows, int64_t n, double scale, const std::string& label,
                 SoftmaxStats& stats) {
  const q::ExpParams p = q::make_exp_params(scale);
  std::vector<uint8_t> out(s.size()), naive(s.size()), ref(s.size());
  q::softmax_u8(s.data(), rows, n, n, p, out.data(), n);
  q::softmax_u8_naive(s.data(), rows, n, n, p, naive.data(), n);
  q::softmax_u8_reference(s.data(), rows, n, n, scale, ref.data(), n);
  CHECK_MESSAGE(out == naive, label << ": vector and scalar kernels differ");
  for (int64_t r = 0; r < rows; ++r)
    stats.add(out.data() + r * n, ref.data() + r * n, n, fmt::format("{} row {} (n = {})", label, r, n));
}

void run_softmax_lut(const std::vector<int8_t>& s, int64_t rows, int64_t n, double scale, const std::string& label,
                     SoftmaxStats& stats) {
  const q::ExpTable t = q::make_exp_table(scale);
  std::vector<uint8_t> out(s.size()), ref(s.size());
  const std::vector<int32_t> s32(s.begin(), s.end());
  q::softmax_u8_lut(s.data(), rows, n, n, t, out.data(), n);
  q::softmax_u8_reference(s32.data(), rows, n, n, scale, ref.data(), n);
  for (int64_t r = 0; r < rows; ++r)
    stats.add(out.data() + r * n, ref.data() + r * n, n, fmt::format("{} row {} (n = {})", label, r, n));
}

}  // namespace

// ---- fixed point ----------------------------------------------------------------------------

TEST_CASE("to_fixed_point: 31-bit multiplier, relative error <= 2^-31, range errors") {
  sg::Generator gen(1);
  std::vector<double> reals = {0x1p-40, 0x1p-40 * 1.5, 0.25, 0.5, 1.0, std::nextafter(1.0, 0.0), 1.0 / 3.0, 0.7,
                               std::nextafter(0x1p30, 0.0), 0x1p30 * (1 - 0x1p-33), 12345.678};
  for (int i = 0; i < 20000; ++i) reals.push_back(std::exp2(-40 + 70 * gen.uniform()));
  for (double r : reals) {
    CAPTURE(r);
    const q::FixedPoint f = q::to_fixed_point(r);
    REQUIRE(f.multiplier >= (1 << 30));
    REQUIRE(f.shift >= 1);
    const double back = std::ldexp(static_cast<double>(f.multiplier), -f.shift);
    CHECK(std::abs(back / r - 1) <= 0x1p-31);
  }
  check_error([] { q::to_fixed_point(0.0); }, {"to_fixed_point", "0"});
  check_error([] { q::to_fixed_point(-0.5); }, {"-0.5"});
  check_error([] { q::to_fixed_point(0x1p30); }, {"1073741824"});
  check_error([] { q::to_fixed_point(0x1p-41); }, {"to_fixed_point"});
  check_error([] { q::to_fixed_point(std::nan("")); }, {"nan"});
}

TEST_CASE("fixed_multiply: exact round half away from zero") {
  // Ties: factor 1/2 (shift 31) and 1/4 (shift 32), both signs.
  const q::FixedPoint half = q::to_fixed_point(0.5), quarter = q::to_fixed_point(0.25);
  CHECK(q::fixed_multiply(1, half) == 1);
  CHECK(q::fixed_multiply(-1, half) == -1);
  CHECK(q::fixed_multiply(3, half) == 2);
  CHECK(q::fixed_multiply(-3, half) == -2);
  CHECK(q::fixed_multiply(2, quarter) == 1);
  CHECK(q::fixed_multiply(-2, quarter) == -1);
  CHECK(q::fixed_multiply(6, quarter) == 2);
  CHECK(q::fixed_multiply(-6, quarter) == -2);
  CHECK(q::fixed_multiply(5, quarter) == 1);   // 1.25
  CHECK(q::fixed_multiply(-7, quarter) == -2);  // -1.75
  CHECK(q::fixed_multiply(0, half) == 0);
  // Huge and tiny factors at the int32 extremes (shift 1 and shift > 63).
  const q::FixedPoint big = q::to_fixed_point(std::nextafter(0x1p30, 0.0)), tiny = q::to_fixed_point(0x1p-40);
  CHECK(big.shift == 1);
  CHECK(tiny.shift > 63);
  for (int64_t x : {int64_t{INT32_MIN}, int64_t{INT32_MAX}, int64_t{-1}, int64_t{1}, int64_t{0}}) {
    CAPTURE(x);
    CHECK(q::fixed_multiply(x, big) == exact_fixed(x, big));
    CHECK(q::fixed_multiply(x, tiny) == 0);
  }
  // Ties at every shift: factor 2^-j times x = +-(2k + 1) 2^(j-1) is +-(k + 1/2).
  for (int j = 1; j <= 40; ++j) {
    const q::FixedPoint f = q::to_fixed_point(std::ldexp(1.0, -j));  // multiplier 2^30, shift 30 + j
    for (int64_t k : {0, 1, 2, 7, 1000}) {
      if (j > 31 || ((2 * k + 1) << (j - 1)) > INT32_MAX) continue;
      const int64_t x = (2 * k + 1) << (j - 1);  // x 2^-j = k + 1/2
      CHECK(q::fixed_multiply(x, f) == k + 1);
      CHECK(q::fixed_multiply(-x, f) == -(k + 1));
    }
  }
  // Random factors and values against the exact long double value, and within 1/2 + |x r|
  // 2^-31 of x r itself.
  sg::Generator gen(2);
  int bad = 0;
  for (int i = 0; i < 200000; ++i) {
    const double r = std::exp2(-40 + 70 * gen.uniform());
    const q::FixedPoint f = q::to_fixed_point(r);
    const int bits = static_cast<int>(rand_int(gen, 0, 31));
    const int64_t x = rand_int(gen, -(int64_t{1} << bits), (int64_t{1} << bits) - 1);
    const int64_t got = q::fixed_multiply(x, f), want = exact_fixed(x, f);
    if (got != want && bad++ < 5) FAIL_CHECK(fmt::format("x = {}, f = ({}, {}): got {}, want {}", x, f.multiplier, f.shift, got, want));
    CHECK_LE(std::abs(static_cast<double>(got) - static_cast<double>(x) * r),
             0.5 + std::abs(static_cast<double>(x) * r) * 0x1p-31 + 1e-9);
  }
  CHECK(bad == 0);
}

TEST_CASE("requantize: bit-exact against the float64 round-half-away reference, per column and shared, with bias") {
  sg::Generator gen(3);
  const int64_t rows = 37, cols = 53, ld_acc = 60, ld_out = 57;
  std::vector<int32_t> acc(rows * ld_acc), bias(cols);
  auto rand_bits = [&] {
    const int bits = static_cast<int>(rand_int(gen, 0, 31));
    return static_cast<int32_t>(rand_int(gen, -(int64_t{1} << bits), (int64_t{1} << bits) - 1));
  };
  for (auto& v : acc) v = rand_bits();
  for (auto& v : bias) v = rand_bits();
  acc[0] = INT32_MIN;
  acc[1] = INT32_MAX;
  bias[0] = INT32_MIN;  // x = -2^32, the extreme of acc + bias
  bias[1] = INT32_MAX;
  std::vector<q::FixedPoint> f(cols);
  for (int64_t c = 0; c < cols; ++c) f[c] = q::to_fixed_point(std::exp2(-28 + 20 * gen.uniform()));
  f[2] = q::to_fixed_point(0.5);  // ties
  f[3] = q::to_fixed_point(0x1p-40);  // shift > 63
  f[4] = q::to_fixed_point(std::nextafter(0x1p30, 0.0));  // shift 1
  for (int64_t i = 0; i < rows; ++i) acc[i * ld_acc + 2] = static_cast<int32_t>(rand_int(gen, -40, 40));
  bias[2] = 3;

  for (bool with_bias : {false, true})
    for (bool per_column : {true, false}) {
      CAPTURE(with_bias);
      CAPTURE(per_column);
      const int32_t* b = with_bias ? bias.data() : nullptr;
      auto want = [&](int64_t r, int64_t c, int64_t lo, int64_t hi) {
        const int64_t x = int64_t{acc[r * ld_acc + c]} + (with_bias ? bias[c] : 0);
        return std::clamp(exact_fixed(x, f[per_column ? c : 0]), lo, hi);
      };
      // int8 full range and with a fused ReLU
      for (auto [lo, hi] : {std::pair{-128, 127}, std::pair{0, 127}}) {
        std::vector<int8_t> out(rows * ld_out, 99);
        q::requantize_s8(acc.data(), rows, cols, ld_acc, f.data(), per_column, lo, hi, out.data(), ld_out, b);
        int bad = 0;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) bad += out[r * ld_out + c] != want(r, c, lo, hi);
          for (int64_t c = cols; c < ld_out; ++c) bad += out[r * ld_out + c] != 99;  // padding untouched
        }
        CHECK_MESSAGE(bad == 0, "s8 [" << lo << ", " << hi << "]: " << bad << " entries differ");
      }
      std::vector<uint8_t> out8(rows * ld_out);
      q::requantize_u8(acc.data(), rows, cols, ld_acc, f.data(), per_column, 0, 255, out8.data(), ld_out, b);
      std::vector<int32_t> out32(rows * ld_out);
      q::requantize_s32(acc.data(), rows, cols, ld_acc, f.data(), per_column, out32.data(), ld_out, b);
      int bad = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          bad += out8[r * ld_out + c] != want(r, c, 0, 255);
          bad += out32[r * ld_out + c] != want(r, c, -(int64_t{1} << 30), int64_t{1} << 30);
        }
      CHECK(bad == 0);
    }
  // The bias is exact: acc + bias at factor 1/2 with ties on both sides of 0.
  {
    const q::FixedPoint half = q::to_fixed_point(0.5);
    const int32_t a[4] = {INT32_MIN, 4, -4, 100};
    const int32_t bb[4] = {INT32_MIN, -1, 1, -100};
    int32_t o[4];
    for (int64_t c = 0; c < 4; ++c) q::requantize_s32(a + c, 1, 1, 1, &half, false, o + c, 1, bb + c);
    CHECK(o[0] == -(1 << 30));  // -2^31 clamped
    CHECK(o[1] == 2);           // 3/2 -> 2
    CHECK(o[2] == -2);          // -3/2 -> -2
    CHECK(o[3] == 0);
  }
  // The int32 clamp at +-2^30.
  const q::FixedPoint big = q::to_fixed_point(1000.0);
  const int32_t a[3] = {2000000, -2000000, 5};
  int32_t o[3];
  q::requantize_s32(a, 1, 3, 3, &big, false, o, 3);
  CHECK(o[0] == (1 << 30));
  CHECK(o[1] == -(1 << 30));
  CHECK(o[2] == 5000);
  int8_t o8[3];
  check_error([&] { q::requantize_s8(a, 1, 3, 3, &big, false, -200, 127, o8, 3); }, {"requantize_s8", "-200"});
  check_error([&] { q::requantize_s8(a, 1, 3, 3, &big, false, 5, 4, o8, 3); }, {"requantize_s8", "[5, 4]"});
  check_error([&] { q::requantize_s8(a, 1, 3, 2, &big, false, 0, 4, o8, 3); }, {"requantize_s8", "2"});
}

// ---- exp ------------------------------------------------------------------------------------

TEST_CASE("i_exp: vector kernel equals the scalar one; bounds against its float64 form and exp") {
  sg::Generator gen(4);
  double max_rel_exp = 0, max_rel_exp8 = 0, max_abs_exp = 0, max_dev_ref = 0, max_rel_ref = 0;
  // The conversion's shift (to_working_shift): 32, 31, 26, 23, 19, 16, 34, 43 (both vector forms).
  for (double scale : {0x1p-16, 3e-5, 1e-3, 0.01, 0.1, 0.7, 3e-6, 6e-9}) {
    CAPTURE(scale);
    const q::ExpParams p = q::make_exp_params(scale);
    CHECK(p.b_int == 31981);
    CHECK(p.c_int == 536115346);
    const int32_t zero = 0;
    uint32_t e0 = 0;
    q::i_exp(&zero, 1, p, &e0);
    CHECK(e0 == 65550);  // a b^2 + c = 1.00023 (I-BERT's polynomial at r = 0), floored
    // Inputs covering [-30, 0] in real units, the clamp, and the int32 extreme.
    std::vector<int32_t> x;
    const double lo = std::max(-30.0 / scale, -2147483647.0);
    for (int i = 0; i < 100000; ++i) x.push_back(static_cast<int32_t>(std::llround(lo * std::pow(gen.uniform(), 3))));
    for (int32_t v : {0, -1, -2, p.clamp, p.clamp + 1, p.clamp - 1, INT32_MIN, INT32_MIN + 1}) x.push_back(v);
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<uint32_t> e(x.size()), naive(x.size());
    q::i_exp(x.data(), n, p, e.data());
    q::i_exp_naive(x.data(), n, p, naive.data());
    CHECK(e == naive);
    // Short calls go through the tail path: same bits as the long call.
    for (int64_t len = 1; len <= 40; ++len) {
      std::vector<uint32_t> part(len + 1, 7);
      q::i_exp(x.data() + 3, len, p, part.data());
      CHECK(std::equal(part.begin(), part.begin() + len, e.begin() + 3));
      CHECK(part[len] == 7);
    }
    for (int64_t i = 0; i < n; ++i) {
      const double xr = x[i] * scale;
      // vs the float64 form of the same approximation: the input rounded to ln2/2^14 moves
      // the polynomial by <= 2^-15 ln2 * 2a(r+b)/poly < 4.3e-5 relative; P = poly >> 16 and
      // the 15-bit multiplier add < 8.4e-5 + 1.4e-5; the final floor < 1 unit of 2^-16.
      // Bound: 1 + 1.5e-4 * 2^16 ref (i.e. ~10.8 units at x = 0).
      const double want = 65536.0 * (x[i] >= p.clamp ? q::i_exp_reference(xr) : 0.0);
      const double dev = std::abs(e[i] - want);
      CHECK_MESSAGE(dev <= 1 + 1.5e-4 * want, "x = " << xr << ": " << e[i] << " vs " << want);
      max_dev_ref = std::max(max_dev_ref, dev);
      if (want >= 4096) max_rel_ref = std::max(max_rel_ref, dev / want);
      // vs exp: the polynomial's own error is within [-0.0031, +0.0025] relative.
      const double ex = 65536.0 * std::exp(xr);
      const double abs_err = std::abs(e[i] - ex);
      CHECK_MESSAGE(abs_err <= 2 + 0.0032 * ex, "x = " << xr << ": " << e[i] << " vs exp " << ex);
      max_abs_exp = std::max(max_abs_exp, abs_err);
      if (ex >= 4096) max_rel_exp = std::max(max_rel_exp, abs_err / ex);
      if (ex >= 256) max_rel_exp8 = std::max(max_rel_exp8, abs_err / ex);
    }
  }
  MESSAGE(fmt::format("i_exp vs exp: max relative error {:.5f} where exp >= 2^-4 ({:.5f} where exp >= 2^-8: the floor), "
                      "max absolute error {:.1f} units of 2^-16; vs i_exp_reference: max {:.1f} units, max relative "
                      "{:.2e} where ref >= 2^-4",
                      max_rel_exp, max_rel_exp8, max_abs_exp, max_dev_ref, max_rel_ref));
  CHECK(max_rel_exp < 0.0032 + 1.0 / 4096);
  // q > 0 is read as 0.
  const q::ExpParams p = q::make_exp_params(0.01);
  const int32_t pos[2] = {5, 0};
  uint32_t ep[2];
  q::i_exp(pos, 2, p, ep);
  CHECK(ep[0] == ep[1]);
  check_error([] { q::make_exp_params(0.0); }, {"make_exp_params", "0"});
  check_error([] { q::make_exp_params(1e6); }, {"1000000"});
}

// ---- softmax ----------------------------------------------------------------------------------

TEST_CASE("softmax_u8: within 1 LSB of round(256 softmax), rows summing to 256 +- 1") {
  sg::Generator gen(5);
  SoftmaxStats stats;
  // Random rows: scale and integer range give real scores within about +-16, +-8, +-2.
  struct Scale {
    double scale;
    int64_t range;
  };
  for (Scale sc : {Scale{0x1p-16, 1 << 20}, Scale{0.01, 1000}, Scale{1e-3, 2000}, Scale{0.1, 100},
                   Scale{0x1p-24, 1 << 27}, Scale{1.0, 20}}) {
    for (int64_t n = 1; n <= 300; n += (n < 40 ? 1 : 13)) {
      const int64_t rows = 8;
      std::vector<int32_t> s(rows * n);
      for (auto& v : s) v = static_cast<int32_t>(rand_int(gen, -sc.range, sc.range));
      run_softmax(s, rows, n, sc.scale, fmt::format("random scale {} range {}", sc.scale, sc.range), stats);
    }
  }
  // Long random rows (the benchmark's distribution).
  {
    const int64_t rows = 4, n = 10000;
    std::vector<int32_t> s(rows * n);
    for (auto& v : s) v = static_cast<int32_t>(rand_int(gen, -(1 << 20), 1 << 20));
    run_softmax(s, rows, n, 0x1p-16, "random n = 10000", stats);
  }
  // All equal: each 256 / n, rounded (n = 10000: all round to 0, the cumulative path gives
  // 256 ones spread out, and the row sums to exactly 256).
  for (int64_t n : {1, 3, 256, 10000}) {
    const std::vector<int32_t> s(n, 12345);
    std::vector<uint8_t> out(n);
    q::softmax_u8(s.data(), 1, n, n, q::make_exp_params(0.01), out.data(), n);
    int64_t sum = 0;
    for (uint8_t v : out) sum += v;
    CHECK_MESSAGE(sum == (n == 1 ? 255 : n == 3 ? 255 : 256), "n = " << n << ": sum " << sum);
    if (n == 1) CHECK(out[0] == 255);
    if (n == 256) CHECK(std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 1; }));
    run_softmax(s, 1, n, 0.01, fmt::format("all equal n = {}", n), stats);
  }
  // One dominant element (255), very negative tails (exactly 0), two-way ties (128 each),
  // and a tail of elements near exp ~ 2^-9 that the floors would lose if they were many.
  for (int64_t n : {1, 2, 5, 300, 10000}) {
    std::vector<int32_t> dom(n, -(1 << 29)), tie(n, -(1 << 29)), tail(n);
    dom[n / 2] = (1 << 29);
    tie[0] = tie[n - 1] = 1000;
    for (int64_t j = 0; j < n; ++j) tail[j] = static_cast<int32_t>(-600 - rand_int(gen, 0, 50));
    tail[0] = 0;
    std::vector<uint8_t> out(n);
    q::softmax_u8(dom.data(), 1, n, n, q::make_exp_params(0.01), out.data(), n);
    CHECK(out[n / 2] == 255);
    if (n >= 2) {
      q::softmax_u8(tie.data(), 1, n, n, q::make_exp_params(0.01), out.data(), n);
      CHECK(out[0] == 128);
      CHECK(out[n - 1] == 128);
    }
    run_softmax(dom, 1, n, 0.01, fmt::format("dominant n = {}", n), stats);
    run_softmax(tie, 1, n, 0.01, fmt::format("tie n = {}", n), stats);
    run_softmax(tail, 1, n, 0.01, fmt::format("tail n = {}", n), stats);
  }
  stats.check("softmax_u8");
}

TEST_CASE("softmax_u8: strides, threads, and the score range") {
  sg::Generator gen(6);
  const int64_t rows = 64, n = 1000, ld_in = 1003, ld_out = 1010;
  std::vector<int32_t> s(rows * ld_in);
  for (auto& v : s) v = static_cast<int32_t>(rand_int(gen, -(1 << 20), 1 << 20));
  const q::ExpParams p = q::make_exp_params(0x1p-16);
  std::vector<uint8_t> one(rows * ld_out, 7), two(rows * ld_out, 7), dense(rows * n);
  {
    Threads t(1);
    q::softmax_u8(s.data(), rows, n, ld_in, p, one.data(), ld_out);
  }
  {
    Threads t(2);
    q::softmax_u8(s.data(), rows, n, ld_in, p, two.data(), ld_out);
  }
  CHECK(one == two);
  // Strided rows give the rows' contiguous results; the gaps are not written.
  std::vector<int32_t> packed(rows * n);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(s.data() + r * ld_in, n, packed.data() + r * n);
  q::softmax_u8(packed.data(), rows, n, n, p, dense.data(), n);
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    bad += !std::equal(dense.begin() + r * n, dense.begin() + (r + 1) * n, one.begin() + r * ld_out);
    for (int64_t j = n; j < ld_out; ++j) bad += one[r * ld_out + j] != 7;
  }
  CHECK(bad == 0);

  s[5 * ld_in + 17] = 1 << 30;
  std::vector<uint8_t> out(rows * ld_out);
  check_error([&] { q::softmax_u8(s.data(), rows, n, ld_in, p, out.data(), ld_out); },
              {"softmax_u8", "1073741824", "row 5", "column 17"});
  s[5 * ld_in + 17] = -(1 << 30);
  check_error([&] { q::softmax_u8(s.data(), rows, n, ld_in, p, out.data(), ld_out); }, {"-1073741824"});
  s[5 * ld_in + 17] = (1 << 30) - 1;  // the largest allowed
  q::softmax_u8(s.data(), rows, n, ld_in, p, out.data(), ld_out);
  CHECK(out[5 * ld_out + 17] == 255);
  check_error([&] { q::softmax_u8(s.data(), rows, n, n - 1, p, out.data(), ld_out); }, {"softmax_u8", "999"});
}

TEST_CASE("softmax_u8_lut: int8 scores within 1 LSB of round(256 softmax), rows summing to 256 +- 1") {
  sg::Generator gen(7);
  SoftmaxStats stats;
  for (double scale : {0.02, 0.05, 0.1, 0.25, 0.5}) {
    const q::ExpTable t = q::make_exp_table(scale);
    CHECK(t.entry[0] == 65536);
    CHECK(t.entry[255] == static_cast<uint32_t>(std::lround(std::exp(-255 * scale) * 65536)));
    for (int64_t n = 1; n <= 300; n += (n < 40 ? 1 : 13)) {
      const int64_t rows = 8;
      std::vector<int8_t> s(rows * n);
      for (auto& v : s) v = static_cast<int8_t>(rand_int(gen, -128, 127));
      run_softmax_lut(s, rows, n, scale, fmt::format("random scale {}", scale), stats);
    }
  }
  for (int64_t n : {1, 3, 256, 10000}) {
    const std::vector<int8_t> s(n, -3);
    run_softmax_lut(s, 1, n, 0.05, fmt::format("all equal n = {}", n), stats);
    std::vector<int8_t> dom(n, -128), tie(n, -128);
    dom[n - 1] = 127;
    tie[0] = tie[n / 2] = 100;
    run_softmax_lut(dom, 1, n, 0.1, fmt::format("dominant n = {}", n), stats);
    if (n >= 3) run_softmax_lut(tie, 1, n, 0.1, fmt::format("tie n = {}", n), stats);
    std::vector<uint8_t> out(n);
    q::softmax_u8_lut(dom.data(), 1, n, n, q::make_exp_table(0.1), out.data(), n);
    CHECK(out[n - 1] == 255);
  }
  {
    const int64_t rows = 4, n = 10000;
    std::vector<int8_t> s(rows * n);
    for (auto& v : s) v = static_cast<int8_t>(rand_int(gen, -128, 127));
    run_softmax_lut(s, rows, n, 0.05, "random n = 10000", stats);
  }
  stats.check("softmax_u8_lut");
  // Threads: the same bits.
  const int64_t rows = 64, n = 1000;
  std::vector<int8_t> s(rows * n);
  for (auto& v : s) v = static_cast<int8_t>(rand_int(gen, -128, 127));
  std::vector<uint8_t> one(rows * n), two(rows * n);
  const q::ExpTable t = q::make_exp_table(0.05);
  {
    Threads th(1);
    q::softmax_u8_lut(s.data(), rows, n, n, t, one.data(), n);
  }
  {
    Threads th(2);
    q::softmax_u8_lut(s.data(), rows, n, n, t, two.data(), n);
  }
  CHECK(one == two);
}

// softmax_u8_lut's arithmetic, scalar, from quant/int_kernels.{h,cpp}: e = entry[max - s],
// E = sum e; rows with E < 64 2^16 take out = min((e F + 2^22) >> 23, 255), F = 2^31 / E, unless
// those miss 256 by more than 1; the others the cumulative rounding over the lane-major order
// (j = l mod 16 for l = 0, 1, ..), R(C) = ((C >> sh) G + 2^22) >> 23 with sh = max(0,
// bit_width(E) - 16), G = 2^31 / (E >> sh).
void softmax_lut_model(const int8_t* s, int64_t n, const q::ExpTable& t, uint8_t* out) {
  const int32_t mx = *std::max_element(s, s + n);
  std::vector<uint64_t> e(n);
  uint64_t E = 0;
  for (int64_t j = 0; j < n; ++j) E += e[j] = t.entry[mx - s[j]];
  if (E < (uint64_t{64} << 16)) {
    const uint64_t F = (uint64_t{256} << 23) / E;
    int64_t total = 0;
    for (int64_t j = 0; j < n; ++j) {
      const uint64_t o = (e[j] * F + (1u << 22)) >> 23;
      out[j] = static_cast<uint8_t>(std::min<uint64_t>(o, 255));
      total += static_cast<int64_t>(o);
    }
    if (std::abs(256 - total) <= 1) return;
  }
  const int sh = std::max(0, static_cast<int>(std::bit_width(E)) - 16);
  const uint64_t G = (uint64_t{1} << 31) / (E >> sh);
  auto R = [&](uint64_t C) { return ((C >> sh) * G + (1u << 22)) >> 23; };
  uint64_t C = 0;
  for (int64_t lane = 0; lane < 16; ++lane) {
    uint64_t prev = R(C);
    for (int64_t j = lane; j < n; j += 16) {
      C += e[j];
      const uint64_t r = R(C);
      out[j] = static_cast<uint8_t>(std::min<uint64_t>(r - prev, 255));
      prev = r;
    }
  }
}

TEST_CASE("softmax_u8_lut: the table lookups (from registers, gathered or scalar) bit for bit") {
  // Against the scalar model above on every length up to 300 (each tail of the 64-score blocks,
  // the 16-lane vectors and the scalar remainder), long rows (E past 2^32 at n = 70000), tables
  // with many entries at 65536 (fine scales, byte plane 2) or mostly 0 (coarse), and an arbitrary
  // table of 23-bit entries.
  sg::Generator gen(13);
  std::vector<q::ExpTable> tables;
  for (double scale : {0.001, 0.02, 10.0 / 127, 0.5, 3.0}) tables.push_back(q::make_exp_table(scale));
  q::ExpTable wild;
  for (auto& v : wild.entry) v = static_cast<uint32_t>(rand_int(gen, 1, (1 << 23) - 1));
  tables.push_back(wild);
  std::vector<int64_t> lengths;
  for (int64_t n = 1; n <= 300; ++n) lengths.push_back(n);
  for (int64_t n : {1000, 4096, 4097, 70000}) lengths.push_back(n);
  int64_t rows_checked = 0, bad_rows = 0;
  std::string first_bad;
  for (size_t ti = 0; ti < tables.size(); ++ti) {
    const q::ExpTable& t = tables[ti];
    for (int64_t n : lengths) {
      for (int mode = 0; mode < 3; ++mode) {
        if (n > 300 && ti % 2 == 1 && mode > 0) continue;
        const int64_t rows = 2;
        std::vector<int8_t> s(rows * n);
        for (auto& v : s) {
          if (mode == 0) v = static_cast<int8_t>(rand_int(gen, -128, 127));          // every difference
          else if (mode == 1) v = static_cast<int8_t>(rand_int(gen, 0, 3) ? -128 : 127);  // d in {0, 255}
          else v = static_cast<int8_t>(rand_int(gen, -4, 4));                          // flat rows
        }
        std::vector<uint8_t> out(rows * n), want(rows * n);
        q::softmax_u8_lut(s.data(), rows, n, n, t, out.data(), n);
        for (int64_t r = 0; r < rows; ++r) {
          softmax_lut_model(s.data() + r * n, n, t, want.data() + r * n);
          ++rows_checked;
          if (!std::equal(want.begin() + r * n, want.begin() + (r + 1) * n, out.begin() + r * n)) {
            ++bad_rows;
            if (first_bad.empty()) first_bad = fmt::format("table {} n = {} mode {} row {}", ti, n, mode, r);
          }
        }
      }
    }
  }
  CHECK_MESSAGE(bad_rows == 0, bad_rows << " of " << rows_checked << " rows differ from the model; first: " << first_bad);
  MESSAGE(fmt::format("softmax_u8_lut vs its scalar model: {} rows, identical", rows_checked));
}

// ---- GELU -------------------------------------------------------------------------------------

// I-BERT's i-GELU in float64 (no integer rounding): x/2 (1 + L(x / sqrt2)),
// L(u) = sgn(u) (1 - 0.2888 (min(|u|, 1.769) - 1.769)^2).
double igelu_model(double x) {
  const double u = x / std::sqrt(2.0), t = std::min(std::abs(u), 1.769) - 1.769;
  const double L = (u > 0 ? 1 : u < 0 ? -1 : 0) * (1 - 0.2888 * t * t);
  return 0.5 * x * (1 + L);
}

TEST_CASE("gelu_s8: within the i-GELU bound of the exact GELU") {
  // i-GELU's polynomial differs from x Phi(x) by at most kPolyErr on [-8, 8] (at x ~ -2.35;
  // past |x| = 2.5 it is exactly x or 0, off by < 0.016). The integer steps add < 1e-4 /
  // out_scale LSB (u's rounding to S_g ~ 8e-5 moves L by < 5e-5; v's 8 guard bits < 2^-8).
  // With both roundings: |out - round(gelu / out_scale)| < 1 + kPolyErr / out_scale + 0.01.
  constexpr double kPolyErr = 0.018152;
  sg::Generator gen(8);
  for (auto [in_scale, out_scale] : {std::pair{1e-4, 8.0 / 127}, std::pair{3e-6, 0.05}, std::pair{0x1p-10, 0.02},
                                     std::pair{0.05, 0.05}, std::pair{2e-5, 0.1}, std::pair{1e-3, 0.01}}) {
    CAPTURE(in_scale);
    CAPTURE(out_scale);
    const q::GeluParams p = q::make_gelu_params(in_scale, out_scale);
    std::vector<int32_t> x;
    const double qmax = std::min(8.0 / in_scale, 2147483647.0);
    for (int i = 0; i < 200000; ++i) x.push_back(static_cast<int32_t>(std::llround((2 * gen.uniform() - 1) * qmax)));
    for (int32_t v : {0, 1, -1, INT32_MIN, INT32_MAX, p.clamp_lo, p.clamp_hi, p.clamp_lo - 1, p.clamp_hi + 1})
      x.push_back(v);
    std::vector<int8_t> out(x.size());
    q::gelu_s8(x.data(), static_cast<int64_t>(x.size()), p, out.data());
    // One element at a time takes the scalar kernel (the specification): the same bits.
    int scalar_diff = 0;
    for (size_t i = 0; i < x.size(); i += 7) {
      int8_t one = 0;
      q::gelu_s8(&x[i], 1, p, &one);
      scalar_diff += one != out[i];
    }
    CHECK_MESSAGE(scalar_diff == 0, scalar_diff << " outputs differ between the vector and scalar kernels");
    const int tol = static_cast<int>(std::floor(1 + kPolyErr / out_scale + 0.01));
    int max_dev = 0;
    int64_t off_model = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double xr = x[i] * in_scale;
      const double want = std::clamp(std::round(q::gelu_reference(xr) / out_scale), -128.0, 127.0);
      const int dev = static_cast<int>(std::abs(out[i] - want));
      if (dev > tol) FAIL_CHECK(fmt::format("x = {}: out {} vs {}", xr, out[i], want));
      max_dev = std::max(max_dev, dev);
      // Against i-GELU itself in float64: equal but within ~0.01 LSB of a rounding tie.
      const double model = std::clamp(std::round(igelu_model(xr) / out_scale), -128.0, 127.0);
      const int dm = static_cast<int>(std::abs(out[i] - model));
      CHECK_MESSAGE(dm <= 1, "x = " << xr << ": " << int{out[i]} << " vs i-GELU " << model);
      off_model += dm != 0;
    }
    CHECK_MESSAGE(off_model <= static_cast<int64_t>(x.size()) / 100, off_model << " outputs differ from float64 i-GELU");
    MESSAGE(fmt::format("gelu_s8 in_scale {:g} out_scale {:g}: max |out - round(GELU / out_scale)| = {} LSB (bound {}); "
                        "{} of {} differ from float64 i-GELU by 1",
                        in_scale, out_scale, max_dev, tol, off_model, x.size()));
    const int32_t big[4] = {INT32_MAX, INT32_MIN, 0, static_cast<int32_t>(std::min(200 * out_scale / in_scale, 2e9))};
    int8_t ob[4];
    q::gelu_s8(big, 4, p, ob);
    CHECK(ob[0] == 127);
    CHECK(ob[1] == 0);
    CHECK(ob[2] == 0);
    CHECK(ob[3] == 127);
  }
  check_error([] { q::make_gelu_params(0.0, 0.1); }, {"make_gelu_params", "0"});
}

TEST_CASE("gelu_s8 and gelu_s32: the vector kernel is the scalar one, bit for bit") {
  // Whole arrays (the vector kernel, the scalar one on the tail) against one element at a time
  // (the scalar kernel, the specification), for both output types, out_max 127, 1000 and 2^23,
  // working and output shifts on both sides of 32, and scales whose roundings tie often: with
  // in_scale = sqrt2 S_g 2^-k, u = q 2^-k exactly (ties at every odd multiple of 2^(k-1)), and
  // out_scale = in_scale 2^9 makes v = q / 2 (ties at odd q); every q in a window is taken, so
  // a rounding that breaks ties the wrong way (or up instead of away from zero) fails.
  // (Shifts past 63 take the kernel's 64-bit lanes: the last case.)
  const double sg_scale = std::sqrt(0x1p-29 / 0.2888);  // S_g
  const double tie_in = std::sqrt(2.0) * sg_scale / 2, tie_in8 = std::sqrt(2.0) * sg_scale / 8;
  struct Case {
    double in_scale, out_scale;
    int32_t out_max;
  };
  const Case cases[] = {{1e-4, 8.0 / 127, 127},         {3e-6, 0.05, 127},          {0.05, 0.05, 127},
                        {1e-3, 0.01, 127},              {2e-5, 0.1, 127},           {tie_in, tie_in * 512, 127},
                        {tie_in8, tie_in8 * 512, 127},  {tie_in, tie_in * 2, 1000}, {tie_in, tie_in * 2, 1 << 23},
                        {1e-4, 8.0 / 127 / 1024, 1 << 23}, {3e-6, 3e-6 * 4, 1 << 23}, {0.05, 0.05 / 64, 1 << 23},
                        {1e-9, 1e-9 * 600, 1 << 23},    {2.0, 0.5, 127},
                        {1e-14, 1e-11, 127}};  // a working shift past 63: the 64-bit lanes
  sg::Generator gen(12);
  for (const Case& c : cases) {
    CAPTURE(c.in_scale);
    CAPTURE(c.out_scale);
    CAPTURE(c.out_max);
    const q::GeluParams p = q::make_gelu_params(c.in_scale, c.out_scale, c.out_max);
    std::vector<int32_t> x;
    for (int32_t v = -70000; v <= 70000; ++v) x.push_back(v);  // every tie of the two tie cases
    const int64_t span = std::max<int64_t>(-int64_t{p.clamp_lo}, p.clamp_hi);
    for (int i = 0; i < 20000; ++i) {
      x.push_back(static_cast<int32_t>(rand_int(gen, -span - 2, span + 2)));  // the clamped range and its edges
      x.push_back(static_cast<int32_t>(rand_int(gen, INT32_MIN, INT32_MAX)));
    }
    for (int32_t v : {0, 1, -1, INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, p.clamp_lo, p.clamp_hi,
                      p.clamp_lo + 1, p.clamp_hi - 1})
      x.push_back(v);
    for (int32_t v : {p.clamp_lo, p.clamp_hi})
      if (v != INT32_MIN && v != INT32_MAX) {
        x.push_back(v - 1);
        x.push_back(v + 1);
      }
    // ... at every offset: lengths that are not a multiple of any vector width
    for (int k = 0; k < 37; ++k) x.push_back(INT32_MIN + k);
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<int8_t> o8(n), one8(n);
    std::vector<int32_t> o32(n), one32(n);
    if (c.out_max == 127) q::gelu_s8(x.data(), n, p, o8.data());
    q::gelu_s32(x.data(), n, p, o32.data());
    for (int64_t i = 0; i < n; ++i) {
      if (c.out_max == 127) q::gelu_s8(&x[i], 1, p, &one8[i]);
      q::gelu_s32(&x[i], 1, p, &one32[i]);
    }
    int64_t diff8 = 0, diff32 = 0, first = -1;
    for (int64_t i = 0; i < n; ++i) {
      const bool d8 = c.out_max == 127 && o8[i] != one8[i], d32 = o32[i] != one32[i];
      diff8 += d8;
      diff32 += d32;
      if ((d8 || d32) && first < 0) first = i;
    }
    CHECK_MESSAGE(diff8 + diff32 == 0, diff8 << " (int8) and " << diff32 << " (int32) outputs differ from the scalar "
                                              "kernel; first at x = "
                                              << (first >= 0 ? x[first] : 0) << ": " << (first >= 0 ? o32[first] : 0)
                                              << " vs " << (first >= 0 ? one32[first] : 0));
    // Short arrays: every length up to 70 and several offsets take the tail too.
    for (int64_t len = 1; len <= 70; ++len)
      for (int64_t off : {int64_t{0}, int64_t{3}, n - 70}) {
        std::vector<int32_t> part(len);
        q::gelu_s32(x.data() + off, len, p, part.data());
        CHECK(std::equal(part.begin(), part.end(), one32.begin() + off));
      }
  }
}

// ---- isqrt and LayerNorm ------------------------------------------------------------------------

TEST_CASE("isqrt: floor(sqrt(v)) for every v < 2^20 and at the edges of uint64") {
  int bad = 0;
  for (uint64_t v = 0; v < (uint64_t{1} << 20); ++v) {
    const uint64_t r = q::isqrt(v);
    bad += !(r * r <= v && (r + 1) * (r + 1) > v);
  }
  CHECK(bad == 0);
  auto exact = [](uint64_t v, uint64_t r) {
    const uint128 r2 = static_cast<uint128>(r) * r, r12 = static_cast<uint128>(r + 1) * (r + 1);
    return r2 <= v && r12 > v;
  };
  sg::Generator gen(9);
  std::vector<uint64_t> vs = {std::numeric_limits<uint64_t>::max(), std::numeric_limits<uint64_t>::max() - 1,
                              uint64_t{1} << 63, (uint64_t{1} << 63) - 1, uint64_t{1} << 62};
  for (int i = 0; i < 100000; ++i) {
    const uint64_t k = gen.next_u64() >> rand_int(gen, 32, 63);  // k < 2^32
    const uint64_t k2 = k * k;
    vs.push_back(k2);
    if (k2 > 0) vs.push_back(k2 - 1);
    if (k2 < std::numeric_limits<uint64_t>::max()) vs.push_back(k2 + 1);
    vs.push_back(gen.next_u64() >> rand_int(gen, 0, 63));
  }
  const uint64_t top = 0xFFFFFFFFull;
  vs.push_back(top * top);
  vs.push_back(top * top - 1);
  for (uint64_t v : vs) bad += !exact(v, q::isqrt(v));
  CHECK(bad == 0);
  CHECK(q::isqrt(std::numeric_limits<uint64_t>::max()) == top);
}

TEST_CASE("layer_norm_s8: within 1 LSB of a float64 LayerNorm on the same integers") {
  // The kernel's mean and variance are exact; y = (x - mean) / std is formed to 2^-14 (sqrt
  // to 2^-31 relative), so before the final rounding the output is off by at most
  // delta = 2^-15 |gamma| gamma_scale / out_scale + 2^-20 LSB. Every output is then within 1
  // LSB of the rounded reference, and off at all only when the exact value lies within delta
  // of a half-integer: at most a fraction ~2 delta of the outputs.
  sg::Generator gen(10);
  struct Case {
    int64_t n, range;
  };
  for (Case c : {Case{768, 100}, Case{768, 1 << 20}, Case{4096, 1 << 24}, Case{1 << 14, 1 << 24}, Case{5, 3},
                 Case{64, 1}, Case{1, 1000}}) {
    CAPTURE(c.n);
    CAPTURE(c.range);
    const int64_t rows = c.n > 4096 ? 3 : 16, n = c.n, ld_in = n + 3, ld_out = n + 1;
    const double gamma_scale = 0.01, out_scale = 0.05;
    std::vector<int32_t> x(rows * ld_in), gamma(n), beta(n);
    for (auto& v : x) v = static_cast<int32_t>(rand_int(gen, -c.range, c.range));
    if (c.n == 768 && c.range == 100)  // a row of equal values and one with a big offset
      for (int64_t i = 0; i < n; ++i) {
        x[i] = 42;
        x[ld_in + i] = 1000000 + static_cast<int32_t>(rand_int(gen, -3, 3));
      }
    for (auto& v : gamma) v = static_cast<int32_t>(rand_int(gen, -127, 127));
    for (auto& v : beta) v = static_cast<int32_t>(rand_int(gen, -50, 50));
    q::LayerNormParams p;
    p.n = n;
    p.gamma = gamma.data();
    p.beta = beta.data();
    p.to_output = q::to_fixed_point(std::ldexp(gamma_scale / out_scale, -q::kNormBits));
    std::vector<int8_t> out(rows * ld_out, 99);
    q::layer_norm_s8(x.data(), rows, ld_in, p, out.data(), ld_out);
    int max_dev = 0;
    int64_t off = 0, total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t* xr = x.data() + r * ld_in;
      long double mean = 0, var = 0;
      for (int64_t i = 0; i < n; ++i) mean += xr[i];
      mean /= n;
      for (int64_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= n;
      for (int64_t i = 0; i < n; ++i) {
        const long double y = var == 0 ? 0 : (xr[i] - mean) / std::sqrt(var);
        const double v = static_cast<double>(y * gamma[i] * gamma_scale / out_scale) + beta[i];
        const int want = static_cast<int>(std::clamp(std::round(v), -128.0, 127.0));
        const int dev = std::abs(out[r * ld_out + i] - want);
        max_dev = std::max(max_dev, dev);
        off += dev != 0;
        ++total;
      }
      CHECK(out[r * ld_out + n] == 99);
    }
    const double delta = 0x1p-15 * 127 * gamma_scale / out_scale + 0x1p-20;
    CHECK(max_dev <= 1);
    CHECK_MESSAGE(off <= 2 * delta * total + 3, off << " of " << total << " outputs off by 1");
    MESSAGE(fmt::format("layer_norm_s8 n = {} |x| <= {}: max |out - ref| = {} LSB, {} of {} outputs off by 1", n,
                        c.range, max_dev, off, total));
  }
  // The overflow guard: n x^2 <= 2^62.
  const int64_t n = 1 << 14;
  std::vector<int32_t> x(n, 1 << 24), gamma(n, 1), beta(n, 0);
  x[7] = -(1 << 24);
  q::LayerNormParams p;
  p.n = n;
  p.gamma = gamma.data();
  p.beta = beta.data();
  p.to_output = q::to_fixed_point(0x1p-14);
  std::vector<int8_t> out(n);
  q::layer_norm_s8(x.data(), 1, n, p, out.data(), n);  // exactly at the limit: fine
  x[9] = (1 << 24) + 1;
  check_error([&] { q::layer_norm_s8(x.data(), 1, n, p, out.data(), n); }, {"layer_norm_s8", "16777217", "16384"});
}

TEST_CASE("layer_norm_s8/s32: the vector kernel equals the scalar one bit for bit") {
  // Row lengths around the lane counts (tails), rows whose values, gammas and output factors
  // reach each of the kernel's fallbacks: |y gamma| >= 2^32 in some vectors (big gamma), a
  // shift >= 64 (tiny factor), |D| >= 2^33 (the 128-bit path: big |x|, up to the guard),
  // rows of equal values.
  sg::Generator gen(13);
  struct Case {
    int64_t n, range, gamma_range;
    double factor;  // to_output
  };
  std::vector<Case> cases;
  for (int64_t n : {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 768, 1000})
    for (int64_t range : {1, 100, 1 << 20, 1 << 22, 5600000, 1 << 24})
      for (int64_t gamma_range : {int64_t{127}, int64_t{4095}, int64_t{1} << 20, int64_t{INT32_MAX}})
        cases.push_back({n, range, gamma_range, std::ldexp(0.2, -q::kNormBits)});
  cases.push_back({768, 1 << 22, 4095, 0x1p-40});       // shift >= 64
  cases.push_back({768, 1 << 22, 4095, 0x1p10});        // saturating
  cases.push_back({4096, 1 << 24, 4095, 0x1p-20});      // |D| < 2^38: the 128-bit path
  cases.push_back({1 << 14, 1 << 24, 4095, 0x1p-20});   // at the guard (n x^2 = 2^62 with x = 2^24)
  int64_t checked = 0;
  for (const Case& c : cases) {
    CAPTURE(c.n);
    CAPTURE(c.range);
    CAPTURE(c.gamma_range);
    CAPTURE(c.factor);
    const int64_t rows = c.n >= 4096 ? 2 : 6, n = c.n, ld_in = n + 1, ld_out = n + 2;
    std::vector<int32_t> x(rows * ld_in), gamma(n), beta(n);
    for (int64_t r = 0; r < rows; ++r) {
      // row 0: the full range; row 1: a big common offset with small variation; row 2: equal
      // values; others: ranges narrowing toward 1
      const int64_t range = std::max<int64_t>(1, c.range >> (r >= 3 ? 3 * (r - 2) : 0));
      for (int64_t i = 0; i < n; ++i) {
        int64_t v = rand_int(gen, -range, range);
        if (r == 1) v = std::clamp<int64_t>(c.range - 4 + rand_int(gen, -3, 3), -c.range, c.range);
        if (r == 2) v = c.range / 3;
        x[r * ld_in + i] = static_cast<int32_t>(v);
      }
    }
    if (n >= 2) {  // |x| at the range
      x[0] = static_cast<int32_t>(c.range);
      x[1] = -static_cast<int32_t>(c.range);
    }
    for (auto& v : gamma) v = static_cast<int32_t>(rand_int(gen, -c.gamma_range, c.gamma_range));
    for (int64_t i = 0; i < n; i += 5) gamma[i] = 0;
    if (n >= 4) gamma[3] = c.gamma_range == INT32_MAX ? INT32_MIN : -static_cast<int32_t>(c.gamma_range);
    for (auto& v : beta) v = static_cast<int32_t>(rand_int(gen, -200, 200));
    q::LayerNormParams p{.n = n, .gamma = gamma.data(), .beta = beta.data(), .to_output = q::to_fixed_point(c.factor)};
    std::vector<int8_t> fast8(rows * ld_out, 99), naive8(rows * ld_out, 99);
    std::vector<int32_t> fast32(rows * ld_out, 99), naive32(rows * ld_out, 99);
    q::layer_norm_s8(x.data(), rows, ld_in, p, fast8.data(), ld_out);
    q::layer_norm_s8_naive(x.data(), rows, ld_in, p, naive8.data(), ld_out);
    q::layer_norm_s32(x.data(), rows, ld_in, p, fast32.data(), ld_out);
    q::layer_norm_s32_naive(x.data(), rows, ld_in, p, naive32.data(), ld_out);
    REQUIRE(fast8 == naive8);  // padding included: both leave it alone
    REQUIRE(fast32 == naive32);
    checked += rows * n;
  }
  // Exact ties in y's rounding to 2^-14: (-t, d, t) has M = 6 t^2 + 2 d^2 within 2^-30 of 4^24,
  // so sqrt(M)'s fixed-point value is exactly 2^24 and y 2^14 = 2d 2^14 / 2^24 = 1368.5 for the
  // middle element; four copies scale M by 16 and D by 4 and put ties in the vector part.
  {
    const int32_t t = 6837313, d = 700672;
    std::vector<int32_t> x;
    for (int c = 0; c < 4; ++c) x.insert(x.end(), {-t, d, t});
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<int32_t> gamma(n, 1 << 16), beta(n, 0);  // |y gamma| < 2^32: no scalar fallback
    q::LayerNormParams p{.n = n, .gamma = gamma.data(), .beta = beta.data(), .to_output = q::to_fixed_point(0x1p-14)};
    std::vector<int32_t> fast(n), naive(n);
    q::layer_norm_s32(x.data(), 1, n, p, fast.data(), n);
    q::layer_norm_s32_naive(x.data(), 1, n, p, naive.data(), n);
    CHECK(fast == naive);
    CHECK(fast[1] == 1369 * 4);  // 1368.5 rounded away from zero, times gamma 2^-14
  }
  MESSAGE(fmt::format("layer_norm vector vs scalar: {} cases, {} outputs each for int8 and int32, identical",
                      cases.size(), checked));
}

// ---- the wide (int32) twins and per-token quantization ----------------------------------------

TEST_CASE("gelu_s32 and layer_norm_s32: the int8 kernels' arithmetic with a wider clamp") {
  sg::Generator gen(11);
  // GELU: at out_max 127 the int32 twin gives the int8 kernel's values; at a scale 2^10 finer
  // (out_max 2^23) it stays within 1 + the polynomial's error of round(GELU / out_scale).
  const double in_scale = 1e-4, out_scale = 8.0 / 127;
  std::vector<int32_t> x;
  for (int i = 0; i < 100003; ++i) x.push_back(static_cast<int32_t>(rand_int(gen, -100000, 100000)));
  for (int32_t v : {0, 1, -1, INT32_MIN, INT32_MAX}) x.push_back(v);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<int8_t> narrow(x.size());
  std::vector<int32_t> wide(x.size());
  q::gelu_s8(x.data(), n, q::make_gelu_params(in_scale, out_scale), narrow.data());
  q::gelu_s32(x.data(), n, q::make_gelu_params(in_scale, out_scale), wide.data());
  CHECK(std::equal(narrow.begin(), narrow.end(), wide.begin()));
  const double fine = out_scale / 1024;
  q::gelu_s32(x.data(), n, q::make_gelu_params(in_scale, fine, 1 << 23), wide.data());
  int64_t worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double want = std::clamp(std::round(q::gelu_reference(x[i] * in_scale) / fine), -8388609.0, 8388608.0);
    worst = std::max<int64_t>(worst, std::llabs(wide[i] - static_cast<int64_t>(want)));
  }
  CHECK(worst <= 1 + 0.018152 / fine);
  CHECK(wide[n - 1] == (1 << 23));  // INT32_MAX saturates at out_max
  check_error([] { q::make_gelu_params(1e-4, 0.01, 1 << 24); }, {"make_gelu_params", "out_max"});
  int32_t one = 5;
  int8_t o8 = 0;
  check_error([&] { q::gelu_s8(&one, 1, q::make_gelu_params(1e-4, 0.01, 1000), &o8); }, {"gelu_s8", "out_max 1000"});

  // LayerNorm: the int32 twin clamped to int8 is the int8 kernel.
  const int64_t rows = 37, d = 64;
  std::vector<int32_t> xs(rows * d), gamma(d), beta(d);
  for (auto& v : xs) v = static_cast<int32_t>(rand_int(gen, -(1 << 20), 1 << 20));
  for (auto& v : gamma) v = static_cast<int32_t>(rand_int(gen, -4095, 4095));
  for (auto& v : beta) v = static_cast<int32_t>(rand_int(gen, -60, 60));
  q::LayerNormParams p{.n = d, .gamma = gamma.data(), .beta = beta.data(),
                       .to_output = q::to_fixed_point(std::ldexp(1e-3 / 0.02, -q::kNormBits))};
  std::vector<int8_t> ln8(rows * d);
  std::vector<int32_t> ln32(rows * d);
  q::layer_norm_s8(xs.data(), rows, d, p, ln8.data(), d);
  q::layer_norm_s32(xs.data(), rows, d, p, ln32.data(), d);
  int differ = 0;
  for (int64_t i = 0; i < rows * d; ++i) differ += ln8[i] != std::clamp(ln32[i], -128, 127);
  CHECK(differ == 0);
  check_error([&] { q::layer_norm_s32(xs.data(), rows, d - 1, p, ln32.data(), d); }, {"layer_norm_s32", "63"});
}

TEST_CASE("quantize_rows: per-token int8 / uint8 with the row's own scale") {
  sg::Generator gen(12);
  const int64_t rows = 300, cols = 77;
  std::vector<int32_t> y(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t range = r == 0 ? 0 : r == 1 ? 1 : int64_t{1} << rand_int(gen, 1, 30);  // rows 0, 1: tiny
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = static_cast<int32_t>(rand_int(gen, -range, range));
  }
  y[5 * cols + 3] = INT32_MIN;  // read as -INT32_MAX
  y[6 * cols + 4] = INT32_MAX;
  for (int64_t c = 0; c < cols; ++c) y[7 * cols + c] = -static_cast<int32_t>(c) - 1;  // all negative: u8 gives 0
  std::vector<int8_t> s8(rows * cols);
  std::vector<uint8_t> u8(rows * cols);
  std::vector<int32_t> m8(rows), mu(rows);
  q::quantize_rows_s8(y.data(), rows, cols, s8.data(), m8.data());
  q::quantize_rows_u8(y.data(), rows, cols, u8.data(), mu.data());
  int64_t off8 = 0, offu = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t m = 1, mp = 1;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t v = std::max<int64_t>(y[r * cols + c], -INT32_MAX);
      m = std::max<int64_t>(m, std::llabs(v));
      mp = std::max<int64_t>(mp, v);
    }
    REQUIRE(m8[r] == m);
    REQUIRE(mu[r] == mp);
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t v = std::max<int64_t>(y[r * cols + c], -INT32_MAX);
      // exact round-half-away of v 127 / m in rationals: (2 |v| 127 + m) / (2 m)
      const int64_t e8 = (2 * std::llabs(v) * 127 + m) / (2 * m) * (v < 0 ? -1 : 1);
      const int64_t eu = v <= 0 ? 0 : (2 * v * 255 + mp) / (2 * mp);
      const int64_t d8 = std::llabs(s8[r * cols + c] - e8), du = std::llabs(u8[r * cols + c] - eu);
      REQUIRE(d8 <= 1);
      REQUIRE(du <= 1);
      off8 += d8;
      offu += du;
    }
    // the row's largest magnitude maps to +-127 (unless the row is all zero)
    int largest = 0;
    for (int64_t c = 0; c < cols; ++c) largest = std::max(largest, std::abs(int{s8[r * cols + c]}));
    CHECK(largest == (r == 0 ? 0 : 127));
  }
  CHECK(off8 <= 2);  // only within 2^-10 of a tie
  CHECK(offu <= 2);
  CHECK(std::all_of(s8.begin(), s8.begin() + cols, [](int8_t v) { return v == 0; }));  // an all-zero row
  CHECK(std::all_of(u8.begin() + 7 * cols, u8.begin() + 8 * cols, [](uint8_t v) { return v == 0; }));
  CHECK(s8[5 * cols + 3] == -127);
  CHECK(s8[6 * cols + 4] == 127);
  CHECK(u8[6 * cols + 4] == 255);
  // 1 vs 2 threads: the same bytes
  std::vector<int8_t> again(rows * cols);
  std::vector<int32_t> m_again(rows);
  {
    Threads one(1);
    q::quantize_rows_s8(y.data(), rows, cols, again.data(), m_again.data());
  }
  CHECK(again == s8);
  CHECK(m_again == m8);
}
