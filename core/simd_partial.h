#pragma once
// Loads and stores of the first n lanes of a vector that never touch memory past them, for
// the tails of rows.
//
// Highway 1.0.3's MaskedLoad is a full aligned load on SSE4 and EMU128 (a fault on an
// unaligned row, a read past the end of a buffer) and its BlendedStore there reads and
// writes the whole vector; on AVX2 and AVX-512 both are masked instructions that leave the
// other lanes' memory alone. Below AVX2 (a portable SOFTGRAD_NATIVE=OFF build) these go
// through a stack buffer instead.
#include <hwy/highway.h>

#include <algorithm>
#include <cstring>

namespace sg::simd {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
inline constexpr bool kNativeMaskedMemory = true;
#else
inline constexpr bool kNativeMaskedMemory = false;
#endif

// Lanes [0, n) from p, the rest 0 (n may exceed the lane count: then a full vector).
template <class D> HWY_INLINE hn::Vec<D> LoadFirstN(D d, const hn::TFromD<D>* HWY_RESTRICT p, size_t n) {
  if constexpr (kNativeMaskedMemory) {
    return hn::MaskedLoad(hn::FirstN(d, n), d, p);
  } else {
    HWY_ALIGN hn::TFromD<D> buf[hn::MaxLanes(d)] = {};
    std::memcpy(buf, p, std::min(n, hn::Lanes(d)) * sizeof(buf[0]));
    return hn::Load(d, buf);
  }
}

// Writes lanes [0, n) of v to p; memory past them is not touched.
template <class D> HWY_INLINE void StoreFirstN(hn::Vec<D> v, D d, hn::TFromD<D>* HWY_RESTRICT p, size_t n) {
  if constexpr (kNativeMaskedMemory) {
    hn::BlendedStore(v, hn::FirstN(d, n), d, p);
  } else {
    HWY_ALIGN hn::TFromD<D> buf[hn::MaxLanes(d)];
    hn::Store(v, d, buf);
    std::memcpy(p, buf, std::min(n, hn::Lanes(d)) * sizeof(buf[0]));
  }
}

}  // namespace sg::simd
