#include "core/shape.h"

#include <algorithm>

#include "core/error.h"

namespace sg {

// NOTE: the overflow check multiplies every dim, a zero among them counted as 1: [0, 2^62,
// 2^62] has no elements, but its leading stride (2^124) does not fit in int64, and a zero
// first in the product would hide that from a plain running product.
int64_t shape_numel(const Shape& shape) {
  int64_t n = 1, span = 1;  // span: the product with zeros counted as 1 (the largest stride's bound)
  for (int64_t s : shape) {
    SG_CHECK(s >= 0, "shape {} has a negative dim {}", shape, s);
    SG_CHECK(!__builtin_mul_overflow(span, std::max<int64_t>(s, 1), &span),
             "shape {} has more elements than int64 can count", shape);
    n *= s;  // |n| <= span: cannot overflow
  }
  return n;
}

Strides contiguous_strides(const Shape& shape) {
  shape_numel(shape);  // throws when a stride would overflow
  Strides strides(shape.size());
  int64_t s = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  SG_CHECK(dim >= lo && dim <= hi, "{}: dim {} is out of range for a {}-d tensor (expected [{}, {}])", op,
           dim, ndim, lo, hi);
  return dim < 0 ? dim + (ndim == 0 ? 1 : ndim) : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    SG_CHECK(da == db || da == 1 || db == 1, "{}: shapes {} and {} cannot be broadcast (dim {}: {} vs {})",
             op, a, b, i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace sg
