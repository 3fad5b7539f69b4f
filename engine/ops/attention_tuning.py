"""Which attention variant runs a given problem: the per-adapter autotuner's answer for its shape class.

A class is the storage type, the query and key lengths and the head dimension rounded up to powers of two, the
group size (query heads per kv head) and causality: "f32|q512|k512|d64|g2|c1". At first use of a class on an
adapter (unless the shipped table or the cache knows it) each variant the adapter can run (`eligible_variants`:
"subgroup" needs subgroups) runs forward and backward on random inputs of that shape (one batch row; lengths
over `TUNE_CAP` tuned at the cap), "tiled" once per tile size that fits the adapter (`tile_choices`, named
"tiled:BQxBK"); its forward is checked against numpy and the pair is timed (`engine.autotune`). A remembered choice
the adapter cannot run (a cache written with other features) gives the default (`usable_variant`). Must not
import `rl`.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo.engine.autotune import Candidate, Problem, autotuner, size_bucket

TUNE_CAP = 1024  # the longest sequence a tuning runs
_TOLERANCE = {"f32": (1e-4, 1e-5), "f16": (2e-2, 2e-2)}


def shape_class(q_shape, k_shape, elem: str, causal: bool) -> str:
    (_, t_q, heads, d), (_, t_k, kv_heads, _) = q_shape, k_shape
    return (f"{elem}|q{size_bucket(t_q)}|k{size_bucket(t_k)}|d{size_bucket(d)}|g{heads // max(kv_heads, 1)}|"
            f"c{int(bool(causal))}")


def attention_probs(q, k, causal: bool, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """numpy's softmax(scale q k^T + mask), (B, H, T_q, T_k), for (B, T_q, H, D) q and (B, T_k, H_kv, D) k, in
    their dtype; and k with its heads repeated for q's (GQA), (B, T_k, H, D). Causal: query i sees keys
    j <= i + T_k - T_q."""
    t_q, heads, t_k = q.shape[1], q.shape[2], k.shape[1]
    keys = np.repeat(k, heads // k.shape[2], axis=2)
    s = np.matmul(q.transpose(0, 2, 1, 3), keys.transpose(0, 2, 3, 1)) * scale
    if causal:
        s = np.where(np.arange(t_k)[None, :] <= np.arange(t_q)[:, None] + t_k - t_q, s, -np.inf)
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    return s / s.sum(axis=-1, keepdims=True), keys


def attention_reference(q, k, v, causal: bool, scale: float) -> np.ndarray:
    """numpy's attention, (B, T_q, H, D): the spec the kernels are checked against (here and in `wgrpo bench`)."""
    p, _ = attention_probs(q, k, causal, scale)
    values = np.repeat(v, q.shape[2] // v.shape[2], axis=2).transpose(0, 2, 1, 3)
    return np.matmul(p, values).transpose(0, 2, 1, 3)


def tuning_problem(device, q_shape, k_shape, elem: str, causal: bool, default: str) -> Problem:
    from wgrpo.engine.ops.attention import (attention_backward, attention_forward, eligible_variants, tile_choices,
                                            tiled_name)
    from wgrpo.engine.tensor import Tensor

    (_, t_q, heads, d), (_, t_k, kv_heads, _) = q_shape, k_shape
    t_k = min(t_k, TUNE_CAP)
    t_q = min(t_q, t_k)
    dtype = {"f32": np.float32, "f16": np.float16}[elem]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in
              ((1, t_q, heads, d), (1, t_k, kv_heads, d), (1, t_k, kv_heads, d), (1, t_q, heads, d))]
    q, k, v, d_out = (Tensor.from_numpy(a, device) for a in arrays)
    scale = 1.0 / math.sqrt(max(d, 1))

    def run(variant: str, tiles=None):
        out, lse = attention_forward(q, k, v, causal, scale, variant, tiles)
        attention_backward(q, k, v, out, lse, d_out, causal, scale, variant=variant, tiles=tiles)
        return out

    candidates = []
    for name in eligible_variants(device):  # "tiled" once per tile size that fits the adapter
        if name == "tiled":
            candidates += [Candidate(tiled_name(t), lambda t=t: run("tiled", t)) for t in tile_choices(device, d)]
        else:
            candidates.append(Candidate(name, lambda name=name: run(name)))
    rtol, atol = _TOLERANCE[elem]
    expected = attention_reference(*(a.astype(np.float64) for a in arrays[:3]), causal, scale)
    return Problem("attention", shape_class(q_shape, k_shape, elem, causal), candidates, lambda: expected,
                   rtol * 10, atol * 10, default)


def tuned_variant(device, q_shape, k_shape, elem: str, causal: bool, default: str = "serial") -> str:
    """The variant name for the shape class (one of VARIANTS, or "tiled:BQxBK"); `default` when the remembered one
    cannot run on `device`."""
    from wgrpo.engine.ops.attention import usable_variant

    name = autotuner(device).choose(lambda: tuning_problem(device, q_shape, k_shape, elem, causal, default),
                                    "attention", shape_class(q_shape, k_shape, elem, causal), default)
    return usable_variant(device, name, q_shape[-1]) or default
