#pragma once
// Strided iteration shared by the copy, elementwise and reduction kernels.
// Operands of one shape but different strides are walked as runs along the innermost
// (coalesced) dimension; the kernel's inner loop sees raw offsets, a length and strides,
// so a contiguous or broadcast (stride 0) run becomes a tight vectorizable loop.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "core/shape.h"

namespace sg {

template <size_t N> struct StridedLayout {
  Shape shape;                      // coalesced; innermost last; at least one dim
  std::array<Strides, N> strides;  // per operand, in elements
  int64_t inner() const { return shape.back(); }
  int64_t outer() const {
    int64_t n = 1;
    for (size_t d = 0; d + 1 < shape.size(); ++d) n *= shape[d];
    return n;
  }
};

// Drops size-1 dims and merges neighbours that are contiguous with each other in every
// operand: (N, C) contiguous becomes (N*C), a transposed view stays 2-D.
template <size_t N> StridedLayout<N> coalesce(const Shape& shape, const std::array<Strides, N>& strides) {
  StridedLayout<N> L;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!L.shape.empty()) {
      bool mergeable = true;
      for (size_t k = 0; k < N; ++k)
        mergeable &= L.strides[k].back() == strides[k][d] * shape[d];
      if (mergeable) {
        L.shape.back() *= shape[d];
        for (size_t k = 0; k < N; ++k) L.strides[k].back() = strides[k][d];
        continue;
      }
    }
    L.shape.push_back(shape[d]);
    for (size_t k = 0; k < N; ++k) L.strides[k].push_back(strides[k][d]);
  }
  if (L.shape.empty()) {  // a scalar or all-ones shape: one run of length 1
    L.shape.push_back(1);
    for (size_t k = 0; k < N; ++k) L.strides[k].push_back(0);
  }
  return L;
}

// Calls run(offsets, n, inner_strides) for outer rows [row_begin, row_end).
template <size_t N, typename Run>
void for_each_run(const StridedLayout<N>& L, int64_t row_begin, int64_t row_end, Run&& run) {
  const int64_t nd = static_cast<int64_t>(L.shape.size());
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = L.strides[k][nd - 1];
  // Unravel row_begin into an odometer over the outer dims.
  std::vector<int64_t> idx(nd > 1 ? nd - 1 : 0, 0);
  std::array<int64_t, N> off{};
  int64_t r = row_begin;
  for (int64_t d = nd - 2; d >= 0; --d) {
    idx[d] = r % L.shape[d];
    r /= L.shape[d];
    for (size_t k = 0; k < N; ++k) off[k] += idx[d] * L.strides[k][d];
  }
  for (int64_t row = row_begin; row < row_end; ++row) {
    run(off, L.shape[nd - 1], inner_strides);
    for (int64_t d = nd - 2; d >= 0; --d) {  // advance the odometer
      ++idx[d];
      for (size_t k = 0; k < N; ++k) off[k] += L.strides[k][d];
      if (idx[d] < L.shape[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= idx[d] * L.strides[k][d];
      idx[d] = 0;
    }
  }
}

// Elements per thread below which a loop stays on one thread (thread start-up costs
// about as much as streaming this many floats).
inline constexpr int64_t kGrainElems = 32768;

// Splits [0, n) into contiguous chunks over threads when the work is large enough.
// fn(begin, end) must not throw (it runs inside an OpenMP region).
template <typename Fn> void parallel_for(int64_t n, int64_t cost_per_item, Fn&& fn) {
  const int64_t work = n * (cost_per_item > 0 ? cost_per_item : 1);
  const int max_threads = omp_get_max_threads();
  int threads = static_cast<int>(std::min<int64_t>(max_threads, work / kGrainElems));
  if (threads <= 1 || omp_in_parallel() || n < 2) {
    fn(int64_t{0}, n);
    return;
  }
  if (threads > n) threads = static_cast<int>(n);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) fn(begin, end);
  }
}

// Walks the layout's runs in parallel over outer rows (or splits a single long run).
template <size_t N, typename Run> void parallel_runs(const StridedLayout<N>& L, Run&& run) {
  const int64_t rows = L.outer(), inner = L.inner();
  if (rows == 1) {  // one long run: split it
    parallel_for(inner, 1, [&](int64_t b, int64_t e) {
      std::array<int64_t, N> off;
      std::array<int64_t, N> st;
      for (size_t k = 0; k < N; ++k) {
        st[k] = L.strides[k][0];
        off[k] = b * st[k];
      }
      run(off, e - b, st);
    });
    return;
  }
  parallel_for(rows, inner, [&](int64_t b, int64_t e) { for_each_run(L, b, e, run); });
}

}  // namespace sg
