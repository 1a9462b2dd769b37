#pragma once
// The integer kernels of int8 inference (quant/): requantization, I-BERT's integer exp, the
// integer softmax (polynomial exp, or a 256-entry table on int8 scores), I-BERT's integer
// GELU and an integer LayerNorm with an integer Newton square root. Hot paths use only
// integer arithmetic (int32 lanes, int64 where a product needs it, shifts); constants that
// depend on a scale are computed once, in double, when the model is quantized (the *Params
// structs). Each kernel has a float64 reference (`*_reference`) kept for the tests.
//
// Convention: a quantized value q of scale s stands for the real number q * s (zero point 0:
// every tensor here is symmetric, or unsigned from 0).
#include <cstdint>

namespace sg::quant {

// ---- fixed-point multipliers ----------------------------------------------------------

// A positive real factor r as multiplier * 2^-shift, multiplier in [2^30, 2^31) (31
// significant bits; relative error <= 2^-31). 2^-40 <= r < 2^30 (SG_CHECK names the value).
struct FixedPoint {
  int32_t multiplier = 0;
  int32_t shift = 0;  // >= 1
};
FixedPoint to_fixed_point(double real);

// round(x * r) for r = f's factor, ties away from zero, exact (int64 arithmetic, |x| < 2^31).
int64_t fixed_multiply(int64_t x, FixedPoint f);

// Requantization, int32 accumulators -> int8 or uint8:
//   out = clamp(round_half_away((acc + bias_col) * r_col), lo, hi)
// acc is (rows, cols) row-major with row stride ld_acc; f has one FixedPoint per column
// (per-output-channel weight scales), or one for all when per_column is false; out is
// (rows, cols) with row stride ld_out. lo/hi clamp (e.g. 0 and 127 fuse a ReLU).
// bias: (cols) int32 at the accumulator's scale, added in int64 before the scaling (exact:
// |acc + bias| <= 2^32 keeps the rounding exact too), or null for none.
void requantize_s8(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc, const FixedPoint* f,
                   bool per_column, int32_t lo, int32_t hi, int8_t* out, int64_t ld_out,
                   const int32_t* bias = nullptr);
void requantize_u8(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc, const FixedPoint* f,
                   bool per_column, int32_t lo, int32_t hi, uint8_t* out, int64_t ld_out,
                   const int32_t* bias = nullptr);
// The same to int32 (rescaling an accumulator to another scale, e.g. the residual stream's),
// clamped to [-2^30, 2^30].
void requantize_s32(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc, const FixedPoint* f,
                    bool per_column, int32_t* out, int64_t ld_out, const int32_t* bias = nullptr);

// ---- exp and softmax --------------------------------------------------------------------

// I-BERT's i-exp (Kim et al., "I-BERT: Integer-only BERT Quantization", ICML 2021, Alg. 2):
// for x = q * scale <= 0, z = floor(x / -ln 2), r = x + z ln 2 in (-ln 2, 0],
// exp(r) ~ a (r + b)^2 + c (a = 0.3585, b = 1.353, c = 0.344) evaluated in integers, then
// shifted right by z. ExpParams holds the integer constants for one input scale.
struct ExpParams {
  double scale = 0;  // of the int32 input
  // filled by make_exp_params: the input converted to a working scale ln2 / 2^14 by a
  // fixed-point multiply, the polynomial's integer b and c at that scale, the clamp
  // below which exp is taken as 0.
  int32_t to_working_multiplier = 0, to_working_shift = 0;
  int32_t clamp = 0;  // most negative input kept, ~ -17 ln2 / scale (larger magnitudes give 0)
  int32_t b_int = 0, c_int = 0;
};
// input_scale in [5.3e-9, 45426) (sg::Error otherwise).
ExpParams make_exp_params(double input_scale);
// e[i] = exp(q[i] * scale) * 2^kExpBits, rounded down, for q[i] <= 0 (q > 0 is an error in
// the caller: the softmax subtracts the row max first), with exp as I-BERT's polynomial:
// relative error in [-0.0031, +0.0025], plus < 1.5e-4 from the integer steps; e(0) = 65550.
inline constexpr int kExpBits = 16;
// q above 0 is taken as 0, and q below p.clamp as p.clamp (e = 0 there).
void i_exp(const int32_t* q, int64_t n, const ExpParams& p, uint32_t* e);
void i_exp_naive(const int32_t* q, int64_t n, const ExpParams& p, uint32_t* e);  // scalar spec, bit-identical
double i_exp_reference(double x);  // the same approximation in float64 (no integer rounding)

// Integer softmax along rows of int32 scores of scale `scale` -> uint8 probabilities of
// scale 1/256 (TFLite's output convention): each out within 1 LSB of round(256 softmax(x)),
// and each row sums to 256 +- 1 (the +-1: a row whose mass is all on one element gives 255,
// uint8's largest). Rows of `n` scores, row stride ld_in; out row stride ld_out.
// |scores| must stay below 2^30 (checked: sg::Error naming the value).
// Per row: e = i_exp(s - max), E = sum e. A flat row (E >= 64 2^16: no element holds more
// than 1/63 of the mass) takes cumulative rounding: out_j = R_j - R_{j-1}, R_j = round(256
// (e_0 + .. + e_j) / E) over a fixed order, which sums to exactly 256. Other rows take
// out = round(256 e / E) through one reciprocal of E, and cumulative rounding instead if those
// miss 256 by more than 1 (many small elements). Rows run in parallel; the output is the same
// on any thread count.
// (The 1 LSB holds while the exp's floor losses stay small: see quant/int_kernels.cpp for the
// bound; rows where one element holds much of the mass and hundreds of others sit near
// exp ~ 2^-16 can drift further.)
void softmax_u8(const int32_t* scores, int64_t rows, int64_t n, int64_t ld_in, const ExpParams& p, uint8_t* out,
                int64_t ld_out);
// Scalar twin of softmax_u8 (the specification; bit-identical output).
void softmax_u8_naive(const int32_t* scores, int64_t rows, int64_t n, int64_t ld_in, const ExpParams& p,
                      uint8_t* out, int64_t ld_out);

// The lookup-table variant (the seed's section 5.4 (2)): int8 scores of scale `scale`; after
// subtracting the row max every difference is one of 256 values, so exp is one table read.
struct ExpTable {
  double scale = 0;
  uint32_t entry[256] = {};  // entry[d] = round(exp(-d * scale) * 2^kExpBits)
};
ExpTable make_exp_table(double input_scale);
void softmax_u8_lut(const int8_t* scores, int64_t rows, int64_t n, int64_t ld_in, const ExpTable& t, uint8_t* out,
                    int64_t ld_out);

// float64 reference: round(256 * softmax(x * scale)) per element, clamped to 255.
void softmax_u8_reference(const int32_t* scores, int64_t rows, int64_t n, int64_t ld_in, double scale, uint8_t* out,
                          int64_t ld_out);

// ---- GELU ---------------------------------------------------------------------------------

// I-BERT's i-GELU: GELU(x) ~ x/2 (1 + L(x / sqrt 2)), L(x) = sgn(x) (a (min(|x|, -b) + b)^2 + 1),
// a = -0.2888, b = -1.769, in integers; int32 input of scale in_scale -> int8 output of
// scale out_scale (round half away from zero, saturated).
// NOTE: I-BERT evaluates the polynomial at the input scale; an int32 accumulator's scale
// (~1e-5) would overflow c = 1 / (|a| S^2) there, so the polynomial's input u = x / sqrt 2 is
// first moved to a fixed working scale S_g = sqrt(2^-29 / |a|) (one fixed-point multiply),
// where 1 is exactly 2^29 at the polynomial's output scale.
struct GeluParams {
  double in_scale = 0, out_scale = 0;
  FixedPoint to_working;         // in_scale / (sqrt 2 S_g): q -> u at the working scale
  int32_t b_int = 0, c_int = 0;  // the polynomial's constants at the working scale
  int32_t one_int = 0;           // 1 at the polynomial's output scale (2^29)
  FixedPoint to_output;          // in_scale * 2^8 / out_scale: x -> out_scale with 8 guard bits
  // q is clamped to [clamp_lo, clamp_hi] first; no output changes (the polynomial is flat
  // past -b and the output saturates), and the products stay within int64.
  int32_t clamp_lo = 0, clamp_hi = 0;
  int32_t out_max = 127;
};
// out_max: the output's largest magnitude (127 for int8; up to 2^23 for gelu_s32's wide output,
// which saturates to [-out_max - 1, out_max]).
GeluParams make_gelu_params(double in_scale, double out_scale, int32_t out_max = 127);
void gelu_s8(const int32_t* x, int64_t n, const GeluParams& p, int8_t* out);
// The same to int32 (for a per-token quantization after it: quantize_rows_s8), p.out_max <= 2^23.
void gelu_s32(const int32_t* x, int64_t n, const GeluParams& p, int32_t* out);
double gelu_reference(double x);  // exact GELU, x Phi(x), in float64

// ---- LayerNorm ----------------------------------------------------------------------------

// floor(sqrt(v)) for v >= 0 by Newton's iteration in integers (I-BERT's Alg. 4).
uint64_t isqrt(uint64_t v);

// Integer LayerNorm of rows of `n` int32 values (one shared input scale, which cancels):
// y = (x - mean) / sqrt(var + eps) * gamma + beta, eps = 0 (the mean and the variance are
// exact rationals; a row of equal values normalizes to 0), gamma and beta quantized per channel
// (gamma_q int32 at scale gamma_scale, beta_q int32 at scale out_scale), out int8 of scale
// out_scale. The normalized value is formed in fixed point with 2^kNormBits per unit.
// Overflow guard: n * max|x|^2 <= 2^62 per row (|x| <= 2^24 for n <= 2^14; checked, sg::Error).
inline constexpr int kNormBits = 14;
struct LayerNormParams {
  int64_t n = 0;
  const int32_t* gamma = nullptr;  // (n), scale gamma_scale
  const int32_t* beta = nullptr;   // (n), scale out_scale
  FixedPoint to_output;            // 2^-kNormBits * gamma_scale / out_scale
};
void layer_norm_s8(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int8_t* out,
                   int64_t ld_out);
// The same to int32, clamped to [-2^30, 2^30] (to_output and beta then describe a fine output
// scale, for a per-token quantization after it).
void layer_norm_s32(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int32_t* out,
                    int64_t ld_out);
// Scalar twins of the two (the specification; bit-identical output).
void layer_norm_s8_naive(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int8_t* out,
                         int64_t ld_out);
void layer_norm_s32_naive(const int32_t* x, int64_t rows, int64_t ld_in, const LayerNormParams& p, int32_t* out,
                          int64_t ld_out);

// ---- per-token dynamic quantization -------------------------------------------------------

// Rows of int32 values at one scale T (a fine scale: calibrated range / 2^16) -> int8 with one
// integer factor per row, found at run time: row_max[r] = m = max(1, max_c |y[r, c]|) and
// out = round(y 127 / m) (half away from zero; through a per-row reciprocal with 40 fractional
// bits, which can differ from the exact rounding only within 2^-10 of a tie), so row r stands at
// scale T m / 127 and its largest element is +-127. quantize_rows_u8 fuses a ReLU: negatives
// give 0, m = max(1, max y), out = round(y 255 / m). out and y are (rows, cols), contiguous.
void quantize_rows_s8(const int32_t* y, int64_t rows, int64_t cols, int8_t* out, int32_t* row_max);
void quantize_rows_u8(const int32_t* y, int64_t rows, int64_t cols, uint8_t* out, int32_t* row_max);

}  // namespace sg::quant
