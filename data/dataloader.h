#pragma once
// DataLoader: mini-batches of a TensorDataset in a reproducible order (PyTorch's
// DataLoader with a DistributedSampler-style set_epoch, single process).
//
//   sg::data::DataLoader loader(train, {.batch_size = 64, .shuffle = true, .seed = 1});
//   for (int64_t epoch = start_epoch; epoch < epochs; ++epoch) {
//     loader.set_epoch(epoch);                 // optional: each pass advances it anyway
//     for (const sg::data::Batch& b : loader) { ... b.x (64, 784), b.y (64) ... }
//   }
//
// Order: with shuffle, epoch k visits the samples in a permutation that depends only on
// (seed, k) (Fisher-Yates driven by an sg::Generator seeded from both), so a run resumed
// at epoch k calls set_epoch(k) and sees exactly the order the first run saw, without
// replaying earlier epochs. Without shuffle the order is 0, 1, ..., N - 1.
// Epochs: each pass over the loader (each begin()) runs epoch epoch() and then advances
// epoch() by one; set_epoch(k) chooses the epoch of the next pass.
// Shards (data parallelism, PyTorch's DistributedSampler): with {.rank = r, .world_size = W}
// the loader yields rank r's share of each epoch: the epoch's permutation, padded by
// repeating its start up to a multiple of W, then every W-th sample from position r. The
// W shards are disjoint (apart from the padding), each of ceil(N / W) samples, so every
// rank runs the same number of batches; batch i of the W ranks together holds the same
// samples as batch i of one process with W times the batch size (when W divides N).
// Batches: num_batches() of batch_size samples; the last one is smaller unless drop_last.
// Each batch is a fresh tensor pair (no batch aliases another or the dataset), so a batch
// may be kept past the next iteration; x is normalized per batch when `normalize` is set.
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <vector>

#include "data/dataset.h"

namespace sg::data {

struct DataLoaderOptions {
  int64_t batch_size = 1;  // PyTorch's defaults: 1, no shuffle
  bool shuffle = false;
  bool drop_last = false;  // drop the last batch when it is smaller than batch_size
  uint64_t seed = 0;       // with the epoch, fixes the shuffle order
  // Applied in place to each batch's x (a fresh tensor, so the data set is untouched):
  // first the shift, with a generator derived from (seed, epoch, batch index) only, so a
  // resumed run sees the same shifts; then normalize.
  std::optional<RandomShift> random_shift = std::nullopt;
  std::optional<Normalize> normalize = std::nullopt;
  int64_t rank = 0;        // this process's shard, 0 .. world_size - 1
  int64_t world_size = 1;  // the number of shards (processes)
};

class DataLoader {
 public:
  class Iterator;

  explicit DataLoader(TensorDataset dataset, DataLoaderOptions options = {});

  int64_t num_batches() const;
  int64_t num_samples() const;  // this shard's samples per epoch: ceil(N / world_size)
  int64_t epoch() const { return epoch_; }  // the epoch the next pass runs
  void set_epoch(int64_t epoch);            // epoch >= 0
  // This shard's sample order in any epoch (shuffled or not); does not change the loader.
  std::vector<int64_t> order(int64_t epoch) const;

  const TensorDataset& dataset() const { return dataset_; }
  const DataLoaderOptions& options() const { return options_; }

  // A pass over epoch(), then epoch() + 1 for the next pass.
  Iterator begin();
  Iterator end() const;

 private:
  TensorDataset dataset_;
  DataLoaderOptions options_;
  int64_t epoch_ = 0;
};

// An input iterator over one epoch's batches. It holds its own handles on the data and
// the order, so it stays valid if the loader goes away. The batch is made on arrival
// (construction and ++), so dereferencing is free.
class DataLoader::Iterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = Batch;
  using difference_type = std::ptrdiff_t;
  using pointer = const Batch*;
  using reference = const Batch&;

  Iterator() = default;
  const Batch& operator*() const { return batch_; }
  const Batch* operator->() const { return &batch_; }
  Iterator& operator++();
  bool operator==(const Iterator& other) const { return index_ == other.index_; }
  int64_t index() const { return index_; }  // the batch's position in the epoch

 private:
  friend class DataLoader;
  struct Pass;  // dataset, options and this epoch's order, shared by copies
  Iterator(std::shared_ptr<const Pass> pass, int64_t index);
  void load();

  std::shared_ptr<const Pass> pass_;
  int64_t index_ = 0;
  Batch batch_;
};

}  // namespace sg::data
