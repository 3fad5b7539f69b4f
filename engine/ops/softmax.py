"""Softmax over the last axis (optionally causal, as attention uses it) and its backward.

Kernels in `kernels/softmax.wgsl`: `*_serial` (one invocation per row) for rows shorter than 1024 (`row_kernel`),
`*_workgroup` (one workgroup of 256 per row) for longer ones. Numerically stable: each row is shifted by its
maximum. Masked (causal) entries are exactly 0.
"""

from __future__ import annotations

import math

from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import row_grid, row_kernel
from wgrpo.engine.ops.reduce import check_tensor
from wgrpo.engine.tensor import Tensor


class _Softmax(Function):
    @staticmethod
    def forward(ctx, x, causal, variant):
        y = softmax_kernel(x, causal, variant)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return softmax_backward(y, dy), None, None


def softmax(x: Tensor, causal: bool = False, *, variant: str | None = None) -> Tensor:
    """softmax(x) over the last axis; differentiable (see `softmax_kernel` for the causal convention)."""
    check_tensor(x, "softmax", min_rank=2 if causal else 1)
    return _Softmax.apply(x, bool(causal), variant)


def softmax_kernel(x: Tensor, causal: bool = False, variant: str | None = None) -> Tensor:
    """softmax(x) over the last axis.

    With `causal=True`, x is (..., T_q, T_k) with T_q <= T_k and query i (along the last-but-one axis) sees keys
    j <= i + (T_k - T_q), the queries being the last T_q positions (as with a KV cache); later keys get
    probability exactly 0. `variant` forces a kernel ("serial" or "workgroup"; for tests).
    """
    check_tensor(x, "softmax", min_rank=2 if causal else 1)
    n = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    t_q = x.shape[-2] if causal else 1
    if causal and t_q > n:
        raise ValueError(f"softmax: causal needs T_q <= T_k for x of shape (..., T_q, T_k), got shape {x.shape}")
    if n == 0 and rows:
        raise ValueError(f"softmax: the last axis of x with shape {x.shape} is empty")
    y = Tensor.empty(x.shape, x.dtype, x.device)
    if rows == 0:
        return y
    entry = f"softmax_{row_kernel(variant, n, 'softmax')}"
    x.runtime.dispatch("softmax", entry, [x, y], row_grid("softmax", entry, rows),
                       {"rows": rows, "n": n, "t_q": t_q, "causal": bool(causal)}, elem=x.elem,
                       shapes=f"{x.shape}, causal={bool(causal)}")
    return y


def softmax_backward(y: Tensor, dy: Tensor, *, variant: str | None = None) -> Tensor:
    """dx = y * (dy - sum(dy * y, last axis)) for y = softmax(x) (causal or not: masked y are 0)."""
    check_tensor(y, "softmax_backward")
    if not isinstance(dy, Tensor):
        raise TypeError(f"softmax_backward: dy must be an engine.Tensor, got {type(dy).__name__}")
    if dy.shape != y.shape:
        raise ValueError(f"softmax_backward: dy has shape {dy.shape} but y has shape {y.shape}")
    if dy.dtype != y.dtype:
        raise TypeError(f"softmax_backward: dy is {dy.dtype} but y is {y.dtype}")
    if dy.device is not y.device:
        raise ValueError(f"softmax_backward: dy is on {dy.device.name} but y is on {y.device.name}")
    n = y.shape[-1]
    rows = math.prod(y.shape[:-1])
    dx = Tensor.empty(y.shape, y.dtype, y.device)
    if rows == 0 or n == 0:
        return dx
    entry = f"softmax_backward_{row_kernel(variant, n, 'softmax')}"
    y.runtime.dispatch("softmax", entry, [y, dy, dx], row_grid("softmax", entry, rows),
                       {"rows": rows, "n": n, "t_q": 1, "causal": False}, elem=y.elem, shapes=str(y.shape))
    return dx

