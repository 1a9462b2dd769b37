#pragma once
// softgrad's Tensor: a cheap handle (shared ownership) over strided storage, plus autograd.
//
//   #include <softgrad.h>
//   sg::Generator gen(42);
//   sg::Tensor w = sg::randn({3, 2}, gen, sg::kFloat64).requires_grad_();
//   sg::Tensor x = sg::tensor({{1.0, 2.0, 3.0}}, sg::kFloat64);   // (1, 3)
//   sg::Tensor loss = sg::sum(sg::relu(sg::matmul(x, w)));           // records a graph
//   loss.backward();                                                 // w.grad() is (3, 2)
//   fmt::print("{}\n", w.grad());                                    // PyTorch-style print
//
// Ops are free functions in ops/ (sg::add, sg::softmax, ...); operators forward to them.
// Views (reshape when possible, transpose, permute, narrow, squeeze, unsqueeze, expand)
// share storage. Tensors that require grad may not be modified in place while grad mode
// is on; every in-place write bumps the storage's version, and a tensor saved for
// backward that was modified afterwards makes backward throw instead of returning a
// silently wrong gradient.
#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/generator.h"
#include "core/shape.h"

namespace sg {

class Node;

// A 64-byte-aligned buffer. `version` counts in-place writes through any view.
// Buffers of 256 KiB and more are mapped from the OS (from 2 MiB, backed by huge pages
// where the kernel allows) and, once freed, kept for reuse by the next buffer of the same
// size (see memory_stats below); a reused buffer asked to be zero is cleared with memset.
struct Storage {
  Storage(size_t nbytes, bool zero_fill);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t nbytes = 0;
  uint64_t version = 0;

 private:
  size_t mapped_ = 0;  // bytes mapped with mmap (0: from aligned_alloc)
};

class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  Dtype dtype = kFloat32;
  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated by backward(); leaves (and retain_grad)
  std::shared_ptr<Node> grad_fn;     // the node that produced this tensor; null for leaves
  // Leaves: called (in registration order, with the leaf) once a backward has added its
  // last contribution to grad; see Tensor::register_post_accumulate_grad_hook.
  std::vector<std::pair<int64_t, std::function<void(const Tensor&)>>> post_accumulate_grad_hooks;
};

struct ValuesIndices;  // {values, indices}: defined below Tensor

class Tensor {
 public:
  Tensor() = default;  // undefined; most calls on it throw
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  // The same tensor object (not just equal values): PyTorch's Tensor.is_same.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  const Shape& shape() const { return checked("shape").shape; }
  const Strides& strides() const { return checked("strides").strides; }
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;    // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape()); }
  int64_t offset() const { return checked("offset").offset; }
  Dtype dtype() const { return checked("dtype").dtype; }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  // Pointer to the first element (storage offset applied); T is the dtype's own type
  // (float, double, int64_t, bool). Throws on a dtype mismatch.
  // NOTE: a raw escape hatch for kernels and I/O: writes through it are not tracked by the
  // version counter, so never use it to modify a tensor that autograd has saved.
  template <typename T> T* data_ptr() const;
  void* raw_data() const;
  // Typed access. T is float, double, int64_t, int, bool or sg::bfloat16 (another type does
  // not compile, with a message listing these); int goes through int64, checked for range;
  // a bfloat16 element reads as float exactly, a value written to bfloat16 rounds to
  // nearest even (core/dtype.h has the bfloat16 rules).
  // The single value of a one-element tensor, converted to T.
  template <typename T> T item() const {
    check_element_type<T>();
    return item_impl<T>();
  }
  // Typed read of one element (negative indices count from the end); bounds checked. T is
  // the dtype's own type (int reads an int64 tensor).
  template <typename T> T at(const std::vector<int64_t>& index) const {
    check_element_type<T>();
    return at_impl<T>(index);
  }
  // Writes one element, converted to the tensor's dtype. An in-place write: refused on a
  // tensor that requires grad while grad mode is on, and bumps the storage version.
  template <typename T> void set(const std::vector<int64_t>& index, T value) {
    check_element_type<T>();
    set_impl<T>(index, value);
  }
  // All elements in row-major order, converted to T.
  template <typename T> std::vector<T> to_vector() const {
    check_element_type<T>();
    return to_vector_impl<T>();
  }

  // ---- autograd ----
  bool requires_grad() const { return checked("requires_grad").requires_grad; }
  Tensor& requires_grad_(bool on = true);  // leaves of float32/float64 only (not bfloat16)
  bool is_leaf() const { return checked("is_leaf").grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return checked("grad_fn").grad_fn; }
  Tensor grad() const;  // undefined until a backward reaches this leaf
  void set_grad(const Tensor& g);
  void zero_grad();     // drops the gradient (PyTorch's set_to_none)
  void retain_grad();   // non-leaf: keep its gradient in grad() too
  // PyTorch's register_post_accumulate_grad_hook: on a leaf that requires grad, `hook` runs
  // during each backward that reaches the leaf, right after the last node of the graph that
  // feeds it has added its gradient (grad() is then final for this backward), while the rest
  // of the graph is still to run; DistributedDataParallel starts its reductions from it.
  // Returns a handle for remove_hook. The hook must not modify the graph.
  int64_t register_post_accumulate_grad_hook(std::function<void(const Tensor&)> hook);
  void remove_hook(int64_t handle);
  // Seeds d(self)/d(self) = grad (ones for a one-element tensor when omitted) and runs
  // every node's VJP once, in one topological order. Without retain_graph the saved
  // buffers are freed and a second backward through the same nodes throws.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  Tensor detach() const;  // same storage, no history, requires_grad false

  // ---- conversions and views (defined with the ops, in ops/) ----
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(Dtype dtype) const;
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor t() const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor expand(const Shape& shape) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;

  // ---- method forms of common ops (LibTorch's x.sum(), x.softmax(1), ...) ----
  // Thin forwards to the free functions of the same name in ops/ (defined there, so that
  // core/ does not depend on ops/); the free functions stay the primary API and their
  // headers document the rules.
  // reductions (ops/reduce.h)
  Tensor sum() const;
  Tensor sum(const std::vector<int64_t>& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const std::vector<int64_t>& dims, bool keepdim = false) const;
  Tensor var() const;
  Tensor max() const;
  ValuesIndices max(int64_t dim, bool keepdim = false) const;
  Tensor min() const;
  ValuesIndices min(int64_t dim, bool keepdim = false) const;
  Tensor argmax() const;
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  Tensor argmin(int64_t dim, bool keepdim = false) const;
  // indexing and shape (ops/shape.h)
  Tensor select(int64_t dim, int64_t index) const;
  Tensor index_select(int64_t dim, const Tensor& index) const;
  Tensor gather(int64_t dim, const Tensor& index) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor squeeze() const;
  // softmax family and matmul (ops/softmax.h, ops/matmul.h)
  Tensor softmax(int64_t dim) const;
  Tensor log_softmax(int64_t dim) const;
  Tensor matmul(const Tensor& other) const;
  // elementwise (ops/elementwise.h)
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor abs() const;
  Tensor neg() const;
  Tensor relu() const;
  Tensor tanh() const;
  Tensor sigmoid() const;
  Tensor gelu() const;  // exact (erf) form
  Tensor pow(double exponent) const;
  Tensor clamp(std::optional<double> min, std::optional<double> max) const;
  Tensor masked_fill(const Tensor& mask, double value) const;
  Tensor add(const Tensor& other) const;
  Tensor sub(const Tensor& other) const;
  Tensor mul(const Tensor& other) const;
  Tensor div(const Tensor& other) const;
  Tensor eq(const Tensor& other) const;
  Tensor isfinite() const;
  // sorting and sampling (ops/sort.h)
  ValuesIndices sort(int64_t dim = -1, bool descending = false) const;
  Tensor argsort(int64_t dim = -1, bool descending = false) const;
  ValuesIndices topk(int64_t k, int64_t dim = -1, bool largest = true, bool sorted = true) const;
  Tensor cumsum(int64_t dim) const;

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }

 private:
  // Defined in tensor.cpp for the element types only.
  template <typename T> T item_impl() const;
  template <typename T> T at_impl(const std::vector<int64_t>& index) const;
  template <typename T> void set_impl(const std::vector<int64_t>& index, T value);
  template <typename T> std::vector<T> to_vector_impl() const;

  // The impl, or an sg::Error naming the accessor. Ops check their inputs first with
  // check_defined (below), which names the op; this is the backstop.
  TensorImpl& checked(const char* accessor) const {
    if (impl_ == nullptr) [[unlikely]] fail_undefined(accessor);
    return *impl_;
  }
  [[noreturn]] static void fail_undefined(const char* accessor);
  std::shared_ptr<TensorImpl> impl_;
};

// An op's entry check on each tensor argument, e.g. check_defined("relu", x) throws
// "relu: the input is an undefined tensor (a default-constructed Tensor)". Every op family
// calls it from the checks its ops share (check_floating, check_binary, reduced_mask, ...),
// so that the message names the op rather than the accessor that found the null handle.
inline void check_defined(std::string_view op, const Tensor& x, std::string_view role = "input") {
  SG_CHECK(x.defined(), "{}: the {} is an undefined tensor (a default-constructed Tensor)", op, role);
}

// ---- creation ----
// What max(x, dim), min(x, dim), sort and topk return.
struct ValuesIndices {
  Tensor values;
  Tensor indices;  // int64
};

Tensor empty(const Shape& shape, Dtype dtype = kFloat32);  // contents unspecified
Tensor zeros(const Shape& shape, Dtype dtype = kFloat32);
Tensor ones(const Shape& shape, Dtype dtype = kFloat32);
Tensor full(const Shape& shape, double value, Dtype dtype = kFloat32);
Tensor zeros_like(const Tensor& x);
Tensor ones_like(const Tensor& x);
Tensor empty_like(const Tensor& x);  // contiguous, same shape and dtype
Tensor scalar_tensor(double value, Dtype dtype = kFloat32);  // 0-dim
// [start, end) with step; int64 unless a floating dtype is asked for.
Tensor arange(double start, double end, double step = 1.0, Dtype dtype = kInt64);
Tensor arange(int64_t end, Dtype dtype = kInt64);
Tensor linspace(double start, double end, int64_t steps, Dtype dtype = kFloat32);
// Uniform [0, 1), standard normal, integers in [low, high): drawn from an explicit generator.
Tensor rand(const Shape& shape, Generator& gen, Dtype dtype = kFloat32);
Tensor randn(const Shape& shape, Generator& gen, Dtype dtype = kFloat32);
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen);

// From data. sg::tensor({1.0, 2.0}) is float32 (pass a dtype for float64);
// sg::tensor({1, 2}) is int64; sg::tensor({{1.0, 2.0}, {3.0, 4.0}}) is (2, 2).
Tensor tensor(std::initializer_list<double> values, Dtype dtype = kFloat32);
Tensor tensor(std::initializer_list<std::initializer_list<double>> rows, Dtype dtype = kFloat32);
Tensor tensor(std::initializer_list<int> values);
Tensor tensor(std::initializer_list<int64_t> values);
Tensor tensor(std::initializer_list<bool> values);
// A contiguous tensor of `shape` holding `values`, of T's dtype (std::vector<int> gives int64).
template <typename T> Tensor from_vector(const std::vector<T>& values, const Shape& shape);

// Number of threads used by softgrad's kernels and OpenBLAS (default: all cores).
void set_num_threads(int n);
int get_num_threads();

// Bytes held by live tensor storages (all threads), and the most held at once since
// start or the last reset_peak_memory(): what a benchmark reports as peak memory.
// Freed buffers of 256 KiB and more are kept (up to 512 MiB) for reuse by the next
// allocation of the same size (rounded to 64 KiB, 2 MiB from 2 MiB up), which then skips
// the page faults of fresh memory;
// cached_bytes counts them and empty_cache() returns them to the OS.
struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t cached_bytes = 0;
};
MemoryStats memory_stats();
void reset_peak_memory();  // peak := current
void empty_cache();

std::string to_string(const Tensor& t);  // PyTorch's print layout, large tensors truncated
std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- template definitions ----
namespace detail {
template <typename T> Tensor from_vector_impl(const std::vector<T>& values, const Shape& shape);  // tensor.cpp
}
template <typename T> Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  check_element_type<T>();
  return detail::from_vector_impl(values, shape);
}

template <typename T> T* Tensor::data_ptr() const {
  static_assert(is_element_type<T> && !std::is_same_v<T, int>,
                "softgrad: data_ptr<T> takes a dtype's own type: float, double, int64_t, bool or sg::bfloat16 (item<T>, "
                "at<T> and to_vector<T> convert)");
  SG_CHECK(dtype() == dtype_of<T>, "data_ptr: tensor is {}, asked for {}", dtype_name(dtype()),
           dtype_name(dtype_of<T>));
  return static_cast<T*>(impl_->storage->data) + impl_->offset;
}

}  // namespace sg

template <> struct fmt::formatter<sg::Dtype> : fmt::formatter<std::string_view> {
  auto format(sg::Dtype d, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(sg::dtype_name(d), ctx);
  }
};
template <> struct fmt::formatter<sg::Tensor> : fmt::formatter<std::string_view> {
  auto format(const sg::Tensor& t, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(sg::to_string(t), ctx);
  }
};
