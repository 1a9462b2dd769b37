// Post-training int8 quantization of a trained MNIST model (quant/quantize.h): loads a
// checkpoint written by mnist_mlp or mnist_transformer (--save), calibrates the integer
// model on a few training batches, evaluates float32 and int8 side by side on the test set
// (accuracy and throughput), optionally saves the int8 model, and ends with one line a
// script can read:
//
//   build/examples/mnist_mlp --save mlp.safetensors
//   build/examples/mnist_quantize --checkpoint mlp.safetensors --save mlp.int8.safetensors
//   ...
//   fp32 accuracy 98.55%  int8 accuracy 98.41%  speedup 5.2x
//
// The model and data set come from the checkpoint's metadata (the trainers write them);
// --model and --dataset override. "speedup" is the int8 model's test-set throughput over the
// float32 model's, both at --eval-batch images per call on the same threads.
#include <chrono>
#include <filesystem>

#include "examples/models.h"
#include "examples/trainer.h"
#include "quant/quantize.h"

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, model_kind, save;
  int64_t calibration_batches = 8, eval_batch = 256;
  double percentile = 0, max_drop = 100;
  bool per_token = false;
  trainer::Flags flags;
  flags.dataset.clear();
  CLI::App app{"Quantize a trained MNIST model to int8 and compare it with float32", "mnist_quantize"};
  app.add_option("--checkpoint", checkpoint, "Checkpoint written by mnist_mlp or mnist_transformer (--save)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--model", model_kind, "mlp or vit (default: from the checkpoint)")
      ->check(CLI::IsMember({"mlp", "vit"}));
  app.add_option("--dataset", flags.dataset, "mnist or fashion (default: from the checkpoint)")
      ->check(CLI::IsMember({"mnist", "fashion"}));
  app.add_option("--data", flags.data, "Directory with the IDX files (default: as the trainers find them)");
  app.add_flag("--per-token", per_token,
               "Per-token dynamic activation scales: each row of every Linear's input scaled by its own largest "
               "|value| at run time");
  app.add_option("--calibration-batches", calibration_batches, "Training batches of 128 to calibrate on")
      ->check(trainer::integer_in<int64_t>(1))
      ->capture_default_str();
  app.add_option("--percentile", percentile,
                 "Calibrate each activation's range at this percentile of |x| (default: the largest |x|)")
      ->check(trainer::finite_in(50.0, 100.0));
  app.add_option("--eval-batch", eval_batch, "Test images per forward call when timing")
      ->check(trainer::integer_in<int64_t>(1))
      ->capture_default_str();
  app.add_option("--threads", flags.threads, "Threads (0: all cores)")->check(trainer::integer_in<int>(0));
  app.add_option("--save", save, "Write the int8 model here (safetensors, atomic)");
  app.add_option("--max-drop", max_drop, "Exit with status 1 when int8 accuracy is more than this many points lower")
      ->check(trainer::finite_in(0.0, 100.0));

  return trainer::run_main(app, argc, argv, [&] {
    SG_CHECK(sg::distributed::world_size() == 1,
             "mnist_quantize runs as one process (started as {} by mpirun): quantization is not data parallel",
             sg::distributed::world_size());
    const models::CheckpointModel loaded = models::load_checkpoint_model(checkpoint, model_kind);
    model_kind = loaded.kind;
    const std::shared_ptr<sg::nn::Module>& model = loaded.model;
    if (flags.dataset.empty()) flags.dataset = loaded.metadata.count("dataset") ? loaded.metadata.at("dataset") : "mnist";
    const bool vit = model_kind == "vit";

    trainer::Data data = trainer::load_data(flags, /*flatten=*/!vit);
    std::vector<sg::Tensor> calibration;
    for (const sg::data::Batch& b : data.train) {
      if (static_cast<int64_t>(calibration.size()) == calibration_batches) break;
      calibration.push_back(b.x);
    }
    sg::quant::QuantizeOptions options;
    if (percentile > 0) options = {.calibration = sg::quant::Calibration::kPercentile, .percentile = percentile};
    options.per_token = per_token;
    const auto q0 = Clock::now();
    const sg::quant::QuantizedModel qmodel = sg::quant::quantize(*model, calibration, options);
    fmt::print("quantized {} ({}) on {} calibration batches in {:.2f} s:\n{}", model_kind, checkpoint,
               calibration.size(), std::chrono::duration<double>(Clock::now() - q0).count(), qmodel.describe());

    const trainer::Score fp32 = trainer::score(data.test, eval_batch, [&](const sg::Tensor& x) { return model->forward(x); });
    const trainer::Score int8 = trainer::score(data.test, eval_batch, [&](const sg::Tensor& x) { return qmodel.forward(x); });
    const double n = static_cast<double>(data.test.size());
    int64_t float_bytes = 0;
    for (const auto& [name, t] : sg::nn::state_dict(*model)) float_bytes += t.nbytes();
    fmt::print("{:<6} {:>9} {:>14} {:>12}\n", "", "accuracy", "images/s", "parameters");
    fmt::print("{:<6} {:>8.2f}% {:>14.0f} {:>10.1f} KB\n", "fp32", fp32.accuracy, n / fp32.seconds,
               float_bytes / 1024.0);
    fmt::print("{:<6} {:>8.2f}% {:>14.0f} {:>10.1f} KB\n", "int8", int8.accuracy, n / int8.seconds,
               qmodel.parameter_bytes() / 1024.0);
    if (!save.empty()) {
      qmodel.save(save);
      fmt::print("saved {} ({:.1f} KB; the float checkpoint's weights: {:.1f} KB)\n", save,
                 std::filesystem::file_size(save) / 1024.0, float_bytes / 1024.0);
    }
    fmt::print("fp32 accuracy {:.2f}%  int8 accuracy {:.2f}%  speedup {:.1f}x\n", fp32.accuracy, int8.accuracy,
               fp32.seconds / int8.seconds);
    return fp32.accuracy - int8.accuracy <= max_drop ? 0 : 1;
  });
}
