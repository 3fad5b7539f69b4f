"""Rotary position embedding (Hugging Face Llama convention: rotate_half over the two halves of the head dim).

x (B, T, H, D) is rotated per head by angles a = positions[b, t] * inv_freq[j], inv_freq[j] = theta^(-2j/D). As in
HF's rotary embedding, inv_freq is computed in f32 on the host (`default_inv_freq`, HF's formula step for step;
`rope_inv_freq` adds HF's "linear" and "llama3" scaled types; any other frequencies can be passed instead), and the
kernel forms the f32 angle and its cos and sin. The scaled types keep HF's attention factor of 1 (cos and sin are
not rescaled). positions is (B, T), or (T,) shared by the batch, so KV-cached decoding passes the absolute positions of
the new tokens. The backward rotates dy back. Kernels in `kernels/rope.wgsl`: `rope_forward`, `rope_backward`, and
`rope_qk_forward`, `rope_qk_backward`, which rotate an attention layer's q and k in one dispatch (`rope_qk`), and
`qkv_split_forward`, `qkv_split_backward`, which split a fused q/k/v projection and rotate q and k in the same
dispatch (`engine.ops.qkv.qkv_split`; their `*_vec4` variants work on quads when D/2 % 4 == 0). The rope and rope_qk
kernels have vec4 variants too, in `kernels/rope_vec4.wgsl` (`rope_forward_vec4`, ...: one invocation per (token,
quad of D/2), cos and sin shared by the token's heads), chosen by `rope_variant` when D/2 % 4 == 0 and every tensor
binds as quads; the scalar entries stay the spec and the fallback.
Note: HF rounds cos and sin to the model dtype before multiplying; here they stay f32, so f16 results may differ
from HF's by an f16 rounding.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo.engine.autograd import Function
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops._common import check_float, flat_grid, starts_on_quads
from wgrpo.engine.tensor import Tensor


def _positions(positions, x: Tensor, op: str) -> Tensor:
    """positions as an int32 (or uint32) Tensor of shape (B, T) or (T,) on x's device, checked."""
    b, t = x.shape[:2]
    if isinstance(positions, Tensor):
        if positions.dtype not in (np.dtype(np.int32), np.dtype(np.uint32)):
            raise TypeError(f"{op}: positions must be int32, got a {positions.dtype} Tensor of shape {positions.shape}")
        if positions.device is not x.device:
            raise ValueError(f"{op}: positions are on {positions.device.name} but x is on {x.device.name}")
    elif isinstance(positions, (np.ndarray, list, tuple, range)):
        array = np.asarray(positions)
        if array.dtype.kind not in "iu":
            raise TypeError(f"{op}: positions must be integers, got dtype {array.dtype} with shape {array.shape}")
        if array.size and (array.min() < -(2**31) or array.max() >= 2**31):
            raise ValueError(f"{op}: positions must fit in int32, got values in [{array.min()}, {array.max()}]")
        positions = Tensor.from_numpy(array.astype(np.int32), x.device)
    else:
        raise TypeError(f"{op}: positions must be an engine.Tensor or a numpy array, got {type(positions).__name__}")
    if positions.shape not in ((b, t), (t,)):
        raise ValueError(f"{op}: positions must have shape (B, T) = {(b, t)} or (T,) = {(t,)} for x of shape "
                         f"{x.shape}, got {positions.shape}")
    return positions


def _check_x(x, op: str, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be an engine.Tensor, got {type(x).__name__}")
    check_float(x, name, op)
    if x.ndim != 4:
        raise ValueError(f"{op}: {name} must have shape (B, T, H, D), got {x.shape}")
    if x.shape[-1] % 2:
        raise ValueError(f"{op}: the head dim D of {name} with shape {x.shape} must be even, got D = {x.shape[-1]}")


def default_inv_freq(head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """(head_dim / 2,) float32: 1 / theta^(2j / head_dim), in f32 exactly as HF's default rope parameters."""
    theta = float(theta)
    if not theta > 0.0:
        raise ValueError(f"rope: theta must be > 0, got {theta}")
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)


def rope_inv_freq(head_dim: int, rope_theta: float = 10000.0, rope_type: str = "default", *, factor: float = 1.0,
                  low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                  original_max_position_embeddings: int | None = None) -> np.ndarray:
    """(head_dim / 2,) float32 frequencies of a transformers RoPE type, each f32 step as in its ROPE_INIT_FUNCTIONS:
    "default" (`default_inv_freq`), "linear" (all divided by factor) or "llama3" (with L the
    original_max_position_embeddings: wavelengths above L / low_freq_factor divided by factor, those below
    L / high_freq_factor kept, a smooth blend between). The keywords are transformers' rope_parameters keys, so
    `rope_inv_freq(config.head_dim, **config.rope_parameters)` gives a ModelConfig's frequencies.
    """
    f32 = np.float32
    inv_freq = default_inv_freq(head_dim, rope_theta)
    if rope_type == "default":
        return inv_freq
    if not float(factor) > 0.0:
        raise ValueError(f"rope: factor must be > 0, got {factor}")
    if rope_type == "linear":
        return (inv_freq / f32(factor)).astype(np.float32)
    if rope_type != "llama3":
        raise ValueError(f"rope: rope_type {rope_type!r} is not supported; supported: 'default', 'linear', 'llama3'")
    if original_max_position_embeddings is None or not float(high_freq_factor) > float(low_freq_factor) > 0.0:
        raise ValueError(f"rope: llama3 needs original_max_position_embeddings and high_freq_factor > "
                         f"low_freq_factor > 0, got {original_max_position_embeddings}, {high_freq_factor}, "
                         f"{low_freq_factor}")
    context = original_max_position_embeddings
    # HF: wavelen = 2 * pi / inv_freq (computed by torch as reciprocal(inv_freq) * 2pi, in f32)
    wavelen = (f32(1.0) / inv_freq) * f32(2 * math.pi)
    low_freq_wavelen, high_freq_wavelen = f32(context / low_freq_factor), f32(context / high_freq_factor)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / f32(factor), inv_freq)
    smooth = ((f32(1.0) / wavelen) * f32(context) - f32(low_freq_factor)) / f32(high_freq_factor - low_freq_factor)
    smoothed = (f32(1.0) - smooth) * scaled / f32(factor) + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _inv_freq(x: Tensor, theta: float, inv_freq, op: str) -> Tensor:
    half = x.shape[-1] // 2
    if inv_freq is None:
        inv_freq = default_inv_freq(x.shape[-1], theta)
    elif isinstance(inv_freq, Tensor):
        if inv_freq.shape != (half,) or inv_freq.dtype != np.float32:
            raise ValueError(f"{op}: inv_freq must be float32 of shape ({half},) for x of shape {x.shape}, "
                             f"got {inv_freq.dtype} {inv_freq.shape}")
        return inv_freq
    inv_freq = np.asarray(inv_freq)
    if inv_freq.shape != (half,) or inv_freq.dtype.kind != "f":
        raise ValueError(f"{op}: inv_freq must be floats of shape ({half},) for x of shape {x.shape}, "
                         f"got {inv_freq.dtype} {inv_freq.shape}")
    return Tensor.from_numpy(inv_freq.astype(np.float32), x.device)


ROPE_VARIANTS = ("scalar", "vec4")


def _binds_as_quads(t: Tensor) -> bool:
    """Whether t binds as an array of vec4s: whole quads at a 16-byte aligned offset."""
    return t.size % 4 == 0 and starts_on_quads(t)


def rope_variant(variant: str | None, tensors, op: str) -> str:
    """The rope / rope_qk kernel variant for `tensors` (the (B, T, ., D) ones the kernel reads and writes, with
    inv_freq): "vec4" (`kernels/rope_vec4.wgsl`) when D/2 % 4 == 0 and every tensor binds as quads, else "scalar".
    A given `variant` (tests force one) is checked instead."""
    head_dim = tensors[0].shape[-1]
    fits = (head_dim // 2) % 4 == 0 and all(_binds_as_quads(t) for t in tensors)
    variant = variant or ("vec4" if fits else "scalar")
    if variant not in ROPE_VARIANTS:
        raise InputError(f"{op}: variant must be one of {ROPE_VARIANTS} or None, got {variant!r}")
    if variant == "vec4" and (head_dim // 2) % 4:
        raise InputError(f"{op}: the vec4 variant needs D/2 to be a multiple of 4, got D = {head_dim}")
    if variant == "vec4" and not fits:
        raise InputError(f"{op}: the vec4 variant needs every tensor at a 16-byte aligned offset, got "
                         f"{[t.binding()[1] for t in tensors]} bytes")
    return variant


def _launch(entry: str, variant: str, tensors: list[Tensor], x: Tensor, heads_k: int, n_q_pairs: int,
            positions: Tensor, shapes: str) -> None:
    """Dispatch `entry` ("rope_forward", ..., the scalar name) in its `variant` on [positions, inv_freq, ...]."""
    b, t, h, d = x.shape
    if variant == "vec4":  # one invocation per (token, quad of D/2)
        family, entry, invocations = "rope_vec4", f"{entry}_vec4", b * t * (d // 8)
        params = {"tokens": b * t, "half": d // 2, "heads": h, "heads_k": heads_k, "seq": t,
                  "pos_batched": positions.ndim == 2}
    else:  # one per rotated pair
        n_pairs = b * t * (h + heads_k) * (d // 2)
        family, invocations = "rope", n_pairs
        params = {"n_pairs": n_pairs, "half": d // 2, "heads": h, "seq": t, "pos_batched": positions.ndim == 2,
                  "heads_k": heads_k, "n_q_pairs": n_q_pairs, "rotate": 0, "kv_t_cap": 0,
                  "kv_column": 0}  # the last three are qkv_split_*'s
    x.runtime.dispatch(family, entry, tensors, flat_grid(family, entry, invocations), params, elem=x.elem,
                       shapes=shapes)


def _dispatch(entry: str, x: Tensor, positions: Tensor, inv_freq: Tensor, variant: str | None = None) -> Tensor:
    out = Tensor.empty(x.shape, x.dtype, x.device)
    variant = rope_variant(variant, [x, out, inv_freq], entry)
    _launch(entry, variant, [positions, inv_freq, x, out], x, 0, 0, positions,
            f"x {x.shape}, positions {positions.shape}")
    return out


def rope_forward(x: Tensor, positions, theta: float = 10000.0, *, inv_freq=None, variant: str | None = None) -> Tensor:
    """The forward kernel alone (no autograd); `variant` as in `rope`."""
    _check_x(x, "rope")
    return _dispatch("rope_forward", x, _positions(positions, x, "rope"), _inv_freq(x, theta, inv_freq, "rope"),
                     variant)


def rope_backward(dy: Tensor, positions, theta: float = 10000.0, *, inv_freq=None,
                  variant: str | None = None) -> Tensor:
    """The backward kernel alone: dx = dy rotated back by the same angles; `variant` as in `rope`."""
    op = "rope_backward"
    _check_x(dy, op, "dy")
    return _dispatch("rope_backward", dy, _positions(positions, dy, op), _inv_freq(dy, theta, inv_freq, op), variant)


def _backward_variant(variant: str | None) -> str | None:
    """The backward keeps a forced "scalar"; otherwise it picks again, as the gradients may bind differently."""
    return "scalar" if variant == "scalar" else None


class _Rope(Function):
    @staticmethod
    def forward(ctx, x, positions, inv_freq, variant):
        ctx.save_for_backward(positions, inv_freq, variant)
        return _dispatch("rope_forward", x, positions, inv_freq, variant)

    @staticmethod
    def backward(ctx, dy):
        positions, inv_freq, variant = ctx.saved
        return _dispatch("rope_backward", dy, positions, inv_freq, _backward_variant(variant)), None, None, None


def rope(x: Tensor, positions, theta: float = 10000.0, *, inv_freq=None, variant: str | None = None) -> Tensor:
    """Rotary embedding of x (B, T, H, D), D even, at integer positions (B, T) or (T,) (a Tensor or a numpy
    array): HF's `x * cos + rotate_half(x) * sin`. Returns (B, T, H, D).

    The angles are positions * inv_freq with inv_freq = `default_inv_freq(D, theta)` unless `inv_freq` (D/2 floats,
    a numpy array or a float32 Tensor, e.g. HF's llama3-scaled frequencies) is given, in which case theta is unused.
    `variant` ("scalar" or "vec4", see `rope_variant`) forces a kernel; None picks the fastest that fits.
    """
    _check_x(x, "rope")
    positions = _positions(positions, x, "rope")
    inv_freq = _inv_freq(x, theta, inv_freq, "rope")
    if variant is not None:
        rope_variant(variant, [x, inv_freq], "rope")  # refused here, before anything runs
    return _Rope.apply(x, positions, inv_freq, variant)


def _check_qk(q, k, op: str) -> None:
    """q (B, T, H, D) and k (B, T, H_kv, D): each a valid rope input, the two on one device with one dtype and the
    same B, T and D."""
    _check_x(q, op, "q")
    _check_x(k, op, "k")
    if k.device is not q.device:
        raise ValueError(f"{op}: k is on {k.device.name} but q is on {q.device.name}")
    if k.dtype != q.dtype:
        raise TypeError(f"{op}: q and k must have the same dtype, got q {q.dtype} and k {k.dtype}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"{op}: q and k must have the same head dim D, got q {q.shape} and k {k.shape}")
    if k.shape[:2] != q.shape[:2]:
        raise ValueError(f"{op}: q and k must have the same (B, T), got q {q.shape} and k {k.shape}")


def _dispatch_qk(entry: str, q: Tensor, k: Tensor, positions: Tensor, inv_freq: Tensor,
                 variant: str | None = None) -> tuple[Tensor, Tensor]:
    b, t, h, d = q.shape
    q_out = Tensor.empty(q.shape, q.dtype, q.device)
    k_out = Tensor.empty(k.shape, k.dtype, k.device)
    variant = rope_variant(variant, [q, q_out, k, k_out, inv_freq], entry)
    _launch(entry, variant, [positions, inv_freq, q, q_out, k, k_out], q, k.shape[2], b * t * h * (d // 2),
            positions, f"q {q.shape}, k {k.shape}, positions {positions.shape}")
    return q_out, k_out


class _RopeQK(Function):
    @staticmethod
    def forward(ctx, q, k, positions, inv_freq, variant):
        ctx.save_for_backward(positions, inv_freq, variant)
        return _dispatch_qk("rope_qk_forward", q, k, positions, inv_freq, variant)

    @staticmethod
    def backward(ctx, dq_out, dk_out):
        positions, inv_freq, variant = ctx.saved
        variant = _backward_variant(variant)
        # A gradient is skipped (None) when its output was unused or its input needs none; one dispatch either way.
        if not ctx.needs_grad[0]:
            dq_out = None
        if not ctx.needs_grad[1]:
            dk_out = None
        if dq_out is not None and dk_out is not None:
            dq, dk = _dispatch_qk("rope_qk_backward", dq_out, dk_out, positions, inv_freq, variant)
        else:
            dq = None if dq_out is None else _dispatch("rope_backward", dq_out, positions, inv_freq, variant)
            dk = None if dk_out is None else _dispatch("rope_backward", dk_out, positions, inv_freq, variant)
        return dq, dk, None, None, None


def rope_qk(q: Tensor, k: Tensor, positions, theta: float = 10000.0, *, inv_freq=None,
            variant: str | None = None) -> tuple[Tensor, Tensor]:
    """`(rope(q, positions), rope(k, positions))` in one dispatch (and one for the backward): q (B, T, H, D) and
    k (B, T, H_kv, D) with the same B, T and even D, any head counts, one dtype. positions, theta, inv_freq and
    variant are as in `rope`. In the backward a gradient is skipped when its output was unused or its input needs
    none (its `.grad` then stays None), and the other is computed by `rope_backward` alone.
    """
    op = "rope_qk"
    _check_qk(q, k, op)
    positions = _positions(positions, q, op)
    inv_freq = _inv_freq(q, theta, inv_freq, op)
    if variant is not None:
        rope_variant(variant, [q, k, inv_freq], op)  # refused here, before anything runs
    return _RopeQK.apply(q, k, positions, inv_freq, variant)
