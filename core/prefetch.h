#pragma once
// Software prefetch for kernels that stream through rows read once from memory.
//
//   for (i = 0; i + B <= n; i += B) { prefetch_lines_ahead(x + i, B); ... x[i .. i+B) ... }
//
// NOTE: measured on a 2-vCPU Sapphire Rapids VM (bench/RESULTS.md): with the hardware
// prefetchers alone, a softmax row loop did not overlap its exps with its loads (time =
// compute + transfer: 7.6 ms at 4096x4096); asking for the lines 32 KB ahead brought it to
// 4.8 ms. Prefetching past the end of a buffer is harmless (a prefetch never faults).
#include <cstdint>

namespace sg {

constexpr int64_t kPrefetchAheadBytes = int64_t{32} << 10;
constexpr int64_t kCacheLineBytes = 64;

// Prefetches the cache lines that will hold p[0, count) kPrefetchAheadBytes from now.
// NOTE: always_inline and the builtin rather than hwy::Prefetch: called from Highway
// lambdas compiled with a target attribute, GCC 12 silently dropped the prefetches of a
// plain inline helper.
template <typename T> __attribute__((always_inline)) inline void prefetch_lines_ahead(const T* p, int64_t count) {
  const char* c = reinterpret_cast<const char*>(p) + kPrefetchAheadBytes;
  const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
  for (int64_t b = 0; b < bytes; b += kCacheLineBytes) __builtin_prefetch(c + b, /*rw=*/0, /*locality=*/3);
}

}  // namespace sg
