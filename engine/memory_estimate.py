"""Device-memory estimates of generation and of a GRPO step, by the kinds `engine.memory` counts, and the check
that a run fits its device before long work starts.

Owns: `estimate_generation`, `estimate_grpo_step` (a `MemoryEstimate`: bytes per kind at each kind's peak, and the
peak of their sum, as `DeviceMemory.peak` / `peak_total` report them), `format_bytes`, `device_memory_budget`
(what the adapter can hold, where that can be known; `$WGRPO_DEVICE_MEMORY` overrides it) and `check_fits`. No
device is needed: an estimate replays on a ledger of byte counts the allocations the engine's code makes for the
run's shapes, in its order, each rounded to the pool's size class and split into row blocks as `Tensor.empty`
does. Must not import `rl`.

Modelled: weights (matrices in their dtype, norms and biases float32, as `Model.from_numpy` holds them);
gradients in the parameter dtype, twice over while `clip_grad_norm_` scales them (it holds the old ones until it
returns); AdamW's two float32 moments; the KV cache ((B, prompt + new tokens, H_kv, D) float32 k and v per layer;
the prefill's and the one gathered for the samples alive together); the activations of `generate`,
`Model.token_logprobs` and `ops.grpo_loss` (float32 whatever the weights' dtype), with autograd's graph (each
tensor an op consumed lives until the graph is dropped, saved extras until their backward) and its backward
node by node; the LM head's row blocks of at most 64 MiB of logits; the reference log-probs; with mu > 1 the
last update's graph, alive until the next forward is done. An estimate is the worst case of its sizes: the
longest prompt, completions of full length, with `early_stops` the largest cache the live rows are gathered into.
Not modelled: the pool's slack. `Runtime.pool` never gives a buffer back and a free buffer serves only its size
class, so the pool holds more than the peak in use: ~1.5x after one step, and over a run whose batch lengths
vary, buffers of every size class they pass through (measured: 5.5x the peak after ten steps of lengths 25 to
45). Nor the uniform arena (1 MiB), pipelines, the driver's own memory, or the host's (a CPU adapter's buffers
live there, beside the numpy copy of a checkpoint being loaded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wgrpo import kernels
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import FLOAT32, float_dtype
from wgrpo.engine.errors import InputError
from wgrpo.engine.hf_layout import expected_shapes
from wgrpo.engine.memory import KINDS, DeviceMemory
from wgrpo.engine.ops.grpo import METRIC_NAMES
from wgrpo.engine.ops.lm_head import BLOCK_BYTES, block_rows
from wgrpo.engine.runtime import _size_class
from wgrpo.engine.tensor import row_partition

_I32, _U32 = np.dtype(np.int32), np.dtype(np.uint32)
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: int) -> str:
    """A byte count for people: "512 B", "789 KiB", "45.6 MiB", "1.23 GiB"."""
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{int(n)} B"
    return f"{value:.{2 if abs(value) < 10 else 1 if abs(value) < 100 else 0}f} {_UNITS[unit]}"


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated device bytes of some work (`what`): `peak` per kind of `engine.memory.KINDS`, each at its own
    peak, and `total`, the peak of their sum (at most the sum of `peak`: the kinds peak at different times).
    `advice` says what makes it smaller. `split_activation` is the shape of an activation too large for one
    binding (weights, gradients and moments may be held in row blocks; activations may not)."""

    what: str
    peak: dict
    total: int
    advice: str
    split_activation: tuple | None = None  # an activation's shape over `max_binding_bytes`, which no op can take
    max_binding_bytes: int | None = None

    def by_kind(self) -> str:
        """"weights 1.00 GiB, gradients 1.00 GiB, ...": the kinds that hold any bytes."""
        return ", ".join(f"{kind} {format_bytes(self.peak[kind])}" for kind in KINDS if self.peak[kind])

    def summary(self) -> str:
        """"estimated device memory for <what>: 3.20 GiB at peak (weights 1.00 GiB, ...)"."""
        return f"estimated device memory for {self.what}: {format_bytes(self.total)} at peak ({self.by_kind()})"

    def as_metrics(self, prefix: str = "memory/estimate/") -> dict:
        """{prefix + "total": bytes, prefix + kind: bytes, ...} for metrics.jsonl."""
        return {f"{prefix}total": self.total, **{f"{prefix}{kind}": self.peak[kind] for kind in KINDS}}


def peak_metrics(memory: DeviceMemory, prefix: str = "memory/peak/") -> dict:
    """A runtime's measured peaks under the keys of `MemoryEstimate.as_metrics`, to log beside them."""
    return {f"{prefix}total": memory.peak_total, **{f"{prefix}{kind}": memory.peak[kind] for kind in KINDS}}


def tensor_bytes(shape, dtype, max_binding_bytes: int | None = None) -> int:
    """Bytes the pool hands out for `Tensor.empty(shape, dtype)`: each row block (see `tensor.row_partition`;
    none without `max_binding_bytes`) rounded up to its size class."""
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    blocks = row_partition(shape, dtype, max_binding_bytes) if max_binding_bytes else None
    if blocks is None:
        return _size_class(math.prod(shape) * dtype.itemsize)
    row = math.prod(shape[1:]) * dtype.itemsize
    return sum(_size_class((stop - start) * row) for start, stop in blocks)


@dataclass(eq=False)
class _Buffer:
    nbytes: int
    kind: str
    live: bool = True
    shape: tuple = ()
    split: bool = False  # held in row blocks


class _Ledger:
    """A `DeviceMemory` fed with the tensors the engine would create, by shape, instead of with real buffers."""

    def __init__(self, max_binding_bytes: int | None):
        self.limit = max_binding_bytes
        self.memory = DeviceMemory()
        self.buffers: list[_Buffer] = []  # the split ones, to find activations that cannot be held so

    def alloc(self, shape, dtype=FLOAT32, kind: str = "activations") -> _Buffer:
        split = self.limit is not None and row_partition(shape, dtype, self.limit) is not None
        buffer = _Buffer(tensor_bytes(shape, dtype, self.limit), kind, shape=tuple(shape), split=split)
        self.memory.allocate(kind, buffer.nbytes)
        if split:
            self.buffers.append(buffer)
        return buffer

    def split_activation(self, config: ModelConfig) -> tuple | None:
        """The shape of the first activation over the binding limit: the ops hold weights, gradients and
        optimizer moments in row blocks (a parameter-shaped activation is a gradient in the making), not
        activations, so such a run fails where that tensor is made."""
        parameters = set(expected_shapes(config).values())
        return next((b.shape for b in self.buffers if b.kind == "activations" and b.shape not in parameters), None)

    def free(self, *buffers) -> None:
        for buffer in buffers:
            if buffer is not None and buffer.live:
                self.memory.free(buffer.kind, buffer.nbytes)
                buffer.live = False

    def swap(self, shape, *old, dtype=FLOAT32) -> _Buffer:
        """`name = op(...)` where `name` held `old`: the new tensor exists before the old ones are dropped."""
        new = self.alloc(shape, dtype)
        self.free(*old)
        return new

    def count_as(self, buffer: _Buffer, kind: str) -> None:
        self.memory.move(buffer.kind, kind, buffer.nbytes)
        buffer.kind = kind


def _weight_dtypes(config: ModelConfig, dtype) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every parameter's (shape, dtype) as `Model.from_numpy` holds it: matrices in `dtype`, vectors in float32."""
    return {name: (shape, dtype if len(shape) >= 2 else FLOAT32) for name, shape in expected_shapes(config).items()}


def _load_weights(ledger: _Ledger, config: ModelConfig, dtype) -> None:
    for shape, held in _weight_dtypes(config, dtype).values():
        ledger.alloc(shape, held, "weights")
    ledger.alloc((config.head_dim // 2,), FLOAT32, "weights")  # RoPE's inv_freq


class _Forward:
    """The tensors `Model.hidden_states` (and `token_logprobs`) create, in their order.

    Without `graph` (no_grad) a tensor is freed when the code drops its last name for it, and what an op saves for
    a backward dies with the op. With `graph` every tensor an op consumed stays alive (its autograd node holds
    it) until the graph is dropped (`kept`), and the ops' saved extras until their backward (`saved`: one list
    before the first block, one per block, then the head's and the loss's)."""

    def __init__(self, ledger: _Ledger, config: ModelConfig, graph: bool):
        self.ledger, self.config, self.graph = ledger, config, graph
        self.names: dict[str, _Buffer] = {}
        self.kept: list[_Buffer] = []
        self.saved: list[list[_Buffer]] = [[]]

    def bind(self, name: str, buffer: _Buffer) -> None:
        """`name = op(...)`: the new tensor exists before the old one is dropped."""
        old, self.names[name] = self.names.get(name), buffer
        if old is not None:
            self.drop(old)

    def drop(self, buffer: _Buffer, saved: bool = False) -> None:
        """The code lets go of `buffer`; `saved`: an output only the op's backward reads (rstd, lse)."""
        if self.graph:
            (self.saved[-1] if saved else self.kept).append(buffer)
        else:
            self.ledger.free(buffer)

    def release(self) -> None:
        """The graph is dropped (the loss and the log-probs go out of scope)."""
        self.ledger.free(*self.kept, *(b for group in self.saved for b in group), *self.names.values())

    def hidden_states(self, batch: int, steps: int, *, upload_ids: bool, positions_shape, cached: bool) -> _Buffer:
        """Mirror of `Model.hidden_states`: returns the final-normed hidden states (B, T, C)."""
        cfg, alloc = self.config, self.ledger.alloc
        c, f, d, rows = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim, batch * steps
        q_shape, k_shape = (batch, steps, cfg.num_heads, d), (batch, steps, cfg.num_kv_heads, d)
        positions = alloc(positions_shape, _I32)
        ids = alloc((batch, steps), _I32) if upload_ids else None
        self.bind("h", alloc((batch, steps, c)))
        if ids is not None:
            self.drop(ids)
        self._norm((batch, steps, c), "x")
        for _ in range(cfg.num_layers):
            self.saved.append([])
            for name, shape in (("q", q_shape), ("k", k_shape), ("v", k_shape)):
                self.bind(name, alloc((rows, math.prod(shape[2:]))))
            if cfg.qk_norm:
                self._norm(q_shape, "q")
                self._norm(k_shape, "k")
            q, k = alloc(q_shape), alloc(k_shape)  # rope_qk
            self.bind("q", q)
            self.bind("k", k)
            out = alloc(q_shape)
            if not cached:
                self.drop(alloc((batch, cfg.num_heads, steps)), saved=True)  # lse
            self.bind("a", out)
            self.bind("a", alloc((rows, c)))
            self._add_norm((batch, steps, c))
            self.bind("gate", alloc((rows, f)))
            self.bind("up", alloc((rows, f)))
            product = alloc((rows, f))
            down = alloc((rows, c))
            self.drop(product)
            self.bind("m", down)
            self._add_norm((batch, steps, c))
        hidden = self.names.pop("x")
        self.drop(self.names.pop("h"), saved=True)  # the last residual sum: only its add_rmsnorm's backward reads it
        for buffer in [*self.names.values(), positions]:  # the call's other locals
            self.drop(buffer)
        self.names.clear()
        return hidden

    def _norm(self, shape, name: str) -> None:
        y, rstd = self.ledger.alloc(shape), self.ledger.alloc(shape[:-1])
        self.drop(rstd, saved=True)
        self.bind(name, y)

    def _add_norm(self, shape) -> None:
        total, y, rstd = self.ledger.alloc(shape), self.ledger.alloc(shape), self.ledger.alloc(shape[:-1])
        self.drop(rstd, saved=True)
        self.bind("h", total)
        self.bind("x", y)

    def token_logprobs(self, batch: int, steps: int) -> tuple[_Buffer, _Buffer | None, int]:
        """Mirror of `Model.token_logprobs` (host ids, device targets): (log-probs (B*T,), the logits kept for the
        backward or None, rows per head block)."""
        ledger, vocab, rows = self.ledger, self.config.vocab_size, batch * steps
        hidden = self.hidden_states(batch, steps, upload_ids=True, positions_shape=(steps,), cached=False)
        budget = min(BLOCK_BYTES, ledger.limit) if ledger.limit else BLOCK_BYTES
        block = block_rows(rows, vocab, FLOAT32.itemsize, budget)
        logp, lse = ledger.alloc((rows,)), ledger.alloc((rows,))
        self.saved.append([])
        logits = None
        for start in range(0, rows, block):
            logits = ledger.swap((min(rows, start + block) - start, vocab), logits)
        kept = logits if block >= rows else None
        if kept is None:
            ledger.free(logits)
        for buffer in (lse, kept):
            if buffer is not None:
                self.drop(buffer, saved=True)
        self.drop(hidden)
        return logp, kept, block


class _Backward:
    """Mirror of autograd's backward of the policy's log-probs, node by node from the loss to the embedding: the
    gradients in flight, each parameter's gradient counted as `gradients` once its node is done."""

    def __init__(self, ledger: _Ledger, config: ModelConfig, policy_dtype, batch: int, steps: int):
        self.ledger, self.config = ledger, config
        self.rows, self.batch, self.steps = batch * steps, batch, steps
        self.params = _weight_dtypes(config, policy_dtype)
        self.grads: list[_Buffer] = []  # the parameters' .grad, alive until zero_grad

    def grad(self, name: str) -> None:
        """A parameter's gradient, made by its node's backward and stored as its `.grad`."""
        self.keep(self.ledger.alloc(*self.params[name]))

    def keep(self, buffer: _Buffer) -> None:
        self.ledger.count_as(buffer, "gradients")
        self.grads.append(buffer)

    def run(self, forward: _Forward, kept_logits, block: int) -> None:
        cfg, ledger, rows, c = self.config, self.ledger, self.rows, self.config.hidden_size
        alloc, free, swap = ledger.alloc, ledger.free, ledger.swap
        root, d_logp = alloc(()), alloc((rows,))  # backward's seed (named until it returns), grpo_loss's backward
        free(*forward.saved[-1])
        embed = "model.embed_tokens.weight"
        d_hidden, d_head = alloc((rows, c)), alloc(*self.params[embed if cfg.tie_word_embeddings else "lm_head.weight"])
        logits = d_logits = None
        for start in range(0, rows, block):
            shape = (min(rows, start + block) - start, cfg.vocab_size)
            logits = logits if kept_logits is not None else swap(shape, logits)
            d_logits = swap(shape, d_logits)
        free(logits, d_logits, d_logp, *forward.saved[-2])
        self.keep(d_head)
        d_x, d_h = d_hidden, None
        for layer in reversed(range(cfg.num_layers)):
            d_x, d_h = self._layer(layer, d_x, d_h)
            free(*forward.saved[1 + layer])
        d_norm = alloc((rows, c))
        self.grad("model.layers.0.input_layernorm.weight")
        d_embedded = swap((rows, c), d_x, d_h)
        d_table = alloc(*self.params[embed])
        order, offsets = alloc((rows,), _U32), alloc((cfg.vocab_size + 1,), _U32)  # the ids sorted, on the host
        free(order, offsets, d_embedded)
        if cfg.tie_word_embeddings:  # the head's gradient plus the embedding's, in a new tensor
            shape, dtype = self.params[embed]
            d_table = swap(shape, d_head, d_table, dtype=dtype)
        self.keep(d_table)
        free(root, d_norm, *forward.saved[0])  # autograd's loop names the last node's results until it returns

    def _layer(self, layer: int, d_x: _Buffer, d_h: _Buffer | None) -> tuple[_Buffer, _Buffer]:
        """One decoder block's backward, from the gradients of its outputs x and h to those of its inputs."""
        cfg, alloc, free, swap = self.config, self.ledger.alloc, self.ledger.free, self.ledger.swap
        rows, c, f = self.rows, cfg.hidden_size, cfg.intermediate_size
        q_width, kv_width = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        pre, last = f"model.layers.{layer}.", layer + 1 == cfg.num_layers
        # (h, x) = add_rmsnorm(h1, m) with the next block's norm, then the MLP
        d_sum = self._add_norm(f"model.layers.{layer + 1}.input_layernorm.weight" if not last else "model.norm.weight",
                               d_x, d_h)
        d_product = alloc((rows, f))
        self.grad(pre + "mlp.down_proj.weight")
        d_gate, d_up = alloc((rows, f)), alloc((rows, f))  # swiglu's
        d_from_gate = swap((rows, c), d_product)
        self.grad(pre + "mlp.gate_proj.weight")
        d_from_up = swap((rows, c), d_gate)
        self.grad(pre + "mlp.up_proj.weight")
        d_x1 = swap((rows, c), d_up, d_from_gate, d_from_up)  # x1's two gradients added
        # (h1, x1) = add_rmsnorm(h, a), then attention
        d_h1 = self._add_norm(pre + "post_attention_layernorm.weight", d_x1, d_sum)
        d_attn = alloc((rows, q_width))
        self.grad(pre + "self_attn.o_proj.weight")
        delta = alloc((self.batch, cfg.num_heads, self.steps))
        dq, dk, dv = alloc((rows, q_width)), alloc((rows, kv_width)), alloc((rows, kv_width))
        free(delta, d_attn)
        dq, dk = alloc((rows, q_width)), swap((rows, kv_width), dq, dk)  # rope_qk's
        if cfg.qk_norm:
            dq = swap((rows, q_width), dq)
            self.grad(pre + "self_attn.q_norm.weight")
            dk = swap((rows, kv_width), dk)
            self.grad(pre + "self_attn.k_norm.weight")
        total = None
        for name, d_out in (("q", dq), ("k", dk), ("v", dv)):
            d_in = swap((rows, c), d_out)
            self.grad(pre + f"self_attn.{name}_proj.weight")
            if cfg.attention_bias:
                self.grad(pre + f"self_attn.{name}_proj.bias")
            total = d_in if total is None else swap((rows, c), total, d_in)  # x's gradients added
        return total, d_h1

    def _add_norm(self, weight: str, d_y: _Buffer, d_total: _Buffer | None) -> _Buffer:
        d_norm = self.ledger.alloc((self.rows, self.config.hidden_size))
        self.grad(weight)
        if d_total is None:
            self.ledger.free(d_y)
            return d_norm
        return self.ledger.swap((self.rows, self.config.hidden_size), d_norm, d_y, d_total)


def _kv_cache(ledger: _Ledger, config: ModelConfig, rows: int, capacity: int, old=()) -> list[_Buffer]:
    """A `KVCache` of `rows` sequences (k and v of every layer, its starts); with `old`, `KVCache.gather` into it
    (each gather_rows uploads its row index), then the old cache dropped."""
    shape = (rows, capacity, config.num_kv_heads, config.head_dim)
    new = [ledger.alloc(shape, FLOAT32, "kv_cache") for _ in range(2 * config.num_layers)]
    new.append(ledger.alloc((rows,), _U32))
    for _ in range(2 * config.num_layers if old else 0):
        ledger.free(ledger.alloc((rows,), _U32))
    ledger.free(*old)
    return new


def _generation(ledger: _Ledger, config: ModelConfig, batch: int, prompt_tokens: int, new_tokens: int,
                num_samples: int, early_stops: bool) -> None:
    """Mirror of `engine.generate`: `batch` distinct prompts of `prompt_tokens` (the longest, all left-padded to
    it) and `num_samples` completions of each, up to `new_tokens` long."""
    alloc, free, swap = ledger.alloc, ledger.free, ledger.swap
    vocab, seqs = config.vocab_size, batch * num_samples
    steps = min(new_tokens, config.max_position_embeddings - prompt_tokens)
    capacity = prompt_tokens + steps
    cache = _kv_cache(ledger, config, batch, capacity)
    ids = alloc((batch, prompt_tokens), _I32)
    forward = _Forward(ledger, config, graph=False)
    hidden = forward.hidden_states(batch, prompt_tokens, upload_ids=False, positions_shape=(batch, prompt_tokens),
                                   cached=True)
    free(ids)
    last = alloc((seqs, config.hidden_size))
    free(alloc((seqs,), _U32))  # gather_rows' index
    logits = alloc((seqs, vocab))
    if seqs != batch:
        cache = _kv_cache(ledger, config, seqs, capacity, cache)
    state = [alloc((seqs,), _U32), alloc((seqs,), _U32), alloc((seqs,), _I32)]  # seq_ids, finished, next_ids
    outputs = [alloc((steps, seqs), _I32), alloc((steps, seqs)), alloc((1,), _U32)]  # tokens, log-probs, eos ids

    def decode(rows: int) -> None:
        nonlocal hidden, logits
        new = forward.hidden_states(rows, 1, upload_ids=False, positions_shape=(rows, 1), cached=True)
        free(hidden)
        hidden, logits = new, swap((rows, vocab), logits)

    for _ in range(min(steps - 1, 2)):  # the first step still holds the prefill's hidden states
        decode(seqs)
    live = seqs - max(1, math.ceil(seqs / 4))  # the most rows a compaction keeps
    if early_stops and live >= 1 and steps > 1:
        cache = _kv_cache(ledger, config, live, capacity, cache)
        state = [swap((live,), old, dtype=dtype) for old, dtype in zip(state, (_U32, _U32, _I32))]
        decode(live)
    free(*cache, *state, *outputs, last, logits, hidden)


def _clip_gradients(ledger: _Ledger, backward: _Backward) -> None:
    """`clip_grad_norm_`: per-chunk partial sums, then a scaled copy of every gradient while the old ones are
    still held (by its list of gradient blocks) until it returns."""
    chunk = kernels.load("norm_clip").constants["CHUNK"]
    chunks = sum(math.ceil(math.prod(shape) / chunk) for shape, _ in backward.params.values())
    temporaries = [ledger.alloc((max(1, chunks),)), ledger.alloc(()), ledger.alloc((1,))]
    copies = [ledger.alloc(shape, dtype, "gradients") for shape, dtype in backward.params.values()]
    ledger.free(*temporaries, *backward.grads)
    backward.grads = copies


def _update(ledger: _Ledger, config: ModelConfig, policy_dtype, has_reference: bool, sequences: int, steps: int,
            mu: int, grad_clip: bool) -> None:
    """Mirror of `GRPOTrainer.update` on `sequences` rows of `steps` tokens: the batch's tensors, the reference
    log-probs, then mu x (forward, grpo_loss, backward, clip, AdamW step, zero_grad) of the policy."""
    alloc, free = ledger.alloc, ledger.free
    inputs = [alloc((sequences, steps), _I32), alloc((sequences, steps)), alloc((sequences, steps)),
              alloc((sequences,))]  # targets, mask, old log-probs, advantages
    reference_logp = None
    if has_reference:
        reference_logp = _Forward(ledger, config, graph=False).token_logprobs(sequences, steps)[0]
    previous = None
    for _ in range(mu):
        forward = _Forward(ledger, config, graph=True)
        logp, kept_logits, block = forward.token_logprobs(sequences, steps)
        forward.saved.append([alloc((sequences, kernels.load("grpo").constants["STATS"]))])  # grpo_loss's row stats
        forward.kept += [logp, alloc(()), alloc((len(METRIC_NAMES),))]  # the log-probs, the loss, its metrics
        if previous is not None:  # the last update's graph, named by `loss` until now
            previous.release()
        backward = _Backward(ledger, config, policy_dtype, sequences, steps)
        backward.run(forward, kept_logits, block)
        if grad_clip:
            _clip_gradients(ledger, backward)
        free(*backward.grads)  # zero_grad
        previous = forward
    previous.release()
    free(reference_logp, *inputs)


def _check_sizes(config: ModelConfig, prompt_tokens, **sizes) -> None:
    for name, value in dict(sizes, prompt_tokens=prompt_tokens).items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"memory estimate: {name} must be an integer >= 1, got {value!r}")
    if prompt_tokens >= config.max_position_embeddings:
        raise InputError(f"memory estimate: prompt_tokens {prompt_tokens} leave no room for a new token in the "
                         f"model's max_position_embeddings={config.max_position_embeddings}")


def estimate_generation(config: ModelConfig, weight_dtype="float32", batch: int = 1, prompt_tokens: int = 1,
                        new_tokens: int = 1, *, num_samples: int = 1, early_stops: bool = True,
                        max_binding_bytes: int | None = None) -> MemoryEstimate:
    """Device bytes of `engine.generate` with the model loaded (matrices in `weight_dtype`): `batch` distinct
    prompts of at most `prompt_tokens` tokens, `num_samples` completions of each, up to `new_tokens` long.
    `early_stops`: count the smaller cache the live rows are gathered into once a quarter of the completions
    has ended (False when all run to `new_tokens`, as without an end-of-text id). `max_binding_bytes`: the
    adapter's binding limit (`Device.max_binding_bytes`; None: no tensor is split into row blocks)."""
    _check_sizes(config, prompt_tokens, batch=batch, new_tokens=new_tokens, num_samples=num_samples)
    dtype = float_dtype(weight_dtype, "memory estimate: weight_dtype")
    ledger = _Ledger(max_binding_bytes)
    _load_weights(ledger, config, dtype)
    _generation(ledger, config, batch, prompt_tokens, new_tokens, num_samples, early_stops)
    advice = "fewer prompts or samples, fewer new tokens" + (", bfloat16 weights" if dtype.itemsize > 2 else "")
    return MemoryEstimate("generation", dict(ledger.memory.peak), ledger.memory.peak_total, advice,
                          ledger.split_activation(config), max_binding_bytes)


def estimate_grpo_step(config: ModelConfig, policy_dtype="float32", reference_dtype=None, has_reference: bool = True,
                       *, prompts: int, num_generations: int, prompt_tokens: int, completion_tokens: int,
                       mu: int = 1, grad_clip: bool = True, eval_batch: int = 0, early_stops: bool = True,
                       max_binding_bytes: int | None = None) -> MemoryEstimate:
    """Device bytes of a GRPO step (`rl.train.trainer`) once AdamW's moments exist: the policy trained in
    `policy_dtype` and, with `has_reference`, the frozen reference in `reference_dtype` (None: the policy's);
    the rollout of `prompts` x `num_generations` completions of up to `completion_tokens` after prompts of at
    most `prompt_tokens`; with `eval_batch`, a greedy evaluation of that many prompts; the reference log-probs
    and `mu` policy updates (with `grad_clip`: clip_grad_norm_) on rows of prompt + completion - 1 tokens.
    `early_stops` and `max_binding_bytes` as in `estimate_generation`."""
    _check_sizes(config, prompt_tokens, prompts=prompts, num_generations=num_generations,
                 completion_tokens=completion_tokens, mu=mu, **({"eval_batch": eval_batch} if eval_batch else {}))
    policy = float_dtype(policy_dtype, "memory estimate: policy_dtype")
    reference = float_dtype(reference_dtype or policy, "memory estimate: reference_dtype")
    ledger = _Ledger(max_binding_bytes)
    _load_weights(ledger, config, policy)
    if has_reference:
        _load_weights(ledger, config, reference)
    for shape in expected_shapes(config).values():  # AdamW's exp_avg and exp_avg_sq
        ledger.alloc(shape, FLOAT32, "optimizer")
        ledger.alloc(shape, FLOAT32, "optimizer")
    _generation(ledger, config, prompts, prompt_tokens, completion_tokens, num_generations, early_stops)
    if eval_batch:
        _generation(ledger, config, eval_batch, prompt_tokens, completion_tokens, 1, early_stops)
    steps = prompt_tokens + min(completion_tokens, config.max_position_embeddings - prompt_tokens) - 1
    _update(ledger, config, policy, has_reference, prompts * num_generations, steps, mu, grad_clip)
    advice = "fewer prompts per step or generations per prompt, shorter completions"
    advice += ", a bfloat16 reference model" if has_reference and reference.itemsize > 2 else ""
    advice += ", one update per batch (mu 1)" if mu > 1 else ""
    return MemoryEstimate("a GRPO step", dict(ledger.memory.peak), ledger.memory.peak_total, advice,
                          ledger.split_activation(config), max_binding_bytes)
