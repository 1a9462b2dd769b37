#pragma once
// optim::Optimizer: the base of SGD, Adam and AdamW (PyTorch's torch.optim.Optimizer).
//
//   sg::optim::AdamW opt(net.parameters(), {.lr = 1e-3});
//   for (...) {
//     opt.zero_grad();                 // drops every gradient (PyTorch's set_to_none)
//     loss(net, batch).backward();
//     opt.step();                      // updates the parameters in place
//   }
//
// Parameter groups: each group has its own lr and weight_decay (a schedule sets lr through
// param_groups()); every other option is the optimizer's, shared by all groups.
//
//   sg::optim::SGD opt({{.params = body_params, .lr = 0.1},
//                       {.params = head_params, .weight_decay = 0.0}},   // lr: the default
//                      {.lr = 0.01, .momentum = 0.9, .weight_decay = 5e-4});
//
// PyTorch's rules: parameters are floating leaf tensors that require grad, none listed
// twice; a parameter whose grad() is undefined at a step is skipped (its state does not
// advance); gradients are read, never modified. A step writes each parameter in place
// (through its data, bumping its version like an in-place op, so a graph that saved the
// old value refuses to backward) and needs no grad mode guard.
//
// Per-parameter state is allocated by the first step that sees the parameter's gradient,
// once; the update runs as one fused pass over each parameter's contiguous data
// (optim/optim_kernels.h), never through graph ops.
//
// state_dict(): every piece of state as named tensors, so a checkpoint is one safetensors
// file without metadata. Parameters are numbered across groups in order (PyTorch's ids):
//
//   param_groups.<g>.lr            float64 []      the group's learning rate
//   param_groups.<g>.weight_decay  float64 []
//   param_groups.<g>.params        int64 [n_g]     the global indices of its parameters
//   options.<name>                 float64 [] (int64 [] for true/false) the shared options,
//                                  e.g. options.momentum, options.beta1, options.amsgrad
//   state.<i>.step                 int64 []        steps taken by parameter i (Adam, AdamW)
//   state.<i>.<buffer>             the parameter's dtype and shape: momentum_buffer (SGD),
//                                  exp_avg, exp_avg_sq, max_exp_avg_sq (Adam, AdamW)
//
// A parameter that no step has updated yet has no state.<i> entries (as in PyTorch).
// load_state_dict(named) checks everything first and throws one sg::Error that lists every
// problem (missing and unexpected names, wrong dtypes or shapes, a different number of
// groups or of parameters in a group, a shared option that differs); only then does it
// replace the state and each group's lr and weight_decay.
// NOTE: unlike PyTorch, the shared options (momentum, betas, eps, amsgrad, ...) are not
// taken from the checkpoint: they are the constructor's, and a checkpoint made with other
// values is refused instead of silently switching the algorithm.
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sg::optim {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;  // the type of sg::nn::NamedTensors

// In a ParamGroup given to a constructor: take the optimizer's default for this value.
inline constexpr double kUseDefault = std::numeric_limits<double>::quiet_NaN();

struct ParamGroup {
  std::vector<Tensor> params;
  double lr = kUseDefault;            // set to the optimizer's lr by the constructor when left NaN
  double weight_decay = kUseDefault;  // likewise
};

// One shared option as saved in the state dict: "options.<name>". Flags are int64 0/1.
struct OptionValue {
  std::string name;
  Dtype dtype = kFloat64;
  double value = 0.0;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient.
  virtual void step() = 0;
  // Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();

  // The groups, in construction order. Change lr and weight_decay freely between steps;
  // the parameter lists are fixed at construction (step() refuses changed ones).
  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  int64_t num_params() const { return static_cast<int64_t>(state_.size()); }
  const std::string& name() const { return name_; }  // "SGD", "Adam", "AdamW"

  // A snapshot (the buffers are copies): see the format at the top of this file.
  NamedTensors state_dict() const;
  void load_state_dict(const NamedTensors& named);

 protected:
  // Checks the groups (non-empty, floating contiguous leaves that require grad, none listed
  // twice, lr and weight_decay >= 0 after the defaults are filled in).
  Optimizer(std::string name, std::vector<ParamGroup> groups, double default_lr, double default_weight_decay);

  struct ParamState {
    bool initialized = false;     // set by the first step that saw a gradient
    int64_t step = 0;             // steps taken (only saved when counts_steps())
    std::vector<Tensor> buffers;  // contiguous, the parameter's dtype and shape; buffer_names() order
  };

  // What the subclass keeps per parameter of group `group`, and its shared options.
  virtual std::vector<std::string> buffer_names(const ParamGroup& group) const = 0;
  virtual bool counts_steps() const = 0;
  virtual std::vector<OptionValue> shared_options() const = 0;

  // Calls fn(group, param, grad, state) for every parameter that has a gradient, group by
  // group; the gradient is contiguous and of the parameter's dtype and shape. Checks each
  // group's lr and weight_decay first (a schedule may have set them).
  template <typename Fn> void for_each_param_with_grad(Fn&& fn);
  // Allocates state.buffers (zeros, one per buffer name) on the first call for a parameter.
  void init_state(ParamState& state, const ParamGroup& group, const Tensor& param) const;
  // After writing a parameter's data in place: what an in-place op does.
  static void bump_version(const Tensor& param);

 private:
  void check_groups_unchanged() const;
  Tensor contiguous_grad(const Tensor& param) const;

  std::string name_;
  std::vector<ParamGroup> groups_;
  std::vector<Tensor> params_;     // every parameter, in global index order (for the unchanged check)
  std::vector<ParamState> state_;  // one per parameter, global index order
};

// Writes opt.state_dict() to a safetensors file (no metadata needed) / loads one into opt
// with load_state_dict's checks.
void save(const Optimizer& opt, const std::string& path);
void load(Optimizer& opt, const std::string& path);

// ---- template definitions ----
template <typename Fn> void Optimizer::for_each_param_with_grad(Fn&& fn) {
  check_groups_unchanged();
  size_t index = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    ParamGroup& group = groups_[g];
    SG_CHECK(group.lr >= 0.0, "{}.step: param group {} has lr {}; expected a value >= 0", name_, g, group.lr);
    SG_CHECK(group.weight_decay >= 0.0, "{}.step: param group {} has weight_decay {}; expected a value >= 0", name_, g,
             group.weight_decay);
    for (const Tensor& param : group.params) {
      ParamState& state = state_[index++];
      if (!param.grad().defined()) continue;
      fn(group, param, contiguous_grad(param), state);
    }
  }
}

}  // namespace sg::optim
