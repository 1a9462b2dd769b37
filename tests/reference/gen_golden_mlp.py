#!/usr/bin/python3
"""Writes golden_mlp.txt: a tiny MLP trained for 20 steps by PyTorch 1.13, the end-to-end
reference for softgrad (nn::Linear, relu, cross_entropy, backward, optim), read by
tests/test_golden_mlp.cpp (llm.c's test_gpt2 idea: a few training steps from fixed
weights and data, every loss and the final weights compared).

Run with Debian's interpreter (python3-torch 1.13), from anywhere:

    /usr/bin/python3 tests/reference/gen_golden_mlp.py

The model: Linear(20, 32) -> ReLU -> Linear(32, 16) -> ReLU -> Linear(16, 5), and the loss
F.cross_entropy(model(x[batch]), y[batch]) (mean). Same line format as core_ops.txt (see
gen_core_ops.py), without weight or grad lines.

case data     (shared by the runs)
    inputs  x            float64 (96, 20)   the data set (4 decimals, so float32 runs use x.float())
            y            int64 (96)         labels in [0, 5): argmax of a random linear teacher
            batches      int64 (20, 16)     the rows of each step's mini-batch: a fresh
                                            permutation of the 96 rows every 6 steps
            init.<name>  float64            the initial parameters, PyTorch's names
                                            (fc1.weight (32, 20), fc1.bias (32), fc2.*, fc3.*),
                                            drawn like nn.Linear's init and rounded to 4 decimals
case <run>    one training run from those weights, in the dtype its name ends with
    inputs  option.<name> float64 []        the run's hyper-parameters (the C++ test states its
                                            own copy and checks it against these)
    outputs losses       float64 (20)       the loss of each step, before that step's update
                                            (float32 runs: the float32 loss, widened)
            final.<name> the run's dtype    the parameters after the 20th update
Per step: zero_grad, loss.backward(), [clip_grad_norm_], optimizer.step(), scheduler.step().

Runs:
  adamw_warmup_cosine_f64 / _f32   AdamW(lr=0.01, weight_decay=0.05) with
      SequentialLR([LinearLR(start_factor=0.2, total_iters=4), CosineAnnealingLR(T_max=16,
      eta_min=1e-4)], milestones=[4]) (softgrad: WarmupCosine(opt, 4, 20, 1e-4, 0.2))
  sgd_nesterov_clip_steplr_f64     SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
      clip_grad_norm_(max_norm=1.0) before each step, StepLR(step_size=5, gamma=0.5)
  adam_amsgrad_groups_f64          Adam(lr=0.005, amsgrad=True) with two groups: the weights
      (lr 0.005, weight_decay 0.01) and the biases (lr 0.02, weight_decay 0)
"""
import math
import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reftable.py sits beside this script
import reftable
from reftable import F32, F64

torch.set_num_threads(1)  # deterministic summation order
warnings.filterwarnings("ignore", message="The epoch parameter in")  # SequentialLR's milestone step
GEN = torch.Generator().manual_seed(20250107)

N, D, H1, H2, C = 96, 20, 32, 16, 5
STEPS, BATCH = 20, 16
LAYERS = [("fc1", D, H1), ("fc2", H1, H2), ("fc3", H2, C)]


def short(t):
    return torch.round(t * 1e4) / 1e4


def make_data():
    x = short(torch.randn(N, D, generator=GEN, dtype=F64))
    teacher = torch.randn(D, C, generator=GEN, dtype=F64)
    y = torch.argmax(x @ teacher + 0.5 * torch.randn(N, C, generator=GEN, dtype=F64), dim=1)
    order = torch.cat([torch.randperm(N, generator=GEN) for _ in range(math.ceil(STEPS * BATCH / N))])
    batches = order[: STEPS * BATCH].reshape(STEPS, BATCH)
    init = {}
    for name, fan_in, fan_out in LAYERS:
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's init: kaiming_uniform(a=sqrt(5)) and the bias bound
        init[f"{name}.weight"] = short(reftable.uniform(GEN, (fan_out, fan_in), -bound, bound))
        init[f"{name}.bias"] = short(reftable.uniform(GEN, (fan_out,), -bound, bound))
    return x, y, batches, init


class MLP(torch.nn.Module):
    def __init__(self, init, dtype):
        super().__init__()
        for name, fan_in, fan_out in LAYERS:
            setattr(self, name, torch.nn.Linear(fan_in, fan_out, dtype=dtype))
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(init[name])

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def train(run, x, y, batches, init, dtype):
    model = MLP(init, dtype)
    clip = None
    if run.startswith("adamw_warmup_cosine"):
        options = dict(lr=0.01, weight_decay=0.05, warmup_steps=4, total_steps=20, eta_min=1e-4, start_factor=0.2)
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05, foreach=False)
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.2, end_factor=1.0, total_iters=4)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=16, eta_min=1e-4)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[4])
    elif run.startswith("sgd_nesterov_clip_steplr"):
        options = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, max_norm=1.0, step_size=5, gamma=0.5)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3,
                              foreach=False)
        clip = 1.0
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    elif run.startswith("adam_amsgrad_groups"):
        options = dict(weight_lr=0.005, weight_decay=0.01, bias_lr=0.02)
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        opt = torch.optim.Adam([{"params": weights, "lr": 0.005, "weight_decay": 0.01},
                                {"params": biases, "lr": 0.02, "weight_decay": 0.0}],
                               lr=0.005, amsgrad=True, foreach=False)
        sched = None
    else:
        raise ValueError(run)
    xs, losses = x.to(dtype), []
    for s in range(STEPS):
        idx = batches[s]
        loss = F.cross_entropy(model(xs[idx]), y[idx])
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
    inputs = {f"option.{k}": torch.tensor(float(v), dtype=F64) for k, v in options.items()}
    outputs = {"losses": torch.tensor(losses, dtype=F64)}
    outputs.update({f"final.{n}": p.detach().clone() for n, p in model.named_parameters()})
    return inputs, outputs


def main():
    x, y, batches, init = make_data()
    cases = [("data", dict(x=x, y=y, batches=batches, **{f"init.{k}": v for k, v in init.items()}), {})]
    for run, dtype in [("adamw_warmup_cosine_f64", F64), ("adamw_warmup_cosine_f32", F32),
                       ("sgd_nesterov_clip_steplr_f64", F64), ("adam_amsgrad_groups_f64", F64)]:
        cases.append((run,) + train(run, x, y, batches, init, dtype))

    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden_mlp.txt")
    lines = [
        f"# softgrad golden MLP training reference, generated by tests/reference/{os.path.basename(__file__)}",
        f"# torch {torch.__version__}; do not edit by hand. Format: see the generator's docstring.",
    ]
    for name, inputs, outputs in cases:
        lines.append(f"case {name}")
        lines += [f"input {k} {reftable.fmt_tensor(v)}" for k, v in inputs.items()]
        lines += [f"output {k} {reftable.fmt_tensor(v)}" for k, v in outputs.items()]
        lines.append("end")
    text = "\n".join(lines) + "\n"
    with open(out_path, "w") as f:
        f.write(text)
    print(f"wrote {out_path}: {len(cases)} cases, {len(text)} bytes", file=sys.stderr)
    for name, _, outputs in cases[1:]:
        first, last = outputs["losses"][0].item(), outputs["losses"][-1].item()
        print(f"  {name}: loss {first:.4f} -> {last:.4f}", file=sys.stderr)


main()
