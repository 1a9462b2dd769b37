#include "data/dataloader.h"

#include <algorithm>
#include <numeric>
#include <span>
#include <utility>

namespace sg::data {

namespace {

// splitmix64's finalizer: a bijection on 64 bits that scatters nearby inputs.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The generator seed of one epoch. Distinct epochs of one seed get distinct seeds (an odd
// multiplier is a bijection). NOTE: changing this changes every shuffled order, so a run
// resumed by a newer build would see different epochs than the one that started it.
uint64_t epoch_seed(uint64_t seed, int64_t epoch) {
  return mix64(mix64(seed) + 0x9e3779b97f4a7c15ULL * (static_cast<uint64_t>(epoch) + 1));
}

}  // namespace

struct DataLoader::Iterator::Pass {
  TensorDataset dataset;
  DataLoaderOptions options;
  std::vector<int64_t> order;
  int64_t num_batches;
  int64_t epoch;
};

DataLoader::DataLoader(TensorDataset dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)), options_(std::move(options)) {
  SG_CHECK(options_.batch_size > 0, "DataLoader: batch_size must be positive, got {}", options_.batch_size);
  SG_CHECK(options_.world_size >= 1 && options_.rank >= 0 && options_.rank < options_.world_size,
           "DataLoader: rank {} of world_size {} is not a shard (need world_size >= 1, 0 <= rank < world_size)",
           options_.rank, options_.world_size);
  if (options_.random_shift) {  // fail here, not at the first batch
    options_.random_shift->check();
    SG_CHECK(dataset_.inputs().dim() == 3 && is_floating(dataset_.inputs().dtype()),
             "DataLoader: random_shift needs floating (N, H, W) images, got {} {}", dataset_.inputs().dtype(),
             dataset_.inputs().shape());
  }
  if (options_.normalize) {  // fail here, not at the first batch
    options_.normalize->check();
    SG_CHECK(is_floating(dataset_.inputs().dtype()), "DataLoader: normalize needs floating inputs, got {}",
             dataset_.inputs().dtype());
  }
}

int64_t DataLoader::num_samples() const {
  const int64_t n = dataset_.size(), w = options_.world_size;
  return n / w + (n % w != 0);
}

int64_t DataLoader::num_batches() const {
  const int64_t n = num_samples(), b = options_.batch_size;
  return n / b + (!options_.drop_last && n % b != 0);  // NOTE: not (n + b - 1) / b, which overflows for a huge b
}

void DataLoader::set_epoch(int64_t epoch) {
  SG_CHECK(epoch >= 0, "DataLoader::set_epoch: epoch must be >= 0, got {}", epoch);
  epoch_ = epoch;
}

std::vector<int64_t> DataLoader::order(int64_t epoch) const {
  SG_CHECK(epoch >= 0, "DataLoader::order: epoch must be >= 0, got {}", epoch);
  std::vector<int64_t> order(static_cast<size_t>(dataset_.size()));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (options_.shuffle) {
    // Fisher-Yates: position i takes a uniform pick among the positions not yet fixed.
    Generator gen(epoch_seed(options_.seed, epoch));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[gen.below(i)]);
  }
  if (options_.world_size == 1) return order;
  // This rank's shard: positions rank, rank + W, ... of the order padded with its own start.
  const int64_t n = static_cast<int64_t>(order.size()), per_rank = num_samples();
  std::vector<int64_t> shard(static_cast<size_t>(per_rank));
  for (int64_t i = 0; i < per_rank; ++i)
    shard[static_cast<size_t>(i)] = order[static_cast<size_t>((i * options_.world_size + options_.rank) % n)];
  return shard;
}

DataLoader::Iterator DataLoader::begin() {
  auto pass =
      std::make_shared<Iterator::Pass>(Iterator::Pass{dataset_, options_, order(epoch_), num_batches(), epoch_});
  ++epoch_;
  return Iterator(std::move(pass), 0);
}

DataLoader::Iterator DataLoader::end() const { return Iterator(nullptr, num_batches()); }

DataLoader::Iterator::Iterator(std::shared_ptr<const Pass> pass, int64_t index)
    : pass_(std::move(pass)), index_(index) {
  load();
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  ++index_;
  load();
  return *this;
}

void DataLoader::Iterator::load() {
  if (!pass_ || index_ >= pass_->num_batches) {
    batch_ = Batch{};  // past the end: drop the last batch's handles
    return;
  }
  const int64_t B = pass_->options.batch_size, N = static_cast<int64_t>(pass_->order.size());
  const int64_t start = index_ * B, count = std::min(B, N - start);
  batch_ = pass_->dataset.get_batch(std::span<const int64_t>(pass_->order).subspan(start, count));
  if (pass_->options.random_shift) {
    // (each shard draws its own shifts; one process keeps its seeds of old)
    const uint64_t shard = static_cast<uint64_t>(pass_->options.rank) << 40;
    Generator gen(mix64(epoch_seed(pass_->options.seed, pass_->epoch) ^ static_cast<uint64_t>(index_) ^ shard));
    pass_->options.random_shift->apply_(batch_.x, gen);
  }
  if (pass_->options.normalize) pass_->options.normalize->apply_(batch_.x);
}

}  // namespace sg::data
