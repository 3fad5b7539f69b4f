"""Matrix multiply, plain and batched, with all transposes, and its gradient; `linear` on top of it.

The kernels and what each can run are in `engine.ops.matmul_variants` (re-exported here). Which one runs a call
is the per-adapter autotuner's choice for the call's shape class (`engine.ops.matmul_tuning`), else the adapter's
default (`choose_variant`); `variant=` forces one (tests, `wgrpo bench`), and a forced variant that cannot run
the call raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wgrpo.engine.autograd import Function
from wgrpo.engine.dtypes import dtype_name
from wgrpo.engine.errors import InputError, SplitTensorError
from wgrpo.engine.ops._common import as_tensor, check_float, check_weight, starts_on_quads
from wgrpo.engine.ops.matmul_tuning import tuned_variant
from wgrpo.engine.ops.matmul_variants import (VARIANTS, Problem, Tiling, Variant,  # noqa: F401 (re-exported)
                                              choose_variant, eligible_variants)
from wgrpo.engine.tensor import Tensor

@dataclass(frozen=True)
class Window:
    """Rows and columns of a 2-D tensor (stop exclusive, None: to the end) used as a matmul operand or destination
    without a copy: the kernel reads and writes it through a row length and an element offset."""

    tensor: Tensor
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None

    def __post_init__(self):
        if self.tensor.ndim != 2 or self.tensor.is_split:
            raise ValueError(f"matmul: a window needs an unsplit 2-D tensor, got {self.tensor!r}")

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        (rows, cols), (r0, r1), (c0, c1) = self.tensor.shape, self.rows or (0, None), self.cols or (0, None)
        return r0, rows if r1 is None else r1, c0, cols if c1 is None else c1

    @property
    def shape(self) -> tuple[int, int]:
        r0, r1, c0, c1 = self.bounds
        return r1 - r0, c1 - c0

    @property
    def offset(self) -> int:
        r0, _, c0, _ = self.bounds
        return r0 * self.tensor.shape[1] + c0


def _stored(x) -> tuple[Tensor, tuple[int, ...], int, int]:
    """(tensor, shape, stored row length, element offset) of a Tensor or a Window."""
    if isinstance(x, Window):
        return x.tensor, x.shape, x.tensor.shape[1], x.offset
    return x, x.shape, x.shape[-1] if x.ndim else 1, 0


@dataclass(frozen=True)
class _Layout:
    """Sizes of op(A) (M x K) @ op(B) (K x N) over `batch`, with batch strides in elements."""

    batch: int
    m: int
    n: int
    k: int
    stride_a: int
    stride_b: int


def _layout(a_shape, b_shape, transpose_a: bool, transpose_b: bool) -> _Layout:
    for name, shape in (("a", a_shape), ("b", b_shape)):
        if len(shape) not in (2, 3):
            raise ValueError(f"matmul: {name} must be 2-D or batched 3-D, got shape {shape}")
    m, ka = (a_shape[-1], a_shape[-2]) if transpose_a else (a_shape[-2], a_shape[-1])
    kb, n = (b_shape[-1], b_shape[-2]) if transpose_b else (b_shape[-2], b_shape[-1])
    if ka != kb:
        raise ValueError(f"matmul: inner sizes differ: op(a) of {a_shape} is {m}x{ka}, op(b) of {b_shape} is "
                         f"{kb}x{n} (transpose_a={transpose_a}, transpose_b={transpose_b})")
    batches = {shape[0] for shape in (a_shape, b_shape) if len(shape) == 3}
    if len(batches) > 1:
        raise ValueError(f"matmul: batch sizes differ: a {a_shape}, b {b_shape}")
    batch = batches.pop() if batches else 1
    return _Layout(batch, m, n, ka, m * ka if len(a_shape) == 3 else 0, ka * n if len(b_shape) == 3 else 0)


def weight_storage(a: Tensor, b: Tensor) -> str:
    """How the kernel reads b: as `elem` (a's element type), or packed 16-bit pairs ("bf16", "f16") widened to
    f32 when f32 activations meet 16-bit weights."""
    if b.dtype == a.dtype:
        return "elem"
    if a.elem == "f32" and b.elem in ("bf16", "f16"):
        return b.elem
    raise TypeError(f"matmul: a is {dtype_name(a.dtype)} but b is {dtype_name(b.dtype)}; b may differ only as "
                    f"bfloat16 or float16 weights of float32 activations")


def matmul_kernel(a, b: Tensor, transpose_a: bool = False, transpose_b: bool = False,
                  variant: str | None = None, *, out=None, accumulate: bool = False,
                  bias: Tensor | None = None) -> Tensor:
    """Dispatch op(a) @ op(b) (+ bias over the last axis) for checked operands; the result is (M, N) or
    (batch, M, N). With `out` the result is written there (a view or a `Window` is fine), or added to it with
    `accumulate`; `a` may be a `Window` too. A `b` or an `out` held in row blocks (`Tensor.is_split`) is walked
    block by block: a split b gives each block's columns of the result (transpose_b) or its share of the inner
    sum; a split out gets each block's rows. Returns `out`'s tensor (a Window's whole tensor)."""
    a_tensor, a_shape, _, _ = _stored(a)
    shape = _layout(a_shape, b.shape, transpose_a, transpose_b)
    batched = len(a_shape) == 3 or b.ndim == 3
    out_shape = (shape.batch, shape.m, shape.n) if batched else (shape.m, shape.n)
    if out is None:
        if accumulate:
            raise ValueError("matmul: accumulate needs an `out` tensor to add to")
        out = Tensor.empty(out_shape, a_tensor.dtype, a_tensor.device)
    out_tensor, found, _, _ = _stored(out)
    if found != out_shape or out_tensor.dtype != a_tensor.dtype:
        raise ValueError(f"matmul: out must be {dtype_name(a_tensor.dtype)} {out_shape}, got "
                         f"{dtype_name(out_tensor.dtype)} {found}")
    if math.prod(out_shape) == 0:
        return out_tensor
    if b.is_split or out_tensor.is_split:
        _split_matmul(a, b, transpose_a, transpose_b, variant, out, accumulate, bias)
    else:
        _dispatch(a, b, transpose_a, transpose_b, variant, out, accumulate, bias)
    return out_tensor


def _split_matmul(a, b, ta, tb, variant, out, accumulate, bias) -> None:
    """op(a) @ op(b) into out when b or out is held in row blocks (2-D operands only)."""
    what = f"matmul of {_stored(a)[1]} by a {b.shape} operand into {_stored(out)[1]}"
    if isinstance(out, Window) or _stored(a)[0].is_split or len(_stored(a)[1]) != 2 or b.ndim != 2:
        raise SplitTensorError(f"{what}: row blocks are handled for 2-D operands, with a whole `out` and an "
                               f"unsplit `a`")
    if out.is_split:  # rows of C = rows of op(A): a's rows, or its columns when transposed
        if b.is_split:
            raise SplitTensorError(f"{what}: b and out cannot both be split")
        for (start, stop), part in zip(out.row_ranges, out.parts):
            window = _window(a, cols=(start, stop)) if ta else _window(a, rows=(start, stop))
            _dispatch(window, b, ta, tb, variant, part, accumulate, bias)
        return
    for index, ((start, stop), part) in enumerate(zip(b.row_ranges, b.parts)):
        if tb:  # b's rows are columns of C, with their share of the bias
            _dispatch(a, part, ta, True, variant, Window(out, cols=(start, stop)), accumulate, bias, start)
        elif not ta:  # b's rows are the inner dimension: sum each block's share, the bias added once
            _dispatch(_window(a, cols=(start, stop)), part, False, False, variant, out, accumulate or index > 0,
                      bias if index == 0 else None)
        else:
            raise SplitTensorError(f"{what}: a transposed `a` against a split, untransposed `b` is not supported")


def _window(a, rows=None, cols=None) -> Window:
    if isinstance(a, Window):
        raise SplitTensorError("matmul: a window of a window is not supported")
    return Window(a, rows=rows, cols=cols)


def _dispatch(a, b: Tensor, ta: bool, tb: bool, variant, out, accumulate: bool, bias, bias_offset: int = 0) -> None:
    a_tensor, a_shape, lda, offset_a = _stored(a)
    out_tensor, _, ldc, offset_c = _stored(out)
    shape = _layout(a_shape, b.shape, ta, tb)
    device = a_tensor.device
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"matmul: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    weights = weight_storage(a_tensor, b)
    shapes = f"{a_shape}{'^T' if ta else ''} @ {b.shape}{'^T' if tb else ''}"
    problem = Problem(shape.m, shape.n, shape.k, ta, tb, a_tensor.elem, weights, shape.batch, lda, b.shape[-1],
                      offset_a, 0, shape.stride_a, shape.stride_b,
                      aligned_bindings=_bound_at_16(a_tensor) and _bound_at_16(b))
    if variant is None:
        name = tuned_variant(device, problem, choose_variant(device, shape.m))
    else:
        name = variant
        refusal = VARIANTS[name].refusal(device, problem)
        if refusal is not None:
            others = [other for other, s in VARIANTS.items() if s.refusal(device, problem) is None]
            raise InputError(f"matmul: variant {name!r} cannot compute {shapes}: {refusal}; variants that can: "
                             f"{others}")
    spec = VARIANTS[name]
    rows, cols = spec.workgroup_tile()
    grid = (math.ceil(shape.n / cols), math.ceil(shape.m / rows), shape.batch)
    params = {"M": shape.m, "N": shape.n, "K": shape.k, "batch": shape.batch, "trans_a": ta, "trans_b": tb,
              "accumulate": accumulate, "has_bias": bias is not None, "stride_a": shape.stride_a,
              "stride_b": shape.stride_b, "stride_c": shape.m * shape.n, "lda": lda, "ldb": b.shape[-1], "ldc": ldc,
              "offset_a": offset_a, "offset_b": 0, "offset_c": offset_c, "offset_bias": bias_offset}
    # without a bias the binding is unused; `a` fills it (two read-only bindings of one buffer are allowed)
    a_tensor.runtime.dispatch(spec.family, spec.entry, [a_tensor, b, out_tensor, bias if bias is not None else a_tensor],
                              grid, params, elem=a_tensor.elem, weights=weights, constants=spec.constants,
                              shapes=shapes)


def _bound_at_16(tensor: Tensor) -> bool:
    """Whether the tensor's binding starts on a 16-byte boundary (a split tensor is left to the runtime's error)."""
    return starts_on_quads(tensor)


def _sum_batch(grad: Tensor, operand: Tensor) -> Tensor:
    """A batched gradient of an operand that was broadcast over the batch (2-D) is summed over it."""
    from wgrpo.engine.ops.reduce import reduce

    return reduce(grad, "sum", axis=0) if operand.ndim == 2 and grad.ndim == 3 else grad


class _Matmul(Function):
    @staticmethod
    def forward(ctx, a, b, transpose_a, transpose_b, variant):
        ctx.save_for_backward(a, b, transpose_a, transpose_b)
        return matmul_kernel(a, b, transpose_a, transpose_b, variant)

    @staticmethod
    def backward(ctx, dc):
        # C = op(A) op(B): d op(A) = dC op(B)^T and d op(B) = op(A)^T dC, transposed back when the operand was.
        a, b, ta, tb = ctx.saved
        da = db = None
        if ctx.needs_grad[0]:
            da = matmul_kernel(b, dc, tb, True) if ta else matmul_kernel(dc, b, False, not tb)
            da = _sum_batch(da, a)
        if ctx.needs_grad[1]:
            db = matmul_kernel(dc, a, True, ta) if tb else matmul_kernel(a, dc, not ta, False)
            db = _sum_batch(db, b)
        return da, db, None, None, None


def matmul(a, b, transpose_a: bool = False, transpose_b: bool = False, *, variant: str | None = None) -> Tensor:
    """op(a) @ op(b), op transposing the last two axes when asked; differentiable.

    a and b are 2-D, or 3-D with a shared batch size; a 2-D operand with a 3-D one is broadcast over the batch.
    float32 or float16 storage (f16 needs shader-f16), accumulated in f32; b may also be bfloat16 or float16
    weights of a float32 a (read packed, widened in the kernel), and held in row blocks (`Tensor.is_split`).
    """
    if not isinstance(a, Tensor):
        raise TypeError(f"matmul: a must be an engine.Tensor, got {type(a).__name__}")
    b = as_tensor(b, "b", like=a)
    check_float(a, "a", "matmul")
    check_weight(b, "b", "matmul")
    weight_storage(a, b)
    _layout(a.shape, b.shape, transpose_a, transpose_b)  # shape errors before any graph is built
    return _Matmul.apply(a, b, bool(transpose_a), bool(transpose_b), variant)


class _Linear(Function):
    """y = x @ W.T + b in one dispatch (the bias is added as the matmul stores its result)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight, bias is not None)
        return matmul_kernel(x, weight, transpose_b=True, bias=bias)  # (N, out)

    @staticmethod
    def backward(ctx, dy):
        from wgrpo.engine.ops.reduce import reduce

        x, weight, has_bias = ctx.saved
        dx = matmul_kernel(dy, weight) if ctx.needs_grad[0] else None  # (N, in)
        dw = matmul_kernel(dy, x, transpose_a=True) if ctx.needs_grad[1] else None  # (out, in)
        db = reduce(dy, "sum", axis=0) if has_bias and ctx.needs_grad[2] else None  # (out,)
        return dx, dw, db


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias over the last axis of x, weight (out, in) as in torch.nn.Linear; differentiable.

    The weight may be bfloat16 or float16 for a float32 x (frozen weights kept in their checkpoint's dtype) and
    held in row blocks; bias has x's dtype."""
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise TypeError(f"linear: x must be an engine.Tensor of rank >= 1, got {x!r}")
    if weight.ndim != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"linear: weight must be (out, {x.shape[-1]}) for x of shape {x.shape}, got {weight.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must be ({weight.shape[0]},), got {bias.shape}")
    check_float(x, "x", "linear")
    check_weight(weight, "weight", "linear")
    weight_storage(x, weight)  # the weight's dtype is x's, or 16-bit weights of float32 activations
    if bias is not None:
        check_float(bias, "bias", "linear")
        if bias.dtype != x.dtype:
            raise TypeError(f"linear: bias is {dtype_name(bias.dtype)} but x is {dtype_name(x.dtype)}")
    y = _Linear.apply(x.reshape(-1, x.shape[-1]), weight, bias)  # (N, out)
    return y.reshape(*x.shape[:-1], weight.shape[0])
