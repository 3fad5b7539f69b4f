"""Elementwise ops: add and mul with numpy broadcasting; scale, silu, gelu (tanh form) and exp; `add_`, an
accumulation in place.

Each public op but `add_` is differentiable: its autograd Function sits right after the kernel call it wraps.
add, mul and add_ with nothing broadcast run the vec4 twins of their kernels (`add_vec4`, ...: quads of 4
elements, the same results to the bit) where the size is a multiple of 4; the scalar entries stay the spec and
the fallback.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.autograd import Function
from wgrpo.engine.errors import SplitTensorError
from wgrpo.engine.ops._common import as_tensor, check_float, flat_grid, grid_1d, invocations, starts_on_quads
from wgrpo.engine.tensor import Tensor

# The vec4 twin of each scalar entry that has one: operands of the output's size, sizes a multiple of 4.
VEC4_ENTRIES = {"add_naive": "add_vec4", "mul_naive": "mul_vec4", "add_inplace_naive": "add_inplace_vec4"}
# Quads per invocation of the vec4 entries. lavapipe pays per invocation as well as per load/store instruction, so
# a short loop of quads helps there (add of (32, 42, 128), lavapipe 2 cores: scalar 1.8 ms; vec4 at 1 quad 1.0 ms,
# 8 quads 0.45, 32 quads 0.39, but fewer invocations to share out on small tensors); GPUs keep one quad per
# invocation, neighbours reading neighbouring quads.
SOFTWARE_QUADS = 8
GPU_QUADS = 1


def _quad_aligned(*tensors: Tensor) -> bool:
    """Whether every tensor (one block each) binds as an array of vec4s: whole quads at a 16-byte aligned offset."""
    return all(t.size > 0 and t.size % 4 == 0 for t in tensors) and starts_on_quads(*tensors)


def _dispatch_same_shape(entry: str, buffers: list[Tensor], n: int, shapes: str, vec4: bool) -> None:
    """Dispatch `entry` over n elements of same-size operands (add_inplace_naive binds MapParams; add/mul_naive
    bind BroadcastParams as one flat dimension) or, where `vec4` is on and every buffer is quad aligned, its vec4
    twin."""
    t = buffers[0]
    if vec4 and entry in VEC4_ENTRIES and _quad_aligned(*buffers):
        vec4_entry = VEC4_ENTRIES[entry]
        quads = SOFTWARE_QUADS if t.device.is_software else GPU_QUADS
        grid = grid_1d(math.ceil(n // 4 / quads), invocations("elementwise", vec4_entry))
        t.runtime.dispatch("elementwise", vec4_entry, buffers, grid, {"n": n, "alpha": 0.0, "beta": 0.0},
                           elem=t.elem, constants={"QUADS": quads}, shapes=shapes)
        return
    if entry == "add_inplace_naive":
        params = {"n": n, "alpha": 0.0, "beta": 0.0}
    else:
        params = {"n": n, "rank": 1, "dims": [n], "a_strides": [1], "b_strides": [1]}
    t.runtime.dispatch("elementwise", entry, buffers, flat_grid("elementwise", entry, n), params, elem=t.elem,
                       shapes=shapes)


def broadcast_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of a contiguous `shape` read at each index of `out_shape` (0 along broadcast axes)."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, stride = [], 1
    for dim in reversed(padded):
        strides.append(0 if dim == 1 else stride)
        stride *= dim
    return strides[::-1]


def merge_dims(dims, a_strides, b_strides) -> tuple[list[int], list[int], list[int]]:
    """Fold each dimension into the next inner one where both operands walk them as one (so same-shape
    operands become one flat dimension and the kernel needs no index arithmetic)."""
    out_d, out_a, out_b = [], [], []
    for d, sa, sb in zip(dims, a_strides, b_strides):
        if d == 1:
            continue
        if out_d and out_a[-1] == sa * d and out_b[-1] == sb * d:
            out_d[-1] *= d
            out_a[-1], out_b[-1] = sa, sb
        else:
            out_d.append(d), out_a.append(sa), out_b.append(sb)
    return (out_d, out_a, out_b) if out_d else ([1], [0], [0])


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
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    return (_Add if op == "add" else _Mul).apply(a, b)


def binary_kernel(entry: str, a: Tensor, b: Tensor | None, out_shape: tuple[int, ...] | None = None,
                  vec4: bool = True) -> Tensor:
    """Dispatch a broadcasting kernel of elementwise.wgsl (checked operands); `b` is None for broadcast_naive.
    Operands of the output's size run the entry's vec4 twin where it has one and the size allows, unless `vec4` is
    off (tests check the scalar entry so)."""
    out_shape = np.broadcast_shapes(a.shape, b.shape if b is not None else out_shape)
    max_rank = kernels.load("elementwise").constants["MAX_RANK"]
    if len(out_shape) > max_rank:
        raise ValueError(f"{entry}: at most {max_rank} dimensions are supported, got {len(out_shape)}")
    out = Tensor.empty(out_shape, a.dtype, a.device)
    if out.is_split or a.is_split or (b is not None and b.is_split):
        return _binary_blocks(entry, a, b, out, vec4)
    if b is not None and a.size == b.size == out.size:  # nothing broadcast: both read in order, as one dimension
        _dispatch_same_shape(entry, [a, b, out], out.size, f"{a.shape}, {b.shape}", vec4)
        return out
    dims, a_strides, b_strides = merge_dims(
        out_shape, broadcast_strides(a.shape, out_shape),
        broadcast_strides(b.shape, out_shape) if b is not None else [0] * len(out_shape))
    # the arrays hold 8 values (two vec4s) each; only the first `rank` are read
    params = {"n": out.size, "rank": len(dims), "dims": dims, "a_strides": a_strides, "b_strides": b_strides}
    buffers = [a, b, out] if b is not None else [a, out]
    a.runtime.dispatch("elementwise", entry, buffers, flat_grid("elementwise", entry, out.size), params,
                       elem=a.elem, shapes=f"{a.shape}, {b.shape if b is not None else out_shape}")
    return out


def _binary_blocks(entry: str, a: Tensor, b: Tensor | None, out: Tensor, vec4: bool) -> Tensor:
    """A binary kernel over tensors held in row blocks: operands of the output's shape are split alike (the split
    depends on the shape alone), so each block is one dispatch; broadcasting into a split tensor is refused."""
    if a.shape != out.shape or b is None or b.shape != out.shape:
        raise SplitTensorError(f"{entry}: broadcasting {a.shape} and {None if b is None else b.shape} into a tensor "
                               f"of shape {out.shape} held in row blocks is not supported")
    for a_part, b_part, out_part in zip(a.parts, b.parts, out.parts, strict=True):
        _dispatch_same_shape(entry, [a_part, b_part, out_part], out_part.size,
                             f"{a_part.shape}, {b_part.shape} (a row block)", vec4)
    return out


class _BroadcastTo(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.save_for_backward(x.shape)
        return binary_kernel("broadcast_naive", x, None, shape)

    @staticmethod
    def backward(ctx, dy):
        return sum_to_shape(dy, ctx.saved[0]), None


def broadcast_to(x: Tensor, shape) -> Tensor:
    """x repeated along broadcast axes to `shape` (numpy rules), as a new contiguous tensor."""
    _check_unary(x, "broadcast_to")
    shape = tuple(int(s) for s in shape)
    try:
        fits = np.broadcast_shapes(x.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"broadcast_to: x of shape {x.shape} cannot be broadcast to {shape}")
    return _BroadcastTo.apply(x, shape)


def sum_to_shape(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum a broadcast result's gradient back down to an operand's shape."""
    from wgrpo.engine.ops.reduce import sum as reduce_sum

    lead = g.ndim - len(shape)
    for axis in range(g.ndim):
        if axis < lead or (shape[axis - lead] == 1 and g.shape[axis] != 1):
            g = reduce_sum(g, axis=axis, keepdims=True)
    return g.reshape(shape) if g.shape != tuple(shape) else g


class _Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a.shape, b.shape)
        return binary_kernel("add_naive", a, b)

    @staticmethod
    def backward(ctx, dy):
        a_shape, b_shape = ctx.saved
        return (sum_to_shape(dy, a_shape) if ctx.needs_grad[0] else None,
                sum_to_shape(dy, b_shape) if ctx.needs_grad[1] else None)


class _Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return binary_kernel("mul_naive", a, b)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved
        return (sum_to_shape(binary_kernel("mul_naive", dy, b), a.shape) if ctx.needs_grad[0] else None,
                sum_to_shape(binary_kernel("mul_naive", dy, a), b.shape) if ctx.needs_grad[1] else None)


def add(a, b) -> Tensor:
    """a + b with numpy broadcasting; either may be a Python number."""
    return _binary("add_naive", a, b)


def add_(acc: Tensor, b: Tensor, vec4: bool = True) -> Tensor:
    """acc += b in place (same shape and dtype, no broadcasting), outside autograd; returns acc. Computes what
    `add(acc, b)` computes, to the bit. Tensors held in row blocks are split alike (the split is the shape's).
    `vec4` off keeps the scalar entry where the vec4 one would apply (for tests)."""
    for name, t in (("acc", acc), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"add_: {name} must be an engine.Tensor, got {type(t).__name__}")
        check_float(t, name, "add_")
    if acc.shape != b.shape or acc.dtype != b.dtype:
        raise ValueError(f"add_: acc {acc.shape} {acc.dtype} and b {b.shape} {b.dtype} must have one shape and dtype")
    if b.device is not acc.device:
        raise ValueError(f"add_: b is on {b.device.name} but acc is on {acc.device.name}")
    if acc.row_ranges != b.row_ranges:
        raise SplitTensorError(f"add_: acc is held in row blocks {acc.row_ranges} but b in {b.row_ranges}")
    for acc_part, b_part in zip(acc.parts, b.parts, strict=True):
        _dispatch_same_shape("add_inplace_naive", [b_part, acc_part], acc_part.size, str(acc_part.shape), vec4)
    return acc


def mul(a, b) -> Tensor:
    """a * b with numpy broadcasting; either may be a Python number."""
    return _binary("mul_naive", a, b)


def unary_kernel(entry: str, x: Tensor, alpha: float = 0.0, beta: float = 0.0, dy: Tensor | None = None) -> Tensor:
    """Dispatch a unary kernel, or with `dy` the matching `*_backward_naive` kernel (x, dy) -> dx."""
    y = Tensor.empty(x.shape, x.dtype, x.device)  # in row blocks like x, when x is held so
    dy_parts = dy.parts if dy is not None else [None] * len(x.parts)
    for x_part, dy_part, y_part in zip(x.parts, dy_parts, y.parts, strict=True):
        buffers = [x_part, y_part] if dy_part is None else [x_part, dy_part, y_part]
        x.runtime.dispatch("elementwise", entry, buffers, flat_grid("elementwise", entry, x_part.size),
                           {"n": x_part.size, "alpha": alpha, "beta": beta}, elem=x.elem, shapes=str(x_part.shape))
    return y


def _check_unary(x, op: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be an engine.Tensor, got {type(x).__name__}")
    check_float(x, "x", op)


class _Affine(Function):
    @staticmethod
    def forward(ctx, x, alpha, beta):
        ctx.save_for_backward(alpha)
        return unary_kernel("affine_naive", x, alpha, beta)

    @staticmethod
    def backward(ctx, dy):
        (alpha,) = ctx.saved
        return unary_kernel("affine_naive", dy, alpha, 0.0), None, None


class _Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = unary_kernel("exp_naive", x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return binary_kernel("mul_naive", dy, y)


class _Activation(Function):
    """silu and gelu: the backward kernel takes x and dy."""

    entry = ""

    @classmethod
    def forward(cls, ctx, x):
        ctx.save_for_backward(x)
        return unary_kernel(f"{cls.entry}_naive", x)

    @classmethod
    def backward(cls, ctx, dy):
        (x,) = ctx.saved
        return unary_kernel(f"{cls.entry}_backward_naive", x, dy=dy)


class _Silu(_Activation):
    entry = "silu"


class _Gelu(_Activation):
    entry = "gelu"


def affine(x: Tensor, alpha: float, beta: float = 0.0) -> Tensor:
    """alpha * x + beta."""
    _check_unary(x, "affine")
    return _Affine.apply(x, float(alpha), float(beta))


def scale(x: Tensor, alpha: float) -> Tensor:
    """alpha * x."""
    return affine(x, alpha, 0.0)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x)."""
    _check_unary(x, "silu")
    return _Silu.apply(x)


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    _check_unary(x, "gelu")
    return _Gelu.apply(x)


def exp(x: Tensor) -> Tensor:
    """e ** x."""
    _check_unary(x, "exp")
    return _Exp.apply(x)
