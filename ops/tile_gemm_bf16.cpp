// See ops/tile_gemm_bf16.h. This file is compiled for the build's baseline CPU: it checks
// the CPU, owns the per-thread packed operands and calls the AVX-512 half
// (ops/tile_gemm_bf16_avx512.cpp) only where it runs.
#include "ops/tile_gemm_bf16.h"

#include <algorithm>

#include "core/bfloat16.h"
#include "core/error.h"
#include "core/scratch.h"

namespace sg::kernels {

namespace bf16_avx512 {  // ops/tile_gemm_bf16_avx512.cpp
void pack_rows(const float* src, int64_t ld_src, int64_t M, int64_t K, uint32_t* dst, int64_t ld_dst);
void pack_pairs(const float* src, int64_t ld_src, int64_t K, int64_t N, uint32_t* dst, int64_t ld_dst);
void gemm(int64_t M, int64_t N, int64_t Kp, float alpha, const uint32_t* a, int64_t a_rs, int64_t a_ks,
          const uint32_t* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);
}  // namespace bf16_avx512

bool tile_gemm_bf16_supported() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return supported;
}

void tile_gemm_bf16(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t a_rs, int64_t a_ks,
                    const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  SG_CHECK(tile_gemm_bf16_supported(), "tile_gemm_bf16: this CPU has no AVX512-BF16 (check tile_gemm_bf16_supported)");
  SG_CHECK(a_ks == 1 || a_rs == 1, "tile_gemm_bf16: A must have unit row or column stride, got strides ({}, {})",
           a_rs, a_ks);
  if (M <= 0 || N <= 0) return;
  const int64_t Kp = (K + 1) / 2;  // pairs along K
  uint32_t* ap = thread_scratch<uint32_t>(std::max<int64_t>(M * Kp, 1), 0);
  uint32_t* bp = thread_scratch<uint32_t>(std::max<int64_t>(Kp * N, 1), 1);
  int64_t pa_rs = Kp, pa_ks = 1;  // A's words (r, p): rows of pairs
  if (a_ks == 1) {
    bf16_avx512::pack_rows(a, a_rs, M, K, ap, Kp);
  } else {  // A read transposed (A(r, k) = a[k * a_ks + r]): pairs run down columns, as B's
    bf16_avx512::pack_pairs(a, a_ks, K, M, ap, M);
    pa_rs = 1;
    pa_ks = M;
  }
  bf16_avx512::pack_pairs(b, ldb, K, N, bp, N);
  bf16_avx512::gemm(M, N, Kp, alpha, ap, pa_rs, pa_ks, bp, N, accumulate, c, ldc);
}

void tile_gemm_bf16_reference(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t a_rs,
                              int64_t a_ks, const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  const auto bf16 = [](float x) { return static_cast<double>(bfloat16(x)); };
  for (int64_t r = 0; r < M; ++r)
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0.0;
      for (int64_t k = 0; k < K; ++k) sum += bf16(a[r * a_rs + k * a_ks]) * bf16(b[k * ldb + n]);
      float& out = c[r * ldc + n];
      out = static_cast<float>(static_cast<double>(alpha) * sum + (accumulate ? static_cast<double>(out) : 0.0));
    }
}

}  // namespace sg::kernels
