// The integer kernels of int8 inference (see quant/int_kernels.h for the contract). Every
// per-element loop here is integer-only; double appears in the make_* functions (once per
// model) and in the float64 references.
//
// Layout of this file: vector helpers; fixed-point primitives and requantization; i-exp (the
// scalar naive kernel first, then the Highway one, bit-identical); the softmax (one
// normalization shared by the polynomial and the table variants); i-GELU; isqrt and the
// LayerNorm (scalar specification, then the Highway kernel, bit-identical); per-token
// quantization.
//
// ---- Why softmax_u8 stays within 1 LSB of round(256 softmax) --------------------------------
// Let x_k = 2^16 exp(d_k scale) (real, d_k = s_k - max <= 0) and e_k = i_exp(d_k). Write
// e_k = y_k - phi_k with y_k = x_k (1 + eps_k) the unfloored value and phi_k in [0, 1) the
// final floor. eps_k is I-BERT's polynomial error, measured in [-0.00310, +0.00246] on
// (-ln 2, 0] (spread Delta = 0.00556), plus our integer steps (the input rounded to
// ln2/2^14, the 15-bit product: < 1.4e-4). With p_j = x_j / X the exact softmax and
// q_j = y_j / Y:
//   (1) |q_j - p_j| = p_j |sum_k p_k (eps_j - eps_k)| / (1 + eps_bar)
//                   <= p_j (1 - p_j) Delta' / (1 - 0.0033) <= Delta' / 4 / 0.9967:
//       the polynomial's error cancels in the normalization except for its spread, and
//       256 |q_j - p_j| <= 64 Delta' / 0.9967 ~ 0.37 LSB (Delta' = 0.00584 with the integer
//       steps).
//   (2) the floors: |e_j / E - q_j| = |y_j Phi - phi_j Y| / (Y E) <= max(phi_j, q_j Phi) / E,
//       Phi = sum phi_k <= #{k : y_k >= 1} + sum_{y_k < 1} y_k. E >= e_max = 65550 (the max
//       element's d is 0), so this is <= 256 max(1, q_j Phi) / 65550 LSB: 0.004 LSB times
//       max(1, q_j Phi). A row of
//       m elements holding comparable mass has q_j Phi <~ a few; it only grows when one
//       element holds a large share q_j AND hundreds of others sit just above the floor
//       (exp(d) ~ 2^-16): then 256 e_j / E drifts by up to 256 q_j Phi / E (n = 300: up to
//       ~1.2 LSB, a row built for it).
//   (3) the per-row reciprocal F = floor(2^31 / E): e F / 2^23 lies in
//       [256 e/E - e/2^23, 256 e/E], an error < 2^17 / 2^23 = 2^-6 LSB.
// So the value the kernel rounds, v_j, is within dev = 0.37 + 0.004 max(1, q_j Phi) + 2^-6 of
// the exact 256 p_j, and |round(v_j) - round(256 p_j)| <= 1 whenever dev < 1 (two reals
// closer than 1 round to integers at most 1 apart). Clamping both to 255 keeps that.
// The cumulative path (below) gives each out_j within 1 + 2^-5 of v_j = 256 e_j / E (its
// floor or ceil up to that sliver); with |v_j - 256 p_j| <= 1/2 - 2^-5 that is again within 1
// of round(256 p_j) (out_j < v_j + 1 + 2^-5 <= 256 p_j + 3/2 <= round(256 p_j) + 2, and
// symmetrically). It runs on flat rows (E >= 64 2^16) and on rows whose regular outputs miss
// 256 by more than 1 (many small elements: dev = 0 for equal scores, ~p_j (1 - p_j) 64 Delta,
// a few hundredths of an LSB, on long random rows). On a flat row no q_j or p_j exceeds 1/63
// (y_j <= 65551, Y >= E >= 2^22), so (1) gives at most 4.1 Delta' / 0.9967 < 0.024 LSB and (2)
// at most 256 max(1, q_j Phi) / 2^22 <= 2^-14 max(1, Phi / 63) LSB: within 1/2 - 2^-5 while the
// floors lose Phi < 460,000 units (any row of fewer elements).
// softmax_u8_lut is the same with eps_k = 0 and phi_k in [-1/2, 1/2] (the table rounds).
#include "quant/int_kernels.h"

#include <hwy/highway.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numbers>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/scratch.h"
#include "core/simd_partial.h"
#include "core/strided.h"

namespace sg::quant {
namespace hn = hwy::HWY_NAMESPACE;

namespace {

// ---- constants ----------------------------------------------------------------------------

constexpr double kLn2 = std::numbers::ln2;

// i-exp (I-BERT Alg. 2). Working scale S_w = ln2 / 2^kWorkBits, so z = floor(x / -ln2) is a
// shift of the working value and r = x + z ln2 its low kWorkBits bits.
constexpr double kExpA = 0.3585, kExpB = 1.353, kExpC = 0.344;
constexpr int kWorkBits = 14;
constexpr double kWorkScale = kLn2 / (1 << kWorkBits);
// Inputs at or below -17 ln2 (exp < 2^-17: 0 in 16 fractional bits) are clamped to
// -kClampUnits S_w, which i-exp also maps to 0; so z <= 16 and every shift count is < 32.
constexpr int32_t kClampUnits = 17 * (1 << kWorkBits) - 1;
// The polynomial t^2 + c_int (t = (r + b) / S_w < 2^15, poly < 1.56e9) has scale a S_w^2, and
// e = poly a S_w^2 2^16 2^-z. a S_w^2 2^16 is not a power of two:
//   e = (P * kExpMul) >> (z + kMulShift),  P = poly >> 16 < 2^15,
//   kExpMul = round(a S_w^2 2^16 2^16 2^kMulShift) < 2^15,
// two products of 15-bit factors (one multiply-add of int16 pairs each on x86). P's floor
// costs < 1 / 11893 relative (poly >= 7.8e8), kExpMul's rounding < 1.4e-5.
constexpr int kMulShift = 13;
constexpr int32_t kExpMul =
    static_cast<int32_t>(kExpA * kWorkScale * kWorkScale * (1 << kExpBits) * (1LL << (16 + kMulShift)) + 0.5);
static_assert(kExpMul == 22576);
// The working value carries kMulShift << kWorkBits on top (added with the rounding constant
// of the conversion), so z + kMulShift is one shift of it. That constant times 2^shift must
// stay below 2^62: the conversion's shift is at most kMaxWorkShift (input scale >= 5.3e-9).
constexpr int kMaxWorkShift = 44;

// Softmax: scores must satisfy |s| < 2^30 so that s - max fits int32.
constexpr int32_t kScoreLimit = 1 << 30;
// out = (e F + 2^(kRecipShift - 1)) >> kRecipShift with F = floor(256 * 2^kRecipShift / E):
// e <= E makes e F <= 2^31, and the error is < e / 2^23 < 2^-6 LSB (e < 2^17).
constexpr int kRecipShift = 23;
// The cumulative path walks each row lane-major over groups of kGroup elements (see there).
constexpr int64_t kGroup = 16;

// i-GELU (I-BERT Alg. 3) with L(u) = sgn(u) (1 - A (min(|u|, -b) + b)^2), A = -a = 0.2888.
// The polynomial's input u = x / sqrt2 is taken at the working scale S_g = sqrt(2^-kGeluBits
// / A), so A S_g^2 = 2^-kGeluBits exactly: 1 is 2^kGeluBits at the polynomial's output scale
// and 1 + L = h 2^-kGeluBits with h = one + sgn(u) (c - t^2) in [0, 2^30].
constexpr double kGeluA = 0.2888, kGeluB = -1.769;
constexpr int kGeluBits = 29;
// x / out_scale is carried with kGeluGuard fractional bits: v = round(x 2^8 / out_scale), and
// out = round(v h 2^-(kGeluGuard + kGeluBits + 1)).
constexpr int kGeluGuard = 8;
constexpr int kGeluOutShift = kGeluGuard + kGeluBits + 1;

// 128-bit products for the LayerNorm's per-row reciprocal (GCC/Clang extension).
__extension__ typedef __int128 int128;

void check_rows(const char* op, int64_t rows, int64_t n, int64_t ld_in, int64_t ld_out) {
  SG_CHECK(rows >= 0 && n >= 0, "{}: rows and n must be >= 0, got rows = {}, n = {}", op, rows, n);
  SG_CHECK(ld_in >= n && ld_out >= n, "{}: row strides ({}, {}) must be >= n = {}", op, ld_in, ld_out, n);
}

// round(p / 2^s), ties away from zero, for p in any signed integer type with room for + 2^(s-1).
template <typename T> inline T round_shift(T p, int s) {
  return (p + (T{1} << (s - 1)) - static_cast<T>(p < 0)) >> s;
}

// ---- vector helpers ------------------------------------------------------------------------

template <class D> using V = hn::Vec<D>;
using DI = hn::ScalableTag<int32_t>;
using DU = hn::ScalableTag<uint32_t>;
using DI64 = hn::ScalableTag<int64_t>;
using DU64 = hn::ScalableTag<uint64_t>;
constexpr int64_t kMaxLanes = HWY_MAX_BYTES / sizeof(int32_t);

#if HWY_TARGET != HWY_SCALAR
// a b mod 2^64 in uint64 lanes: one vpmullq on AVX-512; elsewhere (Highway 1.0.3 has a
// 64-bit Mul only there) from three 32 x 32 -> 64-bit products.
HWY_INLINE V<DU64> mul_u64(V<DU64> a, V<DU64> b) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  return hn::Mul(a, b);
#else
  const hn::Repartition<uint32_t, DU64> du32;
  const V<DU64> lo = hn::MulEven(hn::BitCast(du32, a), hn::BitCast(du32, b));
  const V<DU64> cross = hn::Add(hn::MulEven(hn::BitCast(du32, a), hn::BitCast(du32, hn::ShiftRight<32>(b))),
                                hn::MulEven(hn::BitCast(du32, hn::ShiftRight<32>(a)), hn::BitCast(du32, b)));
  return hn::Add(lo, hn::ShiftLeft<32>(cross));
#endif
}

// Stores int64 lanes already within T's range as T (int8_t, uint8_t or int32_t): one vpmovqb /
// vpmovqd on AVX-512 (Highway 1.0.3's TruncateTo from 64-bit lanes to bytes takes four shuffles).
template <typename T> HWY_INLINE void store_narrow(V<DI64> v, T* HWY_RESTRICT p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if constexpr (sizeof(T) == 1)
    _mm512_mask_cvtepi64_storeu_epi8(p, 0xFF, v.raw);
  else
    _mm512_mask_cvtepi64_storeu_epi32(p, 0xFF, v.raw);
#else
  const hn::Rebind<hwy::MakeUnsigned<T>, DI64> d;
  hn::StoreU(hn::TruncateTo(d, hn::BitCast(DU64(), v)), d, reinterpret_cast<hwy::MakeUnsigned<T>*>(p));
#endif
}
#endif

}  // namespace

// ---- fixed-point multipliers ----------------------------------------------------------

FixedPoint to_fixed_point(double real) {
  SG_CHECK(std::isfinite(real) && real >= 0x1p-40 && real < 0x1p30,
           "to_fixed_point: factor {} outside [2^-40, 2^30)", real);
  int e = 0;
  const double f = std::frexp(real, &e);  // real = f 2^e, f in [0.5, 1)
  int64_t m = std::llround(std::ldexp(f, 31));
  int shift = 31 - e;
  if (m == (int64_t{1} << 31)) {  // f rounded up to 1
    m >>= 1;
    --shift;
  }
  if (shift < 1) {  // real within 2^-32 of 2^30: 2^30 - 1/2 is within 2^-31 of it
    m = (int64_t{1} << 31) - 1;
    shift = 1;
  }
  return {static_cast<int32_t>(m), shift};
}

// |x| <= 2^31 and multiplier < 2^31 keep |p| < 2^62, so p + 2^(s-1) cannot overflow; for
// s >= 63 the result is 0 (|p| / 2^63 < 1/2), which the shift by 63 also gives.
int64_t fixed_multiply(int64_t x, FixedPoint f) {
  return round_shift<int64_t>(x * f.multiplier, std::min<int32_t>(f.shift, 63));
}

namespace {

// acc: (rows, cols) with row stride ld_acc; out: (rows, cols) with row stride ld_out; bias:
// (cols) or null. out[c] = clamp(round(x f_c), lo, hi) with x = acc[c] + bias[c], f_c = m 2^-s,
// s = min(shift, 63), rounded half away from zero. With p = x m = acc m + bias m (two products
// of int32 factors, |p| < 2^63):
//   round(p 2^-s) = (p + 2^(s-1) - (p < 0)) >> s = ((((p - (p < 0)) >> (s-1)) + 1) >> 1
// (arithmetic shifts; the first is fixed_multiply's form, the second the same integer, floor
// of a floor, and free of its overflow: p + 2^(s-1) can pass 2^63 once |x| > 2^31).
// The factors come unpacked as int32 arrays, m and s - 1 (per column, or one entry when shared).
struct RequantFactors {
  std::vector<int32_t> mult, shift;  // m, s - 1
};

// One element: the scalar form (the specification, and the tail of the vector rows).
template <typename T> inline T requantize_one(int32_t acc, int32_t bias, int64_t m, int s1, int64_t lo, int64_t hi) {
  const int64_t p = acc * m + bias * m;
  return static_cast<T>(std::clamp((((p - (p < 0)) >> s1) + 1) >> 1, lo, hi));
}

// One row in int64 lanes (a, bias, o: (cols)). kPerColumn: lane c takes column c's factors
// (a per-lane shift), else factor 0 for all.
// NOTE: the products are 32 x 32 -> 64-bit (one vpmuldq each; the 64 x 64 vpmullq costs 2.6x
// as much on Zen 4), and the factors take 8 bytes a column: with 24 (m, 2^(s-1), s as uint64)
// the per-column rows ran 2x slower when streamed from memory (4096 x 768).
template <bool kPerColumn, typename T>
void requantize_row(const int32_t* HWY_RESTRICT a, const int32_t* HWY_RESTRICT bias, const RequantFactors& f,
                    int64_t cols, int64_t lo, int64_t hi, T* HWY_RESTRICT o) {
  const int32_t* HWY_RESTRICT mult = f.mult.data();
  const int32_t* HWY_RESTRICT shift = f.shift.data();
  int64_t c = 0;
#if HWY_TARGET != HWY_SCALAR
  const DI di;
  const DI64 d64;
  const hn::Rebind<int32_t, DI64> d32;  // half a vector of int32, widened to int64 lanes
  const int64_t L = static_cast<int64_t>(hn::Lanes(d64));
  const V<DI64> vlo = hn::Set(d64, lo), vhi = hn::Set(d64, hi), one = hn::Set(d64, 1);
  const V<DI64> mult0 = hn::Set(d64, mult[0]);
  const int shift0 = shift[0];
  // int32 values widened to int64 lanes, as the int32 view vpmuldq reads (the low halves)
  auto load = [&](const int32_t* p) HWY_ATTR { return hn::BitCast(di, hn::PromoteTo(d64, hn::LoadU(d32, p))); };
  for (; c + L <= cols; c += L) {
    const V<DI> m = kPerColumn ? load(mult + c) : hn::BitCast(di, mult0);
    V<DI64> p = hn::MulEven(load(a + c), m);
    if (bias) p = hn::Add(p, hn::MulEven(load(bias + c), m));
    p = hn::Add(p, hn::ShiftRight<63>(p));  // p - (p < 0)
    p = kPerColumn ? hn::Shr(p, hn::PromoteTo(d64, hn::LoadU(d32, shift + c))) : hn::ShiftRightSame(p, shift0);
    store_narrow(hn::Min(hn::Max(hn::ShiftRight<1>(hn::Add(p, one)), vlo), vhi), o + c);
  }
#endif
  for (; c < cols; ++c) {
    const int64_t k = kPerColumn ? c : 0;
    o[c] = requantize_one<T>(a[c], bias ? bias[c] : 0, mult[k], shift[k], lo, hi);
  }
}

template <typename T>
void requantize_rows(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc, const FixedPoint* f,
                     bool per_column, int64_t lo, int64_t hi, T* out, int64_t ld_out, const int32_t* bias) {
  const size_t k = static_cast<size_t>(per_column ? cols : 1);
  RequantFactors factors{std::vector<int32_t>(k), std::vector<int32_t>(k)};
  for (size_t c = 0; c < k; ++c) {
    factors.mult[c] = f[c].multiplier;
    factors.shift[c] = std::min<int32_t>(f[c].shift, 63) - 1;
  }
  parallel_for(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (per_column)
        requantize_row<true>(acc + r * ld_acc, bias, factors, cols, lo, hi, out + r * ld_out);
      else
        requantize_row<false>(acc + r * ld_acc, bias, factors, cols, lo, hi, out + r * ld_out);
    }
  });
}

template <typename T>
void requantize_checked(const char* op, const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc,
                        const FixedPoint* f, bool per_column, int64_t lo, int64_t hi, T* out, int64_t ld_out,
                        const int32_t* bias) {
  check_rows(op, rows, cols, ld_acc, ld_out);
  constexpr int64_t kMin = std::numeric_limits<T>::min(), kMax = std::numeric_limits<T>::max();
  SG_CHECK(kMin <= lo && lo <= hi && hi <= kMax, "{}: clamp [{}, {}] must be a range within [{}, {}]", op, lo, hi,
           kMin, kMax);
  if (rows == 0 || cols == 0) return;
  for (int64_t c = 0; c < (per_column ? cols : 1); ++c)
    SG_CHECK(f[c].multiplier >= 0 && f[c].shift >= 1, "{}: multiplier {} of column {} has shift {} (need >= 1)", op,
             f[c].multiplier, c, f[c].shift);
  requantize_rows(acc, rows, cols, ld_acc, f, per_column, lo, hi, out, ld_out, bias);
}

}  // namespace

void requantize_s8(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc, const FixedPoint* f,
                   bool per_column, int32_t lo, int32_t hi, int8_t* out, int64_t ld_out, const int32_t* bias) {
  requantize_checked("requantize_s8", acc, rows, cols, ld_acc, f, per_column, lo, hi, out, ld_out, bias);
}
void requantize_u8(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc, const FixedPoint* f,
                   bool per_column, int32_t lo, int32_t hi, uint8_t* out, int64_t ld_out, const int32_t* bias) {
  requantize_checked("requantize_u8", acc, rows, cols, ld_acc, f, per_column, lo, hi, out, ld_out, bias);
}
void requantize_s32(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc, const FixedPoint* f,
                    bool per_column, int32_t* out, int64_t ld_out, const int32_t* bias) {
  requantize_checked("requantize_s32", acc, rows, cols, ld_acc, f, per_column, -(int64_t{1} << 30),
                     int64_t{1} << 30, out, ld_out, bias);
}

// ---- exp ------------------------------------------------------------------------------

ExpParams make_exp_params(double input_scale) {
  // The working value is round(q * r), r = scale / S_w = m 2^-shift; shift <= 44 keeps the
  // conversion's constants in int64 (and a coarser r would leave int32 scores a real range
  // of a few units at most).
  const double r = input_scale / kWorkScale;
  const double lo = std::ldexp(1.0, 30 - kMaxWorkShift);
  SG_CHECK(std::isfinite(input_scale) && r >= lo && r < 0x1p30, "make_exp_params: input scale {} outside [{:g}, {:g})",
           input_scale, lo * kWorkScale, 0x1p30 * kWorkScale);
  ExpParams p;
  p.scale = input_scale;
  const FixedPoint f = to_fixed_point(r);
  p.to_working_multiplier = f.multiplier;
  p.to_working_shift = f.shift;
  // Most negative q kept: |q| r <= kClampUnits, so the rounded working value is too.
  p.clamp = -static_cast<int32_t>(std::min(std::floor(kClampUnits / r), 2147483647.0));
  p.b_int = static_cast<int32_t>(std::lround(kExpB / kWorkScale));                        // 31981
  p.c_int = static_cast<int32_t>(std::lround(kExpC / (kExpA * kWorkScale * kWorkScale)));  // 536115346
  return p;
}

namespace {

// The conversion's additive constant: the rounding half plus kMulShift << kWorkBits (so that
// the working value's z field reads z + kMulShift).
inline int64_t work_offset(const ExpParams& p) {
  return (int64_t{1} << (p.to_working_shift - 1)) + (int64_t{kMulShift} << (kWorkBits + p.to_working_shift));
}

// i-exp of nd = -d in [0, -p.clamp], integers only: the specification the vector kernel
// reproduces lane for lane.
inline uint32_t i_exp_neg(int32_t nd, const ExpParams& p) {
  // -x_w = round(nd r) in units of S_w, plus kMulShift << 14
  const int64_t prod = int64_t{nd} * p.to_working_multiplier + work_offset(p);
  const int32_t nx = static_cast<int32_t>(prod >> p.to_working_shift);
  const int32_t zs = nx >> kWorkBits;                          // floor(x / -ln2) + kMulShift <= 29
  const int32_t t = p.b_int - (nx & ((1 << kWorkBits) - 1));  // (r + b) / S_w in (15598, 31981]
  const int32_t poly = t * t + p.c_int;                       // (a (r+b)^2 + c) / (a S_w^2)
  return static_cast<uint32_t>(((poly >> 16) * kExpMul) >> zs);
}
inline uint32_t i_exp_one(int32_t d, const ExpParams& p) { return i_exp_neg(-std::clamp(d, p.clamp, 0), p); }

// a * b (+ c) for a, b in [0, 2^15) in every int32 lane: on x86 a product of int16 pairs
// whose upper halves are 0 (one vpmaddwd, or one vpdpwssd with AVX512-VNNI), cheaper than a
// 32-bit multiply; elsewhere the 32-bit multiply (the same value: a b < 2^30).
HWY_INLINE V<DI> mul15(V<DI> a, V<DI> b) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  return V<DI>{_mm512_madd_epi16(a.raw, b.raw)};
#elif HWY_ARCH_X86 && HWY_TARGET == HWY_AVX2
  return V<DI>{_mm256_madd_epi16(a.raw, b.raw)};
#else
  return hn::Mul(a, b);
#endif
}
HWY_INLINE V<DI> mul15_add(V<DI> a, V<DI> b, V<DI> c) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3 && defined(__AVX512VNNI__)
  return V<DI>{_mm512_dpwssd_epi32(c.raw, a.raw, b.raw)};
#else
  return hn::Add(mul15(a, b), c);
#endif
}
// (a >> 16) * b for a in [0, 2^31), b in [0, 2^15), with factor = high16_factor(b): on x86
// mul15's int16 pair product (vpmaddwd) of a's halves with (0, b), the upper half times b plus
// the lower times 0, so that no shift is needed.
#if HWY_ARCH_X86 && (HWY_TARGET <= HWY_AVX3 || HWY_TARGET == HWY_AVX2)
inline int32_t high16_factor(int32_t b) { return b << 16; }
HWY_INLINE V<DI> mul_high16(V<DI> a, V<DI> factor) { return mul15(a, factor); }
#else
inline int32_t high16_factor(int32_t b) { return b; }
HWY_INLINE V<DI> mul_high16(V<DI> a, V<DI> factor) { return hn::Mul(hn::ShiftRight<16>(a), factor); }
#endif

// The upper 32 bits of the even lanes' 64-bit products (pe) and of the odd lanes' (po) as one
// vector in lane order: one two-source permute on AVX-512, else a shift and a blend.
HWY_INLINE V<DI> upper_halves(V<DI64> pe, V<DI64> po) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  const __m512i idx = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  return V<DI>{_mm512_permutex2var_epi32(pe.raw, idx, po.raw)};
#else
  const DI di;
  return hn::OddEven(hn::BitCast(di, po), hn::BitCast(di, hn::ShiftRight<32>(pe)));
#endif
}

// The vector form of i_exp_neg, bit-identical. The conversion floor((nd m + off) / 2^s) (s =
// to_working_shift, off = work_offset) takes 32 x 32 -> 64-bit products of the even lanes and
// of the odd lanes moved down, and keeps only their upper halves (upper_halves):
//  - s > 32 (kBigShift): off is a multiple of 2^32, so the value is
//    (hi32(nd m) + off / 2^32) >> (s - 32) (floor of a floor);
//  - s <= 32: the value is hi32((nd << (32 - s)) m + off 2^(32 - s)), with nd << (32 - s) <
//    2^21 (nd r <= kClampUnits, r >= m 2^-s / (1 + 2^-31)) and off 2^(32 - s) = 2^31 + kMulShift 2^46.
struct ExpVec {
  DI di;
  DI64 di64;
  V<DI> lim, mult, b, c, low_mask, mul, offset32;
  V<DI64> offset64;
  int shift;
  ExpParams params;
  explicit ExpVec(const ExpParams& p)
      : lim(hn::Set(di, -p.clamp)),
        mult(hn::Set(di, p.to_working_multiplier)),
        b(hn::Set(di, p.b_int)),
        c(hn::Set(di, p.c_int)),
        low_mask(hn::Set(di, (1 << kWorkBits) - 1)),
        mul(hn::Set(di, high16_factor(kExpMul))),
        offset32(hn::Set(di, static_cast<int32_t>(work_offset(p) >> 32))),
        offset64(hn::Set(di64, (int64_t{1} << 31) + (int64_t{kMulShift} << (kWorkBits + 32)))),
        shift(p.to_working_shift),
        params(p) {}
  bool big_shift() const { return shift > 32; }

  // nd in [0, -clamp] -> e (uint32 in int32 lanes)
  template <bool kBigShift> HWY_INLINE V<DI> operator()(V<DI> nd) const {
#if HWY_TARGET == HWY_SCALAR  // one lane: the scalar kernel itself
    return hn::Set(di, static_cast<int32_t>(i_exp_neg(hn::GetLane(nd), params)));
#else
    const V<DI> x = kBigShift ? nd : hn::ShiftLeftSame(nd, 32 - shift);
    const V<DI64> pe = hn::MulEven(x, mult);
    const V<DI64> po = hn::MulEven(hn::BitCast(di, hn::ShiftRight<32>(hn::BitCast(di64, x))), mult);
    const V<DI> nx = kBigShift ? hn::ShiftRightSame(hn::Add(upper_halves(pe, po), offset32), shift - 32)
                               : upper_halves(hn::Add(pe, offset64), hn::Add(po, offset64));
    const V<DI> zs = hn::ShiftRight<kWorkBits>(nx);
    const V<DI> t = hn::Sub(b, hn::And(nx, low_mask));
    const V<DI> poly = mul15_add(t, t, c);
    return hn::Shr(mul_high16(poly, mul), zs);
#endif
  }
};

// Sum of a vector's uint32 lanes in uint64.
HWY_INLINE uint64_t sum_lanes(V<DU> v) {
  const DU du;
  HWY_ALIGN uint32_t lanes[kMaxLanes];
  hn::Store(v, du, lanes);
  uint64_t total = 0;
  for (size_t k = 0; k < hn::Lanes(du); ++k) total += lanes[k];
  return total;
}

// uint32 lanes in [0, 2^31) -> uint8, saturated at 255.
using D8 = hn::Rebind<uint8_t, DI>;
HWY_INLINE V<D8> narrow_u8(V<DU> v) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  return V<D8>{_mm512_cvtusepi32_epi8(v.raw)};  // one vpmovusdb
#else
  const DI di;
  return hn::DemoteTo(D8(), hn::BitCast(di, v));
#endif
}

// Four vectors of uint32 lanes in [0, 2^31) -> 64 uint8 at out, saturated at 255, as narrow_u8
// each: on AVX-512 two vpackusdw, a vpackuswb and one vpermd put back the order the packs
// interleave (within 128-bit blocks), cheaper than four vpmovusdb.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
#define SG_QUANT_PACK4 1
HWY_INLINE void store_u8x4(V<DU> a, V<DU> b, V<DU> c, V<DU> d, uint8_t* HWY_RESTRICT out) {
  const __m512i bytes = _mm512_packus_epi16(_mm512_packus_epi32(a.raw, b.raw), _mm512_packus_epi32(c.raw, d.raw));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_si512(out, _mm512_permutexvar_epi32(order, bytes));
}
#endif

struct MinMax {
  int32_t min, max;
};

MinMax row_min_max(const int32_t* HWY_RESTRICT s, int64_t n) {
  const DI di;
  const int64_t L = static_cast<int64_t>(hn::Lanes(di));
  int32_t mn = std::numeric_limits<int32_t>::max(), mx = std::numeric_limits<int32_t>::min();
  int64_t i = 0;
  if (n >= L) {
    V<DI> vmn = hn::LoadU(di, s), vmx = vmn;
    for (; i + L <= n; i += L) {
      const V<DI> v = hn::LoadU(di, s + i);
      vmn = hn::Min(vmn, v);
      vmx = hn::Max(vmx, v);
    }
    mn = hn::GetLane(hn::MinOfLanes(di, vmn));
    mx = hn::GetLane(hn::MaxOfLanes(di, vmx));
  }
  for (; i < n; ++i) {
    mn = std::min(mn, s[i]);
    mx = std::max(mx, s[i]);
  }
  return {mn, mx};
}

// A row's sum E, and the per-lane sums of its e when the vector has 16 lanes and no lane
// needed a flush: lane l then holds the sum over j = l mod kGroup (the cumulative path's
// lane starts).
struct RowSum {
  uint64_t E = 0;
  bool has_lanes = false;
  HWY_ALIGN uint32_t lanes[kMaxLanes];
};

// e = i_exp(s - max) over a row of n scores, and their sums; returns the min and max of the
// next row's scores (next: (n); the caller passes s itself after its last row). Lanes past n
// are zeroed before they are summed and never stored.
// NOTE: the next row's extremes are taken here, from lines requested a row earlier (ahead:
// the row after next, prefetched into L2 a line per vector), so that the transfer from memory
// overlaps the exps. As a pass of its own the max waits on that transfer (~15% slower at
// 4096 x 4096); prefetched into L1 instead, the lines evict this row's (slower still).
template <bool kBigShift>
MinMax exp_row(const int32_t* HWY_RESTRICT s, int64_t n, int32_t max, const ExpVec& exp_vec, uint32_t* HWY_RESTRICT e,
               RowSum& sum, const int32_t* HWY_RESTRICT next, const int32_t* ahead) {
  // NOTE: a local copy: through the reference, the compiler reloads every constant after
  // each store to e (the vector types may alias anything).
  const ExpVec ex = exp_vec;
  const DI di;
  const DU du;
  const int64_t L = static_cast<int64_t>(hn::Lanes(di));
  const V<DI> vmax = hn::Set(di, max);
  V<DI> next_min = hn::Set(di, std::numeric_limits<int32_t>::max());
  V<DI> next_max = hn::Set(di, std::numeric_limits<int32_t>::min());
  // Each lane adds at most 2^14 values < 2^17 before it moves into the uint64 total.
  constexpr int64_t kFlush = int64_t{1} << 14;
  uint64_t total = 0;
  bool flushed = false;
  V<DU> acc = hn::Zero(du);
  int64_t i = 0, pending = 0;
  for (; i + L <= n; i += L) {
    __builtin_prefetch(ahead + i, /*rw=*/0, /*locality=*/2);
    const V<DU> v = hn::BitCast(du, ex.operator()<kBigShift>(hn::Min(hn::Sub(vmax, hn::LoadU(di, s + i)), ex.lim)));
    hn::StoreU(v, du, e + i);
    acc = hn::Add(acc, v);
    const V<DI> nv = hn::LoadU(di, next + i);
    next_min = hn::Min(next_min, nv);
    next_max = hn::Max(next_max, nv);
    if (HWY_UNLIKELY(++pending == kFlush)) {
      total += sum_lanes(acc);
      acc = hn::Zero(du);
      pending = 0;
      flushed = true;
    }
  }
  MinMax next_mm{hn::GetLane(hn::MinOfLanes(di, next_min)), hn::GetLane(hn::MaxOfLanes(di, next_max))};
  if (i < n) {
    const size_t rest = static_cast<size_t>(n - i);
    const V<DI> nd = hn::Min(hn::Sub(vmax, simd::LoadFirstN(di, s + i, rest)), ex.lim);
    const V<DU> v = hn::IfThenElseZero(hn::FirstN(du, rest), hn::BitCast(du, ex.operator()<kBigShift>(nd)));
    simd::StoreFirstN(v, du, e + i, rest);
    acc = hn::Add(acc, v);
    for (; i < n; ++i) next_mm = {std::min(next_mm.min, next[i]), std::max(next_mm.max, next[i])};
  }
  sum.E = total + sum_lanes(acc);
  sum.has_lanes = !flushed && L == kGroup;
  hn::Store(acc, du, sum.lanes);
  return next_mm;
}

template <bool kBigShift>
void i_exp_vec(const int32_t* q, int64_t n, const ExpVec& exp_vec, int32_t clamp, uint32_t* e) {
  const ExpVec ex = exp_vec;  // a local copy (see exp_row)
  const DI di;
  const DU du;
  const V<DI> vclamp = hn::Set(di, clamp), zero = hn::Zero(di);
  const int64_t L = static_cast<int64_t>(hn::Lanes(di));
  auto one = [&](V<DI> v) HWY_ATTR {
    return hn::BitCast(du, ex.operator()<kBigShift>(hn::Neg(hn::Min(hn::Max(v, vclamp), zero))));
  };
  int64_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(one(hn::LoadU(di, q + i)), du, e + i);
  if (i < n) {
    const size_t rest = static_cast<size_t>(n - i);
    simd::StoreFirstN(one(simd::LoadFirstN(di, q + i, rest)), du, e + i, rest);
  }
}

}  // namespace

void i_exp_naive(const int32_t* q, int64_t n, const ExpParams& p, uint32_t* e) {
  for (int64_t i = 0; i < n; ++i) e[i] = i_exp_one(q[i], p);
}

void i_exp(const int32_t* q, int64_t n, const ExpParams& p, uint32_t* e) {
  const ExpVec ex(p);
  if (ex.big_shift())
    i_exp_vec<true>(q, n, ex, p.clamp, e);
  else
    i_exp_vec<false>(q, n, ex, p.clamp, e);
}

double i_exp_reference(double x) {
  const double z = std::floor(-x / kLn2);
  const double r = x + z * kLn2;
  return (kExpA * (r + kExpB) * (r + kExpB) + kExpC) * std::exp2(-z);
}

// ---- softmax ----------------------------------------------------------------------------

namespace {

// ---- The row-sum repair (cumulative rounding) ----
// Walk the row in a fixed order, keep the running sum C of e, and let
//   R(C) = round(256 C / E),  out_j = R(C after e_j) - R(C before e_j).
// The outputs telescope to R(E) - R(0) = 256, and each lies strictly within 1 of
// 256 e_j / E (the difference of two roundings of numbers 256 e_j / E apart): its floor or
// its ceil (up to the sliver below: R is computed in 32 bits). Any order works; this one vectorizes: element j sits in lane j % 16 at position
// j / 16, and the walk goes lane by lane (all of lane 0's elements, then lane 1's, ...), so
// a vector of 16 consecutive elements advances 16 independent running sums, each started at
// the total of the lanes before it.
// R in uint32 lanes: with sh = max(0, bit_width(E) - 16), E' = E >> sh < 2^16 and
// G = floor(2^31 / E'), R(C) = ((C >> sh) G + 2^22) >> 23; (C >> sh) G <= E' G <= 2^31 and
// R(E) = 256 exactly (E' G > 2^31 - 2^16). The value rounded, (C >> sh) G / 2^23, is within
// 256 / E' + (C >> sh) / 2^23 <= 2^-7 + 2^-7 of 256 C / E (truncating C and E to 16 bits, and
// G's floor), so out_j lies within 1 + 2^-5 of 256 e_j / E (floor or ceil but for that sliver).
struct Cumulative {
  int sh;
  uint32_t G;
  explicit Cumulative(uint64_t E) {
    sh = std::max(0, static_cast<int>(std::bit_width(E)) - 16);
    G = static_cast<uint32_t>((uint64_t{1} << 31) / (E >> sh));
  }
  uint64_t R(uint64_t C) const { return ((C >> sh) * G + (1u << 22)) >> 23; }
};

// Scalar form (the specification; also the path for E >= 2^32, rows past 65,000 elements).
void cumulative_row_naive(const uint32_t* e, int64_t n, uint64_t E, uint8_t* out) {
  const Cumulative cu(E);
  uint64_t C = 0;
  for (int64_t lane = 0; lane < kGroup; ++lane) {
    uint64_t prev = cu.R(C);
    for (int64_t j = lane; j < n; j += kGroup) {
      C += e[j];
      const uint64_t R = cu.R(C);
      out[j] = static_cast<uint8_t>(std::min<uint64_t>(R - prev, 255));
      prev = R;
    }
  }
}

// The regular rounding's output of a vector of e: (e F + 2^22) >> 23 = round(256 e / E) but
// for < 2^-6 (see the top of the file).
HWY_INLINE V<DU> regular_out(V<DU> e, V<DU> vf) {
  const DU du;
  return hn::ShiftRight<kRecipShift>(hn::Add(hn::Mul(e, vf), hn::Set(du, 1u << (kRecipShift - 1))));
}
uint32_t reciprocal(uint64_t E) { return static_cast<uint32_t>((uint64_t{256} << kRecipShift) / E); }

// True when the vector cumulative path applies: 16 lanes in groups (or 8, 4), E < 2^32.
bool cumulative_vectorized(uint64_t E) {
  const DU du;
  constexpr int64_t L = static_cast<int64_t>(hn::MaxLanes(DU()));
  return E < (uint64_t{1} << 32) && L <= kGroup && kGroup % L == 0 && static_cast<int64_t>(hn::Lanes(du)) == L;
}

// The cumulative outputs of a row (requires cumulative_vectorized(E)).
void cumulative_row(const uint32_t* HWY_RESTRICT e, int64_t n, const RowSum& sum, uint8_t* HWY_RESTRICT out) {
  const DU du;
  constexpr int64_t L = static_cast<int64_t>(hn::MaxLanes(DU()));
  constexpr int64_t kVecs = kGroup / L;  // vectors per group of 16
  const uint64_t E = sum.E;
  const int64_t full = n / kGroup * kGroup;
  // Lane totals T_l (sums over j = l mod 16), then the running sums' starts: sum of T_l' < l.
  HWY_ALIGN uint32_t t[kGroup] = {};
  if (sum.has_lanes) {
    std::copy_n(sum.lanes, kGroup, t);
  } else {
    V<DU> total[kVecs];
    for (int64_t k = 0; k < kVecs; ++k) total[k] = hn::Zero(du);
    for (int64_t i = 0; i < full; i += kGroup)
      for (int64_t k = 0; k < kVecs; ++k) total[k] = hn::Add(total[k], hn::LoadU(du, e + i + k * L));
    for (int64_t k = 0; k < kVecs; ++k) hn::Store(total[k], du, t + k * L);
    for (int64_t j = full; j < n; ++j) t[j - full] += e[j];
  }
  uint32_t start = 0;
  for (int64_t l = 0; l < kGroup; ++l) {
    const uint32_t tl = t[l];
    t[l] = start;
    start += tl;
  }
  const Cumulative cu(E);
  const V<DU> vg = hn::Set(du, cu.G), vhalf = hn::Set(du, 1u << 22);
  const int sh = cu.sh;
  auto R = [&](V<DU> C) HWY_ATTR { return hn::ShiftRight<23>(hn::Add(hn::Mul(hn::ShiftRightSame(C, sh), vg), vhalf)); };
  V<DU> C[kVecs], prev[kVecs];
  for (int64_t k = 0; k < kVecs; ++k) {
    C[k] = hn::Load(du, t + k * L);
    prev[k] = R(C[k]);
  }
  int64_t i0 = 0;
#ifdef SG_QUANT_PACK4
  if constexpr (kVecs == 1) {  // four groups at a time, their outputs packed
    for (; i0 + 4 * kGroup <= full; i0 += 4 * kGroup) {
      V<DU> o[4];
      for (int64_t g = 0; g < 4; ++g) {
        C[0] = hn::Add(C[0], hn::LoadU(du, e + i0 + g * kGroup));
        const V<DU> Rk = R(C[0]);
        o[g] = hn::Sub(Rk, prev[0]);
        prev[0] = Rk;
      }
      store_u8x4(o[0], o[1], o[2], o[3], out + i0);
    }
  }
#endif
  for (int64_t i = i0; i < full; i += kGroup)
    for (int64_t k = 0; k < kVecs; ++k) {
      const V<DU> ev = hn::LoadU(du, e + i + k * L);
      C[k] = hn::Add(C[k], ev);
      const V<DU> Rk = R(C[k]);
      hn::StoreU(narrow_u8(hn::Sub(Rk, prev[k])), D8(), out + i + k * L);  // a lone 256 -> 255
      prev[k] = Rk;
    }
  for (int64_t k = 0; k < kVecs; ++k) {
    const int64_t i = full + k * L;
    if (i >= n) break;
    const size_t rest = static_cast<size_t>(std::min<int64_t>(n - i, L));
    const V<DU> ev = simd::LoadFirstN(du, e + i, rest);
    const V<DU> Rk = R(hn::Add(C[k], ev));
    simd::StoreFirstN(narrow_u8(hn::Sub(Rk, prev[k])), D8(), out + i, rest);
  }
}

// The regular outputs of a row; returns their sum (taken before the clamp to 255: the two
// differ only on a row whose mass is on one element, 256 -> 255 with every other output 0,
// which passes the check either way).
int64_t regular_row(const uint32_t* HWY_RESTRICT e, int64_t n, uint64_t E, uint8_t* HWY_RESTRICT out) {
  const DU du;
  const int64_t L = static_cast<int64_t>(hn::Lanes(du));
  const V<DU> vf = hn::Set(du, reciprocal(E));
  V<DU> sum = hn::Zero(du);
  int64_t i = 0;
#ifdef SG_QUANT_PACK4
  for (; i + 4 * L <= n; i += 4 * L) {
    V<DU> o[4];
    for (int64_t g = 0; g < 4; ++g) {
      o[g] = regular_out(hn::LoadU(du, e + i + g * L), vf);
      sum = hn::Add(sum, o[g]);
    }
    store_u8x4(o[0], o[1], o[2], o[3], out + i);
  }
#endif
  for (; i + L <= n; i += L) {
    const V<DU> o = regular_out(hn::LoadU(du, e + i), vf);
    sum = hn::Add(sum, o);
    hn::StoreU(narrow_u8(o), D8(), out + i);
  }
  if (i < n) {
    const size_t rest = static_cast<size_t>(n - i);
    const V<DU> o = regular_out(simd::LoadFirstN(du, e + i, rest), vf);
    sum = hn::Add(sum, o);  // lanes past n loaded 0 and give 0
    simd::StoreFirstN(narrow_u8(o), D8(), out + i, rest);
  }
  return static_cast<int64_t>(sum_lanes(sum));
}

// Flat rows: at least this much mass (64 elements' worth of exp(0)), so that no element holds
// more than 1/63 of it. The regular rounding almost always misses 256 on them (many outputs
// round from below 1/2), so they take the cumulative outputs directly (see the top of the
// file for their error).
constexpr uint64_t kFlatRowMass = uint64_t{64} << kExpBits;

// Flat rows: the cumulative outputs. Others: out_j = min(round(256 e_j / E), 255) via one
// reciprocal per row, and the cumulative outputs instead if these miss 256 by more than 1.
// e: (n), E = sum(e) > 0.
void normalize_row(const uint32_t* HWY_RESTRICT e, int64_t n, const RowSum& rs, uint8_t* HWY_RESTRICT out) {
  if (rs.E < kFlatRowMass && std::abs(256 - regular_row(e, n, rs.E, out)) <= 1) return;
  if (cumulative_vectorized(rs.E))
    cumulative_row(e, n, rs, out);
  else
    cumulative_row_naive(e, n, rs.E, out);
}

// Scalar twin of normalize_row (the specification).
void normalize_row_naive(const uint32_t* e, int64_t n, uint64_t E, uint8_t* out) {
  if (E < kFlatRowMass) {
    const uint64_t F = (uint64_t{256} << kRecipShift) / E;
    int64_t total = 0;
    for (int64_t j = 0; j < n; ++j) {
      const uint64_t o = (e[j] * F + (1u << (kRecipShift - 1))) >> kRecipShift;
      out[j] = static_cast<uint8_t>(std::min<uint64_t>(o, 255));
      total += static_cast<int64_t>(o);
    }
    if (std::abs(256 - total) <= 1) return;
  }
  cumulative_row_naive(e, n, E, out);
}

// The first score with |s| >= 2^30, for the error message (rows were flagged in parallel).
[[noreturn]] void fail_score_range(const int32_t* scores, int64_t rows, int64_t n, int64_t ld_in) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const int32_t v = scores[r * ld_in + j];
      SG_CHECK(v > -kScoreLimit && v < kScoreLimit,
               "softmax_u8: score {} at row {}, column {} is outside (-2^30, 2^30)", v, r, j);
    }
  fail("softmax_u8: internal error: a row was flagged out of range but no score is");
}

// Runs row(r, scratch) for every row, in parallel when the work is large; the rows are
// independent, so the output does not depend on the thread count. row returns false to
// flag the row (the caller then reports it).
template <class RowFn> bool for_rows(int64_t rows, int64_t n, RowFn row) {
  bool ok = true;
  parallel_for(rows, std::max<int64_t>(n, 1) * 4, [&](int64_t begin, int64_t end) {
    uint32_t* e = thread_scratch<uint32_t>(n, 0);
    bool mine = true;
    for (int64_t r = begin; r < end; ++r) mine &= row(r, e);
    if (!mine) {
#pragma omp atomic write
      ok = false;
    }
  });
  return ok;
}

}  // namespace

void softmax_u8(const int32_t* scores, int64_t rows, int64_t n, int64_t ld_in, const ExpParams& p, uint8_t* out,
                int64_t ld_out) {
  check_rows("softmax_u8", rows, n, ld_in, ld_out);
  if (rows == 0 || n == 0) return;
  const ExpVec ex(p);
  bool ok = true;
  // Each thread walks its rows in order, carrying the next row's extremes (see exp_row).
  parallel_for(rows, n * 4, [&](int64_t begin, int64_t end) {
    uint32_t* e = thread_scratch<uint32_t>(n, 0);
    bool mine = true;
    MinMax mm = row_min_max(scores + begin * ld_in, n);
    for (int64_t r = begin; r < end; ++r) {
      const int32_t* s = scores + r * ld_in;
      const int32_t* next = r + 1 < end ? s + ld_in : s;
      if (mm.max >= kScoreLimit || mm.min <= -kScoreLimit) {
        mine = false;
        mm = row_min_max(next, n);
        continue;
      }
      const int32_t* ahead = r + 2 < end ? s + 2 * ld_in : s;
      RowSum rs;
      mm = ex.big_shift() ? exp_row<true>(s, n, mm.max, ex, e, rs, next, ahead)
                          : exp_row<false>(s, n, mm.max, ex, e, rs, next, ahead);
      normalize_row(e, n, rs, out + r * ld_out);
    }
    if (!mine) {
#pragma omp atomic write
      ok = false;
    }
  });
  if (!ok) fail_score_range(scores, rows, n, ld_in);
}

void softmax_u8_naive(const int32_t* scores, int64_t rows, int64_t n, int64_t ld_in, const ExpParams& p,
                      uint8_t* out, int64_t ld_out) {
  check_rows("softmax_u8_naive", rows, n, ld_in, ld_out);
  std::vector<uint32_t> e(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* s = scores + r * ld_in;
    if (n == 0) continue;
    const int32_t mx = *std::max_element(s, s + n), mn = *std::min_element(s, s + n);
    if (mx >= kScoreLimit || mn <= -kScoreLimit) fail_score_range(scores, rows, n, ld_in);
    uint64_t E = 0;
    for (int64_t j = 0; j < n; ++j) E += e[j] = i_exp_neg(std::min(mx - s[j], -p.clamp), p);
    normalize_row_naive(e.data(), n, E, out + r * ld_out);
  }
}

ExpTable make_exp_table(double input_scale) {
  SG_CHECK(std::isfinite(input_scale) && input_scale > 0, "make_exp_table: input scale {} must be > 0", input_scale);
  ExpTable t;
  t.scale = input_scale;
  for (int d = 0; d < 256; ++d)
    t.entry[d] = static_cast<uint32_t>(std::lround(std::exp(-d * input_scale) * (1 << kExpBits)));
  return t;
}

namespace {

// The largest int8 score of a row (Highway 1.0.3 has no 8-bit MaxOfLanes: the lanes are
// reduced through memory).
int32_t row_max_s8(const int8_t* HWY_RESTRICT s, int64_t n) {
  int32_t mx = std::numeric_limits<int8_t>::min();
  int64_t j = 0;
#if HWY_TARGET != HWY_SCALAR
  const hn::ScalableTag<int8_t> d8;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d8));
  if (n >= L) {
    V<decltype(d8)> vm = hn::LoadU(d8, s);
    for (; j + L <= n; j += L) vm = hn::Max(vm, hn::LoadU(d8, s + j));
    HWY_ALIGN int8_t lanes[HWY_MAX_BYTES];
    hn::Store(vm, d8, lanes);
    for (int64_t k = 0; k < L; ++k) mx = std::max<int32_t>(mx, lanes[k]);
  }
#endif
  for (; j < n; ++j) mx = std::max<int32_t>(mx, s[j]);
  return mx;
}

// uint32 lane sums of a row's e, moved into a uint64 total before they can wrap: add(v, k)
// takes a vector of sums of k values <= max_entry per lane.
struct LaneSums {
  V<DU> acc;
  uint64_t total = 0;
  int64_t pending = 0, limit;
  bool flushed = false;
  explicit LaneSums(uint32_t max_entry)
      : acc(hn::Zero(DU())), limit(std::max<int64_t>(1, int64_t{0xFFFFFFFF} / std::max<uint32_t>(max_entry, 1))) {}
  HWY_INLINE void add(V<DU> v, int64_t k = 1) {
    pending += k;
    if (HWY_UNLIKELY(pending > limit)) {
      total += sum_lanes(acc);
      acc = hn::Zero(DU());
      pending = k;
      flushed = true;
    }
    acc = hn::Add(acc, v);
  }
};

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3 && defined(__AVX512VBMI__)
#define SG_QUANT_LUT_VBMI 1
// softmax_u8_lut's table lookups from registers (AVX512-VBMI): the 256 entries (< 2^24) as three
// byte planes of 4 x 64 bytes; 64 scores at once, d = max - s in [0, 255] as bytes, each plane
// read by two vpermi2b (d's low 7 bits, over entries 0..127 and 128..255) and a blend on d's
// bit 7; the planes are then interleaved into uint32 lanes (unpacks within 128-bit blocks, the
// indexes pre-shuffled so that the four vectors come out in element order).
struct LutPlanes {
  __m512i plane[3][4];
  __m512i order;  // the pre-shuffle: byte 16 b + 4 k + i takes element 16 k + 4 b + i
  explicit LutPlanes(const ExpTable& t) {
    HWY_ALIGN uint8_t bytes[256];
    for (int k = 0; k < 3; ++k) {
      for (int d = 0; d < 256; ++d) bytes[d] = static_cast<uint8_t>(t.entry[d] >> (8 * k));
      for (int q = 0; q < 4; ++q) plane[k][q] = _mm512_load_si512(bytes + 64 * q);
    }
    HWY_ALIGN uint8_t idx[64];
    for (int b = 0; b < 4; ++b)
      for (int k = 0; k < 4; ++k)
        for (int i = 0; i < 4; ++i) idx[16 * b + 4 * k + i] = static_cast<uint8_t>(16 * k + 4 * b + i);
    order = _mm512_load_si512(idx);
  }
  HWY_INLINE __m512i lookup(int k, __m512i d, __mmask64 high) const {
    const __m512i lo = _mm512_permutex2var_epi8(plane[k][0], d, plane[k][1]);
    const __m512i hi = _mm512_permutex2var_epi8(plane[k][2], d, plane[k][3]);
    return _mm512_mask_blend_epi8(high, lo, hi);
  }
};
#endif

}  // namespace

void softmax_u8_lut(const int8_t* scores, int64_t rows, int64_t n, int64_t ld_in, const ExpTable& t, uint8_t* out,
                    int64_t ld_out) {
  check_rows("softmax_u8_lut", rows, n, ld_in, ld_out);
  if (rows == 0 || n == 0) return;
  const uint32_t max_entry = *std::max_element(t.entry, t.entry + 256);
#ifdef SG_QUANT_LUT_VBMI
  const bool use_planes = max_entry < (1u << 24) && hn::Lanes(DU()) == 16;
  const LutPlanes planes(t);
#endif
  for_rows(rows, n, [&](int64_t r, uint32_t* e) {
    const int8_t* s = scores + r * ld_in;
    const int32_t mx = row_max_s8(s, n);
    RowSum rs;
    LaneSums sums(max_entry);
    int64_t j = 0;
    const DI di;
    const DU du;
    const int64_t L = static_cast<int64_t>(hn::Lanes(di));
#ifdef SG_QUANT_LUT_VBMI
    if (use_planes) {
      const LutPlanes& pl = planes;
      const __m512i vmax8 = _mm512_set1_epi8(static_cast<char>(mx)), zero = _mm512_setzero_si512();
      for (; j + 64 <= n; j += 64) {
        // (max - s) mod 256 is max - s itself: it lies in [0, 255]
        const __m512i d = _mm512_permutexvar_epi8(pl.order, _mm512_sub_epi8(vmax8, _mm512_loadu_si512(s + j)));
        const __mmask64 high = _mm512_movepi8_mask(d);
        const __m512i b0 = pl.lookup(0, d, high), b1 = pl.lookup(1, d, high), b2 = pl.lookup(2, d, high);
        const __m512i w01l = _mm512_unpacklo_epi8(b0, b1), w01h = _mm512_unpackhi_epi8(b0, b1);
        const __m512i w2l = _mm512_unpacklo_epi8(b2, zero), w2h = _mm512_unpackhi_epi8(b2, zero);
        const V<DU> v[4] = {V<DU>{_mm512_unpacklo_epi16(w01l, w2l)}, V<DU>{_mm512_unpackhi_epi16(w01l, w2l)},
                            V<DU>{_mm512_unpacklo_epi16(w01h, w2h)}, V<DU>{_mm512_unpackhi_epi16(w01h, w2h)}};
        for (int k = 0; k < 4; ++k) hn::StoreU(v[k], du, e + j + 16 * k);
        sums.add(hn::Add(hn::Add(v[0], v[1]), hn::Add(v[2], v[3])), 4);  // lane l: j = l mod 16 in each
      }
    }
#endif
    // (j is a multiple of L here: lane l keeps summing the elements j = l mod L)
    const hn::Rebind<int8_t, DI> d8;
    const V<DI> vmax = hn::Set(di, mx);
    for (; j + L <= n; j += L) {
      const V<DI> d = hn::Sub(vmax, hn::PromoteTo(di, hn::LoadU(d8, s + j)));  // in [0, 255]
      const V<DU> v = hn::BitCast(du, hn::GatherIndex(di, reinterpret_cast<const int32_t*>(t.entry), d));
      hn::StoreU(v, du, e + j);
      sums.add(v);
    }
    // The tail (j = n - n % L ..) lands in lanes 0.. as in exp_row.
    HWY_ALIGN uint32_t tail[kMaxLanes] = {};
    for (int64_t k = 0; j + k < n; ++k) tail[k] = e[j + k] = t.entry[mx - s[j + k]];
    sums.add(hn::Load(du, tail));
    rs.E = sums.total + sum_lanes(sums.acc);
    rs.has_lanes = !sums.flushed && L == kGroup;
    hn::Store(sums.acc, du, rs.lanes);
    normalize_row(e, n, rs, out + r * ld_out);
    return true;
  });
}

void softmax_u8_reference(const int32_t* scores, int64_t rows, int64_t n, int64_t ld_in, double scale, uint8_t* out,
                          int64_t ld_out) {
  check_rows("softmax_u8_reference", rows, n, ld_in, ld_out);
  std::vector<double> x(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    if (n == 0) continue;
    const int32_t* s = scores + r * ld_in;
    const int32_t mx = *std::max_element(s, s + n);
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += x[j] = std::exp(static_cast<double>(int64_t{s[j]} - mx) * scale);
    for (int64_t j = 0; j < n; ++j)
      out[r * ld_out + j] = static_cast<uint8_t>(std::min(std::round(256 * x[j] / sum), 255.0));
  }
}

// ---- GELU ---------------------------------------------------------------------------------

GeluParams make_gelu_params(double in_scale, double out_scale, int32_t out_max) {
  SG_CHECK(out_max >= 1 && out_max <= (1 << 23), "make_gelu_params: out_max {} is outside [1, 2^23]", out_max);
  SG_CHECK(std::isfinite(in_scale) && in_scale > 0 && std::isfinite(out_scale) && out_scale > 0,
           "make_gelu_params: scales must be positive and finite, got in {} and out {}", in_scale, out_scale);
  GeluParams p;
  p.in_scale = in_scale;
  p.out_scale = out_scale;
  p.out_max = out_max;
  const double sg = std::sqrt(std::ldexp(1.0, -kGeluBits) / kGeluA);  // S_g: A S_g^2 = 2^-29
  p.b_int = static_cast<int32_t>(std::lround(kGeluB / sg));           // -22027
  p.c_int = p.one_int = 1 << kGeluBits;                               // 1 / (A S_g^2)
  const double r_work = in_scale / (std::numbers::sqrt2 * sg);
  SG_CHECK(r_work >= 0x1p-40 && r_work < 0x1p30, "make_gelu_params: input scale {} is outside [{:g}, {:g})",
           in_scale, 0x1p-40 * std::numbers::sqrt2 * sg, 0x1p30 * std::numbers::sqrt2 * sg);
  p.to_working = to_fixed_point(r_work);
  const double r_out = std::ldexp(in_scale / out_scale, kGeluGuard);
  SG_CHECK(r_out >= 0x1p-40 && r_out < 0x1p30, "make_gelu_params: in_scale / out_scale = {:g} is outside [2^-48, 2^22)",
           in_scale / out_scale);
  p.to_output = to_fixed_point(r_out);
  // Past q_b the polynomial is flat (L = -1 below: output 0; L = 1 above: output x), and past
  // q_sat (x >= (out_max + 1.5) out_scale) the output saturates: clamping q to [-q_b, max(q_b, q_sat)]
  // changes no output, and keeps |v| = |x| 2^8 / out_scale below 2^32 (checked), so that
  // |v| h < 2^62.
  constexpr double kMax = 2147483647.0;
  const double q_b = std::min(std::ceil((-p.b_int + 1) / r_work), kMax);
  const double q_sat = std::min(std::ceil((out_max + 1.5) * out_scale / in_scale), kMax);
  p.clamp_lo = -static_cast<int32_t>(q_b);
  p.clamp_hi = static_cast<int32_t>(std::max(q_b, q_sat));
  const double v_max = std::max(-p.clamp_lo, p.clamp_hi) * r_out + 1;
  SG_CHECK(v_max < 0x1p32, "make_gelu_params: out_scale {} is too fine for in_scale {} (|x| / out_scale reaches {:g})",
           out_scale, in_scale, v_max / 256);
  return p;
}

namespace {

// u = x / sqrt2 at S_g, t = min(|u|, -b) + b, 1 + L = h 2^-29 with h = one + sgn(u) (c - t^2),
// out = round(x/2 (1 + L) / out_scale) = round(v h 2^-38), v = round(x 2^8 / out_scale).
// The scalar kernel (the specification, and the tail of the vector one).
template <typename T> inline T gelu_one(int32_t x, const GeluParams& p) {
  const int64_t q = std::clamp(x, p.clamp_lo, p.clamp_hi);
  const int64_t u = round_shift<int64_t>(q * p.to_working.multiplier, std::min<int32_t>(p.to_working.shift, 63));
  const int64_t t = std::min<int64_t>(u < 0 ? -u : u, -p.b_int) + p.b_int;
  const int64_t l = p.c_int - t * t;
  const int64_t h = p.one_int + (u > 0 ? l : u < 0 ? -l : 0);
  const int64_t v = round_shift<int64_t>(q * p.to_output.multiplier, std::min<int32_t>(p.to_output.shift, 63));
  return static_cast<T>(std::clamp<int64_t>(round_shift<int64_t>(v * h, kGeluOutShift), -int64_t{p.out_max} - 1, p.out_max));
}

// gelu_one over [0, n - n % lanes) in int64 lanes, on magnitudes: every rounding above is
// half away from zero, so each is sign(q) ((|q| m + 2^(s-1)) >> s), and h >= 0. The products
// are 32 x 32 -> 64-bit (|q| < 2^31, |u| < 2^15 once clamped to -b, |v| < 2^32, h <= 2^30).
// Returns the count done. T: int8_t or int32_t. The fallback of gelu_vec32 (parameters it
// does not cover).
template <typename T>
int64_t gelu_vec64(const int32_t* HWY_RESTRICT x, int64_t n, const GeluParams& p, T* HWY_RESTRICT out) {
#if HWY_TARGET == HWY_SCALAR
  (void)x, (void)n, (void)p, (void)out;
  return 0;
#else
  using D = hn::ScalableTag<int64_t>;
  using DU64 = hn::RebindToUnsigned<D>;
  using DU32 = hn::Repartition<uint32_t, DU64>;
  const D d;
  const DU64 du;
  const DU32 du32;
  const hn::Rebind<int32_t, D> d32;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  const int sw = std::min<int32_t>(p.to_working.shift, 63), so = std::min<int32_t>(p.to_output.shift, 63);
  const V<D> lo = hn::Set(d, p.clamp_lo), hi = hn::Set(d, p.clamp_hi), zero = hn::Zero(d);
  const V<DU32> mw = hn::BitCast(du32, hn::Set(du, static_cast<uint64_t>(p.to_working.multiplier)));
  const V<DU32> mo = hn::BitCast(du32, hn::Set(du, static_cast<uint64_t>(p.to_output.multiplier)));
  const V<DU64> hw = hn::Set(du, uint64_t{1} << (sw - 1)), ho = hn::Set(du, uint64_t{1} << (so - 1));
  const V<DU64> nb = hn::Set(du, static_cast<uint64_t>(-int64_t{p.b_int}));
  const V<DU64> half_out = hn::Set(du, uint64_t{1} << (kGeluOutShift - 1)),
                   cap = hn::Set(du, static_cast<uint64_t>(p.out_max) + 1);
  const V<D> c = hn::Set(d, p.c_int), one = hn::Set(d, p.one_int), top = hn::Set(d, p.out_max);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const V<D> q = hn::Min(hn::Max(hn::PromoteTo(d, hn::LoadU(d32, x + i)), lo), hi);
    const auto neg = hn::Lt(q, zero);
    const V<DU32> aq = hn::BitCast(du32, hn::Abs(q));
    const V<DU64> au = hn::ShiftRightSame(hn::Add(hn::MulEven(aq, mw), hw), sw);
    const V<DU64> nt = hn::Sub(nb, hn::Min(au, nb));  // -t in [0, -b]
    const V<D> l = hn::Sub(c, hn::BitCast(d, hn::MulEven(hn::BitCast(du32, nt), hn::BitCast(du32, nt))));
    const V<D> sl = hn::IfThenElse(hn::RebindMask(d, hn::Eq(au, hn::Zero(du))), zero, hn::IfThenElse(neg, hn::Neg(l), l));
    const V<D> h = hn::Add(one, sl);
    const V<DU64> av = hn::ShiftRightSame(hn::Add(hn::MulEven(aq, mo), ho), so);
    const V<DU64> w = hn::MulEven(hn::BitCast(du32, av), hn::BitCast(du32, h));
    const V<D> r = hn::BitCast(d, hn::Min(hn::ShiftRight<kGeluOutShift>(hn::Add(w, half_out)), cap));
    const V<D> y = hn::Min(hn::IfThenElse(neg, hn::Neg(r), r), top);  // [-out_max - 1, out_max]
    store_narrow(y, out + i);
  }
  return i;
#endif
}

static_assert(kGeluOutShift >= 32 && kGeluOutShift < 64);

// What gelu_vec32 needs of the parameters (make_gelu_params's always qualify): qb, the cap
// on |q| for u's product, and whether the 32-bit lanes apply at all.
struct Gelu32Plan {
  bool ok = false;
  uint32_t qb = 0;
};
inline Gelu32Plan gelu32_plan(const GeluParams& p) {
  Gelu32Plan plan;
  const int64_t nb = -int64_t{p.b_int};
  const int sw = p.to_working.shift, so = p.to_output.shift;
  if (p.clamp_lo > p.clamp_hi || p.c_int != (1 << kGeluBits) || p.one_int != (1 << kGeluBits) || nb < 1 ||
      nb >= (1 << 15) || p.to_working.multiplier < 0 || p.to_output.multiplier < 0 || sw < 1 || sw > 63 ||
      so < 1 || so > 63 || p.out_max < 0 || p.out_max > (1 << 23))
    return plan;
  const int64_t amax = std::max(std::abs(int64_t{p.clamp_lo}), std::abs(int64_t{p.clamp_hi}));
  auto shifted = [](int64_t a, FixedPoint f) { return (a * f.multiplier + (int64_t{1} << (f.shift - 1))) >> f.shift; };
  if (amax > (int64_t{1} << 31) || shifted(amax, p.to_output) >= (int64_t{1} << 32)) return plan;  // |v| < 2^32
  // |u| only matters up to -b: past qb = -clamp_lo (make_gelu_params's q_b) it is >= -b, so
  // |q| can be capped at qb there (au = 0 exactly when it is 0 uncapped, too).
  int64_t qb = amax;
  if (p.clamp_lo < 0 && shifted(-int64_t{p.clamp_lo}, p.to_working) >= nb) qb = std::min<int64_t>(qb, -int64_t{p.clamp_lo});
  // s <= 32: |q| << (32 - s) must fit 32 bits.
  if (sw <= 32 && (qb << (32 - sw)) >= (int64_t{1} << 32)) return plan;
  plan.ok = true;
  plan.qb = static_cast<uint32_t>(qb);
  return plan;
}

// gelu_one over [0, n - n % lanes) in int32 lanes, bit-identical (the plan's conditions
// hold). The same steps as gelu_vec64 on magnitudes; the 64-bit products are taken for the
// even lanes and the odd lanes (moved down) separately:
//  - au = (|q| mw + 2^(sw-1)) >> sw with |q| capped at qb, as the upper halves of the
//    products (ExpVec's two forms: for sw > 32, (hi32(|q| mw) + 2^(sw-33)) >> (sw - 32); else
//    hi32((|q| << (32 - sw)) mw + 2^31));
//  - t^2 < 2^30 and h in [0, 2^30] in 32 bits (h = one + sgn(u) (c - t^2));
//  - av = (|q| mo + 2^(so-1)) >> so < 2^32 stays in the 64-bit lanes of each half, and
//    feeds the last product directly: out = (hi32(av h + 2^37)) >> 6 (< 2^25).
template <bool kBigShift, typename T>
int64_t gelu_vec32(const int32_t* HWY_RESTRICT x, int64_t n, const GeluParams& p, const Gelu32Plan& plan,
                   T* HWY_RESTRICT out) {
#if HWY_TARGET == HWY_SCALAR
  (void)x, (void)n, (void)p, (void)plan, (void)out;
  return 0;
#else
  const DI di;
  const DU du;
  const DI64 di64;
  const DU64 du64;
  const int64_t L = static_cast<int64_t>(hn::Lanes(di));
  const int sw = p.to_working.shift, so = p.to_output.shift;
  const V<DI> lo = hn::Set(di, p.clamp_lo), hi = hn::Set(di, p.clamp_hi), zero = hn::Zero(di);
  const V<DI> c = hn::Set(di, p.c_int), one = hn::Set(di, p.one_int), top = hn::Set(di, p.out_max);
  const V<DU> qb = hn::Set(du, plan.qb), nb = hn::Set(du, static_cast<uint32_t>(-p.b_int));
  const V<DU> mw = hn::Set(du, static_cast<uint32_t>(p.to_working.multiplier));
  const V<DU> mo = hn::Set(du, static_cast<uint32_t>(p.to_output.multiplier));
  const V<DU> cap = hn::Set(du, static_cast<uint32_t>(p.out_max) + 1), zero_u = hn::Zero(du);
  const V<DU> off_big = hn::Set(du, kBigShift ? uint32_t{1} << (sw - 33) : 0u);
  const V<DU64> off_small = hn::Set(du64, uint64_t{1} << 31), ho = hn::Set(du64, uint64_t{1} << (so - 1));
  const V<DU64> half_out = hn::Set(du64, uint64_t{1} << (kGeluOutShift - 1));
  auto odd = [&](V<DU> v) HWY_ATTR { return hn::BitCast(du, hn::ShiftRight<32>(hn::BitCast(du64, v))); };
  auto upper = [&](V<DU64> pe, V<DU64> po) HWY_ATTR {
    return hn::BitCast(du, upper_halves(hn::BitCast(di64, pe), hn::BitCast(di64, po)));
  };
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const V<DI> q = hn::Min(hn::Max(hn::LoadU(di, x + i), lo), hi);
    const auto neg = hn::Lt(q, zero);
    const V<DU> aq = hn::BitCast(du, hn::Abs(q));
    // u
    V<DU> aqc = hn::Min(aq, qb);
    if (!kBigShift) aqc = hn::ShiftLeftSame(aqc, 32 - sw);
    const V<DU64> pe = hn::MulEven(aqc, mw), po = hn::MulEven(odd(aqc), mw);
    const V<DU> au = kBigShift ? hn::ShiftRightSame(hn::Add(upper(pe, po), off_big), sw - 32)
                               : upper(hn::Add(pe, off_small), hn::Add(po, off_small));
    // h
    const V<DI> nt = hn::BitCast(di, hn::Sub(nb, hn::Min(au, nb)));  // -t in [0, -b]
    const V<DI> l = hn::Sub(c, mul15(nt, nt));
    const V<DI> h = hn::IfThenElse(hn::RebindMask(di, hn::Eq(au, zero_u)), one,
                                   hn::IfThenElse(neg, hn::Sub(one, l), hn::Add(one, l)));
    // v, and out = round(v h 2^-38)
    const V<DU64> ave = hn::ShiftRightSame(hn::Add(hn::MulEven(aq, mo), ho), so);
    const V<DU64> avo = hn::ShiftRightSame(hn::Add(hn::MulEven(odd(aq), mo), ho), so);
    const V<DU> hu = hn::BitCast(du, h);
    const V<DU64> we = hn::MulEven(hn::BitCast(du, ave), hu), wo = hn::MulEven(hn::BitCast(du, avo), odd(hu));
    const V<DU> r = hn::Min(hn::ShiftRight<kGeluOutShift - 32>(upper(hn::Add(we, half_out), hn::Add(wo, half_out))), cap);
    const V<DI> ri = hn::BitCast(di, r);
    const V<DI> y = hn::Min(hn::IfThenElse(neg, hn::Neg(ri), ri), top);  // [-out_max - 1, out_max]
    if constexpr (sizeof(T) == 1) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(y.raw));  // one vpmovdb
#else
      const hn::Rebind<int8_t, DI> d8;
      hn::StoreU(hn::DemoteTo(d8, y), d8, out + i);
#endif
    } else {
      hn::StoreU(y, di, out + i);
    }
  }
  return i;
#endif
}

template <typename T>
int64_t gelu_vec(const int32_t* HWY_RESTRICT x, int64_t n, const GeluParams& p, T* HWY_RESTRICT out) {
  const Gelu32Plan plan = gelu32_plan(p);
  if (!plan.ok) return gelu_vec64(x, n, p, out);
  return p.to_working.shift > 32 ? gelu_vec32<true>(x, n, p, plan, out) : gelu_vec32<false>(x, n, p, plan, out);
}

}  // namespace

namespace {
template <typename T> void gelu_checked(const char* op, const int32_t* x, int64_t n, const GeluParams& p, T* out) {
  SG_CHECK(n >= 0, "{}: n must be >= 0, got {}", op, n);
  SG_CHECK(p.out_max >= 1 && p.out_max <= std::numeric_limits<T>::max() && p.out_max <= (1 << 23),
           "{}: out_max {} does not fit the output type", op, p.out_max);
  parallel_for(n, 8, [&](int64_t begin, int64_t end) {
    const int64_t done = begin + gelu_vec(x + begin, end - begin, p, out + begin);
    for (int64_t i = done; i < end; ++i) out[i] = gelu_one<T>(x[i], p);
  });
}
}  // namespace

void gelu_s8(const int32_t* x, int64_t n, const GeluParams& p, int8_t* out) { gelu_checked("gelu_s8", x, n, p, out); }
void gelu_s32(const int32_t* x, int64_t n, const GeluParams& p, int32_t* out) {
  gelu_checked("gelu_s32", x, n, p, out);
}

double gelu_reference(double x) { return 0.5 * x * (1.0 + std::erf(x / std::numbers::sqrt2)); }

// ---- LayerNorm ----------------------------------------------------------------------------

// Newton from above: x_0 = 2^ceil(bits/2) >= sqrt(v), x_{k+1} = (x_k + v / x_k) / 2 decreases
// while x_k > floor(sqrt v) and stops there (I-BERT Alg. 4). x_0 <= 2^32, so x + v/x < 2^33.
uint64_t isqrt(uint64_t v) {
  if (v < 2) return v;
  uint64_t x = uint64_t{1} << ((std::bit_width(v) + 1) / 2);
  for (;;) {
    const uint64_t y = (x + v / x) / 2;
    if (y >= x) return x;
    x = y;
  }
}

// Per row, with S = sum x, Q = sum x^2 (exact in int64: n max|x|^2 <= 2^62 is checked):
//   mean = S / n, n^2 var = n Q - S^2 =: M (exact, int128), and with D_i = n x_i - S,
//   y_i = (x_i - mean) / sqrt(var) = D_i / sqrt(M).
// sqrt(M) in fixed point: M' = M 4^j in [2^62, 2^64) (j may be negative), rt = isqrt(M') in
// [2^31, 2^32), sqrt(M) = rt 2^-j (relative error < 2^-31); inv = floor(2^94 / rt) in
// (2^62, 2^63]. Then y_i 2^14 = round(D_i inv 2^(14 + j - 94)) (|D_i| inv < 2^125), and
// out_i = sat8(round(y_i 2^14 * gamma_i * to_output) + beta_i). Both roundings are half away
// from zero, so they run on magnitudes, in 64 bits when the operands allow (most rows, see
// layer_norm_row_naive), else 128 (|y_i| 2^14 <= 2^14 sqrt(n) and |gamma_i| < 2^31 keep their
// product in uint64 for n < 2^38).
// The only rounding that matters is y's to 2^-14: it moves the output by at most
// 2^-15 |gamma_i| gamma_scale / out_scale LSB before the final rounding.
namespace {

__extension__ typedef unsigned __int128 uint128;

// The output's clamp: int8 saturates to [-128, 127], int32 to [-2^30, 2^30].
template <typename T> constexpr int64_t kNormLo = sizeof(T) == 1 ? -128 : -(int64_t{1} << 30);
template <typename T> constexpr int64_t kNormHi = sizeof(T) == 1 ? 127 : int64_t{1} << 30;

// 2^94 / sqrt(M) as inv 2^-j: y_i 2^14 = D_i inv 2^-ys (M > 0).
struct NormScale {
  uint64_t inv;
  int ys;  // 94 - 14 - j, in [49, 95]
};
NormScale norm_scale(int128 M) {
  // M' = M 4^j in [2^62, 2^64)
  const uint64_t hi = static_cast<uint64_t>(M >> 64), lo = static_cast<uint64_t>(M);
  const int bits = hi ? 128 - std::countl_zero(hi) : 64 - std::countl_zero(lo);
  const int j = bits <= 64 ? (64 - bits) / 2 : -((bits - 63) / 2);  // bits + 2j in {63, 64}
  const uint64_t Mp = j >= 0 ? static_cast<uint64_t>(M << (2 * j)) : static_cast<uint64_t>(M >> (-2 * j));
  return {static_cast<uint64_t>((uint128{1} << 94) / isqrt(Mp)), 80 - j};
}

// The 64-bit form of |y_i| 2^14 (see layer_norm_row_naive): (|D| (inv >> k) + 2^(e-1)) >> e
// with e = ys - k, for |D| < 2^k.
inline uint64_t norm_y_64(int64_t D, uint64_t inv_k, int e) {
  return (static_cast<uint64_t>(D < 0 ? -D : D) * inv_k + (uint64_t{1} << (e - 1))) >> e;
}

// out_i: gamma_i (y_i 2^14) to_output, rounded half away, plus beta_i, saturated; ay = |y_i| 2^14.
// NOTE: one 64-bit multiply in the usual case (|y gamma| < 2^32, shift < 64), else 128.
template <typename T> inline T norm_out(bool neg, uint64_t ay, int32_t gamma, int32_t beta, FixedPoint to_output) {
  const int64_t g = gamma;
  const uint64_t m = static_cast<uint64_t>(to_output.multiplier);
  const int os = to_output.shift;
  const uint64_t ag = ay * static_cast<uint64_t>(g < 0 ? -g : g);
  const uint64_t ao = (ag >> 32) == 0 && os < 64
                          ? (ag * m + (uint64_t{1} << (os - 1))) >> os
                          : static_cast<uint64_t>((static_cast<uint128>(ag) * m + (uint128{1} << (os - 1))) >> os);
  const int64_t v = (neg != (g < 0) ? -static_cast<int64_t>(ao) : static_cast<int64_t>(ao)) + beta;
  return static_cast<T>(std::clamp<int64_t>(v, kNormLo<T>, kNormHi<T>));
}

// One row (x, out: (n)); false (nothing written) if n max|x|^2 exceeds 2^62. The scalar
// specification. T: int8_t or int32_t (see kNormLo).
template <typename T>
bool layer_norm_row_naive(const int32_t* HWY_RESTRICT x, int64_t n, const int32_t* HWY_RESTRICT gamma,
                          const int32_t* HWY_RESTRICT beta, FixedPoint to_output, T* HWY_RESTRICT out) {
  int64_t S = 0, Q = 0, maxabs = 0;
  for (int64_t i = 0; i < n; ++i) maxabs = std::max<int64_t>(maxabs, x[i] < 0 ? -int64_t{x[i]} : x[i]);
  // n x^2 <= 2^62 keeps Q and D_i = n x_i - S (|D_i| <= 2 n |x|) within int64.
  if (static_cast<int128>(n) * maxabs * maxabs > (static_cast<int128>(1) << 62)) return false;
  for (int64_t i = 0; i < n; ++i) {
    S += x[i];
    Q += int64_t{x[i]} * x[i];
  }
  const int128 M = static_cast<int128>(n) * Q - static_cast<int128>(S) * S;
  if (M == 0) {  // all equal: the normalized value is 0
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(std::clamp<int64_t>(beta[i], kNormLo<T>, kNormHi<T>));
    return true;
  }
  const NormScale ns = norm_scale(M);
  // |D_i| <= 2 n max|x| < 2^k. With k <= 33, inv >> k (>= 30 significant bits) keeps
  // |D_i| (inv >> k) in 64 bits and y_i within 2^21 2^-30 units of the 128-bit value.
  const int k = std::bit_width(static_cast<uint64_t>(2 * n * maxabs));
  if (k <= 33) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t D = n * x[i] - S;
      out[i] = norm_out<T>(D < 0, norm_y_64(D, ns.inv >> k, ns.ys - k), gamma[i], beta[i], to_output);
    }
  } else {
    const uint128 half = uint128{1} << (ns.ys - 1);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t D = n * x[i] - S;
      const uint64_t ay = static_cast<uint64_t>((static_cast<uint128>(D < 0 ? -D : D) * ns.inv + half) >> ns.ys);
      out[i] = norm_out<T>(D < 0, ay, gamma[i], beta[i], to_output);
    }
  }
  return true;
}

// layer_norm_row_naive with Highway, bit-identical: S, Q and max|x| in one pass of int32
// lanes (Q's per-lane sums in int64, wrapping harmlessly when the guard then fails), the
// outputs in int64 lanes through the 64-bit forms of norm_y_64 and norm_out. Rows those forms
// do not cover (equal values, k > 33, a shift >= 64) go to the scalar kernel, and so do the
// vectors where some |y gamma| >= 2^32, and the tail.
template <typename T>
bool layer_norm_row(const int32_t* HWY_RESTRICT x, int64_t n, const int32_t* HWY_RESTRICT gamma,
                    const int32_t* HWY_RESTRICT beta, FixedPoint to_output, T* HWY_RESTRICT out) {
#if HWY_TARGET == HWY_SCALAR
  return layer_norm_row_naive(x, n, gamma, beta, to_output, out);
#else
  const DI di;
  const DI64 d64;
  const DU64 du64;
  const hn::Repartition<uint32_t, DU64> du32;
  const hn::Rebind<int32_t, DI64> d32;  // half a vector of int32, promoted to int64 lanes
  const int64_t L = static_cast<int64_t>(hn::Lanes(di)), L64 = static_cast<int64_t>(hn::Lanes(d64));

  V<DI> vmin = hn::Set(di, std::numeric_limits<int32_t>::max());
  V<DI> vmax = hn::Set(di, std::numeric_limits<int32_t>::min());
  V<DI64> vS = hn::Zero(d64), vQ = hn::Zero(d64);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const V<DI> v = hn::LoadU(di, x + i);
    vmin = hn::Min(vmin, v);
    vmax = hn::Max(vmax, v);
    // the even lanes sign-extended in place, the odd ones shifted down
    const V<DI64> even = hn::ShiftRight<32>(hn::ShiftLeft<32>(hn::BitCast(d64, v)));
    const V<DI64> odd = hn::ShiftRight<32>(hn::BitCast(d64, v));
    vS = hn::Add(vS, hn::Add(even, odd));
    vQ = hn::Add(vQ, hn::Add(hn::MulEven(v, v), hn::MulEven(hn::BitCast(di, odd), hn::BitCast(di, odd))));
  }
  int64_t S = hn::GetLane(hn::SumOfLanes(d64, vS));
  uint64_t Q = static_cast<uint64_t>(hn::GetLane(hn::SumOfLanes(d64, vQ)));
  int32_t mn = hn::GetLane(hn::MinOfLanes(di, vmin)), mx = hn::GetLane(hn::MaxOfLanes(di, vmax));
  for (; i < n; ++i) {
    S += x[i];
    Q += static_cast<uint64_t>(int64_t{x[i]} * x[i]);
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  const int64_t maxabs = std::max(int64_t{mx}, -int64_t{mn});
  if (static_cast<int128>(n) * maxabs * maxabs > (static_cast<int128>(1) << 62)) return false;
  const int128 M = static_cast<int128>(n) * static_cast<int64_t>(Q) - static_cast<int128>(S) * S;
  const int k = std::bit_width(static_cast<uint64_t>(2 * n * maxabs));
  // n <= 2^30 keeps |y_i| 2^14 <= 2^14 sqrt(n) + 1 below 2^32, a 32-bit factor.
  if (M == 0 || k > 33 || to_output.shift >= 64 || n > (int64_t{1} << 30))
    return layer_norm_row_naive(x, n, gamma, beta, to_output, out);

  const NormScale ns = norm_scale(M);
  const uint64_t inv_k = ns.inv >> k;
  const int e = ns.ys - k, os = to_output.shift;
  auto scalar_out = [&](int64_t j) {
    const int64_t D = n * x[j] - S;
    out[j] = norm_out<T>(D < 0, norm_y_64(D, inv_k, e), gamma[j], beta[j], to_output);
  };
  const V<DI> vn = hn::BitCast(di, hn::Set(d64, n));  // n in the even int32 lanes
  const V<DI64> vSS = hn::Set(d64, S), zero = hn::Zero(d64);
  const V<DI64> lo = hn::Set(d64, kNormLo<T>), hi = hn::Set(d64, kNormHi<T>);
  const V<DU64> vinv = hn::Set(du64, inv_k), half_y = hn::Set(du64, uint64_t{1} << (e - 1)),
                half_o = hn::Set(du64, uint64_t{1} << (os - 1));
  const V<decltype(du32)> vmult = hn::BitCast(du32, hn::Set(du64, static_cast<uint64_t>(to_output.multiplier)));
  for (i = 0; i + L64 <= n; i += L64) {
    const V<DI64> xv = hn::PromoteTo(d64, hn::LoadU(d32, x + i));
    const V<DI64> D = hn::Sub(hn::MulEven(hn::BitCast(di, xv), vn), vSS);  // |D| < 2^33
    const V<DU64> ay = hn::ShiftRightSame(hn::Add(mul_u64(hn::BitCast(du64, hn::Abs(D)), vinv), half_y), e);
    const V<DI64> g = hn::PromoteTo(d64, hn::LoadU(d32, gamma + i));
    const V<DU64> ag = hn::MulEven(hn::BitCast(du32, ay), hn::BitCast(du32, hn::Abs(g)));  // ay < 2^32, |g| <= 2^31
    if (HWY_UNLIKELY(!hn::AllTrue(du64, hn::Eq(hn::ShiftRight<32>(ag), hn::Zero(du64))))) {
      for (int64_t j = i; j < i + L64; ++j) scalar_out(j);
      continue;
    }
    const V<DU64> ao_u = hn::ShiftRightSame(hn::Add(hn::MulEven(hn::BitCast(du32, ag), vmult), half_o), os);
    const V<DI64> ao = hn::BitCast(d64, ao_u);
    const V<DI64> b = hn::PromoteTo(d64, hn::LoadU(d32, beta + i));
    const V<DI64> v = hn::Add(hn::IfThenElse(hn::Lt(hn::Xor(D, g), zero), hn::Neg(ao), ao), b);  // y gamma's sign
    store_narrow(hn::Min(hn::Max(v, lo), hi), out + i);
  }
  for (; i < n; ++i) scalar_out(i);
  return true;
#endif
}

template <typename T, bool kNaive>
void layer_norm_checked(const char* op, const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p,
                        T* out, int64_t ld_out) {
  const int64_t n = p.n;
  check_rows(op, rows, n, ld_in, ld_out);
  if (rows == 0 || n == 0) return;
  SG_CHECK(p.gamma && p.beta, "{}: gamma and beta must be set", op);
  SG_CHECK(p.to_output.multiplier > 0 && p.to_output.shift >= 1 && p.to_output.shift <= 120,
           "{}: to_output ({}, {}) is not a fixed-point factor", op, p.to_output.multiplier, p.to_output.shift);
  // Rows that break the overflow guard are flagged in the parallel loop and reported after.
  int64_t bad_row = -1;
  parallel_for(rows, n * 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int32_t* xr = x + r * ld_in;
      T* yr = out + r * ld_out;
      if (!(kNaive ? layer_norm_row_naive(xr, n, p.gamma, p.beta, p.to_output, yr)
                   : layer_norm_row(xr, n, p.gamma, p.beta, p.to_output, yr))) {
#pragma omp critical(sg_quant_layer_norm)
        if (bad_row < 0 || r < bad_row) bad_row = r;
      }
    }
  });
  if (bad_row >= 0) {
    const int32_t* xr = x + bad_row * ld_in;
    const int32_t worst = *std::max_element(xr, xr + n, [](int32_t a, int32_t b) {
      return std::abs(int64_t{a}) < std::abs(int64_t{b});
    });
    fail("{}: row {} holds {} with n = {}: n x^2 must not exceed 2^62 (|x| <= 2^24 is fine for n <= "
         "2^14)",
         op, bad_row, worst, n);
  }
}
}  // namespace

void layer_norm_s8(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int8_t* out,
                   int64_t ld_out) {
  layer_norm_checked<int8_t, false>("layer_norm_s8", x, rows, ld_in, p, out, ld_out);
}
void layer_norm_s32(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int32_t* out,
                    int64_t ld_out) {
  layer_norm_checked<int32_t, false>("layer_norm_s32", x, rows, ld_in, p, out, ld_out);
}
void layer_norm_s8_naive(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int8_t* out,
                         int64_t ld_out) {
  layer_norm_checked<int8_t, true>("layer_norm_s8_naive", x, rows, ld_in, p, out, ld_out);
}
void layer_norm_s32_naive(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int32_t* out,
                          int64_t ld_out) {
  layer_norm_checked<int32_t, true>("layer_norm_s32_naive", x, rows, ld_in, p, out, ld_out);
}

// ---- per-token dynamic quantization --------------------------------------------------------

// Per row: m = max(1, max |y|) (max(1, max y) for uint8), R = round(qmax 2^40 / m), and
// q = sign(y) ((|y| R + 2^39) >> 40). |y| <= m keeps |y| R <= qmax 2^40 + m / 2 < 2^48, so the
// product fits int64 and q <= qmax; R's rounding moves |y| qmax / m by at most m / 2^41
// < 2^-10, so q is round(y qmax / m) except within 2^-10 of a tie.
namespace {

// One row (y, o: (cols)), in int32 lanes for m and int64 lanes for q; returns m. T: int8_t or
// uint8_t (kQmax 127 or 255, negatives read as 0).
template <typename T> int32_t quantize_row(const int32_t* HWY_RESTRICT y, int64_t cols, T* HWY_RESTRICT o) {
  constexpr bool kUnsigned = std::is_unsigned_v<T>;
  constexpr int64_t kQmax = kUnsigned ? 255 : 127;
  // INT32_MIN is read as -INT32_MAX, so that m fits int32.
  constexpr int32_t kLowest = kUnsigned ? 0 : -std::numeric_limits<int32_t>::max();
  int64_t c = 0;
  int32_t m = 1;
#if HWY_TARGET != HWY_SCALAR
  const DI di;
  const DI64 d64;
  const DU64 du64;
  const hn::Rebind<int32_t, DI64> d32;  // half a vector of int32, widened to int64 lanes
  const int64_t L = static_cast<int64_t>(hn::Lanes(di)), L64 = static_cast<int64_t>(hn::Lanes(d64));
  const V<DI> lowest = hn::Set(di, kLowest);
  V<DI> vm = hn::Set(di, 1);
  for (; c + L <= cols; c += L) vm = hn::Max(vm, hn::Abs(hn::Max(hn::LoadU(di, y + c), lowest)));
  m = hn::GetLane(hn::MaxOfLanes(di, vm));
#endif
  for (; c < cols; ++c) m = std::max(m, std::abs(std::max(y[c], kLowest)));
  const int64_t R = ((kQmax << 41) / m + 1) >> 1;  // round(qmax 2^40 / m)
  auto quantize_one = [R](int64_t v) {
    const int64_t a = ((v < 0 ? -v : v) * R + (int64_t{1} << 39)) >> 40;
    return static_cast<T>(v < 0 ? -a : a);
  };
  c = 0;
#if HWY_TARGET != HWY_SCALAR
  const V<DI64> lowest64 = hn::Set(d64, kLowest), zero = hn::Zero(d64);
  const V<DU64> vR = hn::Set(du64, static_cast<uint64_t>(R)), half = hn::Set(du64, uint64_t{1} << 39);
  for (; c + L64 <= cols; c += L64) {
    const V<DI64> v = hn::Max(hn::PromoteTo(d64, hn::LoadU(d32, y + c)), lowest64);
    const V<DI64> a = hn::BitCast(d64, hn::ShiftRight<40>(hn::Add(mul_u64(hn::BitCast(du64, hn::Abs(v)), vR), half)));
    store_narrow(hn::IfThenElse(hn::Lt(v, zero), hn::Neg(a), a), o + c);
  }
#endif
  for (; c < cols; ++c) o[c] = quantize_one(std::max(y[c], kLowest));
  return m;
}

template <typename T>
void quantize_rows_checked(const char* op, const int32_t* y, int64_t rows, int64_t cols, T* out, int32_t* row_max) {
  check_rows(op, rows, cols, cols, cols);
  parallel_for(rows, cols * 2, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row_max[r] = quantize_row(y + r * cols, cols, out + r * cols);
  });
}

}  // namespace

void quantize_rows_s8(const int32_t* y, int64_t rows, int64_t cols, int8_t* out, int32_t* row_max) {
  quantize_rows_checked("quantize_rows_s8", y, rows, cols, out, row_max);
}
void quantize_rows_u8(const int32_t* y, int64_t rows, int64_t cols, uint8_t* out, int32_t* row_max) {
  quantize_rows_checked("quantize_rows_u8", y, rows, cols, out, row_max);
}

}  // namespace sg::quant
