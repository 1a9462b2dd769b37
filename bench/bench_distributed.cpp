// Data parallelism on this machine: training steps of the two MNIST trainers' models at
// 1 process x 2 threads against 2 processes x 1 thread (mpirun -np 2, DistributedDataParallel),
// with what the gradient reductions cost and how much of it backward hid, and PyTorch 1.13's
// DistributedDataParallel (gloo) on the same models, batch and threads in the same run
// (bench/torch_peer.py, spec ddp).
//
//   build/bench/bench_distributed [--steps 60] [--data DIR] [--precision fp32|bf16]
//
// The program runs the one-process rows itself, then starts itself under
// `mpirun -np 2 --oversubscribe` (--child) for the two-rank rows and prints one table.
// Models (examples/models.h, what the trainers train): the MLP 784-512-256-10 and the ViT
// with the trainer's defaults (7x7 patches, dim 64, 4 layers, 4 heads, mean pooling);
// global batch 128 (64 per rank), AdamW and the trainers' warmup-cosine schedule; real MNIST
// batches from the DataLoader (sharded per rank). A step is trainer::train_step. 10 untimed
// warm-up steps, then --steps timed between barriers on every rank: ms/step is rank 0's
// wall time / steps.
// Rows on 2 ranks, each a fresh model from the same seed:
//   hooks        DDP defaults: buckets of 1 MB first then 25 MB, reductions started from
//                the gradient hooks during backward, progress by MPI_Test from the hooks
//   hooks small  the same with 256 KB buckets (more reductions, more overlap)
//   thread small 256 KB buckets reduced by a communication thread (blocking MPI_Allreduce)
//   no overlap   every bucket reduced after backward
// Columns: "exposed ms" is the time from the end of backward until every gradient is
// averaged (the communication backward did not hide; DdpStats), "% step" its share of the
// step; "all-reduce ms" is one MPI_Allreduce of all the step's gradients alone (median of
// 21; what the exposed time would be with no overlap at all); MB/step the bytes each rank
// reduces per step. Limit: the copy bandwidth of this machine (2 threads, in the same run):
// a shared-memory all-reduce of B bytes moves at least ~3B through memory per rank.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "examples/models.h"
#include "examples/trainer.h"
#include "softgrad.h"

namespace dist = sg::distributed;

namespace {

constexpr int64_t kGlobalBatch = 128;
constexpr int kWarmupSteps = 10;

struct Model {
  std::string name;
  std::function<std::shared_ptr<sg::nn::Module>()> make;
  double weight_decay;
  bool flat;  // (N, 784) inputs, else (N, 28, 28)
  std::string torch_spec;  // torch_peer.py's model arguments
};

std::vector<Model> models_to_run() {
  return {
      {"MLP", [] { sg::Generator gen(0); return std::shared_ptr<sg::nn::Module>(models::make_mlp({512, 256}, 0.0, gen)); },
       1e-2, true, "mlp"},
      {"ViT", [] {
         sg::Generator gen(0);
         return std::shared_ptr<sg::nn::Module>(std::make_shared<models::VisionTransformer>(models::VitConfig{}, gen));
       },
       5e-2, false, fmt::format("vit patch={} depth={} mean_pool={}", models::VitConfig{}.patch, models::VitConfig{}.depth,
                                models::VitConfig{}.pool == "mean" ? 1 : 0)},
  };
}

struct Timing {
  double ms_per_step = 0.0;
  dist::DdpStats stats;  // zeros without DDP
};

// Warm-up, then `steps` timed steps of model (wrapped in DDP with `options` when given) on
// this rank's shard of global batches of kGlobalBatch.
Timing time_steps(const Model& m, const sg::data::TensorDataset& data, int steps, bool bf16,
                  std::optional<dist::DdpOptions> options) {
  const int W = dist::world_size();
  std::shared_ptr<sg::nn::Module> model = m.make();
  std::unique_ptr<dist::DistributedDataParallel> ddp;
  if (options) ddp = std::make_unique<dist::DistributedDataParallel>(model, *options);
  sg::data::DataLoader loader(data, {.batch_size = kGlobalBatch / W, .shuffle = true, .seed = 0, .rank = dist::rank(),
                                     .world_size = W});
  const int64_t per_epoch = loader.num_batches();
  sg::optim::AdamW opt(model->parameters(), {.lr = 1e-3, .weight_decay = m.weight_decay});
  sg::optim::WarmupCosine schedule(opt, per_epoch, 10 * per_epoch);
  model->train();
  auto run = [&](int64_t epoch, int count) {
    loader.set_epoch(epoch);
    int done = 0;
    for (const sg::data::Batch& b : loader) {
      trainer::train_step(*model, opt, schedule, b, bf16);
      if (++done == count) break;
    }
  };
  run(0, kWarmupSteps);
  if (ddp) ddp->reset_stats();
  dist::barrier();
  const auto t0 = sgbench::Clock::now();
  run(1, steps);
  dist::barrier();
  Timing t{sgbench::ms_since(t0) / steps, {}};
  if (ddp) t.stats = ddp->stats();
  return t;
}

// One MPI_Allreduce of `bytes` of float32 alone: median ms of 21.
double all_reduce_alone_ms(int64_t bytes) {
  const sg::Tensor t = sg::zeros({bytes / 4});
  dist::barrier();
  return sgbench::median_ms([&] { dist::all_reduce(t); }, 21, 3);
}

sg::data::TensorDataset load_train(const std::filesystem::path& dir, bool flat) {
  sg::data::MnistData mnist = sg::data::load_mnist(dir, sg::data::Split::Train, {.flatten = flat});
  sg::data::dataset_normalize(sg::data::DatasetKind::Mnist).apply_(mnist.images);
  return sg::data::TensorDataset(mnist.images, mnist.labels);
}

// The two-rank rows, under mpirun: rank 0 prints one tab-separated line per row for the parent.
int child_main(const std::filesystem::path& dir, int steps, bool bf16) {
  sg::set_num_threads(1);
  const std::vector<std::pair<std::string, dist::DdpOptions>> variants = {
      {"hooks", {}},
      {"hooks small", {.first_bucket_bytes = 256 << 10, .bucket_bytes = 256 << 10}},
      {"thread small", {.first_bucket_bytes = 256 << 10, .bucket_bytes = 256 << 10, .progress = dist::Progress::Thread}},
      {"no overlap", {.overlap = false}},
  };
  for (const Model& m : models_to_run()) {
    const sg::data::TensorDataset data = load_train(dir, m.flat);
    for (const auto& [name, options] : variants) {
      const Timing t = time_steps(m, data, steps, bf16, options);
      const double alone = all_reduce_alone_ms(t.stats.bytes_per_backward);
      if (dist::is_main())
        fmt::print("ROW\t{}\t{}\t{:.4f}\t{:.4f}\t{:.4f}\t{}\t{}\t{:.1f}\n", m.name, name, t.ms_per_step,
                   t.stats.exposed_seconds * 1e3 / static_cast<double>(t.stats.backwards), alone,
                   t.stats.bytes_per_backward, t.stats.buckets,
                   static_cast<double>(t.stats.buckets_started_in_backward) / static_cast<double>(t.stats.backwards));
      std::fflush(stdout);
    }
  }
  return 0;
}

std::string cpu_model() {
  std::FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return "unknown CPU";
  char line[512];
  std::string model = "unknown CPU";
  while (std::fgets(line, sizeof line, f))
    if (std::string s = line; s.starts_with("model name")) {
      model = s.substr(s.find(':') + 2);
      if (!model.empty() && model.back() == '\n') model.pop_back();
      break;
    }
  std::fclose(f);
  return model;
}

}  // namespace

int main(int argc, char** argv) {
  dist::Session session(argc, argv);
  int steps = 60;
  bool child = false;
  std::string precision = "fp32";
  std::optional<std::filesystem::path> data_flag;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--child") child = true;
    else if (a == "--steps" && i + 1 < argc) steps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--data" && i + 1 < argc) data_flag = argv[++i];
    else if (a == "--precision" && i + 1 < argc) precision = argv[++i];
    else {
      fmt::print(stderr, "usage: bench_distributed [--steps N] [--data DIR] [--precision fp32|bf16]\n");
      return 2;
    }
  }
  const bool bf16 = precision == "bf16";
  const std::filesystem::path dir =
      sg::data::resolve_dataset_dir(sg::data::DatasetKind::Mnist, data_flag, /*allow_download=*/true);
  if (child) return child_main(dir, steps, bf16);
  SG_CHECK(dist::world_size() == 1, "bench_distributed starts its own 2 ranks: run it without mpirun");

  const int threads = 2;
  sg::set_num_threads(threads);
  const std::string dir_str = std::filesystem::absolute(dir).string();
  fmt::print("data parallel training steps on {} ({} cores), global batch {}, {}, {} timed steps after {} warm-up\n",
             cpu_model(), sysconf(_SC_NPROCESSORS_ONLN), kGlobalBatch, precision, steps, kWarmupSteps);
  {
    sgbench::CopyProbe probe(size_t{256} << 20, threads);
    fmt::print("limit: {}\n", sgbench::describe(sgbench::copy_bandwidth(probe, 12)));
  }
  sgbench::TorchPeer peer(threads, 1, 0);
  peer.print_about();

  struct Row {
    std::string model, setup;
    double ms = 0, exposed_ms = -1, alone_ms = -1, started = 0;
    int64_t bytes = 0, buckets = 0;
    std::optional<double> torch_ms;
  };
  std::vector<Row> rows;
  std::map<std::string, std::optional<double>> torch_two_ranks;
  for (const Model& m : models_to_run()) {
    const sg::data::TensorDataset data = load_train(dir, m.flat);
    const Timing t = time_steps(m, data, steps, bf16, std::nullopt);
    auto spec = [&](int world) {
      return fmt::format("ddp {} data={} world={} batch={} steps={} warmup_steps={} autocast={}", m.torch_spec, dir_str,
                         world, kGlobalBatch, steps, kWarmupSteps, bf16 ? 1 : 0);
    };
    rows.push_back({.model = m.name, .setup = "1 process x 2 threads", .ms = t.ms_per_step, .torch_ms = peer.time(spec(1))});
    torch_two_ranks[m.name] = peer.time(spec(2));
  }

#ifndef SOFTGRAD_MPIEXEC
  fmt::print("note: built without MPI: no two-rank rows\n");
#else
  // The two-rank rows: this program again under mpirun (as root only with Open MPI's consent).
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string command = fmt::format("{} -np 2 --oversubscribe {} --child --steps {} --data {} --precision {}",
                                          SOFTGRAD_MPIEXEC, self, steps, dir_str, precision);
  std::fflush(stdout);
  if (std::FILE* pipe = popen(command.c_str(), "r")) {
    char line[1024];
    while (std::fgets(line, sizeof line, pipe)) {
      std::string text = line;
      if (!text.starts_with("ROW\t")) {
        fmt::print("{}", text);
        continue;
      }
      Row r;
      char model[64], setup[64];
      double ms, exposed, alone, started;
      long long bytes, buckets;
      if (std::sscanf(line, "ROW\t%63[^\t]\t%63[^\t]\t%lf\t%lf\t%lf\t%lld\t%lld\t%lf", model, setup, &ms, &exposed, &alone,
                      &bytes, &buckets, &started) != 8)
        continue;
      r = {model, std::string("2 ranks x 1 thread, ") + setup, ms, exposed, alone, started, bytes, buckets, std::nullopt};
      if (std::string(setup) == "hooks") r.torch_ms = torch_two_ranks[model];
      rows.push_back(r);
    }
    const int status = pclose(pipe);
    if (status != 0) fmt::print("note: '{}' exited with status {}\n", command, status);
  }
#endif

  sgbench::Table table({{"model", true}, {"setup", true}, {"ms/step"}, {"samples/s"}, {"vs 1 process"},
                        {"exposed comm ms"}, {"% of step"}, {"all-reduce alone ms"}, {"MB/step"},
                        {"buckets (started in backward)"}, {"torch ms/step"}, {"torch / softgrad"}});
  std::map<std::string, double> one_process;
  for (const Row& r : rows) {
    if (r.exposed_ms < 0) one_process[r.model] = r.ms;
    const bool ddp = r.exposed_ms >= 0;
    table.add_row({r.model, r.setup, fmt::format("{:.2f}", r.ms), fmt::format("{:.0f}", kGlobalBatch * 1e3 / r.ms),
                   fmt::format("{:.2f}x", one_process[r.model] / r.ms), ddp ? fmt::format("{:.3f}", r.exposed_ms) : "",
                   ddp ? fmt::format("{:.1f}%", 100.0 * r.exposed_ms / r.ms) : "",
                   ddp ? fmt::format("{:.3f}", r.alone_ms) : "", ddp ? fmt::format("{:.2f}", r.bytes / 1e6) : "",
                   ddp ? fmt::format("{} ({:.0f})", r.buckets, r.started) : "",
                   r.torch_ms ? fmt::format("{:.2f}", *r.torch_ms) : "",
                   r.torch_ms ? fmt::format("{:.2f}x", *r.torch_ms / r.ms) : ""});
  }
  table.print();
  fmt::print("vs 1 process: the 1-process step time / this row's (above 1: faster). exposed comm: after backward, until "
             "the gradients are averaged. torch: PyTorch {}'s DDP (gloo, 2 processes x 1 thread) on the hooks row, its "
             "single process (2 threads) on the first.\n",
             peer.available() ? "1.13" : "(unavailable)");
  return 0;
}
