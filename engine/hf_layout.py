"""The Hugging Face tensor-name layout of Llama/Qwen2/Qwen3 decoders: which tensors a config has, their shapes,
and the check that a state dict holds exactly those.

Host-only numpy: must not import wgpu, torch, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.errors import InputError


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name of the config's Llama/Qwen2/Qwen3 layout -> its shape, in model order (lm_head only
    when untied; q/k/v biases only with attention_bias; Qwen3's per-head q_norm / k_norm of width head_dim).
    Linear weights are (out_features, in_features); the attention's width is heads * head_dim, not always C."""
    c, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, c)}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (c,)
        for name, rows in (("q", q), ("k", kv), ("v", kv)):
            shapes[p + f"self_attn.{name}_proj.weight"] = (rows, c)
            if config.attention_bias:
                shapes[p + f"self_attn.{name}_proj.bias"] = (rows,)
        shapes[p + "self_attn.o_proj.weight"] = (c, q)
        if config.qk_norm:
            shapes[p + "self_attn.q_norm.weight"] = (config.head_dim,)
            shapes[p + "self_attn.k_norm.weight"] = (config.head_dim,)
        shapes[p + "post_attention_layernorm.weight"] = (c,)
        shapes[p + "mlp.gate_proj.weight"] = (f, c)
        shapes[p + "mlp.up_proj.weight"] = (f, c)
        shapes[p + "mlp.down_proj.weight"] = (c, f)
    shapes["model.norm.weight"] = (c,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, c)
    return shapes


def _is_harmless(name: str) -> bool:
    """Buffers older transformers saved that carry no weights (RoPE's inv_freq is recomputed from rope_theta)."""
    return name.endswith("rotary_emb.inv_freq")


def check_state_dict(state: Mapping[str, Any], config: ModelConfig, source: str = "state_dict") -> dict[str, Any]:
    """Check `state` holds exactly the tensors of `expected_shapes(config)`; returns them in model order.

    Dropped silently: rotary `inv_freq` buffers, and a tied model's `lm_head.weight` when it equals the embedding.
    Raises InputError naming `source`, each missing / wrong-shape / unexpected tensor and its expected shape.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"{source}: expected a mapping of tensor name -> array, got {type(state).__name__}")
    expected = expected_shapes(config)
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name, shape in expected.items():
        if name not in state:
            problems.append(f"missing tensor {name!r} (expected shape {shape})")
            continue
        found = tuple(np.shape(state[name]))
        if found != shape:
            problems.append(f"tensor {name!r} has shape {found}, expected {shape}")
        out[name] = state[name]
    for name in state:
        if name in expected or _is_harmless(name):
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:
            embed = state.get("model.embed_tokens.weight")
            if embed is not None and np.shape(embed) == np.shape(state[name]) and np.array_equal(embed, state[name]):
                continue
            problems.append("tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' but "
                            "tie_word_embeddings is true (set it false to keep a separate head)")
            continue
        problems.append(f"unexpected tensor {name!r} with shape {tuple(np.shape(state[name]))}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        layout = (f"{config.hf_class} with {config.num_layers} layers, hidden {config.hidden_size}, heads "
                  f"{config.num_heads}/{config.num_kv_heads} of width {config.head_dim}, vocab {config.vocab_size}")
        raise InputError(f"{source}: does not match the config ({layout}): " + "; ".join(problems[:8]) + more)
    return out
