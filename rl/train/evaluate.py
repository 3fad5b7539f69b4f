"""Held-out evaluation: pass@1 with greedy decoding (`wgrpo eval`, and the trainer's periodic evaluation).

Owns: choosing the held-out problems, decoding them greedily in batches (stopping where the task's generation
stops), and what the completions scored: the mean combined reward, each reward part's mean, and pass@1 (the
share of problems whose completion gets full marks on the task's correctness reward, `task.primary_reward`).
Works for every task, the rule tasks and a dataset scored by reward functions alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from wgrpo.engine import InputError
from wgrpo.rl.rollout import Rollout, sample_and_score


@dataclass
class EvalResult:
    accuracy: float  # mean accuracy part (1/0 per problem, or a code task's pass fraction); NaN without one
    format: float  # mean format part (the <think>...</think> <answer>...</answer> rate); NaN without one
    problems: int
    mean_length: float  # completion tokens
    seconds: float
    examples: list[tuple[str, str]]  # a few (prompt tail, completion) pairs to show
    reward: float = float("nan")  # mean combined reward, with the evaluation's weights
    rewards: dict[str, float] = field(default_factory=dict)  # each reward part's mean (nanmean), by name
    pass_at_1: float = float("nan")  # share of problems scoring >= 1 on the task's primary reward

    def as_metrics(self, prefix: str = "eval_") -> dict[str, float]:
        """TRL's names: `eval_reward`, `eval_pass@1`, `eval_completions/mean_length`, `eval_rewards/<name>/mean`."""
        return {f"{prefix}reward": self.reward, f"{prefix}pass@1": self.pass_at_1,
                f"{prefix}completions/mean_length": self.mean_length,
                **{f"{prefix}rewards/{name}/mean": value for name, value in self.rewards.items()}}


def check_prompts_fit(task, tokenizer, model_config, max_new_tokens: int, *, max_prompt_length: int = 0) -> int:
    """Refuse, before any work, a task whose prompts cannot fit the model's context with `max_new_tokens`
    generated after them, or are longer than `max_prompt_length` tokens when it is set (> 0) and tighter
    (`Task.check_prompts` names the file and line of the first that does not); else the tokens of the longest
    prompt checked."""
    positions = model_config.max_position_embeddings
    if positions - max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens}: leaves no room for a prompt in the model's "
                         f"max_position_embeddings={positions}")
    if 0 < max_prompt_length < positions - max_new_tokens:
        return task.check_prompts(tokenizer, max_prompt_length, reason=f"--max-prompt-length {max_prompt_length}")
    return task.check_prompts(tokenizer, positions - max_new_tokens,
                              reason=f"the model's max_position_embeddings={positions} minus --max-new-tokens "
                                     f"{max_new_tokens}")


def evaluate(model, tokenizer, task, *, problems: int = 100, max_new_tokens: int = 64, batch_size: int = 64,
             show: int = 3, weights: Mapping[str, float] | None = None,
             sample: Callable[[list, Mapping[str, float]], Rollout] | None = None) -> EvalResult:
    """Greedy pass@1 on the first `problems` held-out problems of `task` (all of them if fewer exist); the
    combined reward with `weights` by part name (default `task.default_weights`). `sample(problems, weights)`
    decodes and scores a batch greedily where the model lives elsewhere (then `model` is None)."""
    size = task.size("eval")
    held_out = task.eval_problems(problems if size is None else min(problems, size))
    if not held_out:
        raise InputError(f"task {task.name!r} has no held-out problems (eval_fraction 0, or an empty eval file)")
    weights = task.default_weights if weights is None else weights
    started = time.perf_counter()
    completions = []
    for start in range(0, len(held_out), batch_size):
        chunk = held_out[start : start + batch_size]
        if sample is not None:
            rollout = sample(chunk, weights)
        else:
            rollout = sample_and_score(model, tokenizer, task, chunk, 1, max_new_tokens=max_new_tokens,
                                       temperature=0.0, top_k=0, top_p=1.0, seed=0, weights=weights)
        completions.extend(rollout.completions)
    examples = [(held_out[i].prompt[-60:], completions[i].text) for i in range(min(show, len(completions)))]
    means = Rollout(completions, 1, 0.0, 0.0).part_means()  # nanmeans
    means = {name: means.pop(name, float("nan")) for name in task.reward_names} | means  # the task's order first
    primary = np.array([c.parts.get(task.primary_reward, np.nan) for c in completions], np.float64)
    return EvalResult(
        accuracy=means.get("accuracy", float("nan")),
        format=means.get("format", float("nan")),
        problems=len(held_out),
        mean_length=float(np.mean([len(c.token_ids) for c in completions])),
        seconds=time.perf_counter() - started,
        examples=examples,
        reward=float(np.mean([c.reward for c in completions])),
        rewards=means,
        pass_at_1=float(np.mean(np.nan_to_num(primary, nan=0.0) >= 1.0)),
    )

