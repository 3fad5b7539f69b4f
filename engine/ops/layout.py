"""Layout ops that move data without computing on it: transpose (swap two axes).

Tensors are contiguous, so a transpose is a copy through `kernels/transpose.wgsl`. Its gradient is the same
transpose.
"""

from __future__ import annotations

import math

from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import flat_grid
from wgrpo.engine.ops.reduce import check_tensor, normalize_axis
from wgrpo.engine.tensor import Tensor


class _Transpose(Function):
    @staticmethod
    def forward(ctx, x, d0, d1):
        ctx.save_for_backward(d0, d1)
        return transpose_kernel(x, d0, d1)

    @staticmethod
    def backward(ctx, dy):
        d0, d1 = ctx.saved
        return transpose_kernel(dy, d0, d1), None, None


def transpose(x: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    """x with axes dim0 and dim1 swapped (negative counts from the end), as a new contiguous tensor.

    E.g. (B, T, H, D) -> (B, H, T, D) is transpose(x, 1, 2). x must have rank >= 2. Differentiable.
    """
    check_tensor(x, "transpose", min_rank=2)
    d0 = normalize_axis(dim0, x.ndim, x.shape, "transpose", "dim0")
    d1 = normalize_axis(dim1, x.ndim, x.shape, "transpose", "dim1")
    return _Transpose.apply(x, min(d0, d1), max(d0, d1))


def transpose_kernel(x: Tensor, d0: int, d1: int) -> Tensor:
    """Dispatch the transpose of axes d0 < d1 (checked)."""
    out_shape = list(x.shape)
    out_shape[d0], out_shape[d1] = out_shape[d1], out_shape[d0]
    out = Tensor.empty(tuple(out_shape), x.dtype, x.device)
    perm = list(range(x.ndim))
    perm[d0], perm[d1] = d1, d0
    moved = [axis for axis in perm if x.shape[axis] != 1]
    if moved == sorted(moved):
        # The axes longer than 1 keep their order, so the bytes do not move: copy them under the new shape.
        if x.size:
            x.runtime.copy(x, out)
        return out
    view = {"a": math.prod(x.shape[:d0]), "d0": x.shape[d0], "b": math.prod(x.shape[d0 + 1 : d1]),
            "d1": x.shape[d1], "c": math.prod(x.shape[d1 + 1 :])}
    x.runtime.dispatch("transpose", "transpose_naive", [x, out], flat_grid("transpose", "transpose_naive", x.size),
                       {"n": x.size, **view}, elem=x.elem, shapes=f"{x.shape}, dims ({d0}, {d1})")
    return out
