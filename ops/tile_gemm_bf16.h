#pragma once
// tile_gemm with bfloat16 products: the attention kernels' tile products under autocast.
//
//   C (M, N) = alpha * bf16(A) bf16(B)        (accumulate = false)
//   C (M, N) += alpha * bf16(A) bf16(B)       (accumulate = true)
//
// Same arguments and layouts as tile_gemm<float> (ops/tile_gemm.h): A read through any
// strides, B and C row-major. A and B are float32; each call rounds them to bfloat16
// (nearest even) into packed per-thread copies, and the product runs on AVX512-BF16's
// vdpbf16ps: each instruction takes 16 lanes of two bfloat16 products each, forms the
// products exactly and adds them to float32 accumulators (so only the operands are
// rounded; the sums are float32). Like the instruction, the packing treats subnormal
// inputs as 0 and the sums flush subnormal results to 0 (|x| < 2^-126).
//
// Layout of the packed operands (ops/tile_gemm_bf16_avx512.cpp): K is taken in pairs
// (k, k+1), a 32-bit word holding bf16(x[k]) in its low half and bf16(x[k+1]) in its high
// half, 0 past an odd K. B packs to (K/2, N) words, so one 16-word load is 16 columns'
// pairs; A packs to (M, K/2) words (or (K/2, M) when A is read transposed), broadcast one
// word at a time.
//
// The kernel is compiled for AVX-512 in a translation unit of its own and dispatched at
// run time: call tile_gemm_bf16 only when tile_gemm_bf16_supported() says this CPU has it.
#include <cstdint>

namespace sg::kernels {

// Whether this CPU runs tile_gemm_bf16 (AVX512-F, -BW and -BF16; AMX CPUs have them).
bool tile_gemm_bf16_supported();

void tile_gemm_bf16(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t a_rs, int64_t a_ks,
                    const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);

// The reference kept for tests: A and B rounded to bfloat16 one element at a time (nearest
// even, subnormals kept), products and sums in float64, C = alpha * sum (+ C).
void tile_gemm_bf16_reference(int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t a_rs,
                              int64_t a_ks, const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);

}  // namespace sg::kernels
