#pragma once
// Shape ops. Views (reshape when the strides allow it, view, transpose, permute, narrow,
// slice, select, squeeze, unsqueeze, expand) share storage with their input; the rest copy.
// All are differentiable for floating tensors.
#include <vector>

#include "core/tensor.h"

namespace sg {

Tensor reshape(const Tensor& x, const Shape& shape);  // one dim may be -1; copies if it must
Tensor view(const Tensor& x, const Shape& shape);     // never copies; throws if impossible
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor t(const Tensor& x);  // 2-D transpose (0-D and 1-D returned as is)
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);  // removes dim
Tensor squeeze(const Tensor& x);               // all size-1 dims
Tensor squeeze(const Tensor& x, int64_t dim);  // only if that dim has size 1
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor expand(const Tensor& x, const Shape& shape);  // -1 keeps a dim; new dims in front
Tensor contiguous(const Tensor& x);  // x itself when already contiguous
Tensor clone(const Tensor& x);
Tensor to(const Tensor& x, Dtype dtype);  // differentiable between float32/float64; bfloat16: see core/dtype.h

Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0);
// out[..., i, ...] = x[..., index[i], ...] along dim; index is 1-D int64.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out[i][j][k] = x[i][index[i][j][k]][k] for dim 1 (PyTorch's gather); index is int64
// with x's number of dims and sizes no larger than x's outside `dim`.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);

}  // namespace sg
