"""Device-memory estimates of generation and of a GRPO step, by the kinds `engine.memory` counts.

Owns the public API: `estimate_generation`, `estimate_grpo_step` (a `MemoryEstimate`: bytes per kind at each
kind's peak, and the peak of their sum, as `DeviceMemory.peak` / `peak_total` report them), `format_bytes`,
`peak_metrics` and `tensor_bytes`; the check of their sizes. No device is needed: an estimate replays on a ledger
of byte counts (`memory_ledger`) the allocations the engine's code makes for the run's shapes, in its order:
the model (`memory_model`: plain, KV-cached and checkpointed decoder layers, LoRA adapters), its ops and their
backwards (`memory_ops`), autograd's graph and backward (`memory_graph`), generation (`memory_generate`) and the
update (`memory_update`). Must not import `rl`.

Modelled: weights (matrices in their dtype, norms and biases float32, as `Model.from_numpy` holds them; LoRA's
float32 A and B); gradients and AdamW's two float32 moments of what is trained (every parameter, or with LoRA the
adapters only; each held once: accumulated in place where no other parameter shares it, and clipped as AdamW reads it); the KV cache of
the completions sampled at once (`generation_batch`) and of the evaluation's greedy batch; every activation of
`generate`, `Model.token_logprobs` and `ops.grpo_loss` (float32 whatever the weights' dtype), with autograd's graph
(what each op saved for its backward lives until that node's backward; the leaves it consumed until the graph goes)
and its backward node by node; the LM head's row blocks of at most 64 MiB of logits; micro-batches (the reference
log-probs of each kept for all mu iterations, gradients added into `.grad`); checkpointed layers (their inputs kept,
each layer recomputed with its graph in the backward). An estimate is the worst case of its sizes: the longest
prompt, completions of full length, with `early_stops` the largest cache the live rows are gathered into.
Not modelled: the pool's slack. `Runtime.pool` never gives a buffer back and a free buffer serves only its size
class, so the pool holds more than the peak in use: ~1.5x after one step, and over a run whose batch lengths
vary, buffers of every size class they pass through (measured: 5.5x the peak after ten steps of lengths 25 to
45). Nor the uniform arena (1 MiB), pipelines, the driver's own memory, or the host's (a CPU adapter's buffers
live there, beside the numpy copy of a checkpoint being loaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import FLOAT32, dtype_name, float_dtype
from wgrpo.engine.errors import InputError
from wgrpo.engine.hf_layout import expected_shapes
from wgrpo.engine.memory import KINDS, DeviceMemory
from wgrpo.engine.memory_generate import replay_generate
from wgrpo.engine.memory_ledger import Ledger, tensor_bytes
from wgrpo.engine.lora import ALL_LINEAR, LoraConfig
from wgrpo.engine.memory_model import ReplayAdapters, ReplayModel
from wgrpo.engine.memory_update import replay_update

__all__ = ["ALL_LINEAR", "MemoryEstimate", "estimate_generation", "estimate_grpo_step", "format_bytes",
           "peak_metrics", "tensor_bytes"]

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

    def total_text(self) -> str:
        """The peak for people: "3.20 GiB"."""
        return format_bytes(self.total)

    def summary(self) -> str:
        """"estimated device memory for <what>: 3.20 GiB at peak (weights 1.00 GiB, ...)"."""
        return f"estimated device memory for {self.what}: {format_bytes(self.total)} at peak ({self.by_kind()})"

    def as_metrics(self, prefix: str = "memory/estimate/") -> dict:
        """{prefix + "total": bytes, prefix + kind: bytes, ...} for metrics.jsonl."""
        return {f"{prefix}total": self.total, **{f"{prefix}{kind}": self.peak[kind] for kind in KINDS}}


def peak_metrics(memory: DeviceMemory, prefix: str = "memory/peak/") -> dict:
    """A runtime's measured peaks under the keys of `MemoryEstimate.as_metrics`, to log beside them."""
    return {f"{prefix}total": memory.peak_total, **{f"{prefix}{kind}": memory.peak[kind] for kind in KINDS}}


def _check_sizes(config: ModelConfig, prompt_tokens, **sizes) -> None:
    for name, value in dict(sizes, prompt_tokens=prompt_tokens).items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"memory estimate: {name} must be an integer >= 1, got {value!r}")
    if prompt_tokens >= config.max_position_embeddings:
        raise InputError(f"memory estimate: prompt_tokens {prompt_tokens} leave no room for a new token in the "
                         f"model's max_position_embeddings={config.max_position_embeddings}")


def _estimate(what: str, ledger: Ledger, advice: str) -> MemoryEstimate:
    return MemoryEstimate(what, dict(ledger.memory.peak), ledger.memory.peak_total, advice, ledger.split_activation,
                          ledger.limit)


def _ledger(config: ModelConfig, max_binding_bytes: int | None) -> Ledger:
    return Ledger(max_binding_bytes, expected_shapes(config).values())


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
    ledger = _ledger(config, max_binding_bytes)
    model = ReplayModel(ledger, config, dtype)
    replay_generate(model, batch, prompt_tokens, new_tokens, num_samples, early_stops)
    del model
    advice = "fewer prompts or samples, fewer new tokens" + (", bfloat16 weights" if dtype.itemsize > 2 else "")
    return _estimate("generation", ledger, advice)


def _micro_batches(rows: int, micro_batch) -> list[int]:
    """Rows of each micro-batch: `micro_batch` rows each (the last may be shorter; 0 or None: one of them all), or
    the sizes themselves."""
    if micro_batch is None or isinstance(micro_batch, (int, np.integer)):
        size = int(micro_batch or rows)
        if size < 1:
            raise InputError(f"memory estimate: micro_batch must be >= 0, got {micro_batch!r}")
        return [min(size, rows - start) for start in range(0, rows, size)]
    sizes = [int(n) for n in micro_batch]
    if sum(sizes) != rows or min(sizes, default=0) < 1:
        raise InputError(f"memory estimate: micro-batches of {sizes} rows do not cut the {rows} completions")
    return sizes


def _advice(*, has_reference: bool, reference, mu: int, micro: int, checkpointing: bool, lora: bool, chunk: int,
            group: int) -> str:
    advice = ["fewer prompts per step or generations per prompt, shorter completions"]
    if micro > 1:
        advice.append("smaller micro-batches of the update")
    if not checkpointing:
        advice.append("gradient checkpointing")
    if not lora:
        advice.append("LoRA adapters instead of full fine-tuning")
        if has_reference and reference.itemsize > 2:
            advice.append("a bfloat16 reference model")
    if chunk > group:
        advice.append("fewer completions sampled at once")
    if mu > 1:
        advice.append("one update per batch (mu 1)")
    return ", ".join(advice)


def estimate_grpo_step(config: ModelConfig, policy_dtype="float32", reference_dtype=None, has_reference: bool = True,
                       *, prompts: int, num_generations: int, prompt_tokens: int, completion_tokens: int,
                       mu: int = 1, grad_clip: bool = True, eval_batch: int = 0, early_stops: bool = True,
                       max_binding_bytes: int | None = None, micro_batch: int | Sequence[int] | None = 0,
                       generation_batch: int = 0, gradient_checkpointing: bool = False, lora_rank: int | None = None,
                       lora_targets: str | Sequence[str] = ALL_LINEAR, lora_dropout: float = 0.0) -> MemoryEstimate:
    """Device bytes of a GRPO step (`rl.train.trainer`) once AdamW's moments exist.

    The policy is held in `policy_dtype`; `has_reference`: the loss has a KL term, whose reference log-probs come
    from a frozen reference model held in `reference_dtype` (None: the policy's), or with LoRA from the policy's
    base with its adapters off (no second copy). The rollout: `prompts` x `num_generations` completions of up to
    `completion_tokens` after prompts of at most `prompt_tokens`, `generation_batch` of them sampled at once
    (whole groups; 0: all); with `eval_batch`, a greedy evaluation of that many prompts. The update: `mu`
    optimizer steps (with `grad_clip`: clip_coefficient, applied by AdamW's step) on rows of prompt + completion - 1 tokens, walked in
    micro-batches (`micro_batch` rows each, or the sizes of each in order; 0: the whole rollout at once), each
    decoder layer recomputed in the backward with `gradient_checkpointing`. `lora_rank`: train LoRA adapters of
    that rank on the projections named by `lora_targets` (module suffixes such as "q_proj,v_proj", or
    "all-linear"), dropout `lora_dropout` on their input, the base frozen in `policy_dtype`; None: full
    fine-tuning. `early_stops` and `max_binding_bytes` as in `estimate_generation`."""
    _check_sizes(config, prompt_tokens, prompts=prompts, num_generations=num_generations,
                 completion_tokens=completion_tokens, mu=mu, **({"eval_batch": eval_batch} if eval_batch else {}),
                 **({"lora_rank": lora_rank} if lora_rank is not None else {}))
    policy_dtype = float_dtype(policy_dtype, "memory estimate: policy_dtype")
    reference_dtype = float_dtype(reference_dtype or policy_dtype, "memory estimate: reference_dtype")
    rows = prompts * num_generations
    micro_batches = _micro_batches(rows, micro_batch)
    if generation_batch < 0 or generation_batch % num_generations:
        raise InputError(f"memory estimate: generation_batch {generation_batch} must be a multiple of "
                         f"num_generations {num_generations} (groups are sampled whole)")
    chunk = min(prompts, generation_batch // num_generations or prompts)  # prompts sampled at once
    lora = lora_rank is not None
    if not lora and policy_dtype != FLOAT32:
        raise InputError(f"memory estimate: policy_dtype {dtype_name(policy_dtype)}: full fine-tuning trains float32 "
                         f"weights (a frozen base in another dtype needs lora_rank)")
    ledger = _ledger(config, max_binding_bytes)
    policy = ReplayModel(ledger, config, policy_dtype)
    reference = ReplayModel(ledger, config, reference_dtype) if has_reference and not lora else None
    if lora:
        lora_config = LoraConfig(r=lora_rank, lora_dropout=lora_dropout, target_modules=lora_targets)
        policy.adapters = ReplayAdapters(ledger, config, lora_config)
        ledger.parameter_shapes.update(p.shape for p in policy.adapters.parameters())
    with ledger.counted_as("optimizer"):  # AdamW's exp_avg and exp_avg_sq of each trained tensor
        moments = [ledger.empty(p.shape, FLOAT32) for p in policy.trainable_parameters() for _ in range(2)]
    for p in policy.trainable_parameters():
        p.requires_grad_()
    policy.gradient_checkpointing = gradient_checkpointing
    replay_generate(policy, chunk, prompt_tokens, completion_tokens, num_generations, early_stops)
    if eval_batch:
        replay_generate(policy, eval_batch, prompt_tokens, completion_tokens, 1, early_stops)
    completion = min(completion_tokens, config.max_position_embeddings - prompt_tokens)
    replay_update(policy, reference, micro_batches, prompt_tokens + completion - 1, mu=mu, kl=has_reference,
                  grad_clip=grad_clip, completion=completion)
    del policy, reference, moments
    advice = _advice(has_reference=has_reference, reference=reference_dtype, mu=mu, micro=max(micro_batches),
                     checkpointing=gradient_checkpointing, lora=lora, chunk=chunk * num_generations,
                     group=num_generations)
    return _estimate("a GRPO step", ledger, advice)
