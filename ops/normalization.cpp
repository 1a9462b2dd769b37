// layer_norm: input checks, the forward call and the backward node side by side. The
// kernels (and the formulas) are in ops/normalization_kernels.{h,cpp}.
#include "ops/normalization.h"

#include <cmath>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"
#include "ops/normalization_kernels.h"

namespace sg {
namespace {

constexpr const char* kOp = "layer_norm";

// The rows and columns the kernels see, after checking every argument.
kernels::LayerNormDims checked_dims(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                                    const Tensor& bias, double eps) {
  check_defined(kOp, x);
  refuse_bfloat16(kOp, x.dtype());
  SG_CHECK(is_floating(x.dtype()), "{}: expected a float32 or float64 input, got {} of shape {}", kOp, x.dtype(),
           x.shape());
  SG_CHECK(!normalized_shape.empty(), "{}: normalized_shape must have at least one dim, got [] (input shape {})", kOp,
           x.shape());
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  bool trailing = x.dim() >= k;
  for (int64_t d = 0; trailing && d < k; ++d) trailing = x.size(x.dim() - k + d) == normalized_shape[d];
  SG_CHECK(trailing, "{}: input of shape {} does not end with normalized_shape {}", kOp, x.shape(), normalized_shape);
  auto check_param = [&](const Tensor& p, const char* name) {
    if (!p.defined()) return;
    SG_CHECK(p.shape() == normalized_shape, "{}: {} of shape {} must have normalized_shape {} (input shape {})", kOp,
             name, p.shape(), normalized_shape, x.shape());
    SG_CHECK(p.dtype() == x.dtype(), "{}: {} is {} but the input is {} (shape {}); they must match", kOp, name,
             p.dtype(), x.dtype(), x.shape());
  };
  check_param(weight, "weight");
  check_param(bias, "bias");
  SG_CHECK(eps >= 0.0 && std::isfinite(eps), "{}: eps must be finite and >= 0, got {}", kOp, eps);
  kernels::LayerNormDims dims;
  dims.C = shape_numel(normalized_shape);
  dims.N = dims.C == 0 ? 0 : x.numel() / dims.C;
  if (dims.C == 0) {  // no elements in a row: count the rows from the leading dims
    dims.N = 1;
    for (int64_t d = 0; d < x.dim() - k; ++d) dims.N *= x.size(d);
  }
  return dims;
}

template <typename T> const T* data_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

}  // namespace

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  if (autocast_enabled()) {  // runs in float32: bfloat16 inputs are widened
    const Tensor xf = autocast::fp32_input(x), wf = autocast::fp32_input(weight), bf = autocast::fp32_input(bias);
    if (!xf.is_same(x) || !wf.is_same(weight) || !bf.is_same(bias)) {
      AutocastGuard off(kBFloat16, false);
      return layer_norm(xf, normalized_shape, wf, bf, eps);
    }
  }
  const kernels::LayerNormDims dims = checked_dims(x, normalized_shape, weight, bias, eps);
  // Detached first: a strided input's copy is the kernels' buffer, not a node of the graph.
  const Tensor xc = x.detach().contiguous();
  const Tensor wc = weight.defined() ? weight.detach().contiguous() : weight;
  const Tensor bc = bias.defined() ? bias.detach().contiguous() : bias;
  Tensor y = empty(x.shape(), x.dtype());
  Tensor mean = empty({dims.N}, x.dtype()), rstd = empty({dims.N}, x.dtype());  // (N)
  visit_floating(x.dtype(), [&]<typename T>() {
    kernels::layer_norm_forward<T>(xc.data_ptr<T>(), data_or_null<T>(wc), data_or_null<T>(bc), y.data_ptr<T>(),
                                   mean.data_ptr<T>(), rstd.data_ptr<T>(), dims, eps);
  });
  if (any_requires_grad({x, weight, bias})) {
    // Which gradients to form: a frozen weight or a constant input costs no pass.
    const bool need_dx = x.requires_grad(), need_dw = weight.defined() && weight.requires_grad();
    const bool need_db = bias.defined() && bias.requires_grad();
    record(kOp, {x, weight, bias}, y,
           [dims, need_dx, need_dw, need_db, param_shape = normalized_shape, xs = SavedTensor(xc), ws = SavedTensor(wc), ms = SavedTensor(mean),
            rs = SavedTensor(rstd)](const Tensor& grad) {
             const Tensor xv = xs.get(), wv = ws.get(), mv = ms.get(), rv = rs.get();
             const Tensor g = grad.contiguous();
             Tensor dx, dw, db;
             if (need_dx) dx = empty(xv.shape(), xv.dtype());
             if (need_dw) dw = empty(param_shape, xv.dtype());
             if (need_db) db = empty(param_shape, xv.dtype());
             visit_floating(xv.dtype(), [&]<typename T>() {
               kernels::layer_norm_backward<T>(xv.data_ptr<T>(), data_or_null<T>(wv), mv.data_ptr<T>(),
                                               rv.data_ptr<T>(), g.data_ptr<T>(), need_dx ? dx.data_ptr<T>() : nullptr,
                                               need_dw ? dw.data_ptr<T>() : nullptr,
                                               need_db ? db.data_ptr<T>() : nullptr, dims);
             });
             return grads(dx, dw, db);
           });
  }
  return y;
}

}  // namespace sg
