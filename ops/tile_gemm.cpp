// See ops/tile_gemm.h.
#include "ops/tile_gemm.h"

#include <hwy/highway.h>

#include <algorithm>

#include "core/simd_partial.h"

namespace sg::kernels {
namespace hn = hwy::HWY_NAMESPACE;

namespace {

// C[0..R) x [0..cols) of one block of NV vectors of columns (kFull when cols == NV lanes).
template <int R, int NV, bool kFull, typename T>
HWY_INLINE void block(int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb,
                      bool accumulate, T* c, int64_t ldc, size_t cols) {
  const hn::ScalableTag<T> d;
  using V = hn::Vec<decltype(d)>;
  const size_t L = hn::Lanes(d);
  size_t n[NV];  // valid lanes of each vector of columns
  for (int j = 0; j < NV; ++j) n[j] = cols > j * L ? std::min(cols - j * L, L) : 0;
  V acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = hn::Zero(d);
  for (int64_t k = 0; k < K; ++k) {
    const T* bk = b + k * ldb;
    V bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = kFull ? hn::LoadU(d, bk + j * L) : simd::LoadFirstN(d, bk + j * L, n[j]);
    const T* ak = a + k * a_ks;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V ar = hn::Set(d, ak[r * a_rs]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] = hn::MulAdd(ar, bv[j], acc[r][j]);
    }
  }
  const V va = hn::Set(d, alpha);
  for (int r = 0; r < R; ++r) {
    T* cr = c + r * ldc;
    for (int j = 0; j < NV; ++j) {
      V out = hn::Mul(acc[r][j], va);
      if (kFull) {
        if (accumulate) out = hn::Add(out, hn::LoadU(d, cr + j * L));
        hn::StoreU(out, d, cr + j * L);
      } else {
        if (accumulate) out = hn::Add(out, simd::LoadFirstN(d, cr + j * L, n[j]));
        simd::StoreFirstN(out, d, cr + j * L, n[j]);
      }
    }
  }
}

// The last `rest` rows (0 <= rest <= R) as one block of exactly that many rows.
template <int R, int NV, bool kFull, typename T>
HWY_INLINE void last_rows(int64_t rest, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
                          int64_t ldb, bool accumulate, T* c, int64_t ldc, size_t cols) {
  if constexpr (R > 0) {
    if (rest == R)
      block<R, NV, kFull>(K, alpha, a, a_rs, a_ks, b, ldb, accumulate, c, ldc, cols);
    else
      last_rows<R - 1, NV, kFull>(rest, K, alpha, a, a_rs, a_ks, b, ldb, accumulate, c, ldc, cols);
  }
}

// Rows [0, M) of one column block, kRows at a time, then the remainder.
template <int kRows, int NV, bool kFull, typename T>
void column_block(int64_t M, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb,
                  bool accumulate, T* c, int64_t ldc, size_t cols) {
  int64_t r0 = 0;
  for (; r0 + kRows <= M; r0 += kRows)
    block<kRows, NV, kFull>(K, alpha, a + r0 * a_rs, a_rs, a_ks, b, ldb, accumulate, c + r0 * ldc, ldc, cols);
  last_rows<kRows - 1, NV, kFull>(M - r0, K, alpha, a + r0 * a_rs, a_rs, a_ks, b, ldb, accumulate, c + r0 * ldc, ldc,
                                  cols);
}

// The last block of columns, `cols` < 4 vectors wide: as many vectors as it needs, with
// more rows per block when there are fewer vectors (a head dim of 16 floats is one vector:
// four would waste three quarters of the FMAs; 12 rows keep 12 accumulators busy).
template <typename T>
void narrow_block(int64_t M, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb,
                  bool accumulate, T* c, int64_t ldc, size_t cols, size_t lanes) {
  const size_t vectors = (cols + lanes - 1) / lanes;
  const bool full = cols == vectors * lanes;
  auto run = [&]<int kRows, int NV>() {
    if (full)
      column_block<kRows, NV, true>(M, K, alpha, a, a_rs, a_ks, b, ldb, accumulate, c, ldc, cols);
    else
      column_block<kRows, NV, false>(M, K, alpha, a, a_rs, a_ks, b, ldb, accumulate, c, ldc, cols);
  };
  switch (vectors) {
    case 1: run.template operator()<12, 1>(); break;
    case 2: run.template operator()<8, 2>(); break;
    case 3: run.template operator()<6, 3>(); break;
    default: run.template operator()<6, 4>(); break;
  }
}

// Column blocks of 4 vectors, then the rest as one narrower block.
template <typename T>
void gemm_blocks(int64_t M, int64_t N, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
                 int64_t ldb, bool accumulate, T* c, int64_t ldc) {
  constexpr int kRows = 6, NV = 4;
  const hn::ScalableTag<T> d;
  const size_t L = hn::Lanes(d);
  const int64_t W = NV * static_cast<int64_t>(L);
  int64_t c0 = 0;
  for (; c0 + W <= N; c0 += W)
    column_block<kRows, NV, true>(M, K, alpha, a, a_rs, a_ks, b + c0, ldb, accumulate, c + c0, ldc, size_t(W));
  if (c0 < N) narrow_block(M, K, alpha, a, a_rs, a_ks, b + c0, ldb, accumulate, c + c0, ldc, size_t(N - c0), L);
}

}  // namespace

template <typename T>
void tile_gemm(int64_t M, int64_t N, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
               int64_t ldb, bool accumulate, T* c, int64_t ldc) {
  // 6 x 4 vectors: 24 accumulators, per k 4 loads of B and 6 broadcasts of A for 24 FMAs.
  // (Measured here on the attention tile shapes: 8 x 2 was 5-10% slower, 8 x 3 and 12 x 2
  // much slower: too few registers left.)
  gemm_blocks(M, N, K, alpha, a, a_rs, a_ks, b, ldb, accumulate, c, ldc);
}

template void tile_gemm<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t, const float*, int64_t,
                               bool, float*, int64_t);
template void tile_gemm<double>(int64_t, int64_t, int64_t, double, const double*, int64_t, int64_t, const double*,
                                int64_t, bool, double*, int64_t);

}  // namespace sg::kernels
