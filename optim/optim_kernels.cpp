// The optimizers' fused update kernels (formulas in optim/optim_kernels.h).
//
// Each update streams its arrays once (SGD with momentum: read p, g, buf, write p, buf;
// Adam: read p, g, m, v, write p, m, v), so it runs at memory speed when the arrays are
// larger than the cache; the divisions and the square root cost less than the loads even
// one lane per cycle. A parameter of at least kParallelMin elements is split into one
// contiguous piece per thread (boundaries on cache lines); the vector loop is Highway's,
// with the tail through masked loads and stores.
#include "optim/optim_kernels.h"

#include <hwy/highway.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/simd_partial.h"

namespace sg::optim::kernels {
namespace hn = hwy::HWY_NAMESPACE;

namespace {

// Below this many elements one thread does the whole parameter: the fork and join of a
// parallel region (a few microseconds) would cost more than the second thread saves.
constexpr int64_t kParallelMin = int64_t{1} << 15;
constexpr int64_t kLineElems = 16;  // elements per piece boundary: a cache line of float32

template <typename T> using Tag = hn::ScalableTag<T>;

// fn(begin, count) over [0, n): one contiguous piece per thread for large n.
template <typename Fn> void parallel_pieces(int64_t n, Fn&& fn) {
  const int threads = n >= kParallelMin && !omp_in_parallel() ? omp_get_max_threads() : 1;
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t team = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t piece = ((n + team - 1) / team + kLineElems - 1) / kLineElems * kLineElems;
    const int64_t begin = std::min(n, t * piece), end = std::min(n, begin + piece);
    if (begin < end) fn(begin, end - begin);
  }
}

// Calls body.template operator()<kFull>(i, count) for each vector of [0, n): full vectors,
// then (kFull false) the tail of count < Lanes elements.
template <typename T, class Body> HWY_INLINE void for_each_vector(int64_t n, Body&& body) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(Tag<T>()));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) body.template operator()<true>(i, static_cast<size_t>(lanes));
  if (i < n) body.template operator()<false>(i, static_cast<size_t>(n - i));
}

template <bool kFull, class D, typename T> HWY_INLINE hn::Vec<D> load(D d, const T* p, size_t count) {
  if constexpr (kFull)
    return hn::LoadU(d, p);
  else
    return simd::LoadFirstN(d, p, count);
}

template <bool kFull, class D, typename T> HWY_INLINE void store(hn::Vec<D> v, D d, T* p, size_t count) {
  if constexpr (kFull)
    hn::StoreU(v, d, p);
  else
    simd::StoreFirstN(v, d, p, count);
}

// torch.maximum: NaN when either is NaN (x86's max instruction would return the second).
template <class D, class V> HWY_INLINE V max_propagating_nan(D, V a, V b) {
  return hn::IfThenElse(hn::IsNaN(a), a, hn::IfThenElse(hn::IsNaN(b), b, hn::Max(a, b)));
}

template <typename T> T max_propagating_nan(T a, T b) {
  return std::isnan(a) || std::isnan(b) ? a + b : std::max(a, b);
}

}  // namespace

// ---- SGD ------------------------------------------------------------------------------------

// p, g, buf: (n)
template <typename T> void sgd_step(T* p, const T* g, T* buf, int64_t n, const SGDStep& s) {
  const bool use_momentum = s.momentum != 0.0, use_wd = s.weight_decay != 0.0;
  parallel_pieces(n, [&](int64_t begin, int64_t count) HWY_ATTR {
    const Tag<T> d;
    const auto wd = hn::Set(d, T(s.weight_decay)), momentum = hn::Set(d, T(s.momentum));
    const auto one_minus_dampening = hn::Set(d, T(1.0 - s.dampening)), neg_lr = hn::Set(d, T(-s.lr));
    T* pp = p + begin;
    const T* gp = g + begin;
    T* bp = buf ? buf + begin : nullptr;
    for_each_vector<T>(count, [&]<bool kFull>(int64_t i, size_t lanes) HWY_ATTR {
      auto p_i = load<kFull>(d, pp + i, lanes);
      auto d_i = load<kFull>(d, gp + i, lanes);
      if (s.maximize) d_i = hn::Neg(d_i);
      if (use_wd) d_i = hn::MulAdd(wd, p_i, d_i);  // d.add(p, alpha=wd)
      if (use_momentum) {
        auto b_i =
            s.first ? d_i : hn::MulAdd(one_minus_dampening, d_i, hn::Mul(load<kFull>(d, bp + i, lanes), momentum));
        store<kFull>(b_i, d, bp + i, lanes);
        d_i = s.nesterov ? hn::MulAdd(momentum, b_i, d_i) : b_i;
      }
      p_i = hn::MulAdd(neg_lr, d_i, p_i);  // p.add_(d, alpha=-lr)
      store<kFull>(p_i, d, pp + i, lanes);
    });
  });
}

template <typename T> void sgd_step_naive(T* p, const T* g, T* buf, int64_t n, const SGDStep& s) {
  const T wd = T(s.weight_decay), momentum = T(s.momentum), one_minus_dampening = T(1.0 - s.dampening);
  const T neg_lr = T(-s.lr);
  for (int64_t i = 0; i < n; ++i) {
    T d = s.maximize ? -g[i] : g[i];
    if (s.weight_decay != 0.0) d = d + wd * p[i];
    if (s.momentum != 0.0) {
      buf[i] = s.first ? d : buf[i] * momentum + one_minus_dampening * d;
      d = s.nesterov ? d + momentum * buf[i] : buf[i];
    }
    p[i] = p[i] + neg_lr * d;
  }
}

// ---- Adam, AdamW ------------------------------------------------------------------------------

namespace {
// The scalars of one step, rounded to T as PyTorch rounds its Python floats.
template <typename T> struct AdamScalars {
  T decay, wd, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size;
  explicit AdamScalars(const AdamStep& s) {
    const double t = static_cast<double>(s.step);
    const double bias_correction1 = 1.0 - std::pow(s.beta1, t), bias_correction2 = 1.0 - std::pow(s.beta2, t);
    decay = T(1.0 - s.lr * s.weight_decay);
    wd = T(s.weight_decay);
    beta1 = T(s.beta1);
    one_minus_beta1 = T(1.0 - s.beta1);
    beta2 = T(s.beta2);
    one_minus_beta2 = T(1.0 - s.beta2);
    bias_correction2_sqrt = T(std::sqrt(bias_correction2));
    eps = T(s.eps);
    neg_step_size = T(-(s.lr / bias_correction1));
  }
};
}  // namespace

// p, g, m, v, vmax: (n)
template <typename T> void adam_step(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamStep& s) {
  const AdamScalars<T> c(s);
  const bool decay = s.decoupled && s.weight_decay != 0.0, l2 = !s.decoupled && s.weight_decay != 0.0;
  parallel_pieces(n, [&](int64_t begin, int64_t count) HWY_ATTR {
    const Tag<T> d;
    const auto decay_v = hn::Set(d, c.decay), wd = hn::Set(d, c.wd);
    const auto beta1 = hn::Set(d, c.beta1), one_minus_beta1 = hn::Set(d, c.one_minus_beta1);
    const auto beta2 = hn::Set(d, c.beta2), one_minus_beta2 = hn::Set(d, c.one_minus_beta2);
    const auto bias_correction2_sqrt = hn::Set(d, c.bias_correction2_sqrt), eps = hn::Set(d, c.eps);
    const auto neg_step_size = hn::Set(d, c.neg_step_size);
    T *pp = p + begin, *mp = m + begin, *vp = v + begin, *xp = vmax ? vmax + begin : nullptr;
    const T* gp = g + begin;
    for_each_vector<T>(count, [&]<bool kFull>(int64_t i, size_t lanes) HWY_ATTR {
      auto p_i = load<kFull>(d, pp + i, lanes);
      auto g_i = load<kFull>(d, gp + i, lanes);
      if (s.maximize) g_i = hn::Neg(g_i);
      if (decay) p_i = hn::Mul(p_i, decay_v);  // p.mul_(1 - lr * wd)
      if (l2) g_i = hn::MulAdd(wd, p_i, g_i);  // g.add(p, alpha=wd)
      // m.mul_(beta1).add_(g, alpha=1-beta1); v.mul_(beta2).addcmul_(g, g, value=1-beta2)
      const auto m_i = hn::MulAdd(one_minus_beta1, g_i, hn::Mul(load<kFull>(d, mp + i, lanes), beta1));
      auto v_i = hn::Add(hn::Mul(load<kFull>(d, vp + i, lanes), beta2), hn::Mul(hn::Mul(one_minus_beta2, g_i), g_i));
      store<kFull>(m_i, d, mp + i, lanes);
      store<kFull>(v_i, d, vp + i, lanes);
      if (s.amsgrad) {
        v_i = max_propagating_nan(d, load<kFull>(d, xp + i, lanes), v_i);
        store<kFull>(v_i, d, xp + i, lanes);
      }
      const auto denom = hn::Add(hn::Div(hn::Sqrt(v_i), bias_correction2_sqrt), eps);
      p_i = hn::Add(p_i, hn::Div(hn::Mul(neg_step_size, m_i), denom));  // p.addcdiv_(m, denom, value=-step_size)
      store<kFull>(p_i, d, pp + i, lanes);
    });
  });
}

template <typename T> void adam_step_naive(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamStep& s) {
  const AdamScalars<T> c(s);
  for (int64_t i = 0; i < n; ++i) {
    T grad = s.maximize ? -g[i] : g[i];
    if (s.weight_decay != 0.0) {
      if (s.decoupled)
        p[i] = p[i] * c.decay;
      else
        grad = grad + c.wd * p[i];
    }
    m[i] = m[i] * c.beta1 + c.one_minus_beta1 * grad;
    v[i] = v[i] * c.beta2 + c.one_minus_beta2 * grad * grad;
    T second = v[i];
    if (s.amsgrad) second = vmax[i] = max_propagating_nan(vmax[i], v[i]);
    const T denom = std::sqrt(second) / c.bias_correction2_sqrt + c.eps;
    p[i] = p[i] + c.neg_step_size * m[i] / denom;
  }
}

#define SG_INSTANTIATE_OPTIM_KERNELS(T)                                           \
  template void sgd_step<T>(T*, const T*, T*, int64_t, const SGDStep&);           \
  template void sgd_step_naive<T>(T*, const T*, T*, int64_t, const SGDStep&);     \
  template void adam_step<T>(T*, const T*, T*, T*, T*, int64_t, const AdamStep&); \
  template void adam_step_naive<T>(T*, const T*, T*, T*, T*, int64_t, const AdamStep&);
SG_INSTANTIATE_OPTIM_KERNELS(float)
SG_INSTANTIATE_OPTIM_KERNELS(double)
#undef SG_INSTANTIATE_OPTIM_KERNELS

}  // namespace sg::optim::kernels
