"""Rollout and scoring: G completions per problem from the current policy, each scored by the task's rules.

Owns: calling `engine.generate` (one shared prefill per prompt, old-policy log-probs returned alongside the
tokens), and turning texts into reward parts with one `task.rewards` call per rollout (so a task can score the
batch in parallel). Talks to `engine` only through `generate`; never imports wgpu.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

STOP = ("</answer>",)


@dataclass
class Completion:
    problem_index: int
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: np.ndarray
    text: str
    finish_reason: str  # "stop", "eos" or "length"
    parts: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0


@dataclass
class Rollout:
    completions: list[Completion]
    group_size: int
    seconds_generate: float
    seconds_reward: float

    def rewards(self) -> np.ndarray:
        """(problems, G) rewards, group by group."""
        return np.array([c.reward for c in self.completions], np.float64).reshape(-1, self.group_size)

    def part_means(self) -> dict[str, float]:
        names = sorted({name for c in self.completions for name in c.parts})
        return {name: float(np.mean([c.parts.get(name, 0.0) for c in self.completions])) for name in names}

    @property
    def new_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


def sample_and_score(model, tokenizer, task, problems: Sequence, group_size: int, *, max_new_tokens: int,
                     temperature: float, top_k: int, top_p: float, seed: int, weights: dict[str, float],
                     stop: Sequence[str] = STOP) -> Rollout:
    """G samples of every problem; each group shares one prompt prefill. Completions come back group by group."""
    from wgrpo.engine import generate

    started = time.perf_counter()
    result = generate(model, [problem.prompt for problem in problems], max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=list(stop),
                      num_samples=group_size, tokenizer=tokenizer)
    generated = time.perf_counter()
    completions = [Completion(index // group_size, list(sequence.prompt_ids), list(sequence.token_ids),
                              np.asarray(sequence.logprobs, np.float32), sequence.text, sequence.finish_reason)
                   for index, sequence in enumerate(result.sequences)]
    scores = task.rewards([c.text for c in completions], [problems[c.problem_index] for c in completions], weights)
    for completion, (reward, parts) in zip(completions, scores, strict=True):
        completion.reward, completion.parts = reward, parts
    return Rollout(completions, group_size, generated - started, time.perf_counter() - generated)
