// Elementwise ops: broadcasting binary arithmetic, unary math (Highway SIMD for the
// transcendental ones), comparisons, where/masked_fill, and the in-place updates.
//
// Every kernel walks its operands through sg::coalesce: operands that share a layout
// collapse to one long run, a broadcast operand gets stride 0, and the inner loop has a
// branch for the common stride patterns so that GCC vectorizes it.
#include "ops/elementwise.h"

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/simd_exp.h"
#include "core/simd_partial.h"
#include "core/strided.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace sg {

namespace {

namespace hn = hwy::HWY_NAMESPACE;

// ============================================================================================
// Dispatch and checks
// ============================================================================================

// int64 arithmetic wraps around on overflow (two's complement), as in PyTorch and NumPy;
// signed overflow is undefined behaviour in C++, unsigned arithmetic is modular, and the
// conversion back to int64 is modular too (C++20). Floating types compute as written.
template <typename T> T wrapping_add(T x, T y) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(x) + static_cast<uint64_t>(y));
  else return x + y;
}
template <typename T> T wrapping_sub(T x, T y) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(x) - static_cast<uint64_t>(y));
  else return x - y;
}
template <typename T> T wrapping_mul(T x, T y) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(x) * static_cast<uint64_t>(y));
  else return x * y;
}

// NOTE: every op reaches one of these checks (or check_defined itself) before it reads
// an operand, so an undefined operand is reported under the op's name.
void check_floating(const char* op, const Tensor& x) {
  check_defined(op, x);
  refuse_bfloat16(op, x.dtype());
  SG_CHECK(is_floating(x.dtype()), "{}: expected a floating tensor (float32 or float64), got {} of shape {}", op,
           x.dtype(), x.shape());
}

void check_numeric(const char* op, const Tensor& x) {
  check_defined(op, x);
  refuse_bfloat16(op, x.dtype());
  SG_CHECK(x.dtype() != kBool, "{}: expected a float32, float64 or int64 tensor, got bool of shape {}", op,
           x.shape());
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  SG_CHECK(a.dtype() == b.dtype(),
           "{}: dtype mismatch: {} (shape {}) and {} (shape {}); both operands must have the same dtype", op,
           a.dtype(), a.shape(), b.dtype(), b.shape());
}

// Checks a binary arithmetic op's operands; returns the broadcast output shape.
Shape check_binary(const char* op, const Tensor& a, const Tensor& b, bool int_ok) {
  check_defined(op, a, "first operand");
  check_defined(op, b, "second operand");
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  check_same_dtype(op, a, b);
  if (int_ok)
    check_numeric(op, a);
  else
    check_floating(op, a);
  return shape;
}

// Strides of x seen at the broadcast shape `shape` (0 on broadcast dims).
Strides broadcast_strides(const Tensor& x, const Shape& shape) {
  Strides s(shape.size(), 0);
  const size_t lead = shape.size() - x.shape().size();
  for (size_t d = 0; d < x.shape().size(); ++d) s[lead + d] = x.shape()[d] == 1 ? 0 : x.strides()[d];
  return s;
}

// ============================================================================================
// Strided kernels (raw pointers; the layout comes from sg::coalesce)
// ============================================================================================

// out, x: (S) as layout L (operand 0 = out, 1 = x).  out[i] = f(x[i])
template <typename TO, typename TI, typename F>
void unary_kernel(TO* out, const TI* x, const StridedLayout<2>& L, F f) {
  parallel_runs(L, [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> st) {
    TO* o = out + off[0];
    const TI* p = x + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<TO>(f(p[i]));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = static_cast<TO>(f(p[i * st[1]]));
    }
  });
}

// out, a, b: (S) as layout L (0 = out, 1 = a, 2 = b; a broadcast operand has stride 0).
// out[i] = f(a[i], b[i])
template <typename TO, typename TA, typename TB, typename F>
void binary_kernel(TO* out, const TA* a, const TB* b, const StridedLayout<3>& L, F f) {
  parallel_runs(L, [&](std::array<int64_t, 3> off, int64_t n, std::array<int64_t, 3> st) {
    TO* o = out + off[0];
    const TA* x = a + off[1];
    const TB* y = b + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<TO>(f(x[i], y[i]));
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
      const TB yv = *y;
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<TO>(f(x[i], yv));
    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
      const TA xv = *x;
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<TO>(f(xv, y[i]));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = static_cast<TO>(f(x[i * st[1]], y[i * st[2]]));
    }
  });
}

// self, other: (S) as layout L (0 = self, 1 = other, stride 0 where broadcast).
// self[i] = f(self[i], other[i]); other must not alias self.
template <typename T, typename F> void inplace_binary_kernel(T* self, const T* other, const StridedLayout<2>& L, F f) {
  parallel_runs(L, [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> st) {
    T* s = self + off[0];
    const T* o = other + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) s[i] = f(s[i], o[i]);
    } else if (st[0] == 1 && st[1] == 0) {
      const T ov = *o;
      for (int64_t i = 0; i < n; ++i) s[i] = f(s[i], ov);
    } else {
      for (int64_t i = 0; i < n; ++i) s[i * st[0]] = f(s[i * st[0]], o[i * st[1]]);
    }
  });
}

// self: (S) as layout L.  self[i] = f(self[i])
template <typename T, typename F> void inplace_unary_kernel(T* self, const StridedLayout<1>& L, F f) {
  parallel_runs(L, [&](std::array<int64_t, 1> off, int64_t n, std::array<int64_t, 1> st) {
    T* s = self + off[0];
    if (st[0] == 1) {
      for (int64_t i = 0; i < n; ++i) s[i] = f(s[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) s[i * st[0]] = f(s[i * st[0]]);
    }
  });
}

// out, cond, a, b: (S) as layout L (0 = out, 1 = cond, 2 = a, 3 = b).  out = cond ? a : b
template <typename T>
void where_kernel(T* out, const bool* cond, const T* a, const T* b, const StridedLayout<4>& L) {
  parallel_runs(L, [&](std::array<int64_t, 4> off, int64_t n, std::array<int64_t, 4> st) {
    T* o = out + off[0];
    const bool* c = cond + off[1];
    const T* x = a + off[2];
    const T* y = b + off[3];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = c[i] ? x[i] : y[i];
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = c[i * st[1]] ? x[i * st[2]] : y[i * st[3]];
    }
  });
}

// ---- Tensor-level wrappers around the kernels (fresh contiguous output) ----

template <typename TO, typename TI, typename F> Tensor unary_map(const Tensor& x, Dtype out_dtype, F f) {
  Tensor out = empty(x.shape(), out_dtype);
  if (out.numel() == 0) return out;
  const auto L = coalesce<2>(x.shape(), {out.strides(), x.strides()});
  unary_kernel(out.data_ptr<TO>(), static_cast<const TI*>(x.raw_data()), L, f);
  return out;
}

template <typename TO, typename TA, typename TB, typename F>
Tensor binary_map(const Tensor& a, const Tensor& b, const Shape& shape, Dtype out_dtype, F f) {
  Tensor out = empty(shape, out_dtype);
  if (out.numel() == 0) return out;
  const auto L = coalesce<3>(shape, {out.strides(), broadcast_strides(a, shape), broadcast_strides(b, shape)});
  binary_kernel(out.data_ptr<TO>(), static_cast<const TA*>(a.raw_data()), static_cast<const TB*>(b.raw_data()), L,
                f);
  return out;
}

// Backward helper: dx = f(dy, s) elementwise for same-dtype floating dy and s (s broadcast
// to dy's shape).
template <typename F> Tensor grad_map(const Tensor& dy, const Tensor& s, F f) {
  return visit_floating(dy.dtype(),
                        [&]<typename T>() { return binary_map<T, T, T>(dy, s, dy.shape(), dy.dtype(), f); });
}

// Backward helper: dy where keep(mask) else 0, for a bool mask broadcast to dy's shape.
template <bool kKeepWhere> Tensor grad_select(const Tensor& dy, const Tensor& mask) {
  return visit_floating(dy.dtype(), [&]<typename T>() {
    return binary_map<T, T, bool>(dy, mask, dy.shape(), dy.dtype(),
                                  [](T g, bool m) { return m == kKeepWhere ? g : T(0); });
  });
}

// ============================================================================================
// Highway unary kernels (contiguous float32 / float64)
//
// Accuracy (Highway 1.0.3's documented bounds, checked against std:: in the tests):
//   exp   float32      sg::simd::Exp (core/simd_exp.h): 1.02 ULP max over every float
//                      (checked exhaustively in tests/test_simd_exp.cpp); subnormal results
//                      correctly rounded; overflow to inf, underflow to 0, +-inf handled in
//                      the vector code (only NaN lanes go through std::exp, which agrees).
//         float64      1 ULP on [-708, 706] (hn::Exp); outside that range (overflow to inf,
//                      subnormal results, 0, NaN) lanes use std::exp.
//   log   4 ULP        on (0, max]; 0, negatives, inf and NaN lanes use std::log.
//   tanh  4 ULP        everywhere (NaN lanes use std::tanh).
//   sqrt  exact (IEEE).
//   sigmoid            ~3 ULP: exp(-|x|) (1 ULP) and one division; never overflows
//                      (x >= 0: 1/(1+e), x < 0: e/(1+e) with e = exp(-|x|)).
//   gelu tanh          as x sigmoid(2u): no cancellation for x << 0; relative error
//                      ~3 ULP + |2u| * 6e-8 in float32 (rounding of the exp argument 2u
//                      is amplified by |2u|: 1e-6 at x = -3, the function's own
//                      conditioning); ~1e-15 relative in float64.
//   gelu erf, float32  x Phi(x) on float32 lanes (normal_cdf_f32 below): 3.9 ULP max against
//                      0.5 x erfc(-x/sqrt2) in double, measured over every 16th float bit
//                      pattern plus [-10, 10] in steps of 2^-16 (worst at x = -2.194), tails
//                      and subnormal results included; the saved Phi and the gradient
//                      Phi + x phi are within 3.4 ULP of their larger term. Targets without
//                      FMA: float64 lanes (Numerical Recipes' erfc, x Phi(x) formed in
//                      float64 too): 2.2 ULP max on the test's set (portable build).
//   gelu erf, float64  std::erfc per element (Highway 1.0.3 has no erf accurate to double).
// The tail of a buffer is padded into one full vector, so every element goes through the
// same code path whatever its position.
// ============================================================================================

// Each Op's vector code is valid for x in [lo, hi] (NaN never is); other lanes are
// recomputed with Op::scalar. The default range is everything but NaN.
struct FullRange {
  template <typename T> static constexpr T lo() { return -std::numeric_limits<T>::infinity(); }
  template <typename T> static constexpr T hi() { return std::numeric_limits<T>::infinity(); }
};

struct ExpOp {
  template <typename T> static constexpr bool kVector = true;
  template <typename T> static T scalar(T x) { return std::exp(x); }
  template <class D, class V> static V vec(D d, V x) { return simd::Exp(d, x); }
  // float32: valid everywhere. float64 lanes are hn::Exp, valid on [-708, 706] only.
  template <typename T> static constexpr T lo() {
    return sizeof(T) == 4 ? -std::numeric_limits<T>::infinity() : T(-708);
  }
  template <typename T> static constexpr T hi() {
    return sizeof(T) == 4 ? std::numeric_limits<T>::infinity() : T(706);
  }
};

struct LogOp {
  template <typename T> static constexpr bool kVector = true;
  template <typename T> static T scalar(T x) { return std::log(x); }
  template <class D, class V> static V vec(D d, V x) { return hn::Log(d, x); }
  template <typename T> static constexpr T lo() { return std::numeric_limits<T>::denorm_min(); }
  template <typename T> static constexpr T hi() { return std::numeric_limits<T>::max(); }
};

struct SqrtOp : FullRange {
  template <typename T> static constexpr bool kVector = true;
  template <typename T> static T scalar(T x) { return std::sqrt(x); }
  template <class D, class V> static V vec(D, V x) { return hn::Sqrt(x); }
};

struct TanhOp : FullRange {
  template <typename T> static constexpr bool kVector = true;
  template <typename T> static T scalar(T x) { return std::tanh(x); }
  template <class D, class V> static V vec(D d, V x) { return hn::Tanh(d, x); }
};

struct SigmoidOp : FullRange {
  template <typename T> static constexpr bool kVector = true;
  template <typename T> static T scalar(T x) {
    const T e = std::exp(-std::abs(x));
    const T r = T(1) / (T(1) + e);
    return x >= T(0) ? r : e * r;
  }
  template <class D, class V> static V vec(D d, V x) {
    using T = hn::TFromD<D>;
    const V e = hn::Exp(d, hn::Neg(hn::Abs(x)));
    const V r = hn::Div(hn::Set(d, T(1)), hn::Add(hn::Set(d, T(1)), e));
    return hn::IfThenElse(hn::Ge(x, hn::Zero(d)), r, hn::Mul(e, r));
  }
};

// gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)   (approximate='tanh')
// NOTE: evaluated as x sigmoid(2u), the same function (0.5 (1 + tanh(u)) = sigmoid(2u)),
// because 1 + tanh(u) cancels for x << 0 (PyTorch's float32 loses every digit there).
constexpr double kGeluBeta = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluKappa = 0.044715;

struct GeluTanhOp : FullRange {
  template <typename T> static constexpr bool kVector = true;
  template <typename T> static T scalar(T x) {
    const T z = T(2 * kGeluBeta) * (x + T(kGeluKappa) * x * x * x);
    return x * SigmoidOp::scalar(z);
  }
  template <class D, class V> static V vec(D d, V x) {
    using T = hn::TFromD<D>;
    const V x3 = hn::Mul(hn::Mul(x, x), x);
    const V z = hn::Mul(hn::Set(d, T(2 * kGeluBeta)), hn::MulAdd(hn::Set(d, T(kGeluKappa)), x3, x));
    return hn::Mul(x, SigmoidOp::vec(d, z));
  }
};

// gelu(x) = 0.5 x (1 + erf(x / sqrt2)) = 0.5 x erfc(-x / sqrt2)   (approximate='none')
// NOTE: the erfc form keeps relative accuracy for x << 0, where 1 + erf cancels.
constexpr double kSqrtHalf = 0.70710678118654752440;

struct GeluErfOp : FullRange {
  // float32 only: Numerical Recipes' fit is good to 1.2e-7, not to double precision. On FMA
  // targets the float32 gelu uses normal_cdf_f32 instead (gelu_erf_forward_f32).
  template <typename T> static constexpr bool kVector = std::is_same_v<T, float>;
  template <typename T> static T scalar(T x) {
    const double xd = static_cast<double>(x);
    return static_cast<T>(0.5 * xd * std::erfc(-xd * kSqrtHalf));
  }
  // On float64 lanes. Numerical Recipes' erfcc: erfc(z) = t exp(-z^2 + P(t)), t = 1/(1 + z/2)
  // for z >= 0, fractional error < 1.2e-7 everywhere; erfc(-z) = 2 - erfc(z).
  template <class DD, class VD> static VD vec_f64(DD dd, VD x) { return hn::Mul(x, cdf_f64(dd, x)); }
  // Phi(x) = 0.5 erfc(-x / sqrt2), the normal CDF.
  template <class DD, class VD> static VD cdf_f64(DD dd, VD x) {
    const VD u = hn::Mul(x, hn::Set(dd, -kSqrtHalf));
    const VD z = hn::Abs(u);
    const VD t = hn::Div(hn::Set(dd, 1.0), hn::MulAdd(hn::Set(dd, 0.5), z, hn::Set(dd, 1.0)));
    VD p = hn::Set(dd, 0.17087277);
    p = hn::MulAdd(p, t, hn::Set(dd, -0.82215223));
    p = hn::MulAdd(p, t, hn::Set(dd, 1.48851587));
    p = hn::MulAdd(p, t, hn::Set(dd, -1.13520398));
    p = hn::MulAdd(p, t, hn::Set(dd, 0.27886807));
    p = hn::MulAdd(p, t, hn::Set(dd, -0.18628806));
    p = hn::MulAdd(p, t, hn::Set(dd, 0.09678418));
    p = hn::MulAdd(p, t, hn::Set(dd, 0.37409196));
    p = hn::MulAdd(p, t, hn::Set(dd, 1.00002368));
    p = hn::MulAdd(p, t, hn::Set(dd, -1.26551223));
    const VD ans = hn::Mul(t, hn::Exp(dd, hn::NegMulAdd(z, z, p)));  // erfc(|u|)
    const VD erfc_u = hn::IfThenElse(hn::Ge(u, hn::Zero(dd)), ans, hn::Sub(hn::Set(dd, 2.0), ans));
    return hn::Mul(hn::Set(dd, 0.5), erfc_u);
  }
  // float32 lanes through float64 lanes: out = f64(x) lane by lane.
  template <class D, class V, class F64Fn> static V widened(D d, V x, F64Fn f64) {
#if HWY_TARGET == HWY_SCALAR  // portable builds (no -march): one lane, widen it directly
    const hn::Rebind<double, D> dd;
    return hn::DemoteTo(d, f64(dd, hn::PromoteTo(dd, x)));
#else
    const hn::Half<D> dh;
    const hn::Rebind<double, decltype(dh)> dd;
    const auto lo = f64(dd, hn::PromoteTo(dd, hn::LowerHalf(dh, x)));
    const auto hi = f64(dd, hn::PromoteTo(dd, hn::UpperHalf(dh, x)));
    return hn::Combine(d, hn::DemoteTo(dh, hi), hn::DemoteTo(dh, lo));
#endif
  }
  // float32 lanes are widened to float64 so that the exp argument -z^2 (up to ~100) keeps
  // its digits: in float32 its rounding alone costs ~1e-7 x^2 relative error.
  template <class D, class V> static V vec(D d, V x) {
    return widened(d, x, [](auto dd, auto xd) { return vec_f64(dd, xd); });
  }
};

// out, x: (n) contiguous, not overlapping. Whole vectors plus the tail padded into one
// vector. Returns false when some lane was outside [Op::lo, Op::hi] (those lanes hold
// garbage). NOTE: no calls inside, so Highway's constants stay in registers.
template <class Op, typename T>
HWY_NOINLINE bool hwy_unary_block(T* HWY_RESTRICT out, const T* HWY_RESTRICT x, int64_t n) {
  const hn::ScalableTag<T> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto lo = hn::Set(d, Op::template lo<T>()), hi = hn::Set(d, Op::template hi<T>());
  auto ok = hn::Eq(lo, lo);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, x + i);
    ok = hn::And(ok, hn::And(hn::Ge(v, lo), hn::Le(v, hi)));
    hn::StoreU(Op::vec(d, v), d, out + i);
  }
  if (i < n) {  // the tail, padded with 1s (inside every Op's range)
    alignas(HWY_MAX_BYTES) T buf[HWY_MAX_BYTES / sizeof(T)];
    for (int64_t j = 0; j < N; ++j) buf[j] = i + j < n ? x[i + j] : T(1);
    const auto v = hn::Load(d, buf);
    ok = hn::And(ok, hn::And(hn::Ge(v, lo), hn::Le(v, hi)));
    hn::Store(Op::vec(d, v), d, buf);
    for (int64_t j = 0; i + j < n; ++j) out[i + j] = buf[j];
  }
  return hn::AllTrue(d, ok);
}

// Recomputes the out-of-range elements of a block with the scalar function.
template <class Op, typename T> HWY_NOINLINE void hwy_unary_fixup(T* out, const T* x, int64_t n) {
  const T lo = Op::template lo<T>(), hi = Op::template hi<T>();
  for (int64_t i = 0; i < n; ++i)
    if (!(x[i] >= lo && x[i] <= hi)) out[i] = Op::scalar(x[i]);
}

// out, x: (n) contiguous, not overlapping. Blocks small enough to stay in L1 for the fix-up.
template <class Op, typename T> void hwy_unary_kernel(T* out, const T* x, int64_t n) {
  if constexpr (!Op::template kVector<T>) {
    for (int64_t i = 0; i < n; ++i) out[i] = Op::scalar(x[i]);
  } else {
    constexpr int64_t kBlock = 1024;
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t m = std::min(kBlock, n - b);
      if (!hwy_unary_block<Op>(out + b, x + b, m)) [[unlikely]]
        hwy_unary_fixup<Op>(out + b, x + b, m);
    }
  }
}

// Same, over threads. Chunks are whole 64-element blocks so each thread's loads stay aligned
// with the buffer (and only the last chunk has a tail).
template <class Op, typename T> void hwy_unary_parallel(T* out, const T* x, int64_t n, int64_t cost) {
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, kChunk * cost, [&](int64_t b, int64_t e) {
    const int64_t lo = b * kChunk, hi = std::min(n, e * kChunk);
    hwy_unary_kernel<Op>(out + lo, x + lo, hi - lo);
  });
}

// A fresh contiguous Op(x) for floating x (a non-contiguous x is gathered first).
template <class Op> Tensor hwy_unary(const char* op, const Tensor& x, int64_t cost) {
  check_floating(op, x);
  return visit_floating(x.dtype(), [&]<typename T>() {
    Tensor out = empty(x.shape(), x.dtype());
    const int64_t n = out.numel();
    if (n == 0) return out;
    const Tensor xc = x.is_contiguous() ? x : make_contiguous_copy(x);
    hwy_unary_parallel<Op>(out.data_ptr<T>(), xc.data_ptr<T>(), n, cost);
    return out;
  });
}

constexpr int64_t kTranscendentalCost = 4;  // vs. a plain load-op-store per element

// Phi(x) = 0.5 erfc(-x / sqrt2), the normal CDF, on float32 lanes (FMA targets). With
// t = |x| and Q(t) = Phi(-t) exp(t^2/2) (the Mills ratio over sqrt(2 pi)):
//   |x| < kCdfCentral:  Phi(x) = 0.5 + x C(x^2),  C a degree-5 fit of erf(x/sqrt2) / (2x);
//                       Phi >= 0.25 there, so the sum loses at most one bit.
//   otherwise:          Phi(-t) = Q(t) exp(-t^2/2),  Phi(t) = 1 - Phi(-t)  (no cancellation:
//                       Phi(-t) < 0.25), with Q on two pieces, both degree 9:
//                         t < kCdfSplit:  Q(t) = A(t - kCdfMid)
//                         t >= kCdfSplit: Q(t) = u B(u),  u = 1/t  (Q ~ 1/(t sqrt(2 pi)))
//   t^2/2 is split exactly into hi + lo with an FMA and exp(-hi - lo) = exp(-hi) (1 - lo):
//   the rounding of t^2 alone would cost up to ~100 ulp near t = 13.
// The fits (relative-error minimax, coefficients rounded to float one by one and the rest
// refitted, against mpmath) err by < 0.6 ulp; the rest is exp (1.02 ulp) and rounding.
// Measured error against 0.5 x erfc(-x/sqrt2) in double: see the table above.
// t is clamped to 15 (exp(-112.5) = 0): x = -inf gives -inf * 0 = NaN as PyTorch, +inf gives
// +inf, NaN gives NaN (through y = x Phi; the NaN lane's Phi itself is some finite number).
constexpr float kCdfCentral = 0.6745f;  // Phi(-0.6745) = 0.25
constexpr float kCdfSplit = 2.5f, kCdfMid = 1.58725f, kCdfClamp = 15.0f;
constexpr float kCdfC[6] = {3.989422917e-01f, -6.649158895e-02f, 9.994548745e-03f,
                            -1.315470319e-03f, 4.353454860e-04f, -2.890367759e-04f};
constexpr float kCdfA[10] = {1.981642991e-01f, -8.440601081e-02f, 3.209511563e-02f, -1.115407236e-02f,
                             3.599938238e-03f, -1.089499216e-03f, 3.063274198e-04f, -8.312684076e-05f,
                             2.698162643e-05f, -6.988719633e-06f};
constexpr float kCdfB[10] = {3.989439309e-01f, -9.602689533e-05f, -3.966175020e-01f, -3.007968888e-02f,
                             1.412966132e+00f, -7.042769194e-01f, -7.114335060e+00f, 1.937149239e+01f,
                             -2.181697845e+01f, 9.714547157e+00f};

// exp(-t^2 / 2) for t >= 0, t^2/2 split exactly (hi + lo): ~1 ulp for every t whose result is
// normal. ExpNonPositive flushes results below 2^-126 (t > 13.2) to 0.
template <class D, class V> HWY_INLINE V gauss_f32(D d, V t, bool flush) {
  const V half = hn::Set(d, 0.5f);
  const V tt = hn::Mul(t, t);
  const V hi = hn::Mul(half, tt), lo = hn::Mul(half, hn::MulSub(t, t, tt));  // exact
  const V e = flush ? simd::ExpNonPositive(d, hn::Neg(hi)) : simd::Exp(d, hn::Neg(hi));
  return hn::NegMulAdd(e, lo, e);  // e (1 - lo)
}

// Phi(x) into cdf and x Phi(x) into y, on float32 lanes (see above).
template <class D, class V> HWY_INLINE void normal_cdf_f32(D d, V x, V& cdf, V& y) {
  const V t = hn::Min(hn::Abs(x), hn::Set(d, kCdfClamp));
  // the centre
  const V x2 = hn::Mul(x, x);
  V c = hn::Set(d, kCdfC[5]);
  for (int i = 4; i >= 0; --i) c = hn::MulAdd(c, x2, hn::Set(d, kCdfC[i]));
  const V cdf_centre = hn::MulAdd(x, c, hn::Set(d, 0.5f));
  // the tails
  const auto near = hn::Lt(t, hn::Set(d, kCdfSplit));
  const V u = hn::IfThenElse(near, hn::Sub(t, hn::Set(d, kCdfMid)), hn::Div(hn::Set(d, 1.0f), t));
  V q = hn::IfThenElse(near, hn::Set(d, kCdfA[9]), hn::Set(d, kCdfB[9]));
  for (int i = 8; i >= 0; --i) q = hn::MulAdd(q, u, hn::IfThenElse(near, hn::Set(d, kCdfA[i]), hn::Set(d, kCdfB[i])));
  q = hn::IfThenElse(near, q, hn::Mul(q, u));  // Q(t)
  const V e = gauss_f32(d, t, false);
  const V lower = hn::Mul(q, e);  // Phi(-t)
  const auto neg = hn::Lt(x, hn::Zero(d));
  const auto centre = hn::Lt(t, hn::Set(d, kCdfCentral));
  cdf = hn::IfThenElse(centre, cdf_centre, hn::IfThenElse(neg, lower, hn::Sub(hn::Set(d, 1.0f), lower)));
  // x Phi(x) for x << 0 as (x Q) e: Phi(x) may be subnormal, and x times its rounding
  // would cost up to |x| ulp.
  y = hn::IfThenElse(hn::AndNot(centre, neg), hn::Mul(hn::Mul(x, q), e), hn::Mul(x, cdf));
}

// float32 gelu (erf): y = x Phi(x), keeping Phi(x) for the backward when `cdf` is given,
// which then needs only phi(x) = exp(-x^2 / 2) / sqrt(2 pi), in float32 lanes:
//   dx = dy (Phi(x) + x phi(x))
// x, y, cdf, dy, dx: (n) contiguous. The tails are padded into one vector (x = 0).
// NOTE: phi's exponent x^2/2 is split exactly (gauss_f32); x phi(x) below 2^-126 |x| is
// flushed to 0, and at x = +-inf, x * exp(-inf) = NaN, as PyTorch.
// Targets without FMA (portable scalar builds) compute Phi on float64 lanes (GeluErfOp).
template <class Body> void gelu_f32_vectors(int64_t n, Body&& body) {
  constexpr int64_t kChunk = 64;
  parallel_for((n + kChunk - 1) / kChunk, kChunk * 2 * kTranscendentalCost, [&](int64_t b, int64_t e) {
    const hn::ScalableTag<float> d;
    const int64_t N = static_cast<int64_t>(hn::Lanes(d)), hi = std::min(n, e * kChunk);
    int64_t i = b * kChunk;
    for (; i + N <= hi; i += N) body(d, i, N);
    if (i < hi) body(d, i, hi - i);
  });
}

void gelu_erf_forward_f32(float* y, float* cdf, const float* x, int64_t n) {
  gelu_f32_vectors(n, [&](auto d, int64_t i, int64_t m) {
    const auto v = simd::LoadFirstN(d, x + i, static_cast<size_t>(m));  // zeros past m
#if HWY_NATIVE_FMA
    hn::Vec<decltype(d)> c, out;
    normal_cdf_f32(d, v, c, out);
#else
    const auto c = GeluErfOp::widened(d, v, [](auto dd, auto xd) { return GeluErfOp::cdf_f64(dd, xd); });
    // x Phi(x) in float64 too: Phi rounded to float32 first loses up to half of a subnormal
    // step (2^-150) where Phi < 2^-126, which |x| then magnifies (7 ULP at x = -13.6). Only
    // for finite x: DemoteTo saturates, so x = +-inf keeps x Phi(x) in float32 (inf, NaN).
    const auto x_cdf =
        GeluErfOp::widened(d, v, [](auto dd, auto xd) { return hn::Mul(xd, GeluErfOp::cdf_f64(dd, xd)); });
    const auto out = hn::IfThenElse(hn::IsFinite(v), x_cdf, hn::Mul(v, c));
#endif
    simd::StoreFirstN(out, d, y + i, static_cast<size_t>(m));
    if (cdf) simd::StoreFirstN(c, d, cdf + i, static_cast<size_t>(m));
  });
}

void gelu_erf_backward_f32(float* dx, const float* dy, const float* x, const float* cdf, int64_t n) {
  gelu_f32_vectors(n, [&](auto d, int64_t i, int64_t m) {
    const size_t k = static_cast<size_t>(m);
    const auto v = simd::LoadFirstN(d, x + i, k);
    const auto t = hn::Min(hn::Abs(v), hn::Set(d, kCdfClamp));  // x^2 would overflow past 1.8e19
    const auto phi = hn::Mul(hn::Set(d, 0.39894228040143267794f), gauss_f32(d, t, true));
    const auto grad = hn::MulAdd(v, phi, simd::LoadFirstN(d, cdf + i, k));
    simd::StoreFirstN(hn::Mul(simd::LoadFirstN(d, dy + i, k), grad), d, dx + i, k);
  });
}

// ---- generic op wrappers ----

// out = f(a, b) with broadcasting, same dtype in and out.
template <typename F> Tensor binary_arith(const char* op, const Tensor& a, const Tensor& b, bool int_ok, F f) {
  const Shape shape = check_binary(op, a, b, int_ok);
  auto run = [&]<typename T>() { return binary_map<T, T, T>(a, b, shape, a.dtype(), f); };
  return int_ok ? visit_numeric(a.dtype(), run) : visit_floating(a.dtype(), run);
}

// out = f(x), same dtype, any layout.
template <typename F> Tensor unary_arith(const char* op, const Tensor& x, bool int_ok, F f) {
  if (int_ok)
    check_numeric(op, x);
  else
    check_floating(op, x);
  auto run = [&]<typename T>() { return unary_map<T, T>(x, x.dtype(), f); };
  return int_ok ? visit_numeric(x.dtype(), run) : visit_floating(x.dtype(), run);
}

template <typename F> Tensor compare(const char* op, const Tensor& a, const Tensor& b, F f) {
  check_defined(op, a, "first operand");
  check_defined(op, b, "second operand");
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  check_same_dtype(op, a, b);
  return visit_dtype(a.dtype(), [&]<typename T>() {
    if constexpr (std::is_same_v<T, bfloat16>)  // compared as float: exact
      return binary_map<bool, T, T>(a, b, shape, kBool,
                                    [f](T x, T y) { return f(static_cast<float>(x), static_cast<float>(y)); });
    else
      return binary_map<bool, T, T>(a, b, shape, kBool, f);
  });
}

// Gradient of a broadcast input: only computed when that input asked for one.
Tensor reduce_grad(bool needed, const Tensor& g, const Shape& shape) { return needed ? sum_to(g, shape) : Tensor(); }

void check_inplace(const char* op, const Tensor& self) {
  check_defined(op, self, "tensor written in place");
  // NOTE: an expanded view (stride 0 over a dim of size > 1) holds one element in many
  // places; writing to it in place would apply the update several times (and race).
  for (int64_t d = 0; d < self.dim() && self.numel() > 0; ++d)
    SG_CHECK(self.strides()[d] != 0 || self.shape()[d] <= 1,
             "{}: cannot write in place into a tensor of shape {} with strides {}: several of its elements share "
             "one memory location (an expanded view); clone() it first",
             op, self.shape(), self.strides());
  SG_CHECK(!(GradMode::is_enabled() && self.requires_grad()),
           "{}: a tensor of shape {} that requires grad cannot be modified in place while grad mode is on "
           "(wrap the update in sg::NoGradGuard, or use detach())",
           op, self.shape());
}

void bump_version(const Tensor& t) { ++t.impl()->storage->version; }

}  // namespace

// ============================================================================================
// Binary arithmetic
// ============================================================================================

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_arith("add", a, b, true, [](auto x, auto y) { return wrapping_add(x, y); });
  record("add", {a, b}, out,
         [sa = a.shape(), sb = b.shape(), ga = a.requires_grad(), gb = b.requires_grad()](const Tensor& dy) {
           return grads(reduce_grad(ga, dy, sa), reduce_grad(gb, dy, sb));
         });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_arith("sub", a, b, true, [](auto x, auto y) { return wrapping_sub(x, y); });
  record("sub", {a, b}, out,
         [sa = a.shape(), sb = b.shape(), ga = a.requires_grad(), gb = b.requires_grad()](const Tensor& dy) {
           return grads(reduce_grad(ga, dy, sa), gb ? sum_to(neg(dy), sb) : Tensor());
         });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_arith("mul", a, b, true, [](auto x, auto y) { return wrapping_mul(x, y); });
  record("mul", {a, b}, out,
         [as = SavedTensor(a), bs = SavedTensor(b), ga = a.requires_grad(), gb = b.requires_grad()](const Tensor& dy) {
           const Tensor av = as.get(), bv = bs.get();
           return grads(ga ? sum_to(mul(dy, bv), av.shape()) : Tensor(),
                        gb ? sum_to(mul(dy, av), bv.shape()) : Tensor());
         });
  return out;
}

// da = dy / b;  db = -dy a / b^2 = -da a / b
Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_arith("div", a, b, false, [](auto x, auto y) { return x / y; });
  record("div", {a, b}, out,
         [as = SavedTensor(a), bs = SavedTensor(b), ga = a.requires_grad(), gb = b.requires_grad()](const Tensor& dy) {
           const Tensor av = as.get(), bv = bs.get();
           const Tensor da = div(dy, bv);
           return grads(ga ? sum_to(da, av.shape()) : Tensor(),
                        gb ? sum_to(neg(div(mul(da, av), bv)), bv.shape()) : Tensor());
         });
  return out;
}

// y = a^b;  da = dy b a^(b-1), 0 where b == 0;  db = dy y log(a), 0 where a == 0 and b >= 0
// (both masks as PyTorch: a^0 is constant 1, so 0 * 0^-1 = NaN must not leak out).
Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor out = binary_arith("pow", a, b, false, [](auto x, auto y) { return std::pow(x, y); });
  record("pow", {a, b}, out,
         [as = SavedTensor(a), bs = SavedTensor(b), ys = SavedTensor(out), ga = a.requires_grad(),
          gb = b.requires_grad()](const Tensor& dy) {
           const Tensor av = as.get(), bv = bs.get();
           Tensor da, db;
           const Tensor zero = scalar_tensor(0.0, av.dtype());
           if (ga) {
             const Tensor dpow = mul(mul(dy, bv), pow(av, sub(bv, scalar_tensor(1.0, bv.dtype()))));
             da = sum_to(masked_fill(dpow, eq(bv, zero), 0.0), av.shape());
           }
           if (gb) {
             const Tensor at_zero = where(eq(av, zero), ge(bv, zero), scalar_tensor(0.0, kBool));
             db = sum_to(masked_fill(mul(mul(dy, ys.get()), log(av)), at_zero, 0.0), bv.shape());
           }
           return grads(da, db);
         });
  return out;
}

namespace {
template <typename T> Tensor pow_scalar_forward(const Tensor& x, double e) {
  const Dtype dt = x.dtype();
  if (e == 0.0) return unary_map<T, T>(x, dt, [](T) { return T(1); });
  if (e == 1.0) return unary_map<T, T>(x, dt, [](T v) { return v; });
  if (e == 2.0) return unary_map<T, T>(x, dt, [](T v) { return v * v; });
  if (e == -1.0) return unary_map<T, T>(x, dt, [](T v) { return T(1) / v; });
  const T te = static_cast<T>(e);
  return unary_map<T, T>(x, dt, [te](T v) { return std::pow(v, te); });
}
}  // namespace

// dx = dy e x^(e-1)  (zero for e == 0, as PyTorch)
Tensor pow(const Tensor& a, double exponent) {
  check_floating("pow", a);
  Tensor out = visit_floating(a.dtype(), [&]<typename T>() { return pow_scalar_forward<T>(a, exponent); });
  record("pow", {a}, out, [as = SavedTensor(a), e = exponent](const Tensor& dy) {
    const Tensor av = as.get();
    if (e == 0.0) return grads(zeros_like(dy));
    return grads(grad_map(dy, av, [e](auto g, auto v) {
      using T = decltype(v);
      return g * static_cast<T>(e) * (e == 2.0 ? v : std::pow(v, static_cast<T>(e - 1.0)));
    }));
  });
  return out;
}

// ============================================================================================
// Unary ops
// ============================================================================================

Tensor neg(const Tensor& x) {
  Tensor out = unary_arith("neg", x, true, [](auto v) { return wrapping_sub(decltype(v)(0), v); });
  record("neg", {x}, out, [](const Tensor& dy) { return grads(neg(dy)); });
  return out;
}

// dx = dy y
Tensor exp(const Tensor& x) {
  Tensor out = hwy_unary<ExpOp>("exp", x, kTranscendentalCost);
  record("exp", {x}, out, [ys = SavedTensor(out)](const Tensor& dy) { return grads(mul(dy, ys.get())); });
  return out;
}

// dx = dy / x
Tensor log(const Tensor& x) {
  Tensor out = hwy_unary<LogOp>("log", x, kTranscendentalCost);
  record("log", {x}, out, [xs = SavedTensor(x)](const Tensor& dy) { return grads(div(dy, xs.get())); });
  return out;
}

// dx = dy / (2 y)
Tensor sqrt(const Tensor& x) {
  Tensor out = hwy_unary<SqrtOp>("sqrt", x, 1);
  record("sqrt", {x}, out, [ys = SavedTensor(out)](const Tensor& dy) {
    return grads(grad_map(dy, ys.get(), [](auto g, auto y) { return g / (y + y); }));
  });
  return out;
}

// dx = dy sign(x), 0 at 0
Tensor abs(const Tensor& x) {
  Tensor out = unary_arith("abs", x, true, [](auto v) { return v < 0 ? wrapping_sub(decltype(v)(0), v) : v; });
  record("abs", {x}, out, [xs = SavedTensor(x)](const Tensor& dy) {
    return grads(grad_map(dy, xs.get(), [](auto g, auto v) {
      using T = decltype(v);
      return v > T(0) ? g : (v < T(0) ? -g : T(0));
    }));
  });
  return out;
}

// NOTE: written as x < 0 ? 0 : x so that NaN propagates (as PyTorch); gradient mask x > 0.
Tensor relu(const Tensor& x) {
  Tensor out = unary_arith("relu", x, true, [](auto v) { return v < 0 ? decltype(v)(0) : v; });
  record("relu", {x}, out, [xs = SavedTensor(x)](const Tensor& dy) {
    return grads(grad_map(dy, xs.get(), [](auto g, auto v) { return v > decltype(v)(0) ? g : decltype(v)(0); }));
  });
  return out;
}

// dx = dy (1 - y^2)
Tensor tanh(const Tensor& x) {
  Tensor out = hwy_unary<TanhOp>("tanh", x, kTranscendentalCost);
  record("tanh", {x}, out, [ys = SavedTensor(out)](const Tensor& dy) {
    return grads(grad_map(dy, ys.get(), [](auto g, auto y) { return g * (decltype(y)(1) - y * y); }));
  });
  return out;
}

// dx = dy y (1 - y)
Tensor sigmoid(const Tensor& x) {
  Tensor out = hwy_unary<SigmoidOp>("sigmoid", x, kTranscendentalCost);
  record("sigmoid", {x}, out, [ys = SavedTensor(out)](const Tensor& dy) {
    return grads(grad_map(dy, ys.get(), [](auto g, auto y) { return g * y * (decltype(y)(1) - y); }));
  });
  return out;
}

// PyTorch's GeluBackward:
//   erf:  dx = dy (Phi(x) + x phi(x)),  Phi(x) = 0.5 (1 + erf(x/sqrt2)), phi(x) = exp(-x^2/2)/sqrt(2 pi)
//   tanh: u = beta (x + kappa x^3), t = tanh(u);
//         dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) beta (1 + 3 kappa x^2))
namespace {
// The float32 erf form: forward and backward on Highway kernels, Phi(x) saved beside x.
Tensor gelu_erf_f32(const Tensor& x) {
  const Tensor xc = x.is_contiguous() ? x : make_contiguous_copy(x);
  const int64_t n = xc.numel();
  Tensor out = empty(x.shape(), kFloat32);
  const bool need_grad = any_requires_grad({x});
  Tensor cdf = need_grad ? empty(x.shape(), kFloat32) : Tensor();
  if (n > 0) gelu_erf_forward_f32(out.data_ptr<float>(), need_grad ? cdf.data_ptr<float>() : nullptr,
                                  xc.data_ptr<float>(), n);
  if (need_grad) {
    record("gelu", {x}, out, [xs = SavedTensor(xc), cdf](const Tensor& dy) {
      const Tensor dyc = dy.is_contiguous() ? dy : make_contiguous_copy(dy);
      Tensor dx = empty(dy.shape(), kFloat32);
      if (dx.numel() > 0)
        gelu_erf_backward_f32(dx.data_ptr<float>(), dyc.data_ptr<float>(), xs.get().data_ptr<float>(),
                              cdf.data_ptr<float>(), dx.numel());
      return grads(dx);
    });
  }
  return out;
}
}  // namespace

Tensor gelu(const Tensor& x, GeluApprox approximate) {
  const bool tanh_form = approximate == GeluApprox::Tanh;
  check_floating("gelu", x);
  if (!tanh_form && x.dtype() == kFloat32) return gelu_erf_f32(x);
  Tensor out = tanh_form ? hwy_unary<GeluTanhOp>("gelu", x, kTranscendentalCost)
                         : hwy_unary<GeluErfOp>("gelu", x, 2 * kTranscendentalCost);
  record("gelu", {x}, out, [xs = SavedTensor(x), tanh_form](const Tensor& dy) {
    if (tanh_form) {
      // With s = sigmoid(2u): 0.5 (1 + t) = s and 1 - t^2 = 4 s (1 - s), each side computed
      // from e = exp(-|2u|) without cancellation.
      return grads(grad_map(dy, xs.get(), [](auto g, auto v) {
        using T = decltype(v);
        const T x2 = v * v;
        const T z = T(2 * kGeluBeta) * (v + T(kGeluKappa) * x2 * v);
        const T e = std::exp(-std::abs(z));
        const T r = T(1) / (T(1) + e);
        const T s = z >= T(0) ? r : e * r, one_minus_s = z >= T(0) ? e * r : r;
        return g * (s + T(2) * v * s * one_minus_s * T(kGeluBeta) * (T(1) + T(3 * kGeluKappa) * x2));
      }));
    }
    return grads(grad_map(dy, xs.get(), [](auto g, auto v) {
      using T = decltype(v);
      constexpr T kInvSqrt2Pi = T(0.39894228040143267794);
      const T cdf = T(0.5) * std::erfc(-v * T(kSqrtHalf));
      const T pdf = kInvSqrt2Pi * std::exp(T(-0.5) * v * v);
      return g * (cdf + v * pdf);
    }));
  });
  return out;
}

// y = min(max(x, lo), hi) written so that NaN propagates; dx = dy where lo <= x <= hi.
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
  check_numeric("clamp", x);
  SG_CHECK(min.has_value() || max.has_value(), "clamp: at least one of min and max must be given (shape {})",
           x.shape());
  const double lo = min.value_or(-std::numeric_limits<double>::infinity());
  const double hi = max.value_or(std::numeric_limits<double>::infinity());
  Tensor out = visit_numeric(x.dtype(), [&]<typename T>() {
    T tlo, thi;
    if constexpr (std::is_integral_v<T>) {  // saturate the bounds into int64's range
      tlo = lo <= -9.2e18 ? std::numeric_limits<T>::min() : static_cast<T>(std::ceil(lo));
      thi = hi >= 9.2e18 ? std::numeric_limits<T>::max() : static_cast<T>(std::floor(hi));
    } else {
      tlo = static_cast<T>(lo);
      thi = static_cast<T>(hi);
    }
    return unary_map<T, T>(x, x.dtype(), [tlo, thi](T v) {
      const T y = v < tlo ? tlo : v;
      return y > thi ? thi : y;
    });
  });
  record("clamp", {x}, out, [xs = SavedTensor(x), lo, hi](const Tensor& dy) {
    return grads(grad_map(dy, xs.get(), [lo, hi](auto g, auto v) {
      using T = decltype(v);
      return (v >= static_cast<T>(lo) && v <= static_cast<T>(hi)) ? g : T(0);
    }));
  });
  return out;
}

// ============================================================================================
// Comparisons, where, masked_fill
// ============================================================================================

Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", a, b, [](auto x, auto y) { return x == y; }); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", a, b, [](auto x, auto y) { return x != y; }); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", a, b, [](auto x, auto y) { return x < y; }); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", a, b, [](auto x, auto y) { return x <= y; }); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", a, b, [](auto x, auto y) { return x > y; }); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", a, b, [](auto x, auto y) { return x >= y; }); }

namespace {
template <typename F> Tensor classify(const char* op, const Tensor& x, F f) {
  check_defined(op, x);
  return visit_dtype(x.dtype(), [&]<typename T>() {
    return unary_map<bool, T>(x, kBool, [f](T v) {
      if constexpr (std::is_floating_point_v<T>) return f(v);
      else if constexpr (std::is_same_v<T, bfloat16>) return f(static_cast<float>(v));
      else return f(0.0);  // integers and bools: finite, not NaN, not infinite
    });
  });
}
}  // namespace

Tensor isfinite(const Tensor& x) { return classify("isfinite", x, [](auto v) { return std::isfinite(v); }); }
Tensor isnan(const Tensor& x) { return classify("isnan", x, [](auto v) { return std::isnan(v); }); }
Tensor isinf(const Tensor& x) { return classify("isinf", x, [](auto v) { return std::isinf(v); }); }

// da = sum_to(cond ? dy : 0, a.shape);  db = sum_to(cond ? 0 : dy, b.shape)
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined("where", cond, "condition");
  check_defined("where", a, "first operand");
  check_defined("where", b, "second operand");
  SG_CHECK(cond.dtype() == kBool, "where: cond must be bool, got {} of shape {}", cond.dtype(), cond.shape());
  const Shape shape = broadcast_shapes(cond.shape(), broadcast_shapes(a.shape(), b.shape(), "where"), "where");
  check_same_dtype("where", a, b);
  Tensor out = empty(shape, a.dtype());
  if (out.numel() > 0) {
    const auto L = coalesce<4>(shape, {out.strides(), broadcast_strides(cond, shape), broadcast_strides(a, shape),
                                       broadcast_strides(b, shape)});
    visit_dtype(a.dtype(), [&]<typename T>() {
      where_kernel(out.data_ptr<T>(), cond.data_ptr<bool>(), static_cast<const T*>(a.raw_data()),
                   static_cast<const T*>(b.raw_data()), L);
    });
  }
  record("where", {a, b}, out,
         [cs = SavedTensor(cond), sa = a.shape(), sb = b.shape(), ga = a.requires_grad(),
          gb = b.requires_grad()](const Tensor& dy) {
           const Tensor c = cs.get();
           return grads(ga ? sum_to(grad_select<true>(dy, c), sa) : Tensor(),
                        gb ? sum_to(grad_select<false>(dy, c), sb) : Tensor());
         });
  return out;
}

// dx = mask ? 0 : dy
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_defined("masked_fill", x);
  check_defined("masked_fill", mask, "mask");
  SG_CHECK(mask.dtype() == kBool, "masked_fill: mask must be bool, got {} of shape {}", mask.dtype(), mask.shape());
  SG_CHECK(broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape(),
           "masked_fill: mask of shape {} cannot be broadcast to x of shape {}", mask.shape(), x.shape());
  Tensor out = visit_dtype(x.dtype(), [&]<typename T>() {
    const T v = cast_value<T>(value, "masked_fill");
    return binary_map<T, T, bool>(x, mask, x.shape(), x.dtype(), [v](T xv, bool m) { return m ? v : xv; });
  });
  record("masked_fill", {x}, out,
         [ms = SavedTensor(mask)](const Tensor& dy) { return grads(grad_select<false>(dy, ms.get())); });
  return out;
}

// ============================================================================================
// In-place updates
// ============================================================================================

Tensor& add_(Tensor& self, const Tensor& other, double alpha) {
  check_inplace("add_", self);
  check_defined("add_", other, "tensor added");
  check_numeric("add_", self);
  check_same_dtype("add_", self, other);
  SG_CHECK(is_floating(self.dtype()) || alpha == std::trunc(alpha),
           "add_: alpha {} is not an integer but self of shape {} is {}", alpha, self.shape(), self.dtype());
  SG_CHECK(broadcast_shapes(self.shape(), other.shape(), "add_") == self.shape(),
           "add_: other of shape {} cannot be broadcast to self of shape {}", other.shape(), self.shape());
  if (self.numel() == 0) return self;
  // NOTE: other may share memory with self (x += x.t()): read it from a copy then.
  const Tensor src = other.impl()->storage == self.impl()->storage ? make_contiguous_copy(other) : other;
  const auto L = coalesce<2>(self.shape(), {self.strides(), broadcast_strides(src, self.shape())});
  visit_numeric(self.dtype(), [&]<typename T>() {
    T* s = self.data_ptr<T>();
    const T* o = src.data_ptr<T>();
    if (alpha == 1.0) {
      inplace_binary_kernel(s, o, L, [](T x, T y) { return wrapping_add(x, y); });
    } else {
      const T al = cast_value<T>(alpha, "add_");
      inplace_binary_kernel(s, o, L, [al](T x, T y) { return wrapping_add(x, wrapping_mul(al, y)); });
    }
  });
  bump_version(self);
  return self;
}

Tensor& mul_(Tensor& self, double factor) {
  check_inplace("mul_", self);
  check_numeric("mul_", self);
  SG_CHECK(is_floating(self.dtype()) || factor == std::trunc(factor),
           "mul_: factor {} is not an integer but self of shape {} is {}", factor, self.shape(), self.dtype());
  if (self.numel() > 0) {
    const auto L = coalesce<1>(self.shape(), {self.strides()});
    visit_numeric(self.dtype(), [&]<typename T>() {
      const T f = cast_value<T>(factor, "mul_");
      inplace_unary_kernel(self.data_ptr<T>(), L, [f](T x) { return wrapping_mul(x, f); });
    });
  }
  bump_version(self);
  return self;
}

Tensor& fill_(Tensor& self, double value) {
  check_inplace("fill_", self);
  if (self.numel() > 0) {
    const auto L = coalesce<1>(self.shape(), {self.strides()});
    visit_dtype(self.dtype(), [&]<typename T>() {
      const T v = cast_value<T>(value, "fill_");
      inplace_unary_kernel(self.data_ptr<T>(), L, [v](T) { return v; });
    });
  }
  bump_version(self);
  return self;
}

Tensor& zero_(Tensor& self) {
  check_inplace("zero_", self);
  return fill_(self, 0.0);
}

Tensor& copy_(Tensor& self, const Tensor& src) {
  check_inplace("copy_", self);
  check_defined("copy_", src, "source");
  SG_CHECK(broadcast_shapes(self.shape(), src.shape(), "copy_") == self.shape(),
           "copy_: source of shape {} cannot be broadcast to self of shape {}", src.shape(), self.shape());
  if (self.numel() > 0) {
    const Tensor from = src.impl()->storage == self.impl()->storage ? make_contiguous_copy(src) : src;
    copy_kernel(self, expand(from.detach(), self.shape()));
  }
  bump_version(self);
  return self;
}

// ============================================================================================
// Operators
// ============================================================================================

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
namespace {
// A C++ scalar as a 0-d tensor of x's dtype. NOTE: an integer tensor with a fractional
// scalar would silently truncate it (x * 0.5 == 0): that is an error instead.
Tensor scalar_like(const char* op, const Tensor& x, double value) {
  check_defined(op, x, "tensor operand");
  refuse_bfloat16(op, x.dtype());
  SG_CHECK(is_floating(x.dtype()) || value == std::trunc(value),
           "{}: scalar {} is not an integer but the tensor of shape {} is {} (convert with to(kFloat32))", op, value,
           x.shape(), x.dtype());
  return scalar_tensor(value, x.dtype());
}
}  // namespace

Tensor operator+(const Tensor& a, double b) { return add(a, scalar_like("add", a, b)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_like("sub", a, b)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_like("mul", a, b)); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_like("div", a, b)); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_like("add", b, a), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_like("sub", b, a), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_like("mul", b, a), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like("div", b, a), b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor operator<(const Tensor& a, double b) { return lt(a, scalar_like("lt", a, b)); }
Tensor operator<=(const Tensor& a, double b) { return le(a, scalar_like("le", a, b)); }
Tensor operator>(const Tensor& a, double b) { return gt(a, scalar_like("gt", a, b)); }
Tensor operator>=(const Tensor& a, double b) { return ge(a, scalar_like("ge", a, b)); }

// ---- Tensor's method forms ----
Tensor Tensor::exp() const { return sg::exp(*this); }
Tensor Tensor::log() const { return sg::log(*this); }
Tensor Tensor::sqrt() const { return sg::sqrt(*this); }
Tensor Tensor::abs() const { return sg::abs(*this); }
Tensor Tensor::neg() const { return sg::neg(*this); }
Tensor Tensor::relu() const { return sg::relu(*this); }
Tensor Tensor::tanh() const { return sg::tanh(*this); }
Tensor Tensor::sigmoid() const { return sg::sigmoid(*this); }
Tensor Tensor::gelu() const { return sg::gelu(*this); }
Tensor Tensor::pow(double exponent) const { return sg::pow(*this, exponent); }
Tensor Tensor::clamp(std::optional<double> min, std::optional<double> max) const { return sg::clamp(*this, min, max); }
Tensor Tensor::masked_fill(const Tensor& mask, double value) const { return sg::masked_fill(*this, mask, value); }
Tensor Tensor::add(const Tensor& other) const { return sg::add(*this, other); }
Tensor Tensor::sub(const Tensor& other) const { return sg::sub(*this, other); }
Tensor Tensor::mul(const Tensor& other) const { return sg::mul(*this, other); }
Tensor Tensor::div(const Tensor& other) const { return sg::div(*this, other); }
Tensor Tensor::eq(const Tensor& other) const { return sg::eq(*this, other); }
Tensor Tensor::isfinite() const { return sg::isfinite(*this); }

}  // namespace sg
