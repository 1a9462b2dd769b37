#pragma once
// Element types. float32 is for speed, float64 lets gradcheck be tight, int64 holds labels
// and indices, bool holds masks (one byte each).
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <string_view>
#include <type_traits>

#include "core/error.h"

namespace sg {

enum class Dtype : uint8_t { Float32, Float64, Int64, Bool };

inline constexpr Dtype kFloat32 = Dtype::Float32;
inline constexpr Dtype kFloat64 = Dtype::Float64;
inline constexpr Dtype kInt64 = Dtype::Int64;
inline constexpr Dtype kBool = Dtype::Bool;

constexpr size_t dtype_size(Dtype t) {
  switch (t) {
    case Dtype::Float32: return 4;
    case Dtype::Float64: return 8;
    case Dtype::Int64: return 8;
    case Dtype::Bool: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(Dtype t) {
  switch (t) {
    case Dtype::Float32: return "float32";
    case Dtype::Float64: return "float64";
    case Dtype::Int64: return "int64";
    case Dtype::Bool: return "bool";
  }
  return "?";
}

constexpr bool is_floating(Dtype t) { return t == Dtype::Float32 || t == Dtype::Float64; }

// C++ type <-> Dtype. bool is stored as one byte (uint8_t-compatible bool).
template <typename T> struct DtypeOf;
template <> struct DtypeOf<float> { static constexpr Dtype value = Dtype::Float32; };
template <> struct DtypeOf<double> { static constexpr Dtype value = Dtype::Float64; };
template <> struct DtypeOf<int64_t> { static constexpr Dtype value = Dtype::Int64; };
template <> struct DtypeOf<bool> { static constexpr Dtype value = Dtype::Bool; };
template <typename T> inline constexpr Dtype dtype_of = DtypeOf<T>::value;

// The C++ types Tensor's typed accessors (item, at, set, to_vector, from_vector) take: each
// dtype's own, and int, converted to and from int64 (checked: a value outside int's range
// throws) so that item<int>() works as a PyTorch user expects.
template <typename T>
inline constexpr bool is_element_type = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                                        std::is_same_v<T, int64_t> || std::is_same_v<T, int> ||
                                        std::is_same_v<T, bool>;
// NOTE: static_assert wants a string literal, so the list of types is spelled out here once.
template <typename T> constexpr void check_element_type() {
  static_assert(is_element_type<T>,
                "softgrad: unsupported element type T: item<T>, at<T>, set<T>, to_vector<T> and from_vector "
                "take float, double, int64_t, int (converted to and from int64) or bool");
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
// v as T; throws naming `op` where convertible_to<T> says no.
template <typename T, typename S> T cast_value(S v, std::string_view op) {
  SG_CHECK(convertible_to<T>(v), "{}: value {} cannot be converted to {} (NaN, infinite or out of range)", op, v,
           std::is_same_v<T, int64_t> ? "int64" : std::is_same_v<T, int> ? "int (int32)" : "an integer");
  return static_cast<T>(v);
}

// Calls fn.template operator()<T>() with the C++ type of `t`:
//   visit_dtype(x.dtype(), [&]<typename T>() { ... });
template <typename Fn> decltype(auto) visit_dtype(Dtype t, Fn&& fn) {
  switch (t) {
    case Dtype::Float32: return fn.template operator()<float>();
    case Dtype::Float64: return fn.template operator()<double>();
    case Dtype::Int64: return fn.template operator()<int64_t>();
    case Dtype::Bool: return fn.template operator()<bool>();
  }
  return fn.template operator()<float>();  // unreachable
}

// Like visit_dtype for the arithmetic dtypes (float32, float64, int64). Ops reject bool
// with their own message first; reaching here with bool is a bug, not bad input.
template <typename Fn> decltype(auto) visit_numeric(Dtype t, Fn&& fn) {
  SG_CHECK(t != Dtype::Bool, "visit_numeric: bool tensors are not supported here");
  if (t == Dtype::Float64) return fn.template operator()<double>();
  if (t == Dtype::Int64) return fn.template operator()<int64_t>();
  return fn.template operator()<float>();
}

// Like visit_dtype for the floating dtypes (float32, float64), for ops that checked
// is_floating first: anything else runs as float.
template <typename Fn> decltype(auto) visit_floating(Dtype t, Fn&& fn) {
  if (t == Dtype::Float64) return fn.template operator()<double>();
  return fn.template operator()<float>();
}

}  // namespace sg
