#!/usr/bin/python3
"""Writes conv_ops.txt: PyTorch values and gradients for conv2d, unfold, fold, max_pool2d,
avg_pool2d, adaptive_avg_pool2d and batch_norm (functional and torch.nn.BatchNorm1d/2d),
the reference for sg::conv2d, sg::unfold, sg::fold (ops/conv.h), the pools
(ops/pooling.h), sg::batch_norm (ops/batch_norm.h) and sg::nn::BatchNorm1d/2d
(nn/conv.h). tests/test_reference_conv.cpp mirrors CASES name for name, with the same
options (stride, padding, ...), which the names only sketch.

Run with Debian's interpreter (python3-torch 1.13 + python3-numpy), from anywhere:

    /usr/bin/python3 tests/reference/gen_conv_ops.py

Same file format as core_ops.txt (see gen_core_ops.py). Inputs and outputs, by family:

  conv2d_*        `x` (N, C, H, W), `weight` (O, C / groups, kh, kw), `bias` (O) unless the
                  name says `nobias`; output `out`; gradients for all of them.
  unfold_*        `x` (N, C, H, W) -> `out` (N, C kh kw, L); gradient for x.
  fold_*          `cols` (N, C kh kw, L) -> `out` (N, C, H, W); gradient for cols.
  max_pool2d_*    `x` -> `values` and `indices` (int64, h W + w in the input plane, as
                  return_indices=True); gradient for x. The `nan` case holds NaN in x and
                  in the values (a NaN wins its window); weights and gradients are finite.
  avg_pool2d_*, adaptive_avg_pool2d_*   `x` -> `out`; gradient for x.
  batch_norm_*    torch.nn.functional.batch_norm run over one or more steps (the name
                  lists them, `train` or `eval`): step i normalizes `x` (step 1), `x2`,
                  `x3` in turn, all with the same `running_mean`, `running_var` (random,
                  so that a swap shows; absent with `nostats`), `weight` and `bias` (absent
                  with `noaffine`; `weightonly` has no bias). Outputs: `out`, the last
                  step's output, then `running_mean` and `running_var` after every step
                  (updated in place by a training step, unchanged by an eval step).
                  Gradients for the last step's input, weight and bias (the running
                  statistics are buffers; an earlier step's output is not differentiated).
                  `_m<k>` spells momentum 0.k (else 0.1), `_eps<e>` eps 1e-<e> (else 1e-5).
  bn1d_module_*, bn2d_module_*   torch.nn.BatchNorm1d / BatchNorm2d from its own init
                  (running_mean 0, running_var 1, num_batches_tracked 0), its weight and
                  bias replaced by the case's `weight` and `bias` (absent with `noaffine`),
                  then called on `x`, `x2`, ... in train or eval mode as the name lists.
                  Outputs: `out` (the last call's), and with running statistics tracked
                  (not `notrack`) `running_mean`, `running_var` and `num_batches_tracked`
                  (int64 0-d); gradients for the last input, weight and bias.
  `_f32` ends the name of a float32 case (else float64).

PyTorch's conv2d for float32 would go through oneDNN (mkldnn), whose kernel depends on the
CPU's instruction set; the generator turns mkldnn off, so float32 convolutions take
PyTorch's own im2col + BLAS path (slow_conv2d / slow_conv_dilated2d) like float64. Every
convolution here has an input that requires grad, so 1.13's XNNPACK inference path is
never taken. The last bits of the float64 convolutions still depend on the OpenBLAS kernel,
and those of batch_norm on PyTorch's vectorized CPU kernels: the committed table is
OPENBLAS_CORETYPE=Prescott ATEN_CPU_CAPABILITY=avx2 (tests/reference/README.md).

Not here: conv2d's padding_mode other than zeros, avg_pool2d's divisor_override, and
BatchNorm's momentum=None (cumulative average); softgrad has none of them.
Inputs and the weight w are rounded (4 decimals for float64, multiples of 2^-10 for
float32) so that they print short; outputs and gradients are printed exactly.
"""
import math
import os
import re
import sys
import warnings

import torch
import torch.nn.functional as F
from torch.nn.utils.stateless import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reftable.py sits beside this script
import reftable
from reftable import F32, F64

torch.set_num_threads(1)  # deterministic summation order
torch.backends.mkldnn.enabled = False  # float32 conv2d through im2col + BLAS, not oneDNN (see above)
# 1.13 warns that 'same' with an even kernel pads a copy of the input (asymmetric padding): expected here.
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
GEN = torch.Generator().manual_seed(20250601)


# ---- input makers (all draw from GEN, so the file is reproducible) ------------------------
def uniform(shape, lo=-1.0, hi=1.0, dtype=F64):
    return reftable.short(reftable.uniform(GEN, shape, lo, hi), dtype)


def normal(shape, scale=1.0, offset=0.0, dtype=F64):
    return reftable.short(offset + reftable.normal(GEN, shape, scale), dtype)


def grid(shape, levels, dtype=F64):
    """Values on a grid of `levels` multiples of 0.25 around 0: many exact ties."""
    k = torch.randint(0, levels, shape, generator=GEN).to(F64)
    return ((k - levels // 2) * 0.25).to(dtype)


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


CASES = []


def add(name, fn, inputs, wrt, out_names=()):
    assert all(name != c.name for c in CASES), name
    dtype = next(v.dtype for v in inputs.values() if v.is_floating_point())
    assert name.endswith("_f32") == (dtype == F32), name
    nan = "nan" in name
    CASES.append(reftable.Case(name, fn, inputs, wrt, nonfinite=nan, nonfinite_inputs=nan, out_names=tuple(out_names)))


# ---- conv2d --------------------------------------------------------------------------------
def conv2d(name, N, C, H, W, O, kernel, stride=1, padding=0, dilation=1, groups=1, bias=True, transposed=False,
           dtype=F64):
    """x (N, C, H, W) (stored as (N, C, W, H) and transposed in fn when `transposed`);
    weight uniform in PyTorch's init range; padding an int, a pair, 'same' or 'valid'."""
    assert ("nobias" in name) == (not bias), name
    assert ("same" in name) == (padding == "same") and ("valid" in name) == (padding == "valid"), name
    assert ("transposed" in name) == transposed, name
    kh, kw = pair(kernel)
    bound = 1.0 / math.sqrt(C // groups * kh * kw)
    inputs = {"x": normal((N, C, W, H) if transposed else (N, C, H, W), dtype=dtype),
              "weight": uniform((O, C // groups, kh, kw), -bound, bound, dtype)}
    if bias:
        inputs["bias"] = uniform((O,), -0.5, 0.5, dtype)

    def fn(x, weight, b=None):
        if transposed:
            x = x.transpose(2, 3)
        return F.conv2d(x, weight, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    add(name, fn, inputs, list(inputs))


conv2d("conv2d_3x3", 2, 3, 7, 6, 4, 3)
conv2d("conv2d_3x3_pad1", 2, 3, 6, 5, 4, 3, padding=1)
conv2d("conv2d_stride2_pad1", 2, 3, 9, 8, 5, 3, stride=2, padding=1)
conv2d("conv2d_stride3_drops_edges", 1, 2, 10, 8, 3, 3, stride=3)  # the last row and 2 columns fall outside
conv2d("conv2d_asym_kernel_stride_pad", 2, 2, 8, 7, 3, (2, 3), stride=(1, 2), padding=(2, 1))
conv2d("conv2d_asym_stride_pad", 1, 3, 9, 5, 2, 3, stride=(2, 1), padding=(0, 2))
conv2d("conv2d_dilation2_pad2", 2, 2, 9, 9, 3, 3, padding=2, dilation=2)
conv2d("conv2d_dilation_2x3_stride2", 1, 3, 11, 12, 2, (3, 2), stride=2, padding=(1, 0), dilation=(2, 3))
conv2d("conv2d_groups2", 2, 4, 6, 5, 6, 3, padding=1, groups=2)
conv2d("conv2d_groups3_stride2", 1, 6, 7, 8, 3, (2, 3), stride=2, padding=1, groups=3)
conv2d("conv2d_depthwise", 2, 3, 5, 7, 3, 3, padding=1, groups=3)
conv2d("conv2d_depthwise_multiplier2_stride2", 2, 3, 8, 6, 6, 3, stride=2, padding=1, groups=3)
conv2d("conv2d_same_even_kernel", 1, 2, 6, 5, 3, (4, 2), padding="same")  # extra pixel bottom/right
conv2d("conv2d_same_k4", 2, 2, 5, 6, 2, 4, padding="same")
conv2d("conv2d_same_dilated_2x1", 1, 2, 7, 7, 2, 3, padding="same", dilation=(2, 1))
conv2d("conv2d_same_k2_dilation3", 1, 2, 6, 7, 3, 2, padding="same", dilation=3)  # 3 padded: 1 top, 2 bottom
conv2d("conv2d_valid", 2, 3, 6, 7, 2, 3, padding="valid")
conv2d("conv2d_1x1_nobias", 3, 4, 3, 5, 2, 1, bias=False)
conv2d("conv2d_odd_sizes_stride2", 1, 2, 11, 13, 3, 3, stride=2, padding=1)
conv2d("conv2d_kernel_equals_input", 2, 2, 4, 3, 3, (4, 3))
conv2d("conv2d_single_channel_nobias", 1, 1, 5, 5, 1, 2, bias=False)
conv2d("conv2d_transposed_input", 2, 3, 6, 5, 2, 3, padding=1, transposed=True)
conv2d("conv2d_3x3_pad1_f32", 1, 3, 8, 7, 4, 3, padding=1, dtype=F32)
conv2d("conv2d_wide_f32", 1, 16, 5, 5, 4, 3, padding=1, dtype=F32)  # 144 products per output
conv2d("conv2d_groups2_stride2_f32", 1, 4, 9, 7, 6, 3, stride=2, padding=1, groups=2, dtype=F32)
conv2d("conv2d_depthwise_f32", 1, 4, 6, 6, 4, 3, padding=1, groups=4, dtype=F32)
conv2d("conv2d_same_even_kernel_dilation2_f32", 1, 3, 7, 6, 2, 2, padding="same", dilation=2, dtype=F32)
conv2d("conv2d_1x1_nobias_f32", 2, 5, 4, 3, 3, 1, bias=False, dtype=F32)


# ---- unfold / fold -------------------------------------------------------------------------
def unfold(name, N, C, H, W, kernel, dilation=1, padding=0, stride=1, dtype=F64):
    def fn(x):
        return F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)

    add(name, fn, {"x": normal((N, C, H, W), dtype=dtype)}, ["x"])


def fold(name, N, C, output_size, kernel, dilation=1, padding=0, stride=1, dtype=F64):
    (H, W), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = map(pair, (output_size, kernel, dilation, padding, stride))
    L = ((H + 2 * ph - dh * (kh - 1) - 1) // sh + 1) * ((W + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def fn(cols):
        return F.fold(cols, output_size, kernel, dilation=dilation, padding=padding, stride=stride)

    add(name, fn, {"cols": normal((N, C * kh * kw, L), dtype=dtype)}, ["cols"])


unfold("unfold_k3", 2, 3, 5, 6, 3)
unfold("unfold_k2x3_dilation_pad_stride", 1, 2, 7, 8, (2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 3))
unfold("unfold_k2_stride2", 2, 2, 4, 6, 2, stride=2)
unfold("unfold_k3_pad1_f32", 1, 3, 5, 4, 3, padding=1, dtype=F32)
fold("fold_k3", 2, 3, (5, 6), 3)  # overlapping windows sum
fold("fold_k2x3_dilation_pad_stride", 1, 2, (7, 8), (2, 3), dilation=(1, 2), padding=(1, 1), stride=(2, 1))
fold("fold_k2_stride2", 2, 2, (4, 6), 2, stride=2)
fold("fold_k3_stride2_drops_edge", 1, 2, (6, 5), 3, stride=2)  # the last row is in no window
fold("fold_k3_pad1_f32", 1, 3, (5, 4), 3, padding=1, dtype=F32)


# ---- pooling -------------------------------------------------------------------------------
def max_pool2d(name, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    assert ("ceil" in name) == ceil_mode, name

    def fn(x):
        return tuple(F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True))

    add(name, fn, {"x": x}, ["x"])


def avg_pool2d(name, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    assert ("ceil" in name) == ceil_mode and ("exclude_pad" in name) == (not count_include_pad), name

    def fn(x):
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)

    add(name, fn, {"x": x}, ["x"])


def adaptive_avg_pool2d(name, x, output_size):
    add(name, lambda x: F.adaptive_avg_pool2d(x, output_size), {"x": x}, ["x"])


def with_nan(x, positions):
    x = x.clone()
    for p in positions:
        x[p] = math.nan
    return x


max_pool2d("max_pool2d_k2", normal((2, 3, 6, 8)), 2)
max_pool2d("max_pool2d_k3_s2_pad1", normal((2, 2, 7, 8)), 3, 2, 1)
max_pool2d("max_pool2d_k3_s1_overlap", normal((1, 2, 5, 6)), 3, 1)  # one maximum in several windows
max_pool2d("max_pool2d_k2_s3_gaps", normal((1, 2, 8, 7)), 2, 3)  # stride > kernel: some inputs in no window
max_pool2d("max_pool2d_asym_k2x3_s1x2_pad1", normal((2, 2, 5, 7)), (2, 3), (1, 2), 1)
max_pool2d("max_pool2d_ceil_k3_s2", normal((1, 2, 8, 6)), 3, 2, ceil_mode=True)
max_pool2d("max_pool2d_ceil_k3_s2_pad1", normal((1, 2, 6, 7)), 3, 2, 1, ceil_mode=True)
max_pool2d("max_pool2d_ceil_k2_s2_pad1_drops_window", normal((1, 2, 5, 6)), 2, 2, 1, ceil_mode=True)
max_pool2d("max_pool2d_dilation_2x3_pad1", normal((1, 2, 9, 10)), (3, 2), (1, 2), 1, (2, 3))
max_pool2d("max_pool2d_dilation2_ceil", normal((2, 1, 8, 9)), 2, 2, 0, 2, ceil_mode=True)
max_pool2d("max_pool2d_negative_pad1", uniform((1, 2, 5, 5), -2.0, -1.0), 3, 2, 1)  # the padding never wins
max_pool2d("max_pool2d_ties", grid((2, 2, 6, 6), 3), 3, 1, 1)  # the first maximum in window order wins
max_pool2d("max_pool2d_nan", with_nan(normal((1, 2, 4, 6)), [(0, 0, 1, 1), (0, 1, 2, 4), (0, 1, 3, 5)]), 2, 2)
max_pool2d("max_pool2d_k3_s2_pad1_f32", normal((2, 3, 9, 8), dtype=F32), 3, 2, 1)
max_pool2d("max_pool2d_ceil_f32", normal((1, 2, 7, 7), dtype=F32), 2, ceil_mode=True)

avg_pool2d("avg_pool2d_k2", normal((2, 3, 6, 8)), 2)
avg_pool2d("avg_pool2d_k3_s2_pad1", normal((2, 2, 7, 8)), 3, 2, 1)
avg_pool2d("avg_pool2d_k3_s2_pad1_exclude_pad", normal((2, 2, 7, 8)), 3, 2, 1, count_include_pad=False)
avg_pool2d("avg_pool2d_k3_s1_overlap", normal((1, 2, 5, 6)), 3, 1)
avg_pool2d("avg_pool2d_k2_s3_gaps", normal((1, 2, 8, 7)), 2, 3)
avg_pool2d("avg_pool2d_asym_k2x3_s1x2_pad1", normal((2, 2, 5, 7)), (2, 3), (1, 2), 1)
avg_pool2d("avg_pool2d_ceil_k3_s2", normal((1, 2, 8, 6)), 3, 2, ceil_mode=True)  # last windows leave the input
avg_pool2d("avg_pool2d_ceil_k3_s2_pad1", normal((1, 2, 6, 7)), 3, 2, 1, ceil_mode=True)
avg_pool2d("avg_pool2d_ceil_k3_s2_pad1_exclude_pad", normal((1, 2, 6, 7)), 3, 2, 1, ceil_mode=True,
           count_include_pad=False)
avg_pool2d("avg_pool2d_ceil_k2_s2_pad1_drops_window", normal((1, 2, 5, 6)), 2, 2, 1, ceil_mode=True)
avg_pool2d("avg_pool2d_k3_s2_pad1_f32", normal((2, 3, 9, 8), dtype=F32), 3, 2, 1)
avg_pool2d("avg_pool2d_ceil_pad1_exclude_pad_f32", normal((1, 2, 7, 6), dtype=F32), 3, 2, 1, ceil_mode=True,
           count_include_pad=False)

adaptive_avg_pool2d("adaptive_avg_pool2d_5x7_to_3x2", normal((2, 3, 5, 7)), (3, 2))
adaptive_avg_pool2d("adaptive_avg_pool2d_8x6_to_4x3", normal((1, 2, 8, 6)), (4, 3))  # windows tile the input
adaptive_avg_pool2d("adaptive_avg_pool2d_global", normal((2, 3, 4, 5)), (1, 1))
adaptive_avg_pool2d("adaptive_avg_pool2d_7x5_to_4x4", normal((1, 2, 7, 5)), (4, 4))
adaptive_avg_pool2d("adaptive_avg_pool2d_3x4_to_5x6_upsample", normal((1, 2, 3, 4)), (5, 6))  # windows overlap
adaptive_avg_pool2d("adaptive_avg_pool2d_5x7_to_3x2_f32", normal((2, 4, 5, 7), dtype=F32), (3, 2))


# ---- batch_norm (functional) ---------------------------------------------------------------
def check_steps(name, prefix, steps):
    """name is prefix, the steps joined by '_', then nothing or '_' and a non-step word."""
    assert name.startswith(prefix + "_".join(steps)), name
    rest = name[len(prefix + "_".join(steps)):]
    assert rest == "" or (rest[0] == "_" and rest.split("_")[1] not in ("train", "eval")), name


def check_momentum(name, momentum):
    spelled = re.findall(r"_m(\d+)(?:_|$)", name)
    assert spelled == ([] if momentum == 0.1 else [str(round(momentum * 10))]), name


def batch_norm(name, shape, steps, affine="both", stats=True, momentum=0.1, eps=1e-5, scale=1.0, offset=0.0,
               dtype=F64):
    """steps: "train" / "eval" per call, in order, each on its own input."""
    check_steps(name, f"batch_norm_{len(shape)}d_", steps)
    assert ("noaffine" in name) == (affine == "none") and ("weightonly" in name) == (affine == "weight"), name
    assert ("nostats" in name) == (not stats) and (stats or "eval" not in steps), name
    check_momentum(name, momentum)
    assert ("_eps" in name) == (eps != 1e-5), name
    C = shape[1]
    xs = [f"x{i + 1}" if i else "x" for i in range(len(steps))]
    inputs = {k: normal(shape, scale, offset, dtype) for k in xs}
    if stats:
        inputs["running_mean"] = uniform((C,), -0.5, 0.5, dtype)
        inputs["running_var"] = uniform((C,), 0.5, 2.0, dtype)
    if affine != "none":
        inputs["weight"] = uniform((C,), 0.5, 1.5, dtype)
    if affine == "both":
        inputs["bias"] = uniform((C,), -0.5, 0.5, dtype)
    names = list(inputs)

    def fn(*leaves):
        a = dict(zip(names, leaves))
        rm, rv = (a["running_mean"].clone(), a["running_var"].clone()) if stats else (None, None)
        for k, mode in zip(xs, steps):
            y = F.batch_norm(a[k], rm, rv, a.get("weight"), a.get("bias"), training=mode == "train", momentum=momentum,
                             eps=eps)
        return (y, rm, rv) if stats else y

    wrt = [xs[-1]] + [k for k in ("weight", "bias") if k in inputs]
    add(name, fn, inputs, wrt, ["out", "running_mean", "running_var"] if stats else [])


batch_norm("batch_norm_4d_train", (3, 4, 3, 5), ["train"])
batch_norm("batch_norm_4d_eval", (2, 3, 4, 4), ["eval"])
batch_norm("batch_norm_4d_train_train_m3", (2, 3, 4, 3), ["train", "train"], momentum=0.3)
batch_norm("batch_norm_4d_train_eval_m3", (2, 3, 3, 4), ["train", "eval"], momentum=0.3)  # eval on updated stats
batch_norm("batch_norm_4d_train_noaffine", (2, 3, 4, 4), ["train"], affine="none")
batch_norm("batch_norm_4d_eval_noaffine", (2, 3, 2, 3), ["eval"], affine="none")
batch_norm("batch_norm_4d_train_weightonly", (2, 2, 3, 3), ["train"], affine="weight")
batch_norm("batch_norm_4d_train_nostats", (2, 3, 3, 3), ["train"], stats=False)
batch_norm("batch_norm_4d_train_offset", (2, 3, 4, 4), ["train"], scale=0.01, offset=50.0)  # tiny spread, large mean
batch_norm("batch_norm_4d_train_eps3", (2, 3, 2, 2), ["train"], eps=1e-3, scale=0.03)  # eps is a tenth of the var
batch_norm("batch_norm_2d_train", (6, 4), ["train"])
batch_norm("batch_norm_2d_train_n2", (2, 5), ["train"])  # 2 values per channel: unbiased var is 2x the biased
batch_norm("batch_norm_2d_eval", (5, 3), ["eval"])
batch_norm("batch_norm_2d_train_train_train_m3_noaffine", (4, 3), ["train", "train", "train"], affine="none",
           momentum=0.3)
batch_norm("batch_norm_2d_train_nostats_noaffine", (5, 2), ["train"], affine="none", stats=False)
batch_norm("batch_norm_3d_train", (4, 3, 5), ["train"])
batch_norm("batch_norm_3d_train_eval", (3, 2, 4), ["train", "eval"])
batch_norm("batch_norm_4d_train_f32", (4, 4, 4, 4), ["train"], dtype=F32)
batch_norm("batch_norm_4d_train_train_m3_f32", (2, 4, 6, 6), ["train", "train"], momentum=0.3, dtype=F32)
batch_norm("batch_norm_4d_eval_f32", (2, 3, 4, 5), ["eval"], dtype=F32)
batch_norm("batch_norm_2d_train_f32", (64, 5), ["train"], scale=2.0, offset=1.0, dtype=F32)


# ---- torch.nn.BatchNorm1d / BatchNorm2d ---------------------------------------------------
def bn_module(name, shape, steps, momentum=0.1, affine=True, track=True, dtype=F64):
    dims = len(shape)
    cls = torch.nn.BatchNorm2d if dims == 4 else torch.nn.BatchNorm1d
    check_steps(name, "bn2d_module_" if dims == 4 else "bn1d_module_", steps)
    assert ("noaffine" in name) == (not affine) and ("notrack" in name) == (not track), name
    check_momentum(name, momentum)
    C = shape[1]
    xs = [f"x{i + 1}" if i else "x" for i in range(len(steps))]
    inputs = {k: normal(shape, dtype=dtype) for k in xs}
    if affine:
        inputs["weight"] = uniform((C,), 0.5, 1.5, dtype)
        inputs["bias"] = uniform((C,), -0.5, 0.5, dtype)
    names = list(inputs)

    def fn(*leaves):
        a = dict(zip(names, leaves))
        m = cls(C, momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
        params = {k: a[k] for k in ("weight", "bias") if k in a}
        for k, mode in zip(xs, steps):
            m.train(mode == "train")
            y = functional_call(m, params, (a[k],))
        if not track:
            return y
        assert m.num_batches_tracked.dtype == torch.int64
        return y, m.running_mean.detach().clone(), m.running_var.detach().clone(), m.num_batches_tracked.clone()

    wrt = [xs[-1]] + [k for k in ("weight", "bias") if k in inputs]
    add(name, fn, inputs, wrt, ["out", "running_mean", "running_var", "num_batches_tracked"] if track else [])


bn_module("bn2d_module_train_train_eval_m3", (2, 3, 4, 4), ["train", "train", "eval"], momentum=0.3)
bn_module("bn2d_module_train_eval_noaffine", (3, 2, 3, 3), ["train", "eval"], affine=False)
bn_module("bn2d_module_eval_notrack", (2, 3, 3, 4), ["eval"], track=False)  # no stats: eval uses the batch's
bn_module("bn1d_module_train_train", (5, 4), ["train", "train"])
bn_module("bn1d_module_train_eval_3d", (3, 2, 4), ["train", "eval"])
bn_module("bn2d_module_train_eval_f32", (2, 4, 5, 5), ["train", "eval"], dtype=F32)


def main():
    # The weight w is drawn by this file's uniform, so it is rounded like the inputs.
    reftable.write_table(__file__, "conv_ops.txt",
                         "conv2d, unfold, fold, max_pool2d, avg_pool2d, adaptive_avg_pool2d, batch_norm", CASES,
                         weight=uniform, floating_only=True)


if __name__ == "__main__":
    main()
