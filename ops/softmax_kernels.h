#pragma once
// Kernels of the softmax family, apart from the graph wiring in ops/softmax.cpp.
// They take raw pointers to contiguous buffers and know nothing about Tensor.
//
// Layout: a contiguous tensor seen as (outer, C, inner); the softmax runs along C, so a
// "row" is C elements spaced `inner` apart. inner == 1 is the last-dim fast path (rows
// are contiguous); inner > 1 (softmax over a non-last dim) vectorizes across the inner
// positions instead of transposing.
//
// Forward, per row: one read computes the running max and the rescaled sum together
// (online normalizer), then one pass writes the output. Rows run in parallel; a single
// very long row is split across threads and the per-thread (max, sum) pairs merged.
//
// Edge rules (documented in ops/softmax.h), shared by every kernel here:
//   all entries -inf : sum = 0  -> softmax 0,       log_softmax -inf
//   k entries +inf   : max = +inf, sum = k -> softmax 1/k there (0 elsewhere),
//                      log_softmax -log k there (-inf elsewhere)
//   any NaN          : sum = NaN -> the whole row NaN
#include <cstdint>
#include <limits>

namespace sg::kernels {

struct RowsShape {
  int64_t outer = 1;
  int64_t C = 1;  // the softmax dim
  int64_t inner = 1;
  int64_t rows() const { return outer * inner; }
};

// ---- softmax and log_softmax ----
// x, y, s, g, dx: (outer, C, inner), contiguous. dx may alias g.
template <typename T> void softmax_forward(const T* x, T* y, RowsShape shape);
template <typename T> void log_softmax_forward(const T* x, T* y, RowsShape shape);
template <typename T> void softmax_backward(const T* s, const T* g, T* dx, RowsShape shape);      // s*(g-<s,g>)
template <typename T> void log_softmax_backward(const T* y, const T* g, T* dx, RowsShape shape);  // g-exp(y)*sum(g)

// Naive references (scalar, three passes, sums in long double), kept for tests.
template <typename T> void softmax_forward_naive(const T* x, T* y, RowsShape shape);
template <typename T> void log_softmax_forward_naive(const T* x, T* y, RowsShape shape);
template <typename T> void softmax_backward_naive(const T* s, const T* g, T* dx, RowsShape shape);
template <typename T> void log_softmax_backward_naive(const T* y, const T* g, T* dx, RowsShape shape);

// ---- building blocks for the fused losses ----
// The online normalizer of one contiguous row: max = max_i x_i and sum = sum_i exp(x_i - max),
// with the edge rules above (sum = 0 for an all -inf row, sum = k when max = +inf, NaN if any
// x_i is NaN). Vectorized; the sum is accumulated in double.
template <typename T> struct MaxSum {
  T max;
  double sum;
};
template <typename T> MaxSum<T> row_max_sum(const T* x, int64_t n);
// Combines the normalizers of two parts of one row.
template <typename T> MaxSum<T> merge(MaxSum<T> a, MaxSum<T> b);
// log(sum_i exp(x_i)) = max + log(sum): -inf for an all -inf row, +inf when max = +inf.
template <typename T> T log_sum_exp(MaxSum<T> ms);
// One entry of log_softmax / softmax of a row from its normalizer, with the edge rules
// (scalar; the kernels use vector loops for ordinary rows and these for the edge rows).
template <typename T> T log_softmax_entry(T x, MaxSum<T> ms);
template <typename T> T softmax_entry(T x, MaxSum<T> ms);
// A row is "ordinary" when 0 < sum < inf and max is finite: then softmax = exp(x - lse).
template <typename T> bool is_ordinary(MaxSum<T> ms) {  // inline: called once per row
  return ms.sum > 0 && ms.sum < std::numeric_limits<double>::infinity() && ms.max < std::numeric_limits<T>::infinity();
}

}  // namespace sg::kernels
