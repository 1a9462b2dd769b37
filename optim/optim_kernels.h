#pragma once
// The optimizers' update kernels, apart from the bookkeeping in optim/sgd.cpp and
// optim/adam.cpp. Each takes raw pointers to one parameter's contiguous data, its gradient
// and its state buffers (all n elements, none aliasing another) and updates them in one
// fused pass: no temporaries, SIMD through Highway, OpenMP over large parameters. The
// gradient is only read.
//
// Scalars follow PyTorch 1.13's single-tensor (foreach=False) path: the coefficients are
// computed in double and rounded to T once, and each line below is one PyTorch op on T
// (so float32 parameters see float32 rounding at the same places). The *_naive versions
// are the same formulas as plain scalar loops, kept for the tests.
#include <cstdint>

namespace sg::optim::kernels {

// torch.optim.SGD, one parameter:
//   d = maximize ? -g : g
//   d = d + weight_decay * p                          (if weight_decay != 0)
//   buf = first ? d : momentum * buf + (1 - dampening) * d   (if momentum != 0)
//   d = nesterov ? d + momentum * buf : buf           (if momentum != 0)
//   p = p - lr * d
struct SGDStep {
  double lr = 0.0, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false, maximize = false;
  bool first = false;  // the buffer is set to d (PyTorch's clone on the first step)
};
// buf may be null when momentum == 0.
template <typename T> void sgd_step(T* p, const T* g, T* buf, int64_t n, const SGDStep& s);
template <typename T> void sgd_step_naive(T* p, const T* g, T* buf, int64_t n, const SGDStep& s);

// torch.optim.Adam and AdamW, one parameter at step t (counted from 1):
//   g = maximize ? -g : g
//   p = p * (1 - lr * weight_decay)                   (AdamW: decoupled, if weight_decay != 0)
//   g = g + weight_decay * p                          (Adam: L2, if weight_decay != 0)
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   vmax = max(vmax, v); use vmax for v below        (amsgrad; NaN propagates as torch.maximum)
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps         (eps added after the bias correction)
//   p = p - (lr / (1 - beta1^t)) * m / denom
struct AdamStep {
  double lr = 0.0, beta1 = 0.0, beta2 = 0.0, eps = 0.0, weight_decay = 0.0;
  bool amsgrad = false, maximize = false;
  bool decoupled = false;  // AdamW
  int64_t step = 1;        // t, after the increment
};
// vmax may be null unless amsgrad.
template <typename T> void adam_step(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamStep& s);
template <typename T> void adam_step_naive(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamStep& s);

}  // namespace sg::optim::kernels
