#!/usr/bin/python3
"""PyTorch's side of the bfloat16 checks (tests/test_bf16.cpp), written with plain struct +
json by the safetensors spec (Debian has no `safetensors` Python package; the writer is
gen_safetensors.py's).

    /usr/bin/python3 tests/reference/gen_bf16_safetensors.py

writes safetensors/torch_bf16.safetensors with
    src      F32 (64)   float32 values chosen to exercise rounding: bfloat16 values,
                        midpoints between neighbours (ties to even both ways), a float32
                        ulp either side of them, subnormals, the overflow threshold,
                        infinities and NaNs (quiet and signalling, both signs)
    rounded  BF16 (64)  src.bfloat16() as PyTorch computes it (round to nearest even)
    matrix   BF16 (2,3) a small matrix of bfloat16 values
and metadata {"written_by": "gen_bf16_safetensors.py"}. The test loads it, checks that
softgrad's to(kBFloat16) of `src` gives `rounded` bit for bit (NaNs: a quiet NaN with the
same sign, as PyTorch), and that `matrix` survives a save/load round trip byte for byte.

NOTE: PyTorch 1.13 converts float64 -> bfloat16 through float32 (two roundings), softgrad
rounds once, so float64 sources are not compared with PyTorch here.
"""
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_safetensors import write_safetensors  # noqa: E402


def f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def main():
    bits = []
    for b in [0x0000, 0x3f80, 0x3f81, 0x4049, 0x0001, 0x007f, 0x0080, 0x7f7f, 0x7f7e, 0xbf80, 0xbf81, 0xc2c8]:
        base = b << 16
        bits += [base, base | 0x8000, (base | 0x8000) - 1, (base | 0x8000) + 1]
    bits += [0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0xff812345, 0x7fffffff, 0x00000001,
             0x80000001, 0x7f7fffff, 0xff7fffff, 0x80000000, 0x3dcccccd, 0x3eaaaaab, 0x40490fdb, 0x3f7fffff]
    assert len(bits) == 64
    src = torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)
    rounded = src.bfloat16()
    matrix = torch.tensor([[1.0, -2.5, 3.14159], [1e-3, 65504.0, -0.0]]).bfloat16()
    path = os.path.join(HERE, "safetensors", "torch_bf16.safetensors")
    write_safetensors(path, {"src": src, "rounded": rounded, "matrix": matrix},
                      {"written_by": "gen_bf16_safetensors.py"})
    print("wrote", path)


if __name__ == "__main__":
    main()
