"""Projections run fused: one matmul over several linear layers held side by side, low-rank updates added into
columns of its output, and the split of an attention layer's fused q/k/v output with RoPE on the way.

Owns `fused_linear` (x @ cat(W_1..W_n).T + cat(b_1..b_n) for weights held as adjacent row blocks of one buffer,
`Tensor.join_rows`; every weight and bias gets a gradient of its own), `add_linear_columns` (y[..., a:b] += x @ W.T
in place: a LoRA update of one projection of a fused output, without an add) and `qkv_split`
(`kernels/rope.wgsl`'s `qkv_split_forward` / `qkv_split_backward`, or their `*_vec4` variants, chosen by
`split_variant`). Must not import `rl`.
"""

from __future__ import annotations

import numpy as np

from wgrpo.engine.autograd import Function
from wgrpo.engine.dtypes import dtype_name
from wgrpo.engine.ops._common import VEC4_VARIANTS, check_float, check_weight, flat_grid, vec4_variant
from wgrpo.engine.ops.matmul import Window, matmul_kernel, weight_storage
from wgrpo.engine.ops.rope import _inv_freq, _positions
from wgrpo.engine.tensor import Tensor


def _column_ranges(weights) -> list[tuple[int, int]]:
    """(start, stop) columns of the fused output each weight's rows make."""
    ranges, start = [], 0
    for w in weights:
        ranges.append((start, start + w.shape[0]))
        start += w.shape[0]
    return ranges


class _FusedLinear(Function):
    """y = x @ cat(W).T + cat(b) in one dispatch; W and b are adjacent row blocks of one buffer each."""

    @staticmethod
    def forward(ctx, x, n_weights, *tensors):
        weights, biases = tensors[:n_weights], tensors[n_weights:]
        weight = Tensor.join_rows(weights)
        bias = Tensor.join_rows(biases) if biases else None
        ctx.save_for_backward(x, weight, _column_ranges(weights), bool(biases))
        return matmul_kernel(x, weight, transpose_b=True, bias=bias)  # (N, sum of out_i)

    @staticmethod
    def backward(ctx, dy):
        from wgrpo.engine.ops.reduce import reduce

        x, weight, ranges, has_bias = ctx.saved
        n, needs = len(ranges), ctx.needs_grad
        dx = matmul_kernel(dy, weight) if needs[0] else None  # (N, in)
        # every gradient in a buffer of its own, as separate linears give them: clip_grad_norm_ (the public one;
        # the trainers clip inside AdamW's step) copies gradients that share one, so views of one (sum of out_i,
        # in) product would cost a copy of them all. The weights'
        # are matmuls on their columns of dy; the biases' are copied out of one sum over dy's rows (its row
        # views begin where the biases' views do, so they bind)
        dws = [matmul_kernel(Window(dy, cols=cols), x, transpose_a=True) if needs[2 + i] else None
               for i, cols in enumerate(ranges)]  # (out_i, in)
        dbs = [None] * (n if has_bias else 0)
        if has_bias and any(needs[2 + n:]):
            db = reduce(dy, "sum", axis=0)  # (sum of out_i,)
            for i, cols in enumerate(ranges):
                if needs[2 + n + i]:
                    dbs[i] = Tensor.empty((cols[1] - cols[0],), db.dtype, db.device)
                    db.runtime.copy(db.rows(*cols), dbs[i])
        return (dx, None, *dws, *dbs)


def fused_linear(x: Tensor, weights, biases=None) -> Tensor:
    """The outputs of several linear layers side by side, x @ cat(weights).T + cat(biases) over the last axis of x:
    (..., sum of out_i) in one matmul; differentiable, each weight (out_i, in) and bias (out_i,) getting its own
    gradient, as separate `ops.linear` calls give them. The weights must be adjacent row blocks of one buffer
    (`Tensor.join_rows`), and so must the biases when given; they may be 16-bit for a float32 x, as in `linear`."""
    weights = tuple(weights)
    biases = tuple(biases) if biases is not None else ()
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise TypeError(f"fused_linear: x must be an engine.Tensor of rank >= 1, got {x!r}")
    joined = Tensor.join_rows(weights)
    if joined is None or joined.ndim != 2:
        raise ValueError(f"fused_linear: the weights {[w.shape for w in weights]} must be adjacent row blocks of one "
                         f"buffer (Tensor.join_rows); run ops.linear on each instead")
    if joined.shape[1] != x.shape[-1]:
        raise ValueError(f"fused_linear: weights must be (out, {x.shape[-1]}) for x of shape {x.shape}, got "
                         f"{[w.shape for w in weights]}")
    check_float(x, "x", "fused_linear")
    check_weight(joined, "weights", "fused_linear")
    weight_storage(x, joined)
    if biases:
        if len(biases) != len(weights) or any(b.shape != (w.shape[0],) for b, w in zip(biases, weights)):
            raise ValueError(f"fused_linear: biases must be one (out_i,) per weight, got {[b.shape for b in biases]} "
                             f"for weights {[w.shape for w in weights]}")
        if Tensor.join_rows(biases) is None:
            raise ValueError("fused_linear: the biases must be adjacent row blocks of one buffer (Tensor.join_rows)")
        if biases[0].dtype != x.dtype:
            raise TypeError(f"fused_linear: biases are {dtype_name(biases[0].dtype)} but x is {dtype_name(x.dtype)}")
    y = _FusedLinear.apply(x.reshape(-1, x.shape[-1]), len(weights), *weights, *biases)
    return y.reshape(*x.shape[:-1], joined.shape[0])


class _AddLinearColumns(Function):
    """y[:, start:start + out] += x @ W.T, written into y's buffer; W may be held in row blocks."""

    @staticmethod
    def forward(ctx, y, x, weight, start):
        ctx.save_for_backward(x, weight, start)
        for (first, last), part in zip(weight.row_ranges, weight.parts):
            matmul_kernel(x, part, transpose_b=True, out=Window(y, cols=(start + first, start + last)),
                          accumulate=True)
        return y.detach()  # the same buffer, now holding the sum

    @staticmethod
    def backward(ctx, dy):
        x, weight, start = ctx.saved
        dx = dw = None
        if ctx.needs_grad[1]:  # (N, r): each row block's columns of dy against it, summed
            for index, ((first, last), part) in enumerate(zip(weight.row_ranges, weight.parts)):
                window = Window(dy, cols=(start + first, start + last))
                dx = matmul_kernel(window, part) if index == 0 else matmul_kernel(window, part, out=dx,
                                                                                  accumulate=True)
        if ctx.needs_grad[2]:  # (out, r), in the row blocks of the weight
            dw = Tensor.empty(weight.shape, dy.dtype, dy.device)
            for (first, last), part in zip(dw.row_ranges, dw.parts):
                matmul_kernel(Window(dy, cols=(start + first, start + last)), x, transpose_a=True, out=part)
        return dy, dx, dw, None


def add_linear_columns(y: Tensor, x: Tensor, weight: Tensor, start: int) -> Tensor:
    """y with x @ weight.T added into its last-axis columns start .. start + out (weight (out, in), x (..., in),
    y (..., width) with the same leading shape): the update is accumulated in y's buffer by the matmul itself, so
    it costs no add and no (..., out) tensor. Differentiable in y, x and weight. In place: y's old value is gone,
    so y must be a tensor no backward reads (a linear's output is one: its backward needs only x and the weight)."""
    for name, t in (("y", y), ("x", x), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"add_linear_columns: {name} must be an engine.Tensor, got {type(t).__name__}")
        check_float(t, name, "add_linear_columns")
    if weight.ndim != 2 or x.ndim < 1 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"add_linear_columns: weight must be (out, {x.shape[-1]}) for x of shape {x.shape}, got "
                         f"{weight.shape}")
    if y.ndim < 1 or y.shape[:-1] != x.shape[:-1] or not 0 <= start <= y.shape[-1] - weight.shape[0]:
        raise ValueError(f"add_linear_columns: columns {start}..{start + weight.shape[0]} of y {y.shape} for x "
                         f"{x.shape}: y must share x's leading shape and hold those columns")
    if not (y.dtype == x.dtype == weight.dtype):
        raise TypeError(f"add_linear_columns: y, x and weight must share a dtype, got {dtype_name(y.dtype)}, "
                        f"{dtype_name(x.dtype)} and {dtype_name(weight.dtype)}")
    out = _AddLinearColumns.apply(y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1]), weight, int(start))
    return out.reshape(y.shape)


SPLIT_VARIANTS = VEC4_VARIANTS


def split_variant(variant: str | None, head_dim: int, op: str) -> str:
    """The qkv_split_* variant for head dim D: "vec4" (`*_vec4`, quads of D/2 with cos/sin shared by a token's
    heads) when D/2 is a multiple of 4, else "scalar" (one invocation per rotated pair). A given `variant` (tests
    force one) is checked instead."""
    return vec4_variant(variant, (head_dim // 2) % 4 == 0, op, f"D/2 to be a multiple of 4, got D = {head_dim}")


def _split(entry: str, variant: str, tensors: list[Tensor], shape: tuple[int, ...], heads: int, kv_heads: int,
           head_dim: int, positions: Tensor | None, inv_freq: Tensor | None, shapes: str, kv_t_cap: int = 0,
           kv_column: int = 0) -> None:
    """Dispatch a qkv_split_* entry (its `variant`) on `tensors` (its storage bindings after the angles'), qkv of
    `shape`; k and v land at positions kv_column.. of (B, kv_t_cap, H_kv, D) outputs (0: (B, T, H_kv, D))."""
    batch, steps = shape[:2]
    n_pairs = batch * steps * (heads + 2 * kv_heads) * (head_dim // 2)
    rotate = positions is not None
    # without RoPE the angle bindings are never read: any buffer fills them
    angles = [positions, inv_freq] if rotate else [tensors[0], tensors[0]]
    params = {"n_pairs": n_pairs, "half": head_dim // 2, "heads": heads, "seq": max(1, steps),
              "pos_batched": rotate and positions.ndim == 2, "heads_k": kv_heads, "n_q_pairs": 0, "rotate": rotate,
              "kv_t_cap": kv_t_cap or max(1, steps), "kv_column": kv_column}
    if variant == "vec4":  # one invocation per (token, quad of D/2)
        entry, invocations = f"{entry}_vec4", batch * steps * (head_dim // 8)
    else:  # one per rotated pair
        invocations = n_pairs
    tensors[0].runtime.dispatch("rope", entry, angles + tensors, flat_grid("rope", entry, invocations), params,
                                elem=tensors[0].elem, shapes=shapes)


def _zeros_like(shape, like: Tensor) -> Tensor:
    return Tensor.from_numpy(np.zeros(shape, like.dtype), like.device)


class _QKVSplit(Function):
    @staticmethod
    def forward(ctx, qkv, heads, kv_heads, head_dim, positions, inv_freq, variant):
        b, t = qkv.shape[:2]
        ctx.save_for_backward(qkv.shape, heads, kv_heads, head_dim, positions, inv_freq, variant)
        q = Tensor.empty((b, t, heads, head_dim), qkv.dtype, qkv.device)
        k = Tensor.empty((b, t, kv_heads, head_dim), qkv.dtype, qkv.device)
        v = Tensor.empty((b, t, kv_heads, head_dim), qkv.dtype, qkv.device)
        _split("qkv_split_forward", variant, [qkv, q, k, v], qkv.shape, heads, kv_heads, head_dim, positions,
               inv_freq, f"qkv {qkv.shape} into q {q.shape}, k/v {k.shape}")
        return q, k, v

    @staticmethod
    def backward(ctx, dq, dk, dv):
        shape, heads, kv_heads, head_dim, positions, inv_freq, variant = ctx.saved
        b, t = shape[:2]
        like = next(g for g in (dq, dk, dv) if g is not None)
        # an output no loss reached has no gradient: zeros stand in for it
        dq = _zeros_like((b, t, heads, head_dim), like) if dq is None else dq
        dk = _zeros_like((b, t, kv_heads, head_dim), like) if dk is None else dk
        dv = _zeros_like((b, t, kv_heads, head_dim), like) if dv is None else dv
        dqkv = Tensor.empty(shape, like.dtype, like.device)
        _split("qkv_split_backward", variant, [dq, dk, dv, dqkv], shape, heads, kv_heads, head_dim, positions,
               inv_freq, f"dq {dq.shape}, dk/dv {dk.shape} into dqkv {shape}")
        return dqkv, None, None, None, None, None, None


def qkv_split(qkv: Tensor, heads: int, kv_heads: int, positions=None, theta: float = 10000.0, *,
              inv_freq=None, variant: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(q, k, v) of an attention layer's fused projection qkv (B, T, (H + 2 H_kv) D), each row q's H heads, k's
    H_kv, then v's (x @ cat(Wq, Wk, Wv).T): q (B, T, H, D), k and v (B, T, H_kv, D), in one dispatch. With
    `positions` ((B, T) or (T,), as in `ops.rope`; theta and inv_freq too) q and k come out rotated, equal to
    `rope_qk` of the split; without, q and k are split as they are (to be normalized first, as Qwen3 does).
    Differentiable: the backward rotates the gradients back into one (B, T, (H + 2 H_kv) D) in one dispatch.
    `variant` ("scalar" or "vec4", see `split_variant`) forces a kernel; None picks the fastest that fits."""
    op = "qkv_split"
    if not isinstance(qkv, Tensor):
        raise TypeError(f"{op}: qkv must be an engine.Tensor, got {type(qkv).__name__}")
    check_float(qkv, "qkv", op)
    for name, value in (("heads", heads), ("kv_heads", kv_heads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{op}: {name} must be an integer >= 1, got {value!r}")
    width = heads + 2 * kv_heads
    if qkv.ndim != 3 or qkv.shape[-1] % width or (qkv.shape[-1] // width) % 2:
        raise ValueError(f"{op}: qkv must be (B, T, (H + 2 H_kv) * D) with D even, H = {heads}, H_kv = {kv_heads}; "
                         f"got {qkv.shape}")
    head_dim = qkv.shape[-1] // width
    if positions is not None:
        heads_view = qkv.view((*qkv.shape[:2], width, head_dim))  # what rope's checks read: (B, T, ., D)
        positions = _positions(positions, heads_view, op)
        inv_freq = _inv_freq(heads_view, theta, inv_freq, op)
    elif inv_freq is not None:
        raise ValueError(f"{op}: inv_freq without positions; pass positions to rotate q and k")
    variant = split_variant(variant, head_dim, op)
    return _QKVSplit.apply(qkv, int(heads), int(kv_heads), head_dim, positions, inv_freq, variant)


def qkv_split_into_cache(qkv: Tensor, heads: int, kv_heads: int, positions: Tensor, inv_freq: Tensor,
                         k_cache: Tensor, v_cache: Tensor, column: int, *, variant: str | None = None) -> Tensor:
    """`qkv_split` for decoding (no gradient): q (B, T, H, D) rotated, returned; k rotated and v written straight
    into the KV cache's (B, T_cap, H_kv, D) k_cache and v_cache at positions column .. column + T - 1. One
    dispatch for the split, the RoPE and the cache write. `variant` as in `qkv_split`."""
    batch, steps = qkv.shape[:2]
    width = heads + 2 * kv_heads
    head_dim = qkv.shape[-1] // width
    if k_cache.shape != v_cache.shape or k_cache.shape[0] != batch or k_cache.shape[2:] != (kv_heads, head_dim) \
            or not 0 <= column <= k_cache.shape[1] - steps:
        raise ValueError(f"qkv_split_into_cache: caches {k_cache.shape} / {v_cache.shape} cannot take {steps} "
                         f"positions of ({batch}, ., {kv_heads}, {head_dim}) at column {column}")
    heads_view = qkv.view((batch, steps, width, head_dim))
    positions = _positions(positions, heads_view, "qkv_split_into_cache")
    variant = split_variant(variant, head_dim, "qkv_split_into_cache")
    q = Tensor.empty((batch, steps, heads, head_dim), qkv.dtype, qkv.device)
    _split("qkv_split_forward", variant, [qkv, q, k_cache, v_cache], qkv.shape, heads, kv_heads, head_dim,
           positions, inv_freq, f"qkv {qkv.shape} into q {q.shape} and the cache {k_cache.shape} at {column}",
           kv_t_cap=k_cache.shape[1], kv_column=column)
    return q
