"""Helpers every op module shares: argument checks, grids, parameter packing."""

from __future__ import annotations

import math
import struct

import numpy as np

from engine.tensor import Tensor

MAX_WORKGROUPS = 65535  # WebGPU's guaranteed minimum of max_compute_workgroups_per_dimension


def as_tensor(value, name: str, like: Tensor | None = None) -> Tensor:
    """`value` as a Tensor on `like`'s device; numpy arrays are uploaded, anything else is refused."""
    if isinstance(value, Tensor):
        if like is not None and value.device is not like.device:
            raise ValueError(f"{name} is on {value.device.name} but the other operand is on {like.device.name}")
        return value
    if isinstance(value, np.ndarray):
        return Tensor.from_numpy(value, device=like.device if like is not None else None)
    raise TypeError(f"{name} must be an engine.Tensor or a numpy array, got {type(value).__name__}")


def check_float(t: Tensor, name: str, op: str) -> None:
    if t.elem not in ("f32", "f16"):
        raise TypeError(f"{op}: {name} must be float32 or float16, got {t.dtype}")


def grid_1d(n: int, per_workgroup: int = 256) -> tuple[int, int]:
    """A 2-D grid of workgroups covering n items; kernels flatten it as (wg.y * nwg.x + wg.x)."""
    groups = max(1, math.ceil(n / per_workgroup))
    x = min(groups, MAX_WORKGROUPS)
    return x, math.ceil(groups / x)


def pack(fmt: str, *values) -> bytes:
    """The bytes of a WGSL Params struct of 32-bit scalars: fmt is struct's codes, I (u32), i (i32), f (f32)."""
    return struct.pack("<" + fmt, *values)
