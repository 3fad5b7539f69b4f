"""The ops of the memory replay: what each `engine.ops` function and its backward create, on `Sym` tensors.

Owns one mirror per op the model, the GRPO loss and generation use (embedding, rmsnorm, add_rmsnorm, linear,
rope_qk, attention and attention_cached, swiglu, add, scale, dropout, reduce, the fused LM head with the
targets' log-probs and its row selection, grpo_loss, gather_rows): the same tensors in the same order, saved for the backward as the
op's `Function` saves them, so that `memory_graph` frees them when autograd does. Host arrays (`Host`) are
uploaded where the op uploads them. No data and no kernels. Must not import `rl`.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.dtypes import FLOAT32
from wgrpo.engine.memory_graph import Function, SparseGrad
from wgrpo.engine.memory_ledger import U32, Host, Sym
from wgrpo.engine.ops.grpo import METRIC_NAMES
from wgrpo.engine.ops.lm_head import BLOCK_BYTES, block_rows


def _empty(like: Sym, shape, dtype=None) -> Sym:
    return like.ledger.empty(shape, like.dtype if dtype is None else dtype)


def _as_tensor(value, like: Sym) -> Sym:
    """`ops._common.as_tensor`: a host array is uploaded."""
    return like.ledger.upload(value) if isinstance(value, Host) else value


def matmul_kernel(a: Sym, b: Sym, transpose_a: bool = False, transpose_b: bool = False) -> Sym:
    """The (M, N) result of op(a) @ op(b), in a's dtype (2-D operands)."""
    m = a.shape[-1] if transpose_a else a.shape[-2]
    n = b.shape[-2] if transpose_b else b.shape[-1]
    return _empty(a, (m, n))


# ---------------------------------------------------------------------------------------------- the model's


class _Embedding(Function):
    @staticmethod
    def forward(ctx, weight, ids, host_ids, dtype):
        ctx.save_for_backward(ids if host_ids is None else host_ids, weight.shape[0])
        return _empty(weight, ids.shape + (weight.shape[1],), dtype)

    @staticmethod
    def backward(ctx, dy):
        ids, vocab = ctx.saved
        return _EmbeddingRowGrad(dy, math.prod(ids.shape), vocab), None, None, None


class _EmbeddingRowGrad(SparseGrad):
    """`ops.embedding.EmbeddingRowGrad`: dy held until autograd makes the table of it or adds its rows."""

    __slots__ = ("dy", "positions")

    def __init__(self, dy: Sym, positions: int, vocab: int):
        self.dy, self.positions = dy, positions
        self.shape, self.dtype = (vocab, dy.shape[-1]), dy.dtype

    def dense(self) -> Sym:
        dweight = _empty(self.dy, self.shape)
        # the ids sorted on the host: their order and each id's offset, uploaded for the one dispatch
        order, offsets = self.dy.ledger.empty((self.positions,), U32), self.dy.ledger.empty((self.shape[0] + 1,), U32)
        del order, offsets
        return dweight

    def add_into(self, acc: Sym) -> None:
        # the positions grouped by id (offsets, rows, positions), uploaded for the row add
        self.dy.ledger.empty((3 * self.positions + 1,), U32)


def embedding(ids, weight: Sym, dtype=FLOAT32) -> Sym:
    if isinstance(ids, Sym):
        return _Embedding.apply(weight, ids, None, dtype)
    return _Embedding.apply(weight, weight.ledger.upload(Host(ids.shape, np.int32)), ids, dtype)


class _RMSNorm(Function):
    @staticmethod
    def forward(ctx, x, w, eps):
        y, rstd = _empty(x, x.shape), _empty(x, x.shape[:-1], FLOAT32)
        ctx.save_for_backward(x, w, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, rstd = ctx.saved
        dx, dw = rmsnorm_backward(x, w, dy, ctx.needs_grad[0], ctx.needs_grad[1])
        return dx, dw, None


def rmsnorm_backward(x: Sym, w: Sym, dy: Sym, need_dx: bool, need_dw: bool):
    dx = _empty(x, x.shape) if need_dx else None
    dw = _empty(w, w.shape) if need_dw else None
    return dx, dw


def rmsnorm(x: Sym, w: Sym, eps: float = 1e-6) -> Sym:
    return _RMSNorm.apply(x, w, eps)


class _AddRMSNorm(Function):
    @staticmethod
    def forward(ctx, x, residual, w, eps):
        total, y, rstd = _empty(x, x.shape), _empty(x, x.shape), _empty(x, x.shape[:-1], FLOAT32)
        ctx.save_for_backward(total, w, rstd)
        return total, y

    @staticmethod
    def backward(ctx, d_total, dy):
        total, w, rstd = ctx.saved
        d_sum, dw = d_total, None
        if dy is not None:
            d_norm, dw = rmsnorm_backward(total, w, dy, True, ctx.needs_grad[2])
            d_sum = d_norm if d_sum is None else add(d_sum, d_norm)
        return d_sum, d_sum, dw, None


def add_rmsnorm(x: Sym, residual: Sym, w: Sym, eps: float = 1e-6) -> tuple[Sym, Sym]:
    return _AddRMSNorm.apply(x, residual, w, eps)


class _Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight, bias is not None)
        return matmul_kernel(x, weight, transpose_b=True)

    @staticmethod
    def backward(ctx, dy):
        x, weight, has_bias = ctx.saved
        dx = matmul_kernel(dy, weight) if ctx.needs_grad[0] else None
        dw = matmul_kernel(dy, x, transpose_a=True) if ctx.needs_grad[1] else None
        db = reduce_rows(dy) if has_bias and ctx.needs_grad[2] else None
        return dx, dw, db


def linear(x: Sym, weight: Sym, bias: Sym | None = None) -> Sym:
    y = _Linear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def reduce_rows(x: Sym) -> Sym:
    """`reduce(x, "sum", axis=0)` of a 2-D tensor."""
    return _empty(x, x.shape[1:])


class _RopeQK(Function):
    @staticmethod
    def forward(ctx, q, k, positions, inv_freq):
        ctx.save_for_backward(positions, inv_freq)
        return _empty(q, q.shape), _empty(k, k.shape)

    @staticmethod
    def backward(ctx, dq_out, dk_out):
        dq_out = dq_out if ctx.needs_grad[0] else None
        dk_out = dk_out if ctx.needs_grad[1] else None
        if dq_out is not None and dk_out is not None:
            dq, dk = _empty(dq_out, dq_out.shape), _empty(dk_out, dk_out.shape)
        else:
            dq = None if dq_out is None else _empty(dq_out, dq_out.shape)
            dk = None if dk_out is None else _empty(dk_out, dk_out.shape)
        return dq, dk, None, None


def rope_qk(q: Sym, k: Sym, positions: Sym, inv_freq: Sym) -> tuple[Sym, Sym]:
    return _RopeQK.apply(q, k, positions, inv_freq)


class _Attention(Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale):
        b, t_q, heads, _ = q.shape
        out, lse = _empty(q, q.shape), _empty(q, (b, heads, t_q), FLOAT32)
        ctx.save_for_backward(q, k, v, out.detach(), lse)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse = ctx.saved
        b, t_q, heads, _ = q.shape
        need_dkv = ctx.needs_grad[1] or ctx.needs_grad[2]
        delta = _empty(q, (b, heads, t_q), FLOAT32)
        dq = _empty(q, q.shape) if ctx.needs_grad[0] else None
        dk = _empty(k, k.shape) if need_dkv else None
        dv = _empty(v, v.shape) if need_dkv else None
        del delta
        return dq, dk if ctx.needs_grad[1] else None, dv if ctx.needs_grad[2] else None, None, None


def attention(q: Sym, k: Sym, v: Sym) -> Sym:
    """Causal attention (training and log-probs)."""
    return _Attention.apply(q, k, v, True, 1.0)


def attention_cached(q: Sym) -> Sym:
    return _empty(q, q.shape)


class _SwiGLU(Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return _empty(gate, gate.shape)

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved
        dgate, dup = _empty(gate, gate.shape), _empty(gate, gate.shape)
        return dgate if ctx.needs_grad[0] else None, dup if ctx.needs_grad[1] else None


def swiglu(gate: Sym, up: Sym) -> Sym:
    return _SwiGLU.apply(gate, up)


class _Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return _empty(a, a.shape)

    @staticmethod
    def backward(ctx, dy):  # sum_to_shape of operands of the output's shape is dy itself
        return dy if ctx.needs_grad[0] else None, dy if ctx.needs_grad[1] else None


def add(a: Sym, b: Sym) -> Sym:
    """a + b of one shape."""
    return _Add.apply(a, b)


class _Affine(Function):
    @staticmethod
    def forward(ctx, x, alpha):
        return _empty(x, x.shape)

    @staticmethod
    def backward(ctx, dy):
        return _empty(dy, dy.shape), None


def scale(x: Sym, alpha: float) -> Sym:
    return _Affine.apply(x, alpha)


class _Dropout(Function):
    """`ops.dropout` with p > 0: the kept values scaled, the mask recomputed from the seed in the backward."""

    @staticmethod
    def forward(ctx, x, p):
        return _empty(x, x.shape)

    @staticmethod
    def backward(ctx, dy):
        return _empty(dy, dy.shape), None


def dropout(x: Sym, p: float) -> Sym:
    return x if p == 0 else _Dropout.apply(x, p)


# ---------------------------------------------------------------------------------------------- log-probs, loss


class _LinearTokenLogprobs(Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, block):
        rows = hidden.shape[0]
        logp, lse = _empty(hidden, (rows,), FLOAT32), _empty(hidden, (rows,), FLOAT32)
        kept = logits = None
        for start in range(0, rows, block):
            logits = matmul_kernel(hidden.rows(start, min(rows, start + block)), weight, transpose_b=True)
            kept = logits if block >= rows else None
        del logits
        ctx.save_for_backward(hidden, weight, targets, lse, inv_temp, block, kept)
        return logp

    @staticmethod
    def backward(ctx, g):
        hidden, weight, targets, lse, inv_temp, block, kept = ctx.saved
        rows = hidden.shape[0]
        d_hidden = _empty(hidden, hidden.shape) if ctx.needs_grad[0] else None
        d_weight = _empty(weight, weight.shape) if ctx.needs_grad[1] else None
        logits = d_logits = None
        for start in range(0, rows, block):
            h = hidden.rows(start, min(rows, start + block))
            logits = kept if kept is not None else matmul_kernel(h, weight, transpose_b=True)
            d_logits = _empty(logits, logits.shape)
        del logits, d_logits
        return d_hidden, d_weight, None, None, None


class _Gather(Function):
    """`ops.rows`' gather: x's rows through device ids; the backward, dy's through the inverse map."""

    @staticmethod
    def forward(ctx, x, ids, inverse):
        ctx.save_for_backward(inverse, ids)
        return _empty(x, ids.shape + x.shape[1:])

    @staticmethod
    def backward(ctx, dy):
        inverse = ctx.saved[0]
        return _empty(dy, inverse.shape + dy.shape[1:]), None, None


class RowSelection:
    """`ops.rows.RowSelection`: `count` of `n` rows, its ids and inverse map uploaded once."""

    def __init__(self, ledger, count: int, n: int):
        self.ids = ledger.upload(Host((count,), np.int32))
        self.inverse = ledger.upload(Host((n,), np.int32))

    def take(self, x: Sym) -> Sym:
        return _Gather.apply(x, self.ids, self.inverse)

    def put(self, y: Sym) -> Sym:
        return _Gather.apply(y, self.inverse, self.ids)


def linear_token_logprobs(hidden: Sym, weight: Sym, targets, temperature: float = 1.0,
                          positions: RowSelection | None = None) -> Sym:
    """The fused LM head: blocks of at most 64 MiB of logits (and at most one binding); with `positions`, on
    those rows only (`targets` then theirs), put back among the others' zeros."""
    if positions is not None:
        return positions.put(linear_token_logprobs(positions.take(hidden), weight, targets, temperature))
    ledger = hidden.ledger
    targets = _as_tensor(targets, hidden)
    budget = min(BLOCK_BYTES, ledger.limit) if ledger.limit else BLOCK_BYTES
    block = block_rows(hidden.shape[0], weight.shape[0], hidden.dtype.itemsize, budget)
    return _LinearTokenLogprobs.apply(hidden, weight, targets, 1.0 / temperature, block)


class _GRPOLoss(Function):
    @staticmethod
    def forward(ctx, logp, old_logp, ref_logp, advantages, mask):
        rows = logp.shape[0]
        ref = ref_logp if ref_logp is not None else logp
        row_stats = _empty(logp, (rows, kernels.load("grpo").constants["STATS"]), FLOAT32)
        loss, metrics = _empty(logp, (), FLOAT32), _empty(logp, (len(METRIC_NAMES),), FLOAT32)
        ctx.save_for_backward(logp, old_logp, ref, advantages, mask, row_stats, metrics)
        return loss, metrics

    @staticmethod
    def backward(ctx, g_loss, _g_metrics):
        logp = ctx.saved[0]
        if g_loss is None:
            return (None,) * 5
        return _empty(logp, logp.shape), None, None, None, None


def grpo_loss(logp: Sym, old_logp, ref_logp, advantages, mask) -> tuple[Sym, Sym]:
    """(loss, metrics) of `ops.grpo_loss(..., return_metrics=True)`; host arrays uploaded in its order."""
    old_logp = _as_tensor(old_logp, logp)
    advantages = _as_tensor(advantages, logp)
    mask = _as_tensor(mask, logp)
    loss, metrics = _GRPOLoss.apply(logp, old_logp, ref_logp, advantages, mask)
    metrics = metrics.detach()
    return loss, metrics


# ---------------------------------------------------------------------------------------------- generation


def gather_rows(src: Sym, rows: int) -> None:
    """`kv_cache.gather_rows`: its row index is uploaded for the one dispatch."""
    src.ledger.empty((rows,), U32)
