#pragma once
// nn::Dropout: PyTorch's torch.nn.Dropout(p) on sg::dropout (ops/dropout.h). Active only
// in training mode (the default; eval() turns it off, forward then returns x itself).
//
//   sg::nn::Dropout drop(0.1, gen);     // gen seeds the module's own generator
//   sg::Tensor y = drop.forward(x);
//
// The module owns its generator, seeded from one draw of the construction generator (as
// MultiHeadAttention's), and registers it as "generator": named_generators() lists it so a
// checkpoint can restore its state. p must be in [0, 1].
#include "core/generator.h"
#include "nn/module.h"

namespace sg::nn {

class Dropout : public Module {
 public:
  Dropout(double p, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;  // p=0.1

  const double p;

 private:
  Generator gen_;
};

}  // namespace sg::nn
