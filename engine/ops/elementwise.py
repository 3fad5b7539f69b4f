"""Elementwise ops: add and mul with numpy broadcasting; scale, silu, gelu (tanh form) and exp."""

from __future__ import annotations

import struct

import numpy as np

from engine.ops._common import as_tensor, check_float, grid_1d, pack
from engine.tensor import Tensor

MAX_RANK = 6


def broadcast_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of a contiguous `shape` read at each index of `out_shape` (0 along broadcast axes)."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, stride = [], 1
    for dim in reversed(padded):
        strides.append(0 if dim == 1 else stride)
        stride *= dim
    return strides[::-1]


def _binary(entry: str, a, b) -> Tensor:
    op = entry.split("_")[0]
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: at least one operand must be an engine.Tensor")
    if not isinstance(a, Tensor):
        a, b = b, a  # both ops commute
    if isinstance(b, (int, float)):
        return affine(a, 1.0, float(b)) if op == "add" else affine(a, float(b), 0.0)
    b = as_tensor(b, "b", like=a)
    for name, t in (("a", a), ("b", b)):
        check_float(t, name, op)
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: operands have dtypes {a.dtype} and {b.dtype}; convert one first")
    try:
        out_shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    if len(out_shape) > MAX_RANK:
        raise ValueError(f"{op}: at most {MAX_RANK} dimensions are supported, got {len(out_shape)}")
    out = Tensor.empty(out_shape, a.dtype, a.device)
    rank = len(out_shape)
    pad = [0] * (MAX_RANK * 2 - rank)  # two vec4 slots hold up to 8 values; only `rank` are read
    dims = list(out_shape) + pad + [0] * 2
    a_strides = broadcast_strides(a.shape, out_shape) + pad + [0] * 2
    b_strides = broadcast_strides(b.shape, out_shape) + pad + [0] * 2
    params = pack("IIff", out.size, rank, 0.0, 0.0) + struct.pack("<24I", *dims[:8], *a_strides[:8], *b_strides[:8])
    a.runtime.dispatch("elementwise", entry, [a, b, out], grid_1d(out.size), params, elem=a.elem,
                       shapes=f"{a.shape}, {b.shape}")
    return out


def add(a, b) -> Tensor:
    """a + b with numpy broadcasting; either may be a Python number."""
    return _binary("add_naive", a, b)


def mul(a, b) -> Tensor:
    """a * b with numpy broadcasting; either may be a Python number."""
    return _binary("mul_naive", a, b)


def _unary(entry: str, x: Tensor, alpha: float = 0.0, beta: float = 0.0) -> Tensor:
    op = entry.split("_")[0]
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be an engine.Tensor, got {type(x).__name__}")
    check_float(x, "x", op)
    y = Tensor.empty(x.shape, x.dtype, x.device)
    x.runtime.dispatch("elementwise", entry, [x, y], grid_1d(x.size), pack("IIff", x.size, 0, alpha, beta),
                       elem=x.elem, shapes=str(x.shape))
    return y


def affine(x: Tensor, alpha: float, beta: float = 0.0) -> Tensor:
    """alpha * x + beta."""
    return _unary("affine_naive", x, float(alpha), float(beta))


def scale(x: Tensor, alpha: float) -> Tensor:
    """alpha * x."""
    return affine(x, alpha, 0.0)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x)."""
    return _unary("silu_naive", x)


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return _unary("gelu_naive", x)


def exp(x: Tensor) -> Tensor:
    """e ** x."""
    return _unary("exp_naive", x)
