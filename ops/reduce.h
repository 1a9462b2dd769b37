#pragma once
// Reductions. `dims` may be negative and must be distinct; keepdim keeps them as size 1.
// NOTE: an empty `dims` list reduces nothing (NumPy's axis=()), unlike PyTorch's dim=[]
// which reduces everything: use the overloads without dims for that.
// sum/mean/var/max/min of floating tensors are differentiable; sum/max/min/argmax also
// take int64. float32 sums accumulate in double.
#include <vector>

#include "core/tensor.h"

namespace sg {

Tensor sum(const Tensor& x);  // all elements -> 0-dim
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// Variance with Bessel's correction by default (correction = 1, PyTorch's unbiased=true).
// NOTE: there is deliberately no var(x, correction) overload: var(x, {1}) must mean dim 1.
// For all elements with another correction, list every dim.
Tensor var(const Tensor& x);
Tensor var(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false, int64_t correction = 1);

// ValuesIndices {values, indices (int64)} is in core/tensor.h.
// All-element max/min: the gradient is shared evenly among tied maxima (as PyTorch).
Tensor max(const Tensor& x);
Tensor min(const Tensor& x);
// Along one dim: values and the index of the first maximum; the gradient goes to it.
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x);  // index into the flattened tensor, 0-dim int64
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false);

// Sums a broadcast gradient back down to `shape` (the inverse of broadcasting); used by
// the backward of every broadcasting op. Differentiable.
Tensor sum_to(const Tensor& x, const Shape& shape);

}  // namespace sg
