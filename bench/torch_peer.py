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
              max (over all elements, or over dim=D), matmul;
              softmax, log_softmax (forward along dim=D, default the last);
              softmax_bwd, log_softmax_bwd (the backward alone: each input set x becomes
              the saved output y = softmax(x) or log_softmax(x) and an upstream gradient
              g = rand, both made before timing; a call is one
              torch._softmax_backward_data / _log_softmax_backward_data, the function
              autograd's node calls, with no engine and no leaf accumulation around it);
              cross_entropy (forward + backward of F.cross_entropy, mean reduction, on
              logits of shape (N, C) with random int64 labels in [0, C) made before
              timing; a call is loss = F.cross_entropy(logits, labels); loss.backward(),
              the logits' gradient being dropped untimed after each call)
              sdpa, sdpa_fwdbwd (three shapes q k v, each (B, H, N, D); causal=0|1):
              scaled dot-product attention forward, or forward + backward with an
              upstream gradient made before timing (q, k, v gradients dropped untimed
              after each call). F.scaled_dot_product_attention where torch has it
              (2.0+); in 1.13 the math composition softmax(q k^T / sqrt(D) + mask) v,
              the causal mask a bool (Nq, Nk) tensor made before timing
    cycle=K   K input sets cut from one buffer K times the size, used in turn, so that
              inputs smaller than the cache are still read from memory on every call

Methodology (the same as bench_util.h on the C++ side): float32 inputs from torch.rand,
`warmup` untimed calls, then the median wall time of `reps` calls. Every call except add_
and fill_ allocates a fresh output, as softgrad ops do, and frees it inside the timed call
(cross_entropy keeps its gradient in logits.grad until the untimed reset after the call).

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
        "softmax": lambda x: torch.softmax(x, -1 if dim is None else dim),
        "log_softmax": lambda x: torch.log_softmax(x, -1 if dim is None else dim),
        "softmax_bwd": lambda y, g, d: torch._softmax_backward_data(g, y, d, y.dtype),
        "log_softmax_bwd": lambda y, g, d: torch._log_softmax_backward_data(g, y, d, y.dtype),
        "cross_entropy": cross_entropy_step,
        "sdpa": sdpa_forward,
        "sdpa_fwdbwd": sdpa_forward_backward,
    }
    if op not in ops:
        raise ValueError(f"unknown op {op!r} (known: {', '.join(ops)})")
    return ops[op]


# Ops whose timed call needs inputs prepared from the raw input set (x,): PREPARE[op](x, dim)
# returns the call's arguments, made once per set before timing; AFTER[op](*args) runs
# untimed after every call.
def prepare_softmax_bwd(forward):
    def prepare(x, dim):
        return forward(x, dim), torch.rand_like(x), dim
    return prepare


def prepare_cross_entropy(x, dim):
    if x.dim() != 2:
        raise ValueError(f"cross_entropy wants an (N, C) shape, got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(0)
    return x.requires_grad_(), torch.randint(0, x.shape[1], (x.shape[0],), generator=gen)


def cross_entropy_step(logits, labels):
    with torch.enable_grad():
        torch.nn.functional.cross_entropy(logits, labels).backward()


def drop_grad(logits, labels):
    logits.grad = None


def sdpa(q, k, v, causal_mask):
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal_mask is not None)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / q.shape[-1] ** 0.5)
    if causal_mask is not None:
        scores = scores.masked_fill(causal_mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


def sdpa_forward(q, k, v, causal_mask):
    sdpa(q, k, v, causal_mask)


def sdpa_forward_backward(q, k, v, causal_mask, grad):
    with torch.enable_grad():
        sdpa(q, k, v, causal_mask).backward(grad)


def prepare_sdpa(backward):
    def prepare(q, k, v, opts):
        nq, nk = q.shape[-2], k.shape[-2]
        causal = None
        if opts.get("causal", 0):  # True above the diagonal: the keys a query may not see
            causal = torch.ones(nq, nk, dtype=torch.bool).triu(1)
        if not backward:
            return q, k, v, causal
        grad = torch.rand(q.shape[:-1] + (v.shape[-1],))
        return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), causal, grad
    return prepare


def drop_qkv_grads(q, k, v, *rest):
    q.grad = k.grad = v.grad = None


PREPARE = {
    "softmax_bwd": prepare_softmax_bwd(torch.softmax),
    "log_softmax_bwd": prepare_softmax_bwd(torch.log_softmax),
    "cross_entropy": prepare_cross_entropy,
}
# Like PREPARE, for ops of several inputs: PREPARE_MULTI[op](*input_set, opts).
PREPARE_MULTI = {"sdpa": prepare_sdpa(False), "sdpa_fwdbwd": prepare_sdpa(True)}
AFTER = {"cross_entropy": drop_grad, "sdpa_fwdbwd": drop_qkv_grads}


def median_ms(fn, reps, warmup, after=None):
    """`after`, if given, runs untimed after every call (warm-up ones too)."""
    for _ in range(warmup):
        fn()
        if after:
            after()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()  # the result is dropped (and freed) before the clock is read again
        times.append((time.perf_counter() - t0) * 1e3)
        if after:
            after()
    return statistics.median(times)


def run_spec(spec, reps, warmup):
    tokens = spec.split()
    if not tokens:
        raise ValueError("empty spec")
    op, shapes, opts = tokens[0], [], {}
    for tok in tokens[1:]:
        if "=" in tok:
            key, value = tok.split("=", 1)
            if key not in ("dim", "cycle", "reps", "warmup", "causal"):
                raise ValueError(f"unknown option {key!r}")
            opts[key] = int(value)
        else:
            shapes.append(parse_shape(tok))
    fn = make_op(op, opts.get("dim"))
    cycle = opts.get("cycle", 1)
    if op in SHAPE_OPS:  # they take the shape itself: no input tensor to make
        return median_ms(lambda: fn(shapes[0][0]), opts.get("reps", reps), opts.get("warmup", warmup))
    inputs = list(zip(*(make_input(s, t, cycle) for s, t in shapes)))  # cycle tuples
    if op in PREPARE_MULTI:
        with torch.no_grad():
            inputs = [PREPARE_MULTI[op](*xs, opts) for xs in inputs]
    elif op in PREPARE:
        if len(shapes) != 1:
            raise ValueError(f"{op} takes one shape")
        dim = opts.get("dim", -1)
        with torch.no_grad():
            inputs = [PREPARE[op](x, dim) for (x,) in inputs]
    state = {"i": 0}

    def call():
        fn(*inputs[state["i"] % cycle])
        state["i"] += 1

    after = None
    if op in AFTER:
        def after():
            AFTER[op](*inputs[(state["i"] - 1) % cycle])

    return median_ms(call, opts.get("reps", reps), opts.get("warmup", warmup), after)


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
    sdpa_path = ("F.scaled_dot_product_attention" if hasattr(torch.nn.functional, "scaled_dot_product_attention")
                 else "the math composition softmax(q k^T / sqrt(D)) v")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} after {args.warmup} warm-up unless the spec says otherwise; "
          f"sdpa: {sdpa_path}", flush=True)
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
