#!/usr/bin/python3
"""PyTorch side of the softgrad benchmarks: times the same ops on the same shapes.

    /usr/bin/python3 bench/torch_peer.py [--threads 2] [--reps 9] [--warmup 1] [SPEC ...]

Run it with Debian's /usr/bin/python3 (python3-torch); the bench/*.cpp programs start it
once and send it each row's spec on stdin right after timing their own side, so that both
sides of a row run within a second of each other (this machine's memory bandwidth drifts
over seconds). Specs come as arguments, or one per line on stdin when there are none, each
answered as soon as it arrives:

    OP SHAPE [SHAPE] [dim=D] [cycle=K] [reps=R] [warmup=W] [autocast=0|1]

    SHAPE     dims joined by 'x' (4096x4096); a leading 't' means the tensor is stored
              with its last two dims swapped and passed as a transposed view, so
              t784x128 is a (784, 128) view of a (128, 784) buffer
    OP        add (two shapes, broadcasting), add_ (in place into the first), exp, gelu (erf),
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
              conv2d, conv2d_fwdbwd (two shapes x (N, C, H, W) and w (O, C/groups, kh, kw);
              stride=S padding=P groups=G): F.conv2d with a bias (O) forward, or forward +
              backward with an upstream gradient made before timing (x, w, b gradients
              dropped untimed after each call)
    autocast=1  the call under torch.autocast("cpu", dtype=torch.bfloat16) (inputs float32)
    cycle=K   K input sets cut from one buffer K times the size, used in turn, so that
              inputs smaller than the cache are still read from memory on every call

Training epochs on real MNIST (bench_train.cpp), a spec of their own:

    mlp_epoch|vit_epoch|cnn_epoch data=DIR [batch=128] [steps=S] [warmup_steps=10] [epochs=1] [seed=0]
                        [autocast=0]   (1: forward and loss under torch.autocast("cpu",
                                       dtype=torch.bfloat16); weights and optimizer float32)

    mlp_epoch  784-512-256-10 ReLU nn.Sequential (examples/models.h make_mlp), AdamW lr 1e-3
               weight decay 1e-2
    vit_epoch  models::VisionTransformer [patch=4] [depth=2] [mean_pool=0]: Linear patch
               embedding of the patch x patch patches (patch (i, j) is token side i + j), a
               zero-initialized class token prepended (or, with mean_pool=1, none and the
               tokens averaged at the end), a learned position embedding (normal, std 0.02)
               added, `depth` nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0,
               activation='gelu', batch_first=True, norm_first=True), LayerNorm, Linear head;
               AdamW lr 1e-3 weight decay 5e-2
    cnn_epoch  examples/models.h make_cnn: Unflatten to (B, 1, 28, 28), two blocks of
               Conv2d(3x3, padding 1, no bias) - BatchNorm2d - ReLU - MaxPool2d(2) (32 and 64
               channels), Flatten, Linear(3136, 128), ReLU, Dropout(0.25), Linear to 10;
               AdamW lr 1e-3 weight decay 1e-2
    Both as examples/trainer.h trains them: the training split's IDX files in DIR (raw
    preferred, else .gz) read with numpy, pixel / 255 normalized with MNIST's mean 0.1307
    and std 0.3081; a step is logits = model(x); loss = F.cross_entropy(logits, y);
    opt.zero_grad(set_to_none=True) (softgrad's zero_grad drops gradients the same way);
    loss.backward(); opt.step(); sched.step(); loss.item(). The schedule is the trainers'
    default: LambdaLR warmup-cosine (optim/lr_scheduler.h WarmupCosine) with one epoch of
    warmup in a 10-epoch run. Batches are gathered with index_select in the order of
    torch.randperm(N) seeded with seed + epoch, a new order every epoch, the last batch
    partial. `warmup_steps` untimed steps run first (epoch 0's order), then `epochs` epochs
    (1, 2, ...) are timed, each whole or, with steps=S, its first S steps scaled to the
    epoch by samples (S x batch of N). Answer: the median epoch time in ms. The mean
    training loss of the timed steps goes to stderr, to show the model trains.

Data-parallel training steps, the same models and recipe as mlp_epoch / vit_epoch:

    ddp mlp|vit data=DIR world=W [batch=128] [steps=50] [warmup_steps=10] [autocast=0] [seed=0]
                                 [patch=4] [depth=2] [mean_pool=0]   (vit's model options)

    world=1   one process (this one), no DDP, --threads threads
    world=W   W processes (torch.multiprocessing, spawn), each with max(1, threads // W)
              threads, init_process_group("gloo") over tcp://127.0.0.1 on a free port, the
              model built under manual_seed(seed) on every rank and wrapped in
              DistributedDataParallel (defaults: bucket_cap_mb=25)
    batch     the global batch, which W must divide: global step i takes the i-th full batch
              (the partial last one skipped, wrapping to the next epoch's order, randperm
              seeded with seed + epoch) and rank r its positions r, r + W, r + 2W, ...; the
              step, its autocast and the schedule (steps per epoch from the global batch) are
              mlp_epoch's. `warmup_steps` untimed steps, then `steps` timed on rank 0 between
              two barriers (so every rank's last step is in). Answer: mean ms per step. Rank
              0's mean training loss (of its shards) and the setup go to stderr; a failed
              process becomes this spec's error with its traceback, all of it times out after
              600 s.

Inference over a test set, float32 and int8 (bench_quant.cpp), a spec of its own:

    infer mlp|vit CKPT data=DIR [batch=256]

    CKPT      a checkpoint of mnist_mlp or mnist_transformer --save, softgrad's safetensors
              read directly (8-byte little-endian header length, JSON header, raw
              little-endian data; no safetensors package). The model is built from its
              metadata as examples/models.h load_checkpoint_model builds it: "model.hidden"
              for make_mlp; "model.patch", "model.dim", "model.depth", "model.heads",
              "model.mlp_ratio", "model.pool" (cls | mean) for VisionTransformer. Its weights
              are the tensors without a '/' in their name (the rest is training state).
              softgrad names parameters as PyTorch does, so each one loads into the torch
              parameter of the same name; a name missing on either side, another shape or a
              dtype other than F32 is an error.
    DIR       the data set's IDX files (as for mlp_epoch); the test split (t10k-*) is read,
              pixel / 255 normalized as the trainers do (float32) with the mean and std of the
              checkpoint's "dataset": mnist 0.1307, 0.3081; fashion 0.2860, 0.3530.
    batch     images per forward call: the test set in order, in contiguous slices, the last
              one partial (softgrad's DataLoader, no shuffle).
    One pass of model(x) (eval mode, no grad) over the test set, timed whole, then one of
    torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8), PyTorch's
    int8 inference for Linear layers: weights quantized ahead of time (per tensor), each
    input quantized on the fly from its own range, the product in int8 on the quantized
    engine (fbgemm in PyTorch's x86 wheels; Debian's 1.13 is built without fbgemm and runs
    onednn; the first line says which). Only the Linear GEMMs run int8: attention (its
    in-projection is a bare parameter, out_proj a NonDynamicallyQuantizableLinear, both left
    float by quantize_dynamic), softmax, LayerNorm, GELU and the position embedding stay
    float32.
    NOTE: the float ViT runs nn.TransformerEncoderLayer's inference fast path
    (torch._transformer_encoder_layer_fwd), the int8 one its module-by-module path: the fast
    path's checks read linear1.weight as a tensor and fail on a quantized Linear
    (pytorch/pytorch#109987), so it is switched off in the quantized copy. NOTE: on onednn
    every call of a quantized Linear creates new oneDNN reorder primitives (the input's
    scale is baked into them: ONEDNN_VERBOSE=2 shows cache misses on every call), a fixed
    cost per call that dominates at batch 1. Building,
    loading, quantizing and reading the data happen once per checkpoint, untimed. Answer:
    `FP32_ACC FP32_S INT8_ACC INT8_S<TAB>SPEC`, accuracies in percent of the test set, times
    in seconds for all of it. Which Linear layers run int8 goes to stderr.

Methodology (the same as bench_util.h on the C++ side): float32 inputs from torch.rand,
`warmup` untimed calls, then the median wall time of `reps` calls. Every call except add_
and fill_ allocates a fresh output, as softgrad ops do, and frees it inside the timed call
(cross_entropy keeps its gradient in logits.grad until the untimed reset after the call).

Output: '# ...' comment lines, then one line per spec in input order: `MEDIAN_MS<TAB>SPEC`
(ddp: the mean ms per step; infer: `FP32_ACC FP32_S INT8_ACC INT8_S<TAB>SPEC`).
"""
import argparse
import gzip
import json
import math
import os
import statistics
import sys
import time

import numpy as np
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
        "gelu": lambda x: torch.nn.functional.gelu(x),  # approximate='none' (erf), as sg::gelu
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
        "conv2d": conv2d_forward,
        "conv2d_fwdbwd": conv2d_forward_backward,
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


def prepare_conv2d(backward):
    def prepare(x, w, opts):
        b = torch.rand(w.shape[0])
        conv = dict(stride=opts.get("stride", 1), padding=opts.get("padding", 0), groups=opts.get("groups", 1))
        if not backward:
            return x, w, b, conv
        grad = torch.rand_like(torch.nn.functional.conv2d(x, w, b, **conv))
        return x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), conv, grad
    return prepare


def conv2d_forward(x, w, b, conv):
    torch.nn.functional.conv2d(x, w, b, **conv)


def conv2d_forward_backward(x, w, b, conv, grad):
    with torch.enable_grad():
        torch.nn.functional.conv2d(x, w, b, **conv).backward(grad)


def drop_conv_grads(x, w, b, *rest):
    x.grad = w.grad = b.grad = None


PREPARE = {
    "softmax_bwd": prepare_softmax_bwd(torch.softmax),
    "log_softmax_bwd": prepare_softmax_bwd(torch.log_softmax),
    "cross_entropy": prepare_cross_entropy,
}
# Like PREPARE, for ops of several inputs: PREPARE_MULTI[op](*input_set, opts).
PREPARE_MULTI = {"sdpa": prepare_sdpa(False), "sdpa_fwdbwd": prepare_sdpa(True), "conv2d": prepare_conv2d(False),
                 "conv2d_fwdbwd": prepare_conv2d(True)}
AFTER = {"cross_entropy": drop_grad, "sdpa_fwdbwd": drop_qkv_grads, "conv2d_fwdbwd": drop_conv_grads}


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


# ---- the data sets' IDX files; training epochs on MNIST (mlp_epoch, vit_epoch) ---------

# (mean, std) of each data set's training pixels in [0, 1]: data/dataset.h's kMnistNormalize
# and kFashionMnistNormalize, what the trainers normalize with.
NORMALIZE = {"mnist": (0.1307, 0.3081), "fashion": (0.2860, 0.3530)}
_split_cache = {}


def read_idx(directory, name, magic, ndim):
    """An IDX file of unsigned bytes as a numpy array; `name` raw, else `name`.gz."""
    path = os.path.join(directory, name)
    opener = open
    if not os.path.exists(path):
        path, opener = path + ".gz", gzip.open
    with opener(path, "rb") as f:
        raw = f.read()
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (magic {raw[:4].hex()})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != math.prod(dims):
        raise ValueError(f"{path}: {len(raw) - header} data bytes for dims {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(directory, split="train", dataset="mnist"):
    """(images (N, 28, 28) float32 normalized, labels (N) int64) of a split ("train" or
    "t10k"), read once. Normalized as softgrad does it, in float32: pixel / 255, then
    (x - mean) / std with the data set's NORMALIZE."""
    key = (directory, split, dataset)
    if key not in _split_cache:
        images = read_idx(directory, f"{split}-images-idx3-ubyte", 0x803, 3)
        labels = read_idx(directory, f"{split}-labels-idx1-ubyte", 0x801, 1)
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise ValueError(f"{directory}: images {images.shape} and labels {labels.shape} do not match")
        mean, std = (np.float32(v) for v in NORMALIZE[dataset])
        x = (images.astype(np.float32) / np.float32(255.0) - mean) / std
        _split_cache[key] = (torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64)))
    return _split_cache[key]


def make_mlp(hidden=(512, 256)):
    """examples/models.h make_mlp: Linear + ReLU per hidden width, then a Linear to 10 classes."""
    nn = torch.nn
    layers, width = [], 28 * 28
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


class VisionTransformer(torch.nn.Module):
    """examples/models.h's VisionTransformer (dim 64, 4 heads, MLP ratio 4)."""

    def __init__(self, patch=4, dim=64, depth=2, heads=4, mlp_ratio=4, mean_pool=0):
        super().__init__()
        nn = torch.nn
        self.patch, self.side, self.mean_pool = patch, 28 // patch, bool(mean_pool)
        tokens = self.side * self.side
        self.patch_embed = nn.Linear(patch * patch, dim)
        self.cls_token = None if self.mean_pool else nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + (0 if self.mean_pool else 1), dim) * 0.02)
        self.layers = nn.Sequential(*[
            nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, images):  # (B, 28, 28) -> (B, 10)
        B, S, P = images.shape[0], self.side, self.patch
        # (B, S, P, S, P) -> (B, S, S, P, P) -> (B, T, P*P): patch (i, j) is token i * S + j.
        patches = images.reshape(B, S, P, S, P).permute(0, 1, 3, 2, 4).reshape(B, S * S, P * P)
        x = self.patch_embed(patches)
        if not self.mean_pool:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], 1)
        x = self.norm(self.layers(x + self.pos_embed))
        return self.head(x.mean(1) if self.mean_pool else x[:, 0])


def warmup_cosine(warmup, total):
    """WarmupCosine's factor of the base lr (optim/lr_scheduler.h, eta_min 0, default start factor)."""
    def factor(t):
        if t < warmup:
            return (t + 1) / (warmup + 1)
        if t <= total:
            return 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
        return 0.0
    return factor


def make_cnn(channels=(32, 64), hidden=128, dropout=0.25):
    """examples/models.h make_cnn: per width Conv2d 3x3 (padding 1, no bias), BatchNorm2d, ReLU,
    MaxPool2d(2); Flatten; Linear(., hidden), ReLU, Dropout; Linear head. Input (B, 28, 28)."""
    nn = torch.nn
    layers, width, side = [nn.Unflatten(1, (1, 28))], 1, 28
    for c in channels:
        layers += [nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        width, side = c, side // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, 10))


EPOCH_MODELS = {"mlp_epoch": (make_mlp, 1e-2, (784,)), "vit_epoch": (VisionTransformer, 5e-2, (28, 28)),
                "cnn_epoch": (make_cnn, 1e-2, (28, 28))}


def parse_train_options(op, tokens, opts, name=None):
    """Reads data=DIR and KEY=INT options of a training spec (`opts` updated in place, the
    ViT's model options added for vit_epoch; `name` the spec's, in errors): (data, model_opts)."""
    name = name or op
    model_opts = {"patch": 4, "depth": 2, "mean_pool": 0} if op == "vit_epoch" else {}
    data = None
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep or (key not in opts and key not in model_opts and key != "data"):
            raise ValueError(f"{name} takes data=DIR and options {', '.join(list(opts) + list(model_opts))}, not {tok!r}")
        if key == "data":
            data = value
        elif key in model_opts:
            model_opts[key] = int(value)
        else:
            opts[key] = int(value)
    if data is None:
        raise ValueError(f"{name} needs data=DIR (the directory of MNIST's IDX files)")
    return data, model_opts


def load_train_split(op, data):
    """The training split, each image shaped as the model of `op` takes it."""
    x, y = load_split(data)
    return x.reshape((x.shape[0],) + EPOCH_MODELS[op][2]), y


def make_trainer(op, model_opts, seed, steps_per_epoch):
    """(model, AdamW, LambdaLR warmup-cosine) as the trainers set them up, built under manual_seed(seed)."""
    make_model, weight_decay, _ = EPOCH_MODELS[op]
    torch.manual_seed(seed)
    model = make_model(**model_opts)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    total = 10 * steps_per_epoch  # the trainers' default: 10 epochs, one of warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(min(total // 2, steps_per_epoch), total))
    return model, opt, sched


def train_step(model, opt, sched, xb, yb, autocast):
    """One training step of the trainers' recipe: the loss as a float."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(autocast)):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def run_epoch_spec(op, tokens):
    # autocast=1: forward and loss under torch.autocast("cpu", dtype=torch.bfloat16), the
    # recipe PyTorch documents for CPU mixed precision (weights and optimizer stay float32).
    opts = {"batch": 128, "steps": 0, "warmup_steps": 10, "epochs": 1, "seed": 0, "autocast": 0}
    data, model_opts = parse_train_options(op, tokens, opts)
    x, y = load_train_split(op, data)
    n, batch = x.shape[0], opts["batch"]
    steps_per_epoch = -(-n // batch)
    steps = min(opts["steps"] or steps_per_epoch, steps_per_epoch)
    model, opt, sched = make_trainer(op, model_opts, opts["seed"], steps_per_epoch)

    def run_steps(epoch, count):
        """`count` training steps in epoch `epoch`'s order: (samples, loss sum)."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(opts["seed"] + epoch))
        samples, loss_sum = 0, 0.0
        for i in range(count):
            idx = order[i * batch:(i + 1) * batch]
            loss_sum += train_step(model, opt, sched, x.index_select(0, idx), y.index_select(0, idx),
                                   opts["autocast"]) * len(idx)
            samples += len(idx)
        return samples, loss_sum

    with torch.enable_grad():
        run_steps(0, min(opts["warmup_steps"], steps_per_epoch))
        epoch_ms, losses = [], []
        for epoch in range(1, opts["epochs"] + 1):
            t0 = time.perf_counter()
            samples, loss_sum = run_steps(epoch, steps)
            epoch_ms.append((time.perf_counter() - t0) * 1e3 * n / samples)
            losses.append(loss_sum / samples)
    model_desc = "".join(f" {k}={v}" for k, v in model_opts.items()) + (" autocast=bf16" if opts["autocast"] else "")
    print(f"torch_peer.py: {op}{model_desc}: {steps} of {steps_per_epoch} steps timed per epoch, mean training loss "
          f"{', '.join(f'{l:.4f}' for l in losses)}", file=sys.stderr, flush=True)
    return statistics.median(epoch_ms)


# ---- data-parallel training steps (ddp) ---------------------------------------------

DDP_TIMEOUT_S = 600


def run_ddp_spec(tokens):
    if not tokens or tokens[0] not in ("mlp", "vit"):
        raise ValueError("ddp takes mlp|vit data=DIR world=W [options]")
    op = tokens[0] + "_epoch"
    opts = {"world": 0, "batch": 128, "steps": 50, "warmup_steps": 10, "autocast": 0, "seed": 0}
    data, model_opts = parse_train_options(op, tokens[1:], opts, f"ddp {tokens[0]}")
    world, batch = opts.pop("world"), opts["batch"]
    if world < 1 or batch < 1 or batch % world or opts["steps"] < 1:
        raise ValueError(f"ddp needs world=W >= 1 dividing batch={batch} and steps >= 1 (world={world}, "
                         f"steps={opts['steps']})")
    config = dict(opts, op=op, data=data, model_opts=model_opts)
    threads = torch.get_num_threads() if world == 1 else max(1, torch.get_num_threads() // world)
    if world == 1:
        ms, loss = ddp_worker(0, 1, threads, None, config, None)
    else:
        ms, loss = spawn_ddp(world, threads, config)
    setup = f"torch DDP gloo, {world} processes x {threads} threads" if world > 1 else \
        f"torch, 1 process x {threads} threads (no DDP)"
    print(f"torch_peer.py: ddp {' '.join(tokens)}: {setup}; mean training loss {loss:.4f} (rank 0's "
          f"shards of the {opts['steps']} timed steps)", file=sys.stderr, flush=True)
    return ms


def spawn_ddp(world, threads, config):
    """Runs ddp_worker in `world` spawned processes: rank 0's (ms per step, loss). A failed
    process becomes a RuntimeError with its traceback (the others are terminated)."""
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(ddp_worker, (world, threads, port, config, queue), nprocs=world, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + DDP_TIMEOUT_S
    try:
        while not context.join(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"ddp: the {world} processes did not finish in {DDP_TIMEOUT_S} s")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        raise RuntimeError(f"ddp: a process failed: {e}") from None
    finally:
        for p in context.processes:
            if p.is_alive():
                p.terminate()
            p.join()
    return queue.get()


def ddp_worker(rank, world, threads, port, config, queue):
    """Rank `rank` of a ddp spec's training (all of it when world is 1, without DDP). Rank 0
    returns, and puts on `queue` if given, (mean ms per timed step, mean loss of its shards)."""
    torch.set_num_threads(threads)
    dist = torch.distributed
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y = load_train_split(config["op"], config["data"])
        n, batch, seed = x.shape[0], config["batch"], config["seed"]
        warmup, steps = config["warmup_steps"], config["steps"]
        model, opt, sched = make_trainer(config["op"], config["model_opts"], seed, -(-n // batch))
        net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        # Global step i takes full batch i % per_epoch of the order of epoch i // per_epoch
        # (randperm seeded with seed + epoch); this rank its positions rank, rank + world, ...
        per_epoch = n // batch
        if per_epoch == 0:
            raise ValueError(f"ddp: batch={batch} is more than the {n} training samples")
        orders = [torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))
                  for e in range((warmup + steps - 1) // per_epoch + 1)]
        shards = [orders[i // per_epoch][i % per_epoch * batch:(i % per_epoch + 1) * batch][rank::world]
                  for i in range(warmup + steps)]

        def run(idx):
            return train_step(net, opt, sched, x.index_select(0, idx), y.index_select(0, idx), config["autocast"])

        with torch.enable_grad():
            for idx in shards[:warmup]:
                run(idx)
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            losses = [run(idx) for idx in shards[warmup:]]
            if world > 1:
                dist.barrier()  # every rank's last step is in
            result = (time.perf_counter() - t0) * 1e3 / steps, sum(losses) / steps
    finally:
        if world > 1:
            dist.destroy_process_group()
    if queue is not None and rank == 0:
        queue.put(result)
    return result


# ---- inference over the test set, float32 and int8 (infer) -----------------------------

def read_checkpoint(path):
    """A softgrad checkpoint: (metadata, {name: float32 tensor}) of its model weights.

    safetensors: an 8-byte little-endian header length, a JSON header mapping each name to
    {dtype, shape, data_offsets: [begin, end) in the data}, plus "__metadata__" (str: str),
    then the raw little-endian data. Names with a '/' (optimizer/..., scheduler/...) are
    training state and skipped, as load_checkpoint_model skips them."""
    with open(path, "rb") as f:
        raw = f.read()
    header_len = int.from_bytes(raw[:8], "little")
    if len(raw) < 8 or 8 + header_len > len(raw):
        raise ValueError(f"{path}: not a safetensors file (header length {header_len}, file {len(raw)} bytes)")
    header = json.loads(raw[8:8 + header_len])
    metadata = header.pop("__metadata__", {})
    data = memoryview(raw)[8 + header_len:]
    weights = {}
    for name, entry in header.items():
        if "/" in name:
            continue
        if entry["dtype"] != "F32":
            raise ValueError(f"{path}: weight {name} is {entry['dtype']}, not F32")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not 0 <= begin <= end <= len(data) or end - begin != 4 * math.prod(shape):
            raise ValueError(f"{path}: weight {name} of shape {shape} has data_offsets [{begin}, {end})")
        weights[name] = torch.from_numpy(np.frombuffer(data[begin:end], dtype="<f4").reshape(shape).copy())
    return metadata, weights


def make_checkpoint_model(kind, meta, path):
    """The torch twin of load_checkpoint_model's model, from the checkpoint's metadata."""
    def field(key):
        if key not in meta:
            raise ValueError(f"{path}: its metadata has no {key!r} (mnist_mlp and mnist_transformer --save write it)")
        return meta[key]

    if field("model") != kind:
        raise ValueError(f"{path}: the checkpoint holds a {meta['model']} model, not {kind}")
    if kind == "mlp":
        return make_mlp(tuple(int(w) for w in field("model.hidden").split(",")))
    pool = field("model.pool")
    if pool not in ("cls", "mean"):
        raise ValueError(f"{path}: model.pool is {pool!r}, neither cls nor mean")
    return VisionTransformer(patch=int(field("model.patch")), dim=int(field("model.dim")),
                             depth=int(field("model.depth")), heads=int(field("model.heads")),
                             mlp_ratio=int(field("model.mlp_ratio")), mean_pool=pool == "mean")


def load_weights(model, weights, path):
    """Copies the checkpoint's weights into the model, checking every name and shape."""
    # softgrad registers parameters under PyTorch's names (nn.Sequential's "0.weight", ...;
    # TransformerEncoderLayer's self_attn.in_proj_weight, ...), so the mapping is the identity.
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the torch model: missing {missing}, unexpected {unexpected}")
    for name, t in expected.items():
        if weights[name].shape != t.shape:
            raise ValueError(f"{path}: {name} is {tuple(weights[name].shape)} in the checkpoint, "
                             f"{tuple(t.shape)} in the torch model")
    model.load_state_dict(weights, strict=True)


def quantize_int8(model):
    """quantize_dynamic on a copy: (int8 model, names of its int8 Linears, of the Linears left float)."""
    nn = torch.nn
    qmodel = torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    for module in qmodel.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            # NOTE: its fast-path check reads linear1.weight as a tensor, which a quantized
            # Linear's is not (pytorch/pytorch#109987); 0 takes the module-by-module path
            # (the activation itself is module.activation, unchanged).
            module.activation_relu_or_gelu = 0
    int8 = [n for n, m in qmodel.named_modules() if isinstance(m, torch.nn.quantized.dynamic.Linear)]
    left_float = [n for n, m in qmodel.named_modules() if isinstance(m, nn.Linear)]
    return qmodel, int8, left_float


def test_set_score(model, x, y, batch):
    """(accuracy in percent, seconds) of one pass over the test set, `batch` images per call."""
    correct = 0
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        logits = model(x[i:i + batch])
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    seconds = time.perf_counter() - t0
    return 100.0 * correct / x.shape[0], seconds


_infer_cache = {}


def run_infer_spec(tokens):
    if len(tokens) < 2 or tokens[0] not in ("mlp", "vit"):
        raise ValueError("infer takes mlp|vit CKPT data=DIR [batch=B]")
    kind, path, opts = tokens[0], tokens[1], {"batch": 256, "data": None}
    for tok in tokens[2:]:
        key, sep, value = tok.partition("=")
        if not sep or key not in opts:
            raise ValueError(f"infer takes options data=DIR and batch=B, not {tok!r}")
        opts[key] = value
    if opts["data"] is None:
        raise ValueError("infer needs data=DIR (the directory of the data set's IDX files)")
    batch = int(opts["batch"])
    if batch < 1:
        raise ValueError(f"infer: batch={batch} is not a positive integer")
    key = (kind, path, opts["data"])
    if key not in _infer_cache:
        meta, weights = read_checkpoint(path)
        dataset = meta.get("dataset", "mnist")
        if dataset not in NORMALIZE:
            raise ValueError(f"{path}: dataset {dataset!r} is neither mnist nor fashion")
        model = make_checkpoint_model(kind, meta, path)
        load_weights(model, weights, path)
        model.eval()
        qmodel, int8, left_float = quantize_int8(model)
        x, y = load_split(opts["data"], "t10k", dataset)
        if kind == "mlp":
            x = x.reshape(x.shape[0], 28 * 28)
        print(f"torch_peer.py: infer {kind} {path}: {len(weights)} weights loaded; quantize_dynamic on "
              f"{torch.backends.quantized.engine}: int8 Linear {', '.join(int8)}; left float32: "
              f"{', '.join(left_float) or 'none'}", file=sys.stderr, flush=True)
        _infer_cache[key] = (model, qmodel, x, y)
    model, qmodel, x, y = _infer_cache[key]
    return test_set_score(model, x, y, batch) + test_set_score(qmodel, x, y, batch)


def run_spec(spec, reps, warmup):
    tokens = spec.split()
    if not tokens:
        raise ValueError("empty spec")
    if tokens[0] in EPOCH_MODELS:
        return run_epoch_spec(tokens[0], tokens[1:])
    if tokens[0] == "infer":
        return run_infer_spec(tokens[1:])
    if tokens[0] == "ddp":
        return run_ddp_spec(tokens[1:])
    op, shapes, opts = tokens[0], [], {}
    for tok in tokens[1:]:
        if "=" in tok:
            key, value = tok.split("=", 1)
            if key not in ("dim", "cycle", "reps", "warmup", "causal", "autocast", "stride", "padding", "groups"):
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

    autocast = bool(opts.get("autocast", 0))

    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
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
          f"sdpa: {sdpa_path}; quantized engine {torch.backends.quantized.engine}", flush=True)
    for spec in specs:
        if not spec:
            continue
        try:
            answer = run_spec(spec, args.reps, args.warmup)
        except (ValueError, RuntimeError, OSError) as e:
            sys.exit(f"torch_peer.py: spec {spec!r}: {e}")
        # A median in ms, or infer's accuracies and seconds
        text = " ".join(f"{v:.6f}" for v in answer) if isinstance(answer, tuple) else f"{answer:.4f}"
        print(f"{text}\t{spec}", flush=True)


if __name__ == "__main__":
    main()
