"""SwiGLU, the Llama / Qwen2 MLP activation: silu(gate) * up, and its backward in one kernel.

Kernels in `kernels/swiglu.wgsl`: `swiglu_forward`, `swiglu_backward` (d gate and d up in one pass).
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
                          {"n": gate.size}, elem=gate.elem, shapes=str(gate.shape))
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
                          flat_grid("swiglu", "swiglu_backward", gate.size), {"n": gate.size}, elem=gate.elem,
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
