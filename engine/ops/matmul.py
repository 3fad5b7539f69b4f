"""Matrix multiply, plain and batched, with all transposes, and its gradient; `linear` on top of it.

`kernels/matmul.wgsl` has a readable `matmul_naive` and faster variants; `choose_variant` picks one per adapter
from what was measured (see the table in `VARIANTS`), and `variant=` forces one (tests, `wgrpo bench`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wgrpo import kernels
from wgrpo.engine.autograd import Function
from wgrpo.engine.device import Device
from wgrpo.engine.ops._common import as_tensor, check_float
from wgrpo.engine.tensor import Tensor


@dataclass(frozen=True)
class Variant:
    """One entry of matmul.wgsl. A workgroup of (X, Y, 1) invocations (its @workgroup_size) covers
    `tile_m` * Y rows and `tile_n` * X columns of C (see each entry's header)."""

    entry: str
    tile_m: int
    tile_n: int
    needs_subgroups: bool = False

    def workgroup_tile(self) -> tuple[int, int]:
        """(rows, columns) of C one workgroup computes."""
        x, y, _ = kernels.workgroup_size("matmul", self.entry)
        return self.tile_m * y, self.tile_n * x


VARIANTS = {
    "naive": Variant("matmul_naive", tile_m=1, tile_n=1),
    "reg8x4": Variant("matmul_reg8x4", tile_m=8, tile_n=4),
    "sg16x4": Variant("matmul_sg16x4", tile_m=16, tile_n=4, needs_subgroups=True),
    "sg32x4": Variant("matmul_sg32x4", tile_m=32, tile_n=4, needs_subgroups=True),
}


def choose_variant(device: Device, m: int) -> str:
    """The fastest variant measured for this kind of adapter.

    On lavapipe (a CPU adapter, subgroups of 8) sharing rows of A through subgroup broadcasts is 3-4x faster
    than plain register blocking: sg32x4 reaches ~45 GFLOP/s at 512^3 on 2 cores, reg8x4 ~13, naive ~2.3.
    The subgroup variants are verified only where subgroups are 8 wide, so hardware adapters get reg8x4 until
    measured there.
    """
    if device.is_software and device.has_subgroups:
        return "sg32x4" if m >= 32 else "sg16x4"
    return "reg8x4"


@dataclass(frozen=True)
class _Layout:
    """Sizes of op(A) (M x K) @ op(B) (K x N) over `batch`, with batch strides in elements."""

    batch: int
    m: int
    n: int
    k: int
    stride_a: int
    stride_b: int


def _layout(a: Tensor, b: Tensor, transpose_a: bool, transpose_b: bool) -> _Layout:
    for name, t in (("a", a), ("b", b)):
        if t.ndim not in (2, 3):
            raise ValueError(f"matmul: {name} must be 2-D or batched 3-D, got shape {t.shape}")
    m, ka = (a.shape[-1], a.shape[-2]) if transpose_a else (a.shape[-2], a.shape[-1])
    kb, n = (b.shape[-1], b.shape[-2]) if transpose_b else (b.shape[-2], b.shape[-1])
    if ka != kb:
        raise ValueError(f"matmul: inner sizes differ: op(a) of {a.shape} is {m}x{ka}, op(b) of {b.shape} is "
                         f"{kb}x{n} (transpose_a={transpose_a}, transpose_b={transpose_b})")
    batches = {t.shape[0] for t in (a, b) if t.ndim == 3}
    if len(batches) > 1:
        raise ValueError(f"matmul: batch sizes differ: a {a.shape}, b {b.shape}")
    batch = batches.pop() if batches else 1
    return _Layout(batch, m, n, ka, m * ka if a.ndim == 3 else 0, ka * n if b.ndim == 3 else 0)


def matmul_kernel(a: Tensor, b: Tensor, transpose_a: bool = False, transpose_b: bool = False,
                  variant: str | None = None, *, out: Tensor | None = None, accumulate: bool = False,
                  bias: Tensor | None = None) -> Tensor:
    """Dispatch op(a) @ op(b) (+ bias over the last axis) for checked operands; the result is (M, N) or
    (batch, M, N). With `out` the result is written there (a view is fine), or added to it with `accumulate`."""
    shape = _layout(a, b, transpose_a, transpose_b)
    batched = a.ndim == 3 or b.ndim == 3
    out_shape = (shape.batch, shape.m, shape.n) if batched else (shape.m, shape.n)
    if out is None:
        if accumulate:
            raise ValueError("matmul: accumulate needs an `out` tensor to add to")
        out = Tensor.empty(out_shape, a.dtype, a.device)
    elif out.shape != out_shape or out.dtype != a.dtype:
        raise ValueError(f"matmul: out must be {a.dtype} {out_shape}, got {out.dtype} {out.shape}")
    if out.size == 0:
        return out
    name = variant or choose_variant(a.device, shape.m)
    if name not in VARIANTS:
        raise ValueError(f"matmul: variant must be one of {sorted(VARIANTS)}, got {name!r}")
    spec = VARIANTS[name]
    if spec.needs_subgroups and not a.device.has_subgroups:
        raise ValueError(f"matmul: variant {name!r} needs subgroups, which {a.device.name} lacks")
    rows, cols = spec.workgroup_tile()
    grid = (math.ceil(shape.n / cols), math.ceil(shape.m / rows), shape.batch)
    params = {"M": shape.m, "N": shape.n, "K": shape.k, "batch": shape.batch, "trans_a": transpose_a,
              "trans_b": transpose_b, "accumulate": accumulate, "has_bias": bias is not None,
              "stride_a": shape.stride_a, "stride_b": shape.stride_b, "stride_c": shape.m * shape.n}
    # without a bias the binding is unused; `a` fills it (two read-only bindings of one buffer are allowed)
    a.runtime.dispatch("matmul", spec.entry, [a, b, out, bias if bias is not None else a], grid, params,
                       elem=a.elem,
                       shapes=f"{a.shape}{'^T' if transpose_a else ''} @ {b.shape}{'^T' if transpose_b else ''}")
    return out


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
    float32 or float16 storage (f16 needs shader-f16), accumulated in f32.
    """
    if not isinstance(a, Tensor):
        raise TypeError(f"matmul: a must be an engine.Tensor, got {type(a).__name__}")
    b = as_tensor(b, "b", like=a)
    for name, t in (("a", a), ("b", b)):
        check_float(t, name, "matmul")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a is {a.dtype} but b is {b.dtype}")
    _layout(a, b, transpose_a, transpose_b)  # shape errors before any graph is built
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
    """x @ weight.T + bias over the last axis of x, weight (out, in) as in torch.nn.Linear; differentiable."""
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise TypeError(f"linear: x must be an engine.Tensor of rank >= 1, got {x!r}")
    if weight.ndim != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"linear: weight must be (out, {x.shape[-1]}) for x of shape {x.shape}, got {weight.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must be ({weight.shape[0]},), got {bias.shape}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None:
            check_float(t, name, "linear")
            if t.dtype != x.dtype:
                raise TypeError(f"linear: {name} is {t.dtype} but x is {x.dtype}")
    y = _Linear.apply(x.reshape(-1, x.shape[-1]), weight, bias)  # (N, out)
    return y.reshape(*x.shape[:-1], weight.shape[0])
