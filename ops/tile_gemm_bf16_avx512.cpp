// The AVX512-BF16 half of ops/tile_gemm_bf16.h: packing float32 to bfloat16 pairs, and the
// register-blocked product on vdpbf16ps. Compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512bf16 (CMakeLists.txt), called only after tile_gemm_bf16_supported().
//
// NOTE: nothing here may be an inline function or template that another translation unit
// also instantiates (std::min, std::vector, sg headers): the linker keeps one copy of such a
// function, and if it kept this AVX-512 one, a caller on a CPU without AVX-512 would crash.
// So this file includes no header but the intrinsics', and everything but its three entry
// points has internal linkage.
#include <immintrin.h>
#include <stdint.h>

namespace sg::kernels::bf16_avx512 {
namespace {

constexpr int64_t kLanes = 16;  // float32 lanes (and bfloat16 pairs) in a zmm

// The first n lanes (all 16 when n >= 16, none when n <= 0).
__mmask16 first_lanes(int64_t n) {
  if (n >= kLanes) return 0xFFFF;
  return n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1u);
}

// 32 bfloat16 in the order lo[0..15], hi[0..15], nearest even (vcvtne2ps2bf16).
__m512i to_bf16_32(__m512 lo, __m512 hi) { return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)); }

// ---- the product on packed operands: C (M, N) (+)= alpha * A B, K in Kp pairs ----
// A word (r, p) at a[r * a_rs + p * a_ks]; B word (p, n) at b[p * ldb + n].

// One block of R rows by NV vectors of columns (`cols` valid columns, at most NV * 16).
template <int R, int NV>
void block(int64_t Kp, float alpha, const uint32_t* a, int64_t a_rs, int64_t a_ks, const uint32_t* b, int64_t ldb,
           bool accumulate, float* c, int64_t ldc, int64_t cols) {
  __mmask16 mask[NV];
  for (int j = 0; j < NV; ++j) mask[j] = first_lanes(cols - j * kLanes);
  __m512 acc[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < Kp; ++p) {
    __m512bh bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = (__m512bh)_mm512_maskz_loadu_epi32(mask[j], b + p * ldb + j * kLanes);
    const uint32_t* ap = a + p * a_ks;
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512bh ar = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[r * a_rs]));
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], ar, bv[j]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      __m512 out = _mm512_mul_ps(acc[r][j], va);
      if (accumulate) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(mask[j], cr + j * kLanes));
      _mm512_mask_storeu_ps(cr + j * kLanes, mask[j], out);
    }
  }
}

// Exactly `rows` (< kRows) rows as one block.
template <int kRows, int NV>
void last_rows(int64_t rows, int64_t Kp, float alpha, const uint32_t* a, int64_t a_rs, int64_t a_ks,
               const uint32_t* b, int64_t ldb, bool accumulate, float* c, int64_t ldc, int64_t cols) {
  if constexpr (kRows > 1) {
    if (rows == kRows - 1)
      block<kRows - 1, NV>(Kp, alpha, a, a_rs, a_ks, b, ldb, accumulate, c, ldc, cols);
    else
      last_rows<kRows - 1, NV>(rows, Kp, alpha, a, a_rs, a_ks, b, ldb, accumulate, c, ldc, cols);
  }
}

// Rows [0, M) of one block of columns, kRows at a time, then the rest.
template <int kRows, int NV>
void column_block(int64_t M, int64_t Kp, float alpha, const uint32_t* a, int64_t a_rs, int64_t a_ks,
                  const uint32_t* b, int64_t ldb, bool accumulate, float* c, int64_t ldc, int64_t cols) {
  int64_t r0 = 0;
  for (; r0 + kRows <= M; r0 += kRows)
    block<kRows, NV>(Kp, alpha, a + r0 * a_rs, a_rs, a_ks, b, ldb, accumulate, c + r0 * ldc, ldc, cols);
  if (r0 < M)
    last_rows<kRows, NV>(M - r0, Kp, alpha, a + r0 * a_rs, a_rs, a_ks, b, ldb, accumulate, c + r0 * ldc, ldc, cols);
}

}  // namespace

// dst word (r, p) = (src[r, 2p], src[r, 2p + 1]) for r < M, p < ceil(K / 2); src rows
// ld_src apart, dst rows ld_dst words apart; the high half past an odd K is 0.
void pack_rows(const float* src, int64_t ld_src, int64_t M, int64_t K, uint32_t* dst, int64_t ld_dst) {
  for (int64_t r = 0; r < M; ++r) {
    const float* s = src + r * ld_src;
    uint32_t* d = dst + r * ld_dst;
    for (int64_t k = 0; k < K; k += 2 * kLanes) {
      const int64_t left = K - k;
      const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(left), s + k);
      const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(left - kLanes), s + k + kLanes);
      _mm512_mask_storeu_epi32(d + k / 2, first_lanes((left + 1) / 2), to_bf16_32(lo, hi));
    }
  }
}

// dst word (p, n) = (src[2p, n], src[2p + 1, n]) for p < ceil(K / 2), n < N; src rows
// ld_src apart, dst rows ld_dst words apart; the high half past an odd K is 0.
void pack_pairs(const float* src, int64_t ld_src, int64_t K, int64_t N, uint32_t* dst, int64_t ld_dst) {
  // vcvtne2ps2bf16 gives row 2p's 16 values then row 2p+1's; this interleaves them.
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t k = 0; k < K; k += 2) {
    const float* even = src + k * ld_src;
    const float* odd = even + ld_src;
    const bool has_odd = k + 1 < K;
    uint32_t* d = dst + (k / 2) * ld_dst;
    for (int64_t n = 0; n < N; n += kLanes) {
      const __mmask16 m = first_lanes(N - n);
      const __m512 lo = _mm512_maskz_loadu_ps(m, even + n);
      const __m512 hi = has_odd ? _mm512_maskz_loadu_ps(m, odd + n) : _mm512_setzero_ps();
      _mm512_mask_storeu_epi32(d + n, m, _mm512_permutexvar_epi16(interleave, to_bf16_32(lo, hi)));
    }
  }
}

// C (M, N) (+)= alpha * A B on packed operands, K in Kp pairs (see block above).
void gemm(int64_t M, int64_t N, int64_t Kp, float alpha, const uint32_t* a, int64_t a_rs, int64_t a_ks,
          const uint32_t* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  // 6 rows x 4 vectors (24 accumulators, 4 loads of B and 6 broadcasts of A per pair) as in
  // tile_gemm; the last block of columns, 1 to 4 vectors (partial or not), takes more rows
  // when narrower (12 x 1 for a head dim of 16).
  constexpr int64_t kWide = 4 * kLanes;
  int64_t c0 = 0;
  for (; c0 + kWide <= N; c0 += kWide)
    column_block<6, 4>(M, Kp, alpha, a, a_rs, a_ks, b + c0, ldb, accumulate, c + c0, ldc, kWide);
  const int64_t cols = N - c0;
  if (cols == 0) return;
  switch ((cols + kLanes - 1) / kLanes) {
    case 1: column_block<12, 1>(M, Kp, alpha, a, a_rs, a_ks, b + c0, ldb, accumulate, c + c0, ldc, cols); break;
    case 2: column_block<8, 2>(M, Kp, alpha, a, a_rs, a_ks, b + c0, ldb, accumulate, c + c0, ldc, cols); break;
    case 3: column_block<6, 3>(M, Kp, alpha, a, a_rs, a_ks, b + c0, ldb, accumulate, c + c0, ldc, cols); break;
    default: column_block<6, 4>(M, Kp, alpha, a, a_rs, a_ks, b + c0, ldb, accumulate, c + c0, ldc, cols); break;
  }
}

}  // namespace sg::kernels::bf16_avx512
