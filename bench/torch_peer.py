#!/usr/bin/python3
"""PyTorch side of the softgrad benchmarks: times the same ops on the same shapes.

    /usr/bin/python3 bench/torch_peer.py [--threads 2] [--reps 9] [--warmup 1] [SPEC ...]

Run it with Debian's /usr/bin/python3 (python3-torch); the bench/*.cpp programs start it
once and send it each row's spec on stdin right after timing their own side, so that both
sides of a row run within a second of each other (this machine's memory bandwidth drifts
over seconds). Specs come as arguments, or one per line on stdin when there are none, each
answered as soon as it arrives:

    OP SHAPE [SHAPE] [dim=D] [cycle=K] [reps=R] [warmup=W]

    SHAPE     dims joined by 'x' (4096x4096); a leading 't' means the tensor is stored
              with its last two dims swapped and passed as a transposed view, so
              t784x128 is a (784, 128) view of a (128, 784) buffer
    OP        add (two shapes, broadcasting), add_ (in place into the first), exp,
              empty, full (a new tensor of ones), fill_ (in place), sum, mean, var,
              max (over all elements, or over dim=D), matmul
    cycle=K   K input sets cut from one buffer K times the size, used in turn, so that
              inputs smaller than the cache are still read from memory on every call

Methodology (the same as bench_util.h on the C++ side): float32 inputs from torch.rand,
`warmup` untimed calls, then the median wall time of `reps` calls. Every call except add_
and fill_ allocates a fresh output, as softgrad ops do, and frees it inside the timed call.

Output: '# ...' comment lines, then one line per spec in input order: `MEDIAN_MS<TAB>SPEC`.
"""
import argparse
import statistics
import sys
import time

import torch


def parse_shape(token):
    transposed = token.startswith("t")
    dims = tuple(int(d) for d in token[1 if transposed else 0:].split("x"))
    if transposed and len(dims) < 2:
        raise ValueError(f"transposed shape {token!r} needs at least two dims")
    return dims, transposed


def make_input(shape, transposed, cycle):
    """`cycle` tensors of the (logical) shape, cut from one buffer."""
    stored = shape[:-2] + (shape[-1], shape[-2]) if transposed else shape
    numel = 1
    for d in stored:
        numel *= d
    base = torch.rand(cycle * numel, dtype=torch.float32)
    views = [base[i * numel:(i + 1) * numel].view(stored) for i in range(cycle)]
    return [v.transpose(-1, -2) if transposed else v for v in views]


def reduction(fn_all, fn_dim, dim):
    if dim is None:
        return lambda x: fn_all(x)
    return lambda x: fn_dim(x, dim)


SHAPE_OPS = ("empty", "full")


def make_op(op, dim):
    ops = {
        "add": lambda a, b: torch.add(a, b),
        "add_": lambda a, b: a.add_(b),
        "exp": lambda x: torch.exp(x),
        "fill_": lambda x: x.fill_(1.0),
        "empty": lambda shape: torch.empty(shape, dtype=torch.float32),
        "full": lambda shape: torch.full(shape, 1.0, dtype=torch.float32),
        "sum": reduction(torch.sum, torch.sum, dim),
        "mean": reduction(torch.mean, torch.mean, dim),
        "var": reduction(torch.var, torch.var, dim),
        "max": reduction(torch.max, lambda x, d: torch.max(x, d).values, dim),
        "matmul": lambda a, b: torch.matmul(a, b),
    }
    if op not in ops:
        raise ValueError(f"unknown op {op!r} (known: {', '.join(ops)})")
    return ops[op]


def median_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()  # the result is dropped (and freed) before the clock is read again
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run_spec(spec, reps, warmup):
    tokens = spec.split()
    if not tokens:
        raise ValueError("empty spec")
    op, shapes, opts = tokens[0], [], {}
    for tok in tokens[1:]:
        if "=" in tok:
            key, value = tok.split("=", 1)
            if key not in ("dim", "cycle", "reps", "warmup"):
                raise ValueError(f"unknown option {key!r}")
            opts[key] = int(value)
        else:
            shapes.append(parse_shape(tok))
    fn = make_op(op, opts.get("dim"))
    cycle = opts.get("cycle", 1)
    if op in SHAPE_OPS:  # they take the shape itself: no input tensor to make
        return median_ms(lambda: fn(shapes[0][0]), opts.get("reps", reps), opts.get("warmup", warmup))
    inputs = list(zip(*(make_input(s, t, cycle) for s, t in shapes)))  # cycle tuples
    state = {"i": 0}

    def call():
        args = inputs[state["i"] % cycle]
        state["i"] += 1
        fn(*args)

    return median_ms(call, opts.get("reps", reps), opts.get("warmup", warmup))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("specs", nargs="*")
    args = parser.parse_args()
    # From stdin, each spec is answered as soon as its line arrives: the benches keep this
    # process open and ask for each row right after timing their own side.
    specs = args.specs or (line.strip() for line in sys.stdin)

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} after {args.warmup} warm-up unless the spec says otherwise", flush=True)
    for spec in specs:
        if not spec:
            continue
        try:
            ms = run_spec(spec, args.reps, args.warmup)
        except (ValueError, RuntimeError) as e:
            sys.exit(f"torch_peer.py: spec {spec!r}: {e}")
        print(f"{ms:.4f}\t{spec}", flush=True)


if __name__ == "__main__":
    main()
