// dropout: the kernel (a counter-based keep mask applied in one pass), then the op and its
// backward node side by side. Semantics in ops/dropout.h.
#include "ops/dropout.h"

#include "core/autograd.h"
#include "core/error.h"
#include "core/strided.h"
#include "ops/attention_kernels.h"

namespace sg {

// ---- kernel ------------------------------------------------------------------------------

namespace kernels {

// y[i] for i in [begin, end).
// NOTE: a plain loop on purpose: GCC vectorizes dropout_keep's 64-bit hash (vpmullq with
// AVX-512) and the multiply, 8 decisions per instruction, with no branch (it needs the
// restrict pointers for that). x is multiplied by 0 or scale (not selected), so a dropped
// NaN or inf stays NaN, as in PyTorch's x * mask.
template <typename T>
void dropout_range(const T* __restrict x, T* __restrict y, int64_t begin, int64_t end, uint64_t seed,
                   uint32_t threshold, T scale) {
  for (int64_t i = begin; i < end; ++i)
    y[i] = x[i] * (dropout_keep(seed, static_cast<uint64_t>(i), threshold) ? scale : T(0));
}

template <typename T> void dropout_apply(const T* x, T* y, int64_t n, uint64_t seed, uint32_t threshold, T scale) {
  // The hash costs a few multiplies per element: count an element as ~4 copied ones.
  parallel_for(n, 4, [&](int64_t begin, int64_t end) { dropout_range(x, y, begin, end, seed, threshold, scale); });
}

template void dropout_apply<float>(const float*, float*, int64_t, uint64_t, uint32_t, float);
template void dropout_apply<double>(const double*, double*, int64_t, uint64_t, uint32_t, double);

}  // namespace kernels

// ---- op ----------------------------------------------------------------------------------

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_defined("dropout", x);
  refuse_bfloat16("dropout", x.dtype());
  SG_CHECK(is_floating(x.dtype()), "dropout: expected a float32 or float64 input, got {} of shape {}", x.dtype(),
           x.shape());
  SG_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p must be in [0, 1], got {} (input shape {})", p, x.shape());
  if (!training || p == 0.0) return x;
  const uint32_t threshold = kernels::dropout_threshold(p);
  const double scale = kernels::dropout_keep_scale(threshold);
  const uint64_t seed = gen.next_u64();
  const Tensor xc = x.detach().contiguous();
  Tensor y = empty(x.shape(), x.dtype());
  visit_floating(x.dtype(), [&]<typename T>() {
    kernels::dropout_apply<T>(xc.data_ptr<T>(), y.data_ptr<T>(), y.numel(), seed, threshold, static_cast<T>(scale));
  });
  // dx = g * mask * scale: the same kernel on the gradient, the mask regenerated from the seed.
  record("dropout", {x}, y, [seed, threshold, scale](const Tensor& grad) {
    const Tensor g = grad.contiguous();
    Tensor dx = empty(g.shape(), g.dtype());
    visit_floating(g.dtype(), [&]<typename T>() {
      kernels::dropout_apply<T>(g.data_ptr<T>(), dx.data_ptr<T>(), dx.numel(), seed, threshold, static_cast<T>(scale));
    });
    return grads(dx);
  });
  return y;
}

}  // namespace sg
