"""The trainer's options translated into the memory estimate: the estimate of a run's step against the counters
of that step run by `grpo_update` itself (every kind to the byte), and the refusal naming the options that fit."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from wgrpo.engine import AdamW, InputError, Model, ModelConfig, estimate_grpo_step, generate
from wgrpo.engine.memory import KINDS, memory_kind
from wgrpo.rl.rollout import Completion, Rollout
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.memory_check import check_grpo_memory, grpo_step_estimate, model_step_options

MODEL = ModelConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
                    max_position_embeddings=64)
PROMPTS, GROUP, PROMPT_TOKENS, NEW_TOKENS, EVAL = 2, 3, 7, 10, 4


def _models(device, config: TrainConfig):
    """The policy and reference as `pipeline.policy_and_reference` makes them (a bf16 reference), set up as
    `GRPOLoop` sets them up."""
    with memory_kind("weights"):
        if config.use_peft:
            from wgrpo.engine import attach_lora

            model = Model.random(MODEL, seed=0, device=device, dtype="bfloat16")
            attach_lora(model, config.lora_config(), seed=0)
        else:
            model = Model.random(MODEL, seed=0, device=device)
        reference = Model.random(MODEL, seed=1, device=device, dtype="bfloat16") \
            if config.beta > 0 and not config.use_peft else None
    for p in model.trainable_parameters():
        p.requires_grad_()
    model.gradient_checkpointing = config.gradient_checkpointing
    return model, reference


def _step(model, reference, optimizer, config: TrainConfig, seed: int) -> None:
    """A step as the trainer runs it: generation in batches of whole groups, the evaluation's greedy batch, then
    `grpo_update` on the rollout (every completion of full length: the estimate's worst case)."""
    from wgrpo.rl.train.update import grpo_update

    rng = np.random.default_rng(seed)
    prompt_ids = rng.integers(0, MODEL.vocab_size, (PROMPTS, PROMPT_TOKENS)).tolist()
    chunk = config.generation_chunk_size // GROUP or PROMPTS
    completions = []
    for start in range(0, PROMPTS, chunk):
        result = generate(model, prompt_ids[start:start + chunk], max_new_tokens=NEW_TOKENS, num_samples=GROUP,
                          eos_token_ids=(), seed=seed)
        completions += [Completion(start + s.prompt_index, s.prompt_ids, s.token_ids.tolist(), s.logprobs, "",
                                   s.finish_reason, reward=float(rng.integers(0, 2))) for s in result.sequences]
    generate(model, rng.integers(0, MODEL.vocab_size, (EVAL, PROMPT_TOKENS)).tolist(), max_new_tokens=NEW_TOKENS,
             temperature=0.0, eos_token_ids=())
    grpo_update(model, reference, optimizer, Rollout(completions, GROUP, 0.0, 0.0), config, pad_id=0, seed=seed)


OPTIONS = {
    "whole batch": {},
    "micro-batches of 2, checkpointing": dict(per_device_train_batch_size=2, gradient_checkpointing=True),
    "4 near-equal micro-batches, mu 2": dict(gradient_accumulation_steps=4, mu=2),
    "one group sampled at a time, no KL": dict(generation_chunk_size=GROUP, beta=0.0, grad_clip=0.0),
    "LoRA, checkpointed micro-batches": dict(use_peft=True, lora_r=4, lora_target_modules="q_proj,v_proj,down_proj",
                                             per_device_train_batch_size=3, gradient_checkpointing=True),
    "LoRA on all linear layers, no dropout": dict(use_peft=True, lora_r=2, lora_dropout=0.0),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_a_runs_estimate_is_what_its_step_uses(device, name):
    config = TrainConfig(prompts_per_step=PROMPTS, group_size=GROUP, max_new_tokens=NEW_TOKENS, eval_problems=EVAL,
                         **OPTIONS[name])
    memory = device.runtime.memory
    gc.collect()
    base = dict(memory.current)
    model, reference = _models(device, config)
    optimizer = AdamW(model.trainable_parameters(), lr=1e-3)
    _step(model, reference, optimizer, config, seed=0)  # AdamW's moments exist from now on
    memory.reset_peak()
    _step(model, reference, optimizer, config, seed=1)
    measured = {kind: memory.peak[kind] - base[kind] for kind in KINDS}
    measured["total"] = memory.peak_total - sum(base.values())
    estimate = estimate_grpo_step(**model_step_options(config, model, reference, PROMPT_TOKENS), early_stops=False)
    assert {**estimate.peak, "total": estimate.total} == measured


WIDE = ModelConfig(vocab_size=2000, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=2,
                   intermediate_size=1024, max_position_embeddings=1024)


def test_a_run_over_the_budget_is_refused_naming_the_options_that_fit(device, monkeypatch, capsys):
    monkeypatch.setattr(device, "_binding_bytes", 128 << 20)  # every activation of these runs fits one binding
    with memory_kind("weights"):
        model = Model.random(WIDE, seed=0, device=device)
    sizes = dict(prompts_per_step=8, group_size=8, max_new_tokens=400, eval_problems=8, beta=0.0)
    whole = check_grpo_memory(TrainConfig(**sizes), model, None, 100)  # no budget on the way: it fits
    assert "wgrpo: estimated device memory for a GRPO step: " in capsys.readouterr().err
    eight, sixteen = (grpo_step_estimate(TrainConfig(**sizes, per_device_train_batch_size=n), WIDE,
                                         "float32", 100, max_binding_bytes=device.max_binding_bytes) for n in (8, 16))
    assert eight.total < sixteen.total < whole.total
    budget = (eight.total + sixteen.total) // 2
    with pytest.raises(InputError) as error:
        check_grpo_memory(TrainConfig(**sizes, device_memory=str(budget)), model, None, 100)
    message = str(error.value)
    assert "\n" not in message and message.startswith("estimated device memory for a GRPO step: ")
    for option in ("--per-device-train-batch-size", "--gradient-checkpointing", "a smaller --prompts-per-step"):
        assert option in message, option
    fitting = message.split("; use ")[1].split(", ")[0]  # the options that fit come first, with their peak
    assert fitting.startswith("--") and "still over" not in fitting
    check_grpo_memory(TrainConfig(**sizes, device_memory=str(budget), per_device_train_batch_size=8), model, None,
                      100)
    with pytest.raises(InputError, match="use --gradient-accumulation-steps 8 "):  # the option the run uses
        check_grpo_memory(TrainConfig(**sizes, device_memory=str(budget), gradient_accumulation_steps=2), model,
                          None, 100)
