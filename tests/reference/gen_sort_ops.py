#!/usr/bin/python3
"""Writes sort_ops.txt: PyTorch values and gradients for sort, argsort, topk and cumsum.

Run with Debian's interpreter (python3-torch 1.13 + python3-numpy), from anywhere:

    /usr/bin/python3 tests/reference/gen_sort_ops.py

Same file format as core_ops.txt (see gen_core_ops.py): the named inputs, the op's outputs
(`values` and `indices` for sort and topk), a fixed random weight w of the first output's
shape when that output is floating, and the gradient of sum(output * w) with respect to
every floating input. Two differences:
  * the cases whose name contains `nan` hold NaN in their inputs and outputs (declared with
    nonfinite=True, nonfinite_inputs=True); the weights and gradients are always finite;
  * sort is called with stable=True, softgrad's only sort; ties are exercised there.
topk cases have no ties among the values that decide the selection or its order (PyTorch
leaves the order of ties unspecified, softgrad takes the lower index first); the
`topk_unsorted` cases put PyTorch's answer in index order, the order softgrad's
sorted=false returns. multinomial is not here: its random streams differ from PyTorch's
by design (ops/sort.h); tests/test_sort.cpp checks its distribution instead.
tests/test_reference_sort.cpp mirrors the CASES table below name for name.
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
GEN = torch.Generator().manual_seed(20250312)
I64 = torch.int64


# ---- input makers (all draw from GEN, so the file is reproducible) ------------------------
uniform = partial(reftable.uniform, GEN)


def distinct(shape, dtype=F64):
    """A random permutation of well-separated values (no ties), exact in float32."""
    n = math.prod(shape)
    perm = torch.randperm(n, generator=GEN).to(F64)
    jitter = torch.randint(0, 64, (n,), generator=GEN).to(F64) / 256.0  # < 1/4 of the spacing
    return ((perm + jitter) * 0.5 - n / 4.0).reshape(shape).to(dtype)


def ties(shape, levels, dtype=F64):
    """Values on a grid of `levels` points (multiples of 0.25): many exact ties."""
    k = torch.randint(0, levels, shape, generator=GEN).to(F64)
    return ((k - levels // 2) * 0.25).to(dtype)


def with_nan(x, count):
    """x with `count` entries (distinct random positions) replaced by NaN."""
    x = x.clone()
    flat = x.reshape(-1)
    for i in torch.randperm(flat.numel(), generator=GEN)[:count].tolist():
        flat[i] = math.nan
    return x


def nan_per_row(x):
    """x (2-D) with one NaN per row, at a random column."""
    x = x.clone()
    for r in range(x.shape[0]):
        x[r, int(torch.randint(0, x.shape[1], (1,), generator=GEN))] = math.nan
    return x


def ints(shape, lo, hi):
    return torch.randint(lo, hi, shape, generator=GEN, dtype=I64)


# ---- the cases ---------------------------------------------------------------------------
CASES = []


def case(name, fn, **inputs):
    assert all(name != c.name for c in CASES), name
    nan = "nan" in name
    CASES.append(reftable.Case(name, fn, inputs, wrt=[k for k, v in inputs.items() if v.is_floating_point()],
                               nonfinite=nan, nonfinite_inputs=nan))


def sort(dim=-1, descending=False):
    return lambda x: tuple(torch.sort(x, dim=dim, descending=descending, stable=True))


def topk(k, dim=-1, largest=True):
    return lambda x: tuple(torch.topk(x, k, dim=dim, largest=largest, sorted=True))


def topk_index_order(k, dim=-1, largest=True):
    """topk's answer with its entries in the order they appear in x (softgrad's sorted=false)."""
    def fn(x):
        v, i = torch.topk(x, k, dim=dim, largest=largest, sorted=True)
        order = i.argsort(dim=dim)
        return v.gather(dim, order), i.gather(dim, order)
    return fn


# sort: float64 along every dim, ascending and descending.
case("sort_1d", sort(), x=distinct((7,)))
case("sort_1d_desc", sort(0, True), x=distinct((7,)))
case("sort_2d_dim1", sort(1), x=distinct((3, 5)))
case("sort_2d_dim0_desc", sort(0, True), x=distinct((4, 3)))
case("sort_3d_dim1", sort(1), x=distinct((2, 4, 3)))
case("sort_3d_dim0_desc", sort(0, True), x=distinct((3, 2, 4)))
case("sort_3d_dim_neg1", sort(-1), x=distinct((2, 3, 5)))
case("sort_transposed_input", lambda x: tuple(torch.sort(x.t(), dim=1, stable=True)), x=distinct((5, 3)))
# Ties (stable: equal values keep their order, ascending and descending), signed zeros.
case("sort_ties", sort(), x=ties((4, 9), 4))
case("sort_ties_desc", sort(-1, True), x=ties((4, 9), 4))
case("sort_ties_dim0", sort(0), x=ties((8, 3), 3))
case("sort_signed_zeros", sort(), x=torch.tensor([0.0, -0.0, 1.0, -0.0, 0.0, -1.0], dtype=F64))
case("sort_signed_zeros_desc", sort(-1, True), x=torch.tensor([0.0, -0.0, 1.0, -0.0, 0.0, -1.0], dtype=F64))
# NaN is the largest value; NaNs keep their order among themselves.
case("sort_nan", sort(), x=with_nan(ties((3, 8), 5), 6))
case("sort_nan_desc", sort(-1, True), x=with_nan(ties((3, 8), 5), 6))
case("sort_nan_dim0_f32", sort(0), x=with_nan(distinct((6, 3), F32), 4))
# float32 and int64.
case("sort_f32", sort(1), x=distinct((5, 37), F32))
case("sort_f32_ties_desc", sort(1, True), x=ties((3, 20), 6, F32))
case("sort_int64", sort(), x=ints((3, 10), -50, 50))
case("sort_int64_ties_desc", sort(0, True), x=ints((9, 4), -3, 3))
# NOTE: the reader holds values as doubles, so int64 values here are exact doubles: the
# largest is 2^63 - 1024, not 2^63 - 1 (tests/test_sort.cpp covers the int64 limits).
case("sort_int64_extremes", sort(),
     x=torch.tensor([5, 2**63 - 1024, -3, -2**63, 5, 0, -2**63, 2**62], dtype=I64))
# 0-dim and empty.
case("sort_0d", sort(0), x=uniform(()))
case("sort_empty_dim0", sort(0), x=uniform((0, 3)))
case("sort_empty_dim1", sort(1), x=uniform((0, 3)))

# argsort (no gradient): the indices alone.
case("argsort_ties", lambda x: torch.argsort(x, dim=-1, stable=True), x=ties((3, 10), 4))
case("argsort_ties_desc_dim0", lambda x: torch.argsort(x, dim=0, descending=True, stable=True), x=ties((7, 3), 3))
case("argsort_nan_desc", lambda x: torch.argsort(x, dim=-1, descending=True, stable=True),
     x=with_nan(ties((2, 9), 4), 4))
case("argsort_int64", lambda x: torch.argsort(x, dim=1, stable=True), x=ints((3, 8), -4, 4))

# topk: largest and smallest, along several dims, k = 0 and k = size.
case("topk_1d_k3", topk(3), x=distinct((7,)))
case("topk_1d_k3_smallest", topk(3, 0, False), x=distinct((7,)))
case("topk_2d_dim1_k2", topk(2, 1), x=distinct((4, 6)))
case("topk_2d_dim0_k2_smallest", topk(2, 0, False), x=distinct((5, 3)))
case("topk_3d_dim1_k3", topk(3, 1), x=distinct((2, 5, 3)))
case("topk_3d_dim_neg1_k1", topk(1, -1), x=distinct((2, 3, 4)))
case("topk_k0", topk(0, 1), x=distinct((3, 5)))
case("topk_k_size", topk(5, 1), x=distinct((3, 5)))
case("topk_k_size_smallest", topk(4, 0, False), x=distinct((4, 3)))
case("topk_transposed_input", lambda x: tuple(torch.topk(x.t(), 2, dim=1)), x=distinct((6, 3)))
# Ties that decide nothing: the selected values are distinct, the ties sit below the cut.
case("topk_ties_below_cut", topk(2, 1), x=torch.tensor([[3.0, 1.0, 1.0, 2.0, 1.0], [0.0, 0.0, 5.0, 0.0, 4.0]], dtype=F64))
# sorted=false in softgrad: the same entries in index order.
case("topk_unsorted", topk_index_order(3, 1), x=distinct((4, 7)))
case("topk_unsorted_smallest_dim0", topk_index_order(2, 0, False), x=distinct((5, 3)))
# NaN is the largest value: first among the largest, taken by the smallest only at the end.
case("topk_nan", topk(3, 1), x=nan_per_row(distinct((3, 6))))
case("topk_nan_smallest_k_size", topk(6, 1, False), x=nan_per_row(distinct((3, 6))))
# float32, int64, 0-dim.
case("topk_f32", topk(5, 1), x=distinct((4, 37), F32))
case("topk_f32_smallest", topk(4, 0, False), x=distinct((9, 5), F32))
case("topk_int64", topk(3, 1), x=torch.stack([torch.randperm(10, generator=GEN) * 7 - 30 for _ in range(3)]))
case("topk_0d", topk(1, 0), x=uniform(()))

# cumsum: float64 along every dim, float32 (accumulated in double), int64 (wrapping).
case("cumsum_1d", lambda x: torch.cumsum(x, 0), x=uniform((9,)))
case("cumsum_2d_dim0", lambda x: torch.cumsum(x, 0), x=uniform((5, 3)))
case("cumsum_2d_dim1", lambda x: torch.cumsum(x, 1), x=uniform((3, 6)))
case("cumsum_3d_dim0", lambda x: torch.cumsum(x, 0), x=uniform((3, 2, 4)))
case("cumsum_3d_dim1", lambda x: torch.cumsum(x, 1), x=uniform((2, 5, 3)))
case("cumsum_3d_dim_neg1", lambda x: torch.cumsum(x, -1), x=uniform((2, 3, 5)))
case("cumsum_transposed_input", lambda x: torch.cumsum(x.t(), 1), x=uniform((4, 3)))
case("cumsum_f32", lambda x: torch.cumsum(x, 1), x=uniform((5, 37), -10.0, 10.0, F32))
case("cumsum_f32_dim0", lambda x: torch.cumsum(x, 0), x=uniform((300, 3), -1.0, 1.0, F32))
case("cumsum_f32_2pow24", lambda x: torch.cumsum(x, 0), x=torch.tensor([2.0**24, 1, 1, 1, 1, -2.0**24, 0.5], dtype=F32))
case("cumsum_nan", lambda x: torch.cumsum(x, 1), x=with_nan(uniform((3, 5)), 2))
case("cumsum_int64", lambda x: torch.cumsum(x, 1), x=ints((3, 7), -1000, 1000))
# Wraps both ways (2^62 + 2^62 -> -2^63, -2^63 - 2^62 -> 2^62); every partial sum is a
# multiple of 2^61, exact as a double.
case("cumsum_int64_wraps", lambda x: torch.cumsum(x, 0),
     x=torch.tensor([2**62, 2**62, -2**62, -2**63, -2**62, 3 * 2**61], dtype=I64))
case("cumsum_0d", lambda x: torch.cumsum(x, -1), x=uniform(()))
case("cumsum_empty", lambda x: torch.cumsum(x, 1), x=uniform((0, 4)))


# ---- writing ---------------------------------------------------------------------------
def main():
    reftable.write_table(__file__, "sort_ops.txt", "sort, argsort, topk, cumsum", CASES, weight=uniform)


if __name__ == "__main__":
    main()
