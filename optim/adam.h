#pragma once
// optim::Adam and optim::AdamW: PyTorch 1.13's torch.optim.Adam and torch.optim.AdamW
// (their single-tensor path: formulas, bias corrections, where eps is added, checks).
//
//   sg::optim::Adam opt(net.parameters(), {.lr = 1e-3});
//   sg::optim::AdamW opt(net.parameters(), {.lr = 1e-3, .betas = {0.9, 0.95}, .weight_decay = 0.1});
//
// Per step t (counted per parameter from 1), for each parameter p with gradient g
// (optim/optim_kernels.h):
//   g = maximize ? -g : g
//   Adam:  g += weight_decay * p                   (L2 penalty through the gradient)
//   AdamW: p *= 1 - lr * weight_decay              (decoupled, before the moments)
//   m = beta1 m + (1 - beta1) g,    v = beta2 v + (1 - beta2) g^2
//   amsgrad: v_max = max(v_max, v), used instead of v below
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// NOTE: eps is added to sqrt(v_hat) after the bias correction (PyTorch's way), not to
// sqrt(v) before it.
// State per parameter (state_dict): step, exp_avg (m), exp_avg_sq (v), and max_exp_avg_sq
// (v_max) with amsgrad.
#include <array>

#include "optim/optimizer.h"

namespace sg::optim {

struct AdamOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;  // L2 penalty added to the gradient
  bool amsgrad = false;
  bool maximize = false;
};

struct AdamWOptions {  // AdamOptions with AdamW's default decoupled weight decay
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled: p *= 1 - lr * weight_decay each step
  bool amsgrad = false;
  bool maximize = false;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options = {});
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});
  void step() override;
  const AdamOptions& options() const { return options_; }  // lr and weight_decay: the defaults

 protected:
  Adam(const char* name, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled);
  std::vector<std::string> buffer_names(const ParamGroup& group) const override;
  bool counts_steps() const override { return true; }
  std::vector<OptionValue> shared_options() const override;

 private:
  AdamOptions options_;
  bool decoupled_;
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions options = {});
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options = {});
};

}  // namespace sg::optim
