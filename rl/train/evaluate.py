"""Held-out evaluation: pass@1 with greedy decoding (`wgrpo eval`, and the trainer's periodic evaluation).

Owns: choosing the held-out problems, decoding them greedily in batches, and the accuracy and format rates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from wgrpo.engine import InputError
from wgrpo.rl.rollout import sample_and_score


@dataclass
class EvalResult:
    accuracy: float  # mean accuracy part: 1/0 per problem, or the pass fraction of a code task
    format: float  # fraction of completions in the <think>...</think> <answer>...</answer> format
    problems: int
    mean_length: float  # completion tokens
    seconds: float
    examples: list[tuple[str, str]]  # a few (prompt tail, completion) pairs to show

    def as_metrics(self, prefix: str = "eval/") -> dict[str, float]:
        return {f"{prefix}accuracy": self.accuracy, f"{prefix}format": self.format,
                f"{prefix}length": self.mean_length}


def check_prompts_fit(task, tokenizer, model_config, max_new_tokens: int) -> int:
    """Refuse, before any work, a task whose prompts cannot fit the model's context with `max_new_tokens`
    generated after them (`Task.check_prompts` names the file and line of the first that does not); else the
    tokens of the longest prompt checked."""
    positions = model_config.max_position_embeddings
    if positions - max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens}: leaves no room for a prompt in the model's "
                         f"max_position_embeddings={positions}")
    return task.check_prompts(tokenizer, positions - max_new_tokens,
                       reason=f"the model's max_position_embeddings={positions} minus --max-new-tokens "
                              f"{max_new_tokens}")


def evaluate(model, tokenizer, task, *, problems: int = 100, max_new_tokens: int = 64, batch_size: int = 64,
             show: int = 3) -> EvalResult:
    """Greedy pass@1 on the first `problems` held-out problems of `task` (all of them if fewer exist)."""
    size = task.size("eval")
    held_out = task.eval_problems(problems if size is None else min(problems, size))
    if not held_out:
        raise InputError(f"task {task.name!r} has no held-out problems (eval_fraction 0, or an empty eval file)")
    started = time.perf_counter()
    completions = []
    for start in range(0, len(held_out), batch_size):
        chunk = held_out[start : start + batch_size]
        rollout = sample_and_score(model, tokenizer, task, chunk, 1, max_new_tokens=max_new_tokens,
                                   temperature=0.0, top_k=0, top_p=1.0, seed=0, weights=task.default_weights)
        completions.extend(rollout.completions)
    examples = [(held_out[i].prompt[-60:], completions[i].text) for i in range(min(show, len(completions)))]
    return EvalResult(
        accuracy=float(np.mean([c.parts["accuracy"] for c in completions])),
        format=float(np.mean([c.parts["format"] for c in completions])),
        problems=len(held_out),
        mean_length=float(np.mean([len(c.token_ids) for c in completions])),
        seconds=time.perf_counter() - started,
        examples=examples,
    )
