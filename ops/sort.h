#pragma once
// Sorting, selection and sampling: sort, argsort, topk, cumsum (along one dim) and
// multinomial, with PyTorch's semantics except where a NOTE says otherwise.
//
//   sg::ValuesIndices s = sg::sort(x, 1, /*descending=*/true);  // s.values, s.indices (int64)
//   sg::ValuesIndices t = sg::topk(logits, 5);                  // the 5 largest along the last dim
//   sg::Tensor c = sg::cumsum(x, 0);
//   sg::Tensor ids = sg::multinomial(probs, 10, /*replacement=*/true, gen);  // (N, 10) int64
//
// Order, shared by sort, argsort and topk:
//   * NaN is the largest value (PyTorch's rule): last in an ascending sort, first in a
//     descending one, first among topk's largest, never among its smallest before every
//     number is taken. -0.0 and 0.0 are equal.
//   * Sorting is always stable: equal values (NaNs among themselves) keep their original
//     order, ascending or descending -- PyTorch's stable=true.
//     NOTE: there is no `stable` flag (PyTorch has one, default false): there is no
//     unstable path, and a flag that changes nothing would only mislead.
//   * topk breaks ties by the lower index first (PyTorch leaves the order of ties
//     unspecified), so the result is deterministic.
//
// Dims may be negative; a 0-dim tensor counts as one element along dim 0 (or -1), as in
// PyTorch. Inputs may be float32, float64 or int64 (bool is refused); the values of sort
// and topk and the result of cumsum are differentiable for floating inputs. Any strides.
#include <cstdint>

#include "core/generator.h"
#include "core/tensor.h"
#include "ops/reduce.h"  // ValuesIndices

namespace sg {

// x sorted along dim, and the int64 index in x of each value. Gradient: dy scattered back
// to the indices along dim (dx[..., indices[..., j, ...], ...] = dy[..., j, ...]).
ValuesIndices sort(const Tensor& x, int64_t dim = -1, bool descending = false);
// sort(x, dim, descending).indices, without the values.
Tensor argsort(const Tensor& x, int64_t dim = -1, bool descending = false);

// The k largest (or smallest) entries along dim and their int64 indices; k in [0, size of
// dim]. sorted = true lists them best first (ties: lower index first); sorted = false lists
// them in the order they appear in x (ascending index; PyTorch leaves that order
// unspecified). Gradient: dy scattered to the indices, zero elsewhere.
// NOTE: for a 0-dim x, k may be 0 or 1 and the result is x itself (0-dim) either way:
// PyTorch 1.13 returns the element for k = 0 too, since a 0-dim tensor cannot be empty.
ValuesIndices topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true, bool sorted = true);

// y[..., j, ...] = Σ_{i <= j} x[..., i, ...] along dim. float32 accumulates in double (as
// PyTorch on CPU: the result is the double sum rounded once per entry); int64 wraps around
// on overflow like the rest of softgrad's int64 arithmetic. Gradient: the reversed
// cumulative sum, dx[j] = Σ_{i >= j} dy[i].
Tensor cumsum(const Tensor& x, int64_t dim);

// Draws category indices with probability proportional to `probs`: (C) -> (num_samples),
// (N, C) -> (N, num_samples), int64. probs holds non-negative finite float32/float64
// weights that need not sum to 1; every row needs a positive weight. Zero-weight
// categories are never drawn. With replacement, draws are independent; without, each row
// holds distinct categories drawn one after the other from the weights of those not yet
// drawn (so num_samples may not exceed the row's count of non-zero weights).
// num_samples = 0 gives an empty result.
// NOTE: all randomness comes from gen, so the same seed gives the same samples, but the
// streams differ from PyTorch's: the same seed there gives other samples. PyTorch also
// refuses num_samples = 0 and, without replacement, draws zero-weight categories once the
// others are exhausted; softgrad refuses that instead.
Tensor multinomial(const Tensor& probs, int64_t num_samples, bool replacement, Generator& gen);

// ---- kernels: raw pointers, no Tensor -------------------------------------------------------
// Layout: a contiguous tensor seen as (O, R, I): O = the dims before `dim`, R = the size of
// `dim`, I = the dims after it; a "row" is R elements spaced I apart. The naive versions are
// the specification (insertion sort, a full sort for topk, a linear CDF scan) and the tests
// compare the fast ones with them.
namespace kernels {

// x, values, indices: (O, R, I). Stable, NaN largest (the order described above).
template <typename T>
void sort_forward(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, bool descending);
template <typename T>
void sort_forward_naive(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, bool descending);

// x: (O, R, I); values, indices: (O, K, I), 0 <= K <= R.
template <typename T>
void topk_forward(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, int64_t K, bool largest,
                  bool sorted);
template <typename T>
void topk_forward_naive(const T* x, T* values, int64_t* indices, int64_t O, int64_t R, int64_t I, int64_t K,
                        bool largest, bool sorted);

// dy, indices: (O, K, I); dx: (O, R, I), zeroed by the caller; indices distinct per row.
// dx[o, indices[o, k, i], i] = dy[o, k, i]: the backward of sort and topk.
template <typename T>
void scatter_rows(const T* dy, const int64_t* indices, T* dx, int64_t O, int64_t K, int64_t R, int64_t I);

// x, y: (O, R, I); y[o, r, i] = Σ_{s <= r} x[o, s, i] (float32 in double, int64 wrapping).
template <typename T> void cumsum_forward(const T* x, T* y, int64_t O, int64_t R, int64_t I);
// dy, dx: (O, R, I); dx[o, r, i] = Σ_{s >= r} dy[o, s, i].
template <typename T> void cumsum_backward(const T* dy, T* dx, int64_t O, int64_t R, int64_t I);

// w: (N, C) weights, already checked (finite, >= 0, a positive one per row, and without
// replacement at least S positive ones); out: (N, S). Rows are drawn one after the other
// from gen:
//   with replacement: per draw one gen.uniform() u, the category whose slice of the
//     cumulative weights holds u * total (binary search);
//   without: per row one gen.uniform() u_c per category c, an exponential E_c = -log(1 - u_c)
//     and the key log(w_c) - log(E_c); the S largest keys in decreasing order. That is
//     successive sampling without replacement (Efraimidis & Spirakis 2006, the exponential
//     form of the Gumbel-top-k trick that PyTorch's multinomial uses).
template <typename T>
void multinomial_forward(const T* w, int64_t N, int64_t C, int64_t S, bool replacement, Generator& gen, int64_t* out);
// Same draws, same results: a linear scan of the cumulative weights, a full sort of the keys.
template <typename T>
void multinomial_forward_naive(const T* w, int64_t N, int64_t C, int64_t S, bool replacement, Generator& gen,
                               int64_t* out);

}  // namespace kernels

}  // namespace sg
