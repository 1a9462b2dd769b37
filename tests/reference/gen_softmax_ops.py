#!/usr/bin/python3
"""Writes softmax_ops.txt: PyTorch values and gradients for the softmax family
(softmax, log_softmax, cross_entropy, nll_loss).

Run with Debian's interpreter (python3-torch 1.13 + python3-numpy), from anywhere:

    /usr/bin/python3 tests/reference/gen_softmax_ops.py

Same file format as core_ops.txt (see gen_core_ops.py), with two differences:
  * a case lists `grad` lines only for the inputs it differentiates (softmax: x; the
    losses: the logits / log-probabilities and a probability target, never an index
    target or the class weights), and
    tests/test_reference_softmax.cpp marks exactly those inputs requires_grad;
  * a value may be `nan`, `inf` or `-inf` where PyTorch's answer is not finite (a mean over
    rows that are all ignored is NaN; float32 log_softmax of +-3e38 is -inf). Only cases
    declared with nonfinite=True may hold one.
For a scalar output (reduction mean or sum) the weight w is a 0-d tensor.

Rows at +-inf are left out on purpose: there softgrad returns the limit where PyTorch
returns NaN (ops/softmax.h), and tests/test_softmax.cpp checks those rules directly.
tests/test_reference_softmax.cpp mirrors the CASES table below name for name.
"""
import os
import sys
from functools import partial

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reftable.py sits beside this script
import reftable
from reftable import F32, F64

torch.set_num_threads(1)  # deterministic summation order
GEN = torch.Generator().manual_seed(20240917)


# ---- input makers (all draw from GEN, so the file is reproducible) ------------------------
uniform = partial(reftable.uniform, GEN)
normal = partial(reftable.normal, GEN)


def labels(shape, classes, ignore=(), ignore_index=-100):
    """Class indices in [0, classes); the flat positions in `ignore` get ignore_index."""
    t = torch.randint(0, classes, shape, generator=GEN, dtype=torch.int64)
    flat = t.reshape(-1)
    for i in ignore:
        flat[i] = ignore_index
    return t


def probs(shape, dtype=F64, dim=None):
    """A probability distribution along the class dim (dim 1, or 0 for an unbatched (C))."""
    if dim is None:
        dim = 0 if len(shape) == 1 else 1
    return torch.softmax(normal(shape, 1.5), dim).to(dtype)


# ---- the cases: name -> (fn, inputs, differentiated inputs) --------------------------------
# fn takes the inputs positionally, in the order they are listed, and returns one tensor.
CASES = []


def case(name, fn, wrt=None, nonfinite=False, **inputs):
    assert all(name != c.name for c in CASES), name
    if wrt is None:
        wrt = [k for k, v in inputs.items() if v.is_floating_point()]
    CASES.append(reftable.Case(name, fn, inputs, list(wrt), nonfinite))


def suffix(dtype):
    return "_f32" if dtype == F32 else ""


# softmax and log_softmax along every dim of 1-D, 2-D and 3-D inputs, float64 and float32.
for dtype in (F64, F32):
    sfx = suffix(dtype)
    for op_name, op in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
        case(f"{op_name}_1d{sfx}", lambda x, op=op: op(x, 0), x=normal((7,), 2.0, dtype))
        for d in (0, 1, -1, -2):
            case(f"{op_name}_2d_dim{d}{sfx}", lambda x, op=op, d=d: op(x, d), x=normal((3, 5), 2.0, dtype))
        for d in (0, 1, 2, -1, -3):
            case(f"{op_name}_3d_dim{d}{sfx}", lambda x, op=op, d=d: op(x, d), x=normal((2, 3, 4), 2.0, dtype))
        # Rows longer than a vector, with a tail: (4, 37) along dim 1, and a (37, 3) column.
        case(f"{op_name}_4x37_dim1{sfx}", lambda x, op=op: op(x, 1), x=normal((4, 37), 3.0, dtype))
        case(f"{op_name}_37x3_dim0{sfx}", lambda x, op=op: op(x, 0), x=normal((37, 3), 3.0, dtype))
        # Large magnitudes: the max shift keeps them finite (exp(1e4) overflows both dtypes).
        case(f"{op_name}_large_1e4{sfx}", lambda x, op=op: op(x, 1), x=normal((3, 6), 1e4, dtype))
        # A large common offset with O(1) spread: x - max is exact, so the answer is as
        # accurate as for small logits; exp(x - lse) with lse = max + log(sum) rounded to
        # ulp(1e4) would not be.
        case(f"{op_name}_offset_1e4{sfx}", lambda x, op=op: op(x, 1), x=(1e4 + normal((3, 6), 2.0)).to(dtype))
        # One row of +-3e38 (x - max overflows float32 to -inf: exp gives 0, log_softmax -inf),
        # one of near-equal huge values whose differences are still representable.
        huge = torch.tensor([[3e38, -3e38, 1.0, -3e38], [3e38, 2.9e38, 3e38, 3.1e38]], dtype=F64).to(dtype)
        case(f"{op_name}_huge_3e38{sfx}", lambda x, op=op: op(x, 1), nonfinite=True, x=huge)
        # A size-1 softmax dim: softmax is 1, log_softmax 0, and every gradient through
        # softmax is 0.
        case(f"{op_name}_size1_dim{sfx}", lambda x, op=op: op(x, 1), x=normal((4, 1), 1.0, dtype))
        # Ties (a constant row) and a row with one dominant entry.
        ties = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5], [-2.0, 40.0, -2.0, 0.0, 1.0]], dtype=F64).to(dtype)
        case(f"{op_name}_ties_dominant{sfx}", lambda x, op=op: op(x, 1), x=ties)

# Strided input (a transposed view on the C++ side too): the op must read through the strides.
case("softmax_transposed_input", lambda x: torch.softmax(x.t(), 1), x=normal((5, 3), 2.0))
case("log_softmax_transposed_input", lambda x: torch.log_softmax(x.t(), 1), x=normal((5, 3), 2.0))
case("softmax_0d", lambda x: torch.softmax(x, 0), x=normal((), 1.0))
case("log_softmax_0d", lambda x: torch.log_softmax(x, -1), x=normal((), 1.0))
# A softmax output used twice downstream (its gradients add up before its backward runs),
# and log_softmax fed into nll_loss (the unfused cross entropy).
def _softmax_twice(x):
    s = torch.softmax(x, 1)
    return torch.log_softmax(s * 3.0, 0) + s


case("softmax_used_twice", _softmax_twice, x=normal((3, 4), 2.0))
case("log_softmax_nll_loss", lambda x, target: F.nll_loss(torch.log_softmax(x, 1), target),
     x=normal((5, 4), 2.0), target=labels((5,), 4))


# cross_entropy. The inputs are (logits, target[, weight]); the logits and a probability
# target are differentiated, never the class weights.
def ce(name, logits, target, weight=None, nonfinite=False, **kw):
    inputs = dict(logits=logits, target=target)
    if weight is not None:
        inputs["weight"] = weight
        fn = lambda logits, target, weight: F.cross_entropy(logits, target, weight=weight, **kw)
    else:
        fn = lambda logits, target: F.cross_entropy(logits, target, **kw)
    # A probability target is differentiable too (PyTorch: dloss/dtarget = -log_softmax * scale).
    wrt = ["logits", "target"] if target.is_floating_point() else ["logits"]
    case(name, fn, wrt=wrt, nonfinite=nonfinite, **inputs)


REDUCTIONS = ("mean", "sum", "none")
N, C = 6, 5
for red in REDUCTIONS:
    # Index targets: (N, C), (N, C, d), (N, C, d1, d2) and the unbatched (C).
    ce(f"ce_index_{red}", normal((N, C), 2.0), labels((N,), C), reduction=red)
    ce(f"ce_index_3d_{red}", normal((2, C, 3), 2.0), labels((2, 3), C), reduction=red)
    ce(f"ce_unbatched_{red}", normal((C,), 2.0), labels((), C), reduction=red)
    ce(f"ce_weight_{red}", normal((N, C), 2.0), labels((N,), C), uniform((C,), 0.2, 2.0), reduction=red)
    # Row 2 (and 4) carry the default ignore_index -100.
    ce(f"ce_ignore_{red}", normal((N, C), 2.0), labels((N,), C, ignore=(2, 4)), reduction=red)
    ce(f"ce_weight_ignore_{red}", normal((N, C), 2.0), labels((N,), C, ignore=(1,)), uniform((C,), 0.2, 2.0),
       reduction=red)
    ce(f"ce_smooth_{red}", normal((N, C), 2.0), labels((N,), C), label_smoothing=0.1, reduction=red)
    ce(f"ce_smooth_weight_{red}", normal((N, C), 2.0), labels((N,), C), uniform((C,), 0.2, 2.0),
       label_smoothing=0.25, reduction=red)
    ce(f"ce_smooth_weight_ignore_{red}", normal((N, C), 2.0), labels((N,), C, ignore=(0, 3)),
       uniform((C,), 0.2, 2.0), label_smoothing=0.3, reduction=red)
    # Probability targets (the logits' shape and dtype).
    ce(f"ce_prob_{red}", normal((N, C), 2.0), probs((N, C)), reduction=red)
    ce(f"ce_prob_weight_{red}", normal((N, C), 2.0), probs((N, C)), uniform((C,), 0.2, 2.0), reduction=red)
    ce(f"ce_prob_smooth_{red}", normal((N, C), 2.0), probs((N, C)), label_smoothing=0.2, reduction=red)
    ce(f"ce_prob_smooth_weight_{red}", normal((N, C), 2.0), probs((N, C)), uniform((C,), 0.2, 2.0),
       label_smoothing=0.15, reduction=red)
    ce(f"ce_prob_3d_{red}", normal((2, C, 3), 2.0), probs((2, C, 3)), reduction=red)

# More combinations, each under the default mean.
ce("ce_index_4d", normal((2, 3, 2, 2), 2.0), labels((2, 2, 2), 3))
ce("ce_index_3d_weight_ignore_smooth", normal((2, C, 4), 2.0), labels((2, 4), C, ignore=(1, 6)),
   uniform((C,), 0.2, 2.0), label_smoothing=0.2)
ce("ce_index_3d_weight_ignore_smooth_sum", normal((2, C, 4), 2.0), labels((2, 4), C, ignore=(1, 6)),
   uniform((C,), 0.2, 2.0), label_smoothing=0.2, reduction="sum")
# ignore_index that is a real class: the rows labelled 1 are dropped.
ce("ce_ignore_index_1", normal((N, C), 2.0), torch.tensor([1, 0, 1, 4, 2, 1]), ignore_index=1)
ce("ce_ignore_index_1_weight_smooth", normal((N, C), 2.0), torch.tensor([1, 0, 1, 4, 2, 1]),
   uniform((C,), 0.2, 2.0), ignore_index=1, label_smoothing=0.1)
ce("ce_unbatched_weight_smooth", normal((C,), 2.0), labels((), C), uniform((C,), 0.2, 2.0), label_smoothing=0.1)
ce("ce_unbatched_prob", normal((C,), 2.0), probs((C,)))
ce("ce_unbatched_prob_weight_smooth", normal((C,), 2.0), probs((C,)), uniform((C,), 0.2, 2.0),
   label_smoothing=0.1)
ce("ce_prob_3d_weight_smooth", normal((2, C, 3), 2.0), probs((2, C, 3)), uniform((C,), 0.2, 2.0),
   label_smoothing=0.1)
ce("ce_smooth_1", normal((N, C), 2.0), labels((N,), C), label_smoothing=1.0)
# Targets that are not one-hot-like: a soft target with zeros in it, and a hard one-hot
# probability target (must equal the index-target loss).
ce("ce_prob_with_zeros", normal((3, 4), 2.0),
   torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=F64))
# Every row ignored: mean is 0/0 = NaN (gradient 0), sum is 0.
ce("ce_all_ignored_mean", normal((3, C), 2.0), torch.tensor([-100, -100, -100]), nonfinite=True)
ce("ce_all_ignored_sum", normal((3, C), 2.0), torch.tensor([-100, -100, -100]), reduction="sum")
ce("ce_all_ignored_smooth_mean", normal((3, C), 2.0), torch.tensor([-100, -100, -100]), label_smoothing=0.1,
   nonfinite=True)
# Large logits: the fused log-sum-exp must not overflow.
ce("ce_large_logits", normal((4, C), 1e4), labels((4,), C))
ce("ce_large_logits_prob_smooth", normal((4, C), 1e4), probs((4, C)), label_smoothing=0.1)
# A common offset of 1e4 or 100 (O(1) spread): PyTorch's loss lse - z_t = -(z_t - max - log sum)
# keeps full relative accuracy; forming lse = max + log(sum) first would round to ulp(offset).
ce("ce_offset_1e4", 1e4 + normal((4, C), 2.0), labels((4,), C))
ce("ce_offset_1e4_f32", (1e4 + normal((4, C), 2.0)).to(F32), labels((4,), C))
ce("ce_offset_100_f32", (100 + normal((4, C), 2.0)).to(F32), labels((4,), C), reduction="none")
ce("ce_offset_100_prob_smooth_f32", (100 + normal((4, C), 2.0)).to(F32), probs((4, C), F32),
   label_smoothing=0.1, reduction="none")

# float32: softgrad's vector kernels (C = 37 leaves a tail), against PyTorch's float32.
ce("ce_index_f32", normal((8, 37), 3.0, F32), labels((8,), 37))
ce("ce_index_none_f32", normal((8, 37), 3.0, F32), labels((8,), 37), reduction="none")
ce("ce_weight_ignore_smooth_f32", normal((8, 37), 3.0, F32), labels((8,), 37, ignore=(5,)),
   uniform((37,), 0.2, 2.0, F32), label_smoothing=0.1)
ce("ce_prob_smooth_weight_f32", normal((8, 37), 3.0, F32), probs((8, 37), F32), uniform((37,), 0.2, 2.0, F32),
   label_smoothing=0.1, reduction="sum")
ce("ce_index_3d_f32", normal((2, 37, 5), 3.0, F32), labels((2, 5), 37), reduction="none")


# nll_loss. The inputs are (log_probs, target[, weight]); only log_probs is differentiated.
# log_probs need not be normalized: nll_loss only picks entries.
def nll(name, log_probs, target, weight=None, nonfinite=False, **kw):
    inputs = dict(log_probs=log_probs, target=target)
    if weight is not None:
        inputs["weight"] = weight
        fn = lambda log_probs, target, weight: F.nll_loss(log_probs, target, weight=weight, **kw)
    else:
        fn = lambda log_probs, target: F.nll_loss(log_probs, target, **kw)
    case(name, fn, wrt=["log_probs"], nonfinite=nonfinite, **inputs)


for red in REDUCTIONS:
    nll(f"nll_{red}", normal((N, C)), labels((N,), C), reduction=red)
    nll(f"nll_weight_{red}", normal((N, C)), labels((N,), C), uniform((C,), 0.2, 2.0), reduction=red)
    nll(f"nll_ignore_{red}", normal((N, C)), labels((N,), C, ignore=(0, 5)), reduction=red)
    nll(f"nll_weight_ignore_{red}", normal((N, C)), labels((N,), C, ignore=(3,)), uniform((C,), 0.2, 2.0),
        reduction=red)
    nll(f"nll_3d_{red}", normal((2, C, 3)), labels((2, 3), C, ignore=(4,)), uniform((C,), 0.2, 2.0),
        reduction=red)
    nll(f"nll_unbatched_{red}", normal((C,)), labels((), C), reduction=red)
nll("nll_4d", normal((2, 3, 2, 2)), labels((2, 2, 2), 3))
nll("nll_ignore_index_2", normal((N, C)), torch.tensor([2, 0, 2, 4, 2, 1]), uniform((C,), 0.2, 2.0), ignore_index=2)
nll("nll_unbatched_weight", normal((C,)), labels((), C), uniform((C,), 0.2, 2.0))
nll("nll_all_ignored_mean", normal((3, C)), torch.tensor([-100, -100, -100]), nonfinite=True)
nll("nll_all_ignored_weight_mean", normal((3, C)), torch.tensor([-100, -100, -100]), uniform((C,), 0.2, 2.0),
    nonfinite=True)
nll("nll_all_ignored_sum", normal((3, C)), torch.tensor([-100, -100, -100]), reduction="sum")
nll("nll_f32", normal((8, 37), 1.0, F32), labels((8,), 37, ignore=(2,)), uniform((37,), 0.2, 2.0, F32))
nll("nll_none_f32", normal((8, 37), 1.0, F32), labels((8,), 37), reduction="none")


# ---- writing ---------------------------------------------------------------------------
def main():
    reftable.write_table(__file__, "softmax_ops.txt", "softmax-family", CASES, weight=uniform, floating_only=True)


if __name__ == "__main__":
    main()
