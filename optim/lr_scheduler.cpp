// Learning-rate schedules: the shared stepping and state, and each schedule's closed form
// (formulas in optim/lr_scheduler.h).
#include "optim/lr_scheduler.h"

#include <cmath>
#include <map>
#include <numbers>
#include <set>

namespace sg::optim {

LRScheduler::LRScheduler(std::string name, Optimizer& optimizer) : name_(std::move(name)), optimizer_(optimizer) {
  for (const ParamGroup& g : optimizer_.param_groups()) base_lrs_.push_back(g.lr);
}

void LRScheduler::initial_step() {
  last_epoch_ = 0;
  apply();
}

void LRScheduler::step() {
  ++last_epoch_;
  apply();
}

void LRScheduler::apply() {
  std::vector<ParamGroup>& groups = optimizer_.param_groups();
  SG_CHECK(groups.size() == base_lrs_.size(), "{}: the optimizer has {} param groups, the schedule was made for {}",
           name_, groups.size(), base_lrs_.size());
  last_lr_.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) groups[g].lr = last_lr_[g] = lr_at(last_epoch_, base_lrs_[g]);
}

NamedTensors LRScheduler::state_dict() const {
  const int64_t n = static_cast<int64_t>(base_lrs_.size());
  return {{"last_epoch", from_vector<int64_t>({last_epoch_}, {})},
          {"base_lrs", from_vector(base_lrs_, {n})},
          {"last_lr", from_vector(last_lr_, {n})}};
}

void LRScheduler::load_state_dict(const NamedTensors& named) {
  const int64_t n = static_cast<int64_t>(base_lrs_.size());
  const std::map<std::string, std::pair<Dtype, Shape>> want = {
      {"last_epoch", {kInt64, {}}}, {"base_lrs", {kFloat64, {n}}}, {"last_lr", {kFloat64, {n}}}};
  std::vector<std::string> problems;
  std::map<std::string, Tensor> got;
  for (const auto& [name, t] : named) {
    auto it = want.find(name);
    if (it == want.end())
      problems.push_back("unexpected: " + name);
    else if (!t.defined())
      problems.push_back(name + ": undefined tensor");
    else if (!got.emplace(name, t).second)
      problems.push_back(name + ": given more than once");
    else if (t.dtype() != it->second.first || t.shape() != it->second.second)
      problems.push_back(fmt::format("{}: got {} {}, expected {} {} ({} param groups)", name, t.dtype(), t.shape(),
                                     it->second.first, it->second.second, n));
  }
  for (const auto& [name, spec] : want)
    if (!got.count(name)) problems.push_back("missing: " + name);
  if (problems.empty() && got["last_epoch"].item<int64_t>() < 0)
    problems.push_back(fmt::format("last_epoch: {} is negative", got["last_epoch"].item<int64_t>()));
  if (!problems.empty()) {
    std::string msg =
        fmt::format("{}.load_state_dict: the state dict does not fit this schedule ({} problem{}):", name_,
                    problems.size(), problems.size() == 1 ? "" : "s");
    for (const std::string& p : problems) msg += "\n  " + p;
    throw Error(msg);
  }
  last_epoch_ = got["last_epoch"].item<int64_t>();
  base_lrs_ = got["base_lrs"].to_vector<double>();
  last_lr_ = got["last_lr"].to_vector<double>();
  std::vector<ParamGroup>& groups = optimizer_.param_groups();
  for (size_t g = 0; g < groups.size() && g < last_lr_.size(); ++g) groups[g].lr = last_lr_[g];
}

// ---- StepLR -------------------------------------------------------------------------------
StepLR::StepLR(Optimizer& optimizer, int64_t step_size_, double gamma_)
    : LRScheduler("StepLR", optimizer), step_size(step_size_), gamma(gamma_) {
  SG_CHECK(step_size > 0, "StepLR: step_size must be positive, got {}", step_size);
  SG_CHECK(gamma >= 0.0, "StepLR: gamma must be >= 0, got {}", gamma);
  initial_step();
}

double StepLR::lr_at(int64_t epoch, double base_lr) const {
  return base_lr * std::pow(gamma, static_cast<double>(epoch / step_size));
}

// ---- CosineAnnealingLR --------------------------------------------------------------------
CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max_, double eta_min_)
    : LRScheduler("CosineAnnealingLR", optimizer), T_max(T_max_), eta_min(eta_min_) {
  SG_CHECK(T_max > 0, "CosineAnnealingLR: T_max must be positive, got {}", T_max);
  SG_CHECK(eta_min >= 0.0, "CosineAnnealingLR: eta_min must be >= 0, got {}", eta_min);
  initial_step();
}

double CosineAnnealingLR::lr_at(int64_t epoch, double base_lr) const {
  const double angle = std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(T_max);
  return eta_min + (base_lr - eta_min) * (1.0 + std::cos(angle)) / 2.0;
}

// ---- WarmupCosine -------------------------------------------------------------------------
WarmupCosine::WarmupCosine(Optimizer& optimizer, int64_t warmup_steps_, int64_t total_steps_, double eta_min_,
                           double start_factor_)
    : LRScheduler("WarmupCosine", optimizer),
      warmup_steps(warmup_steps_),
      total_steps(total_steps_),
      eta_min(eta_min_),
      start_factor(std::isnan(start_factor_) ? 1.0 / static_cast<double>(warmup_steps_ + 1) : start_factor_) {
  SG_CHECK(warmup_steps >= 0, "WarmupCosine: warmup_steps must be >= 0, got {}", warmup_steps);
  SG_CHECK(total_steps > warmup_steps, "WarmupCosine: total_steps ({}) must be larger than warmup_steps ({})",
           total_steps, warmup_steps);
  SG_CHECK(eta_min >= 0.0, "WarmupCosine: eta_min must be >= 0, got {}", eta_min);
  SG_CHECK(start_factor >= 0.0 && start_factor <= 1.0, "WarmupCosine: start_factor must be in [0, 1], got {}",
           start_factor);
  initial_step();
}

double WarmupCosine::lr_at(int64_t epoch, double base_lr) const {
  if (epoch < warmup_steps)
    return base_lr *
           (start_factor + (1.0 - start_factor) * static_cast<double>(epoch) / static_cast<double>(warmup_steps));
  if (epoch > total_steps) return eta_min;
  const double progress = static_cast<double>(epoch - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return eta_min + (base_lr - eta_min) * (1.0 + std::cos(std::numbers::pi * progress)) / 2.0;
}

}  // namespace sg::optim
