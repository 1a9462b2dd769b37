#pragma once
// OpenBLAS's kernel set. Debian's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels by CPU
// model at load time and falls back to "Prescott" (SSE3, ~6x slower sgemm) on models it
// does not know, e.g. Intel family 6 model 207 (Emerald Rapids). softgrad corrects that
// once, before the first tensor op: when OpenBLAS chose Prescott, OPENBLAS_CORETYPE is
// not set and the CPU has AVX-512 (or AVX2 + FMA), it selects Cooperlake (AVX-512 with
// BF16), SkylakeX (AVX-512) or Haswell (AVX2) instead and sets OPENBLAS_CORETYPE to the
// same value, so child processes (the PyTorch peer of the benchmarks) get the same
// kernels. An OPENBLAS_CORETYPE set by the user is always respected.
#include <cstdint>
#include <string>

namespace sg {

// Row-major GEMM through OpenBLAS (float: sgemm, double: dgemm):
//   c (M, N) = alpha * op(a) @ op(b) + beta * c,  op(x) = x^T when its flag is set.
// a is (M, K) with row stride lda (or (K, M) when transposed), b (K, N) with ldb (or
// (N, K)), c has row stride ldc. Called inside a parallel region, it runs single-threaded.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

struct BlasInfo {
  std::string core;      // the kernel set in use, as OpenBLAS names it ("Cooperlake")
  std::string detected;  // what OpenBLAS picked by itself at load time
  bool corrected = false;  // softgrad replaced `detected` with `core`
};

// Applies the correction on first call (the library calls it while starting up).
const BlasInfo& blas_info();

}  // namespace sg
