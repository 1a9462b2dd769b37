// Trains a small convolutional network on MNIST (or Fashion-MNIST) and prints test accuracy
// after every epoch:
//
//   build/examples/mnist_cnn                  # two conv-BN-ReLU-pool blocks (32, 64), hidden 128
//   build/examples/mnist_cnn --dataset fashion --channels 32,64,128 --hidden 0
//
// Model: models::make_cnn (examples/models.h): per block Conv2d 3x3 (padding 1, no bias),
// BatchNorm2d, ReLU, MaxPool2d(2); then Flatten, a hidden Linear(3136, 128) + ReLU +
// Dropout(0.25) (--hidden 0: none) and a Linear head to 10 classes, as an nn::Sequential with PyTorch's names. Batch norm
// keeps running statistics (buffers, saved in the checkpoints); the test set is scored in
// eval mode with them.
// Recipe (examples/trainer.h): AdamW lr 2e-3, weight decay 1e-2, one epoch of linear warmup
// then cosine decay to zero, batch 128, each training image moved by up to one pixel at
// random (--shift 1). Chosen by measurement: see README ("A convolutional network").
#include "examples/models.h"
#include "examples/trainer.h"

int main(int argc, char** argv) {
  trainer::Flags flags{.lr = 2e-3, .weight_decay = 1e-2, .shift = 1};
  models::CnnConfig cnn;
  CLI::App app{"Train a small convolutional network on MNIST or Fashion-MNIST with softgrad", "mnist_cnn"};
  trainer::add_flags(app, flags);
  trainer::add_cnn_flags(app, cnn);

  return trainer::run_main(app, argc, argv, [&] {
    trainer::Data data = trainer::load_data(flags, /*flatten=*/false);
    sg::Generator gen(flags.seed);
    auto net = models::make_cnn(cnn, gen);
    std::string channels;
    for (const int64_t c : cnn.channels) channels += (channels.empty() ? "" : ",") + std::to_string(c);
    const std::map<std::string, std::string> info = {{"model", "cnn"},
                                                     {"model.channels", channels},
                                                     {"model.hidden", std::to_string(cnn.hidden)},
                                                     {"model.dropout", fmt::format("{}", cnn.dropout)}};
    return trainer::fit(*net, flags, data, "mnist_cnn", info).passed ? 0 : 1;
  });
}
