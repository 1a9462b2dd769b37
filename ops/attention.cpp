// scaled_dot_product_attention: argument checks, strided views for the kernels, and the
// graph node. The kernels are in ops/attention_kernels.cpp.
#include "ops/attention.h"

#include <cmath>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"
#include "ops/attention_kernels.h"
#include "ops/tile_gemm_bf16.h"
#include "ops/shape.h"

namespace sg {
namespace {

constexpr const char* kOp = "scaled_dot_product_attention";

// q, k, v in the shapes the kernels see, and everything the node saves.
struct Plan {
  kernels::AttentionDims dims;
  Shape out_shape;
  Tensor q, k, v;  // detached; copies only when a last dim is not contiguous
  Tensor mask;     // detached, expanded to (B, H, Nq, Nk) (or (B, Nq, Nk)); undefined if none
  bool causal = false;
  double scale = 1.0, dropout_p = 0.0;
  uint64_t seed = 0;
  bool bf16_products = false;  // float32 only: the fused kernel's tile products in bfloat16
};

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const SdpaOptions& o) {
  check_defined(kOp, q, "query (q)");
  check_defined(kOp, k, "key (k)");
  check_defined(kOp, v, "value (v)");
  refuse_bfloat16("scaled_dot_product_attention", q.dtype());
  SG_CHECK(is_floating(q.dtype()) && q.dtype() == k.dtype() && q.dtype() == v.dtype(),
           "{}: q, k and v must share one floating dtype (float32 or float64), got q {} {}, k {} {}, v {} {}", kOp,
           q.shape(), q.dtype(), k.shape(), k.dtype(), v.shape(), v.dtype());
  SG_CHECK((q.dim() == 3 || q.dim() == 4) && k.dim() == q.dim() && v.dim() == q.dim(),
           "{}: expected q, k, v all (B, H, N, D) or all (B, N, D), got q {}, k {}, v {}", kOp, q.shape(), k.shape(),
           v.shape());
  for (int64_t d = 0; d < q.dim() - 2; ++d)
    SG_CHECK(q.size(d) == k.size(d) && q.size(d) == v.size(d),
             "{}: batch/head dims differ: q {}, k {}, v {} (dim {}: {}, {}, {})", kOp, q.shape(), k.shape(), v.shape(),
             d, q.size(d), k.size(d), v.size(d));
  SG_CHECK(k.size(-2) == v.size(-2), "{}: k {} and v {} need the same number of key rows ({} vs {})", kOp, k.shape(),
           v.shape(), k.size(-2), v.size(-2));
  SG_CHECK(q.size(-1) == k.size(-1), "{}: q {} and k {} need the same head dim ({} vs {})", kOp, q.shape(),
           k.shape(), q.size(-1), k.size(-1));
  SG_CHECK(q.size(-1) >= 1 && v.size(-1) >= 1, "{}: head dims must be positive, got q {} and v {}", kOp, q.shape(),
           v.shape());
  SG_CHECK(o.dropout_p >= 0.0 && o.dropout_p <= 1.0, "{}: dropout_p must be in [0, 1], got {}", kOp, o.dropout_p);
  SG_CHECK(o.dropout_p == 0.0 || o.generator != nullptr,
           "{}: dropout_p = {} needs a generator (SdpaOptions::generator)", kOp, o.dropout_p);
  SG_CHECK(!o.scale || std::isfinite(*o.scale), "{}: scale must be finite, got {}", kOp, o.scale.value_or(0.0));
}

// The mask, checked and expanded to the scores' shape (a stride-0 view, no copy).
Tensor expanded_mask(const Tensor& mask, const Tensor& q, const Shape& scores_shape) {
  SG_CHECK(mask.dtype() == kBool || mask.dtype() == q.dtype(),
           "{}: attn_mask must be bool or q's dtype {}, got {} of shape {}", kOp, q.dtype(), mask.dtype(),
           mask.shape());
  SG_CHECK(!(mask.requires_grad() && GradMode::is_enabled()),
           "{}: attn_mask {} requires grad; the mask is a constant here, detach() it", kOp, mask.shape());
  bool fits = mask.dim() <= static_cast<int64_t>(scores_shape.size());
  for (int64_t d = 1; fits && d <= mask.dim(); ++d) {
    const int64_t m = mask.size(-d), s = scores_shape[scores_shape.size() - d];
    fits = m == s || m == 1;
  }
  SG_CHECK(fits, "{}: attn_mask of shape {} does not broadcast to the scores' shape {} (q {})", kOp, mask.shape(),
           scores_shape, q.shape());
  return expand(mask.detach(), scores_shape);
}

// Detached, with a contiguous last dim (rows are read as vectors; any row, head and batch
// strides are fine, 0 included): a strided view is read in place, anything else copied.
Tensor rows_readable(const Tensor& x) {
  const Tensor d = x.detach();
  return d.size(-1) == 1 || d.stride(-1) == 1 ? d : d.contiguous();
}

template <typename T> kernels::HeadsView<T> heads_view(const Tensor& x) {
  kernels::HeadsView<T> view;
  view.data = x.data_ptr<T>();
  const bool four_d = x.dim() == 4;
  view.sb = x.stride(0);
  view.sh = four_d ? x.stride(1) : 0;
  view.ld = x.size(-2) <= 1 ? x.size(-1) : x.stride(-2);
  return view;
}

template <typename T> kernels::AttentionParams<T> params_of(const Plan& p) {
  kernels::AttentionParams<T> params;
  params.scale = static_cast<T>(p.scale);
  params.causal = p.causal;
  params.dropout_p = p.dropout_p;
  params.dropout_seed = p.seed;
  params.bf16_products = p.bf16_products;
  if (p.mask.defined()) {
    const Tensor& m = p.mask;
    params.mask.kind = m.dtype() == kBool ? kernels::MaskKind::kBool : kernels::MaskKind::kAdditive;
    params.mask.data = m.raw_data();
    const bool four_d = m.dim() == 4;
    params.mask.sb = m.stride(0);
    params.mask.sh = four_d ? m.stride(1) : 0;
    params.mask.si = m.stride(-2);
    params.mask.sj = m.stride(-1);
  }
  return params;
}

Plan make_plan(const Tensor& q, const Tensor& k, const Tensor& v, const SdpaOptions& o, bool bf16_products) {
  check_inputs(q, k, v, o);
  Plan p;
  const bool four_d = q.dim() == 4;
  p.dims.B = q.size(0);
  p.dims.H = four_d ? q.size(1) : 1;
  p.dims.Nq = q.size(-2);
  p.dims.Nk = k.size(-2);
  p.dims.D = q.size(-1);
  p.dims.Dv = v.size(-1);
  p.out_shape = q.shape();
  p.out_shape.back() = p.dims.Dv;
  Shape scores_shape = q.shape();
  scores_shape.back() = p.dims.Nk;
  if (o.attn_mask.defined()) p.mask = expanded_mask(o.attn_mask, q, scores_shape);
  p.q = rows_readable(q);
  p.k = rows_readable(k);
  p.v = rows_readable(v);
  p.causal = o.is_causal;
  p.scale = o.scale.value_or(1.0 / std::sqrt(static_cast<double>(p.dims.D)));
  p.dropout_p = o.dropout_p;
  if (o.dropout_p > 0) p.seed = o.generator->next_u64();
  p.bf16_products = bf16_products && q.dtype() == kFloat32;
  return p;
}

// bf16_products: the fused kernel's tile products take bfloat16 operands (autocast).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const SdpaOptions& o, bool naive,
                 bool bf16_products = false) {
  auto plan = std::make_shared<const Plan>(make_plan(q, k, v, o, bf16_products && !naive));
  const Plan& p = *plan;
  const kernels::AttentionDims& d = p.dims;
  Tensor out = empty(p.out_shape, q.dtype());
  Tensor row_stats = empty({kernels::attention_row_stats_size(d)}, q.dtype());  // row max, log sum: for backward
  visit_floating(q.dtype(), [&]<typename T>() {
    const auto params = params_of<T>(p);
    if (naive) {
      kernels::attention_forward_naive<T>(heads_view<T>(p.q), heads_view<T>(p.k), heads_view<T>(p.v), params, d,
                                          out.data_ptr<T>(), row_stats.data_ptr<T>());
    } else {
      const Tensor workspace = empty({kernels::attention_forward_workspace(d)}, q.dtype());
      kernels::attention_forward<T>(heads_view<T>(p.q), heads_view<T>(p.k), heads_view<T>(p.v), params, d,
                                    out.data_ptr<T>(), row_stats.data_ptr<T>(), workspace.data_ptr<T>());
    }
  });
  if (any_requires_grad({q, k, v})) {
    // The plan holds detached q, k, v and mask (their data, not their history), each either
    // the caller's storage or a private copy: `inputs` watches the caller's, and backward
    // throws if one of them, or out, was modified in place. row_stats is private.
    std::vector<SavedTensor> inputs;
    for (const Tensor& t : {q, k, v, p.mask})
      if (t.defined()) inputs.emplace_back(t.detach());
    record(naive ? "scaled_dot_product_attention_naive" : kOp, {q, k, v}, out,
           [plan, naive, inputs = std::move(inputs), saved_out = SavedTensor(out), row_stats](const Tensor& grad) {
             const Plan& p = *plan;
             for (const SavedTensor& t : inputs) t.get();  // throws if one was modified in place
             const Tensor &qs = p.q, &ks = p.k, &vs = p.v;
             const Tensor o = saved_out.get();
             const Tensor g = grad.contiguous();
             Tensor dq = empty(qs.shape(), qs.dtype()), dk = empty(ks.shape(), ks.dtype()),
                    dv = empty(vs.shape(), vs.dtype());
             visit_floating(qs.dtype(), [&]<typename T>() {
               const auto params = params_of<T>(p);
               if (naive)
                 kernels::attention_backward_naive<T>(heads_view<T>(qs), heads_view<T>(ks), heads_view<T>(vs),
                                                      params, p.dims, g.data_ptr<T>(), dq.data_ptr<T>(),
                                                      dk.data_ptr<T>(), dv.data_ptr<T>());
               else {
                 const Tensor workspace = empty({kernels::attention_backward_workspace(p.dims)}, qs.dtype());
                 kernels::attention_backward<T>(heads_view<T>(qs), heads_view<T>(ks), heads_view<T>(vs), params,
                                                p.dims, o.data_ptr<T>(), g.data_ptr<T>(), row_stats.data_ptr<T>(),
                                                dq.data_ptr<T>(), dk.data_ptr<T>(), dv.data_ptr<T>(),
                                                workspace.data_ptr<T>());
               }
             });
             return grads(dq, dk, dv);
           });
  }
  return out;
}

}  // namespace

namespace {
// Under autocast q, k and v are taken in bfloat16: the fused kernel's tile products take
// bfloat16 operands, rounding q, k, v and the tiles of P, dO and dS as they pack them (no
// rounded copies of q, k, v are made), with float32 accumulation; the scores, the online-softmax state, O's
// accumulator and the gradients stay float32 (ops/attention_kernels.h). On a CPU without
// AVX512-BF16 the products run in float32 on the rounded q, k, v. The naive kernel (for
// tests) computes in float64 on the rounded q, k, v. Without native bfloat16 (oneDNN's
// verdict), bfloat16 inputs are widened and nothing is rounded.
Tensor autocast_attention(const Tensor& q, const Tensor& k, const Tensor& v, const SdpaOptions& options, bool naive) {
  check_defined(kOp, q, "query (q)");
  check_defined(kOp, k, "key (k)");
  check_defined(kOp, v, "value (v)");
  if (autocast::use_bf16_product(q, k) && autocast::use_bf16_product(v, Tensor())) {
    if (!naive && kernels::tile_gemm_bf16_supported())  // the tile products round q, k, v themselves
      return attention(autocast::fp32_input(q), autocast::fp32_input(k), autocast::fp32_input(v), options, naive,
                       /*bf16_products=*/true);
    return attention(autocast::round_to_bf16(q), autocast::round_to_bf16(k), autocast::round_to_bf16(v), options,
                     naive);
  }
  return attention(autocast::fp32_input(q), autocast::fp32_input(k), autocast::fp32_input(v), options, naive);
}
}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const SdpaOptions& options) {
  if (autocast_enabled()) return autocast_attention(q, k, v, options, /*naive=*/false);
  return attention(q, k, v, options, /*naive=*/false);
}

Tensor scaled_dot_product_attention_naive(const Tensor& q, const Tensor& k, const Tensor& v,
                                          const SdpaOptions& options) {
  if (autocast_enabled()) return autocast_attention(q, k, v, options, /*naive=*/true);
  return attention(q, k, v, options, /*naive=*/true);
}

}  // namespace sg
