#pragma once
// DistributedDataParallel: data parallelism over the ranks of the process group (PyTorch's
// torch.nn.parallel.DistributedDataParallel, on MPI). Every rank holds the whole model and
// runs it on its own shard of each global batch; after backward every rank holds the mean
// of all ranks' gradients, so the optimizers take the same step everywhere and the models
// stay identical.
//
//   sg::distributed::Session session(argc, argv);
//   auto net = std::make_shared<Net>(gen);
//   sg::distributed::DistributedDataParallel ddp(net);   // rank 0's weights everywhere
//   sg::optim::AdamW opt(net->parameters(), {.lr = 1e-3});
//   for (const auto& b : loader) {                       // {.rank, .world_size}: this rank's shard
//     sg::Tensor loss = sg::cross_entropy(ddp(b.x), b.y);
//     opt.zero_grad();
//     loss.backward();                                   // gradients averaged over ranks on return
//     opt.step();
//   }
//
// How: the parameters are split into buckets (about first_bucket_bytes for the first,
// bucket_bytes for the others) in reverse registration order, which is roughly the order
// backward finishes them, the same on every rank. A post-accumulate-grad hook on each
// parameter copies its gradient into its bucket's flat buffer; when a bucket's last
// gradient arrives, its sum over ranks starts (MPI_Iallreduce, in place) while backward goes
// on with earlier layers. Buckets start strictly in index order, so every rank issues the
// same collectives in the same order. A callback queued at the end of backward starts what
// is left, waits for everything, divides by the world size and copies each bucket back into
// the gradients. Non-blocking MPI only moves when some MPI call runs: Progress::Hooks tests
// the open requests from every hook (MPI_Test); Progress::Thread hands each bucket to a
// communication thread that runs the blocking MPI_Allreduce (needs MPI_THREAD_SERIALIZED).
//
// A parameter that gets no gradient in a backward (not used in the forward on this rank):
// with UnusedParameters::ZeroFill (the default) it contributes zeros, and after the
// reduction its gradient is the mean over all ranks (each bucket also sums, per
// parameter, how many ranks had a gradient: when none had, the gradient stays undefined,
// as in one process, and the optimizer skips it); with UnusedParameters::Error the
// backward throws naming it (then the job should abort(), as every rank that differs
// would otherwise wait). Either way no rank waits for a gradient that never comes.
// Parameters that do not require grad (frozen) are broadcast but never reduced.
// Every rank must run backward through the model each step (as in PyTorch): a rank whose
// backward reaches none of the parameters issues no reduction, and the others wait for it.
//
// The wrapped module is registered as the child "module" (parameter names "module.<name>",
// as PyTorch's DDP); checkpoints are usually written from the wrapped module itself, so a
// file from N processes loads into one.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "distributed/process_group.h"
#include "nn/module.h"

namespace sg::distributed {

enum class Progress { Hooks, Thread };
enum class UnusedParameters { ZeroFill, Error };

struct DdpOptions {
  int64_t first_bucket_bytes = int64_t{1} << 20;  // PyTorch: 1 MiB, so the first reduction starts early
  int64_t bucket_bytes = int64_t{25} << 20;       // PyTorch's bucket_cap_mb = 25
  bool overlap = true;     // false: every bucket is reduced after backward (same results)
  Progress progress = Progress::Hooks;
  UnusedParameters unused = UnusedParameters::ZeroFill;
};

// What the reductions cost, summed over the backwards since construction or reset_stats().
struct DdpStats {
  int64_t backwards = 0;
  double exposed_seconds = 0.0;   // from the end of backward to gradients ready: the communication backward did not hide
  int64_t bytes_per_backward = 0; // the gradients reduced by each backward (all buckets)
  int64_t buckets = 0;
  int64_t buckets_started_in_backward = 0;  // how many reductions started before backward ended
};

class DistributedDataParallel : public nn::Module {
 public:
  // Broadcasts the module's parameters and buffers from rank 0 (so every rank starts from
  // the same model) and registers the gradient hooks. Every rank must construct it on the
  // same model (parameter count, shapes and dtypes are checked across ranks).
  explicit DistributedDataParallel(std::shared_ptr<nn::Module> module, DdpOptions options = {});
  ~DistributedDataParallel() override;
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  Tensor forward(const Tensor& x) override { return module_->forward(x); }
  nn::Module& module() { return *module_; }

  // Gradient accumulation (PyTorch's no_sync): while off, backward only accumulates locally;
  // the next backward with sync on reduces the accumulated gradients.
  void set_sync(bool on) { sync_ = on; }
  bool sync() const { return sync_; }

  const DdpOptions& options() const { return options_; }
  const DdpStats& stats() const { return stats_; }
  void reset_stats();
  // e.g. "2.14 MB of gradients in 2 buckets (4 tensors 1.64 MB, 2 tensors 0.50 MB)"
  std::string describe_buckets() const;

 private:
  struct Bucket {
    Dtype dtype = kFloat32;
    std::vector<size_t> params;    // indices into params_
    std::vector<int64_t> offsets;  // each parameter's first element in flat
    int64_t numel = 0;             // gradient elements; flat[numel + slot] counts the ranks
                                   // that had a gradient for parameter `slot` (0 or 1 each)
    Tensor flat;                   // (numel + params,) the bucket's gradients, reduced in place
    int64_t waiting = 0;           // gradients not yet copied in during this backward
    bool started = false;
    bool done = false;             // the reduction finished (Thread: set by the thread)
    detail::Request request;       // Hooks
  };

  static void set_had_gradient(const Bucket& b, size_t slot, bool had);
  static bool had_gradient_anywhere(const Bucket& b, size_t slot);
  void on_gradient_ready(size_t param_index, const Tensor& param);
  void begin_backward();
  void start_ready_buckets();
  void start(Bucket& bucket);
  void poll();  // Hooks: drives MPI's progress on the open requests
  void finish_backward();
  void wait_all();
  void communication_loop();

  void stop_thread();

  std::shared_ptr<nn::Module> module_;
  DdpOptions options_;
  int64_t communicator_ = -1;      // this DDP's own MPI communicator (detail::new_communicator)
  std::vector<Tensor> params_;
  std::vector<std::string> param_names_;
  std::vector<int64_t> hook_handles_;
  std::vector<size_t> bucket_of_;  // param index -> bucket index
  std::vector<char> ready_;        // param index -> gradient arrived this backward
  std::vector<Bucket> buckets_;
  size_t next_bucket_ = 0;         // the next bucket to start (they start in order)
  bool in_backward_ = false;
  uint64_t backward_id_ = 0;       // the backward (core/autograd.h) the hooks last saw
  bool sync_ = true;
  DdpStats stats_;

  // Progress::Thread: buckets handed to the communication thread, by index.
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<size_t> queue_;
  bool stopping_ = false;
};

}  // namespace sg::distributed
