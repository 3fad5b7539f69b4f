"""The model of the memory replay: `engine.model.Model`'s forward on `Sym` tensors, LoRA adapters included.

Owns `ReplayModel` (its parameters loaded as `Model.from_numpy` holds them, `hidden_states` with the decoder
layers plain, cached or checkpointed, `_project` with its adapter, `logits`, `token_logprobs`) and
`ReplayAdapters` (what `engine.lora.LoraAdapters` adds: A and B per targeted projection, the dropout, the scaled
low-rank product added to the base projection's output). Each method keeps the references its original keeps, so
the replay frees what the model frees when it frees it. Must not import `rl`.
"""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np

from wgrpo.engine import memory_ops as ops
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import FLOAT32
from wgrpo.engine.hf_layout import expected_shapes
from wgrpo.engine.lora import LoraConfig, module_shapes, target_module_names
from wgrpo.engine.memory_graph import checkpoint, is_grad_enabled
from wgrpo.engine.memory_ledger import I32, Host, Ledger, Sym


def weight_dtypes(config: ModelConfig, dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every parameter's (shape, dtype) as `Model.from_numpy` holds it: matrices in `dtype`, vectors in float32."""
    return {name: (shape, dtype if len(shape) >= 2 else FLOAT32) for name, shape in expected_shapes(config).items()}


class ReplayAdapters:
    """`engine.lora.LoraAdapters` of `lora` on the modules it targets: A (r, in) and B (out, r) in float32 (counted
    as `weights`), y + scaling * B(A(dropout(x))) on an adapted projection's output while enabled."""

    def __init__(self, ledger: Ledger, config: ModelConfig, lora: LoraConfig):
        self.config, self.scaling, self.enabled = lora, lora.scaling, True
        self.weights: dict[str, tuple[Sym, Sym]] = {}
        with ledger.counted_as("weights"):
            shapes = module_shapes(config, target_module_names(lora, config))
            for module, (out_features, in_features) in shapes.items():
                self.weights[module] = (ledger.empty((lora.r, in_features)), ledger.empty((out_features, lora.r)))

    def parameters(self) -> list[Sym]:
        return [t for pair in self.weights.values() for t in pair]

    def layer_parameters(self, layer: int) -> list[Sym]:
        pre = f"model.layers.{layer}."
        return [t for module, pair in self.weights.items() if module.startswith(pre) for t in pair]

    @contextlib.contextmanager
    def disabled(self):
        previous, self.enabled = self.enabled, False
        try:
            yield self
        finally:
            self.enabled = previous

    def adapt(self, name: str, x: Sym, y: Sym, training: bool = False) -> Sym:
        weights = self.weights.get(name) if self.enabled else None
        if weights is None:
            return y
        a, b = weights
        if training and self.config.lora_dropout > 0:
            x = ops.dropout(x, self.config.lora_dropout)
        low = ops.scale(ops.linear(x, a), self.scaling)
        return ops.add(y, ops.linear(low, b))


class ReplayModel:
    """`Model` of `config` with its matrices in `dtype` (norms and biases float32, RoPE's inv_freq), counted as
    `weights`; `adapters` once LoRA is attached."""

    def __init__(self, ledger: Ledger, config: ModelConfig, dtype):
        self.config, self.ledger = config, ledger
        with ledger.counted_as("weights"):
            self.params = {name: ledger.empty(shape, held) for name, (shape, held) in
                           weight_dtypes(config, dtype).items()}
            self.inv_freq = ledger.empty((config.head_dim // 2,))
        self.adapters: ReplayAdapters | None = None
        self.training = False
        self.gradient_checkpointing = False

    def trainable_parameters(self) -> list[Sym]:
        return self.adapters.parameters() if self.adapters is not None else list(self.params.values())

    @contextlib.contextmanager
    def disable_adapters(self):
        if self.adapters is None:
            yield self
            return
        with self.adapters.disabled():
            yield self

    def hidden_states(self, ids, positions=None, cache=None) -> Sym:
        """`ids` a `Host` (B, T) or an int32 `Sym`; `positions` None (0..T-1), a `Host` or a `Sym`."""
        cfg, p = self.config, self.params
        batch, steps = ids.shape
        if positions is None:
            positions = Host((steps,), I32)
        if not isinstance(positions, Sym):
            positions = self.ledger.upload(positions)
        h = ops.embedding(ids, p["model.embed_tokens.weight"], FLOAT32)
        x = ops.rmsnorm(h, p["model.layers.0.input_layernorm.weight"])
        recompute = self.gradient_checkpointing and cache is None and is_grad_enabled()
        for i in range(cfg.num_layers):
            if recompute:
                h, x = checkpoint(partial(self._layer, i, positions=positions), h, x,
                                  params=self._layer_trainables(i))
            else:
                h, x = self._layer(i, h, x, positions=positions, cache=cache)
        return x

    def _layer(self, i: int, h: Sym, x: Sym, *, positions: Sym, cache=None) -> tuple[Sym, Sym]:
        cfg, p = self.config, self.params
        batch, steps, _ = h.shape
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        pre = f"model.layers.{i}."
        q = self._project(pre + "self_attn.q_proj", x).reshape(batch, steps, heads, head_dim)
        k = self._project(pre + "self_attn.k_proj", x).reshape(batch, steps, kv_heads, head_dim)
        v = self._project(pre + "self_attn.v_proj", x).reshape(batch, steps, kv_heads, head_dim)
        if cfg.qk_norm:
            q = ops.rmsnorm(q, p[pre + "self_attn.q_norm.weight"])
            k = ops.rmsnorm(k, p[pre + "self_attn.k_norm.weight"])
        q, k = ops.rope_qk(q, k, positions, self.inv_freq)
        a = cache.attend(i, q, k, v) if cache is not None else ops.attention(q, k, v)
        a = self._project(pre + "self_attn.o_proj", a.reshape(batch, steps, heads * head_dim))
        h, x = ops.add_rmsnorm(h, a, p[pre + "post_attention_layernorm.weight"])
        gate = self._project(pre + "mlp.gate_proj", x)
        up = self._project(pre + "mlp.up_proj", x)
        m = self._project(pre + "mlp.down_proj", ops.swiglu(gate, up))
        last = i + 1 == cfg.num_layers
        next_norm = "model.norm.weight" if last else f"model.layers.{i + 1}.input_layernorm.weight"
        return ops.add_rmsnorm(h, m, p[next_norm])

    def _project(self, name: str, x: Sym) -> Sym:
        y = ops.linear(x, self.params[name + ".weight"], self.params.get(name + ".bias"))
        if self.adapters is not None:
            y = self.adapters.adapt(name, x, y, training=self.training)
        return y

    def _layer_trainables(self, i: int) -> list[Sym]:
        if self.adapters is not None:
            return self.adapters.layer_parameters(i)
        pre = f"model.layers.{i}."
        next_norm = "model.norm.weight" if i + 1 == self.config.num_layers else \
            f"model.layers.{i + 1}.input_layernorm.weight"
        return [t for name, t in self.params.items() if name.startswith(pre) or name == next_norm]

    def head(self) -> Sym:
        return self.params.get("lm_head.weight", self.params["model.embed_tokens.weight"])

    def logits(self, hidden: Sym) -> Sym:
        return ops.linear(hidden, self.head())

    def token_logprobs(self, ids: Host, targets: Sym, temperature: float = 1.0) -> Sym:
        hidden = self.hidden_states(ids)
        batch, steps, width = hidden.shape
        flat_targets = targets.reshape(batch * steps)
        logp = ops.linear_token_logprobs(hidden.reshape(batch * steps, width), self.head(), flat_targets,
                                         temperature)
        return logp.reshape(batch, steps)
