"""The model of the memory replay: `engine.model.Model`'s forward on `Sym` tensors, LoRA adapters included.

Owns `ReplayModel` (its parameters loaded as `Model.from_numpy` holds them, the fused q/k/v and gate/up groups of
`engine.fused` in one buffer each, `hidden_states` with the decoder layers plain, cached or checkpointed, `_project`
with its adapter, the fused projections, `logits`, `token_logprobs`), `ReplayAdapters` (what
`engine.lora.LoraAdapters` adds: A and B per targeted projection, the dropout, the scaled low-rank product added to
the base projection's output or into its columns of a fused one) and the mirrors of the fused ops of
`engine.ops.qkv` and `ops.swiglu_fused`. Each method keeps the references its original keeps, so the replay frees
what the model frees when it frees it. Must not import `rl`.
"""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np

from wgrpo.engine import memory_ops as ops
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import FLOAT32
from wgrpo.engine.fused import fused_groups, one_binding, projection_groups
from wgrpo.engine.hf_layout import expected_shapes
from wgrpo.engine.lora import LoraConfig, module_shapes, target_module_names
from wgrpo.engine.memory_graph import Function, checkpoint, is_grad_enabled
from wgrpo.engine.memory_ledger import I32, Host, Ledger, Sym


def weight_dtypes(config: ModelConfig, dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every parameter's (shape, dtype) as `Model.from_numpy` holds it: matrices in `dtype`, vectors in float32."""
    return {name: (shape, dtype if len(shape) >= 2 else FLOAT32) for name, shape in expected_shapes(config).items()}


# ---------------------------------------------------------------------------------------------- fused ops


class _FusedLinear(Function):
    @staticmethod
    def forward(ctx, x, n_weights, *tensors):
        weights, biases = tensors[:n_weights], tensors[n_weights:]
        ctx.save_for_backward(x, weights, [w.shape[0] for w in weights], bool(biases))
        return x.ledger.empty((x.shape[0], sum(w.shape[0] for w in weights)), x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weights, rows, has_bias = ctx.saved
        n, needs = len(rows), ctx.needs_grad
        dx = dy.ledger.empty((dy.shape[0], x.shape[1]), dy.dtype) if needs[0] else None
        dws = [dy.ledger.empty((r, x.shape[1]), dy.dtype) if needs[2 + i] else None for i, r in enumerate(rows)]
        dbs = [None] * (n if has_bias else 0)
        if has_bias and any(needs[2 + n:]):
            summed = ops.reduce_rows(dy)  # held while each bias's gradient is copied out of it
            dbs = [summed.ledger.empty((r,), dy.dtype) if needs[2 + n + i] else None for i, r in enumerate(rows)]
        return (dx, None, *dws, *dbs)


def fused_linear(x: Sym, weights, biases) -> Sym:
    """`ops.fused_linear`."""
    y = _FusedLinear.apply(x.reshape(-1, x.shape[-1]), len(weights), *weights, *(biases or ()))
    return y.reshape(*x.shape[:-1], sum(w.shape[0] for w in weights))


class _AddLinearColumns(Function):
    @staticmethod
    def forward(ctx, y, x, weight, start):
        ctx.save_for_backward(x, weight)
        return y.detach()

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved
        dx = dy.ledger.empty(x.shape, dy.dtype) if ctx.needs_grad[1] else None
        dw = dy.ledger.empty(weight.shape, dy.dtype) if ctx.needs_grad[2] else None
        return dy, dx, dw, None


def add_linear_columns(y: Sym, x: Sym, weight: Sym, start: int) -> Sym:
    """`ops.add_linear_columns`: in y's buffer."""
    out = _AddLinearColumns.apply(y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1]), weight, start)
    return out.reshape(y.shape)


class _QKVSplit(Function):
    @staticmethod
    def forward(ctx, qkv, heads, kv_heads, head_dim, positions, inv_freq):
        b, t = qkv.shape[:2]
        ctx.save_for_backward(qkv.shape, heads, kv_heads, head_dim, positions, inv_freq)
        ledger = qkv.ledger
        return (ledger.empty((b, t, heads, head_dim), qkv.dtype), ledger.empty((b, t, kv_heads, head_dim), qkv.dtype),
                ledger.empty((b, t, kv_heads, head_dim), qkv.dtype))

    @staticmethod
    def backward(ctx, dq, dk, dv):
        shape, heads, kv_heads, head_dim, positions, inv_freq = ctx.saved
        b, t = shape[:2]
        like = next(g for g in (dq, dk, dv) if g is not None)
        zeros = [like.ledger.upload(Host(s, like.dtype)) if g is None else g for g, s in
                 ((dq, (b, t, heads, head_dim)), (dk, (b, t, kv_heads, head_dim)), (dv, (b, t, kv_heads, head_dim)))]
        dqkv = like.ledger.empty(shape, like.dtype)
        del zeros
        return dqkv, None, None, None, None, None


def qkv_split(qkv: Sym, heads: int, kv_heads: int, positions: Sym | None = None, inv_freq: Sym | None = None):
    """`ops.qkv_split` (positions and inv_freq already on the device)."""
    return _QKVSplit.apply(qkv, heads, kv_heads, qkv.shape[-1] // (heads + 2 * kv_heads), positions, inv_freq)


class _SwiGLUFused(Function):
    @staticmethod
    def forward(ctx, gate_up):
        ctx.save_for_backward(gate_up)
        return gate_up.ledger.empty((*gate_up.shape[:-1], gate_up.shape[-1] // 2), gate_up.dtype)

    @staticmethod
    def backward(ctx, dy):
        (gate_up,) = ctx.saved
        return gate_up.ledger.empty(gate_up.shape, gate_up.dtype)


def swiglu_fused(gate_up: Sym) -> Sym:
    return _SwiGLUFused.apply(gate_up)


# ---------------------------------------------------------------------------------------------- the model


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

    def adapt_columns(self, name: str, x: Sym, y: Sym, start: int, training: bool = False) -> Sym:
        weights = self.weights.get(name) if self.enabled else None
        if weights is None:
            return y
        a, b = weights
        if training and self.config.lora_dropout > 0:
            x = ops.dropout(x, self.config.lora_dropout)
        low = ops.scale(ops.linear(x, a), self.scaling)
        return add_linear_columns(y, low, b, start)


class ReplayModel:
    """`Model` of `config` with its matrices in `dtype` (norms and biases float32, RoPE's inv_freq), counted as
    `weights`; `adapters` once LoRA is attached."""

    def __init__(self, ledger: Ledger, config: ModelConfig, dtype):
        self.config, self.ledger = config, ledger
        held = weight_dtypes(config, dtype)
        views = {}
        with ledger.counted_as("weights"):
            for names in fused_groups(config, dtype, ledger.limit):  # one buffer each, as `engine.fused` uploads
                shapes = [held[name][0] for name in names]
                joined, start = ledger.empty((sum(s[0] for s in shapes), *shapes[0][1:]), held[names[0]][1]), 0
                for name, shape in zip(names, shapes):
                    views[name] = joined.rows(start, start + shape[0])
                    start += shape[0]
            self.params = {name: views[name] if name in views else ledger.empty(shape, dtype_held)
                           for name, (shape, dtype_held) in held.items()}
            self.inv_freq = ledger.empty((config.head_dim // 2,))
        self.fused = set(views)  # the weights (and biases) held as views of a group's buffer
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
        pre = f"model.layers.{i}."
        a = self._attention(i, x, positions, cache)
        a = self._project(pre + "self_attn.o_proj", a.reshape(batch, steps, cfg.num_heads * cfg.head_dim))
        h, x = ops.add_rmsnorm(h, a, p[pre + "post_attention_layernorm.weight"])
        m = self._mlp(i, x)
        last = i + 1 == cfg.num_layers
        next_norm = "model.norm.weight" if last else f"model.layers.{i + 1}.input_layernorm.weight"
        return ops.add_rmsnorm(h, m, p[next_norm])

    def _attention(self, i: int, x: Sym, positions: Sym, cache=None) -> Sym:
        qkv = self._fused_projection(projection_groups(i)[0], x)
        if cache is not None and qkv is not None and not self.config.qk_norm:
            return cache.attend_qkv(qkv, self.config.num_heads)
        q, k, v = self._attention_inputs(i, x, positions, qkv)
        return cache.attend(i, q, k, v) if cache is not None else ops.attention(q, k, v)

    def _attention_inputs(self, i: int, x: Sym, positions: Sym, qkv: Sym | None) -> tuple[Sym, Sym, Sym]:
        cfg, p = self.config, self.params
        batch, steps, _ = x.shape
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        pre = f"model.layers.{i}."
        if qkv is not None and not cfg.qk_norm:
            return qkv_split(qkv, heads, kv_heads, positions, self.inv_freq)
        if qkv is not None:
            q, k, v = qkv_split(qkv, heads, kv_heads)
        else:
            q = self._project(pre + "self_attn.q_proj", x).reshape(batch, steps, heads, head_dim)
            k = self._project(pre + "self_attn.k_proj", x).reshape(batch, steps, kv_heads, head_dim)
            v = self._project(pre + "self_attn.v_proj", x).reshape(batch, steps, kv_heads, head_dim)
        if cfg.qk_norm:
            q = ops.rmsnorm(q, p[pre + "self_attn.q_norm.weight"])
            k = ops.rmsnorm(k, p[pre + "self_attn.k_norm.weight"])
        q, k = ops.rope_qk(q, k, positions, self.inv_freq)
        return q, k, v

    def _mlp(self, i: int, x: Sym) -> Sym:
        pre = f"model.layers.{i}."
        gate_up = self._fused_projection(projection_groups(i)[1], x)
        if gate_up is not None:
            return self._project(pre + "mlp.down_proj", swiglu_fused(gate_up))
        gate = self._project(pre + "mlp.gate_proj", x)
        up = self._project(pre + "mlp.up_proj", x)
        return self._project(pre + "mlp.down_proj", ops.swiglu(gate, up))

    def _project(self, name: str, x: Sym) -> Sym:
        y = ops.linear(x, self.params[name + ".weight"], self.params.get(name + ".bias"))
        if self.adapters is not None:
            y = self.adapters.adapt(name, x, y, training=self.training)
        return y

    def _fused_projection(self, modules: tuple[str, ...], x: Sym) -> Sym | None:
        """`Model._fused_projection`: the groups `engine.fused` holds in one buffer run fused, unless the joined
        output would be held in row blocks."""
        p = self.params
        if modules[0] + ".weight" not in self.fused:
            return None
        weights = [p[m + ".weight"] for m in modules]
        biases = [p[m + ".bias"] for m in modules] if modules[0] + ".bias" in p else None
        if not one_binding((x.size // x.shape[-1], sum(w.shape[0] for w in weights)), x.dtype, self.ledger.limit):
            return None
        y = fused_linear(x, weights, biases)
        if self.adapters is not None:
            start = 0
            for module, weight in zip(modules, weights):
                y = self.adapters.adapt_columns(module, x, y, start, training=self.training)
                start += weight.shape[0]
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

    def token_logprobs(self, ids: Host, targets: Sym, temperature: float = 1.0,
                       positions: ops.RowSelection | None = None) -> Sym:
        hidden = self.hidden_states(ids)
        batch, steps, width = hidden.shape
        flat_targets = targets if positions is not None else targets.reshape(batch * steps)
        logp = ops.linear_token_logprobs(hidden.reshape(batch * steps, width), self.head(), flat_targets,
                                         temperature, positions)
        return logp.reshape(batch, steps)
