#!/usr/bin/python3
"""PyTorch's side of the safetensors checks (core/safetensors.h), without the `safetensors`
Python package (Debian has none): files are written and read here with plain struct + json
by the format's spec, the tensors' bytes taken from and given to torch.

Run with Debian's interpreter (python3-torch 1.13), from anywhere:

    /usr/bin/python3 tests/reference/gen_safetensors.py
        writes safetensors/torch_written.safetensors: torch tensors of every dtype torch 1.13
        can hold that the format names (F32, F64, I64, BOOL, F16, BF16, I32, I16, I8, U8),
        with 0-d, empty, non-contiguous (written row-major) and non-finite cases and
        metadata; and safetensors/torch_written.txt: each tensor as torch converts it to the
        softgrad dtype it loads as (F16 -> float32, integers -> int64; BF16 loads as bfloat16
        and the table holds its exact float32 widening, which the test compares), one case per
        tensor in the reference-table format (reftable.fmt_tensor; `output out ...` lines).
        tests/test_safetensors.cpp loads the file and compares it with the table.

    /usr/bin/python3 tests/reference/gen_safetensors.py --verify FILE
        checks a file softgrad wrote (the test "save: a file for the PyTorch-side check"
        leaves softgrad_written.safetensors in <build>/tests): the layout the reference
        writer produces (header padded with spaces to a multiple of 8, metadata first,
        tensors by descending dtype alignment then name, offsets tiling the data) and the
        values, read with torch.frombuffer, against softgrad_written_expected() below,
        which mirrors the C++ test. Not run by ctest (tests never need Python).

The output is deterministic (fixed generator seed).
"""
import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # reftable.py sits beside this script
import reftable

# The format's dtype names, in the reference implementation's enum order (its writer lays
# tensors out by this rank, highest first, then by name).
RANK = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
TORCH_DTYPE = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "F16": torch.float16,
    "BF16": torch.bfloat16, "I32": torch.int32, "F32": torch.float32, "F64": torch.float64, "I64": torch.int64,
}
FILE_DTYPE = {v: k for k, v in TORCH_DTYPE.items()}


def tensor_bytes(t):
    """Row-major little-endian bytes of t (any strides)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_safetensors(path, tensors, metadata):
    """The reference writer's layout: see the module docstring."""
    order = sorted(tensors.items(), key=lambda kv: (-RANK.index(FILE_DTYPE[kv[1].dtype]), kv[0].encode()))
    header, data, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for name, t in order:
        b = tensor_bytes(t)
        header[name] = {"dtype": FILE_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        data.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(data))
    return order


def read_safetensors(path):
    """Reads a file by the spec, checking the reference writer's layout; returns
    (metadata, {name: tensor}, [names in data order])."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    text = blob[8:8 + n]
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    assert text[:1] == b"{", "header does not start with '{'"
    body = text.rstrip(b" ")
    assert body.endswith(b"}"), "header padding is not spaces"
    pairs = json.loads(body, object_pairs_hook=lambda kv: kv)  # keeps order and repeats
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "a key appears twice"
    metadata = dict(pairs[0][1]) if keys and keys[0] == "__metadata__" else {}
    assert "__metadata__" not in keys[1:], "__metadata__ is not first"
    entries = [(k, dict(v)) for k, v in pairs if k != "__metadata__"]
    expected_order = sorted(entries, key=lambda kv: (-RANK.index(kv[1]["dtype"]), kv[0].encode()))
    assert [k for k, _ in entries] == [k for k, _ in expected_order], "tensors are not in the reference order"
    data = blob[8 + n:]
    tensors, offset = {}, 0
    for name, info in entries:
        begin, end = info["data_offsets"]
        assert begin == offset, f"{name}: offsets do not tile the data ({begin} != {offset})"
        dtype = TORCH_DTYPE[info["dtype"]]
        shape = info["shape"]
        numel = 1
        for d in shape:
            numel *= d
        assert end - begin == numel * torch.empty((), dtype=dtype).element_size(), f"{name}: size"
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape)
        offset = end
    assert offset == len(data), "trailing bytes after the last tensor"
    return metadata, tensors, [k for k, _ in entries]


# ---- torch_written.safetensors -------------------------------------------------------------
def torch_written():
    gen = torch.Generator().manual_seed(20240521)
    f32 = torch.float32
    return {
        "f32_matrix": torch.randn(3, 4, generator=gen, dtype=f32),
        "f32_specials": torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 1e-45, 3.4028234663852886e38,
                                      1.1754943508222875e-38], dtype=f32),
        "f32_transposed": torch.randn(4, 3, generator=gen, dtype=f32).t(),  # written row-major
        "f32_empty": torch.zeros(0, 3, dtype=f32),
        "f64_matrix": torch.randn(2, 3, generator=gen, dtype=torch.float64),
        "f64_scalar": torch.tensor(3.141592653589793, dtype=torch.float64),  # 0-d
        "i64_values": torch.tensor([-2**63, -1, 0, 1, 2**63 - 1], dtype=torch.int64),
        "bool_mask": torch.rand(2, 3, generator=gen) < 0.5,
        "f16_values": torch.cat([torch.randn(5, generator=gen).half(),
                                 torch.tensor([65504.0, -65504.0, 2.0**-24, 2.0**-14 - 2.0**-24, 2.0**-14,
                                               float("inf"), float("-inf"), float("nan"), -0.0], dtype=torch.float16)]),
        "bf16_values": torch.cat([torch.randn(5, generator=gen).bfloat16(),
                                  torch.tensor([3.3895313892515355e38, 2.0**-133, 1e-30, float("inf"), float("nan")],
                                               dtype=torch.bfloat16)]).reshape(2, 5),
        "i32_values": torch.tensor([-2**31, -1, 0, 2**31 - 1], dtype=torch.int32),
        "i16_values": torch.tensor([[-2**15, -1], [0, 2**15 - 1]], dtype=torch.int16),
        "i8_values": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
        "u8_values": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
    }


TORCH_WRITTEN_METADATA = {"format": "pt", "written_by": "gen_safetensors.py"}


def as_loaded(t):
    """t as softgrad loads it: float16 -> float32, integer types -> int64; bfloat16 (loaded as
    bfloat16) as its exact float32 widening, what the test compares."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    if t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        return t.long()
    return t


def generate():
    tensors = torch_written()
    out_dir = os.path.join(HERE, "safetensors")
    order = write_safetensors(os.path.join(out_dir, "torch_written.safetensors"), tensors, TORCH_WRITTEN_METADATA)
    # Read back by the spec: the bytes hold exactly what torch has.
    metadata, back, _ = read_safetensors(os.path.join(out_dir, "torch_written.safetensors"))
    assert metadata == TORCH_WRITTEN_METADATA
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        assert tensor_bytes(back[name]) == tensor_bytes(t), name  # bit-exact, NaN too
    lines = [
        "# softgrad safetensors reference: torch_written.safetensors as softgrad loads it (float16 and",
        "# bfloat16 -> float32, integers -> int64); generated by tests/reference/gen_safetensors.py",
        f"# with torch {torch.__version__}; do not edit by hand. One case per tensor, in the file's data order.",
    ]
    for name, t in order:
        lines += [f"case {name}", f"output out {reftable.fmt_tensor(as_loaded(t), nonfinite=True)}", "end"]
    with open(os.path.join(out_dir, "torch_written.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out_dir}/torch_written.safetensors and torch_written.txt: {len(order)} tensors", file=sys.stderr)


# ---- --verify: a file softgrad wrote ----------------------------------------------------------
def softgrad_written_expected():
    """Mirrors the test "save: a file for the PyTorch-side check" in tests/test_safetensors.cpp."""
    return {
        "weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25 - 1.0,
        "transposed": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
        "bias": torch.tensor([0.1, -2.5, 1e300], dtype=torch.float64),
        "steps": torch.tensor(7, dtype=torch.int64),
        "labels": torch.tensor([-5, 0, 2**62], dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 2, dtype=torch.float32),
    }, {"format": "pt", "epoch": "3"}


def verify(path):
    metadata, tensors, order = read_safetensors(path)
    want, want_metadata = softgrad_written_expected()
    assert metadata == want_metadata, f"metadata {metadata} != {want_metadata}"
    assert sorted(tensors) == sorted(want), f"names {sorted(tensors)} != {sorted(want)}"
    for name, t in want.items():
        got = tensors[name]
        assert got.dtype == t.dtype and got.shape == t.shape, f"{name}: {got.dtype} {got.shape} != {t.dtype} {t.shape}"
        assert torch.equal(got, t), f"{name}: {got} != {t}"
    print(f"{path}: OK ({len(order)} tensors in the reference layout: {', '.join(order)}; metadata {metadata})")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        verify(sys.argv[2])
    elif len(sys.argv) == 1:
        generate()
    else:
        sys.exit(__doc__)
