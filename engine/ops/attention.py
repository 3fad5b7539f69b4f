"""Fused scaled-dot-product attention with grouped-query heads (GQA), causal or not, and its backward.

Kernels in `kernels/attention.wgsl` (one invocation per query row, or per key row for dk/dv, streaming over the
other axis with an online softmax; no T x T matrix in memory):
- `attention_serial`: out (B, T_q, H, D) and the per-row log-sum-exp lse (B, H, T_q, f32) the backward reuses;
- `attention_backward_delta_serial`: delta = rowsum(dO * O) (B, H, T_q, f32);
- `attention_backward_dq_serial`: dq, recomputing probabilities from q, k and lse;
- `attention_backward_dkv_serial`: dk and dv for each kv head, looping over the query heads of its group (no
  atomics, so results are deterministic).
Every entry runs on a 3-D grid (ceil(rows / WG), heads, B): rows = T_q and heads = H, or for dkv T_k and H_kv.

`attention_cached` (inference only, no gradient) attends new queries over a KV cache (B, T_cap, H_kv, D) whose
first `length` rows are valid and whose batch row b begins at `starts[b]` (left-padded prompts):
`attention_cached` entry for prefill (grid as above), `attention_decode` for one query per row (one invocation
per (b, h) over a flat grid, so decoding fills every lane).
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import MAX_WORKGROUPS, check_float, flat_grid
from wgrpo.engine.tensor import Tensor

def max_head_dim() -> int:
    """The largest head dimension D the kernels hold in private arrays (MAX_D in the WGSL)."""
    return kernels.load("attention").constants["MAX_D"]


def _grid(entry: str, rows: int, heads: int, batch: int, what: str) -> tuple[int, int, int]:
    """(ceil(rows / workgroup size), heads, batch): one workgroup per block of rows of one (b, head)."""
    grid = (math.ceil(rows / kernels.load("attention").invocations(entry)), heads, batch)
    if max(grid) > MAX_WORKGROUPS:
        raise ValueError(f"attention: {what} needs a grid of {grid} workgroups, over {MAX_WORKGROUPS} per dimension")
    return grid


def _params(q: Tensor, k: Tensor, causal: bool, scale: float) -> dict:
    _, t_q, heads, d = q.shape
    _, t_k, kv_heads, _ = k.shape
    # t_cap and batch belong to the KV-cache entries only
    return {"t_q": t_q, "t_k": t_k, "heads": heads, "kv_heads": kv_heads, "d": d, "causal": causal, "scale": scale,
            "t_cap": 0, "batch": 0}


def _shapes(q: Tensor, k: Tensor, causal: bool) -> str:
    return f"q {q.shape}, k/v {k.shape}, causal={causal}"


def attention_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> tuple[Tensor, Tensor]:
    """(out (B, T_q, H, D), lse (B, H, T_q) float32) for checked operands."""
    b, t_q, heads, _ = q.shape
    out = Tensor.empty(q.shape, q.dtype, q.device)
    lse = Tensor.empty((b, heads, t_q), "float32", q.device)
    if out.size == 0:
        return out, lse
    q.runtime.dispatch("attention", "attention_serial", [q, k, v, out, lse],
                       _grid("attention_serial", t_q, heads, b, "forward"), _params(q, k, causal, scale),
                       elem=q.elem, shapes=_shapes(q, k, causal))
    return out, lse


def attention_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, d_out: Tensor, causal: bool,
                       scale: float, need_dq: bool = True, need_dkv: bool = True):
    """(dq, dk, dv) of attention (None for those not asked for), from the forward's out and lse."""
    b, t_q, heads, _ = q.shape
    _, t_k, kv_heads, _ = k.shape
    params, shapes = _params(q, k, causal, scale), _shapes(q, k, causal)
    runtime = q.runtime
    delta = Tensor.empty((b, heads, t_q), "float32", q.device)  # (B, H, T_q)
    dq = Tensor.empty(q.shape, q.dtype, q.device) if need_dq else None
    dk = Tensor.empty(k.shape, k.dtype, k.device) if need_dkv else None
    dv = Tensor.empty(v.shape, v.dtype, v.device) if need_dkv else None
    if q.size == 0 or k.size == 0:
        return dq, dk, dv
    entry = "attention_backward_delta_serial"
    runtime.dispatch("attention", entry, [out, d_out, delta], _grid(entry, t_q, heads, b, "backward"), params,
                     elem=q.elem, shapes=shapes)
    if need_dq:
        entry = "attention_backward_dq_serial"
        runtime.dispatch("attention", entry, [q, k, v, d_out, lse, delta, dq], _grid(entry, t_q, heads, b, "backward"),
                         params, elem=q.elem, shapes=shapes)
    if need_dkv:
        entry = "attention_backward_dkv_serial"
        runtime.dispatch("attention", entry, [q, k, v, d_out, lse, delta, dk, dv],
                         _grid(entry, t_k, kv_heads, b, "backward"), params, elem=q.elem, shapes=shapes)
    return dq, dk, dv


class _Attention(Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale):
        out, lse = attention_forward(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, out.detach(), lse, causal, scale)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse, causal, scale = ctx.saved
        if d_out.dtype != q.dtype:
            raise TypeError(f"attention backward: the output gradient is {d_out.dtype} but q is {q.dtype}")
        need_dkv = ctx.needs_grad[1] or ctx.needs_grad[2]
        dq, dk, dv = attention_backward(q, k, v, out, lse, d_out, causal, scale, ctx.needs_grad[0], need_dkv)
        return dq, dk if ctx.needs_grad[1] else None, dv if ctx.needs_grad[2] else None, None, None


def _check(q, k, v, causal: bool) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"attention: {name} must be an engine.Tensor, got {type(t).__name__}")
        check_float(t, name, "attention")
        if t.ndim != 4:
            raise ValueError(f"attention: {name} must have shape (B, T, heads, D), got shape {t.shape}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"attention: {name} is {t.dtype} but q is {q.dtype}")
        if t.device is not q.device:
            raise ValueError(f"attention: {name} is on {t.device.name} but q is on {q.device.name}")
    if k.shape != v.shape:
        raise ValueError(f"attention: k and v must have the same shape (B, T_k, H_kv, D), got {k.shape} and {v.shape}")
    (b, t_q, heads, d), (b_k, t_k, kv_heads, d_k) = q.shape, k.shape
    if b_k != b:
        raise ValueError(f"attention: q has batch {b} but k has batch {b_k} (q {q.shape}, k {k.shape})")
    if d_k != d:
        raise ValueError(f"attention: q has head dimension D={d} but k and v have D={d_k} (q {q.shape}, k {k.shape})")
    if d > max_head_dim():
        raise ValueError(f"attention: head dimension D={d} of q {q.shape} exceeds the kernels' maximum of "
                         f"{max_head_dim()}")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"attention: the H={heads} query heads of q {q.shape} must be a multiple of the "
                         f"H_kv={kv_heads} kv heads of k {k.shape}")
    if causal and t_q > t_k:
        raise ValueError(f"attention: causal needs T_q <= T_k, got q {q.shape} (T_q={t_q}) and k {k.shape} (T_k={t_k})")
    if t_k == 0 and q.size:
        raise ValueError(f"attention: k {k.shape} has no keys for the queries of q {q.shape}")


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v per head, with grouped-query heads.

    q is (B, T_q, H, D); k and v are (B, T_k, H_kv, D) with H a multiple of H_kv: query head h uses kv head
    h // (H / H_kv). Returns (B, T_q, H, D). `scale` defaults to 1 / sqrt(D). With `causal=True` (T_q <= T_k)
    the queries are the last T_q positions: query i sees keys j <= i + (T_k - T_q), as in KV-cached decoding.
    D is at most `max_head_dim()` (128). Differentiable in q, k and v.
    """
    _check(q, k, v, causal)
    scale = 1.0 / math.sqrt(max(q.shape[-1], 1)) if scale is None else float(scale)
    return _Attention.apply(q, k, v, bool(causal), scale)


def attention_cached(q: Tensor, k_cache: Tensor, v_cache: Tensor, starts: Tensor, length: int,
                     scale: float | None = None) -> Tensor:
    """Causal attention of the T_q newest positions over a KV cache, for generation (no gradient).

    q (B, T_q, H, D) holds the queries of cache positions length - T_q .. length - 1; k_cache and v_cache are
    (B, T_cap, H_kv, D) with rows 0 .. length - 1 valid; starts (B,) int32 or uint32 is each row's first key
    (rows before it are left padding). Query i of row b sees keys j with starts[b] <= j <= i + length - T_q; a
    query that sees none (a padding position) gets zeros. Returns (B, T_q, H, D).
    """
    _check(q, k_cache, v_cache, causal=False)
    b, t_q, heads, d = q.shape
    t_cap, kv_heads = k_cache.shape[1], k_cache.shape[2]
    if not isinstance(starts, Tensor) or starts.dtype not in (np.dtype(np.int32), np.dtype(np.uint32)):
        raise TypeError(f"attention_cached: starts must be an int32 or uint32 Tensor of shape ({b},), got {starts!r}")
    if starts.shape != (b,):
        raise ValueError(f"attention_cached: starts must have shape ({b},) for q {q.shape}, got {starts.shape}")
    length = int(length)
    if not t_q <= length <= t_cap or length == 0:
        raise ValueError(f"attention_cached: length must be in [T_q, T_cap] = [{t_q}, {t_cap}] and positive for "
                         f"q {q.shape} and a cache {k_cache.shape}, got {length}")
    scale = 1.0 / math.sqrt(max(d, 1)) if scale is None else float(scale)
    out = Tensor.empty(q.shape, q.dtype, q.device)
    if out.size == 0:
        return out
    params = {"t_q": t_q, "t_k": length, "heads": heads, "kv_heads": kv_heads, "d": d, "causal": True,
              "scale": scale, "t_cap": t_cap, "batch": b}
    shapes = f"q {q.shape}, cache {k_cache.shape}, length {length}"
    if t_q == 1:
        q.runtime.dispatch("attention", "attention_decode", [q, k_cache, v_cache, out, starts],
                           flat_grid("attention", "attention_decode", b * heads), params, elem=q.elem, shapes=shapes)
    else:
        q.runtime.dispatch("attention", "attention_cached", [q, k_cache, v_cache, out, starts],
                           _grid("attention_cached", t_q, heads, b, "cached"), params, elem=q.elem, shapes=shapes)
    return out
