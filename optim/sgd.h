#pragma once
// optim::SGD: stochastic gradient descent with optional momentum, dampening, Nesterov
// momentum and L2 weight decay: PyTorch 1.13's torch.optim.SGD, formulas and checks.
//
//   sg::optim::SGD opt(net.parameters(), {.lr = 0.1, .momentum = 0.9, .nesterov = true});
//
// Per step, for each parameter p with gradient g (optim/optim_kernels.h):
//   d = maximize ? -g : g;  d += weight_decay * p
//   momentum != 0:  buf = d on the parameter's first step, else buf = momentum * buf + (1 - dampening) * d
//                   d = nesterov ? d + momentum * buf : buf
//   p -= lr * d
// NOTE: the first step stores d in the buffer undamped (PyTorch's clone), so dampening
// acts from the second step on.
// State per parameter (state_dict): momentum_buffer when momentum != 0; no step count.
#include "optim/optimizer.h"

namespace sg::optim {

struct SGDOptions {
  double lr = kUseDefault;  // required (PyTorch has no default): SGD throws when it is left out
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0
  bool maximize = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  SGD(std::vector<ParamGroup> groups, SGDOptions options);
  void step() override;
  const SGDOptions& options() const { return options_; }

 protected:
  std::vector<std::string> buffer_names(const ParamGroup& group) const override;
  bool counts_steps() const override { return false; }
  std::vector<OptionValue> shared_options() const override;

 private:
  SGDOptions options_;
};

}  // namespace sg::optim
