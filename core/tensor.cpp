#include "core/tensor.h"

#include <cblas.h>
#include <omp.h>
#include <sys/mman.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <ostream>

#include "core/blas.h"
#include "core/autograd.h"
#include "core/kernels.h"
#include "core/strided.h"

namespace sg {

// ---- Storage ----
// NOTE: AddressSanitizer sees only malloc's bookkeeping: the mapped buffers below never pass
// through malloc, a cached buffer is live memory to it after its tensor is gone, and a
// small buffer's round-up to 64 bytes is addressable. So softgrad tells it which bytes a
// tensor owns: [0, n) of its buffer is unpoisoned, the rest of the buffer and every cached
// buffer are poisoned (an access is reported as use-after-poison), and a mapping is
// unpoisoned before munmap (the next mmap may return the same addresses).
#if defined(__SANITIZE_ADDRESS__)
#define SG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SG_ASAN 1
#endif
#endif
#ifdef SG_ASAN
#include <sanitizer/asan_interface.h>
#define SG_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define SG_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define SG_POISON(p, n) ((void)(p), (void)(n))
#define SG_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
// Buffers from kMapMin up are mapped (and cached when freed, below); from kHugePage up they
// are also 2 MiB aligned for huge pages. Smaller mapped sizes round up to kMapGrain.
constexpr size_t kMapMin = size_t{256} << 10;
constexpr size_t kMapGrain = size_t{64} << 10;

std::atomic<int64_t> g_current_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};

// Freed large buffers are kept for reuse, up to kCacheLimit bytes. A training step
// allocates the same sizes every time, and a fresh mapping pays a page fault and the
// kernel's zeroing for every page it touches: for a 64 MiB output that costs more than
// the op itself. When a freed buffer does not fit, the oldest cached ones are unmapped to
// make room: the sizes a program uses now are the ones worth keeping. (Refusing the new
// buffer instead left a cache full of last phase's sizes and every new output faulting.)
// Leaked on purpose (no static destruction order to get wrong).
constexpr size_t kCacheLimit = size_t{512} << 20;

void unmap(void* p, size_t len) {
  SG_UNPOISON(p, len);
  munmap(p, len);
}

class MappingCache {
 public:
  void* take(size_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    // The newest buffer of this size: the most likely to be still in the CPU's caches.
    for (auto it = free_.rbegin(); it != free_.rend(); ++it) {
      if (it->len != len) continue;
      void* p = it->data;
      free_.erase(std::next(it).base());
      bytes_ -= len;
      return p;
    }
    return nullptr;
  }
  bool give(void* p, size_t len) {
    if (len > kCacheLimit) return false;
    std::vector<Mapping> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (bytes_ + len > kCacheLimit) {  // oldest first
        evicted.push_back(free_.front());
        bytes_ -= free_.front().len;
        free_.pop_front();
      }
      free_.push_back({p, len});
      bytes_ += len;
    }
    for (const Mapping& m : evicted) unmap(m.data, m.len);
    return true;
  }
  void release_all() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Mapping& m : free_) unmap(m.data, m.len);
    free_.clear();
    bytes_ = 0;
  }
  size_t bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_;
  }

 private:
  struct Mapping {
    void* data;
    size_t len;
  };
  std::mutex mu_;
  std::deque<Mapping> free_;  // oldest first
  size_t bytes_ = 0;
};

MappingCache& mapping_cache() {
  static auto* cache = new MappingCache;
  return *cache;
}

// A small buffer's size: whole 64-byte lines (aligned_alloc wants a multiple of the alignment).
size_t small_buffer_bytes(size_t n) { return n == 0 ? 64 : (n + 63) / 64 * 64; }

void count_allocation(int64_t bytes) {
  const int64_t now = g_current_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

// Maps len fresh bytes (n of them asked for, for the error and the live count). A huge
// buffer (a multiple of 2 MiB) is over-mapped by a huge page and trimmed to be 2 MiB
// aligned: the kernel can then back it with huge pages (far fewer page faults).
void* map_fresh(size_t len, bool huge, size_t n) {
  void* p = mmap(nullptr, huge ? len + kHugePage : len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    g_current_bytes.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
    fail("out of memory mapping {} bytes", n);
  }
  if (!huge) return p;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = (addr + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > addr) munmap(p, aligned - addr);
  const uintptr_t end = addr + len + kHugePage;
  if (end > aligned + len) munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
  void* data = reinterpret_cast<void*>(aligned);
  madvise(data, len, MADV_HUGEPAGE);
  return data;
}
}  // namespace

MemoryStats memory_stats() {
  return {g_current_bytes.load(std::memory_order_relaxed), g_peak_bytes.load(std::memory_order_relaxed),
          static_cast<int64_t>(mapping_cache().bytes())};
}
void empty_cache() { mapping_cache().release_all(); }
void reset_peak_memory() { g_peak_bytes.store(g_current_bytes.load(std::memory_order_relaxed)); }

Storage::Storage(size_t n, bool zero_fill) : nbytes(n) {
  count_allocation(static_cast<int64_t>(n));
  if (n >= kMapMin) {
    const bool huge = n >= kHugePage;
    const size_t grain = huge ? kHugePage : kMapGrain;
    const size_t len = (n + grain - 1) / grain * grain;
    void* reused = mapping_cache().take(len);
    data = reused ? reused : map_fresh(len, huge, n);
    mapped_ = len;
    SG_UNPOISON(data, n);
    SG_POISON(static_cast<char*>(data) + n, len - n);
    if (zero_fill && reused) std::memset(data, 0, n);  // fresh anonymous pages are zero already
#ifdef SOFTGRAD_POISON_EMPTY
    if (!zero_fill) std::memset(data, 0xff, n);
#endif
    return;
  }
  const size_t rounded = small_buffer_bytes(n);
  data = std::aligned_alloc(64, rounded);
  if (!data) {
    g_current_bytes.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
    fail("out of memory allocating {} bytes", n);
  }
  if (zero_fill) {
    std::memset(data, 0, rounded);
  } else {
#ifdef SOFTGRAD_POISON_EMPTY  // debug builds: make reads of unwritten memory show up as NaN / -1
    std::memset(data, 0xff, rounded);
#endif
  }
  SG_POISON(static_cast<char*>(data) + n, rounded - n);
}

Storage::~Storage() {
  g_current_bytes.fetch_sub(static_cast<int64_t>(nbytes), std::memory_order_relaxed);
  if (mapped_) {
    SG_POISON(data, mapped_);  // cached: nobody's memory until take() hands it out again
    if (!mapping_cache().give(data, mapped_)) unmap(data, mapped_);
  } else {
    SG_UNPOISON(data, small_buffer_bytes(nbytes));  // the tail poisoned above: free() owns it again
    std::free(data);
  }
}

// ---- Tensor metadata ----
void Tensor::fail_undefined(const char* accessor) {
  fail("Tensor::{}: the tensor is undefined (a default-constructed Tensor); give it the result of an op or a "
       "factory such as sg::zeros first",
       accessor);
}

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  const auto& sh = shape();
  const auto& st = strides();
  int64_t expected = 1;
  for (size_t d = sh.size(); d-- > 0;) {
    if (sh[d] == 1) continue;
    if (st[d] != expected) return false;
    expected *= sh[d];
  }
  return true;
}

void* Tensor::raw_data() const {
  auto& impl = checked("raw_data");
  return static_cast<char*>(impl.storage->data) + impl.offset * static_cast<int64_t>(dtype_size(impl.dtype));
}

template <typename T> T Tensor::item_impl() const {
  checked("item");
  SG_CHECK(numel() == 1, "item: tensor of shape {} has {} elements, expected one", shape(), numel());
  return visit_dtype(dtype(), [&]<typename S>() { return cast_value<T>(*static_cast<const S*>(raw_data()), "item"); });
}

namespace {
// Element offset of `index` in t (bounds checked, negative indices from the end).
int64_t element_offset(const Tensor& t, const std::vector<int64_t>& index, const char* op) {
  SG_CHECK(static_cast<int64_t>(index.size()) == t.dim(), "{}: {} for a tensor of shape {}", op,
           plural(index.size(), "index", "indices"), t.shape());
  int64_t off = 0;
  for (size_t d = 0; d < index.size(); ++d) {
    const int64_t i = index[d], n = t.shape()[d];
    SG_CHECK(i >= -n && i < n, "{}: index {} is out of range for dim {} of size {} (shape {})", op, i, d, n,
             t.shape());
    off += (i < 0 ? i + n : i) * t.strides()[d];
  }
  return off;
}
}  // namespace

template <typename T> T Tensor::at_impl(const std::vector<int64_t>& index) const {
  checked("at");
  if constexpr (std::is_same_v<T, int>)
    return cast_value<int>(at_impl<int64_t>(index), "at");
  else
    return data_ptr<T>()[element_offset(*this, index, "at")];
}

template <typename T> void Tensor::set_impl(const std::vector<int64_t>& index, T value) {
  checked("set");
  const int64_t off = element_offset(*this, index, "set");
  SG_CHECK(!(requires_grad() && GradMode::is_enabled()),
           "set: cannot write into a tensor of shape {} that requires grad while grad mode is on (use a "
           "NoGradGuard)",
           shape());
  visit_dtype(dtype(), [&]<typename S>() { static_cast<S*>(raw_data())[off] = cast_value<S>(value, "set"); });
  ++impl_->storage->version;
}

template <typename T> std::vector<T> Tensor::to_vector_impl() const {
  checked("to_vector");
  if constexpr (std::is_same_v<T, int>) {
    const std::vector<int64_t> wide = to_vector_impl<int64_t>();
    std::vector<int> out(wide.size());
    for (size_t i = 0; i < wide.size(); ++i) out[i] = cast_value<int>(wide[i], "to_vector");
    return out;
  } else {
    std::vector<T> out(static_cast<size_t>(numel()));
    if (out.empty()) return out;
    Tensor dst = from_vector(out, shape());
    copy_kernel(dst, *this);
    const T* p = dst.data_ptr<T>();
    std::copy(p, p + out.size(), out.begin());
    return out;
  }
}

// The element types (core/dtype.h's is_element_type).
#define SG_INSTANTIATE(T)                                                \
  template T Tensor::item_impl<T>() const;                               \
  template T Tensor::at_impl<T>(const std::vector<int64_t>&) const;      \
  template void Tensor::set_impl<T>(const std::vector<int64_t>&, T);     \
  template std::vector<T> Tensor::to_vector_impl<T>() const;             \
  template Tensor detail::from_vector_impl<T>(const std::vector<T>&, const Shape&);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
SG_INSTANTIATE(int64_t)
SG_INSTANTIATE(int)
SG_INSTANTIATE(bool)
SG_INSTANTIATE(bfloat16)
#undef SG_INSTANTIATE

// ---- autograd accessors ----
Tensor& Tensor::requires_grad_(bool on) {
  auto& impl = checked("requires_grad_");
  SG_CHECK(!on || impl.dtype != kBFloat16,
           "requires_grad_: a bfloat16 tensor cannot require grad (softgrad computes in float32/float64; convert "
           "with to(kFloat32) and make that the leaf)");
  SG_CHECK(!on || is_floating(impl.dtype), "requires_grad_: only floating tensors can require grad, got {}",
           impl.dtype);
  SG_CHECK(impl.grad_fn == nullptr || on,
           "requires_grad_: cannot turn off requires_grad of a non-leaf tensor (use detach())");
  impl.requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  auto& impl = checked("grad");
  return impl.grad ? Tensor(impl.grad) : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  auto& impl = checked("set_grad");
  if (!g.defined()) {
    impl.grad.reset();
    return;
  }
  SG_CHECK(g.shape() == impl.shape && g.dtype() == impl.dtype, "set_grad: gradient {} {} does not match tensor {} {}",
           g.shape(), g.dtype(), impl.shape, impl.dtype);
  // A private contiguous copy: backward accumulates into it in place, so it must not
  // alias another tensor (or itself, through an expanded view), and it must carry no
  // history (a grad pointing back into the graph would be an ownership cycle).
  impl.grad = make_contiguous_copy(g).impl();
}

void Tensor::zero_grad() { checked("zero_grad").grad.reset(); }

void Tensor::retain_grad() {
  auto& impl = checked("retain_grad");
  SG_CHECK(impl.requires_grad, "retain_grad: tensor does not require grad");
  impl.retains_grad = true;
}

int64_t Tensor::register_post_accumulate_grad_hook(std::function<void(const Tensor&)> hook) {
  auto& impl = checked("register_post_accumulate_grad_hook");
  SG_CHECK(impl.requires_grad && impl.grad_fn == nullptr,
           "register_post_accumulate_grad_hook: only a leaf that requires grad accumulates a gradient (shape {})",
           impl.shape);
  SG_CHECK(hook != nullptr, "register_post_accumulate_grad_hook: the hook is empty");
  static std::atomic<int64_t> next_handle{0};  // process-wide: a handle never names another tensor's hook
  const int64_t handle = next_handle.fetch_add(1);
  impl.post_accumulate_grad_hooks.emplace_back(handle, std::move(hook));
  return handle;
}

void Tensor::remove_hook(int64_t handle) {
  auto& hooks = checked("remove_hook").post_accumulate_grad_hooks;
  std::erase_if(hooks, [handle](const auto& h) { return h.first == handle; });
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const { run_backward(*this, grad, retain_graph); }

Tensor Tensor::detach() const {
  auto& impl = checked("detach");
  auto out = std::make_shared<TensorImpl>();
  out->storage = impl.storage;
  out->shape = impl.shape;
  out->strides = impl.strides;
  out->offset = impl.offset;
  out->dtype = impl.dtype;
  return Tensor(std::move(out));
}

// ---- creation ----
namespace {
Tensor allocate(const Shape& shape, Dtype dtype, bool zero_fill) {
  for (int64_t s : shape) SG_CHECK(s >= 0, "empty: negative size in shape {}", shape);
  const int64_t numel = shape_numel(shape);
  SG_CHECK(numel <= PTRDIFF_MAX / static_cast<int64_t>(dtype_size(dtype)),
           "empty: shape {} of {} needs more bytes than memory can address", shape, dtype);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(numel) * dtype_size(dtype), zero_fill);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}
}  // namespace

Tensor empty(const Shape& shape, Dtype dtype) { return allocate(shape, dtype, /*zero_fill=*/false); }
Tensor zeros(const Shape& shape, Dtype dtype) { return allocate(shape, dtype, /*zero_fill=*/true); }

Tensor full(const Shape& shape, double value, Dtype dtype) {
  Tensor t = empty(shape, dtype);
  visit_dtype(dtype, [&]<typename T>() {
    T* p = t.data_ptr<T>();
    const T v = cast_value<T>(value, "full");
    parallel_for(t.numel(), 1, [&](int64_t b, int64_t e) { std::fill(p + b, p + e, v); });
  });
  return t;
}

Tensor ones(const Shape& shape, Dtype dtype) { return full(shape, 1.0, dtype); }
Tensor zeros_like(const Tensor& x) { return zeros(x.shape(), x.dtype()); }
Tensor ones_like(const Tensor& x) { return ones(x.shape(), x.dtype()); }
Tensor empty_like(const Tensor& x) { return empty(x.shape(), x.dtype()); }
Tensor scalar_tensor(double value, Dtype dtype) { return full({}, value, dtype); }

Tensor arange(double start, double end, double step, Dtype dtype) {
  SG_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
           "arange: invalid range start={} end={} step={}", start, end, step);
  SG_CHECK((end - start) / step >= 0, "arange: step {} does not lead from {} to {}", step, start, end);
  SG_CHECK(is_floating_point(dtype) || (start == std::trunc(start) && step == std::trunc(step)),
           "arange: start={} step={} are not integers but the dtype is {} (pass kFloat32 or kFloat64)", start, step,
           dtype);
  const double count = std::ceil((end - start) / step);
  SG_CHECK(count < 0x1p62, "arange: start={} end={} step={} gives {} elements, too many", start, end, step, count);
  const auto n = static_cast<int64_t>(count);
  Tensor t = empty({n}, dtype);
  visit_dtype(dtype, [&]<typename T>() {
    T* p = t.data_ptr<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  return t;
}

Tensor arange(int64_t end, Dtype dtype) { return arange(0.0, static_cast<double>(end), 1.0, dtype); }

Tensor linspace(double start, double end, int64_t steps, Dtype dtype) {
  SG_CHECK(steps >= 0, "linspace: steps must be non-negative, got {}", steps);
  Tensor t = empty({steps}, dtype);
  visit_dtype(dtype, [&]<typename T>() {
    T* p = t.data_ptr<T>();
    const double h = steps > 1 ? (end - start) / static_cast<double>(steps - 1) : 0.0;
    // Fill from both ends so the last value is exactly `end` (as PyTorch); one step is `start`.
    if (steps == 1) p[0] = static_cast<T>(start);
    for (int64_t i = 0; steps > 1 && i < steps; ++i)
      p[i] = static_cast<T>(i < steps / 2 ? start + h * static_cast<double>(i)
                                          : end - h * static_cast<double>(steps - 1 - i));
  });
  return t;
}

namespace {
template <typename Draw> Tensor random_fill(const Shape& shape, Dtype dtype, const char* op, Draw&& draw) {
  SG_CHECK(dtype != kBFloat16, "{}: cannot draw bfloat16 directly; draw float32 and convert with to(kBFloat16)", op);
  SG_CHECK(is_floating(dtype), "{}: dtype must be floating, got {}", op, dtype);
  Tensor t = empty(shape, dtype);
  visit_dtype(dtype, [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T>) {
      T* p = t.data_ptr<T>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(draw());
    }
  });
  return t;
}
}  // namespace

Tensor rand(const Shape& shape, Generator& gen, Dtype dtype) {
  // NOTE: float32 draws 24 bits: rounding a 53-bit double to float could give exactly 1.
  if (dtype == kFloat32)
    return random_fill(shape, dtype, "rand", [&] { return static_cast<double>(gen.next_u64() >> 40) * 0x1.0p-24; });
  return random_fill(shape, dtype, "rand", [&] { return gen.uniform(); });
}
Tensor randn(const Shape& shape, Generator& gen, Dtype dtype) {
  return random_fill(shape, dtype, "randn", [&] { return gen.normal(); });
}
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen) {
  SG_CHECK(low < high, "randint: empty range [{}, {})", low, high);
  Tensor t = empty(shape, kInt64);
  int64_t* p = t.data_ptr<int64_t>();
  const uint64_t span = static_cast<uint64_t>(high) - static_cast<uint64_t>(low);  // no signed overflow
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<int64_t>(static_cast<uint64_t>(low) + gen.below(span));
  return t;
}

template <typename T> Tensor detail::from_vector_impl(const std::vector<T>& values, const Shape& shape) {
  SG_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()),
           "from_vector: got {} for shape {} ({})", plural(values.size(), "value"), shape,
           plural(shape_numel(shape), "element"));
  using Stored = std::conditional_t<std::is_same_v<T, int>, int64_t, T>;  // int is stored as int64
  Tensor t = empty(shape, dtype_of<Stored>);
  std::copy(values.begin(), values.end(), t.data_ptr<Stored>());
  return t;
}

namespace {
Tensor from_doubles(const std::vector<double>& v, const Shape& shape, Dtype dtype) {
  Tensor t = empty(shape, dtype);
  visit_dtype(dtype, [&]<typename T>() {
    T* p = t.data_ptr<T>();
    for (size_t i = 0; i < v.size(); ++i) p[i] = cast_value<T>(v[i], "tensor");
  });
  return t;
}
}  // namespace

Tensor tensor(std::initializer_list<double> values, Dtype dtype) {
  return from_doubles(std::vector<double>(values), {static_cast<int64_t>(values.size())}, dtype);
}
Tensor tensor(std::initializer_list<std::initializer_list<double>> rows, Dtype dtype) {
  std::vector<double> v;
  const size_t cols = rows.size() ? rows.begin()->size() : 0;
  for (const auto& r : rows) {
    SG_CHECK(r.size() == cols, "tensor: ragged nested list (rows of {} and of {})", plural(cols, "value"),
             plural(r.size(), "value"));
    v.insert(v.end(), r.begin(), r.end());
  }
  return from_doubles(v, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(cols)}, dtype);
}
Tensor tensor(std::initializer_list<int> values) {
  return from_vector(std::vector<int64_t>(values.begin(), values.end()), {static_cast<int64_t>(values.size())});
}
Tensor tensor(std::initializer_list<int64_t> values) {
  return from_vector(std::vector<int64_t>(values), {static_cast<int64_t>(values.size())});
}
Tensor tensor(std::initializer_list<bool> values) {
  return from_vector(std::vector<bool>(values), {static_cast<int64_t>(values.size())});
}

// ---- threads and BLAS ----
// OpenBLAS's kernel choice is corrected at start-up of every program that links tensors
// (core/blas.h); OpenBLAS, a shared library, has finished its own start-up by then.
[[maybe_unused]] static const bool g_blas_kernels_selected = (blas_info(), true);

// NOTE: OpenMP's thread count is per calling thread: call this from the thread that runs
// the ops (as torch.set_num_threads).
void set_num_threads(int n) {
  SG_CHECK(n >= 1, "set_num_threads: need at least one thread, got {}", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}
int get_num_threads() { return omp_get_max_threads(); }

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << to_string(t); }

// ---- core kernels ----
namespace {
// update(dst[i], src[i]) over two same-shape strided tensors, in parallel runs; the
// unit-stride case is a plain loop the compiler vectorizes. update takes dst[i] by
// reference: a copy only writes it (dst may hold uninitialised bytes, e.g. a bool that is
// neither 0 nor 1), an accumulation reads it too.
template <typename D, typename S, typename Update>
void update_strided(const Tensor& dst, const Tensor& src, Update&& update) {
  const auto L = coalesce<2>(dst.shape(), {dst.strides(), src.strides()});
  D* d = static_cast<D*>(dst.raw_data());
  const S* s = static_cast<const S*>(src.raw_data());
  parallel_runs(L, [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> st) {
    D* dp = d + off[0];
    const S* sp = s + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) update(dp[i], sp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) update(dp[i * st[0]], sp[i * st[1]]);
    }
  });
}

// One element of a copy: static_cast, except that bfloat16 goes through float (exact both
// ways: to bfloat16 rounds once, to nearest even) and bfloat16 -> bfloat16 copies the bits.
template <typename D, typename S> D convert_element(S v) {
  if constexpr (std::is_same_v<D, S>) return v;
  else if constexpr (std::is_same_v<D, bfloat16>) return to_bfloat16(v);
  else if constexpr (std::is_same_v<S, bfloat16>) return static_cast<D>(static_cast<float>(v));
  else return static_cast<D>(v);
}

// Throws when an element of src cannot be converted to D (a NaN, infinite or out-of-range
// float going to int64), before anything is written.
template <typename D, typename S> void check_convertible(const Tensor& src, Dtype dst_dtype) {
  if constexpr (!std::is_same_v<D, int64_t> || !(std::is_floating_point_v<S> || std::is_same_v<S, bfloat16>)) {
    return;
  } else {
    std::atomic<bool> bad{false};
    S bad_value{};
    const S* s = static_cast<const S*>(src.raw_data());
    parallel_runs(coalesce<1>(src.shape(), {src.strides()}), [&](std::array<int64_t, 1> off, int64_t n,
                                                                   std::array<int64_t, 1> st) {
      for (int64_t i = 0; i < n; ++i) {
        const S v = s[off[0] + i * st[0]];
        if (!convertible_to<D>(static_cast<double>(v)) && !bad.exchange(true)) bad_value = v;
      }
    });
    if (bad) cast_value<D>(static_cast<double>(bad_value), fmt::format("converting {} of shape {} to {}", src.dtype(), src.shape(), dst_dtype));
  }
}
}  // namespace

void copy_kernel(const Tensor& dst, const Tensor& src) {
  SG_CHECK(dst.shape() == src.shape(), "copy: shapes {} and {} differ", dst.shape(), src.shape());
  if (dst.numel() == 0) return;
  visit_dtype(dst.dtype(), [&]<typename D>() {
    visit_dtype(src.dtype(), [&]<typename S>() {
      check_convertible<D, S>(src, dst.dtype());
      update_strided<D, S>(dst, src, [](D& d, S v) { d = convert_element<D>(v); });
    });
  });
}

void add_into_kernel(const Tensor& dst, const Tensor& src) {
  SG_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(), "accumulate: {} {} += {} {}", dst.shape(),
           dst.dtype(), src.shape(), src.dtype());
  SG_CHECK(is_floating(dst.dtype()), "accumulate: gradients must be floating, got {}", dst.dtype());
  if (dst.numel() == 0) return;
  visit_dtype(dst.dtype(), [&]<typename T>() {
    if constexpr (std::is_floating_point_v<T>) update_strided<T, T>(dst, src, [](T& a, T b) { a += b; });
  });
}

Tensor make_contiguous_copy(const Tensor& src) {
  Tensor out = empty(src.shape(), src.dtype());
  copy_kernel(out, src);
  return out;
}

}  // namespace sg
