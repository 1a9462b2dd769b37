// DistributedDataParallel: buckets, the gradient hooks that fill them and the reductions
// that overlap backward (see data_parallel.h for the scheme).
#include "distributed/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/autograd.h"
#include "ops/shape.h"

namespace sg::distributed {

namespace {
using Clock = std::chrono::steady_clock;

double megabytes(int64_t bytes) { return static_cast<double>(bytes) / 1e6; }

// flat[offset : offset + n] <- src (contiguous copy of the gradient).
void copy_in(const Tensor& flat, int64_t offset, const Tensor& grad) {
  const Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
  const size_t es = dtype_size(flat.dtype());
  std::memcpy(static_cast<char*>(flat.raw_data()) + static_cast<size_t>(offset) * es, g.raw_data(),
              static_cast<size_t>(g.numel()) * es);
}

void fill_zero(const Tensor& flat, int64_t offset, int64_t n) {
  const size_t es = dtype_size(flat.dtype());
  std::memset(static_cast<char*>(flat.raw_data()) + static_cast<size_t>(offset) * es, 0, static_cast<size_t>(n) * es);
}

}  // namespace

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<nn::Module> module, DdpOptions options)
    : nn::Module("DistributedDataParallel"), options_(options) {
  SG_CHECK(module != nullptr, "DistributedDataParallel: the module is null");
  SG_CHECK(options_.first_bucket_bytes > 0 && options_.bucket_bytes > 0,
           "DistributedDataParallel: bucket sizes must be positive, got first_bucket_bytes {} and bucket_bytes {}",
           options_.first_bucket_bytes, options_.bucket_bytes);
  module_ = register_module("module", std::move(module));
  if (!initialized()) init();

  const nn::NamedTensors named = module_->named_parameters();
  for (const auto& [name, p] : named) {
    SG_CHECK(p.dtype() == kFloat32 || p.dtype() == kFloat64,
             "DistributedDataParallel: parameter '{}' is {}; only float32 and float64 gradients are reduced", name,
             p.dtype());
    if (!p.requires_grad()) continue;  // frozen: broadcast below, never reduced
    params_.push_back(p);
    param_names_.push_back(name);
  }
  // The same model everywhere: the counts first (so the per-tensor collectives below pair
  // up), then broadcast checks each tensor's size and dtype against rank 0's.
  std::vector<int64_t> counts = {static_cast<int64_t>(named.size()), -static_cast<int64_t>(named.size())};
  const nn::NamedTensors buffers = module_->named_buffers();
  counts.push_back(static_cast<int64_t>(buffers.size()));
  counts.push_back(-static_cast<int64_t>(buffers.size()));
  all_reduce(counts, ReduceOp::Max);
  SG_CHECK(counts[0] == -counts[1] && counts[2] == -counts[3],
           "DistributedDataParallel: the ranks' models differ: rank {} has {} and {}, others between {} and {} "
           "parameters",
           rank(), plural(named.size(), "parameter"), plural(buffers.size(), "buffer"), -counts[1], counts[0]);
  {
    NoGradGuard no_grad;
    for (const auto& [name, p] : named) {
      SG_CHECK(p.is_contiguous(), "DistributedDataParallel: parameter '{}' ({}) is not contiguous", name, p.shape());
      broadcast(p, 0);
    }
    for (const auto& [name, b] : buffers) {
      SG_CHECK(b.is_contiguous(), "DistributedDataParallel: buffer '{}' ({}) is not contiguous", name, b.shape());
      broadcast(b, 0);
    }
  }

  // Buckets in reverse registration order, one dtype each: a bucket closes once it holds
  // its cap (the first bucket of each dtype: first_bucket_bytes).
  bucket_of_.assign(params_.size(), 0);
  ready_.assign(params_.size(), 0);
  std::vector<int64_t> open(2, -1);  // per dtype (0: float32, 1: float64), the open bucket's index
  std::vector<int64_t> open_bytes(2, 0);
  std::vector<char> first(2, 1);     // per dtype: the open bucket is that dtype's first
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    const int d = p.dtype() == kFloat64 ? 1 : 0;
    if (open[d] < 0) {
      open[d] = static_cast<int64_t>(buckets_.size());
      buckets_.emplace_back().dtype = p.dtype();
      open_bytes[d] = 0;
    }
    Bucket& b = buckets_[static_cast<size_t>(open[d])];
    b.params.push_back(k);
    bucket_of_[k] = static_cast<size_t>(open[d]);
    open_bytes[d] += static_cast<int64_t>(p.nbytes());
    const int64_t cap = first[d] ? options_.first_bucket_bytes : options_.bucket_bytes;
    if (open_bytes[d] >= cap) {
      open[d] = -1;
      first[d] = 0;
    }
  }
  for (Bucket& b : buckets_) {
    for (const size_t k : b.params) {
      b.offsets.push_back(b.numel);
      b.numel += params_[k].numel();
    }
    b.flat = zeros({b.numel + static_cast<int64_t>(b.params.size())}, b.dtype);
    stats_.bytes_per_backward += static_cast<int64_t>(b.flat.nbytes());
  }
  stats_.buckets = static_cast<int64_t>(buckets_.size());

  const bool threaded = options_.progress == Progress::Thread && world_size() > 1;
  if (threaded) {
    const std::string level = thread_level();
    SG_CHECK(level == "serialized" || level == "multiple",
             "DistributedDataParallel: Progress::Thread needs MPI_THREAD_SERIALIZED, but MPI gave '{}'", level);
  }
  communicator_ = detail::new_communicator();
  // NOTE: the hooks capture `this`: if anything below throws, none may outlive the object.
  try {
    if (threaded) thread_ = std::thread([this] { communication_loop(); });
    for (size_t k = 0; k < params_.size(); ++k)
      hook_handles_.push_back(params_[k].register_post_accumulate_grad_hook(
          [this, k](const Tensor& p) { on_gradient_ready(k, p); }));
  } catch (...) {
    for (size_t k = 0; k < hook_handles_.size(); ++k) params_[k].remove_hook(hook_handles_[k]);
    stop_thread();
    detail::free_communicator(communicator_);
    throw;
  }
}

DistributedDataParallel::~DistributedDataParallel() {
  for (size_t k = 0; k < hook_handles_.size(); ++k) params_[k].remove_hook(hook_handles_[k]);
  if (in_backward_) {
    // A backward that threw left reductions running into our buffers: finish them first.
    try {
      wait_all();
    } catch (...) {
    }
  }
  stop_thread();
  detail::free_communicator(communicator_);
}

void DistributedDataParallel::stop_thread() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
}

void DistributedDataParallel::reset_stats() {
  stats_.backwards = 0;
  stats_.exposed_seconds = 0.0;
  stats_.buckets_started_in_backward = 0;
}

std::string DistributedDataParallel::describe_buckets() const {
  std::vector<std::string> each;
  for (const Bucket& b : buckets_)
    each.push_back(fmt::format("{} {:.2f} MB", plural(b.params.size(), "tensor"), megabytes(static_cast<int64_t>(b.flat.nbytes()))));
  return fmt::format("{} of gradients in {} ({})", fmt::format("{:.2f} MB", megabytes(stats_.bytes_per_backward)),
                     plural(buckets_.size(), "bucket"), fmt::join(each, ", "));
}

// The count of ranks that had a gradient for parameter `slot`, kept after its gradients.
void DistributedDataParallel::set_had_gradient(const Bucket& b, size_t slot, bool had) {
  const int64_t at = b.numel + static_cast<int64_t>(slot);
  if (b.dtype == kFloat64) b.flat.data_ptr<double>()[at] = had ? 1.0 : 0.0;
  else b.flat.data_ptr<float>()[at] = had ? 1.0f : 0.0f;
}
bool DistributedDataParallel::had_gradient_anywhere(const Bucket& b, size_t slot) {
  const int64_t at = b.numel + static_cast<int64_t>(slot);
  return b.dtype == kFloat64 ? b.flat.data_ptr<double>()[at] != 0.0 : b.flat.data_ptr<float>()[at] != 0.0f;
}


// ---- during backward ----
void DistributedDataParallel::begin_backward() {
  if (in_backward_) {
    // NOTE: the previous backward threw before its end (its callback never ran): finish the
    // reductions it started (every rank started the same ones if every rank threw; if not,
    // the job is going down anyway) and start afresh rather than reuse its state.
    wait_all();
  }
  in_backward_ = true;
  backward_id_ = current_backward_id();
  next_bucket_ = 0;
  std::fill(ready_.begin(), ready_.end(), 0);
  for (Bucket& b : buckets_) {
    b.waiting = static_cast<int64_t>(b.params.size());
    b.started = b.done = false;
  }
  queue_backward_callback([this] { finish_backward(); });
}

void DistributedDataParallel::on_gradient_ready(size_t k, const Tensor& param) {
  if (!sync_) return;
  if (!in_backward_ || backward_id_ != current_backward_id()) begin_backward();
  if (ready_[k]) return;  // (a leaf's hooks fire once per backward)
  ready_[k] = 1;
  Bucket& b = buckets_[bucket_of_[k]];
  const size_t slot = static_cast<size_t>(std::find(b.params.begin(), b.params.end(), k) - b.params.begin());
  const Tensor g = param.grad();
  if (g.defined()) copy_in(b.flat, b.offsets[slot], g);
  else fill_zero(b.flat, b.offsets[slot], param.numel());
  set_had_gradient(b, slot, g.defined());
  --b.waiting;
  if (options_.overlap) {
    const size_t before = next_bucket_;
    start_ready_buckets();
    stats_.buckets_started_in_backward += static_cast<int64_t>(next_bucket_ - before);
  }
  poll();
}

void DistributedDataParallel::start_ready_buckets() {
  while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].waiting == 0) start(buckets_[next_bucket_++]);
}

void DistributedDataParallel::start(Bucket& b) {
  b.started = true;
  if (world_size() == 1) {
    b.done = true;
    return;
  }
  if (options_.progress == Progress::Thread) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(static_cast<size_t>(&b - buckets_.data()));
    }
    cv_.notify_all();
  } else {
    b.request = detail::iall_reduce_sum(communicator_, b.flat.raw_data(), b.flat.numel(), b.dtype);
  }
}

void DistributedDataParallel::poll() {
  if (options_.progress != Progress::Hooks || world_size() == 1) return;
  // NOTE: one MPI_Test progresses every open request; testing the oldest is enough.
  for (size_t i = 0; i < next_bucket_; ++i) {
    Bucket& b = buckets_[i];
    if (b.done) continue;
    b.done = detail::test(b.request);
    break;
  }
}

void DistributedDataParallel::communication_loop() {
  for (;;) {
    size_t index = 0;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      index = queue_.front();
      queue_.pop_front();
    }
    Bucket& b = buckets_[index];
    detail::all_reduce_sum(communicator_, b.flat.raw_data(), b.flat.numel(), b.dtype);
    {
      std::lock_guard lock(mutex_);
      b.done = true;
    }
    cv_.notify_all();
  }
}

void DistributedDataParallel::wait_all() {
  if (world_size() == 1) return;
  if (options_.progress == Progress::Thread) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] {
      for (const Bucket& b : buckets_)
        if (b.started && !b.done) return false;
      return true;
    });
    return;
  }
  for (Bucket& b : buckets_) {
    detail::wait(b.request);
    b.done = true;
  }
}

// The end of backward: what backward did not hide starts here.
void DistributedDataParallel::finish_backward() {
  const auto t0 = Clock::now();
  in_backward_ = false;
  std::vector<std::string> unused;
  for (size_t k = 0; k < params_.size(); ++k) {
    if (ready_[k]) continue;
    unused.push_back(param_names_[k]);
    Bucket& b = buckets_[bucket_of_[k]];
    const size_t slot = static_cast<size_t>(std::find(b.params.begin(), b.params.end(), k) - b.params.begin());
    // (a gradient accumulated by earlier backwards without sync still counts)
    const Tensor g = params_[k].grad();
    if (g.defined()) copy_in(b.flat, b.offsets[slot], g);
    else fill_zero(b.flat, b.offsets[slot], params_[k].numel());
    set_had_gradient(b, slot, g.defined());
    --b.waiting;
  }
  if (!unused.empty() && options_.unused == UnusedParameters::Error) {
    next_bucket_ = 0;  // nothing was started past this point on this rank; the job must abort
    wait_all();
    fail("DistributedDataParallel: rank {}: {} got no gradient in this backward: {} (use "
         "UnusedParameters::ZeroFill, or use every parameter in the forward)",
         rank(), plural(unused.size(), "parameter"), fmt::join(unused, ", "));
  }
  start_ready_buckets();
  wait_all();
  next_bucket_ = 0;

  const int world = world_size();
  for (Bucket& b : buckets_) {
    if (world > 1) detail::divide_by_world(b.flat.raw_data(), b.flat.numel(), b.dtype);  // the mean of the ranks' means
    for (size_t slot = 0; slot < b.params.size(); ++slot) {
      Tensor& p = params_[b.params[slot]];
      const int64_t n = p.numel();
      Tensor g = p.grad();
      if (!had_gradient_anywhere(b, slot)) continue;  // no rank had one: stays undefined, as in one process
      if (g.defined() && g.is_contiguous() && g.dtype() == b.dtype) {
        if (world == 1) continue;  // the bucket holds this very gradient
        const size_t es = dtype_size(b.dtype);
        std::memcpy(g.raw_data(), static_cast<const char*>(b.flat.raw_data()) + static_cast<size_t>(b.offsets[slot]) * es,
                    static_cast<size_t>(n) * es);
      } else {
        p.set_grad(sg::clone(sg::narrow(b.flat, 0, b.offsets[slot], n)).reshape(p.shape()));
      }
    }
  }
  ++stats_.backwards;
  stats_.exposed_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace sg::distributed
