"""SwiGLU, the Llama / Qwen2 MLP activation: silu(gate) * up, and its backward in one kernel.

Kernels in `kernels/swiglu.wgsl`: `swiglu_forward`, `swiglu_backward` (d gate and d up in one pass), and
`swiglu_fused_forward`, `swiglu_fused_backward` for gate and up held side by side in one tensor, the output of
one matmul on the MLP's fused gate/up weight (`swiglu_fused`). Each has a vec4 twin (`*4`: aligned quads of 4
elements, `QUADS` of them per invocation) that this module picks when the sizes allow (`variant`); the scalar
entries stay the spec and the fallback.
"""

from __future__ import annotations

import math

from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import VEC4_VARIANTS, check_float, flat_grid, grid_1d, invocations, vec4_variant
from wgrpo.engine.tensor import Tensor

VARIANTS = VEC4_VARIANTS
# Quads per invocation of the vec4 entries. Lavapipe pays per load/store instruction and per invocation, so a
# small loop of contiguous quads helps (fused forward on (1344, 768), lavapipe 2 cores: scalar 6.6 ms, 1 quad 2.3,
# 4 quads 1.1, 8 quads 0.94, 16 quads 0.81 but 16x fewer invocations for small tensors); GPUs keep one quad per
# invocation, where neighbouring invocations read neighbouring quads (coalesced).
SOFTWARE_QUADS = 8
GPU_QUADS = 1


def _dispatch(t: Tensor, entry: str, variant: str, buffers: list, n: int, width: int, shapes: str) -> None:
    """Dispatch `entry` (its scalar name; the vec4 twin ends in 4) over n elements of out."""
    if variant == "scalar":
        t.runtime.dispatch("swiglu", entry, buffers, flat_grid("swiglu", entry, n), {"n": n, "width": width},
                           elem=t.elem, shapes=shapes)
        return
    entry += "4"
    quads = SOFTWARE_QUADS if t.device.is_software else GPU_QUADS
    grid = grid_1d(math.ceil(n / (4 * quads)), invocations("swiglu", entry))
    t.runtime.dispatch("swiglu", entry, buffers, grid, {"n": n, "width": width}, elem=t.elem,
                       constants={"QUADS": quads}, shapes=shapes)


def _check(gate, up, op: str) -> None:
    for name, t in (("gate", gate), ("up", up)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be an engine.Tensor, got {type(t).__name__}")
        check_float(t, name, op)
    if gate.shape != up.shape:
        raise ValueError(f"{op}: gate has shape {gate.shape} but up has shape {up.shape}; they must match")
    if gate.dtype != up.dtype:
        raise TypeError(f"{op}: gate is {gate.dtype} but up is {up.dtype}; convert one first")
    if gate.device is not up.device:
        raise ValueError(f"{op}: gate is on {gate.device.name} but up is on {up.device.name}")


def _plain_variant(n: int, variant: str | None, op: str) -> str:
    return vec4_variant(variant, n > 0 and n % 4 == 0, op, f"a size that is a multiple of 4, got {n} elements")


def swiglu_forward(gate: Tensor, up: Tensor, variant: str | None = None) -> Tensor:
    """The forward kernel alone (no autograd): silu(gate) * up. `variant`: "scalar", "vec4" (sizes a multiple
    of 4) or None (vec4 where it applies)."""
    _check(gate, up, "swiglu")
    kind = _plain_variant(gate.size, variant, "swiglu")
    out = Tensor.empty(gate.shape, gate.dtype, gate.device)
    _dispatch(gate, "swiglu_forward", kind, [gate, up, out], gate.size, 0, str(gate.shape))
    return out


def swiglu_backward(gate: Tensor, up: Tensor, dy: Tensor, variant: str | None = None) -> tuple[Tensor, Tensor]:
    """The backward kernel alone: (d gate, d up) of out = silu(gate) * up for the gradient dy of out.
    `variant` as in `swiglu_forward`."""
    _check(gate, up, "swiglu_backward")
    if not isinstance(dy, Tensor):
        raise TypeError(f"swiglu_backward: dy must be an engine.Tensor, got {type(dy).__name__}")
    if dy.shape != gate.shape or dy.dtype != gate.dtype:
        raise ValueError(f"swiglu_backward: dy is {dy.shape} {dy.dtype}, expected {gate.shape} {gate.dtype}")
    kind = _plain_variant(gate.size, variant, "swiglu_backward")
    dgate = Tensor.empty(gate.shape, gate.dtype, gate.device)
    dup = Tensor.empty(gate.shape, gate.dtype, gate.device)
    _dispatch(gate, "swiglu_backward", kind, [gate, up, dy, dgate, dup], gate.size, 0, str(gate.shape))
    return dgate, dup


class _SwiGLU(Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return swiglu_forward(gate, up)

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved
        dgate, dup = swiglu_backward(gate, up, dy)
        return (dgate if ctx.needs_grad[0] else None, dup if ctx.needs_grad[1] else None)


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up elementwise (the Llama MLP's act(gate_proj(x)) * up_proj(x)); same shapes and dtype."""
    _check(gate, up, "swiglu")
    return _SwiGLU.apply(gate, up)


def _check_fused(gate_up, op: str) -> int:
    """I, the width of gate (and of up) in gate_up (..., 2I)."""
    if not isinstance(gate_up, Tensor):
        raise TypeError(f"{op}: gate_up must be an engine.Tensor, got {type(gate_up).__name__}")
    check_float(gate_up, "gate_up", op)
    if gate_up.ndim < 1 or gate_up.shape[-1] % 2:
        raise ValueError(f"{op}: gate_up must have an even last axis (gate's I columns, then up's), got shape "
                         f"{gate_up.shape}")
    return gate_up.shape[-1] // 2


def _fused_variant(gate_up: Tensor, width: int, variant: str | None, op: str) -> str:
    # with I % 4 == 0 every quad of gate_up lies in gate or in up, and every size is a multiple of 4
    return vec4_variant(variant, gate_up.size > 0 and width % 4 == 0, op,
                    f"I (half the last axis) a multiple of 4, got shape {gate_up.shape}")


def swiglu_fused_forward(gate_up: Tensor, variant: str | None = None) -> Tensor:
    """The forward kernel alone (no autograd): silu(gate_up[..., :I]) * gate_up[..., I:], shape (..., I).
    `variant`: "scalar", "vec4" (I a multiple of 4) or None (vec4 where it applies)."""
    width = _check_fused(gate_up, "swiglu_fused")
    kind = _fused_variant(gate_up, width, variant, "swiglu_fused")
    out = Tensor.empty((*gate_up.shape[:-1], width), gate_up.dtype, gate_up.device)
    # binding order: out (3, or 11 as vec4), then gate_up (7, or 15)
    _dispatch(gate_up, "swiglu_fused_forward", kind, [out, gate_up], out.size, width, str(gate_up.shape))
    return out


def swiglu_fused_backward(gate_up: Tensor, dy: Tensor, variant: str | None = None) -> Tensor:
    """The backward kernel alone: the gradient (..., 2I) of gate_up (d gate, then d up, in each row) for the
    gradient dy (..., I) of swiglu_fused(gate_up). `variant` as in `swiglu_fused_forward`."""
    width = _check_fused(gate_up, "swiglu_fused_backward")
    expected = (*gate_up.shape[:-1], width)
    if not isinstance(dy, Tensor):
        raise TypeError(f"swiglu_fused_backward: dy must be an engine.Tensor, got {type(dy).__name__}")
    if dy.shape != expected or dy.dtype != gate_up.dtype:
        raise ValueError(f"swiglu_fused_backward: dy is {dy.shape} {dy.dtype}, expected {expected} {gate_up.dtype}")
    kind = _fused_variant(gate_up, width, variant, "swiglu_fused_backward")
    d_gate_up = Tensor.empty(gate_up.shape, gate_up.dtype, gate_up.device)
    # binding order: dy (4, or 12 as vec4), gate_up (7, or 15), d_gate_up (8, or 16)
    _dispatch(gate_up, "swiglu_fused_backward", kind, [dy, gate_up, d_gate_up], dy.size, width, str(gate_up.shape))
    return d_gate_up


class _SwiGLUFused(Function):
    @staticmethod
    def forward(ctx, gate_up):
        ctx.save_for_backward(gate_up)
        return swiglu_fused_forward(gate_up)

    @staticmethod
    def backward(ctx, dy):
        (gate_up,) = ctx.saved
        return swiglu_fused_backward(gate_up, dy)


def swiglu_fused(gate_up: Tensor) -> Tensor:
    """`swiglu(gate, up)` for gate_up (..., 2I) holding gate in its first I columns and up in the last I (the
    output of one linear on cat(W_gate, W_up)): (..., I) in one dispatch, differentiable (its backward writes the
    gradient of gate_up in one dispatch too)."""
    _check_fused(gate_up, "swiglu_fused")
    return _SwiGLUFused.apply(gate_up)
