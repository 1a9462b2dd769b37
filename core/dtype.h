#pragma once
// Element types. float32 is for speed, float64 lets gradcheck be tight, int64 holds labels
// and indices, bool holds masks (one byte each), bfloat16 stores weights and activations
// in half the bytes of float32 (core/bfloat16.h).
//
// bfloat16 is a storage dtype, not a compute dtype (the rules):
// - is_floating(kBFloat16) is false: is_floating means "float32 or float64", what every
//   op checks before it computes; is_floating_point (below) also counts bfloat16.
// - Supported: creation (empty, zeros, ones, full, tensor, from_vector, arange, linspace),
//   to() both ways (float32/float64 -> bfloat16 rounds to nearest even, NaN stays a quiet
//   NaN, infinities stay; bfloat16 -> float32/float64 is exact), contiguous/clone, copy_,
//   fill_/zero_, views and the shape ops that only move elements, where, masked_fill,
//   comparisons (eq, lt, ...: as float, exact), isnan/isinf/isfinite, item/at/set/to_vector,
//   printing, safetensors "BF16" bit for bit, and loading a bfloat16 state into a
//   float32/float64 module (nn::load_state_dict widens it exactly).
// - Every op that computes refuses it by name before dispatching:
//   "relu: bfloat16 tensors are not supported; convert with to(kFloat32)" (refuse_bfloat16).
// - A bfloat16 tensor cannot require grad (requires_grad_ refuses it), and to(kBFloat16)
//   of a tensor that requires grad refuses while grad mode is on: convert a detached copy.
// - visit_numeric / visit_floating throw on bfloat16 (reaching them with it is a bug);
//   visit_dtype passes sg::bfloat16, which has no arithmetic, so a generic kernel that
//   computes does not compile for it. NOTE: a kernel body under
//   `if constexpr (std::is_floating_point_v<T>)` compiles and does nothing for bfloat16;
//   every such site (matmul, var, the index/scatter backwards) sits behind an op check
//   that refuses bfloat16 first. Keep it that way when adding one.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <string_view>
#include <type_traits>

#include "core/bfloat16.h"
#include "core/error.h"

namespace sg {

enum class Dtype : uint8_t { Float32, Float64, Int64, Bool, BFloat16 };

inline constexpr Dtype kFloat32 = Dtype::Float32;
inline constexpr Dtype kFloat64 = Dtype::Float64;
inline constexpr Dtype kInt64 = Dtype::Int64;
inline constexpr Dtype kBool = Dtype::Bool;
inline constexpr Dtype kBFloat16 = Dtype::BFloat16;

constexpr size_t dtype_size(Dtype t) {
  switch (t) {
    case Dtype::Float32: return 4;
    case Dtype::Float64: return 8;
    case Dtype::Int64: return 8;
    case Dtype::Bool: return 1;
    case Dtype::BFloat16: return 2;
  }
  return 0;
}

constexpr std::string_view dtype_name(Dtype t) {
  switch (t) {
    case Dtype::Float32: return "float32";
    case Dtype::Float64: return "float64";
    case Dtype::Int64: return "int64";
    case Dtype::Bool: return "bool";
    case Dtype::BFloat16: return "bfloat16";
  }
  return "?";
}

// A compute dtype: float32 or float64 (NOT bfloat16: see the rules above).
constexpr bool is_floating(Dtype t) { return t == Dtype::Float32 || t == Dtype::Float64; }
// Any floating-point dtype, bfloat16 included (PyTorch's is_floating_point).
constexpr bool is_floating_point(Dtype t) { return is_floating(t) || t == Dtype::BFloat16; }

// The first check of every op that computes: throws naming the op on a bfloat16 tensor.
inline void refuse_bfloat16(std::string_view op, Dtype t) {
  SG_CHECK(t != Dtype::BFloat16, "{}: bfloat16 tensors are not supported; convert with to(kFloat32)", op);
}

// C++ type <-> Dtype. bool is stored as one byte (uint8_t-compatible bool).
template <typename T> struct DtypeOf;
template <> struct DtypeOf<float> { static constexpr Dtype value = Dtype::Float32; };
template <> struct DtypeOf<double> { static constexpr Dtype value = Dtype::Float64; };
template <> struct DtypeOf<int64_t> { static constexpr Dtype value = Dtype::Int64; };
template <> struct DtypeOf<bool> { static constexpr Dtype value = Dtype::Bool; };
template <> struct DtypeOf<bfloat16> { static constexpr Dtype value = Dtype::BFloat16; };
template <typename T> inline constexpr Dtype dtype_of = DtypeOf<T>::value;

// The C++ types Tensor's typed accessors (item, at, set, to_vector, from_vector) take: each
// dtype's own, and int, converted to and from int64 (checked: a value outside int's range
// throws) so that item<int>() works as a PyTorch user expects. bfloat16 values convert
// through float (exact); values going to bfloat16 round to nearest even.
template <typename T>
inline constexpr bool is_element_type = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                                        std::is_same_v<T, int64_t> || std::is_same_v<T, int> ||
                                        std::is_same_v<T, bool> || std::is_same_v<T, bfloat16>;
// NOTE: static_assert wants a string literal, so the list of types is spelled out here once.
template <typename T> constexpr void check_element_type() {
  static_assert(is_element_type<T>,
                "softgrad: unsupported element type T: item<T>, at<T>, set<T>, to_vector<T> and from_vector "
                "take float, double, int64_t, int (converted to and from int64), bool or sg::bfloat16");
}

// Converting a floating value to an integer type is undefined behaviour in C++ when the
// value is NaN, infinite or out of the integer's range (PyTorch returns whatever the
// hardware gives). softgrad refuses instead: every such conversion goes through
// convertible_to<T> or cast_value<T>.
template <typename T, typename S> constexpr bool convertible_to(S v) {
  constexpr bool to_int = std::is_integral_v<T> && !std::is_same_v<T, bool>;
  if constexpr (to_int && std::is_floating_point_v<S>) {
    // Both bounds are powers of two (or 0), exact in S: [min, max + 1).
    return v >= static_cast<S>(std::numeric_limits<T>::min()) &&
           v < static_cast<S>(std::numeric_limits<T>::max()) + S(1);  // false for NaN
  } else if constexpr (to_int && std::is_integral_v<S> && !std::is_same_v<S, bool> && sizeof(S) > sizeof(T)) {
    return std::in_range<T>(v);  // int64 -> int
  } else {
    return true;
  }
}
// Any element value -> bfloat16 in one rounding (nearest, ties to even).
template <typename S> constexpr bfloat16 to_bfloat16(S v) {
  if constexpr (std::is_same_v<S, bfloat16>) {
    return v;
  } else if constexpr (std::is_same_v<S, bool>) {
    return bfloat16(v ? 1.0f : 0.0f);
  } else if constexpr (std::is_integral_v<S>) {
    // NOTE: exact for every int64 (via double would round twice above 2^53): keep the 8
    // leading bits of the magnitude and round the rest to nearest even by hand.
    const bool neg = v < 0;
    uint64_t m = neg ? uint64_t{0} - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    int shift = 0;
    if (m >= 256) {
      shift = 64 - std::countl_zero(m) - 8;
      const uint64_t rest = m & ((uint64_t{1} << shift) - 1), half = uint64_t{1} << (shift - 1);
      m >>= shift;
      if (rest > half || (rest == half && (m & 1))) ++m;  // may reach 256: still exact
    }
    const double mag = static_cast<double>(m) * static_cast<double>(uint64_t{1} << shift);  // shift <= 56
    return bfloat16(neg ? -mag : mag);  // exact in double and in bfloat16
  } else {
    return bfloat16(v);
  }
}

// v as T; throws naming `op` where convertible_to<T> says no.
template <typename T, typename S> T cast_value(S v, std::string_view op) {
  if constexpr (std::is_same_v<S, bfloat16> && !std::is_same_v<T, bfloat16>) {
    return cast_value<T>(static_cast<float>(v), op);  // exact, then checked as a float
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    return to_bfloat16(v);
  } else {
    SG_CHECK(convertible_to<T>(v), "{}: value {} cannot be converted to {} (NaN, infinite or out of range)", op, v,
             std::is_same_v<T, int64_t> ? "int64" : std::is_same_v<T, int> ? "int (int32)" : "an integer");
    return static_cast<T>(v);
  }
}

// Calls fn.template operator()<T>() with the C++ type of `t`:
//   visit_dtype(x.dtype(), [&]<typename T>() { ... });
template <typename Fn> decltype(auto) visit_dtype(Dtype t, Fn&& fn) {
  switch (t) {
    case Dtype::Float32: return fn.template operator()<float>();
    case Dtype::Float64: return fn.template operator()<double>();
    case Dtype::Int64: return fn.template operator()<int64_t>();
    case Dtype::Bool: return fn.template operator()<bool>();
    case Dtype::BFloat16: return fn.template operator()<bfloat16>();  // no arithmetic: see bfloat16.h
  }
  return fn.template operator()<float>();  // unreachable
}

// Like visit_dtype for the arithmetic dtypes (float32, float64, int64). Ops reject bool
// and bfloat16 with their own message first; reaching here with either is a bug, not bad
// input.
template <typename Fn> decltype(auto) visit_numeric(Dtype t, Fn&& fn) {
  SG_CHECK(t != Dtype::Bool, "visit_numeric: bool tensors are not supported here");
  SG_CHECK(t != Dtype::BFloat16, "visit_numeric: a bfloat16 tensor reached a kernel (a softgrad bug: the op "
                                 "should have refused it; convert with to(kFloat32))");
  if (t == Dtype::Float64) return fn.template operator()<double>();
  if (t == Dtype::Int64) return fn.template operator()<int64_t>();
  return fn.template operator()<float>();
}

// Like visit_dtype for the floating dtypes (float32, float64), for ops that checked
// is_floating first. Anything else is a bug (not bad input) and throws.
template <typename Fn> decltype(auto) visit_floating(Dtype t, Fn&& fn) {
  SG_CHECK(is_floating(t), "visit_floating: a {} tensor reached a float32/float64 kernel (a softgrad bug: the op "
                           "should have refused it)", dtype_name(t));
  if (t == Dtype::Float64) return fn.template operator()<double>();
  return fn.template operator()<float>();
}

}  // namespace sg
