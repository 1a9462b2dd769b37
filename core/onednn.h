#pragma once
// oneDNN (Debian's libdnnl 2.6.3), softgrad's bfloat16 GEMM backend. This header and
// core/onednn.cpp are the only places that know about oneDNN; OpenBLAS (core/blas.h)
// stays the float32/float64 path.
//
// oneDNN picks its kernels by CPU at run time: AMX tiles (Sapphire Rapids and later),
// else AVX512-BF16 dot products (Cooper Lake, Zen 4), else bfloat16 is emulated on
// float32 units (slower than sgemm) or not available at all. softgrad counts the first
// two as native and uses oneDNN only then (OnednnInfo::bf16_native); otherwise autocast
// computes its products in float32 (core/autocast.h). ONEDNN_MAX_CPU_ISA=AVX512_CORE
// (or AVX2) makes a newer CPU behave like an older one, which the tests use.
#include <cstdint>
#include <string>
#include <vector>

#include "core/bfloat16.h"

namespace sg {

struct OnednnInfo {
  std::string version;     // "2.6.3"
  std::string isa;         // the ISA oneDNN runs on: "avx512_core_bf16", "avx512_core_amx", ...
  bool bf16_native = false;  // bfloat16 matmul runs on AMX or AVX512-BF16 instructions
  std::string bf16_impl;   // what a probe bfloat16 matmul chose ("brg:avx512_core_bf16"),
                           // or why there is none
};

// Probes once (the first call creates oneDNN's engine).
const OnednnInfo& onednn_info();

// Every implementation that has run a bfloat16 GEMM in this process, in first-use order
// (oneDNN's impl_info_str, e.g. "brg:avx512_core_amx_bf16").
std::vector<std::string> onednn_impls_used();

// Row-major GEMM with bfloat16 operands, float32 accumulation and a float32 result:
//   c (M, N) = op(a) @ op(b) + beta * c,  op(x) = x^T when its flag is set, beta 0 or 1.
// The layout arguments mean what they mean for sg::gemm (core/blas.h). M, N, K > 0.
// Primitives are cached by shape and layout. Requires onednn_info().bf16_native.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bfloat16* a, int64_t lda,
               const bfloat16* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace sg
