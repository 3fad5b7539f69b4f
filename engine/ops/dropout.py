"""Seeded dropout, LoRA's input dropout (PEFT's `lora_dropout`): y = x * keep / (1 - p), differentiable in x.

The keep mask is a pure function of (seed, flat index), drawn by a counter-based hash in `kernels/dropout.wgsl`
(entry `dropout_apply`), so nothing is stored for the backward: it recomputes the mask from the seed, and so does a
forward recomputed under activation checkpointing. `dropout_mask` computes the same mask on the host, bit for bit.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import check_float, flat_grid
from wgrpo.engine.tensor import Tensor

UNIFORM_BITS = 24  # u = (h >> 8) / 2^24: the top 24 bits of the hash, exact in f32
STREAM = 0x64726F70  # the kernel's STREAM constant, the hash's fourth counter
_M32 = np.uint64(0xFFFFFFFF)


def _check_p_seed(p, seed, op: str) -> tuple[float, int]:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a float, got {type(p).__name__}")
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{op}: p must be in [0, 1), got {p!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{op}: seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"{op}: seed must be in [0, 2**32), got {seed}")
    return float(p), int(seed)


def _threshold(p: float) -> int:
    """keep = u >= p with u = k / 2^24 for the integer k = h >> 8, i.e. k >= ceil(p * 2^24) (exact in float64)."""
    return math.ceil(p * 2**UNIFORM_BITS)


def _scale(p: float) -> float:
    """1 / (1 - p) as the kernel multiplies by it: rounded to f32."""
    return float(np.float32(1.0 / (1.0 - p)))


def _pcg4d_x(x, y, z, w) -> np.ndarray:
    """The x word of the kernel's pcg4d hash on uint32 counters, in uint64 arithmetic masked to 32 bits."""
    x, y, z, w = ((np.asarray(c, np.uint64) * np.uint64(1664525) + np.uint64(1013904223)) & _M32
                  for c in (x, y, z, w))

    def mix(x, y, z, w):
        x = (x + y * w) & _M32
        y = (y + z * x) & _M32
        z = (z + x * y) & _M32
        w = (w + y * z) & _M32
        return x, y, z, w

    x, y, z, w = mix(x, y, z, w)
    x, y, z, w = (c ^ (c >> np.uint64(16)) for c in (x, y, z, w))
    x, y, z, w = mix(x, y, z, w)
    return x


def dropout_mask(shape, p: float, seed: int) -> np.ndarray:
    """The keep mask `dropout(x, p, seed)` applies to an x of `shape`, computed on the host (bool, `shape`)."""
    p, seed = _check_p_seed(p, seed, "dropout_mask")
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    index = np.arange(math.prod(shape), dtype=np.uint64)
    h = _pcg4d_x(index & _M32, index >> np.uint64(32), np.full_like(index, seed), np.full_like(index, STREAM))
    return ((h >> np.uint64(32 - UNIFORM_BITS)) >= np.uint64(_threshold(p))).reshape(shape)


def dropout_apply(x: Tensor, p: float, seed: int) -> Tensor:
    """The kernel alone (no autograd): x * keep / (1 - p) with the mask of (seed, flat index); also the backward,
    applied to dy. A tensor held in row blocks is one dispatch per block, keyed by the block's global indices."""
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout: x must be an engine.Tensor, got {type(x).__name__}")
    check_float(x, "x", "dropout")
    p, seed = _check_p_seed(p, seed, "dropout")
    y = Tensor.empty(x.shape, x.dtype, x.device)  # in row blocks like x, when x is held so
    offset = 0
    for x_part, y_part in zip(x.parts, y.parts, strict=True):
        params = {"n": x_part.size, "offset_lo": offset & 0xFFFFFFFF, "offset_hi": offset >> 32, "seed": seed,
                  "threshold": _threshold(p), "scale": _scale(p)}
        x.runtime.dispatch("dropout", "dropout_apply", [x_part, y_part],
                           flat_grid("dropout", "dropout_apply", x_part.size), params, elem=x.elem,
                           shapes=str(x_part.shape))
        offset += x_part.size
    return y


class _Dropout(Function):
    @staticmethod
    def forward(ctx, x, p, seed):
        ctx.save_for_backward(p, seed)  # the mask is recomputed from these, never stored
        return dropout_apply(x, p, seed)

    @staticmethod
    def backward(ctx, dy):
        p, seed = ctx.saved
        return dropout_apply(dy, p, seed), None, None


def dropout(x: Tensor, p: float, seed: int) -> Tensor:
    """x * keep / (1 - p), keep[i] = hash(seed, i) >= p for a uniform hash in [0, 1) (see `dropout_mask`); the same
    (seed, shape) always gives the same mask. p in [0, 1); p == 0 returns x itself. seed an int in [0, 2**32)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout: x must be an engine.Tensor, got {type(x).__name__}")
    check_float(x, "x", "dropout")
    p, seed = _check_p_seed(p, seed, "dropout")
    if p == 0.0:
        return x
    return _Dropout.apply(x, p, seed)
