#!/usr/bin/python3
"""Writes layers_ops.txt: PyTorch values and gradients for layer_norm, embedding, gelu and
torch.nn.TransformerEncoderLayer, the reference for sg::layer_norm (ops/normalization.h),
sg::embedding (ops/embedding.h), sg::gelu and sg::nn::TransformerEncoderLayer
(nn/transformer.h). tests/test_reference_layers.cpp mirrors CASES name for name.

Run with Debian's interpreter (python3-torch 1.13 + python3-numpy), from anywhere:

    /usr/bin/python3 tests/reference/gen_layers.py

Same file format as core_ops.txt (see gen_core_ops.py). Inputs, by case family:

  layer_norm_*  `x`, then `weight` and `bias` when the case has them (the name says
                `noaffine`, `weightonly`); the normalized dims are the trailing dims of
                `weight`, or `_k<k>` in the name without a weight; `_eps<e>` spells a
                non-default eps as 1e-<e>. Gradients for x, weight and bias.
  embedding_*   `weight` (V, D), `indices` int64; `_pad<p>` spells padding_idx. Gradient
                for the weight only (padding row 0, repeated indices summed).
  gelu_*        `x`; `_tanh` is approximate='tanh'.
  encoder_*     `x` (B, T, E) batch-first, the masks (constants without a grad line), then
                every parameter under its state_dict name (self_attn.in_proj_weight, ...,
                norm2.bias), which the C++ side puts into nn::TransformerEncoderLayer as is.
                The name spells `_h<H>` (nhead), `_f<F>` (dim_feedforward), `prenorm` or
                `postnorm`, `gelu` or `relu`, `causal`. Gradients for x and every parameter.
  `_f32` ends the name of a float32 case (else float64).

The encoder runs torch.nn.TransformerEncoderLayer(E, H, F, dropout=0, activation=...,
batch_first=True, norm_first=...) in training mode (never 1.13's fused inference path),
its parameters replaced by this file's leaves (functional_call) so that their gradients
land on them. Biases and norm parameters are random (PyTorch's zeros and ones would hide a
swapped one). masks: `key_padding_mask` (B, T) bool, True = ignore (key 0 never);
`causal`: torch 1.13's layer has no is_causal, so the torch side passes src_mask =
ones(T, T, bool).triu(1) and the C++ side sets is_causal = true instead.

Dropout is left out on purpose: softgrad's counter-based mask cannot match PyTorch's RNG
(tests/test_layers.cpp checks its statistics, scaling and gradient instead).
Inputs and the weight w are rounded (4 decimals for float64, multiples of 2^-10 for
float32) so that they print short; outputs and gradients are printed exactly.
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
GEN = torch.Generator().manual_seed(20241105)


# ---- input makers (all draw from GEN, so the file is reproducible) ------------------------
def uniform(shape, lo=-1.0, hi=1.0, dtype=F64):
    return reftable.short(reftable.uniform(GEN, shape, lo, hi), dtype)


def normal(shape, scale=1.0, offset=0.0, dtype=F64):
    return reftable.short(offset + reftable.normal(GEN, shape, scale), dtype)


CASES = []


def add(name, fn, inputs, wrt):
    assert all(name != c.name for c in CASES), name
    dtype = next(v.dtype for v in inputs.values() if v.is_floating_point())
    assert name.endswith("_f32") == (dtype == F32), name
    CASES.append(reftable.Case(name, fn, inputs, wrt))


# ---- layer_norm ----------------------------------------------------------------------------
def layer_norm(name, shape, k, affine="both", eps=1e-5, scale=1.0, offset=0.0, dtype=F64):
    """x of `shape` normalized over its last k dims; affine: both, weight, none."""
    assert ("noaffine" in name) == (affine == "none") and ("weightonly" in name) == (affine == "weight"), name
    assert (f"_k{k}" in name) == (affine == "none"), name
    assert ("_eps" in name) == (eps != 1e-5), name
    normalized = tuple(shape[len(shape) - k:])
    inputs = {"x": normal(shape, scale, offset, dtype)}
    if affine != "none":
        inputs["weight"] = uniform(normalized, 0.5, 1.5, dtype)
    if affine == "both":
        inputs["bias"] = uniform(normalized, -0.5, 0.5, dtype)

    def fn(x, weight=None, bias=None):
        return torch.nn.functional.layer_norm(x, normalized, weight, bias, eps)

    add(name, fn, inputs, list(inputs))


layer_norm("layer_norm_rows", (4, 6), 1)
layer_norm("layer_norm_offset_rows", (3, 8), 1, scale=0.01, offset=50.0)  # tiny spread on a large mean
layer_norm("layer_norm_3d_over_2", (2, 3, 4), 2)
layer_norm("layer_norm_noaffine_k1", (5, 7), 1, affine="none")
layer_norm("layer_norm_noaffine_3d_k2", (2, 3, 5), 2, affine="none")
layer_norm("layer_norm_weightonly", (3, 5), 1, affine="weight")
layer_norm("layer_norm_1d_eps3", (9,), 1, eps=1e-3)
layer_norm("layer_norm_rows_f32", (6, 64), 1, dtype=F32)
layer_norm("layer_norm_long_rows_f32", (3, 300), 1, scale=2.0, offset=1.0, dtype=F32)
layer_norm("layer_norm_noaffine_k1_f32", (4, 19), 1, affine="none", dtype=F32)


# ---- embedding -----------------------------------------------------------------------------
def embedding(name, V, D, indices, padding_idx=None, dtype=F64):
    assert ("_pad" in name) == (padding_idx is not None), name
    assert padding_idx is None or f"_pad{padding_idx}" in name, name
    inputs = {"weight": normal((V, D), dtype=dtype), "indices": torch.tensor(indices, dtype=torch.int64)}

    def fn(weight, idx):
        return torch.nn.functional.embedding(idx, weight, padding_idx=padding_idx)

    add(name, fn, inputs, ["weight"])


embedding("embedding_1d_repeats", 6, 3, [4, 1, 4, 0, 4])
embedding("embedding_2d", 10, 4, [[1, 9, 3], [3, 3, 0]])
embedding("embedding_0d", 5, 2, 3)
embedding("embedding_2d_pad3", 6, 3, [[3, 1, 3], [5, 0, 3]], padding_idx=3)
embedding("embedding_3d_f32", 7, 5, [[[6, 0], [2, 2]], [[1, 6], [6, 3]]], dtype=F32)


# ---- gelu ----------------------------------------------------------------------------------
def gelu(name, shape, dtype=F64):
    approximate = "tanh" if "_tanh" in name else "none"
    add(name, lambda x: torch.nn.functional.gelu(x, approximate=approximate), {"x": normal(shape, 2.0, dtype=dtype)},
        ["x"])


gelu("gelu_erf", (4, 5))
gelu("gelu_tanh", (4, 5))
gelu("gelu_erf_f32", (3, 17), F32)
gelu("gelu_tanh_f32", (3, 17), F32)


# ---- TransformerEncoderLayer ---------------------------------------------------------------
PARAM_NAMES = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
               "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
               "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]


def encoder(name, E, H, F, B, T, norm_first=True, activation="gelu", kpm=False, causal=False, dtype=F64):
    assert f"_h{H}_" in name + "_" and f"_f{F}_" in name + "_", name
    assert ("prenorm" in name) == norm_first and ("postnorm" in name) == (not norm_first), name
    assert activation in name and ("causal" in name) == causal and ("padding" in name) == kpm, name
    inputs = {"x": normal((B, T, E), dtype=dtype)}
    if kpm:
        m = reftable.rand_bool(GEN, (B, T), 0.35)
        m[:, 0] = False  # every query keeps key 0 (also under the causal mask)
        inputs["key_padding_mask"] = m
    # Parameters: weights about PyTorch's scale, biases and norm parameters random.
    a = math.sqrt(6.0 / (4 * E))
    shapes = {"self_attn.in_proj_weight": ((3 * E, E), -a, a), "self_attn.in_proj_bias": ((3 * E,), -0.5, 0.5),
              "self_attn.out_proj.weight": ((E, E), -1 / math.sqrt(E), 1 / math.sqrt(E)),
              "self_attn.out_proj.bias": ((E,), -0.5, 0.5),
              "linear1.weight": ((F, E), -1 / math.sqrt(E), 1 / math.sqrt(E)), "linear1.bias": ((F,), -0.5, 0.5),
              "linear2.weight": ((E, F), -1 / math.sqrt(F), 1 / math.sqrt(F)), "linear2.bias": ((E,), -0.5, 0.5),
              "norm1.weight": ((E,), 0.5, 1.5), "norm1.bias": ((E,), -0.5, 0.5),
              "norm2.weight": ((E,), 0.5, 1.5), "norm2.bias": ((E,), -0.5, 0.5)}
    for p in PARAM_NAMES:
        shape, lo, hi = shapes[p]
        inputs[p] = uniform(shape, lo, hi, dtype)
    names = list(inputs)
    spec = dict(E=E, H=H, F=F, T=T, norm_first=norm_first, activation=activation, causal=causal, dtype=dtype)
    wrt = [k for k in names if k != "key_padding_mask"]
    add(name, lambda *leaves: run_encoder(spec, dict(zip(names, leaves))), inputs, wrt)


def run_encoder(spec, leaves):
    layer = torch.nn.TransformerEncoderLayer(spec["E"], spec["H"], spec["F"], dropout=0.0,
                                             activation=spec["activation"], batch_first=True,
                                             norm_first=spec["norm_first"], dtype=spec["dtype"])
    layer.train()
    assert [n for n, _ in layer.named_parameters()] == PARAM_NAMES
    src_mask = torch.ones((spec["T"], spec["T"]), dtype=torch.bool).triu(1) if spec["causal"] else None
    params = {p: leaves[p] for p in PARAM_NAMES}
    y = functional_call(layer, params, (leaves["x"],),
                        dict(src_mask=src_mask, src_key_padding_mask=leaves.get("key_padding_mask")))
    assert y.dtype == spec["dtype"]
    return y


encoder("encoder_prenorm_gelu_h2_f16", 8, 2, 16, B=2, T=5)
encoder("encoder_prenorm_gelu_causal_padding_h2_f12", 8, 2, 12, B=3, T=4, kpm=True, causal=True)
encoder("encoder_prenorm_gelu_h1_f8", 6, 1, 8, B=1, T=6)
encoder("encoder_postnorm_relu_padding_h3_f10", 6, 3, 10, B=2, T=5, norm_first=False, activation="relu", kpm=True)
encoder("encoder_postnorm_gelu_h2_f16", 8, 2, 16, B=2, T=3, norm_first=False)
encoder("encoder_prenorm_gelu_causal_h4_f24_f32", 16, 4, 24, B=2, T=7, causal=True, dtype=F32)


def main():
    # The weight w is drawn by this file's uniform, so it is rounded like the inputs.
    reftable.write_table(__file__, "layers_ops.txt", "layer_norm, embedding, gelu, TransformerEncoderLayer", CASES,
                         weight=uniform, floating_only=True)


if __name__ == "__main__":
    main()
