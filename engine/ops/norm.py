"""RMSNorm over the last axis (Hugging Face Llama / Qwen2 semantics) and its backward; `add_rmsnorm` fuses a
block's residual add with the RMSNorm that follows it (one dispatch instead of two).

y = x * rsqrt(mean(x^2, last axis) + eps) * w, computed in f32 whatever the storage dtype. The forward keeps
rstd (f32, one per row) for the backward. Kernels in `kernels/rmsnorm.wgsl`: `rmsnorm_forward` (one invocation
per row), `rmsnorm_backward_dx` (one per row), `rmsnorm_backward_dw` (one per channel, summing the rows in order,
so dw is deterministic). Note: HF rounds x * rstd to the input dtype before multiplying by w; here the product is
rounded once, so f16 results may differ from HF's by one f16 rounding.

Each kernel has a vec4 twin (`rmsnorm_forward4`, ...: quads of 4 channels, for a last axis that is a multiple of
4) that runs where the sizes allow (`variant`); `rmsnorm_backward_dw4` also cuts the rows into strips summed by
one workgroup, in a fixed order. The scalar entries stay the spec and the fallback.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import VEC4_VARIANTS, check_float, flat_grid, grid_1d, starts_on_quads, vec4_variant
from wgrpo.engine.tensor import Tensor

VARIANTS = VEC4_VARIANTS
# Rows per workgroup of the per-row vec4 entries (ROW_WG). A decode step normalizes a few dozen rows: on a CPU
# adapter smaller workgroups share them among the cores (32 rows of 128 on lavapipe, 2 cores: 0.045 ms at 16,
# 0.06 at 64, the same at 1344 rows); GPUs keep 64.
SOFTWARE_ROW_WG = 16
GPU_ROW_WG = 64


def _variant(variant: str | None, tensors: list[Tensor], n: int, op: str) -> str:
    """"vec4" where the last axis n is a multiple of 4 and every tensor binds as whole quads at a 16-byte aligned
    offset, else "scalar"; a given `variant` (tests force one) is checked instead."""
    # a tensor held in row blocks passes here; the dispatch refuses it, naming the binding
    aligned = n > 0 and n % 4 == 0 and starts_on_quads(*tensors)
    return vec4_variant(variant, aligned, op, f"a last axis that is a multiple of 4 and tensors bound at 16-byte "
                                              f"aligned offsets, got a last axis of {n}")


def _row_entry(entry: str, kind: str) -> str:
    return entry + "4" if kind == "vec4" else entry


def _dispatch_rows(x: Tensor, entry: str, buffers: list[Tensor], rows: int, params: dict) -> None:
    """Dispatch a per-row entry (one invocation per row): the scalar one in workgroups of its WGSL size, the vec4
    one in workgroups of ROW_WG, chosen per adapter kind."""
    shapes = f"x {x.shape}, w {buffers[1].shape}"
    if not entry.endswith("4"):
        x.runtime.dispatch("rmsnorm", entry, buffers, flat_grid("rmsnorm", entry, rows), params, elem=x.elem,
                           shapes=shapes)
        return
    row_wg = SOFTWARE_ROW_WG if x.device.is_software else GPU_ROW_WG
    x.runtime.dispatch("rmsnorm", entry, buffers, grid_1d(rows, row_wg), params, elem=x.elem,
                       constants={"ROW_WG": row_wg}, shapes=shapes)


def _dw_grid(entry: str, n: int) -> tuple[int, int]:
    """rmsnorm_backward_dw: one invocation per channel; its vec4 twin one workgroup per COLUMN_QUADS quads."""
    if entry.endswith("4"):
        return grid_1d(math.ceil(n / 4 / kernels.load("rmsnorm").constants["COLUMN_QUADS"]), 1)
    return flat_grid("rmsnorm", entry, n)


def _check(x, w, op: str) -> None:
    for name, t in (("x", x), ("w", w)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be an engine.Tensor, got {type(t).__name__}")
        check_float(t, name, op)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least 1 dimension, got shape {x.shape}")
    if w.shape != (x.shape[-1],):
        raise ValueError(f"{op}: w must have shape ({x.shape[-1]},) (the last axis of x with shape {x.shape}), "
                         f"got {w.shape}")
    if x.dtype != w.dtype:
        raise TypeError(f"{op}: x is {x.dtype} but w is {w.dtype}; convert one first")
    if x.device is not w.device:
        raise ValueError(f"{op}: x is on {x.device.name} but w is on {w.device.name}")


def rmsnorm_forward(x: Tensor, w: Tensor, eps: float = 1e-6, variant: str | None = None) -> tuple[Tensor, Tensor]:
    """The forward kernel alone (no autograd): (y, rstd) with y like x and rstd float32 of shape x.shape[:-1].
    `variant`: "scalar", "vec4" (a last axis that is a multiple of 4) or None (vec4 where it applies)."""
    _check(x, w, "rmsnorm")
    n = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    if n == 0 and rows:
        raise ValueError(f"rmsnorm: the last axis of x with shape {x.shape} is empty")
    entry = _row_entry("rmsnorm_forward", _variant(variant, [x, w], n, "rmsnorm"))
    y = Tensor.empty(x.shape, x.dtype, x.device)
    rstd = Tensor.empty(x.shape[:-1], np.float32, x.device)
    _dispatch_rows(x, entry, [x, w, y, rstd], rows, {"rows": rows, "n": n, "eps": eps})
    return y, rstd


def add_rmsnorm_forward(x: Tensor, residual: Tensor, w: Tensor, eps: float = 1e-6,
                        variant: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The fused forward kernel alone (checked operands, no autograd): (x + residual, y, rstd) with y the RMSNorm
    of the sum. `variant` as in `rmsnorm_forward`."""
    n = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    entry = _row_entry("add_rmsnorm_forward", _variant(variant, [x, w, residual], n, "add_rmsnorm"))
    total = Tensor.empty(x.shape, x.dtype, x.device)
    y = Tensor.empty(x.shape, x.dtype, x.device)
    rstd = Tensor.empty(x.shape[:-1], np.float32, x.device)
    _dispatch_rows(x, entry, [x, w, y, rstd, residual, total], rows, {"rows": rows, "n": n, "eps": eps})
    return total, y, rstd


def rmsnorm_backward(x: Tensor, w: Tensor, rstd: Tensor, dy: Tensor, *, need_dx: bool = True,
                     need_dw: bool = True, variant: str | None = None) -> tuple[Tensor | None, Tensor | None]:
    """The backward kernels alone: (dx, dw) for the gradient dy of y = rmsnorm(x, w), given the forward's rstd.
    `variant` as in `rmsnorm_forward`."""
    _check(x, w, "rmsnorm_backward")
    if not isinstance(dy, Tensor) or dy.shape != x.shape or dy.dtype != x.dtype:
        raise ValueError(f"rmsnorm_backward: dy must be a {x.dtype} Tensor of shape {x.shape}, got "
                         f"{getattr(dy, 'shape', type(dy).__name__)} {getattr(dy, 'dtype', '')}")
    if not isinstance(rstd, Tensor) or rstd.shape != x.shape[:-1] or rstd.dtype != np.float32:
        raise ValueError(f"rmsnorm_backward: rstd must be a float32 Tensor of shape {x.shape[:-1]}, got "
                         f"{getattr(rstd, 'shape', type(rstd).__name__)} {getattr(rstd, 'dtype', '')}")
    n = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    kind = _variant(variant, [x, w, dy], n, "rmsnorm_backward")
    params = {"rows": rows, "n": n, "eps": 0.0}  # eps is the forward's, already in rstd
    shapes = f"x {x.shape}, w {w.shape}"
    dx = dw = None
    if need_dx:
        dx = Tensor.empty(x.shape, x.dtype, x.device)
        _dispatch_rows(x, _row_entry("rmsnorm_backward_dx", kind), [x, w, rstd, dy, dx], rows, params)
    if need_dw:
        dw = Tensor.empty(w.shape, w.dtype, w.device)
        entry = _row_entry("rmsnorm_backward_dw", kind)
        x.runtime.dispatch("rmsnorm", entry, [x, rstd, dy, dw], _dw_grid(entry, n), params, elem=x.elem,
                           shapes=shapes)
    return dx, dw


class _RMSNorm(Function):
    @staticmethod
    def forward(ctx, x, w, eps):
        y, rstd = rmsnorm_forward(x, w, eps)
        ctx.save_for_backward(x, w, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, rstd = ctx.saved
        dx, dw = rmsnorm_backward(x, w, rstd, dy, need_dx=ctx.needs_grad[0], need_dw=ctx.needs_grad[1])
        return dx, dw, None


def rmsnorm(x: Tensor, w: Tensor, eps: float = 1e-6) -> Tensor:
    """RMSNorm over the last axis: x (..., C), w (C,) -> y (..., C) = x * rsqrt(mean(x^2) + eps) * w."""
    _check(x, w, "rmsnorm")
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"rmsnorm: eps must be >= 0, got {eps}")
    return _RMSNorm.apply(x, w, eps)


class _AddRMSNorm(Function):
    """(s, y) = (x + r, rmsnorm(x + r, w)): the gradient of s is the residual stream's, that of y the norm's."""

    @staticmethod
    def forward(ctx, x, residual, w, eps):
        total, y, rstd = add_rmsnorm_forward(x, residual, w, eps)
        ctx.save_for_backward(total, w, rstd)
        return total, y

    @staticmethod
    def backward(ctx, d_total, dy):
        from wgrpo.engine.ops.elementwise import add

        total, w, rstd = ctx.saved
        d_sum, dw = d_total, None
        if dy is not None:
            d_norm, dw = rmsnorm_backward(total, w, rstd, dy, need_dw=ctx.needs_grad[2])
            d_sum = d_norm if d_sum is None else add(d_sum, d_norm)
        return d_sum, d_sum, dw, None


def add_rmsnorm(x: Tensor, residual: Tensor, w: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(x + residual, rmsnorm(x + residual, w, eps)) in one dispatch: a block's residual add and the next norm."""
    _check(x, w, "add_rmsnorm")
    if not isinstance(residual, Tensor) or residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(f"add_rmsnorm: residual must be a {x.dtype} Tensor of shape {x.shape}, got "
                         f"{getattr(residual, 'dtype', type(residual).__name__)} {getattr(residual, 'shape', '')}")
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"add_rmsnorm: eps must be >= 0, got {eps}")
    return _AddRMSNorm.apply(x, residual, w, eps)
