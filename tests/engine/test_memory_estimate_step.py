"""A GRPO step's device-memory estimate against the runtime's own counters, every kind to the byte: whole-batch,
micro-batched, checkpointed, chunked-generation and LoRA steps, with and without a binding limit that holds
tensors in row blocks; and what each memory option saves, on the estimates of a real model's shapes."""

from __future__ import annotations

import pytest

from tests.engine.memory_counters import assert_matches, grpo_step, in_use, measured_peaks, prompts, random_model
from wgrpo.engine import AdamW, ModelConfig
from wgrpo.engine.memory import KINDS
from wgrpo.engine.memory_estimate import estimate_grpo_step, peak_metrics, tensor_bytes

SMALL = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192,
                    max_position_embeddings=128)
# under a 256 KiB binding limit its embedding and head are held in two row blocks, and the LM head runs in two
TIED = ModelConfig(vocab_size=1024, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256,
                   max_position_embeddings=128, tie_word_embeddings=True)
QWEN3 = ModelConfig(architecture="qwen3", vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1,
                    intermediate_size=96, max_position_embeddings=64)
QWEN2 = ModelConfig(vocab_size=300, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=96,
                    max_position_embeddings=64, attention_bias=True)
PROMPTS, GROUP, PROMPT_TOKENS, NEW_TOKENS = 2, 3, 9, 12
ROWS = PROMPTS * GROUP


def ranges(sizes) -> list[tuple[int, int]]:
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


STEPS = {  # name: (config, options of the step)
    "whole batch": (SMALL, dict(reference="float32")),
    "tied, bf16 reference, mu 2, row blocks": (TIED, dict(reference="bfloat16", mu=2, limit=256 << 10)),
    "no reference, no clip, evaluation": (QWEN3, dict(beta=0.0, clip=False, eval_batch=12)),  # its cache is largest
    "micro-batches of 2": (SMALL, dict(reference="float32", micro=[2, 2, 2], mu=2)),
    "near-equal micro-batches, biases": (QWEN2, dict(reference="float32", micro=[2, 1, 1, 2])),
    "checkpointed": (SMALL, dict(reference="float32", checkpointing=True)),
    "checkpointed micro-batches, mu 2": (QWEN3, dict(reference="float32", checkpointing=True, micro=[4, 2], mu=2)),
    "checkpointed, row blocks": (TIED, dict(beta=0.0, checkpointing=True, micro=[3, 3], limit=256 << 10)),
    "generation one group at a time": (SMALL, dict(reference="float32", generation_batch=GROUP)),
    # LoRA: the base frozen in its dtype, the reference log-probs from it with the adapters off
    "LoRA on a bf16 base": (SMALL, dict(dtype="bfloat16", lora=dict(r=4, target_modules="all-linear",
                                                                    lora_dropout=0.0))),
    "LoRA on some projections, checkpointed micro-batches, row blocks": (TIED, dict(
        dtype="bfloat16", lora=dict(r=2, target_modules="q_proj,v_proj,down_proj", lora_dropout=0.0),
        checkpointing=True, micro=[3, 3], mu=2, limit=256 << 10)),
    "LoRA with dropout, checkpointed micro-batches": (QWEN3, dict(
        dtype="bfloat16", lora=dict(r=4, target_modules="all-linear", lora_dropout=0.1), checkpointing=True,
        micro=[2, 2, 2])),
    "LoRA with dropout, whole batch, mu 2": (SMALL, dict(
        dtype="bfloat16", lora=dict(r=4, target_modules="q_proj,k_proj,up_proj", lora_dropout=0.05), mu=2)),
    "LoRA on an f16 base with biases, no KL, one group at a time": (QWEN2, dict(
        dtype="float16", beta=0.0, lora=dict(r=3, target_modules="all-linear", lora_dropout=0.0),
        generation_batch=GROUP)),
}


def run_step(device, monkeypatch, config, *, reference=None, beta=0.04, mu=1, clip=True, eval_batch=0, micro=None,
             generation_batch=0, checkpointing=False, limit=None, lora=None, dtype=None):
    """Two steps as the trainer runs them (AdamW's moments exist after the first): the second's measured peaks,
    and the estimate of one."""
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
    memory = device.runtime.memory
    base = in_use(memory)
    model = random_model(config, 0, device, dtype)
    frozen = random_model(config, 1, device, reference) if reference is not None and beta > 0 else None
    if lora is not None:
        from wgrpo.engine import LoraConfig, attach_lora

        attach_lora(model, LoraConfig(**lora), seed=0)
    for p in model.trainable_parameters():
        p.requires_grad_()
    model.gradient_checkpointing = checkpointing
    optimizer = AdamW(model.trainable_parameters(), lr=1e-3)
    sizes = micro or [ROWS]
    step = dict(group=GROUP, new_tokens=NEW_TOKENS, ranges=ranges(sizes), mu=mu, clip=clip, eval_batch=eval_batch,
                generation_batch=generation_batch, beta=beta)
    prompt_ids = prompts(config, PROMPTS, PROMPT_TOKENS)
    grpo_step(model, frozen, optimizer, prompt_ids, **step)
    memory.reset_peak()
    grpo_step(model, frozen, optimizer, prompt_ids, **step)
    measured = measured_peaks(memory, base)
    lora_options = {} if lora is None else dict(lora_rank=lora["r"], lora_targets=lora["target_modules"],
                                                 lora_dropout=lora["lora_dropout"])
    estimate = estimate_grpo_step(config, dtype or "float32", reference, beta > 0, prompts=PROMPTS,
                                  num_generations=GROUP, prompt_tokens=PROMPT_TOKENS, completion_tokens=NEW_TOKENS,
                                  mu=mu, grad_clip=clip, eval_batch=eval_batch, early_stops=False,
                                  max_binding_bytes=device.max_binding_bytes, micro_batch=sizes,
                                  generation_batch=generation_batch, gradient_checkpointing=checkpointing,
                                  **lora_options)
    return estimate, measured, memory


@pytest.mark.parametrize("name", list(STEPS))
def test_grpo_step_estimate_matches_the_counters(device, monkeypatch, name):
    config, options = STEPS[name]
    estimate, measured, memory = run_step(device, monkeypatch, config, **options)
    assert_matches(estimate, measured)
    assert peak_metrics(memory)["memory/peak/total"] == memory.peak_total
    assert set(estimate.as_metrics()) == {"memory/estimate/total", *(f"memory/estimate/{k}" for k in KINDS)}


def test_the_estimate_can_tell_the_options_apart(device, monkeypatch):
    """The counters of one setting are not the estimate of another (the exact match above could not pass by
    estimating every setting alike)."""
    estimate, measured, _ = run_step(device, monkeypatch, SMALL, reference="float32", micro=[2, 2, 2])
    whole = estimate_grpo_step(SMALL, "float32", "float32", prompts=PROMPTS, num_generations=GROUP,
                               prompt_tokens=PROMPT_TOKENS, completion_tokens=NEW_TOKENS, early_stops=False,
                               max_binding_bytes=device.max_binding_bytes)
    assert whole.peak["activations"] > measured["activations"] == estimate.peak["activations"]


# ---------------------------------------------------------------------------------------------- what options save

QWEN = ModelConfig(vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                   intermediate_size=4864, max_position_embeddings=32768, tie_word_embeddings=True)  # Qwen2.5-0.5B
SIZES = dict(prompts=8, num_generations=8, prompt_tokens=200, completion_tokens=512, max_binding_bytes=128 << 20)
# a checkpointed layer's two inputs (the hidden state and the residual of a micro-batch of 4 rows): their gradients
# count as gradients while the layer's recomputation accumulates them, then flow on as activations
LAYER_INPUT_GRADS = 2 * tensor_bytes((4, 200 + 512 - 1, 896), "float32", 128 << 20)


def test_a_bfloat16_reference_and_one_update_are_smaller():
    f32 = estimate_grpo_step(QWEN, "float32", "float32", **SIZES)
    bf16 = estimate_grpo_step(QWEN, "float32", "bfloat16", **SIZES)
    twice = estimate_grpo_step(QWEN, "float32", "bfloat16", mu=2, **SIZES)
    params = QWEN.num_parameters()
    # each buffer is rounded up to its size class, by less than an eighth
    assert 8 * params <= f32.peak["optimizer"] < 9 * params  # two float32 moments
    assert 2 * f32.peak["gradients"] == f32.peak["optimizer"]  # float32 gradients, once: clipped in place
    assert 2 * params <= f32.peak["weights"] - bf16.peak["weights"] < 2.25 * params
    assert bf16.total <= twice.total < f32.total
    assert "bfloat16 reference" in f32.advice and "bfloat16 reference" not in bf16.advice and "mu 1" in twice.advice


def test_micro_batches_and_checkpointing_lower_the_activations():
    whole = estimate_grpo_step(QWEN, "float32", "bfloat16", **SIZES)
    assert whole.split_activation is not None  # the whole rollout's MLP activation is over one binding
    micro = {n: estimate_grpo_step(QWEN, "float32", "bfloat16", micro_batch=n, **SIZES) for n in (16, 4, 1)}
    checkpointed = estimate_grpo_step(QWEN, "float32", "bfloat16", micro_batch=4, gradient_checkpointing=True,
                                      **SIZES)
    assert whole.peak["activations"] > micro[16].peak["activations"] > micro[4].peak["activations"] \
        > micro[1].peak["activations"]
    assert micro[4].split_activation is None
    # a quarter of the rows: about a quarter of the update's activations (the generation's do not change)
    assert micro[4].peak["activations"] < 0.3 * micro[16].peak["activations"]
    assert checkpointed.peak["activations"] < 0.25 * micro[4].peak["activations"]
    for estimate in (*micro.values(), checkpointed):  # nothing else changes
        for kind in ("weights", "gradients", "optimizer", "kv_cache"):
            extra = LAYER_INPUT_GRADS if estimate is checkpointed and kind == "gradients" else 0
            assert estimate.peak[kind] == whole.peak[kind] + extra, kind
    assert "smaller micro-batches" in micro[4].advice and "gradient checkpointing" in micro[4].advice
    assert "gradient checkpointing" not in checkpointed.advice


def test_generation_in_groups_lowers_the_kv_cache():
    whole = estimate_grpo_step(QWEN, "float32", "bfloat16", micro_batch=4, **SIZES)
    chunked = estimate_grpo_step(QWEN, "float32", "bfloat16", micro_batch=4, generation_batch=16, **SIZES)
    assert 3.5 * chunked.peak["kv_cache"] < whole.peak["kv_cache"] <= 4 * chunked.peak["kv_cache"]
    assert "fewer completions sampled at once" in whole.advice
    assert "fewer completions sampled at once" in chunked.advice
    one_group = estimate_grpo_step(QWEN, "float32", "bfloat16", micro_batch=4, generation_batch=8, **SIZES)
    assert "fewer completions sampled at once" not in one_group.advice


def test_lora_trains_and_holds_only_the_adapters():
    full = estimate_grpo_step(QWEN, "float32", "bfloat16", micro_batch=4, gradient_checkpointing=True, **SIZES)
    lora = estimate_grpo_step(QWEN, "bfloat16", None, micro_batch=4, gradient_checkpointing=True, lora_rank=16,
                              lora_dropout=0.05, **SIZES)
    c, f, q, kv, layers = 896, 4864, 896, 128, 24
    adapters = 16 * layers * ((c + q) + 2 * (c + kv) + (q + c) + 2 * (c + f) + (f + c))  # r (in + out) each
    assert 8 * adapters <= lora.peak["optimizer"] < 9 * adapters  # two float32 moments of the adapters alone
    assert 4 * adapters <= lora.peak["gradients"] - LAYER_INPUT_GRADS < 4.5 * adapters  # once: summed, clipped in place
    assert lora.peak["gradients"] < 0.03 * full.peak["gradients"]
    # one bf16 copy of the base (the reference is the base with its adapters off) and the float32 adapters
    params = QWEN.num_parameters()
    assert 2 * params + 4 * adapters <= lora.peak["weights"] < 2.25 * params + 4.5 * adapters
    assert lora.peak["weights"] < 0.4 * full.peak["weights"] and lora.total < 0.4 * full.total
    assert "LoRA" in full.advice and "LoRA" not in lora.advice
    only_qv = estimate_grpo_step(QWEN, "bfloat16", None, micro_batch=4, gradient_checkpointing=True, lora_rank=16,
                                 lora_targets="q_proj,v_proj", **SIZES)
    assert only_qv.peak["optimizer"] < lora.peak["optimizer"] / 5
    assert only_qv.peak["activations"] < lora.peak["activations"]
