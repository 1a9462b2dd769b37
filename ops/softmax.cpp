// softmax and log_softmax: graph wiring. The kernels are in ops/softmax_kernels.cpp;
// cross_entropy and nll_loss are in ops/loss.cpp.
#include "ops/softmax.h"

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"
#include "ops/softmax_kernels.h"

namespace sg {
namespace {

enum class Which { kSoftmax, kLogSoftmax };

const char* op_name(Which w) { return w == Which::kSoftmax ? "softmax" : "log_softmax"; }

// x seen as (outer, C, inner) around the softmax dim. A 0-dim tensor is one row of one
// element (PyTorch allows dim 0 or -1 there and returns 1, or 0 for log_softmax).
kernels::RowsShape rows_around(const Shape& shape, int64_t dim) {
  kernels::RowsShape s;
  if (shape.empty()) return s;
  for (int64_t d = 0; d < dim; ++d) s.outer *= shape[d];
  s.C = shape[dim];
  for (size_t d = dim + 1; d < shape.size(); ++d) s.inner *= shape[d];
  return s;
}

int64_t checked_dim(Which w, const Tensor& x, int64_t dim) {
  const char* op = op_name(w);
  check_defined(op, x);
  refuse_bfloat16(op, x.dtype());
  SG_CHECK(is_floating(x.dtype()), "{}: expected a float32 or float64 tensor, got {} of shape {}", op, x.dtype(),
           x.shape());
  const int64_t ndim = x.dim();
  const int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  SG_CHECK(dim >= lo && dim <= hi, "{}: dim {} is out of range for a tensor of shape {} (expected a dim in [{}, {}])",
           op, dim, x.shape(), lo, hi);
  return dim < 0 ? dim + (ndim == 0 ? 1 : ndim) : dim;
}

Tensor softmax_family(Which w, const Tensor& x, int64_t dim) {
  const kernels::RowsShape rows = rows_around(x.shape(), checked_dim(w, x, dim));
  const Tensor xc = x.contiguous();
  Tensor y = empty(x.shape(), x.dtype());
  visit_floating(x.dtype(), [&]<typename T>() {
    if (w == Which::kSoftmax)
      kernels::softmax_forward<T>(xc.data_ptr<T>(), y.data_ptr<T>(), rows);
    else
      kernels::log_softmax_forward<T>(xc.data_ptr<T>(), y.data_ptr<T>(), rows);
  });
  if (any_requires_grad({x})) {
    // Both backward passes need only the output: softmax dx = s * (g - <s, g>),
    // log_softmax dx = g - exp(y) * sum(g). One fused pass per row, no temporaries.
    record(op_name(w), {x}, y, [w, rows, saved = SavedTensor(y)](const Tensor& grad) {
      const Tensor out = saved.get();
      const Tensor g = grad.contiguous();
      Tensor dx = empty(out.shape(), out.dtype());
      visit_floating(out.dtype(), [&]<typename T>() {
        if (w == Which::kSoftmax)
          kernels::softmax_backward<T>(out.data_ptr<T>(), g.data_ptr<T>(), dx.data_ptr<T>(), rows);
        else
          kernels::log_softmax_backward<T>(out.data_ptr<T>(), g.data_ptr<T>(), dx.data_ptr<T>(), rows);
      });
      return grads(dx);
    });
  }
  return y;
}

}  // namespace

// Under autocast a bfloat16 input is widened: softmax and log_softmax run in float32.
Tensor softmax(const Tensor& x, int64_t dim) { return softmax_family(Which::kSoftmax, autocast::fp32_input(x), dim); }
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_family(Which::kLogSoftmax, autocast::fp32_input(x), dim);
}

// ---- Tensor's method forms ----
Tensor Tensor::softmax(int64_t dim) const { return sg::softmax(*this, dim); }
Tensor Tensor::log_softmax(int64_t dim) const { return sg::log_softmax(*this, dim); }

}  // namespace sg
