// optim::Adam and optim::AdamW: option checks and the per-parameter loop; the update is
// kernels::adam_step.
#include "optim/adam.h"

#include "optim/optim_kernels.h"

namespace sg::optim {
namespace {

// PyTorch's checks, in its order.
const AdamOptions& checked(const char* name, const AdamOptions& o) {
  SG_CHECK(o.lr >= 0.0, "{}: invalid learning rate {}; expected lr >= 0", name, o.lr);
  SG_CHECK(o.eps >= 0.0, "{}: invalid epsilon {}; expected eps >= 0", name, o.eps);
  SG_CHECK(o.betas[0] >= 0.0 && o.betas[0] < 1.0, "{}: invalid beta parameter at index 0: {}; expected 0 <= beta < 1",
           name, o.betas[0]);
  SG_CHECK(o.betas[1] >= 0.0 && o.betas[1] < 1.0, "{}: invalid beta parameter at index 1: {}; expected 0 <= beta < 1",
           name, o.betas[1]);
  SG_CHECK(o.weight_decay >= 0.0, "{}: invalid weight_decay {}; expected weight_decay >= 0", name, o.weight_decay);
  return o;
}

AdamOptions as_adam(const AdamWOptions& o) {
  return {.lr = o.lr,
          .betas = o.betas,
          .eps = o.eps,
          .weight_decay = o.weight_decay,
          .amsgrad = o.amsgrad,
          .maximize = o.maximize};
}

std::vector<ParamGroup> one_group(std::vector<Tensor> params) {
  std::vector<ParamGroup> groups(1);
  groups[0].params = std::move(params);
  return groups;
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions options) : Adam(one_group(std::move(params)), options) {}
Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options) : Adam("Adam", std::move(groups), options, false) {}

Adam::Adam(const char* name, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled)
    : Optimizer(name, std::move(groups), checked(name, options).lr, options.weight_decay),
      options_(options),
      decoupled_(decoupled) {}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options) : AdamW(one_group(std::move(params)), options) {}
AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : Adam("AdamW", std::move(groups), as_adam(options), true) {}

std::vector<std::string> Adam::buffer_names(const ParamGroup&) const {
  if (options_.amsgrad) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

std::vector<OptionValue> Adam::shared_options() const {
  return {{"beta1", kFloat64, options_.betas[0]},
          {"beta2", kFloat64, options_.betas[1]},
          {"eps", kFloat64, options_.eps},
          {"amsgrad", kInt64, options_.amsgrad ? 1.0 : 0.0},
          {"maximize", kInt64, options_.maximize ? 1.0 : 0.0},
          {"decoupled_weight_decay", kInt64, decoupled_ ? 1.0 : 0.0}};  // AdamW
}

void Adam::step() {
  for_each_param_with_grad([&](const ParamGroup& group, const Tensor& param, const Tensor& grad, ParamState& state) {
    init_state(state, group, param);
    ++state.step;
    const kernels::AdamStep s{.lr = group.lr,
                              .beta1 = options_.betas[0],
                              .beta2 = options_.betas[1],
                              .eps = options_.eps,
                              .weight_decay = group.weight_decay,
                              .amsgrad = options_.amsgrad,
                              .maximize = options_.maximize,
                              .decoupled = decoupled_,
                              .step = state.step};
    visit_floating(param.dtype(), [&]<typename T>() {
      T* vmax = options_.amsgrad ? state.buffers[2].data_ptr<T>() : nullptr;
      kernels::adam_step<T>(param.data_ptr<T>(), grad.data_ptr<T>(), state.buffers[0].data_ptr<T>(),
                            state.buffers[1].data_ptr<T>(), vmax, param.numel(), s);
    });
    bump_version(param);
  });
}

}  // namespace sg::optim
