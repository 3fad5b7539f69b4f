"""The device-memory estimate of a GRPO run, printed and checked before the first step.

Owns the translation of the trainer's options into `engine.memory_estimate`'s sizes. The estimate is a worst case
(the longest of the prompts the task's length check measured, completions of full length); a run over what the
device can hold is refused in one line naming the sizes (`engine.memory_budget.check_fits`). Imports the engine
only through `wgrpo.engine`.
"""

from __future__ import annotations

import sys

from wgrpo.engine import check_fits, device_memory_budget, estimate_grpo_step


def check_grpo_memory(config, model, reference, prompt_tokens: int):
    """Print the estimate of one step of this run (prompts of up to `prompt_tokens`) on stderr, refuse it when over
    the device's budget, and return it (`MemoryEstimate`)."""
    estimate = estimate_grpo_step(
        model.config, model.dtype, reference.dtype if reference is not None else None,
        has_reference=reference is not None, prompts=config.prompts_per_step, num_generations=config.group_size,
        prompt_tokens=max(1, prompt_tokens), completion_tokens=config.max_new_tokens, mu=config.mu,
        grad_clip=config.grad_clip > 0, eval_batch=min(64, config.eval_problems),
        max_binding_bytes=model.device.max_binding_bytes)
    print(f"wgrpo: {estimate.summary()}", file=sys.stderr)
    advice = "a smaller --prompts-per-step or --group-size, a shorter --max-new-tokens"
    check_fits(estimate, device_memory_budget(model.device, config.device_memory or None),
               advice=advice + (", --mu 1" if config.mu > 1 else "") + (", --dtype bfloat16" if
                                                                        reference is not None else ""))
    return estimate

