// matmul: PyTorch's rules on top of BLAS GEMM.
//
// Dimension letters: B batch (the broadcast batch dims flattened), M rows of a, K the
// shared inner dim, N columns of b. Every product is reduced to B GEMMs
//   c[i] (M, N) = a[i] (M, K) @ b[i] (K, N)
// where a[i] and b[i] are read at per-batch offsets from each operand's own batch strides
// (stride 0 along a broadcast dim), so broadcasting never materializes a copy.
//
// Backward (C = A @ B on the 1-D-promoted forms):
//   dA = dC @ B^T,  dB = A^T @ dC,
// each summed over the batch dims its operand was broadcast along (sum_to). The transposes
// are views, which the forward hands to BLAS as a transpose flag: no copies.
#include "ops/matmul.h"

#include <omp.h>

#include <climits>
#include <optional>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/blas.h"
#include "core/kernels.h"
#include "core/onednn.h"
#include "core/strided.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace sg {

namespace {

// How BLAS reads one (R, C) matrix operand, row-major: as is (ld = row stride) or as the
// transpose of a (C, R) matrix (ld = column stride).
struct BlasMat {
  bool trans = false;
  int64_t ld = 1;
};

// The BLAS description of an (R, C) view with strides (sr, sc), or nullopt when BLAS
// cannot read it in place (e.g. both strides > 1, or a stride-0 expanded dim).
// NOTE: strides of size-1 dims are arbitrary in a view, so they are ignored here and the
// leading dimension is made valid (BLAS rejects ld < max(1, C)) instead.
std::optional<BlasMat> blas_layout(int64_t R, int64_t C, int64_t sr, int64_t sc) {
  if (sc == 1 || C <= 1) {
    const int64_t ld = R <= 1 ? std::max<int64_t>(1, C) : sr;
    if (ld >= std::max<int64_t>(1, C)) return BlasMat{false, ld};
  }
  if (sr == 1 || R <= 1) {
    const int64_t ld = C <= 1 ? std::max<int64_t>(1, R) : sc;
    if (ld >= std::max<int64_t>(1, R)) return BlasMat{true, ld};
  }
  return std::nullopt;
}

// A batch is split over OpenMP threads, each calling BLAS (which runs single-threaded
// inside a parallel region), when its GEMMs are small (below this many multiply-adds,
// 256^3, OpenBLAS's own threading loses to per-call thread sync) or when the batches
// divide evenly over the threads; otherwise OpenBLAS threads each big GEMM itself.
constexpr int64_t kBigGemm = int64_t{1} << 24;
// Total work below which threads cost more than they save.
constexpr int64_t kSerialWork = int64_t{1} << 16;

// a: B x (M, K) at a + a_off[i], read as la; b: B x (K, N) at b + b_off[i], read as lb;
// c: (B, M, N) contiguous. M, N, K > 0.
template <typename T>
void matmul_forward(T* c, const T* a, const T* b, const int64_t* a_off, const int64_t* b_off, int64_t B,
                    int64_t M, int64_t N, int64_t K, BlasMat la, BlasMat lb) {
  const int64_t macs = M * N * K;
  auto one = [&](int64_t i) {
    gemm<T>(la.trans, lb.trans, M, N, K, T(1), a + a_off[i], la.ld, b + b_off[i], lb.ld, T(0), c + i * M * N, N);
  };
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), B));
  const bool balanced = B % threads == 0 || B >= 8 * threads;
  if (threads > 1 && (macs < kBigGemm || balanced) && B * macs >= kSerialWork && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < B; ++i) one(i);
  } else {
    for (int64_t i = 0; i < B; ++i) one(i);
  }
}

// The reference: a plain triple loop, accumulating in double.
// a: (M, K) with strides (a_rs, a_cs); b: (K, N) with strides (b_rs, b_cs); c: (M, N) contiguous.
template <typename T>
void matmul_forward_naive(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, int64_t a_rs,
                          int64_t a_cs, int64_t b_rs, int64_t b_cs) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k)
        acc += static_cast<double>(a[m * a_rs + k * a_cs]) * static_cast<double>(b[k * b_rs + n * b_cs]);
      c[m * N + n] = static_cast<T>(acc);
    }
}

// ---- wiring ----

// Validates the operands and describes the product as B GEMMs of (M, K) @ (K, N).
struct MatmulPlan {
  Shape out_shape;  // PyTorch's result shape: batch + (M, N), promoted 1-D dims removed
  int64_t B = 1, M = 1, N = 1, K = 1;
  std::vector<int64_t> a_off, b_off;  // per batch, in elements from each data pointer
  int64_t a_rs = 0, a_cs = 0, b_rs = 0, b_cs = 0;  // strides of the matrix dims
};

// bf16_operands: the autocast path's bfloat16 pair (never reached by users' bfloat16).
void check_matmul_inputs(const Tensor& a, const Tensor& b, bool bf16_operands = false) {
  check_defined("matmul", a, "first operand");
  check_defined("matmul", b, "second operand");
  SG_CHECK(a.dim() >= 1 && b.dim() >= 1,
           "matmul: both arguments need at least 1 dim, got shapes {} and {} ({}-d and {}-d)", a.shape(), b.shape(),
           a.dim(), b.dim());
  SG_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ: {} {} and {} {}", a.shape(), a.dtype(), b.shape(),
           b.dtype());
  if (!bf16_operands) refuse_bfloat16("matmul", a.dtype());
  SG_CHECK(is_floating(a.dtype()) || (bf16_operands && a.dtype() == kBFloat16),
           "matmul: expected float32 or float64, got {} {} and {} {}", a.shape(), a.dtype(), b.shape(), b.dtype());
  const int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  SG_CHECK(ka == kb, "matmul: shapes {} and {} cannot be multiplied (inner dims {} and {} differ)", a.shape(),
           b.shape(), ka, kb);
}

MatmulPlan plan_matmul(const Tensor& a, const Tensor& b, bool bf16_operands = false) {
  check_matmul_inputs(a, b, bf16_operands);
  MatmulPlan p;
  const bool a1 = a.dim() == 1, b1 = b.dim() == 1;
  p.K = a.size(-1);
  p.M = a1 ? 1 : a.size(-2);
  p.N = b1 ? 1 : b.size(-1);
  p.a_cs = a.stride(-1);
  p.a_rs = a1 ? p.K * p.a_cs : a.stride(-2);  // unused: M == 1
  p.b_rs = b1 ? b.stride(0) : b.stride(-2);
  p.b_cs = b1 ? 1 : b.stride(-1);  // unused: N == 1

  // Broadcast the batch dims (everything before the matrix dims), right-aligned.
  const size_t na = a1 ? 0 : a.dim() - 2, nb = b1 ? 0 : b.dim() - 2, nd = std::max(na, nb);
  Shape batch(nd);
  Strides sa(nd, 0), sb(nd, 0);  // aligned batch strides, 0 along broadcast dims
  for (size_t i = 0; i < nd; ++i) {
    const int64_t da = i < nd - na ? 1 : a.shape()[i - (nd - na)];
    const int64_t db = i < nd - nb ? 1 : b.shape()[i - (nd - nb)];
    SG_CHECK(da == db || da == 1 || db == 1,
             "matmul: batch dims of shapes {} and {} cannot be broadcast (batch dim {}: {} vs {})", a.shape(),
             b.shape(), i, da, db);
    batch[i] = da == 1 ? db : da;
    if (da != 1) sa[i] = a.strides()[i - (nd - na)];
    if (db != 1) sb[i] = b.strides()[i - (nd - nb)];
  }
  p.B = shape_numel(batch);
  p.out_shape = batch;
  if (!a1) p.out_shape.push_back(p.M);
  if (!b1) p.out_shape.push_back(p.N);

  for (int64_t v : {p.M, p.N, p.K})
    SG_CHECK(v <= INT_MAX, "matmul: shapes {} and {}: dim {} exceeds BLAS's 32-bit sizes", a.shape(), b.shape(), v);

  // Offsets of every batch, by an odometer over the batch dims.
  p.a_off.resize(p.B);
  p.b_off.resize(p.B);
  std::vector<int64_t> idx(nd, 0);
  int64_t oa = 0, ob = 0;
  for (int64_t i = 0; i < p.B; ++i) {
    p.a_off[i] = oa;
    p.b_off[i] = ob;
    for (size_t d = nd; d-- > 0;) {
      ++idx[d];
      oa += sa[d];
      ob += sb[d];
      if (idx[d] < batch[d]) break;
      oa -= idx[d] * sa[d];
      ob -= idx[d] * sb[d];
      idx[d] = 0;
    }
  }
  return p;
}

// A tensor BLAS cannot read in place is copied once (its own shape, not the broadcast one).
Tensor blas_ready(const Tensor& x, bool is_b) {
  const bool v = x.dim() == 1;
  const int64_t R = v ? (is_b ? x.size(0) : 1) : x.size(-2), C = v ? (is_b ? 1 : x.size(0)) : x.size(-1);
  const int64_t sr = v ? (is_b ? x.stride(0) : C * x.stride(0)) : x.stride(-2);
  const int64_t sc = v ? (is_b ? 1 : x.stride(0)) : x.stride(-1);
  if (x.numel() == 0 || blas_layout(R, C, sr, sc)) return x;
  return make_contiguous_copy(x);
}

// One GEMM instead of B when b is shared by every batch and a's batches are its rows
// stacked at equal distance: (B, M, K) @ (K, N) is (B*M, K) @ (K, N) (a Linear layer).
bool fold_batches(MatmulPlan& p, const BlasMat& la) {
  if (p.B <= 1 || la.trans) return false;
  for (int64_t i = 0; i < p.B; ++i)
    if (p.b_off[i] != p.b_off[0] || p.a_off[i] != p.a_off[0] + i * p.M * la.ld) return false;
  if (p.B * p.M > INT_MAX) return false;
  p.M *= p.B;
  p.B = 1;
  p.a_off.resize(1);
  p.b_off.resize(1);
  return true;
}

// bf16_operands: a and b are bfloat16 (autocast); the result is float32 from oneDNN.
Tensor matmul_impl(const Tensor& a_in, const Tensor& b_in, bool bf16_operands = false) {
  check_matmul_inputs(a_in, b_in, bf16_operands);
  const Tensor a = blas_ready(a_in, false), b = blas_ready(b_in, true);
  MatmulPlan p = plan_matmul(a, b, bf16_operands);
  const Dtype out_dtype = bf16_operands ? kFloat32 : a.dtype();
  if (p.K == 0) return zeros(p.out_shape, out_dtype);  // an empty sum
  Tensor out = empty(p.out_shape, out_dtype);         // BLAS (beta = 0) writes every element
  if (out.numel() == 0) return out;
  const std::optional<BlasMat> la = blas_layout(p.M, p.K, p.a_rs, p.a_cs);
  const std::optional<BlasMat> lb = blas_layout(p.K, p.N, p.b_rs, p.b_cs);
  SG_CHECK(la && lb, "matmul: internal error: shapes {} and {} not BLAS-ready after copying", a.shape(), b.shape());
  fold_batches(p, *la);
  SG_CHECK(la->ld <= INT_MAX && lb->ld <= INT_MAX, "matmul: shapes {} and {}: leading dimension exceeds 32 bits",
           a.shape(), b.shape());
  if (bf16_operands) {
    // oneDNN threads each GEMM itself: the batches run one after another.
    const bfloat16 *pa = a.data_ptr<bfloat16>(), *pb = b.data_ptr<bfloat16>();
    float* c = out.data_ptr<float>();
    for (int64_t i = 0; i < p.B; ++i)
      gemm_bf16(la->trans, lb->trans, p.M, p.N, p.K, pa + p.a_off[i], la->ld, pb + p.b_off[i], lb->ld, 0.0f,
                c + i * p.M * p.N, p.N);
    return out;
  }
  visit_dtype(a.dtype(), [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T>) {
      matmul_forward(out.data_ptr<T>(), a.data_ptr<T>(), b.data_ptr<T>(), p.a_off.data(), p.b_off.data(), p.B, p.M,
                     p.N, p.K, *la, *lb);
    }
  });
  return out;
}

// The autocast product: operands cast to bfloat16 (a parameter's cast cached), float32
// accumulation and result; no history (the callers record their own nodes).
Tensor matmul_bf16(const Tensor& a, const Tensor& b) {
  return matmul_impl(autocast::to_bf16(a), autocast::to_bf16(b), /*bf16_operands=*/true);
}

// dC arrives in the result's shape; the 1-D operands were promoted to (1, K) and (K, 1).
// b_transposed: b is 2-D and its transpose is contiguous (Linear's weight.t()). dB is then
// computed as (dC^T A)^T, a transposed view of a contiguous (N, K) product, so the gradient
// reaches the weight in the weight's own layout instead of through a strided copy.
// product: how the backward multiplies (matmul, or the bfloat16 product under autocast).
using Product = Tensor (*)(const Tensor&, const Tensor&);
std::vector<Tensor> matmul_backward(const Tensor& dc, const SavedTensor& saved_a, const SavedTensor& saved_b,
                                    const Shape& a_shape, const Shape& b_shape, bool need_da, bool need_db,
                                    bool b_transposed, Product product) {
  const bool a1 = a_shape.size() == 1, b1 = b_shape.size() == 1;
  Tensor dcp = dc;
  if (a1) dcp = dcp.unsqueeze(b1 ? 0 : -2);
  if (b1) dcp = dcp.unsqueeze(-1);
  Tensor da, db;
  if (need_da) {
    Tensor bp = saved_b.get();
    if (b1) bp = bp.unsqueeze(-1);
    const Shape ap_shape = a1 ? Shape{1, a_shape[0]} : a_shape;
    da = sum_to(product(dcp, bp.transpose(-1, -2)), ap_shape);  // dA = dC @ B^T
    if (a1) da = da.reshape(a_shape);
  }
  if (need_db) {
    Tensor ap = saved_a.get();
    if (a1) ap = ap.unsqueeze(0);
    const Shape bp_shape = b1 ? Shape{b_shape[0], 1} : b_shape;
    if (bp_shape.size() == 2 && ap.dim() > 2) {
      // b was shared by every batch: fold the batches into rows, one GEMM, no sum_to.
      const Shape& s = ap.shape();
      const int64_t rows = shape_numel(Shape(s.begin(), s.end() - 1)), K = s.back(), N = dcp.size(-1);
      const Tensor a_rows = ap.reshape({rows, K}), dc_rows = dcp.reshape({rows, N});
      db = b_transposed ? product(dc_rows.t(), a_rows).t()   // dB^T = dC^T @ A, (N, K)
                        : product(a_rows.t(), dc_rows);      // dB = A^T @ dC, (K, N)
    } else if (b_transposed && ap.dim() == 2) {
      db = product(dcp.t(), ap).t();
    } else {
      db = sum_to(product(ap.transpose(-1, -2), dcp), bp_shape);
    }
    if (b1) db = db.reshape(b_shape);
  }
  return {da, db};
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  check_defined("matmul", a_in, "first operand");
  check_defined("matmul", b_in, "second operand");
  const bool bf16 = autocast::use_bf16_product(a_in, b_in);
  // Under autocast without native bfloat16, a bfloat16 operand is widened instead.
  const Tensor a = bf16 ? a_in : autocast::fp32_input(a_in), b = bf16 ? b_in : autocast::fp32_input(b_in);
  // The saved operands are the bfloat16 casts under autocast: backward multiplies in bfloat16.
  const Tensor a_op = bf16 ? autocast::to_bf16(a) : a, b_op = bf16 ? autocast::to_bf16(b) : b;
  Tensor out = matmul_impl(a_op, b_op, bf16);
  if (any_requires_grad({a, b})) {
    const bool need_da = a.requires_grad(), need_db = b.requires_grad();
    const bool b_transposed = b.dim() == 2 && b.size(0) > 1 && b.size(1) > 1 && b.stride(0) == 1 && b.stride(1) == b.size(0);
    record(bf16 ? "matmul (autocast bfloat16)" : "matmul", {a, b}, out,
           [sa = need_db ? SavedTensor(a_op) : SavedTensor(), sb = need_da ? SavedTensor(b_op) : SavedTensor(),
            a_shape = a.shape(), b_shape = b.shape(), need_da, need_db, b_transposed, bf16](const Tensor& dc) {
             if (!bf16) return matmul_backward(dc, sa, sb, a_shape, b_shape, need_da, need_db, b_transposed, &matmul);
             // dC is cast once; every view the backward takes of it stays bfloat16.
             return matmul_backward(autocast::to_bf16(dc), sa, sb, a_shape, b_shape, need_da, need_db, b_transposed,
                                    &matmul_bf16);
           });
  }
  return out;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  check_defined("bmm", a, "first operand");
  check_defined("bmm", b, "second operand");
  SG_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0),
           "bmm: expected (B, M, K) and (B, K, N) with the same B, got shapes {} and {}", a.shape(), b.shape());
  return matmul(a, b);
}

namespace {
// Every row of y (M, N) gets the bias b (N): the GEMM then accumulates onto it (beta = 1).
template <typename T> void fill_rows_with_bias(T* y, const T* b, int64_t M, int64_t N) {
  parallel_for(M, N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::copy(b, b + N, y + r * N);
  });
}

// y (M, N) = x (M, K) W^T + b, W (N, K) with row stride ldw; b may be null. Rows get the
// bias first, then the GEMM accumulates (beta = 1).
template <typename T>
void linear_forward(T* y, const T* x, const T* w, int64_t ldw, const T* b, int64_t M, int64_t N, int64_t K) {
  if (b) fill_rows_with_bias(y, b, M, N);
  if (K > 0) gemm<T>(false, true, M, N, K, T(1), x, K, w, ldw, b ? T(1) : T(0), y, N);
  else if (!b) std::fill(y, y + M * N, T(0));
}
}  // namespace

namespace {

// linear's shape checks (on the user's tensors, whatever their dtypes).
void check_linear_shapes(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  SG_CHECK(weight.dim() == 2, "linear: expected a 2-D weight (out_features, in_features), got input {} and weight {}",
           x.shape(), weight.shape());
  SG_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1),
           "linear: input {} has {} features, the weight {} expects {}", x.shape(), x.dim() ? x.size(-1) : 0,
           weight.shape(), weight.size(1));
  SG_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
           "linear: bias {} does not match the weight {}", bias.shape(), weight.shape());
}

// The float32/float64 path's dtype checks (the autocast path admits float32 and bfloat16).
void check_linear_dtypes(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  refuse_bfloat16("linear", x.dtype());
  refuse_bfloat16("linear", weight.dtype());
  SG_CHECK(is_floating(x.dtype()) && weight.dtype() == x.dtype() && (!bias.defined() || bias.dtype() == x.dtype()),
           "linear: input, weight and bias must share a floating dtype, got {}, {} and {}", x.dtype(), weight.dtype(),
           bias.defined() ? dtype_name(bias.dtype()) : "none");
}

// Backward of y = x W^T + b on both paths: dx = dy W (M, N) @ (N, K), dW = dy^T x
// (N, M) @ (M, K), db = dy summed over rows. bf16: xs and ws hold bfloat16 casts, dy is
// cast once, and the products accumulate in float32 (matmul_bf16).
std::vector<Tensor> linear_backward(const Tensor& dy, const SavedTensor& xs, const SavedTensor& ws,
                                    const Shape& x_shape, int64_t M, int64_t N, bool need_dx, bool need_dw,
                                    bool need_db, bool bf16) {
  const Tensor dy2 = dy.reshape({M, N});
  const Tensor dy_op = bf16 ? autocast::to_bf16(dy2) : dy2;
  const Product product = bf16 ? &matmul_bf16 : &matmul;
  Tensor dx, dw, db;
  if (need_dx) dx = product(dy_op, ws.get()).reshape(x_shape);
  if (need_dw) dw = product(dy_op.t(), xs.get());
  if (need_db) db = sum(dy2, {0});
  return {dx, dw, db};
}

// Under autocast: y (M, N) float32 = bf16(x) bf16(W)^T + b, the bias (float32) written
// first and the GEMM accumulating onto it. Backward: dx = bf16(dy) bf16(W), dW = bf16(dy)^T
// bf16(x), both accumulated in float32; db = dy summed in float32.
Tensor linear_autocast(const Tensor& x, const Tensor& weight, const Tensor& bias_in) {
  const Tensor bias = autocast::fp32_input(bias_in);
  SG_CHECK(!bias.defined() || bias.dtype() == kFloat32, "linear: under autocast the bias must be float32, got {}",
           bias.dtype());
  const int64_t K = weight.size(1), N = weight.size(0);
  const int64_t M = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape out_shape = x.shape();
  out_shape.back() = N;
  const Tensor xb = contiguous(autocast::to_bf16(x)).reshape({M, K});  // (M, K)
  const Tensor wb = contiguous(autocast::to_bf16(weight));            // (N, K), cached per step
  Tensor out = empty(out_shape, kFloat32);
  float* y = out.data_ptr<float>();
  if (bias.defined()) fill_rows_with_bias(y, contiguous(bias).data_ptr<float>(), M, N);
  gemm_bf16(false, true, M, N, K, xb.data_ptr<bfloat16>(), K, wb.data_ptr<bfloat16>(), K, bias.defined() ? 1.0f : 0.0f,
            y, N);
  if (any_requires_grad({x, weight, bias})) {
    const bool need_dx = x.requires_grad(), need_dw = weight.requires_grad();
    const bool need_db = bias.defined() && bias.requires_grad();
    record("linear (autocast bfloat16)", {x, weight, bias}, out,
           [xs = need_dw ? SavedTensor(xb) : SavedTensor(), ws = need_dx ? SavedTensor(wb) : SavedTensor(),
            x_shape = x.shape(), M, N, need_dx, need_dw, need_db](const Tensor& dy) {
             return linear_backward(dy, xs, ws, x_shape, M, N, need_dx, need_dw, need_db, /*bf16=*/true);
           });
  }
  return out;
}

}  // namespace

Tensor linear(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in) {
  check_defined("linear", x_in);
  check_defined("linear", weight_in, "weight");
  check_linear_shapes(x_in, weight_in, bias_in);
  const bool bf16 = autocast::use_bf16_product(x_in, weight_in) && x_in.numel() > 0 && weight_in.numel() > 0;
  if (bf16) return linear_autocast(x_in, weight_in, bias_in);
  // Under autocast without native bfloat16, bfloat16 operands are widened instead.
  const Tensor x = autocast::fp32_input(x_in), weight = autocast::fp32_input(weight_in);
  const Tensor bias = autocast::fp32_input(bias_in);
  check_linear_dtypes(x, weight, bias);
  const int64_t K = weight.size(1), N = weight.size(0);
  const int64_t M = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape out_shape = x.shape();
  out_shape.back() = N;
  const Tensor x2 = contiguous(x).reshape({M, K});  // rows of the input
  const Tensor w = weight.stride(1) == 1 && weight.stride(0) >= std::max<int64_t>(K, 1) ? weight : contiguous(weight);
  const Tensor b = bias.defined() ? contiguous(bias) : bias;
  Tensor out = empty(out_shape, x.dtype());
  if (out.numel() > 0) {
    visit_floating(x.dtype(), [&]<typename T>() {
      linear_forward<T>(out.data_ptr<T>(), x2.data_ptr<T>(), w.data_ptr<T>(), std::max<int64_t>(w.stride(0), 1),
                        b.defined() ? b.data_ptr<T>() : nullptr, M, N, K);
    });
  }
  if (any_requires_grad({x, weight, bias})) {
    const bool need_dx = x.requires_grad(), need_dw = weight.requires_grad();
    const bool need_db = bias.defined() && bias.requires_grad();
    record("linear", {x, weight, bias}, out,
           [xs = need_dw ? SavedTensor(x2) : SavedTensor(), ws = need_dx ? SavedTensor(weight) : SavedTensor(),
            x_shape = x.shape(), M, N, need_dx, need_dw, need_db](const Tensor& dy) {
             return linear_backward(dy, xs, ws, x_shape, M, N, need_dx, need_dw, need_db, /*bf16=*/false);
           });
  }
  return out;
}

// The triple-loop reference the tests compare the BLAS path with (declared in the tests;
// no autograd, no copies: it reads every operand through its strides).
Tensor matmul_naive(const Tensor& a, const Tensor& b) {
  const MatmulPlan p = plan_matmul(a, b);
  Tensor out = empty(p.out_shape, a.dtype());  // the loop writes every element
  if (out.numel() == 0) return out;
  visit_dtype(a.dtype(), [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T>) {
      T* c = out.data_ptr<T>();
      const T *pa = a.data_ptr<T>(), *pb = b.data_ptr<T>();
      for (int64_t i = 0; i < p.B; ++i)
        matmul_forward_naive(c + i * p.M * p.N, pa + p.a_off[i], pb + p.b_off[i], p.M, p.N, p.K, p.a_rs, p.a_cs,
                             p.b_rs, p.b_cs);
    }
  });
  return out;
}

Tensor Tensor::matmul(const Tensor& other) const { return sg::matmul(*this, other); }

}  // namespace sg
