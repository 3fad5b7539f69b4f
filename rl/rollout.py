"""Rollout and scoring: G completions per problem from the current policy, each scored by the task's rules.

Owns: calling `engine.generate` (one shared prefill per prompt, old-policy log-probs returned alongside the
tokens), in chunks of whole groups when `generation_batch_size` bounds how many completions are sampled at once
(each chunk keyed by its sequences' global indices, so chunking changes memory, not the completions), and
turning texts into reward parts with one `task.rewards` call per rollout (so a task can score the batch in
parallel). Talks to `engine` only through `generate`; never imports wgpu.
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


def sample_groups(model, prompts: Sequence, group_size: int, generation_batch_size: int = 0, **generate_options):
    """`group_size` samples of every prompt (`engine.generate`'s sequences, prompt-major), generated
    `generation_batch_size` completions at a time (a positive multiple of group_size: whole groups; 0: all at once).
    Each chunk's sequences are keyed by their global index (`first_sequence`), so the chunks draw the tokens one
    call would. `generate_options` go to every `generate` call."""
    from wgrpo.engine import generate

    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
    if isinstance(generation_batch_size, bool) or not isinstance(generation_batch_size, (int, np.integer)) \
            or generation_batch_size < 0 or generation_batch_size % group_size:
        raise ValueError(f"generation_batch_size must be 0 (all at once) or a positive multiple of group_size "
                         f"{group_size} (whole groups), got {generation_batch_size!r}")
    per_call = int(generation_batch_size) // group_size or len(prompts)  # prompts per generate call
    sequences = []
    for first in range(0, len(prompts), per_call):
        result = generate(model, list(prompts[first:first + per_call]), num_samples=group_size,
                          first_sequence=first * group_size, **generate_options)
        sequences.extend(result.sequences)
    return sequences


def sample_and_score(model, tokenizer, task, problems: Sequence, group_size: int, *, max_new_tokens: int,
                     temperature: float, top_k: int, top_p: float, seed: int, weights: dict[str, float],
                     stop: Sequence[str] = STOP, generation_batch_size: int = 0) -> Rollout:
    """G samples of every problem; each group shares one prompt prefill. Completions come back group by group.

    generation_batch_size: completions sampled per `generate` call, a positive multiple of group_size (whole
    groups), or 0 for all at once. The chunks draw the tokens one call would (the sampler's RNG is keyed by each
    sequence's global index); only float rounding of a chunk's different left padding can tell them apart."""
    if not problems:
        raise ValueError("sample_and_score: problems is empty")
    started = time.perf_counter()
    sequences = sample_groups(model, [problem.prompt for problem in problems], group_size, generation_batch_size,
                              max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed, stop=list(stop), tokenizer=tokenizer)
    generated = time.perf_counter()
    completions = [Completion(index // group_size, list(sequence.prompt_ids), list(sequence.token_ids),
                              np.asarray(sequence.logprobs, np.float32), sequence.text, sequence.finish_reason)
                   for index, sequence in enumerate(sequences)]
    scores = task.rewards([c.text for c in completions], [problems[c.problem_index] for c in completions], weights)
    for completion, (reward, parts) in zip(completions, scores, strict=True):
        completion.reward, completion.parts = reward, parts
    return Rollout(completions, group_size, generated - started, time.perf_counter() - generated)
