// optim::SGD: option checks and the per-parameter loop; the update is kernels::sgd_step.
#include "optim/sgd.h"

#include <cmath>

#include "optim/optim_kernels.h"

namespace sg::optim {
namespace {

// PyTorch's checks, in its order.
const SGDOptions& checked(const SGDOptions& o) {
  SG_CHECK(!std::isnan(o.lr), "SGD: options.lr is required (PyTorch's SGD has no default learning rate)");
  SG_CHECK(o.lr >= 0.0, "SGD: invalid learning rate {}; expected lr >= 0", o.lr);
  SG_CHECK(o.momentum >= 0.0, "SGD: invalid momentum {}; expected momentum >= 0", o.momentum);
  SG_CHECK(o.weight_decay >= 0.0, "SGD: invalid weight_decay {}; expected weight_decay >= 0", o.weight_decay);
  SG_CHECK(!o.nesterov || (o.momentum > 0.0 && o.dampening == 0.0),
           "SGD: Nesterov momentum requires a momentum and zero dampening, got momentum {} and dampening {}",
           o.momentum, o.dampening);
  return o;
}

std::vector<ParamGroup> one_group(std::vector<Tensor> params) {
  std::vector<ParamGroup> groups(1);
  groups[0].params = std::move(params);
  return groups;
}

}  // namespace

SGD::SGD(std::vector<Tensor> params, SGDOptions options) : SGD(one_group(std::move(params)), options) {}

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions options)
    : Optimizer("SGD", std::move(groups), checked(options).lr, options.weight_decay), options_(options) {}

std::vector<std::string> SGD::buffer_names(const ParamGroup&) const {
  if (options_.momentum == 0.0) return {};
  return {"momentum_buffer"};
}

std::vector<OptionValue> SGD::shared_options() const {
  return {{"momentum", kFloat64, options_.momentum},
          {"dampening", kFloat64, options_.dampening},
          {"nesterov", kInt64, options_.nesterov ? 1.0 : 0.0},
          {"maximize", kInt64, options_.maximize ? 1.0 : 0.0}};
}

void SGD::step() {
  for_each_param_with_grad([&](const ParamGroup& group, const Tensor& param, const Tensor& grad, ParamState& state) {
    const bool first = !state.initialized;
    init_state(state, group, param);
    const kernels::SGDStep s{.lr = group.lr,
                             .momentum = options_.momentum,
                             .dampening = options_.dampening,
                             .weight_decay = group.weight_decay,
                             .nesterov = options_.nesterov,
                             .maximize = options_.maximize,
                             .first = first};
    visit_floating(param.dtype(), [&]<typename T>() {
      T* buf = state.buffers.empty() ? nullptr : state.buffers[0].data_ptr<T>();
      kernels::sgd_step<T>(param.data_ptr<T>(), grad.data_ptr<T>(), buf, param.numel(), s);
    });
    bump_version(param);
  });
}

}  // namespace sg::optim
