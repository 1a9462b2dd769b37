#!/usr/bin/python3
"""Writes core_ops.txt: PyTorch values and gradients for softgrad's core ops.

Run with Debian's interpreter (python3-torch 1.13 + python3-numpy), from anywhere:

    /usr/bin/python3 tests/reference/gen_core_ops.py

For every case: the named inputs, the op's outputs, a fixed random weight w of the first
output's shape, and the gradient of sum(output * w) with respect to every floating input.
tests/test_reference.cpp mirrors the CASES table below name for name.

File format (one record per line, whitespace separated; '#' lines are comments):

    case NAME
    input NAME DTYPE [d0,d1,...] : v v v ...      (DTYPE float64|float32|int64|bool)
    output NAME DTYPE [d0,...] : v v ...          (first output is the differentiated one)
    weight DTYPE [d0,...] : v v ...               (only for cases with a floating output)
    grad INPUTNAME DTYPE [d0,...] : v v ...
    end

A 0-d shape is written []. Values are row-major; floats are printed with repr() of the
Python float (shortest round-trip form, so float64 and float32 values are exact), int64 as
integers, bool as 0/1. reftable.py, shared by the generators here, writes this format.
"""
import math
import os
import sys
from functools import partial

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reftable.py sits beside this script
import reftable
from reftable import F32, F64

torch.set_num_threads(1)  # deterministic summation order
GEN = torch.Generator().manual_seed(20240611)


# ---- input makers (all draw from GEN, so the file is reproducible) ------------------------
uniform = partial(reftable.uniform, GEN)


def away_from(shape, points, lo=-1.0, hi=1.0, margin=0.1, dtype=F64):
    """Uniform values at least `margin` from every kink in `points` (relu, abs, clamp)."""
    x = uniform(shape, lo, hi)
    for p in points:
        near = (x - p).abs() < margin
        x = torch.where(near, x + torch.where(x >= p, 2 * margin, -2 * margin), x)
    for p in points:
        assert ((x - p).abs() >= margin).all()
    return x.to(dtype)


def distinct(shape, dtype=F64):
    """A random permutation of well-separated values (no ties for max/min/argmax)."""
    n = math.prod(shape)
    perm = torch.randperm(n, generator=GEN).to(F64)
    jitter = 0.5 * torch.rand(n, generator=GEN, dtype=F64)  # < half the spacing: no ties
    return ((perm + jitter) * (3.0 / n) - 1.5).reshape(shape).to(dtype)


def indices(shape, high):
    return torch.randint(0, high, shape, generator=GEN, dtype=torch.int64)


def mask(shape):
    return reftable.rand_bool(GEN, shape, 0.5, draw_dtype=F32)


# ---- the cases: name -> (fn, inputs) ---------------------------------------------------
# fn returns a tensor or a tuple of tensors; the first one is differentiated, with respect
# to every floating input.
CASES = []


def case(name, fn, **inputs):
    assert all(name != c.name for c in CASES), name
    CASES.append(reftable.Case(name, fn, inputs, wrt=[k for k, v in inputs.items() if v.is_floating_point()]))


# Binary arithmetic with broadcasting.
case("add_same", lambda a, b: a + b, a=uniform((3, 4)), b=uniform((3, 4)))
case("add_bcast_234_31", lambda a, b: a + b, a=uniform((2, 3, 4)), b=uniform((3, 1)))
case("add_bcast_both", lambda a, b: a + b, a=uniform((2, 1, 4)), b=uniform((3, 1)))
case("add_0d", lambda a, b: a + b, a=uniform((3, 4)), b=uniform(()))
case("sub_bcast_234_4", lambda a, b: a - b, a=uniform((2, 3, 4)), b=uniform((4,)))
case("sub_bcast_31_234", lambda a, b: a - b, a=uniform((3, 1)), b=uniform((2, 3, 4)))
case("mul_bcast_234_31", lambda a, b: a * b, a=uniform((2, 3, 4)), b=uniform((3, 1)))
case("mul_bcast_41_15", lambda a, b: a * b, a=uniform((4, 1)), b=uniform((1, 5)))
case("div_bcast_234_31", lambda a, b: a / b, a=uniform((2, 3, 4)), b=uniform((3, 1), 0.5, 2.0))
case("div_bcast_31_234", lambda a, b: a / b, a=uniform((3, 1)), b=away_from((2, 3, 4), [0.0], -2.0, 2.0, 0.4))

# Powers.
case("pow_scalar_2.5", lambda x: torch.pow(x, 2.5), x=uniform((3, 4), 0.2, 2.0))
case("pow_scalar_-1.5", lambda x: torch.pow(x, -1.5), x=uniform((3, 4), 0.2, 2.0))
case("pow_scalar_3_mixed_sign", lambda x: torch.pow(x, 3.0), x=away_from((3, 4), [0.0], -2.0, 2.0))
case("pow_scalar_0.5", lambda x: torch.pow(x, 0.5), x=uniform((2, 5), 0.2, 2.0))
case("pow_tensor", lambda a, b: torch.pow(a, b), a=uniform((3, 4), 0.2, 2.0), b=uniform((3, 4), -2.0, 2.0))
case("pow_tensor_bcast", lambda a, b: torch.pow(a, b), a=uniform((2, 3, 4), 0.2, 2.0), b=uniform((4,), -2.0, 2.0))

# Unary.
case("neg", lambda x: -x, x=uniform((3, 4)))
case("exp", torch.exp, x=uniform((3, 5), -3.0, 3.0))
case("log", torch.log, x=uniform((3, 5), 0.05, 5.0))
case("sqrt", torch.sqrt, x=uniform((3, 5), 0.05, 5.0))
case("abs", torch.abs, x=away_from((3, 5), [0.0], -2.0, 2.0))
case("relu", torch.relu, x=away_from((3, 5), [0.0], -2.0, 2.0))
case("tanh", torch.tanh, x=uniform((3, 5), -3.0, 3.0))
case("sigmoid", torch.sigmoid, x=uniform((3, 5), -6.0, 6.0))
case("gelu_none", lambda x: torch.nn.functional.gelu(x, approximate="none"), x=uniform((3, 5), -4.0, 4.0))
case("gelu_tanh", lambda x: torch.nn.functional.gelu(x, approximate="tanh"), x=uniform((3, 5), -4.0, 4.0))
case("clamp_min", lambda x: torch.clamp(x, min=-0.3), x=away_from((4, 5), [-0.3]))
case("clamp_max", lambda x: torch.clamp(x, max=0.4), x=away_from((4, 5), [0.4]))
case("clamp_both", lambda x: torch.clamp(x, min=-0.5, max=0.5), x=away_from((4, 5), [-0.5, 0.5]))

# Reductions.
case("sum_all", lambda x: x.sum(), x=uniform((2, 3, 4)))
case("sum_dim1", lambda x: x.sum(dim=[1]), x=uniform((2, 3, 4)))
case("sum_dims02_keepdim", lambda x: x.sum(dim=[0, 2], keepdim=True), x=uniform((2, 3, 4)))
case("sum_dim_neg1", lambda x: x.sum(dim=[-1]), x=uniform((2, 3, 4)))
case("mean_all", lambda x: x.mean(), x=uniform((2, 3, 4)))
case("mean_dim1", lambda x: x.mean(dim=[1]), x=uniform((2, 3, 4)))
case("mean_dims02_keepdim", lambda x: x.mean(dim=[0, 2], keepdim=True), x=uniform((2, 3, 4)))
case("var_all", lambda x: x.var(), x=uniform((2, 3, 4)))
case("var_all_correction0", lambda x: x.var(unbiased=False), x=uniform((2, 3, 4)))
case("var_dim1", lambda x: x.var(dim=1), x=uniform((2, 3, 4)))
case("var_dim1_correction0", lambda x: x.var(dim=1, unbiased=False), x=uniform((2, 3, 4)))
case("var_dims02_keepdim", lambda x: x.var(dim=[0, 2], keepdim=True), x=uniform((2, 3, 4)))
case("max_all", lambda x: x.max(), x=distinct((3, 4)))
case("min_all", lambda x: x.min(), x=distinct((3, 4)))
case("max_dim1_keepdim", lambda x: tuple(x.max(dim=1, keepdim=True)), x=distinct((2, 3, 4)))
case("min_dim1_keepdim", lambda x: tuple(x.min(dim=1, keepdim=True)), x=distinct((2, 3, 4)))
case("max_dim_neg1", lambda x: tuple(x.max(dim=-1)), x=distinct((2, 3, 4)))
case("min_dim0", lambda x: tuple(x.min(dim=0)), x=distinct((2, 3, 4)))
case("argmax_all", lambda x: x.argmax(), x=distinct((3, 4)))
case("argmax_dim1", lambda x: x.argmax(dim=1), x=distinct((2, 3, 4)))
case("argmax_dim0_keepdim", lambda x: x.argmax(dim=0, keepdim=True), x=distinct((3, 4)))
case("argmin_dim1", lambda x: x.argmin(dim=1), x=distinct((2, 3, 4)))

# matmul.
case("matmul_2d", torch.matmul, a=uniform((3, 4)), b=uniform((4, 5)))
case("matmul_1d_2d", torch.matmul, a=uniform((4,)), b=uniform((4, 3)))
case("matmul_2d_1d", torch.matmul, a=uniform((3, 4)), b=uniform((4,)))
case("matmul_1d_1d", torch.matmul, a=uniform((5,)), b=uniform((5,)))
case("matmul_batched_3d", torch.matmul, a=uniform((2, 3, 4)), b=uniform((2, 4, 5)))
case("matmul_bcast_3d_2d", torch.matmul, a=uniform((2, 3, 4)), b=uniform((4, 5)))
case("matmul_bcast_4d_3d", torch.matmul, a=uniform((2, 1, 3, 4)), b=uniform((3, 4, 2)))

# Shape ops.
case("reshape", lambda x: x.reshape(4, 6), x=uniform((2, 3, 4)))
case("reshape_neg1", lambda x: x.reshape(6, -1), x=uniform((2, 3, 4)))
case("transpose_0_2", lambda x: x.transpose(0, 2), x=uniform((2, 3, 4)))
case("permute_201", lambda x: x.permute(2, 0, 1), x=uniform((2, 3, 4)))
case("narrow_dim1", lambda x: x.narrow(1, 1, 2), x=uniform((2, 4, 3)))
case("slice_step2", lambda x: x[:, 1::2], x=uniform((3, 6)))
case("slice_dim0_step3", lambda x: x[1:7:3], x=uniform((8, 2)))
case("squeeze_all", lambda x: x.squeeze(), x=uniform((2, 1, 3, 1)))
case("squeeze_dim1", lambda x: x.squeeze(1), x=uniform((2, 1, 3, 1)))
case("unsqueeze_dim1", lambda x: x.unsqueeze(1), x=uniform((2, 3)))
case("expand_31_234", lambda x: x.expand(2, 3, 4), x=uniform((3, 1)))
case("cat_dim1", lambda a, b, c: torch.cat([a, b, c], dim=1), a=uniform((2, 3)), b=uniform((2, 1)), c=uniform((2, 4)))
case("stack_dim0", lambda a, b, c: torch.stack([a, b, c], dim=0), a=uniform((2, 3)), b=uniform((2, 3)), c=uniform((2, 3)))
case("stack_dim1", lambda a, b: torch.stack([a, b], dim=1), a=uniform((2, 3)), b=uniform((2, 3)))
case("index_select_dim0", lambda x, index: x.index_select(0, index),
     x=uniform((3, 4)), index=torch.tensor([2, 0, 2, 1, 2]))
case("index_select_dim1", lambda x, index: x.index_select(1, index),
     x=uniform((2, 4, 3)), index=torch.tensor([3, 3, 0]))
case("gather_dim1", lambda x, index: x.gather(1, index), x=uniform((3, 4)), index=indices((3, 5), 4))
case("gather_dim1_3d", lambda x, index: x.gather(1, index), x=uniform((2, 3, 4)), index=indices((2, 5, 3), 3))

# Selection by masks.
case("where", torch.where, cond=mask((3, 4)), a=uniform((3, 4)), b=uniform((3, 4)))
case("where_bcast", torch.where, cond=mask((3, 1)), a=uniform((3, 4)), b=uniform((4,)))
case("masked_fill", lambda x, mask: x.masked_fill(mask, -2.5), x=uniform((3, 4)), mask=mask((3, 4)))
case("masked_fill_bcast", lambda x, mask: x.masked_fill(mask, 0.75), x=uniform((2, 3, 4)), mask=mask((4,)))

# Comparisons (no gradient); b shares some entries with a so ties are exercised.
_cmp_a = uniform((3, 4))
_cmp_b = torch.where(mask((3, 4)), _cmp_a, uniform((3, 4)))
case("lt", torch.lt, a=_cmp_a, b=_cmp_b)
case("ge", torch.ge, a=_cmp_a.clone(), b=_cmp_b.clone())
case("eq", torch.eq, a=_cmp_a.clone(), b=_cmp_b.clone())
_cmp_row = _cmp_a[1].clone()
case("lt_bcast", torch.lt, a=_cmp_a.clone(), b=_cmp_row)

# float32: torch computes in float32; these check softgrad's float32 (SIMD) kernels.
# Sizes are not multiples of a vector width so tails are covered too.
case("exp_f32", torch.exp, x=uniform((5, 37), -10.0, 10.0, F32))
case("tanh_f32", torch.tanh, x=uniform((5, 37), -5.0, 5.0, F32))
case("sigmoid_f32", torch.sigmoid, x=uniform((5, 37), -10.0, 10.0, F32))
case("gelu_none_f32", lambda x: torch.nn.functional.gelu(x, approximate="none"), x=uniform((5, 37), -5.0, 5.0, F32))
case("gelu_tanh_f32", lambda x: torch.nn.functional.gelu(x, approximate="tanh"), x=uniform((5, 37), -5.0, 5.0, F32))
case("matmul_f32", torch.matmul, a=uniform((7, 19), dtype=F32), b=uniform((19, 11), dtype=F32))
case("sum_all_f32", lambda x: x.sum(), x=uniform((5, 37), dtype=F32))
case("sum_dim1_f32", lambda x: x.sum(dim=[1]), x=uniform((5, 37), dtype=F32))


# ---- writing ---------------------------------------------------------------------------
def main():
    reftable.write_table(__file__, "core_ops.txt", "core ops", CASES, weight=uniform, allow_unused=True)


if __name__ == "__main__":
    main()
