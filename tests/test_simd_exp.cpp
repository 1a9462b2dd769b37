// sg::simd::Exp (core/simd_exp.h) against std::exp in double: every float32 in [-104, 89],
// the edges (overflow, underflow, subnormal results, infinities, NaN, signed zeros), and every
// lane position of vectors mixing edge and ordinary values, for several vector widths.
#include <doctest/doctest.h>
#include <omp.h>

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/simd_exp.h"

namespace {
namespace hn = hwy::HWY_NAMESPACE;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kDenormMin = std::numeric_limits<float>::denorm_min();

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// 1 / the spacing of float32 values around ref > 0: the spacing is 2^(e - 23) for ref in
// [2^e, 2^(e+1)), denorm_min for subnormal results. Built from ref's exponent bits (no libm
// call, no division: the sweep evaluates it 2.2e9 times).
double inv_ulp_at(double ref) {
  uint64_t b;
  std::memcpy(&b, &ref, sizeof b);
  const uint64_t biased = (b >> 52) & 0x7ff;  // e + 1023
  const uint64_t inv_bits = (2 * 1023 + 23 - biased) << 52;
  double inv;
  std::memcpy(&inv, &inv_bits, sizeof inv);
  return ref < 0x1p-126 ? 0x1p149 : inv;
}

// exp(x) in double for |x| < 2^-12: this Taylor polynomial equals exp(x) to within
// x^4/24 < 2^-52 (relative), ~1e-9 of a float ulp.
// NOTE: 86% of all floats in [-104, 89] are that small; std::exp (~7.5 ns a call here) on all
// 2.2e9 of them would take the sweep past 8 s on 2 threads. Every larger x uses std::exp.
constexpr uint32_t kTinyBits = 0x39800000;  // bits of 2^-12
double exp_tiny(double x) { return 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0))); }

// Error of f in float ulps of ref = exp(x). Past FLT_MAX + half an ulp a correctly rounded
// exp is +inf, and only +inf is right. NaN for a NaN f.
double ulp_error(float f, double ref) {
  constexpr double kOverflow = 0x1.ffffffp127;
  if (ref >= kOverflow) return f == kInf ? 0.0 : std::numeric_limits<double>::infinity();
  return std::abs(static_cast<double>(f) - ref) * inv_ulp_at(ref);
}

// exp_tiny and the ulp error on float64 vectors, for xs[0, n) all below 2^-12 in magnitude
// (results ~1: never subnormal nor overflowing): the max error and the count over 2 ulp
// (NaN included). Same arithmetic as the scalar functions above.
void tiny_block_errors(const float* xs, const float* ys, int64_t n, double& max_err, int64_t& over) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const hn::RebindToUnsigned<decltype(dd)> du;
  const int64_t N = static_cast<int64_t>(hn::Lanes(dd));
  auto vmax = hn::Zero(dd);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto x = hn::PromoteTo(dd, hn::LoadU(df, xs + i));
    const auto y = hn::PromoteTo(dd, hn::LoadU(df, ys + i));
    auto ref = hn::MulAdd(x, hn::Set(dd, 1.0 / 6.0), hn::Set(dd, 0.5));
    ref = hn::MulAdd(ref, x, hn::Set(dd, 1.0));
    ref = hn::MulAdd(ref, x, hn::Set(dd, 1.0));
    const auto biased = hn::And(hn::ShiftRight<52>(hn::BitCast(du, ref)), hn::Set(du, 0x7ff));
    const auto inv_ulp = hn::BitCast(dd, hn::ShiftLeft<52>(hn::Sub(hn::Set(du, 2 * 1023 + 23), biased)));
    const auto err = hn::Mul(hn::Abs(hn::Sub(y, ref)), inv_ulp);
    over += static_cast<int64_t>(hn::CountTrue(dd, hn::Not(hn::Le(err, hn::Set(dd, 2.0)))));
    vmax = hn::Max(vmax, err);
  }
  max_err = hn::GetLane(hn::MaxOfLanes(dd, vmax));
  for (; i < n; ++i) {
    const double ref = exp_tiny(xs[i]);
    const double err = std::abs(static_cast<double>(ys[i]) - ref) * inv_ulp_at(ref);
    over += !(err <= 2.0);
    max_err = err > max_err ? err : max_err;
  }
}

struct Sweep {
  double max_ulp = 0.0;
  float worst_x = 0.0f, worst_got = 0.0f;
  int64_t checked = 0;
  int64_t over_2ulp = 0;             // including NaN results
  int64_t subnormal_misrounded = 0;  // subnormal results that are not float(exp(x))

  void merge(const Sweep& o) {
    if (o.max_ulp > max_ulp) {
      max_ulp = o.max_ulp;
      worst_x = o.worst_x;
      worst_got = o.worst_got;
    }
    checked += o.checked;
    over_2ulp += o.over_2ulp;
    subnormal_misrounded += o.subnormal_misrounded;
  }
};

// Every float with the given sign bit whose magnitude's bit pattern is in [0, last], through
// full vectors of sg::simd::Exp, on 2 threads. No doctest macro inside the parallel region
// (they are not thread-safe): each thread fills its own Sweep.
Sweep sweep_floats(uint32_t sign, uint32_t last) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = static_cast<int64_t>(last) / kBlock + 1;
  Sweep total;
#pragma omp parallel num_threads(2)
  {
    const hn::ScalableTag<float> d;
    const int64_t N = static_cast<int64_t>(hn::Lanes(d));
    std::vector<float> xs(kBlock), ys(kBlock);
    Sweep mine;
#pragma omp for schedule(dynamic, 16)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kBlock;
      const int64_t n = std::min<int64_t>(kBlock, static_cast<int64_t>(last) + 1 - begin);
      for (int64_t i = 0; i < kBlock; ++i)  // past `last`: repeat it, the extra lanes go unchecked
        xs[i] = from_bits(static_cast<uint32_t>(std::min<int64_t>(begin + i, last)) | sign);
      for (int64_t i = 0; i < kBlock; i += N) hn::StoreU(sg::simd::Exp(d, hn::LoadU(d, &xs[i])), d, &ys[i]);
      if (begin + kBlock <= kTinyBits) {  // all |x| < 2^-12: exp_tiny and inv_ulp_at on vectors
        double block_max = 0.0;
        int64_t over = 0;
        tiny_block_errors(xs.data(), ys.data(), n, block_max, over);
        mine.over_2ulp += over;
        if (block_max > mine.max_ulp) {  // rare: find where (scalar code, same ref to ~1e-16)
          mine.max_ulp = block_max;
          double worst = -1.0;
          for (int64_t i = 0; i < n; ++i) {
            const double err = ulp_error(ys[i], exp_tiny(xs[i]));
            if (err > worst) {
              worst = err;
              mine.worst_x = xs[i];
              mine.worst_got = ys[i];
            }
          }
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const double ref = std::exp(static_cast<double>(xs[i]));
          const double err = ulp_error(ys[i], ref);
          if (!(err <= 2.0)) ++mine.over_2ulp;
          if (err > mine.max_ulp) {
            mine.max_ulp = err;
            mine.worst_x = xs[i];
            mine.worst_got = ys[i];
          }
          if (ref < 0x1p-126 && ys[i] != static_cast<float>(ref)) ++mine.subnormal_misrounded;
        }
      }
      mine.checked += n;
    }
#pragma omp critical
    total.merge(mine);
  }
  return total;
}

// What Exp must give at x: exactly float(exp(x)) where that is 0, inf, 1 or subnormal (the
// correctly rounded result: a double exp rounded once), NaN for NaN, else within 2 ulp.
void check_one(float x, float got) {
  CAPTURE(x);
  CAPTURE(got);
  if (std::isnan(x)) {
    CHECK(std::isnan(got));
    return;
  }
  const double ref = std::exp(static_cast<double>(x));  // exp(+-inf) is inf, 0
  const float want = static_cast<float>(ref);
  if (want == 0.0f || std::isinf(want) || want == 1.0f || want < 0x1p-126f) {
    CHECK(to_bits(got) == to_bits(want));  // +0, never -0
  } else {
    CHECK(ulp_error(got, ref) <= 2.0);
  }
}

// Values that take every path of Exp: the fast path, the float64 recomputation (subnormal
// results, 87.3 < x <= 88.7228), the clamps (inf, 0), NaN; 16 of them, one per float lane of
// a 512-bit vector.
const std::vector<float> kMixed = {kNaN,   kInf,  -kInf, -104.0f, -100.0f, 88.73f,  88.72f, -0.0f,
                                   0.0f,   1.0f,  -87.5f, 87.5f,  -20.0f,  3.5f,    -1e30f, -0x1.9fe368p+6f};

template <class D> void check_every_lane_position(D d) {
  using T = hn::TFromD<D>;
  static_assert(sizeof(T) == 4);
  const size_t N = hn::Lanes(d);
  CAPTURE(N);
  std::vector<float> lanes(N), out(N);
  for (size_t shift = 0; shift < kMixed.size(); ++shift) {
    CAPTURE(shift);
    for (size_t i = 0; i < N; ++i) lanes[i] = kMixed[(i + shift) % kMixed.size()];
    hn::StoreU(sg::simd::Exp(d, hn::LoadU(d, lanes.data())), d, out.data());
    for (size_t i = 0; i < N; ++i) {
      CAPTURE(i);
      // Same as the value alone in a vector (whichever path its neighbours send the vector
      // down), and right.
      const float alone = hn::GetLane(sg::simd::Exp(d, hn::Set(d, lanes[i])));
      CHECK((to_bits(out[i]) == to_bits(alone) || (std::isnan(out[i]) && std::isnan(alone))));
      check_one(lanes[i], out[i]);
    }
  }
}

}  // namespace

TEST_CASE("simd_exp: every float in [-104, 89] within 2 ULP, subnormal results correctly rounded") {
  // Bit patterns 0 .. bits(89) with the sign clear, 0 .. bits(104) with it set: 2.24e9 floats.
  const uint32_t last_pos = to_bits(89.0f), last_neg = to_bits(104.0f);
  Sweep all = sweep_floats(0u, last_pos);
  all.merge(sweep_floats(0x80000000u, last_neg));
  MESSAGE("max error " << all.max_ulp << " ulp at x = " << all.worst_x << " (got " << all.worst_got << ")");
  CHECK(all.checked == int64_t{last_pos} + 1 + int64_t{last_neg} + 1);
  CHECK(all.over_2ulp == 0);
  CHECK(all.max_ulp <= 2.0);
  CHECK(all.subnormal_misrounded == 0);
}

TEST_CASE("simd_exp: edges (infinities, NaN, overflow and underflow thresholds, subnormal results, zeros)") {
  const hn::ScalableTag<float> d;
  auto exp1 = [&](float x) { return hn::GetLane(sg::simd::Exp(d, hn::Set(d, x))); };
  const float overflow_x = 0x1.62e42ep+6f;    // 88.72283: largest x with a finite exp
  const float underflow_x = -0x1.9fe368p+6f;  // -103.97208: smallest x with a non-zero exp
  struct Case {
    float x, want;
  };
  const Case exact[] = {
      {kInf, kInf},
      {-kInf, 0.0f},
      {-104.0f, 0.0f},
      {std::nextafter(underflow_x, -kInf), 0.0f},
      {underflow_x, kDenormMin},
      {-1e30f, 0.0f},
      {-std::numeric_limits<float>::max(), 0.0f},
      {88.73f, kInf},
      {89.0f, kInf},
      {std::nextafter(overflow_x, kInf), kInf},
      {overflow_x, 0x1.ffff08p+127f},  // float(exp(x)), correctly rounded
      {1e30f, kInf},
      {std::numeric_limits<float>::max(), kInf},
      {0.0f, 1.0f},
      {-0.0f, 1.0f},
      {kDenormMin, 1.0f},
      {-kDenormMin, 1.0f},
      {-90.0f, static_cast<float>(std::exp(-90.0))},  // subnormal results
      {-100.0f, static_cast<float>(std::exp(-100.0))},
      {-87.5f, static_cast<float>(std::exp(-87.5))},
      {-103.9f, static_cast<float>(std::exp(static_cast<double>(-103.9f)))},
  };
  for (const Case& c : exact) {
    CAPTURE(c.x);
    const float got = exp1(c.x);
    CHECK(to_bits(got) == to_bits(c.want));  // +0 and never -0 for underflow
  }
  CHECK(std::isnan(exp1(kNaN)));
  CHECK(std::isnan(exp1(-kNaN)));
  const float near_max = exp1(88.72f);
  CHECK(std::isfinite(near_max));
  CHECK(ulp_error(near_max, std::exp(static_cast<double>(88.72f))) <= 2.0);
  // Both sides of the fast path's bound (|x| = 87.3) and of the normal range's bottom.
  for (float x : {87.3f, std::nextafter(87.3f, kInf), -87.3f, std::nextafter(-87.3f, -kInf), -87.33654f, -87.33655f})
    check_one(x, exp1(x));
}

TEST_CASE("simd_exp: every lane position of a vector mixing edge values, several widths") {
  check_every_lane_position(hn::ScalableTag<float>());
  check_every_lane_position(hn::CappedTag<float, 1>());
  check_every_lane_position(hn::CappedTag<float, 4>());
  check_every_lane_position(hn::CappedTag<float, 8>());
}

TEST_CASE("simd_exp: float64 lanes are Highway's hn::Exp") {
  const hn::ScalableTag<double> d;
  for (double x : {-700.0, -100.0, -1.0, 0.0, 0.5, 30.0, 700.0}) {
    CAPTURE(x);
    const double got = hn::GetLane(sg::simd::Exp(d, hn::Set(d, x)));
    CHECK(got == hn::GetLane(hn::Exp(d, hn::Set(d, x))));
    CHECK(std::abs(got - std::exp(x)) <= 4e-16 * std::exp(x));
  }
}

TEST_CASE("simd_exp: ExpNonPositive equals Exp down to 2^-126 and flushes below, -inf to 0, NaN to NaN") {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  std::vector<float> in(L), a(L), b(L);
  // Runs of L consecutive floats, one run in 13, over [-87.3, 0] (bit patterns of negative
  // floats grow with magnitude): both share the fast path, so a sample shows any drift.
  const uint32_t hi = to_bits(-87.3f);
  int64_t differ = 0;
  for (uint32_t u = to_bits(-0.0f); u <= hi; u += 13 * static_cast<uint32_t>(L)) {
    for (size_t k = 0; k < L; ++k) in[k] = from_bits(std::min<uint32_t>(u + static_cast<uint32_t>(k), hi));
    hn::StoreU(sg::simd::Exp(d, hn::LoadU(d, in.data())), d, a.data());
    hn::StoreU(sg::simd::ExpNonPositive(d, hn::LoadU(d, in.data())), d, b.data());
    for (size_t k = 0; k < L; ++k) differ += to_bits(a[k]) != to_bits(b[k]);
  }
  CHECK(differ == 0);
  const float edges[] = {-87.31f, -100.0f, -103.9f, -104.0f, -1e30f, -kInf, kNaN, 0.0f, -0.0f};
  const float want[] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, kNaN, 1.0f, 1.0f};
  for (size_t i = 0; i < std::size(edges); ++i) {
    CAPTURE(edges[i]);
    std::fill(in.begin(), in.end(), edges[i]);
    hn::StoreU(sg::simd::ExpNonPositive(d, hn::LoadU(d, in.data())), d, b.data());
    if (std::isnan(want[i]))
      CHECK(std::isnan(b[0]));
    else
      CHECK(b[0] == want[i]);
  }
}
