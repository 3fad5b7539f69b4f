"""Which projections a model holds fused: an attention layer's q, k and v weights in one buffer (rows [q; k; v],
their biases likewise) and an MLP's gate and up weights in one (rows [gate; up]), each parameter a `Tensor.rows`
view of it under its Hugging Face name.

Owns `fused_groups` (the parameter names each such buffer holds, for a config, a weight dtype and a binding limit),
`upload_parameters` (a state dict onto the device, those groups in one buffer each), `projection_groups` (the
modules one matmul serves) and `one_binding` (whether a tensor, a fused output say, fits one binding).
Everything keyed by name (state dicts, checkpoints, LoRA, optimizers) sees separate tensors; `Model` runs one
matmul per group while its views are still adjacent (`Tensor.join_rows`), and `memory_model` holds the same
buffers. Must not import `rl`.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import FLOAT32, convert
from wgrpo.engine.errors import InputError
from wgrpo.engine.hf_layout import expected_shapes
from wgrpo.engine.tensor import Tensor, row_partition

QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
GATE_UP = ("mlp.gate_proj", "mlp.up_proj")
# WebGPU's largest min_storage_buffer_offset_alignment: views cut on it bind on every adapter, so which groups are
# fused depends on the shapes alone (and the memory estimate, which has no device, knows it)
VIEW_ALIGNMENT = 256


def projection_groups(layer: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The module paths of layer `layer` one matmul serves when fused: (q, k, v) and (gate, up)."""
    return tuple(tuple(f"model.layers.{layer}.{m}" for m in group) for group in (QKV, GATE_UP))


def one_binding(shape, dtype, max_binding_bytes: int | None) -> bool:
    """A tensor of `shape` and `dtype` is held in one buffer, not in row blocks (`Tensor.empty`'s rule; None: no
    limit), so every kernel can bind it."""
    if max_binding_bytes is None:
        return True
    try:
        return row_partition(shape, dtype, max_binding_bytes) is None
    except InputError:  # not even one row fits
        return False


def _joinable(shapes, dtype, max_binding_bytes: int | None) -> bool:
    """Tensors of `shapes` and `dtype`, one after another in one buffer: every one begins on a VIEW_ALIGNMENT
    boundary, and the whole is one binding."""
    offset = 0
    for shape in shapes:
        if offset % VIEW_ALIGNMENT:
            return False
        offset += math.prod(shape) * np.dtype(dtype).itemsize
    return one_binding((sum(shape[0] for shape in shapes), *shapes[0][1:]), dtype, max_binding_bytes)


def fused_groups(config: ModelConfig, dtype, max_binding_bytes: int | None) -> list[tuple[str, ...]]:
    """The parameter names held in one buffer each, in model order: per layer the q/k/v weights (and, with
    attention_bias, the q/k/v biases), and the gate/up weights. Matrices are held in `dtype`, biases in float32. A
    group is held apart instead (tensors of their own) when one of its views would begin off a 256-byte boundary
    or the joined tensor would be over `max_binding_bytes` (None: no limit); q/k/v weights and biases go together."""
    shapes = expected_shapes(config)
    groups = []
    for layer in range(config.num_layers):
        for modules in projection_groups(layer):
            members = [tuple(m + ".weight" for m in modules)]
            if modules[0] + ".bias" in shapes:
                members.append(tuple(m + ".bias" for m in modules))
            if all(_joinable([shapes[n] for n in names], dtype if i == 0 else FLOAT32, max_binding_bytes)
                   for i, names in enumerate(members)):
                groups += members
    return groups


def held(array, dtype) -> np.ndarray:
    """A parameter as the model holds it: matrices in `dtype`, vectors (norms, biases) in float32."""
    return convert(array, dtype if np.ndim(array) == 2 else FLOAT32)


def upload_parameters(config: ModelConfig, state: Mapping[str, np.ndarray], dtype, device,
                      source: str) -> dict[str, Tensor]:
    """Every parameter of `state` (checked, in model order) on `device` under its Hugging Face name, held as
    `held` says: the `fused_groups` in one buffer each, their tensors views of it; the rest one buffer each
    (in row blocks when over the binding limit)."""
    views = {}
    for names in fused_groups(config, dtype, device.max_binding_bytes):
        arrays = [held(state[name], dtype) for name in names]
        joined = Tensor.from_numpy(np.concatenate(arrays), device)
        start = 0
        for name, array in zip(names, arrays):
            views[name] = joined.rows(start, start + array.shape[0])
            start += array.shape[0]
    params = {}
    for name in expected_shapes(config):
        if name in views:
            params[name] = views[name]
            continue
        try:
            params[name] = Tensor.from_numpy(held(state[name], dtype), device)
        except ValueError as error:  # a row over the binding limit: say which tensor of which file
            raise InputError(f"{source}: tensor {name!r}: {error}") from None
    return params
