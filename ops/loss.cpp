// cross_entropy and nll_loss: input checks, forward, and the backward node side by side.
// The kernels are in ops/loss_kernels.cpp; the semantics (PyTorch 1.13's F.cross_entropy
// and F.nll_loss, with softgrad's edge rules for rows without a finite softmax) are in
// ops/softmax.h. Dimension letters: N batch, C classes, D = d1*...*dk, R = N*D rows.
//
// cross_entropy is one node. Its forward keeps (max, sum) of each row's online normalizer
// (3 doubles per row, see kernels::kStatCols), never the probabilities; backward
// recomputes softmax while writing dlogits (ops/loss_kernels.h has the coefficients).
// The Mean denominators follow PyTorch 1.13 exactly (checked against torch 1.13):
//   index targets  nll and smoothing term both divide by W = sum of w[t] over the rows not
//                  ignored (the count of those rows without weights). NaN when W = 0.
//   prob targets   divide by R = N*d1*...*dk, weights or not.
// The class weights are a constant: a weight that requires grad is an error (PyTorch's
// nll_loss refuses one too).
// A probability target that requires grad gets one: dt = -g * scale * (1 - eps) * w * log p.
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"
#include "ops/loss_kernels.h"
#include "ops/shape.h"
#include "ops/softmax.h"

namespace sg {
namespace {

// The input seen as (N, C, D): (C) is one row (N = 1, D = 1), (N, C) has D = 1.
struct LossLayout {
  int64_t N = 1, C = 1, D = 1;
  Shape row_shape;  // the index target's shape, and the shape of reduction None's output
  int64_t rows() const { return N * D; }
  bool class_dim_last() const { return D == 1; }
};

LossLayout checked_layout(const char* op, const Tensor& x) {
  check_defined(op, x);
  refuse_bfloat16(op, x.dtype());
  SG_CHECK(is_floating(x.dtype()), "{}: expected a float32 or float64 input, got {} of shape {}", op, x.dtype(),
           x.shape());
  SG_CHECK(x.dim() >= 1,
           "{}: expected an input of shape (C), (N, C) or (N, C, d1, ..., dk), got a 0-dim tensor (shape {})", op,
           x.shape());
  LossLayout L;
  const Shape& s = x.shape();
  if (x.dim() == 1) {
    L.C = s[0];
  } else {
    L.N = s[0];
    L.C = s[1];
    L.row_shape.push_back(s[0]);
    for (size_t d = 2; d < s.size(); ++d) {
      L.D *= s[d];
      L.row_shape.push_back(s[d]);
    }
  }
  SG_CHECK(L.C > 0, "{}: the input of shape {} has no classes (class dim {} has size 0)", op, s, x.dim() == 1 ? 0 : 1);
  return L;
}

// The optional class weights: (C), the input's dtype. Returned contiguous.
Tensor checked_weight(const char* op, const Tensor& weight, const Tensor& x, const LossLayout& L) {
  if (!weight.defined()) return weight;
  SG_CHECK(weight.dim() == 1 && weight.size(0) == L.C,
           "{}: weight must have shape [{}] (one per class of the input of shape {}), got shape {}", op, L.C,
           x.shape(), weight.shape());
  SG_CHECK(weight.dtype() == x.dtype(), "{}: weight is {} but the input is {} (shape {}); they must match", op,
           weight.dtype(), x.dtype(), x.shape());
  SG_CHECK(!(weight.requires_grad() && GradMode::is_enabled()),
           "{}: weight (shape {}) requires grad, but the class weights are a constant here: no gradient flows "
           "to them (detach it, or compute the weighting with differentiable ops)",
           op, weight.shape());
  return contiguous(weight.detach());
}

// Where flat row r sits: "row 3", "position (1, 2)", or "" for an unbatched input.
std::string row_position(const LossLayout& L, int64_t r) {
  if (L.row_shape.empty()) return "";
  if (L.row_shape.size() == 1) return fmt::format(" at row {}", r);
  std::vector<int64_t> idx(L.row_shape.size());
  for (size_t d = L.row_shape.size(); d-- > 0;) {
    idx[d] = r % L.row_shape[d];
    r /= L.row_shape[d];
  }
  return fmt::format(" at position ({})", fmt::join(idx, ", "));
}

// When a target does not fit an input of 3 or more dims because the classes are the input's
// LAST dim (a sequence model's (B, T, V) logits with (B, T) targets; PyTorch wants the
// classes in dim 1), the reshape that fixes it, with the numbers; else "".
std::string classes_last_hint(const char* op, const Tensor& x, const Tensor& target) {
  const Shape& s = x.shape();
  if (s.size() < 3) return "";
  const Shape lead(s.begin(), s.end() - 1);
  const int64_t rows = shape_numel(lead), V = s.back();
  const bool same_lead = target.shape() == lead;
  const bool flat = target.dim() == 1 && target.size(0) == rows;
  if (!same_lead && !flat) return "";
  const std::string input = std::string_view(op) == "nll_loss" ? "log_probs" : "logits";
  const std::string call = fmt::format("{}({}.reshape({{-1, {}}}), targets.reshape({{-1}}))", op, input, V);
  if (s.size() == 3)
    return fmt::format(
        "; the classes look like the last dim of {} (B, T, V) = ({}): reshape {} to (B*T, V) = ({}, {}) and "
        "targets to (B*T) = ({}), as in {}",
        input, fmt::join(s, ", "), input, rows, V, rows, call);
  return fmt::format("; the classes look like the last dim of {} {}: reshape {} to (-1, {}) = ({}, {}) and targets "
                     "to (-1) = ({}), as in {}",
                     input, s, input, V, rows, V, rows, call);
}

// An int64 target of the rows' shape whose labels are in [0, C) or ignore_index. Returned
// contiguous (its flat order is the row order).
Tensor checked_index_target(const char* op, const Tensor& target, const Tensor& x, const LossLayout& L,
                            int64_t ignore_index) {
  SG_CHECK(target.shape() == L.row_shape,
           "{}: expected a target of shape {} for an input of shape {} (class dim {}), got target shape {}{}", op,
           L.row_shape, x.shape(), x.dim() == 1 ? 0 : 1, target.shape(), classes_last_hint(op, x, target));
  Tensor t = contiguous(target);
  const int64_t* p = t.data_ptr<int64_t>();
  for (int64_t r = 0; r < L.rows(); ++r) {
    const int64_t v = p[r];
    SG_CHECK(v == ignore_index || (v >= 0 && v < L.C),
             "{}: target {}{} is out of range for {} (input shape {}, target shape {}; expected a class in "
             "[0, {}) or ignore_index {})",
             op, v, row_position(L, r), plural(L.C, "class"), x.shape(), target.shape(), L.C, ignore_index);
  }
  return t;
}

// The per-row losses as a tensor of `shape` (reduction None), in dtype T.
template <typename T> Tensor rows_tensor(const std::vector<double>& v, const Shape& shape) {
  Tensor out = empty(shape, dtype_of<T>);
  T* p = out.data_ptr<T>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<T>(v[i]);
  return out;
}

// The upstream gradient: one value for a reduced loss, or one per row for None.
struct UpstreamGrad {
  double g = 0;
  std::vector<double> rows;
  const double* rows_ptr() const { return rows.empty() ? nullptr : rows.data(); }
};
UpstreamGrad upstream(const Tensor& grad, Reduction reduction) {
  UpstreamGrad u;
  if (reduction == Reduction::None)
    u.rows = grad.to_vector<double>();  // row-major: the rows' order
  else
    u.g = grad.item<double>();
  return u;
}

// The mean over no rows at all is 0 / 0: PyTorch returns NaN without a word, softgrad
// refuses (an empty batch is a data loader's mistake, and a NaN loss poisons training).
void check_not_empty_mean(const char* op, const LossLayout& L, const Tensor& input, Reduction reduction) {
  SG_CHECK(L.rows() > 0 || reduction != Reduction::Mean,
           "{}: the mean over an empty batch (input shape {}) is undefined; skip the batch, or use Reduction::Sum "
           "(0) or Reduction::None",
           op, input.shape());
}

// ---- cross_entropy: class dim last ---------------------------------------------------------

// (N, C, d1..dk) -> (N, d1..dk, C) and back. NOTE: the (N, C, d...) case moves the class
// dim last with one contiguous copy (in forward, and again in backward from the saved
// input), so every kernel reads contiguous rows; (C) and (N, C) are read in place.
std::vector<int64_t> class_last_perm(int64_t ndim) {
  std::vector<int64_t> p{0};
  for (int64_t d = 2; d < ndim; ++d) p.push_back(d);
  p.push_back(1);
  return p;
}
std::vector<int64_t> class_back_perm(int64_t ndim) {
  std::vector<int64_t> p{0, ndim - 1};
  for (int64_t d = 1; d < ndim - 1; ++d) p.push_back(d);
  return p;
}

Tensor as_rows(const Tensor& x, const LossLayout& L) {
  const Tensor v = x.detach();
  return L.class_dim_last() ? contiguous(v) : contiguous(permute(v, class_last_perm(x.dim())));
}

// A gradient computed in rows layout, returned in the input's shape.
Tensor from_rows(const Tensor& rows, const Shape& shape, const LossLayout& L) {
  if (L.class_dim_last()) return view(rows, shape);
  Shape perm_shape{L.N};
  for (size_t d = 2; d < shape.size(); ++d) perm_shape.push_back(shape[d]);
  perm_shape.push_back(L.C);
  return permute(view(rows, perm_shape), class_back_perm(static_cast<int64_t>(shape.size())));
}

// The constant parts of the backward coefficients (see ops/loss_kernels.h).
struct IndexScales {
  double nll = 0, smooth = 0;
};

Tensor cross_entropy_index(const Tensor& logits, const Tensor& target, const Tensor& weight, const LossLayout& L,
                           const CrossEntropyOptions& o) {
  const Tensor t = checked_index_target("cross_entropy", target, logits, L, o.ignore_index);
  const Tensor z = as_rows(logits, L);
  const int64_t R = L.rows(), C = L.C;
  const double eps = o.label_smoothing;
  const bool smoothing = eps > 0;
  Tensor stats = empty({R, kernels::kStatCols}, kFloat64);
  std::vector<double> nll(static_cast<size_t>(R)), smooth(smoothing ? static_cast<size_t>(R) : 0);
  Tensor out;
  double W = 0;  // the Mean denominator of both terms
  visit_floating(logits.dtype(), [&]<typename T>() {
    const T* w = weight.defined() ? weight.data_ptr<T>() : nullptr;
    const int64_t* tp = t.data_ptr<int64_t>();
    kernels::cross_entropy_index_forward<T>(z.data_ptr<T>(), tp, w, R, C, o.ignore_index, stats.data_ptr<double>(),
                                            nll.data(), smoothing ? smooth.data() : nullptr);
    for (int64_t r = 0; r < R; ++r)
      if (tp[r] != o.ignore_index) W += w ? static_cast<double>(w[tp[r]]) : 1.0;
    const double spread = eps / static_cast<double>(C);
    if (o.reduction == Reduction::None) {
      std::vector<double> loss = nll;
      // eps == 0 adds nothing (not even 0 * inf = NaN from an infinite smoothing term).
      if (smoothing)
        for (size_t r = 0; r < loss.size(); ++r) loss[r] = (1 - eps) * nll[r] + spread * smooth[r];
      out = rows_tensor<T>(loss, L.row_shape);
      return;
    }
    const double nll_sum = std::accumulate(nll.begin(), nll.end(), 0.0);
    const double smooth_sum = std::accumulate(smooth.begin(), smooth.end(), 0.0);
    const double denom = o.reduction == Reduction::Mean ? W : 1.0;
    const double value = smoothing ? (1 - eps) * (nll_sum / denom) + (smooth_sum / denom) * spread : nll_sum / denom;
    out = scalar_tensor(value, logits.dtype());
  });
  if (!any_requires_grad({logits})) return out;

  IndexScales scales;
  const double denom = o.reduction == Reduction::Mean ? W : 1.0;
  scales.nll = (1 - eps) / denom;
  scales.smooth = smoothing ? eps / static_cast<double>(C) / denom : 0.0;
  record("cross_entropy", {logits}, out,
         [zs = SavedTensor(logits), ts = SavedTensor(t), ws = SavedTensor(weight), ss = SavedTensor(stats), L,
          scales, ignore_index = o.ignore_index, reduction = o.reduction](const Tensor& grad) {
           const Tensor x = zs.get(), tv = ts.get(), wv = ws.get(), sv = ss.get();
           const Tensor z = as_rows(x, L);
           const UpstreamGrad u = upstream(grad, reduction);
           Tensor dz = empty({L.rows(), L.C}, x.dtype());
           visit_floating(x.dtype(), [&]<typename T>() {
             kernels::cross_entropy_index_backward<T>(
                 z.data_ptr<T>(), tv.data_ptr<int64_t>(), wv.defined() ? wv.data_ptr<T>() : nullptr,
                 sv.data_ptr<double>(), L.rows(), L.C, ignore_index, u.rows_ptr(), u.g, scales.nll, scales.smooth,
                 dz.data_ptr<T>());
           });
           return grads(from_rows(dz, x.shape(), L));
         });
  return out;
}

Tensor cross_entropy_prob(const Tensor& logits, const Tensor& target, const Tensor& weight, const LossLayout& L,
                          const CrossEntropyOptions& o) {
  SG_CHECK(target.dtype() == logits.dtype(),
           "cross_entropy: a probability target must have the input's dtype {}, got {} (shape {})", logits.dtype(),
           target.dtype(), target.shape());
  // As PyTorch: ignore_index selects rows by label, which probability targets do not have.
  SG_CHECK(o.ignore_index < 0,
           "cross_entropy: ignore_index {} is not supported with probability targets (target shape {}, the input's)",
           o.ignore_index, target.shape());
  const Tensor z = as_rows(logits, L), tr = as_rows(target, L);
  const int64_t R = L.rows(), C = L.C;
  const double eps = o.label_smoothing;
  Tensor stats = empty({R, kernels::kStatCols}, kFloat64);
  std::vector<double> loss(static_cast<size_t>(R));
  Tensor out;
  visit_floating(logits.dtype(), [&]<typename T>() {
    kernels::cross_entropy_prob_forward<T>(z.data_ptr<T>(), tr.data_ptr<T>(),
                                           weight.defined() ? weight.data_ptr<T>() : nullptr, R, C, eps,
                                           stats.data_ptr<double>(), loss.data());
    if (o.reduction == Reduction::None) {
      out = rows_tensor<T>(loss, L.row_shape);
      return;
    }
    double value = std::accumulate(loss.begin(), loss.end(), 0.0);
    // Mean over zero rows is NaN (0 / 0), as in PyTorch.
    if (o.reduction == Reduction::Mean) value /= static_cast<double>(R);
    out = scalar_tensor(value, logits.dtype());
  });
  if (!any_requires_grad({logits, target})) return out;

  const double scale = o.reduction == Reduction::Mean ? 1.0 / static_cast<double>(R) : 1.0;
  record("cross_entropy", {logits, target}, out,
         [zs = SavedTensor(logits), ts = SavedTensor(target), ws = SavedTensor(weight), ss = SavedTensor(stats), L,
          eps, scale, reduction = o.reduction, gz = logits.requires_grad(),
          gt = target.requires_grad()](const Tensor& grad) {
           const Tensor x = zs.get(), tv = ts.get(), wv = ws.get(), sv = ss.get();
           const Tensor z = as_rows(x, L), tr = as_rows(tv, L);
           const UpstreamGrad u = upstream(grad, reduction);
           Tensor dz = empty({L.rows(), L.C}, x.dtype());
           Tensor dt = gt ? empty({L.rows(), L.C}, x.dtype()) : Tensor();
           visit_floating(x.dtype(), [&]<typename T>() {
             kernels::cross_entropy_prob_backward<T>(z.data_ptr<T>(), tr.data_ptr<T>(),
                                                     wv.defined() ? wv.data_ptr<T>() : nullptr, sv.data_ptr<double>(),
                                                     L.rows(), L.C, eps, u.rows_ptr(), u.g, scale, dz.data_ptr<T>(),
                                                     gt ? dt.data_ptr<T>() : nullptr);
           });
           return grads(gz ? from_rows(dz, x.shape(), L) : Tensor(), gt ? from_rows(dt, x.shape(), L) : Tensor());
         });
  return out;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options) {
  if (autocast_enabled()) {  // runs in float32: bfloat16 logits, probabilities or weights are widened
    const Tensor lf = autocast::fp32_input(logits), tf = autocast::fp32_input(target);
    const Tensor wf = autocast::fp32_input(options.weight);
    if (!lf.is_same(logits) || !tf.is_same(target) || !wf.is_same(options.weight)) {
      CrossEntropyOptions o = options;
      o.weight = wf;
      AutocastGuard off(kBFloat16, false);
      return cross_entropy(lf, tf, o);
    }
  }
  const LossLayout L = checked_layout("cross_entropy", logits);
  check_defined("cross_entropy", target, "target");
  const double eps = options.label_smoothing;
  SG_CHECK(eps >= 0.0 && eps <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got {} (input shape {})", eps,
           logits.shape());
  check_not_empty_mean("cross_entropy", L, logits, options.reduction);
  const Tensor weight = checked_weight("cross_entropy", options.weight, logits, L);
  if (target.dtype() == kInt64) return cross_entropy_index(logits, target, weight, L, options);
  refuse_bfloat16("cross_entropy", target.dtype());
  SG_CHECK(is_floating(target.dtype()),
           "cross_entropy: expected int64 class indices of shape {} or {} class probabilities of shape {}, got a {} "
           "target of shape {}",
           L.row_shape, logits.dtype(), logits.shape(), target.dtype(), target.shape());
  SG_CHECK(target.shape() == logits.shape(),
           "cross_entropy: a {} target holds class probabilities and must have the input's shape {}, got shape {} "
           "(class indices must be int64 of shape {})",
           target.dtype(), logits.shape(), target.shape(), L.row_shape);
  return cross_entropy_prob(logits, target, weight, L, options);
}

// ---- nll_loss ----------------------------------------------------------------------------

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const NLLLossOptions& options) {
  if (autocast_enabled()) {  // runs in float32: bfloat16 inputs or weights are widened
    const Tensor xf = autocast::fp32_input(log_probs), wf = autocast::fp32_input(options.weight);
    if (!xf.is_same(log_probs) || !wf.is_same(options.weight)) {
      NLLLossOptions o = options;
      o.weight = wf;
      AutocastGuard off(kBFloat16, false);
      return nll_loss(xf, target, o);
    }
  }
  const LossLayout L = checked_layout("nll_loss", log_probs);
  check_defined("nll_loss", target, "target");
  SG_CHECK(target.dtype() == kInt64,
           "nll_loss: expected an int64 target of class indices of shape {}, got {} of shape {}", L.row_shape,
           target.dtype(), target.shape());
  check_not_empty_mean("nll_loss", L, log_probs, options.reduction);
  const Tensor weight = checked_weight("nll_loss", options.weight, log_probs, L);
  const Tensor t = checked_index_target("nll_loss", target, log_probs, L, options.ignore_index);
  const Tensor x = contiguous(log_probs.detach());  // read in place as (N, C, D)
  const int64_t R = L.rows();
  std::vector<double> loss(static_cast<size_t>(R)), wt(static_cast<size_t>(R));
  Tensor out;
  double W = 0;
  visit_floating(x.dtype(), [&]<typename T>() {
    kernels::nll_loss_forward<T>(x.data_ptr<T>(), t.data_ptr<int64_t>(),
                                 weight.defined() ? weight.data_ptr<T>() : nullptr, L.N, L.C, L.D,
                                 options.ignore_index, loss.data(), wt.data());
    W = std::accumulate(wt.begin(), wt.end(), 0.0);
    if (options.reduction == Reduction::None) {
      out = rows_tensor<T>(loss, L.row_shape);
      return;
    }
    double value = std::accumulate(loss.begin(), loss.end(), 0.0);
    if (options.reduction == Reduction::Mean) value /= W;  // NaN when every row is ignored, as PyTorch
    out = scalar_tensor(value, x.dtype());
  });
  if (!any_requires_grad({log_probs})) return out;

  const double scale = options.reduction == Reduction::Mean ? 1.0 / W : 1.0;
  record("nll_loss", {log_probs}, out,
         [ts = SavedTensor(t), ws = SavedTensor(weight), L, scale, shape = log_probs.shape(), dtype = log_probs.dtype(),
          ignore_index = options.ignore_index, reduction = options.reduction](const Tensor& grad) {
           const Tensor tv = ts.get(), wv = ws.get();
           const UpstreamGrad u = upstream(grad, reduction);
           Tensor dx = zeros(shape, dtype);
           visit_floating(dtype, [&]<typename T>() {
             kernels::nll_loss_backward<T>(tv.data_ptr<int64_t>(), wv.defined() ? wv.data_ptr<T>() : nullptr, L.N,
                                           L.C, L.D, ignore_index, u.rows_ptr(), u.g, scale, dx.data_ptr<T>());
           });
           return grads(dx);
         });
  return out;
}

}  // namespace sg
