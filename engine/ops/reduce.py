"""Reductions along one axis: sum, max and mean_sq (the mean of squares RMSNorm needs).

x is viewed as (outer, n, inner) around the reduced axis and reduced in one dispatch of `kernels/reduce.wgsl`:
`reduce_columns4` (quads of 4 neighbouring outputs, the axis cut into strips merged in order by one workgroup)
where inner is a multiple of 4, such as a bias gradient's sum over the rows; otherwise `reduce_serial` (one
invocation per output, folding the axis in order) for short axes, `reduce_workgroup` (one workgroup of 256 per
output, strided partials and a tree) for axes of at least 1024 elements (`row_kernel`). Every kernel merges in a
fixed order, so results are deterministic. Accumulation is in f32 whatever the storage dtype.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.autograd import Function, is_grad_enabled
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops._common import ROW_KERNELS, check_float, grid_1d, row_grid, row_kernel, starts_on_quads
from wgrpo.engine.tensor import Tensor

OPS = {"sum": 0, "max": 1, "mean_sq": 2}
COLUMNS = "columns4"  # the variant name of reduce_columns4
VARIANTS = (*ROW_KERNELS, COLUMNS)


def normalize_axis(axis, ndim: int, shape: tuple[int, ...], op: str, name: str = "axis") -> int:
    """`axis` in [0, ndim); negative counts from the end. Raises naming the argument and the shape."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {name}={axis} is out of range for x of shape {shape} (rank {ndim})")
    return int(axis) % ndim


def check_tensor(x, op: str, min_rank: int = 1) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be an engine.Tensor, got {type(x).__name__}")
    check_float(x, "x", op)
    if x.ndim < min_rank:
        raise ValueError(f"{op}: x must have at least {min_rank} dimension(s), got shape {x.shape}")


def reduce(x: Tensor, op: str, axis: int = -1, keepdims: bool = False, *, variant: str | None = None) -> Tensor:
    """Reduce `x` along `axis` with `op` ("sum", "max" or "mean_sq"); `variant` forces a kernel (for tests)."""
    if op not in OPS:
        raise ValueError(f"reduce: op must be one of {sorted(OPS)}, got {op!r}")
    check_tensor(x, op)
    axis = normalize_axis(axis, x.ndim, x.shape, op)
    outer, n, inner = math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1 :])
    if n == 0 and op != "sum":
        raise ValueError(f"{op}: the reduced axis {axis} of x with shape {x.shape} is empty")
    out_shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1 :]
    out = Tensor.empty(out_shape, x.dtype, x.device)
    outputs = outer * inner
    if outputs == 0:
        return out
    entry = f"reduce_{_variant(variant, x, n, inner)}"
    x.runtime.dispatch("reduce", entry, [x, out], _grid(entry, outputs),
                       {"outer": outer, "n": n, "inner": inner, "op": OPS[op]},
                       elem=x.elem, shapes=f"{op} of {x.shape} over axis {axis}")
    return out


# columns4 splits a column's rows into 8 strips at most: with few output quads and many rows, its invocations each
# walk a long strip while the per-row kernels spread the rows over a whole workgroup
FEW_QUADS, MANY_ROWS = 8, 4096


def _variant(variant: str | None, x: Tensor, n: int, inner: int) -> str:
    """columns4 where inner is a multiple of 4 and x binds as whole quads at a 16-byte aligned offset (and the
    output is not a few quads over very many rows), else the per-row kernel `row_kernel` picks; a given `variant`
    (tests force one) is checked instead."""
    columns = inner % 4 == 0 and starts_on_quads(x)
    if variant is None:
        quads = x.size // (n or 1) // 4
        if columns and not (quads < FEW_QUADS and n > MANY_ROWS):
            return COLUMNS
        return row_kernel(None, n, "reduce")
    if variant not in VARIANTS:
        raise InputError(f"reduce: variant must be one of {VARIANTS} or None, got {variant!r}")
    if variant == COLUMNS and not columns:
        raise InputError(f"reduce: the {COLUMNS} variant needs the axes after the reduced one to hold a multiple "
                         f"of 4 elements and x bound at a 16-byte aligned offset, got {inner} elements")
    return variant


def _grid(entry: str, outputs: int) -> tuple[int, int]:
    if entry == f"reduce_{COLUMNS}":  # one workgroup per COLUMN_QUADS output quads
        return grid_1d(math.ceil(outputs / 4 / kernels.load("reduce").constants["COLUMN_QUADS"]), 1)
    return row_grid("reduce", entry, outputs)


class _Reduce(Function):
    """sum and mean_sq; the gradient spreads dy back along the reduced axis."""

    @staticmethod
    def forward(ctx, x, op, axis, keepdims):
        ctx.save_for_backward(x if op == "mean_sq" else None, x.shape, axis)
        return reduce(x, op, axis, keepdims)

    @staticmethod
    def backward(ctx, dy):
        from wgrpo.engine.ops.elementwise import broadcast_to, mul, scale

        x, shape, axis = ctx.saved
        kept = shape[:axis] + (1,) + shape[axis + 1 :]
        spread = broadcast_to(dy.reshape(kept), shape)
        if x is None:
            return spread, None, None, None
        return mul(spread, scale(x, 2.0 / shape[axis])), None, None, None


def _differentiable(x: Tensor, op: str, axis, keepdims: bool) -> Tensor:
    check_tensor(x, op)
    return _Reduce.apply(x, op, normalize_axis(axis, x.ndim, x.shape, op), keepdims)


def sum(x: Tensor, axis: int = -1, keepdims: bool = False) -> Tensor:  # noqa: A001 (the spec's name)
    """The sum of x along `axis` (negative counts from the end), accumulated in f32."""
    return _differentiable(x, "sum", axis, keepdims)


def max(x: Tensor, axis: int = -1, keepdims: bool = False) -> Tensor:  # noqa: A001
    """The maximum of x along `axis`. Not differentiable: call it on detached values or under no_grad()."""
    if isinstance(x, Tensor) and x.requires_grad and is_grad_enabled():
        raise ValueError("max: has no gradient; use x.detach() or engine.autograd.no_grad() around it")
    return reduce(x, "max", axis, keepdims)


def mean_sq(x: Tensor, axis: int = -1, keepdims: bool = False) -> Tensor:
    """The mean of x**2 along `axis`, accumulated in f32 (RMSNorm's statistic)."""
    return _differentiable(x, "mean_sq", axis, keepdims)
