// Trains a small vision transformer (ViT) on MNIST (or Fashion-MNIST) and prints test
// accuracy after every epoch:
//
//   build/examples/mnist_transformer                       # patch 7, width 64, 4 layers
//   build/examples/mnist_transformer --dataset fashion --patch 4 --depth 2 --pool cls
//
// Model: models::VisionTransformer (examples/models.h): patch embedding, class token (or
// mean pooling), learned positions, pre-norm encoder layers, LayerNorm and a Linear head.
// Recipe (examples/trainer.h): AdamW lr 2e-3, weight decay 5e-2, one epoch of linear warmup
// then cosine decay to zero, batch 128, each training image moved by up to one pixel at
// random (--shift 1).
#include "examples/models.h"
#include "examples/trainer.h"

int main(int argc, char** argv) {
  trainer::Flags flags{.lr = 2e-3, .weight_decay = 5e-2, .shift = 1};
  models::VitConfig vit;
  CLI::App app{"Train a small vision transformer on MNIST or Fashion-MNIST with softgrad", "mnist_transformer"};
  trainer::add_flags(app, flags);
  trainer::add_vit_flags(app, vit);

  return trainer::run_main(app, argc, argv, [&] {
    trainer::Data data = trainer::load_data(flags, /*flatten=*/false);
    sg::Generator gen(flags.seed);
    models::VisionTransformer net(vit, gen);
    const std::map<std::string, std::string> info = {
        {"model", "vit"},
        {"model.patch", std::to_string(vit.patch)},
        {"model.dim", std::to_string(vit.dim)},
        {"model.depth", std::to_string(vit.depth)},
        {"model.heads", std::to_string(vit.heads)},
        {"model.mlp_ratio", std::to_string(vit.mlp_ratio)},
        {"model.dropout", fmt::format("{}", vit.dropout)},
        {"model.pool", vit.pool}};
    return trainer::fit(net, flags, data, "mnist_transformer", info).passed ? 0 : 1;
  });
}
