#pragma once
// OpenBLAS's kernel set. Debian's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels by CPU
// model at load time and falls back to "Prescott" (SSE3, ~6x slower sgemm) on models it
// does not know, e.g. Intel family 6 model 207 (Emerald Rapids). softgrad corrects that
// once, before the first tensor op: when OpenBLAS chose Prescott, OPENBLAS_CORETYPE is
// not set and the CPU has AVX-512 (or AVX2 + FMA), it selects Cooperlake (AVX-512 with
// BF16), SkylakeX (AVX-512) or Haswell (AVX2) instead and sets OPENBLAS_CORETYPE to the
// same value, so child processes (the PyTorch peer of the benchmarks) get the same
// kernels. An OPENBLAS_CORETYPE set by the user is always respected.
#include <string>

namespace sg {

struct BlasInfo {
  std::string core;      // the kernel set in use, as OpenBLAS names it ("Cooperlake")
  std::string detected;  // what OpenBLAS picked by itself at load time
  bool corrected = false;  // softgrad replaced `detected` with `core`
};

// Applies the correction on first call (the library calls it while starting up).
const BlasInfo& blas_info();

}  // namespace sg
