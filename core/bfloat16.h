#pragma once
// sg::bfloat16: the storage type of kBFloat16 tensors. The top 16 bits of an IEEE binary32
// (1 sign, 8 exponent, 7 mantissa bits): float32's range with 8 significant bits.
//
//   sg::bfloat16 h(0.1f);          // rounds to nearest, ties to even: bits 0x3dcd
//   float f = static_cast<float>(h);  // 0.10009765625, exact
//
// NOTE: a value type only: it converts explicitly to and from float and double and has no
// arithmetic (not even ==), so a kernel templated on the element type cannot compute in
// bfloat16 by accident: it fails to compile. Compare `bits`, or convert.
#include <bit>
#include <cstdint>

namespace sg {

// float -> bfloat16 bits, rounding to nearest with ties to even. A NaN stays a NaN: it keeps
// its sign and top payload bits and comes out quiet (as PyTorch's c10::BFloat16 and the
// AVX512-BF16 vcvtneps2bf16). Infinities stay infinite; values past the largest bfloat16
// by half a unit or more round to infinity.
// Branch-free (both results formed, one selected), so loops over it vectorize.
constexpr uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;
  // Adding 0x7fff rounds half down; adding one more when the kept lsb is odd makes it even.
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// double -> bfloat16 bits in one rounding (nearest, ties to even). NOTE: not via
// float(d): rounding twice can land on the wrong side of a tie (1 + 2^-8 + 2^-40 becomes
// 1 + 2^-8 in float, a tie that goes to 1, while the nearest bfloat16 is 1 + 2^-7). So d
// is first rounded to float *to odd* (truncate, then set the lsb when anything was cut):
// float keeps 16 more bits than bfloat16 at every exponent, which makes the second
// rounding exact (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums:
// proved algorithms using rounding to odd", IEEE TC 2008).
constexpr uint16_t double_to_bfloat16_bits(double d) {
  if (d != d) {  // NaN: sign and the top payload bits, quiet
    const uint64_t u = std::bit_cast<uint64_t>(d);
    return static_cast<uint16_t>(((u >> 48) & 0x8000u) | 0x7fc0u | ((u >> 45) & 0x3fu));
  }
  const float f = static_cast<float>(d);  // to nearest (an infinite d stays infinite)
  if (static_cast<double>(f) == d) return float_to_bfloat16_bits(f);
  uint32_t u = std::bit_cast<uint32_t>(f);
  const bool away = (f < 0 ? -static_cast<double>(f) : static_cast<double>(f)) > (d < 0 ? -d : d);
  if (away) --u;  // toward zero: one step down in magnitude (also from infinity to the largest float)
  return float_to_bfloat16_bits(std::bit_cast<float>(u | 1u));
}

struct bfloat16 {
  uint16_t bits = 0;

  constexpr bfloat16() = default;
  constexpr explicit bfloat16(float f) : bits(float_to_bfloat16_bits(f)) {}
  constexpr explicit bfloat16(double d) : bits(double_to_bfloat16_bits(d)) {}
  static constexpr bfloat16 from_bits(uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  // Exact: every bfloat16 is a float.
  constexpr explicit operator float() const { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }
  constexpr explicit operator double() const { return static_cast<double>(static_cast<float>(*this)); }
};
static_assert(sizeof(bfloat16) == 2 && alignof(bfloat16) == 2);

}  // namespace sg
