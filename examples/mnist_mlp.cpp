// Trains a multilayer perceptron on MNIST (or Fashion-MNIST) and prints test accuracy
// after every epoch. The README's main command runs it with its defaults:
//
//   build/examples/mnist_mlp                          # 784-512-256-10, 10 epochs
//   build/examples/mnist_mlp --dataset fashion --metrics fashion.csv
//
// Model: models::make_mlp (examples/models.h): Linear + ReLU layers (--hidden, --dropout),
// then a Linear head to 10 classes, as an nn::Sequential (PyTorch's names).
// Recipe (examples/trainer.h): AdamW lr 1e-3, weight decay 1e-2, one epoch of linear warmup
// then cosine decay to zero, batch 128, inputs normalized with the data set's mean and std.
#include "examples/models.h"
#include "examples/trainer.h"

int main(int argc, char** argv) {
  trainer::Flags flags;
  std::vector<int64_t> hidden = {512, 256};
  double dropout = 0.0;
  CLI::App app{"Train an MLP on MNIST or Fashion-MNIST with softgrad", "mnist_mlp"};
  trainer::add_flags(app, flags);
  trainer::add_mlp_flags(app, hidden, dropout);

  return trainer::run_main(app, argc, argv, [&] {
    trainer::Data data = trainer::load_data(flags, /*flatten=*/true);
    sg::Generator gen(flags.seed);
    auto net = models::make_mlp(hidden, dropout, gen);
    std::string widths;
    for (const int64_t h : hidden) widths += (widths.empty() ? "" : ",") + std::to_string(h);
    const std::map<std::string, std::string> info = {
        {"model", "mlp"}, {"model.hidden", widths}, {"model.dropout", fmt::format("{}", dropout)}};
    return trainer::fit(*net, flags, data, "mnist_mlp", info).passed ? 0 : 1;
  });
}
