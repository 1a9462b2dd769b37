#!/usr/bin/python3
"""Writes the IDX seed corpus in corpus/idx/ (standard library only; run from anywhere):
small valid files, raw and gzip, shaped like MNIST's images and labels, so the fuzzer
starts from inputs that reach every part of the reader."""
import gzip
import math
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "idx")


def idx(dims, data):
    assert len(data) == math.prod(dims)
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        "labels_5": idx([5], [0, 1, 9, 4, 255]),
        "images_2x3x3": idx([2, 3, 3], list(range(18))),
        "one_1x1x1x1": idx([1, 1, 1, 1], [7]),
        "wide_1x40": idx([1, 40], [i * 6 for i in range(40)]),
    }
    for name, raw in list(seeds.items()):
        seeds[name + ".gz"] = gzip.compress(raw, mtime=0)
    # Two gzip members back to back: one stream to the reader.
    raw = seeds["images_2x3x3"]
    seeds["two_members.gz"] = gzip.compress(raw[:10], mtime=0) + gzip.compress(raw[10:], mtime=0)
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {OUT}")


if __name__ == "__main__":
    main()
