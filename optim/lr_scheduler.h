#pragma once
// Learning-rate schedules (PyTorch's torch.optim.lr_scheduler): StepLR, CosineAnnealingLR,
// and WarmupCosine (linear warmup, then a cosine decay).
//
//   sg::optim::AdamW opt(net.parameters(), {.lr = 1e-3});
//   sg::optim::WarmupCosine sched(opt, /*warmup_steps=*/100, /*total_steps=*/4690);
//   for (...) { ...; opt.step(); sched.step(); }   // step t of the optimizer runs at lr(t)
//
// As in PyTorch, constructing a schedule takes each param group's current lr as its base
// lr, sets the groups to lr(0) and sets last_epoch() to 0; every step() adds one to
// last_epoch and sets each group's lr to lr(last_epoch). get_last_lr() is what step() (or
// the constructor) set last. Values are computed in closed form from (last_epoch, base lr)
// below; PyTorch computes the same values recursively from the previous lr, so the two
// agree to rounding (tests/reference/optim_ops.txt, within 1e-13 relative).
//
//   StepLR             lr(t) = base * gamma^floor(t / step_size)
//   CosineAnnealingLR  lr(t) = eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2
//                      (past T_max it rises again, period 2 T_max, like PyTorch's)
//   WarmupCosine       W = warmup_steps, T = total_steps, f = start_factor:
//                      t < W       lr(t) = base * (f + (1 - f) * t / W)
//                      W <= t <= T lr(t) = eta_min + (base - eta_min) * (1 + cos(pi * (t - W) / (T - W))) / 2
//                      t > T       lr(t) = eta_min
//                      f defaults to 1 / (W + 1), so lr(t) = base * (t + 1) / (W + 1) in the warmup.
//                      For t <= T this is PyTorch's
//                        SequentialLR(opt, [LinearLR(opt, start_factor=f, end_factor=1, total_iters=W),
//                                           CosineAnnealingLR(opt, T_max=T - W, eta_min=eta_min)],
//                                     milestones=[W])
//                      (and LambdaLR with the formula above); past T PyTorch's cosine rises
//                      again, this one stays at eta_min.
//
// state_dict(): "last_epoch" int64 [], "base_lrs" float64 [groups], "last_lr" float64
// [groups]. load_state_dict() checks names, dtypes and shapes (one error listing every
// problem), restores them and sets the optimizer's group lrs to the restored last_lr (so
// the pair resumes exactly whether or not the optimizer's own state dict was loaded too).
// NOTE: a schedule keeps a reference to its optimizer, which must outlive it.
#include <cstdint>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace sg::optim {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  void step();  // last_epoch += 1, then every group's lr = lr_at(last_epoch, its base lr)
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  int64_t last_epoch() const { return last_epoch_; }
  const std::string& name() const { return name_; }
  // The schedule's closed form: the lr at `epoch` of a group whose base lr is base_lr.
  virtual double lr_at(int64_t epoch, double base_lr) const = 0;

  NamedTensors state_dict() const;
  void load_state_dict(const NamedTensors& named);

 protected:
  LRScheduler(std::string name, Optimizer& optimizer);  // reads the base lrs
  void initial_step();                                  // every subclass constructor ends with it (lr_at is virtual)

 private:
  void apply();  // last_lr = lr_at(last_epoch, base) for each group, written to the optimizer

  std::string name_;
  Optimizer& optimizer_;
  std::vector<double> base_lrs_, last_lr_;
  int64_t last_epoch_ = -1;
};

// Multiplies the lr by gamma every step_size steps (torch.optim.lr_scheduler.StepLR).
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
  double lr_at(int64_t epoch, double base_lr) const override;
  const int64_t step_size;
  const double gamma;
};

// Cosine from the base lr down to eta_min over T_max steps
// (torch.optim.lr_scheduler.CosineAnnealingLR, without restarts).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0.0);
  double lr_at(int64_t epoch, double base_lr) const override;
  const int64_t T_max;
  const double eta_min;
};

// Linear warmup over warmup_steps from start_factor * base to base, then a cosine down to
// eta_min at total_steps, then eta_min (formula above). start_factor left at kUseDefault
// (NaN) means 1 / (warmup_steps + 1).
class WarmupCosine : public LRScheduler {
 public:
  WarmupCosine(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double eta_min = 0.0,
               double start_factor = kUseDefault);
  double lr_at(int64_t epoch, double base_lr) const override;
  const int64_t warmup_steps, total_steps;
  const double eta_min, start_factor;
};

}  // namespace sg::optim
