#pragma once
// Vectorized exp for the softmax family and the elementwise exp op.
//
//   const hn::ScalableTag<float> d;
//   hn::Store(sg::simd::Exp(d, hn::LoadU(d, x)), d, y);   // y = exp(x), any x
//
// float32 lanes (Cody-Waite + polynomial, Highway ops only):
//   x = n ln2 + r, n = round(x log2e), |r| <= ln2/2 (ln2 split hi/lo so n ln2 keeps its digits);
//   exp(r) = 1 + r + r^2 q(r), q of degree 4 (so exp(r) is approximated to degree 6): a
//   minimax fit of (e^r - 1 - r) / r^2 weighted by 1/ulp(e^r) (Lawson's algorithm), rounded to
//   float. The fit alone errs by 0.035 ulp; degree 5 would err by 1.05-1.35 ulp and ends at
//   2.3 ulp overall. Writing it as r + r^2 q keeps the leading term r exact.
//   exp(x) = 2^n + 2^n (r + r^2 q), 2^n built by shifting n + 127 into the exponent field.
//   |x| > 87.3 (2^n or the result leaves the normal range) takes a rare slow path: the lanes
//   whose exp is finite and non-zero are recomputed in float64 (hn::Exp) and rounded once to
//   float, so subnormal results are correctly rounded; x > 88.7228 -> +inf, x < -103.972 ->
//   +0 (this covers +-inf). NaN -> NaN falls out of the fast path. -0, +0 -> 1 exactly.
//   Measured over every float in [-104, 89] against std::exp in double (tests/test_simd_exp.cpp):
//   max error 1.02 ulp, at x = -27.378 (1.0192) and x = 37.779 (1.0137): results just above
//   sqrt(2) 2^n, where r ~ +ln2/2 and the roundings of r, of r + r^2 q and of the final fma
//   add up. Subnormal results are correctly rounded.
//   Throughput (this Zen 4, AVX-512 so 16 lanes, 1 thread, a loop over a 2048-float buffer):
//   5.3 Gelem/s vs 3.0 for hn::Exp in the same process, ~10.9 cycles a vector. The fast path
//   has 10 ops for the two FMA pipes (the bound: ~5.7 Gelem/s without the range check);
//   degree 5 would save one but errs by 2.3 ulp.
// float64 lanes: Highway's hn::Exp (1 ulp on [-708, 706]), with NaN -> NaN and
// x > 709.78 -> +inf added here.
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

namespace sg::simd {
namespace hn = hwy::HWY_NAMESPACE;

namespace detail {

constexpr float kExpLog2e = 0x1.715476p+0f;
// Adding 1.5 * 2^23 rounds x log2e to an integer n held in the low mantissa bits; the extra
// 127 makes those bits n + 127, the biased exponent of 2^n, ready to be shifted into place.
constexpr float kExpShift = 0x1.8p23f + 127.0f;
constexpr float kExpLn2Hi = 0x1.62e43p-1f;     // float(ln2)
constexpr float kExpLn2Lo = -0x1.05c61p-29f;   // float(ln2 - kExpLn2Hi)
constexpr float kExpC2 = 0x1.fffffap-2f, kExpC3 = 0x1.555490p-3f, kExpC4 = 0x1.555a68p-5f,
                kExpC5 = 0x1.123afcp-7f, kExpC6 = 0x1.693ebep-10f;
// Inside +-kExpFastMax, n is in [-126, 126] and the result is normal: the fast path is exact
// in its scaling. Past it, 2^n or the result over/underflows.
constexpr float kExpFastMax = 87.3f;
constexpr float kExpOverflowX = 0x1.62e42ep+6f;    // 88.72283: the largest x with a finite expf
constexpr float kExpUnderflowX = -0x1.9fe368p+6f;  // -103.97208: the smallest x with expf(x) > 0

// exp on float64 lanes, rounded once to float32.
// NOTE: the scalar target (a portable build on a baseline x86-64 compiler) has one lane and
// no UpperHalf/Combine, which must not even be named there.
template <class D, class V> HWY_INLINE V exp_f32_via_f64(D d, V x) {
#if HWY_TARGET == HWY_SCALAR
  const hn::Rebind<double, D> dd;
  return hn::DemoteTo(d, hn::Exp(dd, hn::PromoteTo(dd, x)));
#else
  if constexpr (hn::MaxLanes(D()) * sizeof(double) <= HWY_MAX_BYTES) {
    const hn::Rebind<double, D> dd;
    return hn::DemoteTo(d, hn::Exp(dd, hn::PromoteTo(dd, x)));
  } else {
    const hn::Half<D> dh;
    const hn::Rebind<double, decltype(dh)> dd;
    const auto lo = hn::Exp(dd, hn::PromoteTo(dd, hn::LowerHalf(dh, x)));
    const auto hi = hn::Exp(dd, hn::PromoteTo(dd, hn::UpperHalf(dh, x)));
    return hn::Combine(d, hn::DemoteTo(dh, hi), hn::DemoteTo(dh, lo));
  }
#endif
}

// The slow path for a vector with some |x| > kExpFastMax; y is the fast path's result.
// NOTE: not inlined so that the hot loop around Exp stays small and keeps its constants in
// registers. Every lane's result depends on its own x only, never on its neighbours.
template <class D, class V> HWY_NOINLINE V exp_f32_edges(D d, V x, V y) {
  const auto finite_nonzero = hn::And(hn::Ge(x, hn::Set(d, kExpUnderflowX)), hn::Le(x, hn::Set(d, kExpOverflowX)));
  const auto redo = hn::And(hn::Gt(hn::Abs(x), hn::Set(d, kExpFastMax)), finite_nonzero);
  if (!hn::AllFalse(d, redo)) y = hn::IfThenElse(redo, exp_f32_via_f64(d, x), y);
  y = hn::IfThenElse(hn::Gt(x, hn::Set(d, kExpOverflowX)), hn::Inf(d), y);
  return hn::IfThenZeroElse(hn::Lt(x, hn::Set(d, kExpUnderflowX)), y);
}

// The float32 fast path: exact scaling for |x| <= kExpFastMax only.
// NOTE: the reduction and the polynomial need fused multiply-adds (one rounding each); a
// target without them (the portable scalar build) would err by up to ~50 ulp, so there the
// "fast" path is float64 exp, rounded once, with NaN passed through.
template <class D, class V> HWY_INLINE V exp_f32_fast(D d, V x) {
#if !HWY_NATIVE_FMA
  return hn::IfThenElse(hn::IsNaN(x), x, exp_f32_via_f64(d, x));
#else
  const hn::RebindToUnsigned<D> du;
  const V z = hn::MulAdd(x, hn::Set(d, kExpLog2e), hn::Set(d, kExpShift));
  const V n = hn::Sub(z, hn::Set(d, kExpShift));
  V r = hn::NegMulAdd(n, hn::Set(d, kExpLn2Hi), x);
  r = hn::NegMulAdd(n, hn::Set(d, kExpLn2Lo), r);
  const V scale = hn::BitCast(d, hn::ShiftLeft<23>(hn::BitCast(du, z)));  // 2^n
  V q = hn::MulAdd(hn::Set(d, kExpC6), r, hn::Set(d, kExpC5));
  q = hn::MulAdd(q, r, hn::Set(d, kExpC4));
  q = hn::MulAdd(q, r, hn::Set(d, kExpC3));
  q = hn::MulAdd(q, r, hn::Set(d, kExpC2));
  const V p = hn::MulAdd(q, hn::Mul(r, r), r);  // e^r - 1
  return hn::MulAdd(scale, p, scale);
#endif
}

}  // namespace detail

// exp on every lane. float32: <= 1.02 ulp everywhere, subnormal results correctly rounded;
// float64: Highway's hn::Exp (1 ulp on [-708, 706]), NaN -> NaN, x > 709.78 -> +inf.
template <class D, class V = hn::Vec<D>> HWY_INLINE V Exp(D d, V x) {
  if constexpr (sizeof(hn::TFromD<D>) == 4) {
    using namespace detail;
    const V y = exp_f32_fast(d, x);
    if (HWY_LIKELY(hn::AllFalse(d, hn::Gt(hn::Abs(x), hn::Set(d, kExpFastMax))))) return y;
    return exp_f32_edges(d, x, y);
  } else {
    // Highway 1.0.3's Exp maps NaN to 0 and is only valid up to 706: pass NaN through and
    // give +inf past the overflow point. Both are one compare and blend.
    const V y = hn::IfThenElse(hn::Gt(x, hn::Set(d, 709.782712893384)), hn::Inf(d), hn::Exp(d, x));
    return hn::IfThenElse(hn::IsNaN(x), x, y);
  }
}

// exp of x <= 0 for softmax weights exp(s - max) beside a largest weight of 1: the same
// result as Exp for x >= -87.3 (results from 1.2e-38, just above 2^-126), and 0 below it
// (so -inf -> 0 too), where a weight is under 2^-125 of the sum; no slow path for masked
// (-inf) entries. NaN -> NaN. float64 lanes: Exp. For x > 0 use Exp (up to kExpFastMax
// the result is the same).
template <class D, class V = hn::Vec<D>> HWY_INLINE V ExpNonPositive(D d, V x) {
  if constexpr (sizeof(hn::TFromD<D>) == 4) {
    using namespace detail;
    const V lowest = hn::Set(d, -kExpFastMax);
    const auto below = hn::Lt(x, lowest);  // false for NaN, which then flows through
    return hn::IfThenZeroElse(below, exp_f32_fast(d, hn::IfThenElse(below, lowest, x)));
  } else {
    return sg::simd::Exp(d, x);
  }
}

}  // namespace sg::simd
