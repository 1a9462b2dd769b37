#pragma once
// Shapes and strides are plain vectors of int64 (strides count elements, not bytes).
// fmt prints a Shape as "[2, 3]" (fmt/ranges.h).
#include <cstdint>
#include <vector>

namespace sg {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
Strides contiguous_strides(const Shape& shape);
// Wraps a possibly negative dim into [0, ndim); throws naming `op` when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
// NumPy broadcasting of two shapes; throws naming `op` and both shapes when incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace sg
