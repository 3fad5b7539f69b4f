"""The Llama/Qwen2/Qwen3-family decoder on engine ops.

Owns: the parameters (named exactly as Hugging Face names them, so checkpoints map one to one; a layer's q/k/v and
gate/up held in one buffer each, so that one matmul computes each group: `engine.fused`), the forward pass
`model(ids) -> logits`, and `token_logprobs`. Reading and writing checkpoints is `engine.hf`'s job; sampling is
`engine.generate`'s. Must not import `rl`.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

import numpy as np

from wgrpo.engine import ops
from wgrpo.engine.autograd import is_grad_enabled
from wgrpo.engine.checkpointing import checkpoint
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.device import Device, get_device
from wgrpo.engine.dtypes import FLOAT32, convert, dtype_name, float_dtype
from wgrpo.engine.fused import one_binding, projection_groups
from wgrpo.engine.memory import memory_kind
from wgrpo.engine.tensor import Tensor

ADAPTER_CONFIG_FILE = "adapter_config.json"  # PEFT's: a directory holding it is a LoRA adapter of a base model


class Model:
    """A decoder-only transformer: embedding, `num_layers` x (RMSNorm, GQA attention with RoPE, RMSNorm,
    SwiGLU MLP), a final RMSNorm and the language-model head (tied to the embedding or not). Qwen3's attention
    RMS-normalizes each q and k head before RoPE."""

    def __init__(self, config: ModelConfig, params: dict[str, Tensor]):
        from wgrpo.engine.ops.rope import rope_inv_freq

        self.config = config
        self.params = params
        self.device = next(iter(params.values())).device
        # the dtype of the matrices; norms and biases are float32 whatever it is, activations always are
        self.dtype = params["model.embed_tokens.weight"].dtype
        # RoPE frequencies (default, linear or llama3-scaled), computed once as Hugging Face computes them
        with memory_kind("weights"):  # a buffer of the model, as its parameters
            self.inv_freq = Tensor.from_numpy(rope_inv_freq(config.head_dim, **config.rope_parameters), self.device)
        self.adapters = None  # engine.lora.LoraAdapters once LoRA is attached (attach_lora, load_adapter)
        self.training = False  # train() / eval(): LoRA's dropout is on only while training, as in torch
        # keep each decoder layer's inputs only and run the layer again in the backward (grad-enabled, uncached
        # forwards), as transformers' gradient_checkpointing_enable(): the same gradients for a fraction of the
        # activations
        self.gradient_checkpointing = False
        self.name_or_path = ""  # the directory or Hub id it was loaded from, as transformers' name_or_path

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_numpy(cls, config: ModelConfig, state: dict[str, np.ndarray], device: Device | str | None = None,
                   source: str = "state dict", dtype=None) -> "Model":
        """Upload a state dict of Hugging Face names (checked against the config first).

        The matrices (embedding, projections, head) are held in `dtype` ("float32", "bfloat16" or "float16";
        None: the dtype of the state dict's embedding), read by the kernels in that dtype and widened to f32;
        norm weights and biases (a thousandth of the parameters) are held in float32. A matrix over the
        adapter's binding limit is held in row blocks. Each layer's q/k/v weights (and biases) share one buffer,
        and so do its gate/up weights, each tensor a view of it (`engine.fused`), so that one matmul computes
        them. Counted as `weights` in the device's memory."""
        from wgrpo.engine.fused import upload_parameters
        from wgrpo.engine.hf import check_state_dict, checkpoint_dtype

        state = check_state_dict(state, config, source)
        dtype = checkpoint_dtype(state) if dtype is None else float_dtype(dtype, f"{source}: dtype")
        if dtype == np.float64:
            dtype = FLOAT32
        device = get_device(device)
        with memory_kind("weights"):
            params = upload_parameters(config, state, dtype, device, source)
        return cls(config, params)

    def to(self, dtype) -> "Model":
        """This model with its matrices in `dtype` ("float32", "bfloat16", "float16"): itself when they already
        are, else a new model (the weights go through the host once) sharing its LoRA adapters, if any."""
        dtype = float_dtype(dtype, "Model.to")
        if dtype == self.dtype:
            return self
        model = Model.from_numpy(self.config, self.state_dict(), self.device, source="Model.to", dtype=dtype)
        model.adapters, model.name_or_path = self.adapters, self.name_or_path  # the adapters stay float32, shared
        return model

    @classmethod
    def random(cls, config: ModelConfig, seed: int = 0, device: Device | str | None = None, dtype=None) -> "Model":
        """Fresh weights as Hugging Face initializes them: normal(0, 0.02) matrices, unit norms, zero biases;
        held in `dtype` (default float32)."""
        rng = np.random.default_rng(seed)
        matrix_dtype = FLOAT32 if dtype is None else float_dtype(dtype, "Model.random: dtype")
        state = {}
        for name, shape in parameter_shapes(config).items():
            if name.endswith("norm.weight"):
                state[name] = np.ones(shape, np.float32)
            elif name.endswith(".bias"):
                state[name] = np.zeros(shape, np.float32)
            else:  # drawn in float32, held in the model's dtype at once: a bf16 model never has an f32 host copy
                state[name] = convert((rng.standard_normal(shape) * 0.02).astype(np.float32), matrix_dtype)
        return cls.from_numpy(config, state, device, source="random init", dtype=matrix_dtype)

    # ------------------------------------------------------------------ parameters

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def named_parameters(self) -> dict[str, Tensor]:
        return dict(self.params)

    def trainable_parameters(self) -> list[Tensor]:
        """What an optimizer trains: the LoRA adapters' tensors when adapters are attached (the base stays
        frozen in its dtype), else every parameter."""
        return self.adapters.parameters() if self.adapters is not None else self.parameters()

    @contextlib.contextmanager
    def disable_adapters(self):
        """Run the base model alone inside (PEFT's `disable_adapter()`): the frozen reference of a LoRA run,
        without a second copy of the weights. A no-op without adapters."""
        if self.adapters is None:
            yield self
            return
        with self.adapters.disabled():
            yield self

    def train(self, mode: bool = True) -> "Model":
        """Training mode (LoRA dropout on) or, with mode=False, evaluation mode; returns the model."""
        self.training = bool(mode)
        return self

    def eval(self) -> "Model":
        return self.train(False)

    def gradient_checkpointing_enable(self) -> "Model":
        self.gradient_checkpointing = True
        return self

    def gradient_checkpointing_disable(self) -> "Model":
        self.gradient_checkpointing = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "Model":
        if requires_grad and self.dtype != FLOAT32:
            raise TypeError(f"Model.requires_grad_: this model holds {dtype_name(self.dtype)} weights, which are "
                            f"frozen storage; train a float32 copy: model.to('float32')")
        for p in self.params.values():
            p.requires_grad_(requires_grad)
        if self.adapters is not None:  # training the whole model trains its adapters too
            for p in self.adapters.parameters():
                p.requires_grad_(requires_grad)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter as a numpy array under its Hugging Face name, in the dtype held (bfloat16 as
        `engine.dtypes.BFLOAT16`; one read-back each)."""
        return {name: p.numpy() for name, p in self.params.items()}

    def save_pretrained(self, path: str | Path, tokenizer=None, dtype=None, *, merge: bool = False) -> None:
        """Write config.json + model.safetensors (+ tokenizer files) that transformers loads, every tensor in
        `dtype` (default: the model's, so a bfloat16 model writes bfloat16).

        With LoRA adapters attached it writes, as a PEFT model's save_pretrained does, the adapter directory
        (adapter_config.json + adapter_model.safetensors, `engine.peft_io.save_adapter`); with `merge=True` the
        full model with the adapters merged into its weights (PEFT's merge_and_unload, then save_pretrained)."""
        from wgrpo.engine.hf import write_checkpoint

        if self.adapters is not None and not merge:
            from wgrpo.engine.peft_io import save_adapter

            save_adapter(path, self, tokenizer=tokenizer)
            return
        dtype = self.dtype if dtype is None else float_dtype(dtype, "save_pretrained: dtype")
        if self.adapters is not None:
            from wgrpo.engine.lora import merged_state_dict

            state = merged_state_dict(self)
        else:
            state = self.state_dict()
        write_checkpoint(path, self.config, {name: convert(array, dtype) for name, array in state.items()},
                         tokenizer=tokenizer)

    # ------------------------------------------------------------------ forward

    def __call__(self, ids, positions=None, cache=None) -> Tensor:
        """Logits (B, T, V) for token ids (B, T) (numpy int array or int32 Tensor)."""
        return self.logits(self.hidden_states(ids, positions, cache))

    def hidden_states(self, ids, positions=None, cache=None) -> Tensor:
        """The final-normed hidden states (B, T, C).

        `ids` (B, T) are a numpy int array or an int32 Tensor (read where it lies: a decode step feeds the ids
        it sampled on the GPU without a host round trip). `positions` (T,) or (B, T), numpy or int32 Tensor,
        default to 0..T-1. A `cache` (see `engine.generate`) takes over attention: `cache.attend(layer, q, k, v)`
        stores this step's keys and values and attends over everything cached, so decoding computes only the
        new tokens.
        """
        cfg, p = self.config, self.params
        if not isinstance(ids, Tensor):
            ids = np.asarray(ids)
            if ids.dtype.kind not in "iu":
                raise ValueError(f"model: ids must be integers, got {ids.dtype}")
            ids = ids.astype(np.int32)
        if ids.ndim != 2:
            raise ValueError(f"model: ids must have shape (B, T), got {ids.shape}")
        batch, steps = ids.shape
        if positions is None and steps > cfg.max_position_embeddings:
            raise ValueError(f"model: {steps} tokens exceed max_position_embeddings={cfg.max_position_embeddings}")
        if positions is None:
            positions = np.arange(steps, dtype=np.int32)
        if not isinstance(positions, Tensor):
            positions = Tensor.from_numpy(np.asarray(positions, np.int32), self.device)
        h = ops.embedding(ids, p["model.embed_tokens.weight"], np.float32)  # (B, T, C): the residual stream
        x = ops.rmsnorm(h, p["model.layers.0.input_layernorm.weight"], cfg.rms_norm_eps)
        recompute = self.gradient_checkpointing and cache is None and is_grad_enabled()
        for i in range(cfg.num_layers):
            if recompute:  # keep only the layer's inputs; its backward runs the layer again
                h, x = checkpoint(partial(self._layer, i, positions=positions), h, x,
                                  params=self._layer_trainables(i))
            else:
                h, x = self._layer(i, h, x, positions=positions, cache=cache)
        return x

    def _layer(self, i: int, h: Tensor, x: Tensor, *, positions: Tensor, cache=None) -> tuple[Tensor, Tensor]:
        """Decoder layer i on the residual stream h (B, T, C) and its normed input x: (h', the next normed input)."""
        cfg, p, eps = self.config, self.params, self.config.rms_norm_eps
        batch, steps, _ = h.shape
        pre = f"model.layers.{i}."
        a = self._attention(i, x, positions, cache)  # (B, T, H, D)
        a = self._project(pre + "self_attn.o_proj", a.reshape(batch, steps, cfg.num_heads * cfg.head_dim))
        # each residual add is fused with the RMSNorm that follows it: (h + a, rmsnorm(h + a))
        h, x = ops.add_rmsnorm(h, a, p[pre + "post_attention_layernorm.weight"], eps)
        m = self._mlp(i, x)
        last = i + 1 == cfg.num_layers
        next_norm = "model.norm.weight" if last else f"model.layers.{i + 1}.input_layernorm.weight"
        return ops.add_rmsnorm(h, m, p[next_norm], eps)

    def _attention(self, i: int, x: Tensor, positions: Tensor, cache=None) -> Tensor:
        """Layer i's attention output (B, T, H, D) for its normed input x, over the KV cache when decoding."""
        qkv = self._fused_projection(projection_groups(i)[0], x)  # (B, T, (H + 2 H_kv) D)
        if cache is not None and qkv is not None and not self.config.qk_norm:
            # the split, RoPE and the cache write in one dispatch
            return cache.attend_qkv(i, qkv, self.config.num_heads, positions, self.inv_freq)
        q, k, v = self._attention_inputs(i, x, positions, qkv)  # (B, T, H, D), (B, T, H_kv, D) x 2, rotated
        return cache.attend(i, q, k, v) if cache is not None else ops.attention(q, k, v, causal=True)

    def _attention_inputs(self, i: int, x: Tensor, positions: Tensor,
                          qkv: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """q, k and v of layer i for its normed input x (B, T, C), q and k normed per head (Qwen3) and rotated.
        With the q/k/v weights fused (qkv, their one matmul's output): one dispatch splitting it and rotating q
        and k (Qwen3: split, norm, then rotate)."""
        cfg, p, eps = self.config, self.params, self.config.rms_norm_eps
        batch, steps, _ = x.shape
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        pre = f"model.layers.{i}."
        if qkv is not None and not cfg.qk_norm:
            return ops.qkv_split(qkv, heads, kv_heads, positions, inv_freq=self.inv_freq)
        if qkv is not None:
            q, k, v = ops.qkv_split(qkv, heads, kv_heads)
        else:
            q = self._project(pre + "self_attn.q_proj", x).reshape(batch, steps, heads, head_dim)  # (B, T, H, D)
            k = self._project(pre + "self_attn.k_proj", x).reshape(batch, steps, kv_heads, head_dim)
            v = self._project(pre + "self_attn.v_proj", x).reshape(batch, steps, kv_heads, head_dim)
        if cfg.qk_norm:  # Qwen3: RMSNorm over each head's D, before RoPE
            q = ops.rmsnorm(q, p[pre + "self_attn.q_norm.weight"], eps)
            k = ops.rmsnorm(k, p[pre + "self_attn.k_norm.weight"], eps)
        q, k = ops.rope_qk(q, k, positions, inv_freq=self.inv_freq)
        return q, k, v

    def _mlp(self, i: int, x: Tensor) -> Tensor:
        """down(silu(gate(x)) * up(x)) of layer i; with gate/up fused, one matmul and a SwiGLU reading its halves."""
        pre = f"model.layers.{i}."
        gate_up = self._fused_projection(projection_groups(i)[1], x)  # (B, T, 2I)
        if gate_up is not None:
            return self._project(pre + "mlp.down_proj", ops.swiglu_fused(gate_up))
        gate = self._project(pre + "mlp.gate_proj", x)
        up = self._project(pre + "mlp.up_proj", x)
        return self._project(pre + "mlp.down_proj", ops.swiglu(gate, up))

    def _project(self, name: str, x: Tensor) -> Tensor:
        """The linear layer `name` (a Hugging Face module path) on x, with its LoRA adapter when one is attached."""
        y = ops.linear(x, self.params[name + ".weight"], self.params.get(name + ".bias"))
        if self.adapters is not None:
            y = self.adapters.adapt(name, x, y, training=self.training)
        return y

    def _fused_projection(self, modules: tuple[str, ...], x: Tensor) -> Tensor | None:
        """The linear layers `modules` on x in one matmul, side by side (B, T, sum of out_i), each LoRA update
        added into its columns; None when they cannot run fused: their weights (or biases) are not adjacent views
        of one buffer (held apart, or replaced), or the joined output would be over the binding limit."""
        p = self.params
        weights = [p[m + ".weight"] for m in modules]
        biases = [p.get(m + ".bias") for m in modules]
        if any(b is None for b in biases):
            if any(b is not None for b in biases):
                return None
            biases = None
        joined = Tensor.join_rows(weights)
        if joined is None or (biases is not None and Tensor.join_rows(biases) is None):
            return None
        if not one_binding((x.size // x.shape[-1], joined.shape[0]), x.dtype, self.device.max_binding_bytes):
            return None  # activations are never held in row blocks: the projections one at a time are smaller
        y = ops.fused_linear(x, weights, biases)
        if self.adapters is not None:
            start = 0
            for module, weight in zip(modules, weights):
                y = self.adapters.adapt_columns(module, x, y, start, training=self.training)
                start += weight.shape[0]
        return y

    def _layer_trainables(self, i: int) -> list[Tensor]:
        """The tensors of layer i that may require grad (its weights, or its adapters' when LoRA is attached)."""
        pre = f"model.layers.{i}."
        if self.adapters is not None:
            return [t for name, t in self.adapters.named_parameters().items() if f".{pre}" in f".{name}"]
        next_norm = "model.norm.weight" if i + 1 == self.config.num_layers else \
            f"model.layers.{i + 1}.input_layernorm.weight"
        return [t for name, t in self.params.items() if name.startswith(pre) or name == next_norm]

    def logits(self, hidden: Tensor) -> Tensor:
        head = self.params.get("lm_head.weight", self.params["model.embed_tokens.weight"])
        return ops.linear(hidden, head)  # (B, T, V)

    def token_logprobs(self, ids, targets, temperature: float = 1.0, *, positions=None) -> Tensor:
        """log p(targets[b, t] | ids[b, :t+1]) of shape (B, T), from logits / temperature.

        The head and the log-softmax run fused over blocks of rows (`ops.linear_token_logprobs`), so the
        (B, T, V) logits never exist at once: what makes GRPO updates fit with a large vocabulary.
        `positions`: the flat indices b * T + t of the only positions wanted (a host array or an
        `ops.rows.RowSelection`); the head skips the others, which come out 0, and targets may then be just
        those positions' (P,)."""
        hidden = self.hidden_states(ids)  # (B, T, C)
        batch, steps, width = hidden.shape
        if isinstance(targets, Tensor):
            flat_targets = targets if positions is not None and targets.ndim == 1 else targets.reshape(batch * steps)
        else:
            flat_targets = np.asarray(targets, np.int32).reshape(-1)
        head = self.params.get("lm_head.weight", self.params["model.embed_tokens.weight"])
        logp = ops.linear_token_logprobs(hidden.reshape(batch * steps, width), head, flat_targets, temperature,
                                         positions=positions)
        return logp.reshape(batch, steps)


def load_pretrained(path: str | Path, device: Device | str | None = None, dtype: str = "auto", *,
                    revision: str | None = None):
    """(Model, PretrainedTokenizer or None) from a Hugging Face checkpoint directory or Hub id.

    A directory holding a PEFT adapter (adapter_config.json) loads its base model (the config's
    base_model_name_or_path) with the adapter attached, as peft's AutoPeftModelForCausalLM does.
    `path` is a local directory, or a Hub id such as `Qwen/Qwen2.5-0.5B-Instruct` (optionally `@revision`, or
    `revision=`) resolved through huggingface_hub's cache (`engine.hub.resolve_model_path`). Reads config.json
    (Qwen2/Qwen2.5, Qwen3, Llama 3.x, SmolLM2), tokenizer.json with its tokenizer_config.json and chat template when
    present (refused when one of its ids is outside the model's vocab_size) and model.safetensors (f32, f16 or
    bf16; or a sharded index; refused when a weight holds NaN or infinities). The matrices are held in `dtype`:
    "auto" (the checkpoint's), "float32", "bfloat16" or "float16". Errors are InputErrors naming the file, the
    tensor and the expected shape or size.
    """
    from wgrpo.engine.hf import TOKENIZER_FILE, load_checkpoint, load_tokenizer, read_config
    from wgrpo.engine.hub import is_hub_id, resolve_model_path

    if dtype != "auto":
        float_dtype(dtype, "load_pretrained: dtype")  # a bad name fails before the long read
    hub_id = str(path) if is_hub_id(str(path)) else None
    path = resolve_model_path(path, revision=revision)
    if (path / ADAPTER_CONFIG_FILE).is_file():  # a PEFT adapter directory: its base model with the adapter on
        from wgrpo.engine.peft_io import load_peft_model

        return load_peft_model(path, device, dtype)
    tokenizer = None
    if (path / TOKENIZER_FILE).is_file():  # checked against config.json before the long read of the weights
        tokenizer = load_tokenizer(path, read_config(path))
    config, state = load_checkpoint(path, "auto")
    model = Model.from_numpy(config, state, device, source=str(path), dtype=None if dtype == "auto" else dtype)
    model.name_or_path = hub_id or str(Path(path).absolute())  # what a PEFT adapter names as its base
    return model, tokenizer


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face name -> shape of every trainable tensor, in a stable order."""
    from wgrpo.engine.hf import expected_shapes

    return expected_shapes(config)
