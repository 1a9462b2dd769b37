// See core/blas.h. The kernel set is switched with OpenBLAS's own entry points for
// DYNAMIC_ARCH builds (gotoblas_dynamic_quit / gotoblas_dynamic_init re-read
// OPENBLAS_CORETYPE). They are declared weak: a BLAS without them (a build for one fixed
// CPU) is left alone.
#include "core/blas.h"

#include <cblas.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

extern "C" {
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));
}

namespace sg {
namespace {

// The best OpenBLAS kernel set this CPU runs, or nullptr when Prescott is already right.
const char* better_core_for_this_cpu() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512) return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

BlasInfo select_blas_kernels() {
  BlasInfo info;
  info.detected = info.core = openblas_get_corename();
  if (info.detected != "Prescott" || std::getenv("OPENBLAS_CORETYPE") != nullptr) return info;
  if (gotoblas_dynamic_init == nullptr || gotoblas_dynamic_quit == nullptr) return info;
  const char* better = better_core_for_this_cpu();
  if (better == nullptr) return info;
  setenv("OPENBLAS_CORETYPE", better, /*overwrite=*/1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  info.core = openblas_get_corename();
  info.corrected = info.core != info.detected;
  return info;
}

}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
  constexpr auto cblas_gemm = [] {
    if constexpr (std::is_same_v<T, float>)
      return &cblas_sgemm;
    else
      return &cblas_dgemm;
  }();
  cblas_gemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(M),
             static_cast<int>(N), static_cast<int>(K), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
             c, static_cast<int>(ldc));
}
template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

const BlasInfo& blas_info() {
  static const BlasInfo info = select_blas_kernels();
  return info;
}

}  // namespace sg
