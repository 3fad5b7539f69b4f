"""The device-memory estimate of a GRPO run, printed and checked before the first step.

Owns the translation of the trainer's options into `engine.memory_estimate`'s sizes (`grpo_step_options`, of a
TrainConfig and a model's shapes, as `pipeline.policy_and_reference` builds the models; `model_step_options`, of
the live models): the rollout and its generation batches, the update's micro-batches
(`TrainConfig.micro_batches`), activation checkpointing, LoRA (the adapters a model carries, else the --lora-*
options) and the KL reference. The estimate is a worst case (the longest of the prompts the task's length check
measured, completions of full length); a run over what the device can hold is refused in one line naming the
sizes and the options that would make it smaller (`engine.memory_budget.check_fits`), each with the peak it
gives, those that fit first. Imports the engine only through `wgrpo.engine`.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from wgrpo.engine import check_fits, device_memory_budget, estimate_grpo_step
from wgrpo.rl.batch import micro_batch_ranges

EVAL_BATCH = 64  # `evaluate` decodes this many held-out problems at once


def _lora(config, adapters=None) -> dict:
    """The LoRA sizes of `adapters` (a resumed adapter keeps its own), else of --use-peft's --lora-* options."""
    if adapters is not None:
        lora = adapters.config
        return {"lora_rank": lora.r, "lora_targets": adapters.module_names, "lora_dropout": lora.lora_dropout}
    if not config.use_peft:
        return {}
    return {"lora_rank": config.lora_r, "lora_targets": config.lora_target_modules,
            "lora_dropout": config.lora_dropout}


def grpo_step_options(config, model_config, base_dtype, prompt_tokens: int, *, max_binding_bytes: int | None = None,
                      eval_batch: int | None = None, adapters=None) -> dict:
    """The arguments of `estimate_grpo_step` for one step of the run `config` (a TrainConfig) of a model of
    `model_config` whose checkpoint is held in `base_dtype` (--dtype), as `pipeline.policy_and_reference` builds
    it: full fine-tuning trains a float32 policy beside a reference in `base_dtype` (when beta > 0); LoRA keeps
    the base in `base_dtype` with adapters (`adapters`, else the --lora-* options) and its reference is the base.
    Prompts of up to `prompt_tokens`; `eval_batch` prompts evaluated at once (None: as the trainer does)."""
    completions = config.prompts_per_step * config.group_size
    lora = _lora(config, adapters)
    return dict(config=model_config, policy_dtype=base_dtype if lora else "float32",
                reference_dtype=None if lora else base_dtype, has_reference=config.beta > 0,
                prompts=config.prompts_per_step, num_generations=config.group_size,
                prompt_tokens=max(1, prompt_tokens), completion_tokens=config.max_new_tokens, mu=config.mu,
                grad_clip=config.grad_clip > 0,
                eval_batch=min(EVAL_BATCH, config.eval_problems) if eval_batch is None else eval_batch,
                max_binding_bytes=max_binding_bytes,
                micro_batch=[stop - start for start, stop in config.micro_batches(completions)],
                generation_batch=config.generation_chunk_size,
                gradient_checkpointing=config.gradient_checkpointing, **lora)


def grpo_step_estimate(config, model_config, base_dtype, prompt_tokens: int, **sizes):
    """`estimate_grpo_step` of `grpo_step_options` (its keyword arguments in `sizes`): a `MemoryEstimate`."""
    return estimate_grpo_step(**grpo_step_options(config, model_config, base_dtype, prompt_tokens, **sizes))


def model_step_options(config, model, reference, prompt_tokens: int) -> dict:
    """`grpo_step_options` of the live models of a run: `model` is the policy (with LoRA, the base with its adapters
    attached), `reference` the frozen reference model or None (no KL term, or LoRA, whose reference is the base)."""
    base = model.dtype if model.adapters is not None or reference is None else reference.dtype
    return grpo_step_options(config, model.config, base, prompt_tokens,
                             max_binding_bytes=model.device.max_binding_bytes, adapters=model.adapters)


def _smaller_micro_batches(config, options: dict):
    """(option text, estimate arguments) of halving the update's micro-batches, down to one completion."""
    completions = config.prompts_per_step * config.group_size
    size = max(options["micro_batch"])
    while size > 1:
        size = (size + 1) // 2
        if config.gradient_accumulation_steps:
            steps = -(-completions // size)
            sizes = [stop - start for start, stop in micro_batch_ranges(completions, 0, steps)]
            yield f"--gradient-accumulation-steps {steps}", dict(options, micro_batch=sizes)
        else:
            yield f"--per-device-train-batch-size {size}", dict(options, micro_batch=size)


def _smaller_generation_batches(config, options: dict):
    group, prompts = config.group_size, config.prompts_per_step
    chunk = (config.generation_chunk_size // group) or prompts
    while chunk > 1:
        chunk //= 2
        yield f"--generation-chunk-size {chunk * group}", dict(options, generation_batch=chunk * group)


def _alternatives(config, options: dict, reference):
    """Each option that lowers the step's memory, with the estimate arguments it gives: the first that fits of
    each family, else its smallest."""
    families = [_smaller_micro_batches(config, options), _smaller_generation_batches(config, options)]
    if not config.gradient_checkpointing:
        families.append(iter([("--gradient-checkpointing", dict(options, gradient_checkpointing=True))]))
    if "lora_rank" not in options:
        base = reference.dtype if reference is not None else options["policy_dtype"]  # the loaded checkpoint's
        lora = dict(options, **_lora(replace(config, use_peft=True)), policy_dtype=base, reference_dtype=None)
        families.append(iter([("--use-peft", lora)]))
        if reference is not None and reference.dtype.itemsize > 2:
            families.append(iter([("--dtype bfloat16", dict(options, reference_dtype="bfloat16"))]))
    if config.mu > 1:
        families.append(iter([("--mu 1", dict(options, mu=1))]))
    return families


def _advice(config, options: dict, reference, estimate, budget) -> str:
    """The options that make the step smaller, each with its estimated peak, those that fit first."""
    fits = lambda e: e.split_activation is None and (budget is None or e.total <= budget.nbytes)  # noqa: E731
    found = []
    for family in _alternatives(config, options, reference):
        best = None
        for text, arguments in family:
            smaller = estimate_grpo_step(**arguments)
            if smaller.total < estimate.total or (estimate.split_activation and smaller.split_activation is None):
                best = (text, smaller)
                if fits(smaller):
                    break
        if best is not None:
            found.append(best)
    found.sort(key=lambda pair: (not fits(pair[1]), pair[1].total))
    named = [f"{text} ({smaller.total_text()}{'' if fits(smaller) else ', still over'})"
             for text, smaller in found]
    return ", ".join(named + ["a smaller --prompts-per-step or --group-size, a shorter --max-new-tokens"])


def check_grpo_memory(config, model, reference, prompt_tokens: int):
    """Print the estimate of one step of this run (prompts of up to `prompt_tokens`) on stderr, refuse it when over
    the device's budget, and return it (`MemoryEstimate`)."""
    options = model_step_options(config, model, reference, prompt_tokens)
    estimate = estimate_grpo_step(**options)
    print(f"wgrpo: {estimate.summary()}", file=sys.stderr)
    budget = device_memory_budget(model.device, config.device_memory or None)
    if estimate.split_activation is not None or (budget is not None and estimate.total > budget.nbytes):
        check_fits(estimate, budget, advice=_advice(config, options, reference, estimate, budget))
    return estimate
