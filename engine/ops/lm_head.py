"""The language-model head fused with the targets' log-probs, in row blocks: no (N, V) logits tensor lives
longer than one block.

GRPO needs log p(target) of every completion token, not the logits. With a real vocabulary (Qwen2's is
151,936) the logits of a rollout batch are gigabytes, so `linear_token_logprobs` computes them a block of rows
at a time, keeps only each row's log-sum-exp, and recomputes a block's logits in the backward pass (as fused
linear-cross-entropy kernels do). When the whole batch fits in one block the logits are kept instead of
recomputed. Kernels: `matmul` and `logprob`.
"""

from __future__ import annotations

import numpy as np

from wgrpo.engine.autograd import Function
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops._common import check_float, check_weight, row_kernel
from wgrpo.engine.ops.logprob import _inv_temperature, token_logprobs_grad, token_logprobs_into
from wgrpo.engine.ops.matmul import matmul_kernel, weight_storage
from wgrpo.engine.ops.rows import RowSelection
from wgrpo.engine.tensor import Tensor

BLOCK_BYTES = 64 << 20  # logits of one row block, at most
ROW_ALIGN = 64  # row blocks start at multiples of this, so every view of 4-byte values is 256-byte aligned


def block_rows(rows: int, vocab: int, itemsize: int, budget: int = BLOCK_BYTES) -> int:
    """Rows per block: as many as fit the budget, a multiple of ROW_ALIGN unless one block holds them all."""
    fit = max(1, budget // max(1, vocab * itemsize))
    if fit >= rows:
        return rows
    return max(ROW_ALIGN, fit // ROW_ALIGN * ROW_ALIGN)


class _LinearTokenLogprobs(Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, block):
        rows, vocab = hidden.shape[0], weight.shape[0]
        logp = Tensor.empty((rows,), np.float32, hidden.device)
        lse = Tensor.empty((rows,), np.float32, hidden.device)
        variant = row_kernel(None, vocab, "linear_token_logprobs")
        kept = None
        for start in range(0, rows, block):
            stop = min(rows, start + block)
            logits = matmul_kernel(hidden.rows(start, stop), weight, transpose_b=True)  # (n, V)
            token_logprobs_into(logits, targets.rows(start, stop), logp.rows(start, stop), lse.rows(start, stop),
                                inv_temp, variant)
            kept = logits if block >= rows else None
        ctx.save_for_backward(hidden, weight, targets, lse, inv_temp, block, kept)
        return logp

    @staticmethod
    def backward(ctx, g):
        hidden, weight, targets, lse, inv_temp, block, kept = ctx.saved
        rows = hidden.shape[0]
        need_hidden, need_weight = ctx.needs_grad[0], ctx.needs_grad[1]
        d_hidden = Tensor.empty(hidden.shape, hidden.dtype, hidden.device) if need_hidden else None
        d_weight = Tensor.empty(weight.shape, weight.dtype, weight.device) if need_weight else None
        for index, start in enumerate(range(0, rows, block)):
            stop = min(rows, start + block)
            h = hidden.rows(start, stop)
            logits = kept if kept is not None else matmul_kernel(h, weight, transpose_b=True)  # (n, V)
            d_logits = token_logprobs_grad(logits, targets.rows(start, stop), lse.rows(start, stop),
                                           g.rows(start, stop), inv_temp)
            if need_hidden:
                matmul_kernel(d_logits, weight, out=d_hidden.rows(start, stop))  # (n, C)
            if need_weight:  # (V, C), summed over the blocks in place
                matmul_kernel(d_logits, h, transpose_a=True, out=d_weight, accumulate=index > 0)
        return d_hidden, d_weight, None, None, None


def linear_token_logprobs(hidden: Tensor, weight: Tensor, targets, temperature: float = 1.0, *,
                          positions=None, block_bytes: int = BLOCK_BYTES) -> Tensor:
    """log softmax(hidden @ weight.T / temperature)[targets] for hidden (N, C), weight (V, C), targets (N,).

    The same value as `token_logprobs(linear(hidden, weight), targets, temperature)`, differentiable in hidden
    and weight, with at most `block_bytes` of logits alive at a time (and never more than one binding). The weight
    may be bfloat16/float16 (a frozen reference model's) and held in row blocks: each block gives its columns of
    the logits. Returns float32 (N,).

    `positions`: the distinct rows whose log-prob is wanted (a host integer array, or an `ops.rows.RowSelection`
    of N rows); the head then runs on those rows only and the others come out 0 (TRL's `logits_to_keep`, per
    position). targets are then those rows' targets (P,), or all N of them as a host array.
    """
    if not isinstance(hidden, Tensor) or hidden.ndim != 2:
        raise ValueError(f"linear_token_logprobs: hidden must be a 2-D Tensor (N, C), got {hidden!r}")
    if positions is not None:
        return _scored_rows(hidden, weight, targets, temperature, positions, block_bytes)
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"linear_token_logprobs: weight must be (V, {hidden.shape[1]}) for hidden of shape "
                         f"{hidden.shape}, got {getattr(weight, 'shape', weight)}")
    check_weight(weight, "weight", "linear_token_logprobs")
    check_float(hidden, "hidden", "linear_token_logprobs")
    weight_storage(hidden, weight)
    inv_temp = _inv_temperature(temperature, "linear_token_logprobs")
    if isinstance(targets, Tensor):
        if targets.dtype != np.int32 or targets.shape != (hidden.shape[0],):
            raise ValueError(f"linear_token_logprobs: targets must be int32 of shape ({hidden.shape[0]},), got "
                             f"{targets.dtype} {targets.shape}")
    else:
        targets = np.asarray(targets)
        if targets.shape != (hidden.shape[0],) or (targets.size and not np.issubdtype(targets.dtype, np.integer)):
            raise ValueError(f"linear_token_logprobs: targets must be integers of shape ({hidden.shape[0]},), "
                             f"got {targets.dtype} {targets.shape}")
        if targets.size and targets.max() >= weight.shape[0]:
            raise ValueError(f"linear_token_logprobs: targets hold {int(targets.max())}, out of range for a "
                             f"vocabulary of {weight.shape[0]}")
        targets = Tensor.from_numpy(targets.astype(np.int32), hidden.device)
    # a block's logits are one tensor, so they stay within one binding too
    budget = min(block_bytes, hidden.device.max_binding_bytes)
    block = block_rows(hidden.shape[0], weight.shape[0], hidden.dtype.itemsize, budget)
    if block * weight.shape[0] * 4 > hidden.device.max_binding_bytes:
        raise InputError(f"linear_token_logprobs: a block of {block} rows of logits over a vocabulary of "
                         f"{weight.shape[0]} needs {block * weight.shape[0] * 4} bytes, over this adapter's "
                         f"max_storage_buffer_binding_size of {hidden.device.max_binding_bytes} bytes (blocks hold "
                         f"at least {ROW_ALIGN} rows)")
    return _LinearTokenLogprobs.apply(hidden, weight, targets, inv_temp, block)


def _scored_rows(hidden: Tensor, weight: Tensor, targets, temperature: float, positions, block_bytes: int) -> Tensor:
    """`linear_token_logprobs` over the rows `positions` of hidden only, put back among N rows of zeros."""
    rows = hidden.shape[0]
    selection = positions if isinstance(positions, RowSelection) else RowSelection(positions, rows, hidden.device)
    if selection.n != rows:
        raise ValueError(f"linear_token_logprobs: positions select among {selection.n} rows, hidden has {rows}")
    if not len(selection):
        raise ValueError("linear_token_logprobs: positions choose no row (positions=None scores every row)")
    if not isinstance(targets, Tensor):
        targets = np.asarray(targets)
        if targets.shape == (rows,) and len(selection) != rows:
            targets = targets[selection.rows]
    if tuple(targets.shape) != (len(selection),):
        raise ValueError(f"linear_token_logprobs: targets must hold the {len(selection)} scored positions' "
                         f"targets (or all {rows} on the host), got shape {tuple(targets.shape)}")
    logp = linear_token_logprobs(selection.take(hidden), weight, targets, temperature, block_bytes=block_bytes)
    return selection.put(logp)
