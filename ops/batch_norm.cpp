// batch_norm: the op and its backward node; the kernels (statistics, normalization, the
// hand-derived backward) are in ops/batch_norm_kernels.{h,cpp}. Semantics in ops/batch_norm.h.
// x is viewed as (N, C, S) with S the trailing elements per channel and image; M = N S
// values per channel.
#include "ops/batch_norm.h"

#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "ops/batch_norm_kernels.h"

namespace sg {

namespace {

using kernels::BatchNormDims;

void check_channel_vector(const char* role, const Tensor& t, const Tensor& x, int64_t C) {
  if (!t.defined()) return;
  SG_CHECK(t.dtype() == x.dtype(), "batch_norm: {} is {}, the input {}", role, t.dtype(), x.dtype());
  SG_CHECK(t.dim() == 1 && t.size(0) == C, "batch_norm: {} must be ({}) for input {}, got {}", role, C, x.shape(),
           t.shape());
  SG_CHECK(t.is_contiguous(), "batch_norm: {} must be contiguous", role);
}

}  // namespace

Tensor batch_norm(const Tensor& x_in, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, const BatchNormOptions& o) {
  check_defined("batch_norm", x_in, "input");
  SG_CHECK(x_in.dtype() == kFloat32 || x_in.dtype() == kFloat64, "batch_norm: input is {}; float32 or float64 only",
           x_in.dtype());
  SG_CHECK(x_in.dim() >= 2, "batch_norm: input must be (N, C) or (N, C, ...), got {}", x_in.shape());
  SG_CHECK(std::isfinite(o.eps) && o.eps >= 0, "batch_norm: eps must be finite and >= 0, got {}", o.eps);
  SG_CHECK(std::isfinite(o.momentum), "batch_norm: momentum must be finite, got {}", o.momentum);
  const int64_t C = x_in.size(1);
  BatchNormDims s{x_in.size(0), C, 1};
  for (int64_t d = 2; d < x_in.dim(); ++d) s.S *= x_in.size(d);
  check_channel_vector("running_mean", running_mean, x_in, C);
  check_channel_vector("running_var", running_var, x_in, C);
  check_channel_vector("weight", weight, x_in, C);
  check_channel_vector("bias", bias, x_in, C);
  SG_CHECK(running_mean.defined() == running_var.defined(),
           "batch_norm: give both running_mean and running_var, or neither");
  SG_CHECK(o.training || running_mean.defined(), "batch_norm: eval mode needs running_mean and running_var");
  SG_CHECK(!o.training || s.M() > 1, "batch_norm: training needs more than 1 value per channel, got input {}",
           x_in.shape());
  SG_CHECK(!running_mean.defined() || (!running_mean.requires_grad() && !running_var.requires_grad()),
           "batch_norm: running statistics are buffers and must not require grad");

  const Tensor x = x_in.contiguous();
  std::vector<double> mean(static_cast<size_t>(C)), var(static_cast<size_t>(C));
  visit_floating(x.dtype(), [&]<typename T>() {
    if (o.training) {
      kernels::batch_norm_stats<T>(x.data_ptr<T>(), mean.data(), var.data(), s);
      if (running_mean.defined()) {  // in place, as PyTorch; the buffers hold no history
        T* rm = running_mean.data_ptr<T>();
        T* rv = running_var.data_ptr<T>();
        const double unbias = static_cast<double>(s.M()) / static_cast<double>(s.M() - 1);
        for (int64_t c = 0; c < C; ++c) {
          rm[c] = static_cast<T>((1 - o.momentum) * rm[c] + o.momentum * mean[static_cast<size_t>(c)]);
          rv[c] = static_cast<T>((1 - o.momentum) * rv[c] + o.momentum * var[static_cast<size_t>(c)] * unbias);
        }
        running_mean.impl()->storage->version++;
        running_var.impl()->storage->version++;
      }
    } else {
      const T* rm = running_mean.data_ptr<T>();
      const T* rv = running_var.data_ptr<T>();
      for (int64_t c = 0; c < C; ++c) {
        mean[static_cast<size_t>(c)] = rm[c];
        var[static_cast<size_t>(c)] = rv[c];
      }
    }
  });
  // Per channel: rstd = 1 / sqrt(var + eps); the kernel computes y = (x - mean) a + b, a = w rstd.
  std::vector<double> rstd(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) rstd[static_cast<size_t>(c)] = 1.0 / std::sqrt(var[static_cast<size_t>(c)] + o.eps);
  // x, y: (N, C, S)
  Tensor y = empty(x.shape(), x.dtype());
  visit_floating(x.dtype(), [&]<typename T>() {
    kernels::batch_norm_forward<T>(x.data_ptr<T>(), weight.defined() ? weight.data_ptr<T>() : nullptr,
                                   bias.defined() ? bias.data_ptr<T>() : nullptr, mean.data(), rstd.data(),
                                   y.data_ptr<T>(), s);
  });

  // dy: (N, C, S) -> dx (N, C, S), dweight and dbias (C)
  record("batch_norm", {x_in, weight, bias}, y,
         [s, xs = SavedTensor(x), ws = SavedTensor(weight), mean, rstd, training = o.training,
          need_x = x_in.requires_grad(), need_w = weight.defined() && weight.requires_grad(),
          need_b = bias.defined() && bias.requires_grad()](const Tensor& dy_in) {
           const Tensor dy = dy_in.contiguous(), x = xs.get(), w = ws.get();
           Tensor dx = need_x ? empty(x.shape(), x.dtype()) : Tensor();
           Tensor dw = need_w ? empty({s.C}, x.dtype()) : Tensor();
           Tensor db = need_b ? empty({s.C}, x.dtype()) : Tensor();
           visit_floating(x.dtype(), [&]<typename T>() {
             auto data = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
             kernels::batch_norm_backward<T>(x.data_ptr<T>(), data(w), mean.data(), rstd.data(), dy.data_ptr<T>(),
                                             data(dx), data(dw), data(db), s, training);
           });
           return grads(dx, dw, db);
         });
  return y;
}

}  // namespace sg
