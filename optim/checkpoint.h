#pragma once
// A training checkpoint: everything a run needs to continue exactly where it stopped, in
// one safetensors file (core/safetensors.h), written to a temporary file and renamed, so
// a crash mid-save leaves the previous checkpoint intact.
//
//   sg::optim::save_checkpoint("run.safetensors", {model, opt, &sched}, {{"epoch", "3"}});
//   ...
//   auto meta = sg::optim::load_checkpoint("run.safetensors", {model, opt, &sched});
//   const int64_t start_epoch = std::stoll(meta.at("epoch"));
//
// Tensor names in the file:
//   <the model's state_dict names>     the weights, as nn::save writes them ("0.weight"), so
//                                      the file opens in PyTorch's safetensors tooling and
//                                      the weights load into the same PyTorch module
//                                      (strict=False, or after dropping the other names)
//   optimizer/<state_dict name>        the optimizer's state ("optimizer/state.0.exp_avg")
//   scheduler/<state_dict name>        the LR schedule's state, when there is one
//   generator/<dotted name>            int64 [7]: each of the model's random generators
//                                      (Module::named_generators(), Generator::state()), so
//                                      dropout draws the same masks after a resume
// Module names are dotted and never contain '/', so the parts cannot collide.
// The metadata holds the caller's entries plus "format" = "softgrad-checkpoint/1".
//
// Saving refuses a state with NaN or infinite values (a diverged run must not replace the
// last good checkpoint); loading refuses such a file too, naming each tensor. Loading
// checks the format, then loads each part with its own checks (names, shapes, dtypes; every
// mismatch named) before returning the caller's metadata. The data loader's
// order needs no state: it is a function of (seed, epoch) (data/dataloader.h).
#include <map>
#include <string>

#include "nn/module.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"

namespace sg::optim {

inline constexpr const char* kCheckpointFormat = "softgrad-checkpoint/1";

struct TrainingState {
  nn::Module& model;
  Optimizer& optimizer;
  LRScheduler* scheduler = nullptr;  // optional
};

void save_checkpoint(const std::string& path, const TrainingState& state,
                     const std::map<std::string, std::string>& metadata = {});
// Restores model, optimizer, scheduler and generators in place; returns the metadata
// (without "format").
std::map<std::string, std::string> load_checkpoint(const std::string& path, const TrainingState& state);

}  // namespace sg::optim
