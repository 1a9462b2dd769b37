#pragma once
// Raw strided kernels that core itself needs (no autograd): copying with dtype
// conversion and accumulating a gradient. Ops reuse them.
#include "core/tensor.h"

namespace sg {

// dst[i] = convert(src[i]) for same-shape tensors of any strides and dtypes.
void copy_kernel(const Tensor& dst, const Tensor& src);
// dst[i] += src[i] for same-shape, same-dtype floating tensors; dst must not alias src.
void add_into_kernel(const Tensor& dst, const Tensor& src);
// Creates a fresh contiguous impl (no history) with the given shape and dtype.
Tensor make_contiguous_copy(const Tensor& src);

}  // namespace sg
