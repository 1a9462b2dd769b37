#!/usr/bin/python3
"""Writes attention_ops.txt: PyTorch values and gradients for scaled_dot_product_attention.

Run with Debian's interpreter (python3-torch 1.13 + python3-numpy), from anywhere:

    /usr/bin/python3 tests/reference/gen_attention_ops.py

Same file format as core_ops.txt (see gen_core_ops.py). Every case has the inputs q, k, v
and optionally mask, in that order, and `grad` lines for q, k and v only: the mask is a
constant (ops/attention.h), so tests/test_reference_attention.cpp marks exactly q, k and v
requires_grad. No value is non-finite (the writer asserts it).

torch 1.13 has no F.scaled_dot_product_attention, so the reference is PyTorch's math
composition, evaluated in the case's dtype (float64, or float32 for the *_f32 cases):

    softmax(q @ k^T * scale + additive_mask, -1) @ v

with scale = 1 / sqrt(D) unless the case gives one, a bool mask (True = attend) turned
into an additive 0 / -inf mask, and is_causal the top-left aligned lower triangle (query
row i attends keys j <= i, also when Nq != Nk). A case may combine a mask with is_causal
(PyTorch 2.x refuses that; softgrad applies both, which is what the composition does).

Left out on purpose:
  * dropout: softgrad's counter-based keep mask cannot match PyTorch's RNG;
    tests/test_attention.cpp checks dropout against softgrad's own reference.
  * fully masked query rows: PyTorch's math path gives NaN there, softgrad 0 by design
    (ops/attention.h); tests/test_attention.cpp checks that rule. Every mask below keeps
    at least one key per query row (asserted).
The options a case uses (causal, scale, heads transposed) are spelled in its name;
tests/test_reference_attention.cpp mirrors the CASES table below name for name.
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
GEN = torch.Generator().manual_seed(20240923)


# ---- input makers (all draw from GEN, so the file is reproducible) ------------------------
uniform = partial(reftable.uniform, GEN)
normal = partial(reftable.normal, GEN)
additive_mask = partial(reftable.additive_mask, GEN)


def bool_mask(shape, p_attend=0.7):
    """True = attend, about p_attend of the entries. Every row keeps a key: entry
    (i, i mod Nk) is True."""
    m = reftable.rand_bool(GEN, shape, p_attend)
    nq, nk = shape[-2], shape[-1]
    for i in range(nq):
        m[..., i, i % nk] = True
    return m


def key_padding(batch, nk, lengths):
    """A (B, 1, 1, Nk) mask: batch b attends its first lengths[b] keys."""
    assert len(lengths) == batch and all(n >= 1 for n in lengths)
    m = torch.zeros((batch, 1, 1, nk), dtype=torch.bool)
    for b, n in enumerate(lengths):
        m[b, ..., :n] = True
    return m


# ---- the op: PyTorch's math composition ------------------------------------------------
def sdpa(q, k, v, mask=None, is_causal=False, scale=None):
    nq, nk = q.shape[-2], k.shape[-2]
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * s
    attend = torch.ones(scores.shape, dtype=torch.bool)
    if mask is not None:
        if mask.dtype == torch.bool:
            attend = attend & mask
            scores = scores + torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, -math.inf)
        else:
            scores = scores + mask
    if is_causal:
        tril = torch.ones((nq, nk), dtype=torch.bool).tril()
        attend = attend & tril
        scores = scores.masked_fill(~tril, -math.inf)
    assert attend.any(-1).all(), "a fully masked query row (PyTorch: NaN, softgrad: 0)"
    return torch.softmax(scores, -1) @ v


# ---- the cases: name -> (fn, inputs) ----------------------------------------------------
# fn takes the inputs positionally (q, k, v[, mask]) and returns one tensor.
CASES = []
WRT = ["q", "k", "v"]


def case(name, q, k, v, mask=None, is_causal=False, scale=None, heads_last=False):
    """heads_last: q, k, v are stored (B, N, H, D) and both sides attend over their
    transpose(1, 2), a strided (B, H, N, D) view."""
    assert all(name != c.name for c in CASES), name
    assert q.dtype == k.dtype == v.dtype
    assert mask is None or mask.dtype in (torch.bool, q.dtype)
    inputs = dict(q=q, k=k, v=v)
    if mask is not None:
        inputs["mask"] = mask

    def fn(q, k, v, mask=None):
        if heads_last:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = sdpa(q, k, v, mask, is_causal, scale)
        assert y.dtype == q.dtype
        return y

    CASES.append(reftable.Case(name, fn, inputs, WRT))


def qkv(B, H, Nq, Nk, D, Dv=None, dtype=F64, scale=1.0):
    """Normal q, k, v of shapes (B, H, Nq, D), (B, H, Nk, D), (B, H, Nk, Dv); H = None
    gives the 3-D forms."""
    Dv = D if Dv is None else Dv
    lead = (B,) if H is None else (B, H)
    return (normal(lead + (Nq, D), scale, dtype), normal(lead + (Nk, D), scale, dtype),
            normal(lead + (Nk, Dv), 1.0, dtype))


# Shapes: (B, H, Nq, Nk, D), Nq != Nk both ways, D from 1 to 64, Dv != D.
case("basic", *qkv(2, 2, 4, 4, 3))
case("nq5_nk7_d8", *qkv(1, 2, 5, 7, 8))
case("nq7_nk3_d4", *qkv(1, 1, 7, 3, 4))
case("d1", *qkv(1, 2, 4, 5, 1))
case("d17", *qkv(1, 1, 3, 5, 17))
case("d64", *qkv(1, 1, 2, 3, 64))
case("dv5_d3", *qkv(2, 1, 4, 6, 3, Dv=5))
case("nq1", *qkv(2, 1, 1, 6, 4))
# One key: the probabilities are all 1, so q and k get zero gradient.
case("nk1", *qkv(1, 2, 4, 1, 3))
# Peaked scores (q, k ~ N(0, 9)): the rows are nearly one-hot, the max shift matters.
case("peaked_scores", *qkv(1, 2, 5, 6, 4, scale=3.0))
# More keys than one 128-key tile: the online softmax rescales across tiles.
case("nk135_multi_tile", *qkv(1, 1, 2, 135, 2))

# The 3-D forms (B, N, D).
case("3d", *qkv(2, None, 5, 5, 4))
case("3d_nq4_nk6_dv2", *qkv(2, None, 4, 6, 3, Dv=2))

# is_causal: top-left aligned, square and Nq != Nk both ways (Nq > Nk: rows past Nk see
# every key; Nq < Nk: the last keys are seen by no row and get zero gradient).
case("causal", *qkv(1, 2, 5, 5, 4), is_causal=True)
case("causal_nq3_nk6", *qkv(1, 2, 3, 6, 4), is_causal=True)
case("causal_nq6_nk3", *qkv(1, 2, 6, 3, 4), is_causal=True)
case("causal_3d", *qkv(2, None, 5, 5, 3), is_causal=True)

# Bool masks (True = attend): full shape, (Nq, Nk) broadcast, (B, 1, 1, Nk) key padding,
# 3-D, and with is_causal (entry (i, 0) is attended for every i then).
case("bool_mask", *qkv(2, 2, 3, 4, 3), mask=bool_mask((2, 2, 3, 4)))
case("bool_mask_2d_bcast", *qkv(2, 2, 5, 6, 3), mask=bool_mask((5, 6)))
case("bool_mask_key_padding", *qkv(2, 2, 4, 6, 3), mask=key_padding(2, 6, (4, 2)))
case("bool_mask_3d", *qkv(2, None, 4, 5, 3), mask=bool_mask((2, 4, 5)))
_m = bool_mask((1, 2, 5, 5))
_m[..., 0] = True
case("bool_mask_causal", *qkv(1, 2, 5, 5, 3), mask=_m, is_causal=True)

# Additive float masks (finite): full shape, (Nq, Nk) broadcast, with is_causal.
case("additive_mask", *qkv(2, 2, 3, 4, 3), mask=additive_mask((2, 2, 3, 4)))
case("additive_mask_2d_bcast", *qkv(1, 2, 5, 4, 3), mask=additive_mask((5, 4)))
case("additive_mask_causal", *qkv(1, 2, 5, 5, 3), mask=additive_mask((1, 2, 5, 5)), is_causal=True)

# An explicit scale.
case("scale_0_5", *qkv(2, 2, 4, 4, 3), scale=0.5)
case("scale_0_5_additive_mask_causal", *qkv(1, 2, 4, 6, 3), mask=additive_mask((4, 6)), is_causal=True,
     scale=0.5)

# Strided inputs: heads split out of (B, N, H, D) by transpose(1, 2) on both sides.
case("heads_last", *(t.transpose(1, 2).contiguous() for t in qkv(2, 2, 3, 4, 3)), heads_last=True)
case("heads_last_causal", *(t.transpose(1, 2).contiguous() for t in qkv(1, 2, 5, 5, 4)), is_causal=True,
     heads_last=True)

# float32: softgrad's float kernels against PyTorch's float32: tails at N = 37, keys past
# one 128-key tile (a padded length of 129 leaves one key in the second tile), and more
# than one 128-row query tile at Nq = 130 (H = 1, D = 8, Dv = 4 to keep the file ~400 KB).
case("basic_f32", *qkv(2, 2, 4, 4, 3, dtype=F32))
case("n37_causal_bool_mask_f32", *qkv(1, 1, 37, 37, 4, dtype=F32), mask=bool_mask((37, 37)), is_causal=True)
case("additive_mask_f32", *qkv(1, 2, 5, 6, 4, dtype=F32), mask=additive_mask((1, 2, 5, 6), F32))
case("key_padding_nk140_f32", *qkv(2, 1, 2, 140, 2, dtype=F32), mask=key_padding(2, 140, (140, 129)))
case("tiles_130x70_d8_dv4_f32", *qkv(1, 1, 130, 70, 8, Dv=4, dtype=F32))

# Huge negative additive masks, as padded rows get them (masked_fill(-1e9), -1e30, float32's
# lowest as in Hugging Face): rows 0 and 4 entirely, row 1 on its first 5 keys, row 3 on
# every key but one, row 2 not at all. q and k are multiples of 1/4 with D = 4 (scale 1/2),
# so every score is a multiple of 1/32 in [-8, 8], exact on both sides whatever the
# summation order, and score + mask rounds the same way on both sides. Drawn from their
# own generator so the cases above keep their inputs.
GEN_HUGE = torch.Generator().manual_seed(20261202)


def dyadic_qkv(dtype):
    q, k = (torch.randint(-8, 9, (1, 2, 5 if i == 0 else 9, 4), generator=GEN_HUGE).to(dtype) / 4 for i in range(2))
    return q, k, torch.randn((1, 2, 9, 3), generator=GEN_HUGE, dtype=F64).to(dtype)


def huge_mask(value, dtype):
    m = torch.zeros((5, 9), dtype=F64)
    m[0, :] = value
    m[1, :5] = value
    m[3, :] = value
    m[3, 6] = 0.0
    m[4, :] = value
    return m.to(dtype)


HUGE = [("1e4", -1e4), ("1e9", -1e9), ("1e30", -1e30), ("lowest", -3.4028234663852886e38)]
for _dtype, _suffix in ((F64, ""), (F32, "_f32")):
    for _label, _value in HUGE:
        case(f"huge_mask_{_label}{_suffix}", *dyadic_qkv(_dtype), mask=huge_mask(_value, _dtype))


# ---- writing ---------------------------------------------------------------------------
def main():
    reftable.write_table(__file__, "attention_ops.txt", "scaled_dot_product_attention", CASES, weight=uniform,
                         floating_only=True)


if __name__ == "__main__":
    main()
