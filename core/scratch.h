#pragma once
// Per-thread scratch buffers for kernels (tiles, rows kept between passes): each grows as
// needed and is reused across calls, so a hot loop never allocates.
#include <cstdint>
#include <vector>

namespace sg {

inline constexpr int kScratchSlots = 4;

// At least n elements of this thread's buffer `slot` (0 .. kScratchSlots - 1) for T. The
// pointer stays valid until the same thread asks the same slot for more elements.
template <typename T> T* thread_scratch(int64_t n, int slot) {
  thread_local std::vector<T> buffers[kScratchSlots];
  std::vector<T>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(static_cast<size_t>(n));
  return b.data();
}

}  // namespace sg
