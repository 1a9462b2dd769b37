#!/usr/bin/python3
"""Writes mha_ops.txt: PyTorch values and gradients for torch.nn.MultiheadAttention, the
reference for sg::nn::MultiHeadAttention (nn/multihead_attention.h).

Run with Debian's interpreter (python3-torch 1.13 + python3-numpy), from anywhere:

    /usr/bin/python3 tests/reference/gen_mha.py

Same file format as core_ops.txt (see gen_core_ops.py). Every case builds
torch.nn.MultiheadAttention(E, H, bias=..., batch_first=..., dropout=0, dtype=...), sets
its parameters from this file's generator (the biases random and non-zero: PyTorch's zero
init would hide a wrong bias slice) and lists, in this order:

  * the attended inputs: `x` alone for self-attention (passed as query, key and value: the
    C++ side passes the same tensor three times, which takes softgrad's fused-projection
    path); `query` and `kv` for cross-attention with key = value (the same tensor twice);
    otherwise `query`, `key`, `value`;
  * the masks, constants without a grad line: `key_padding_mask` (B, S) or (S) unbatched,
    bool (True = ignore this key) or float (added); `attn_mask` (L, S) or
    (B * H, L, S) ((H, L, S) unbatched), bool (True = may NOT attend) or float (added);
  * the parameters in_proj_weight (3E, E), in_proj_bias (3E), out_proj_weight (E, E),
    out_proj_bias (E), the biases only with bias=True.

The output is `mha(q, k, v, key_padding_mask, attn_mask, need_weights=False)[0]`, in the
module's training mode with dropout 0 (so never torch's fused inference fast path); there
are `grad` lines for the attended inputs and the four parameters.

The options a case uses are spelled in its name, which tests/test_reference_mha.cpp
mirrors name for name: `_bf` batch_first=True (else the (L, B, E) layout), `_e<E>`,
`_h<H>` (num_heads, which the shapes do not tell), `nobias`, `causal`, `unbatched` (2-D
inputs), `_f32` float32 (else float64).

causal: torch 1.13's MultiheadAttention has no is_causal, so the torch side passes
attn_mask = ones(L, S, bool).triu(1) (combined with the case's listed attn_mask, if any:
a float one gets -inf above the diagonal) and the table lists only the case's own masks;
the C++ side sets is_causal = true instead.

Left out on purpose:
  * dropout: softgrad's keep mask cannot match PyTorch's RNG (tests/test_nn.cpp).
  * fully masked query rows: PyTorch gives NaN there, softgrad 0 by design; every case
    keeps at least one key per query row and head (asserted).
  * a float key_padding_mask together with an attn_mask: torch 1.13 merges them with
    attn_mask.logical_or / masked_fill(key_padding_mask), which treats a float padding
    mask as bool (or refuses it), not as an additive one. softgrad adds both; a float
    key_padding_mask alone is in the table.
Inputs and the weight w are rounded (4 decimals for float64, multiples of 2^-10 for
float32) so that they print short; outputs and gradients are printed exactly. No value is
non-finite (the writer asserts it).
"""
import math
import os
import sys

import torch
from torch.nn.utils.stateless import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reftable.py sits beside this script
import reftable
from reftable import F32, F64

torch.set_num_threads(1)  # deterministic summation order
GEN = torch.Generator().manual_seed(20241001)


# ---- input makers (all draw from GEN, so the file is reproducible) ------------------------
def short(t, dtype):
    """t rounded so that repr() writes it in few digits (the table stays small): to 4
    decimals for float64 (the nearest double to k / 10^4, written back as that decimal),
    to a multiple of 2^-10 for float32 (exact in float32)."""
    if dtype == F64:
        return torch.round(t * 1e4) / 1e4
    return (torch.round(t * 1024.0) / 1024.0).to(dtype)


def uniform(shape, lo=-1.0, hi=1.0, dtype=F64):
    return short(reftable.uniform(GEN, shape, lo, hi), dtype)


def normal(shape, scale=1.0, dtype=F64):
    return short(reftable.normal(GEN, shape, scale), dtype)


def bool_blocked(shape, p_block=0.35):
    """True = blocked, about p_block of the entries; entry (i, i mod S) of every trailing
    (L, S) matrix stays False (attended)."""
    m = reftable.rand_bool(GEN, shape, p_block)
    nq, nk = shape[-2], shape[-1]
    for i in range(nq):
        m[..., i, i % nk] = False
    return m


def padding(shape, p_pad=0.35):
    """A bool key-padding mask, True = ignore; key 0 is never padding, so every row keeps
    a key (also under a causal mask, whose row 0 sees key 0 only)."""
    m = reftable.rand_bool(GEN, shape, p_pad)
    m[..., 0] = False
    return m


def additive(shape, dtype=F64):
    """reftable.additive_mask's values, shortened."""
    return short(reftable.additive_mask(GEN, shape), dtype)


# ---- the cases ---------------------------------------------------------------------------
CASES = []


def case(name, E, H, B=2, L=4, S=None, batch_first=False, bias=True, dtype=F64, attend="self",
         unbatched=False, kpm=None, attn=None, causal=False):
    """attend: "self" (input x), "kv" (query, kv: key = value) or "cross" (query, key,
    value). kpm: None, "bool", "float". attn: None, "bool", "float", "bool3d", "float3d".
    B is ignored for unbatched cases."""
    assert all(name != c.name for c in CASES), name
    assert E % H == 0
    # The name spells the options the C++ side needs.
    assert f"_e{E}_" in name + "_" and f"_h{H}" in name, name
    assert ("_bf" in name) == batch_first, name
    assert ("nobias" in name) == (not bias), name
    assert ("causal" in name) == causal, name
    assert ("unbatched" in name) == unbatched, name
    assert name.endswith("_f32") == (dtype == F32), name
    S = L if (S is None or attend == "self") else S
    Bx = 1 if unbatched else B

    def layout(n):  # shape of an attended input with n positions
        if unbatched:
            return (n, E)
        return (Bx, n, E) if batch_first else (n, Bx, E)

    inputs = {}
    if attend == "self":
        inputs["x"] = normal(layout(L), dtype=dtype)
    elif attend == "kv":
        inputs["query"] = normal(layout(L), dtype=dtype)
        inputs["kv"] = normal(layout(S), dtype=dtype)
    else:
        assert attend == "cross"
        inputs["query"] = normal(layout(L), dtype=dtype)
        inputs["key"] = normal(layout(S), dtype=dtype)
        inputs["value"] = normal(layout(S), dtype=dtype)

    # Which keys each (batch, head, query) attends, for the fully-masked-row check.
    allowed = torch.ones((Bx, H, L, S), dtype=torch.bool)
    kpm_shape = (S,) if unbatched else (Bx, S)
    if kpm == "bool":
        inputs["key_padding_mask"] = padding(kpm_shape)
        allowed &= ~inputs["key_padding_mask"].reshape(Bx, 1, 1, S)
    elif kpm == "float":
        assert attn is None, "torch 1.13 cannot merge a float key_padding_mask with attn_mask"
        inputs["key_padding_mask"] = additive(kpm_shape, dtype)
    else:
        assert kpm is None
    if attn is not None:
        kind, dims = attn.replace("3d", ""), (3 if attn.endswith("3d") else 2)
        shape = (Bx * H, L, S) if dims == 3 else (L, S)
        if kind == "bool":
            m = bool_blocked(shape)
            if kpm == "bool":  # the key (i, i mod S) may be padding: keep key 0 open too
                view = m.reshape(-1, L, S)
                view[:, :, 0] = False
                m = view.reshape(shape)
            allowed &= ~(m.reshape(Bx, H, L, S) if dims == 3 else m.reshape(1, 1, L, S))
        else:
            assert kind == "float"
            m = additive(shape, dtype)
        inputs["attn_mask"] = m
    if causal:
        allowed &= torch.ones((L, S), dtype=torch.bool).tril()
    assert allowed.any(-1).all(), f"{name}: a fully masked query row (PyTorch: NaN, softgrad: 0)"

    # Parameters: in_proj_weight xavier-like but 1.5x wider (peakier attention), out_proj
    # weight U(-1/sqrt(E), 1/sqrt(E)), biases U(-0.5, 0.5).
    a = 1.5 * math.sqrt(6.0 / (4 * E))
    inputs["in_proj_weight"] = uniform((3 * E, E), -a, a, dtype)
    if bias:
        inputs["in_proj_bias"] = uniform((3 * E,), -0.5, 0.5, dtype)
    inputs["out_proj_weight"] = uniform((E, E), -1 / math.sqrt(E), 1 / math.sqrt(E), dtype)
    if bias:
        inputs["out_proj_bias"] = uniform((E,), -0.5, 0.5, dtype)
    spec = dict(E=E, H=H, batch_first=batch_first, bias=bias, dtype=dtype, attend=attend, causal=causal, L=L, S=S)
    names = list(inputs)
    # Differentiated: every input but the masks (the attended inputs, then the parameters).
    wrt = [k for k in names if not k.endswith("_mask")]
    CASES.append(reftable.Case(name, lambda *leaves: run(spec, dict(zip(names, leaves))), inputs, wrt))


# Self-attention (fused projection), both layouts, H = 1, 2, 3.
case("self_bf_e8_h2", 8, 2, B=2, L=4, batch_first=True)
case("self_e6_h3", 6, 3, B=2, L=4)
case("self_bf_e6_h1", 6, 1, B=2, L=3, batch_first=True)
# Cross-attention (separate projections), S != L both ways, both layouts; key = value.
case("cross_bf_e8_h2", 8, 2, B=2, L=3, S=5, batch_first=True, attend="cross")
case("cross_e12_h3", 12, 3, B=1, L=4, S=3, attend="cross")
case("cross_kv_shared_bf_e6_h2", 6, 2, B=2, L=3, S=4, batch_first=True, attend="kv")
# key_padding_mask: bool (True = ignore), float (added).
case("key_padding_bool_bf_e6_h2", 6, 2, B=3, L=4, batch_first=True, kpm="bool")
case("key_padding_float_e6_h2", 6, 2, B=2, L=3, S=5, attend="cross", kpm="float")
# attn_mask: (L, S) and (B * H, L, S), bool (True = may not attend) and float.
case("attn_mask_bool_bf_e6_h2", 6, 2, B=2, L=5, batch_first=True, attn="bool")
case("attn_mask_float_e6_h2", 6, 2, B=2, L=4, S=5, attend="cross", attn="float")
case("attn_mask_bool_3d_bf_e6_h3", 6, 3, B=2, L=4, S=5, batch_first=True, attend="cross", attn="bool3d")
case("attn_mask_float_3d_e6_h2", 6, 2, B=2, L=4, attn="float3d")
# Both masks (a bool key_padding_mask: see the docstring).
case("key_padding_bool_attn_mask_bool_bf_e6_h2", 6, 2, B=2, L=4, S=5, batch_first=True, attend="cross",
     kpm="bool", attn="bool")
case("key_padding_bool_attn_mask_float_3d_e6_h3", 6, 3, B=2, L=4, kpm="bool", attn="float3d")
# Causal (torch: a triu(1) bool attn_mask; softgrad: is_causal), alone and with masks,
# L != S both ways for cross-attention (top-left aligned).
case("causal_self_bf_e6_h2", 6, 2, B=2, L=5, batch_first=True, causal=True)
case("causal_self_key_padding_bool_e6_h3", 6, 3, B=2, L=4, kpm="bool", causal=True)
case("causal_self_attn_mask_float_bf_e6_h2", 6, 2, B=1, L=5, batch_first=True, attn="float", causal=True)
case("causal_cross_l6_s4_e6_h1", 6, 1, B=2, L=6, S=4, attend="cross", causal=True)
case("causal_cross_l3_s5_bf_e6_h3", 6, 3, B=1, L=3, S=5, batch_first=True, attend="cross", causal=True)
# Unbatched (L, E) inputs (batch_first does not apply to them), with (S) and (H, L, S)
# masks.
case("unbatched_self_e6_h2", 6, 2, L=4, unbatched=True)
case("unbatched_bf_cross_key_padding_float_e6_h3", 6, 3, L=4, S=5, batch_first=True, attend="cross",
     unbatched=True, kpm="float")
case("unbatched_self_key_padding_bool_attn_mask_bool_3d_e6_h2", 6, 2, L=4, unbatched=True, kpm="bool",
     attn="bool3d")
# No biases.
case("nobias_self_bf_e8_h2", 8, 2, B=2, L=4, batch_first=True, bias=False)
case("nobias_cross_key_padding_bool_e6_h3", 6, 3, B=2, L=4, S=3, attend="cross", bias=False, kpm="bool")
# float32: self-attention with both masks and is_causal.
case("causal_self_key_padding_bool_attn_mask_float_bf_e8_h2_f32", 8, 2, B=2, L=5, batch_first=True, kpm="bool",
     attn="float", causal=True, dtype=F32)


# ---- the reference: torch.nn.MultiheadAttention ------------------------------------------
def run(spec, leaves):
    """PyTorch's output for the case; leaves holds the case's inputs by name. The parameters
    among them stand in for the module's own (functional_call), so that their gradients
    land on the leaves."""
    E, H, L, S = spec["E"], spec["H"], spec["L"], spec["S"]
    mha = torch.nn.MultiheadAttention(E, H, dropout=0.0, bias=spec["bias"], batch_first=spec["batch_first"],
                                      dtype=spec["dtype"])
    mha.train()
    params = {"in_proj_weight": leaves["in_proj_weight"], "out_proj.weight": leaves["out_proj_weight"]}
    if spec["bias"]:
        params["in_proj_bias"] = leaves["in_proj_bias"]
        params["out_proj.bias"] = leaves["out_proj_bias"]
    else:
        assert mha.in_proj_bias is None and mha.out_proj.bias is None
    if spec["attend"] == "self":
        q = k = v = leaves["x"]
    elif spec["attend"] == "kv":
        q, k, v = leaves["query"], leaves["kv"], leaves["kv"]
    else:
        q, k, v = leaves["query"], leaves["key"], leaves["value"]
    kpm = leaves.get("key_padding_mask")
    am = leaves.get("attn_mask")
    if spec["causal"]:
        above = torch.ones((L, S), dtype=torch.bool).triu(1)
        if am is None:
            am = above
        elif am.dtype == torch.bool:
            am = am | above
        else:
            am = am.masked_fill(above, -math.inf)
    y = functional_call(mha, params, (q, k, v), dict(key_padding_mask=kpm, attn_mask=am, need_weights=False))[0]
    assert y.dtype == spec["dtype"]
    return y


# ---- writing ---------------------------------------------------------------------------
def main():
    # The weight w is drawn by this file's uniform, so it is rounded like the inputs.
    reftable.write_table(__file__, "mha_ops.txt", "nn::MultiHeadAttention", CASES, weight=uniform, floating_only=True)


if __name__ == "__main__":
    main()
