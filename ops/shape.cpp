// Shape ops. Views build a new TensorImpl over the same storage (new shape, strides and
// offset); their backward maps the gradient back to the input's shape. Copies go through
// core's strided copy kernel.
#include "ops/shape.h"

#include <algorithm>
#include <numeric>
#include <optional>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/strided.h"
#include "ops/reduce.h"

namespace sg {

namespace {

Tensor make_view(const Tensor& x, Shape shape, Strides strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.impl()->storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = x.dtype();
  return Tensor(std::move(impl));
}

// Resolves one -1 entry and checks that the element count is preserved.
Shape infer_shape(const Shape& requested, int64_t numel, const Shape& from, const char* op) {
  Shape shape = requested;
  int64_t known = 1, infer_at = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      SG_CHECK(infer_at < 0, "{}: only one dimension can be -1, got {} for input of shape {}", op, requested, from);
      infer_at = static_cast<int64_t>(d);
    } else {
      SG_CHECK(shape[d] >= 0, "{}: invalid size {} in shape {} for input of shape {}", op, shape[d], requested, from);
      SG_CHECK(!__builtin_mul_overflow(known, shape[d], &known),
               "{}: shape {} has too many elements for input of shape {}", op, requested, from);
    }
  }
  if (infer_at >= 0) {
    SG_CHECK(known != 0 && numel % known == 0, "{}: shape {} is invalid for input of shape {} ({})", op,
             requested, from, plural(numel, "element"));
    shape[infer_at] = numel / known;
  }
  SG_CHECK(shape_numel(shape) == numel, "{}: shape {} is invalid for input of shape {} ({})", op, requested,
           from, plural(numel, "element"));
  return shape;
}

// Strides that let `shape` view memory laid out as (old_shape, old_strides) without a
// copy, if any exist (PyTorch's computeStride): dims of the new shape must split or merge
// runs of the old shape that are contiguous with each other.
std::optional<Strides> view_strides(const Shape& old_shape, const Strides& old_strides, const Shape& shape) {
  if (old_shape.empty() || shape_numel(old_shape) <= 1) return contiguous_strides(shape);
  Strides strides(shape.size());
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.back(), tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return strides;
}

// Records a view's backward, which always reshapes back or runs `back`.
void record_reshape_like(const char* name, const Tensor& x, Tensor& out) {
  if (!any_requires_grad({x})) return;
  const Shape in_shape = x.shape();
  record(name, {x}, out, [in_shape](const Tensor& g) { return grads(reshape(g, in_shape)); });
}

// Gradient of a strided sub-view: zeros of the input's shape with g written into the
// same sub-view. `sub` maps a full tensor to the sub-view the forward took.
template <typename SubView> Tensor scatter_into_zeros(const Tensor& g, const Shape& in_shape, SubView&& sub) {
  Tensor dx = zeros(in_shape, g.dtype());
  copy_kernel(sub(dx), g);
  return dx;
}

}  // namespace

// ---- views ----
Tensor view(const Tensor& x, const Shape& shape) {
  check_defined("view", x);
  const Shape target = infer_shape(shape, x.numel(), x.shape(), "view");
  auto strides = view_strides(x.shape(), x.strides(), target);
  SG_CHECK(strides.has_value(),
           "view: shape {} is not compatible with input shape {} and strides {} (some dims span non-contiguous "
           "memory); use reshape",
           target, x.shape(), x.strides());
  Tensor out = make_view(x, target, *strides, x.offset());
  record_reshape_like("view", x, out);
  return out;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x);
  const Shape target = infer_shape(shape, x.numel(), x.shape(), "reshape");
  auto strides = view_strides(x.shape(), x.strides(), target);
  Tensor out = strides ? make_view(x, target, *strides, x.offset())
                       : make_view(make_contiguous_copy(x), target, contiguous_strides(target), 0);
  record_reshape_like("reshape", x, out);
  return out;
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  check_defined("flatten", x);
  const int64_t s = wrap_dim(start_dim, x.dim(), "flatten"), e = wrap_dim(end_dim, x.dim(), "flatten");
  if (x.dim() == 0) return reshape(x, {1});
  SG_CHECK(s <= e, "flatten: start_dim {} comes after end_dim {} for shape {}", start_dim, end_dim, x.shape());
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  int64_t n = 1;
  for (int64_t d = s; d <= e; ++d) n *= x.shape()[d];
  shape.push_back(n);
  shape.insert(shape.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  check_defined("permute", x);
  const int64_t nd = x.dim();
  SG_CHECK(static_cast<int64_t>(dims.size()) == nd, "permute: {} given for a tensor of shape {}",
           plural(dims.size(), "dim"), x.shape());
  std::vector<int64_t> perm(dims.size());
  std::vector<bool> seen(dims.size(), false);
  Shape shape(dims.size());
  Strides strides(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    perm[i] = wrap_dim(dims[i], nd, "permute");
    SG_CHECK(!seen[perm[i]], "permute: dim {} repeats in {} for input of shape {}", perm[i], dims, x.shape());
    seen[perm[i]] = true;
    shape[i] = x.shape()[perm[i]];
    strides[i] = x.strides()[perm[i]];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (any_requires_grad({x})) {
    std::vector<int64_t> inverse(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = static_cast<int64_t>(i);
    record("permute", {x}, out, [inverse](const Tensor& g) { return grads(permute(g, inverse)); });
  }
  return out;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  check_defined("transpose", x);
  const int64_t d0 = wrap_dim(dim0, x.dim(), "transpose"), d1 = wrap_dim(dim1, x.dim(), "transpose");
  if (x.dim() == 0) return permute(x, {});
  std::vector<int64_t> perm(static_cast<size_t>(x.dim()));
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[d0], perm[d1]);
  return permute(x, perm);
}

Tensor t(const Tensor& x) {
  check_defined("t", x);
  SG_CHECK(x.dim() <= 2, "t: expects a tensor with at most 2 dims, got shape {}", x.shape());
  return x.dim() < 2 ? permute(x, x.dim() == 1 ? std::vector<int64_t>{0} : std::vector<int64_t>{})
                     : transpose(x, 0, 1);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  check_defined("slice", x);
  SG_CHECK(x.dim() > 0, "slice: cannot be applied to a 0-dim tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "slice");
  SG_CHECK(step > 0, "slice: step must be positive, got {}", step);
  const int64_t n = x.shape()[d];
  // Python slice semantics: negative indices count from the end, then clamp.
  auto clampi = [n](int64_t i) { return i < 0 ? std::max(i, -n) + n : std::min(i, n); };
  const int64_t s = clampi(start), e = std::max(clampi(end), s);
  Shape shape = x.shape();
  Strides strides = x.strides();
  shape[d] = e == s ? 0 : (e - s - 1) / step + 1;  // written so that a huge step cannot overflow
  strides[d] *= step;
  Tensor out = make_view(x, shape, strides, x.offset() + s * x.strides()[d]);
  if (any_requires_grad({x})) {
    const Shape in_shape = x.shape();
    record("slice", {x}, out, [=](const Tensor& g) {
      return grads(scatter_into_zeros(g, in_shape, [&](const Tensor& full) { return slice(full, d, s, e, step); }));
    });
  }
  return out;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  check_defined("narrow", x);
  SG_CHECK(x.dim() > 0, "narrow: cannot be applied to a 0-dim tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "narrow");
  const int64_t n = x.shape()[d];
  const int64_t s = start < 0 ? start + n : start;
  SG_CHECK(s >= 0 && s <= n && length >= 0 && length <= n - s,
           "narrow: start {} with length {} is out of range for dim {} of size {} (shape {})", start, length, d, n,
           x.shape());
  return slice(x, d, s, s + length, 1);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  check_defined("select", x);
  SG_CHECK(x.dim() > 0, "select: cannot be applied to a 0-dim tensor");
  const int64_t d = wrap_dim(dim, x.dim(), "select");
  const int64_t n = x.shape()[d];
  SG_CHECK(index >= -n && index < n, "select: index {} is out of range for dim {} of size {} (shape {})", index, d, n,
           x.shape());
  const int64_t i = index < 0 ? index + n : index;
  Shape shape = x.shape();
  Strides strides = x.strides();
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  Tensor out = make_view(x, shape, strides, x.offset() + i * x.strides()[d]);
  if (any_requires_grad({x})) {
    const Shape in_shape = x.shape();
    record("select", {x}, out, [=](const Tensor& g) {
      return grads(scatter_into_zeros(g, in_shape, [&](const Tensor& full) { return select(full, d, i); }));
    });
  }
  return out;
}

Tensor squeeze(const Tensor& x) {
  check_defined("squeeze", x);
  Shape shape;
  Strides strides;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (x.shape()[d] != 1) {
      shape.push_back(x.shape()[d]);
      strides.push_back(x.strides()[d]);
    }
  Tensor out = make_view(x, shape, strides, x.offset());
  record_reshape_like("squeeze", x, out);
  return out;
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  check_defined("squeeze", x);
  const int64_t d = wrap_dim(dim, x.dim(), "squeeze");
  if (x.dim() == 0) return squeeze(x);
  Shape shape = x.shape();
  Strides strides = x.strides();
  if (shape[d] == 1) {  // as PyTorch: squeezing a dim of size > 1 leaves it alone
    shape.erase(shape.begin() + d);
    strides.erase(strides.begin() + d);
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  record_reshape_like("squeeze", x, out);
  return out;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  check_defined("unsqueeze", x);
  const int64_t d = wrap_dim(dim, x.dim() + 1, "unsqueeze");
  Shape shape = x.shape();
  Strides strides = x.strides();
  const int64_t stride = d < x.dim() ? x.strides()[d] * x.shape()[d] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  Tensor out = make_view(x, shape, strides, x.offset());
  record_reshape_like("unsqueeze", x, out);
  return out;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  check_defined("expand", x);
  const int64_t nd = static_cast<int64_t>(shape.size()), extra = nd - x.dim();
  SG_CHECK(extra >= 0, "expand: cannot expand shape {} to {} (fewer dims)", x.shape(), shape);
  Shape out_shape(shape.size());
  Strides strides(shape.size());
  for (int64_t d = 0; d < nd; ++d) {
    if (d < extra) {
      SG_CHECK(shape[d] >= 0, "expand: new leading dim {} cannot be {} (expanding {} to {})", d, shape[d], x.shape(),
               shape);
      out_shape[d] = shape[d];
      strides[d] = 0;
      continue;
    }
    const int64_t in = x.shape()[d - extra];
    SG_CHECK(shape[d] >= -1, "expand: invalid size {} for dim {} when expanding {} to {}", shape[d], d, x.shape(),
             shape);
    const int64_t want = shape[d] == -1 ? in : shape[d];
    SG_CHECK(want == in || in == 1, "expand: the size of dim {} must match ({} vs {}) or be 1 when expanding {} to {}",
             d, in, shape[d], x.shape(), shape);
    out_shape[d] = want;
    strides[d] = want == in ? x.strides()[d - extra] : 0;
  }
  Tensor out = make_view(x, out_shape, strides, x.offset());
  if (any_requires_grad({x})) {
    const Shape in_shape = x.shape();
    record("expand", {x}, out, [in_shape](const Tensor& g) { return grads(sum_to(g, in_shape)); });
  }
  return out;
}

// ---- copies ----
Tensor contiguous(const Tensor& x) {
  check_defined("contiguous", x);
  return x.is_contiguous() ? x : clone(x);
}

Tensor clone(const Tensor& x) {
  check_defined("clone", x);
  Tensor out = make_contiguous_copy(x);
  record("clone", {x}, out, [](const Tensor& g) { return grads(g); });
  return out;
}

Tensor to(const Tensor& x, Dtype dtype) {
  check_defined("to", x);
  if (x.dtype() == dtype) return x;
  // NOTE: bfloat16 tensors cannot require grad (core/dtype.h), so this conversion would
  // silently cut the graph: refused rather than returning a tensor without history.
  SG_CHECK(dtype != kBFloat16 || !any_requires_grad({x}),
           "to: cannot convert a {} tensor of shape {} that requires grad to bfloat16 (bfloat16 tensors cannot "
           "require grad); convert x.detach(), or under a NoGradGuard",
           x.dtype(), x.shape());
  Tensor out = empty(x.shape(), dtype);
  copy_kernel(out, x);
  if (is_floating(dtype) && any_requires_grad({x})) {
    const Dtype in_dtype = x.dtype();
    record("to", {x}, out, [in_dtype](const Tensor& g) { return grads(to(g, in_dtype)); });
  }
  return out;
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  SG_CHECK(!xs.empty(), "cat: expects at least one tensor");
  for (size_t i = 0; i < xs.size(); ++i)
    if (!xs[i].defined()) check_defined("cat", xs[i], fmt::format("tensor at position {} of the list", i));
  const Tensor& first = xs[0];
  SG_CHECK(first.dim() > 0, "cat: zero-dimensional tensor cannot be concatenated");
  const int64_t d = wrap_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    SG_CHECK(x.dtype() == first.dtype(), "cat: tensor {} ({} {}) has a different dtype from tensor 0 ({} {})", i,
             x.shape(), x.dtype(), first.shape(), first.dtype());
    bool same = x.dim() == first.dim();
    for (int64_t k = 0; same && k < x.dim(); ++k) same = k == d || x.shape()[k] == first.shape()[k];
    SG_CHECK(same, "cat: tensor {} has shape {} but tensor 0 has shape {} (sizes must match except in dim {})", i,
             x.shape(), first.shape(), d);
    shape[d] += x.shape()[d];
  }
  Tensor out = empty(shape, first.dtype());
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (const Tensor& x : xs) {
    starts.push_back(at);
    copy_kernel(narrow(out, d, at, x.shape()[d]), x);  // out has no history yet: a plain view
    at += x.shape()[d];
  }
  if (any_requires_grad(xs)) {
    std::vector<int64_t> lengths;
    for (const Tensor& x : xs) lengths.push_back(x.shape()[d]);
    record("cat", xs, out, [d, starts, lengths](const Tensor& g) {
      std::vector<Tensor> gs;
      for (size_t i = 0; i < starts.size(); ++i) gs.push_back(narrow(g, d, starts[i], lengths[i]));
      return gs;
    });
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  SG_CHECK(!xs.empty(), "stack: expects at least one tensor");
  for (size_t i = 0; i < xs.size(); ++i)
    if (!xs[i].defined()) check_defined("stack", xs[i], fmt::format("tensor at position {} of the list", i));
  const int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> expanded;
  for (size_t i = 0; i < xs.size(); ++i) {
    SG_CHECK(xs[i].shape() == xs[0].shape(), "stack: tensor {} has shape {} but tensor 0 has shape {}", i,
             xs[i].shape(), xs[0].shape());
    expanded.push_back(unsqueeze(xs[i], d));
  }
  return cat(expanded, d);
}

namespace {

// Checks an int64 index tensor's values against [0, size); names the op and the value.
void check_index_values(const Tensor& index, int64_t size, int64_t dim, const Shape& x_shape, const char* op) {
  const std::vector<int64_t> v = index.to_vector<int64_t>();
  for (size_t i = 0; i < v.size(); ++i)
    SG_CHECK(v[i] >= 0 && v[i] < size, "{}: index {} at position {} is out of range for dim {} of size {} (shape {})",
             op, v[i], i, dim, size, x_shape);
}

// x: (outer, D, inner) contiguous; idx: (n) -> out: (outer, n, inner)
template <typename T>
void index_select_kernel(const T* x, const int64_t* idx, T* out, int64_t outer, int64_t D, int64_t n, int64_t inner) {
  parallel_for(outer * n, inner, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t o = r / n, i = r % n;
      std::copy_n(x + (o * D + idx[i]) * inner, inner, out + r * inner);
    }
  });
}

// dout: (outer, n, inner); idx: (n) -> dx: (outer, D, inner), accumulating repeats.
template <typename T>
void index_add_kernel(const T* dout, const int64_t* idx, T* dx, int64_t outer, int64_t D, int64_t n, int64_t inner) {
  parallel_for(outer, n * inner, [&](int64_t b, int64_t e) {  // rows of one `o` stay on one thread
    for (int64_t o = b; o < e; ++o)
      for (int64_t i = 0; i < n; ++i) {
        const T* src = dout + (o * n + i) * inner;
        T* dst = dx + (o * D + idx[i]) * inner;
        for (int64_t k = 0; k < inner; ++k) dst[k] += src[k];
      }
  });
}

Tensor index_add_into_zeros(const Tensor& g, int64_t d, const Tensor& index, const Shape& in_shape) {
  Tensor gc = contiguous(g);
  Tensor dx = zeros(in_shape, g.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= in_shape[k];
  for (size_t k = d + 1; k < in_shape.size(); ++k) inner *= in_shape[k];
  visit_dtype(g.dtype(), [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T>)
      index_add_kernel(gc.data_ptr<T>(), index.data_ptr<int64_t>(), dx.data_ptr<T>(), outer, in_shape[d],
                       index.numel(), inner);
  });
  return dx;
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined("index_select", x);
  check_defined("index_select", index, "index");
  const int64_t d = wrap_dim(dim, std::max<int64_t>(x.dim(), 1), "index_select");
  SG_CHECK(index.dtype() == kInt64 && index.dim() <= 1, "index_select: index must be a 1-D int64 tensor, got {} {}",
           index.shape(), index.dtype());
  SG_CHECK(x.dim() > 0 || index.numel() == 1,
           "index_select: a 0-dim input takes exactly one index, got index of shape {}", index.shape());
  Tensor xs = x.dim() == 0 ? reshape(x, {1}) : x;
  check_index_values(index, xs.shape()[d], d, x.shape(), "index_select");
  Tensor xc = contiguous(xs.detach());
  Tensor idx = contiguous(index.dim() == 0 ? reshape(index, {1}) : index);
  Shape shape = xs.shape();
  shape[d] = idx.numel();
  Tensor out = empty(shape, x.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= shape[k];
  for (size_t k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  visit_dtype(x.dtype(), [&]<typename T>() {
    index_select_kernel(xc.data_ptr<T>(), idx.data_ptr<int64_t>(), out.data_ptr<T>(), outer, xs.shape()[d],
                        idx.numel(), inner);
  });
  if (x.dim() == 0 || index.dim() == 0) out = reshape(out, x.dim() == 0 ? Shape{} : shape);
  if (any_requires_grad({x})) {
    const Shape xs_shape = xs.shape(), in_shape = x.shape();
    SavedTensor saved_idx(idx);
    record("index_select", {x}, out, [=](const Tensor& g) {
      Tensor gs = reshape(g, [&] { Shape s = xs_shape; s[d] = saved_idx.get().numel(); return s; }());
      return grads(reshape(index_add_into_zeros(gs, d, saved_idx.get(), xs_shape), in_shape));
    });
  }
  return out;
}

namespace {
// For every entry of `index` (any strides): calls fn(x_offset, out_linear) where x_offset
// is x's element offset with the coordinate along `dim` replaced by the index value.
template <typename Fn> void gather_walk(const Tensor& x, int64_t dim, const Tensor& index, Fn&& fn) {
  const int64_t nd = index.dim(), n = index.numel();
  const int64_t* ip = index.data_ptr<int64_t>();
  std::vector<int64_t> coord(static_cast<size_t>(nd), 0);
  for (int64_t lin = 0; lin < n; ++lin) {
    int64_t ioff = 0, xoff = 0;
    for (int64_t k = 0; k < nd; ++k) {
      ioff += coord[k] * index.strides()[k];
      if (k != dim) xoff += coord[k] * x.strides()[k];
    }
    xoff += ip[ioff] * x.strides()[dim];
    fn(xoff, lin);
    for (int64_t k = nd - 1; k >= 0; --k) {
      if (++coord[k] < index.shape()[k]) break;
      coord[k] = 0;
    }
  }
}
}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined("gather", x);
  check_defined("gather", index, "index");
  SG_CHECK(index.dtype() == kInt64, "gather: index must be int64, got {} index of shape {} for input of shape {}",
           index.dtype(), index.shape(), x.shape());
  SG_CHECK(index.dim() == x.dim(), "gather: index shape {} must have as many dims as input shape {}", index.shape(),
           x.shape());
  const int64_t d = wrap_dim(dim, std::max<int64_t>(x.dim(), 1), "gather");
  for (int64_t k = 0; k < x.dim(); ++k)
    SG_CHECK(k == d || index.shape()[k] <= x.shape()[k],
             "gather: index shape {} is larger than input shape {} in dim {}", index.shape(), x.shape(), k);
  check_index_values(index, x.dim() == 0 ? 1 : x.shape()[d], d, x.shape(), "gather");
  if (x.dim() == 0) return clone(x);  // a 0-d gather reads the single element
  Tensor out = empty(index.shape(), x.dtype());
  visit_dtype(x.dtype(), [&]<typename T>() {
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    gather_walk(x, d, index, [&](int64_t xoff, int64_t lin) { op[lin] = xp[xoff]; });
  });
  if (any_requires_grad({x})) {
    const Shape in_shape = x.shape();
    SavedTensor saved_idx(index);
    record("gather", {x}, out, [=](const Tensor& g) {
      Tensor dx = zeros(in_shape, g.dtype());
      Tensor gc = contiguous(g);
      visit_dtype(g.dtype(), [&]<typename T>() {
        if constexpr (std::is_floating_point_v<T>) {
          T* dp = dx.data_ptr<T>();
          const T* gp = gc.data_ptr<T>();
          gather_walk(dx, d, saved_idx.get(), [&](int64_t xoff, int64_t lin) { dp[xoff] += gp[lin]; });
        }
      });
      return grads(dx);
    });
  }
  return out;
}

// ---- Tensor's convenience methods forward to the ops ----
Tensor Tensor::contiguous() const { return sg::contiguous(*this); }
Tensor Tensor::clone() const { return sg::clone(*this); }
Tensor Tensor::to(Dtype dtype) const { return sg::to(*this, dtype); }
Tensor Tensor::reshape(const Shape& shape) const { return sg::reshape(*this, shape); }
Tensor Tensor::view(const Shape& shape) const { return sg::view(*this, shape); }
Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const { return sg::transpose(*this, dim0, dim1); }
Tensor Tensor::t() const { return sg::t(*this); }
Tensor Tensor::permute(const std::vector<int64_t>& dims) const { return sg::permute(*this, dims); }
Tensor Tensor::unsqueeze(int64_t dim) const { return sg::unsqueeze(*this, dim); }
Tensor Tensor::squeeze(int64_t dim) const { return sg::squeeze(*this, dim); }
Tensor Tensor::expand(const Shape& shape) const { return sg::expand(*this, shape); }
Tensor Tensor::narrow(int64_t dim, int64_t start, int64_t length) const {
  return sg::narrow(*this, dim, start, length);
}

Tensor Tensor::select(int64_t dim, int64_t index) const { return sg::select(*this, dim, index); }
Tensor Tensor::index_select(int64_t dim, const Tensor& index) const { return sg::index_select(*this, dim, index); }
Tensor Tensor::gather(int64_t dim, const Tensor& index) const { return sg::gather(*this, dim, index); }
Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  return sg::slice(*this, dim, start, end, step);
}
Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const { return sg::flatten(*this, start_dim, end_dim); }
Tensor Tensor::squeeze() const { return sg::squeeze(*this); }

}  // namespace sg
