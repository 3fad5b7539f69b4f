"""SwiGLU, the Llama / Qwen2 MLP activation: silu(gate) * up, and its backward in one kernel.

Kernels in `kernels/swiglu.wgsl`: `swiglu_forward`, `swiglu_backward` (d gate and d up in one pass), and
`swiglu_fused_forward`, `swiglu_fused_backward` for gate and up held side by side in one tensor, the output of
one matmul on the MLP's fused gate/up weight (`swiglu_fused`).
"""

from __future__ import annotations

from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import check_float, flat_grid
from wgrpo.engine.tensor import Tensor


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


def swiglu_forward(gate: Tensor, up: Tensor) -> Tensor:
    """The forward kernel alone (no autograd): silu(gate) * up."""
    _check(gate, up, "swiglu")
    out = Tensor.empty(gate.shape, gate.dtype, gate.device)
    gate.runtime.dispatch("swiglu", "swiglu_forward", [gate, up, out], flat_grid("swiglu", "swiglu_forward", gate.size),
                          {"n": gate.size, "width": 0}, elem=gate.elem, shapes=str(gate.shape))
    return out


def swiglu_backward(gate: Tensor, up: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
    """The backward kernel alone: (d gate, d up) of out = silu(gate) * up for the gradient dy of out."""
    _check(gate, up, "swiglu_backward")
    if not isinstance(dy, Tensor):
        raise TypeError(f"swiglu_backward: dy must be an engine.Tensor, got {type(dy).__name__}")
    if dy.shape != gate.shape or dy.dtype != gate.dtype:
        raise ValueError(f"swiglu_backward: dy is {dy.shape} {dy.dtype}, expected {gate.shape} {gate.dtype}")
    dgate = Tensor.empty(gate.shape, gate.dtype, gate.device)
    dup = Tensor.empty(gate.shape, gate.dtype, gate.device)
    gate.runtime.dispatch("swiglu", "swiglu_backward", [gate, up, dy, dgate, dup],
                          flat_grid("swiglu", "swiglu_backward", gate.size), {"n": gate.size, "width": 0}, elem=gate.elem,
                          shapes=str(gate.shape))
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


def swiglu_fused_forward(gate_up: Tensor) -> Tensor:
    """The forward kernel alone (no autograd): silu(gate_up[..., :I]) * gate_up[..., I:], shape (..., I)."""
    width = _check_fused(gate_up, "swiglu_fused")
    out = Tensor.empty((*gate_up.shape[:-1], width), gate_up.dtype, gate_up.device)
    n = out.size
    gate_up.runtime.dispatch("swiglu", "swiglu_fused_forward", [out, gate_up],  # binding order: 3 out, 7 gate_up
                             flat_grid("swiglu", "swiglu_fused_forward", n), {"n": n, "width": width},
                             elem=gate_up.elem, shapes=str(gate_up.shape))
    return out


def swiglu_fused_backward(gate_up: Tensor, dy: Tensor) -> Tensor:
    """The backward kernel alone: the gradient (..., 2I) of gate_up (d gate, then d up, in each row) for the
    gradient dy (..., I) of swiglu_fused(gate_up)."""
    width = _check_fused(gate_up, "swiglu_fused_backward")
    expected = (*gate_up.shape[:-1], width)
    if not isinstance(dy, Tensor):
        raise TypeError(f"swiglu_fused_backward: dy must be an engine.Tensor, got {type(dy).__name__}")
    if dy.shape != expected or dy.dtype != gate_up.dtype:
        raise ValueError(f"swiglu_fused_backward: dy is {dy.shape} {dy.dtype}, expected {expected} {gate_up.dtype}")
    d_gate_up = Tensor.empty(gate_up.shape, gate_up.dtype, gate_up.device)
    n = dy.size
    gate_up.runtime.dispatch("swiglu", "swiglu_fused_backward", [dy, gate_up, d_gate_up],  # bindings 4, 7, 8
                             flat_grid("swiglu", "swiglu_fused_backward", n), {"n": n, "width": width},
                             elem=gate_up.elem, shapes=str(gate_up.shape))
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
