#pragma once
// Autocast: mixed-precision regions with PyTorch's CPU semantics (torch.autocast("cpu",
// dtype=torch.bfloat16)), for bfloat16.
//
//   {
//     sg::AutocastGuard autocast(sg::kBFloat16);
//     sg::Tensor loss = sg::cross_entropy(model(x), y);   // products in bfloat16
//   }
//   loss.backward();  // the products' backward GEMMs run in bfloat16 too
//   opt.step();       // master weights, gradients and optimizer state are float32
//
// Inside a guard (thread-local, nests, restores the previous state on exit):
// - The products — matmul, bmm, linear, conv2d, scaled_dot_product_attention — take their
//   float32 operands in bfloat16 (cast on entry) and accumulate in float32 (oneDNN,
//   core/onednn.h). A parameter's cast (a leaf that requires grad) is cached until its
//   storage changes, i.e. until the optimizer's next step: weights are cast once per step
//   however often they are used. Backward of such a product also runs its GEMMs in
//   bfloat16 with float32 accumulation, and the gradient reaching a float32 leaf is float32.
//   NOTE (differs from PyTorch): the products return float32, not bfloat16. PyTorch
//   rounds each product's result to bfloat16 and widens it again in the next float32 op;
//   softgrad's elementwise ops do not compute in bfloat16 (core/dtype.h), so its results
//   stay float32, which keeps 16 more bits and saves two conversion passes.
// - softmax, log_softmax, layer_norm, cross_entropy, nll_loss and every loss run in
//   float32: a bfloat16 input is widened first (exact), and the result is float32.
// - float64 tensors are left alone (as PyTorch's CPU autocast does).
// - When oneDNN has no native bfloat16 matmul on this CPU (onednn_info().bf16_native is
//   false: no AVX512-BF16 nor AMX, or ONEDNN_MAX_CPU_ISA below them), the products run in
//   float32 on OpenBLAS without rounding their operands, and softgrad says so once on
//   stderr (autocast_bf16_active() tells a program which it got).
#include "core/dtype.h"

namespace sg {

class Tensor;

class AutocastGuard {
 public:
  // dtype must be kBFloat16 (the one low-precision dtype softgrad has); enabled = false
  // turns autocast off inside an enclosing guard, as torch.autocast(enabled=False).
  explicit AutocastGuard(Dtype dtype = kBFloat16, bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool prev_;
};

// Whether this thread is inside an enabled AutocastGuard.
bool autocast_enabled();
// Whether autocast products run in bfloat16 on this CPU (oneDNN runs bfloat16 natively).
bool autocast_bf16_active();

namespace autocast {

// The products' operand cast: a float32 tensor -> a bfloat16 copy without history (a
// parameter's copy comes from the cache); bfloat16 is returned as is. Callers record the
// product's node on the original operands themselves.
Tensor to_bf16(const Tensor& x);
// x (float32) rounded to bfloat16 values, kept in float32; the gradient passes through
// unchanged (as the derivative of PyTorch's casts). A bfloat16 x is widened exactly.
Tensor round_to_bf16(const Tensor& x);
// The float32 ops' entry: under autocast a bfloat16 input comes back widened to float32;
// anything else is returned as is.
Tensor fp32_input(const Tensor& x);
// True when an op with these operands should take the bfloat16 product path: autocast is
// on, bfloat16 is native here, and the operands are float32 or bfloat16 (no float64).
// When autocast is on but bfloat16 is not native, prints the one-time fallback notice.
bool use_bf16_product(const Tensor& a, const Tensor& b);
// Drops every cached parameter cast (they are also dropped when their storage changes).
void clear_cache();
// Cached casts now held (for tests).
size_t cache_size();

}  // namespace autocast

}  // namespace sg
