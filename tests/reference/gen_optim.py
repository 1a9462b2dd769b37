#!/usr/bin/python3
"""Writes optim_ops.txt: PyTorch's values for softgrad's optimizers, learning-rate schedules
and clip_grad_norm_ (optim/), read by tests/test_reference_optim.cpp.

Run with Debian's interpreter (python3-torch 1.13), from anywhere:

    /usr/bin/python3 tests/reference/gen_optim.py

Same line format as core_ops.txt (see gen_core_ops.py), without weight or grad lines. The
case name's prefix says what the case runs:

sgd_*, adam_*, adamw_*: STEPS steps of torch.optim.SGD / Adam / AdamW (foreach=False, the
  single-tensor path) on three parameters in two groups: group 0 holds p0 (3, 4) and p1 (4),
  group 1 holds p2 (2, 3).
    inputs   p0 p1 p2              the initial parameters (the case's dtype)
             g0 g1 g2              (STEPS, *shape): the gradient of each parameter at each step
             has_grad              bool (STEPS, 3): False = grad None at that step (skipped)
             option.<name>         float64 []: the optimizer's keyword arguments (flags 0/1;
                                   betas as beta1, beta2)
             group<g>.lr, group<g>.weight_decay   float64 []: each group's own values
             lrs                   float64 (STEPS, 2), optional: every group's lr, set before
                                   each step (what a schedule does)
    outputs  p0 p1 p2              (STEPS, *shape): the parameters after each step
             state.<i>.<key>       PyTorch's optimizer.state after the last step, for every
                                   parameter i that has state: step (as int64),
                                   momentum_buffer, exp_avg, exp_avg_sq, max_exp_avg_sq
sched_*: a learning-rate schedule on an SGD with two groups.
    inputs   base_lrs              float64 (2): the groups' lrs when the schedule is made
             option.<name>         float64 []: the schedule's arguments
    output   lrs                   float64 (N, 2): get_last_lr() after construction and after
                                   each of N - 1 step() calls
  sched_steplr_*            StepLR(step_size, gamma)
  sched_cosine_*            CosineAnnealingLR(T_max, eta_min), past T_max too
  sched_warmup_cosine_*     SequentialLR([LinearLR(start_factor, 1.0, total_iters=W),
                            CosineAnnealingLR(T_max=T - W, eta_min)], milestones=[W]) for
                            t = 0..T, checked here against LambdaLR with softgrad's formula
                            (optim/lr_scheduler.h); options warmup_steps, total_steps,
                            eta_min, start_factor
  sched_warmup_cosine_lambda_*  the formula through LambdaLR only (start_factor 0 or no
                            warmup, which LinearLR cannot express)
clip_*: torch.nn.utils.clip_grad_norm_ on the gradients g0, g1 (and p2 without a grad).
    inputs   g0 g1                 the gradients
             option.max_norm, option.norm_type   float64 [] (norm_type may be inf)
    outputs  total_norm            float64 []: the returned norm (widened for float32)
             g0 g1                 the gradients after clipping

Values are drawn from this file's seeded generator and rounded (4 decimals for float64,
multiples of 2^-10 for float32) so the inputs print short; outputs are printed exactly.
"""
import math
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reftable.py sits beside this script
import reftable
from reftable import F32, F64

torch.set_num_threads(1)
# SequentialLR steps its schedulers with an explicit epoch at the milestone, which warns.
warnings.filterwarnings("ignore", message="The epoch parameter in")
GEN = torch.Generator().manual_seed(20250105)
STEPS = 5
SHAPES = [(3, 4), (4,), (2, 3)]
GROUPS = [[0, 1], [2]]


def uniform(shape, lo=-1.0, hi=1.0, dtype=F64):
    return reftable.short(reftable.uniform(GEN, shape, lo, hi), dtype)


def scalar(v):
    return torch.tensor(float(v), dtype=F64)


# ---- the cases -----------------------------------------------------------------------------
CASES = []  # (name, inputs dict, outputs dict)


def add(name, inputs, outputs):
    assert all(name != c[0] for c in CASES), name
    CASES.append((name, inputs, outputs))


def optimizer_case(name, kind, dtype, options, groups, has_grad=None, lrs=None):
    """kind: torch.optim.SGD / Adam / AdamW; options: its keyword arguments (lr, betas, ...);
    groups: [(lr, weight_decay)] for the two groups."""
    prefix = {torch.optim.SGD: "sgd_", torch.optim.Adam: "adam_", torch.optim.AdamW: "adamw_"}[kind]
    assert name.startswith(prefix) and name.endswith("_f32" if dtype == F32 else "_f64"), name
    params0 = [uniform(s, dtype=dtype) for s in SHAPES]
    grads = [uniform((STEPS,) + s, -2.0, 2.0, dtype=dtype) for s in SHAPES]
    if has_grad is None:
        has_grad = torch.ones(STEPS, 3, dtype=torch.bool)
    params = [p.clone().requires_grad_(True) for p in params0]
    param_groups = [{"params": [params[i] for i in GROUPS[g]], "lr": lr, "weight_decay": wd}
                    for g, (lr, wd) in enumerate(groups)]
    opt = kind(param_groups, foreach=False, **options)
    trajectory = [[] for _ in params]
    for s in range(STEPS):
        for i, p in enumerate(params):
            p.grad = grads[i][s].clone() if has_grad[s, i] else None
        if lrs is not None:
            for g, group in enumerate(opt.param_groups):
                group["lr"] = float(lrs[s, g])
        opt.step()
        for i, p in enumerate(params):
            trajectory[i].append(p.detach().clone())

    inputs = {f"p{i}": p for i, p in enumerate(params0)}
    inputs.update({f"g{i}": g for i, g in enumerate(grads)})
    inputs["has_grad"] = has_grad
    for k, v in options.items():
        if k == "betas":
            inputs["option.beta1"], inputs["option.beta2"] = scalar(v[0]), scalar(v[1])
        else:
            inputs[f"option.{k}"] = scalar(v)
    for g, (lr, wd) in enumerate(groups):
        inputs[f"group{g}.lr"], inputs[f"group{g}.weight_decay"] = scalar(lr), scalar(wd)
    if lrs is not None:
        inputs["lrs"] = lrs
    outputs = {f"p{i}": torch.stack(t) for i, t in enumerate(trajectory)}
    for i, p in enumerate(params):
        for key, value in opt.state[p].items():
            if value is None:
                continue  # SGD without momentum: momentum_buffer None
            if key == "step":
                value = value.to(torch.int64)  # a float tensor in torch 1.13
            outputs[f"state.{i}.{key}"] = value
    add(name, inputs, outputs)


def schedule_case(name, make, base_lrs, options, n, formula=None):
    """make(optimizer) -> the scheduler; formula(t, base) -> softgrad's closed form, which
    must agree with PyTorch's values to 1e-13 (relative)."""
    assert name.startswith("sched_")
    params = [torch.zeros(1, requires_grad=True) for _ in base_lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)], lr=1.0)
    sched = make(opt)
    lrs = [list(sched.get_last_lr())]
    for _ in range(n - 1):
        opt.step()
        sched.step()
        lrs.append(list(sched.get_last_lr()))
    lrs = torch.tensor(lrs, dtype=F64)
    if formula is not None:
        for t in range(n):
            for g, base in enumerate(base_lrs):
                want = formula(t, base)
                assert abs(lrs[t, g] - want) <= 1e-13 * abs(want) + 1e-18, (name, t, g, float(lrs[t, g]), want)
    inputs = {"base_lrs": torch.tensor(base_lrs, dtype=F64)}
    inputs.update({f"option.{k}": scalar(v) for k, v in options.items()})
    add(name, inputs, {"lrs": lrs})


def warmup_cosine(W, T, eta_min, f):
    """softgrad's WarmupCosine (optim/lr_scheduler.h): the lr at step t for base lr `base`."""
    def lr(t, base):
        if t < W:
            return base * (f + (1.0 - f) * t / W)
        if t > T:
            return eta_min
        return eta_min + (base - eta_min) * (1.0 + math.cos(math.pi * (t - W) / (T - W))) / 2.0
    return lr


def clip_case(name, dtype, max_norm, norm_type):
    assert name.startswith("clip_")
    grads = [uniform((3, 4), -2.0, 2.0, dtype=dtype), uniform((5,), -3.0, 3.0, dtype=dtype)]
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    no_grad = torch.zeros(2, dtype=dtype, requires_grad=True)
    total = torch.nn.utils.clip_grad_norm_(params + [no_grad], max_norm, norm_type)
    inputs = {"g0": grads[0], "g1": grads[1], "option.max_norm": scalar(max_norm),
              "option.norm_type": scalar(norm_type)}
    outputs = {"total_norm": total.to(F64), "g0": params[0].grad, "g1": params[1].grad}
    add(name, inputs, outputs)


SKIPS = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
SCHEDULE = torch.tensor([[0.01, 0.02], [0.02, 0.02], [0.015, 0.01], [0.005, 0.0], [0.001, 0.03]], dtype=F64)

# SGD: momentum with dampening; Nesterov with weight decay; plain and maximize; skipped grads.
optimizer_case("sgd_momentum_dampening_f64", torch.optim.SGD, F64,
               dict(lr=0.1, momentum=0.9, dampening=0.3), [(0.1, 0.0), (0.05, 0.01)])
optimizer_case("sgd_nesterov_weight_decay_f64", torch.optim.SGD, F64,
               dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True), [(0.05, 0.1), (0.2, 0.0)], SKIPS)
optimizer_case("sgd_plain_maximize_f64", torch.optim.SGD, F64,
               dict(lr=0.1, weight_decay=0.02, maximize=True), [(0.1, 0.02), (0.3, 0.5)])
optimizer_case("sgd_momentum_schedule_f32", torch.optim.SGD, F32,
               dict(lr=0.1, momentum=0.5, dampening=0.1, weight_decay=0.01), [(0.1, 0.01), (0.05, 0.0)],
               SKIPS, SCHEDULE * 10)
optimizer_case("sgd_nesterov_weight_decay_f32", torch.optim.SGD, F32,
               dict(lr=0.05, momentum=0.9, weight_decay=0.05, nesterov=True), [(0.05, 0.05), (0.1, 0.2)])
# Adam: defaults, L2 weight decay per group, amsgrad, maximize, skipped grads.
optimizer_case("adam_f64", torch.optim.Adam, F64, dict(lr=0.01), [(0.01, 0.0), (0.05, 0.1)])
optimizer_case("adam_amsgrad_weight_decay_f64", torch.optim.Adam, F64,
               dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, amsgrad=True), [(0.02, 0.05), (0.01, 0.0)],
               SKIPS)
optimizer_case("adam_maximize_f64", torch.optim.Adam, F64,
               dict(lr=0.03, betas=(0.5, 0.9), maximize=True), [(0.03, 0.0), (0.003, 0.2)])
optimizer_case("adam_f32", torch.optim.Adam, F32, dict(lr=0.01, weight_decay=0.01), [(0.01, 0.01), (0.1, 0.0)])
optimizer_case("adam_amsgrad_f32", torch.optim.Adam, F32,
               dict(lr=0.01, betas=(0.9, 0.99), amsgrad=True), [(0.01, 0.0), (0.02, 0.3)], SKIPS)
# AdamW: decoupled weight decay, per group, amsgrad, lrs changed between steps.
optimizer_case("adamw_f64", torch.optim.AdamW, F64, dict(lr=0.01, weight_decay=0.1), [(0.01, 0.1), (0.05, 0.0)])
optimizer_case("adamw_amsgrad_schedule_f64", torch.optim.AdamW, F64,
               dict(lr=0.01, betas=(0.85, 0.98), eps=1e-7, amsgrad=True), [(0.01, 0.01), (0.02, 0.5)], SKIPS,
               SCHEDULE)
optimizer_case("adamw_f32", torch.optim.AdamW, F32, dict(lr=0.01), [(0.01, 0.01), (0.03, 0.2)])
optimizer_case("adamw_amsgrad_maximize_f32", torch.optim.AdamW, F32,
               dict(lr=0.005, amsgrad=True, maximize=True), [(0.005, 0.01), (0.05, 0.0)], SKIPS)

# Schedules.
schedule_case("sched_steplr", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
              [0.1, 0.02], dict(step_size=3, gamma=0.5), 13, lambda t, b: b * 0.5 ** (t // 3))
schedule_case("sched_steplr_gamma_0_9", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.9),
              [0.3, 1.0], dict(step_size=1, gamma=0.9), 30, lambda t, b: b * 0.9 ** t)
schedule_case("sched_cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
              [0.1, 0.02], dict(T_max=10, eta_min=0.001), 26,
              lambda t, b: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2)
schedule_case("sched_cosine_eta_min_0", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7),
              [0.5, 0.05], dict(T_max=7, eta_min=0.0), 15)


def sequential_warmup_cosine(W, T, eta_min, f):
    def make(o):
        warm = torch.optim.lr_scheduler.LinearLR(o, start_factor=f, end_factor=1.0, total_iters=W)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T - W, eta_min=eta_min)
        return torch.optim.lr_scheduler.SequentialLR(o, [warm, cos], milestones=[W])
    return make


def lambda_warmup_cosine(W, T, eta_min, f, base_lrs):
    formula = warmup_cosine(W, T, eta_min, f)
    return lambda o: torch.optim.lr_scheduler.LambdaLR(
        o, [lambda t, b=b: formula(t, b) / b for b in base_lrs])


for name, W, T, eta_min, f, bases in [("sched_warmup_cosine", 5, 20, 1e-4, 1.0 / 6.0, [0.1, 0.003]),
                                      ("sched_warmup_cosine_start_factor", 4, 10, 0.0, 0.1, [1.0, 0.25])]:
    schedule_case(name, sequential_warmup_cosine(W, T, eta_min, f), bases,
                  dict(warmup_steps=W, total_steps=T, eta_min=eta_min, start_factor=f), T + 1,
                  warmup_cosine(W, T, eta_min, f))
for name, W, T, eta_min, f, bases in [("sched_warmup_cosine_lambda_start_0", 3, 9, 0.001, 0.0, [0.1, 0.01]),
                                      ("sched_warmup_cosine_lambda_no_warmup", 0, 6, 0.01, 1.0, [0.1, 0.05])]:
    schedule_case(name, lambda_warmup_cosine(W, T, eta_min, f, bases), bases,
                  dict(warmup_steps=W, total_steps=T, eta_min=eta_min, start_factor=f), T + 4,
                  warmup_cosine(W, T, eta_min, f))

# clip_grad_norm_.
clip_case("clip_l2_f64", F64, 1.0, 2.0)
clip_case("clip_l2_no_clip_f64", F64, 100.0, 2.0)
clip_case("clip_inf_f64", F64, 0.5, math.inf)
clip_case("clip_l1_f64", F64, 2.0, 1.0)
clip_case("clip_p3_f64", F64, 1.5, 3.0)
clip_case("clip_l2_f32", F32, 1.0, 2.0)
clip_case("clip_inf_f32", F32, 0.25, math.inf)


# ---- writing ---------------------------------------------------------------------------------
def main():
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_ops.txt")
    lines = [
        f"# softgrad optimizer, schedule and clip_grad_norm_ reference, generated by tests/reference/"
        f"{os.path.basename(__file__)}",
        f"# torch {torch.__version__}; do not edit by hand. Format: see the generator's docstring.",
    ]
    for name, inputs, outputs in CASES:
        lines.append(f"case {name}")
        for k, v in inputs.items():
            lines.append(f"input {k} {reftable.fmt_tensor(v, nonfinite=k == 'option.norm_type')}")
        for k, v in outputs.items():
            lines.append(f"output {k} {reftable.fmt_tensor(v)}")
        lines.append("end")
    text = "\n".join(lines) + "\n"
    with open(out_path, "w") as f:
        f.write(text)
    print(f"wrote {out_path}: {len(CASES)} cases, {len(text)} bytes", file=sys.stderr)


main()
