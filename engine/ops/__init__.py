"""Ops on engine Tensors, each a WGSL kernel dispatch recorded into the device's current submit.

One module per kernel family; this package re-exports the public names.
"""

from engine.ops.elementwise import add, affine, exp, gelu, mul, scale, silu

__all__ = ["add", "affine", "exp", "gelu", "mul", "scale", "silu"]
