"""Rollout and scoring: G completions per problem from the current policy, each scored by the task's rewards.

Owns: calling `engine.generate` (one shared prefill per prompt, old-policy log-probs returned alongside the
tokens), in chunks of whole groups when `generation_batch_size` bounds how many completions are sampled at once
(each chunk keyed by its sequences' global indices, so chunking changes memory, not the completions), and
turning texts into reward parts with one scoring call per chunk (so a task can score a batch in parallel); and
`nan_stat`, a statistic over the values that apply. Scoring runs in the calling thread, as TRL's: after each chunk
generates, a task with `rewards_pending` (a dataset task) starts it, its synchronous reward functions running
here, its async ones on their event loop while the next chunk generates; the results are taken at the end. Other
tasks' `rewards` run here between chunks. Talks to `engine` only through `generate`; never imports wgpu.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

STOP = ("</answer>",)  # the rule tasks' `Task.stop_strings`


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

    def parts(self) -> dict[str, np.ndarray]:
        """Each reward part's values over the completions, by name (sorted); NaN where a part does not apply."""
        names = sorted({name for c in self.completions for name in c.parts})
        return {name: np.array([c.parts.get(name, np.nan) for c in self.completions], np.float64) for name in names}

    def part_means(self) -> dict[str, float]:
        """Each part's mean over the completions it applies to (nanmean; NaN when it applies to none)."""
        return {name: nan_stat(values, np.mean) for name, values in self.parts().items()}

    def part_stds(self, ddof: int = 0) -> dict[str, float]:
        """Each part's std over the completions it applies to (nanstd; NaN when none): the population std, or
        with `ddof=1` Bessel's correction, as TRL's nanstd (NaN for a part that applies to one completion)."""
        return {name: nan_stat(values, functools.partial(np.std, ddof=ddof)) for name, values in self.parts().items()}

    @property
    def new_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


def nan_stat(values: np.ndarray, stat: Callable[[np.ndarray], Any]) -> float:
    """`stat` of the values that are not NaN (a part that applies); NaN, with no warning, when none are (or when
    `stat` has too few, as a std with ddof=1 of one value)."""
    values = np.asarray(values, np.float64)
    applies = values[~np.isnan(values)]
    if not applies.size:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stat(applies))


def sample_groups(model, prompts: Sequence, group_size: int, generation_batch_size: int = 0, **generate_options):
    """`group_size` samples of every prompt (`engine.generate`'s sequences, prompt-major), generated
    `generation_batch_size` completions at a time (a positive multiple of group_size: whole groups; 0: all at once).
    Each chunk's sequences are keyed by their global index (`first_sequence` plus the chunk's offset), so the
    chunks draw the tokens one call would. `generate_options` go to every `generate` call."""
    return [sequence for chunk in generate_chunks(model, prompts, group_size, generation_batch_size,
                                                  **generate_options) for sequence in chunk]


def generate_chunks(model, prompts: Sequence, group_size: int, generation_batch_size: int = 0, *,
                    first_sequence: int = 0, **generate_options) -> Iterator[list]:
    """`sample_groups`, one chunk's sequences at a time, as each chunk finishes generating (the arguments are
    checked before the first chunk starts). `first_sequence` is the global index of prompts[0]'s first sample:
    a shard of a larger batch passes its own, and the whole batch's `prompt_width`, to draw and compute what
    one call over the batch would."""
    _check_chunking(group_size, generation_batch_size)
    return _chunks(model, prompts, group_size, generation_batch_size, int(first_sequence), generate_options)


def longest_prompt(tokenizer, prompts: Sequence) -> int:
    """Tokens of the longest of `prompts` (strings, or token-id lists): the width a batch is left-padded to."""
    return max(len(tokenizer.encode(p).ids) if isinstance(p, str) else len(p) for p in prompts)


def _check_chunking(group_size, generation_batch_size) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
    if isinstance(generation_batch_size, bool) or not isinstance(generation_batch_size, (int, np.integer)) \
            or generation_batch_size < 0 or generation_batch_size % group_size:
        raise ValueError(f"generation_batch_size must be 0 (all at once) or a positive multiple of group_size "
                         f"{group_size} (whole groups), got {generation_batch_size!r}")


def _chunks(model, prompts, group_size, generation_batch_size, first_sequence, generate_options) -> Iterator[list]:
    from wgrpo.engine import generate

    per_call = int(generation_batch_size) // group_size or len(prompts)  # prompts per generate call
    for first in range(0, len(prompts), per_call):
        result = generate(model, list(prompts[first:first + per_call]), num_samples=group_size,
                          first_sequence=first_sequence + first * group_size, **generate_options)
        yield list(result.sequences)


def sample_and_score(model, tokenizer, task, problems: Sequence, group_size: int, *, max_new_tokens: int,
                     temperature: float, top_k: int, top_p: float, seed: int, weights: dict[str, float],
                     stop: Sequence[str] | None = None, generation_batch_size: int = 0) -> Rollout:
    """G samples of every problem; each group shares one prompt prefill. Completions come back group by group.

    stop: strings that end a completion besides the end-of-text token (default: the task's `stop_strings`).
    generation_batch_size: completions sampled per `generate` call, a positive multiple of group_size (whole
    groups), or 0 for all at once. The chunks give the completions of one call, to the bit: the sampler's RNG is
    keyed by each sequence's global index, and every chunk is left-padded to the whole batch's longest prompt.
    Each finished chunk is scored with one call in this thread, before the next generates:
    `task.rewards_pending(texts, problems, weights, completion_ids=)` where the task has it (its `result()`, the
    chunk's (reward, parts), is taken once every chunk has generated, so its async rewards overlap generation;
    one that has failed by then stops the rollout before the next chunk), else `task.rewards(...)`. The scores
    are those of one call over all completions. `seconds_reward` is the time spent scoring in this thread plus
    the wait for rewards after the last chunk; `seconds_generate` the rest."""
    if not problems:
        raise ValueError("sample_and_score: problems is empty")
    stop = task.stop_strings if stop is None else stop
    started = time.perf_counter()
    prompts = [problem.prompt for problem in problems]
    chunks = generate_chunks(model, prompts, group_size, generation_batch_size, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=list(stop),
                             tokenizer=tokenizer, prompt_width=longest_prompt(tokenizer, prompts))
    scoring = 0.0  # seconds spent scoring in this thread, between chunks

    def submit(batch: list[Completion]):
        nonlocal scoring
        began = time.perf_counter()
        pending = submit_scoring(task, batch, problems, weights)
        scoring += time.perf_counter() - began
        return pending

    completions: list[Completion] = []
    waiting: list[tuple[list[Completion], Any]] = []  # (a chunk's completions, its pending scores)
    try:
        for sequences in chunks:
            batch = completions_of(sequences, len(completions), group_size)
            completions.extend(batch)
            waiting.append((batch, submit(batch)))
            take_scores(waiting, finished_only=True)  # a reward that failed stops the rollout before more generation
        generated = time.perf_counter()
        take_scores(waiting)
    except BaseException:
        for _, pending in waiting:
            cancel = getattr(pending, "cancel", None)
            if cancel is not None:
                cancel()
        raise
    return Rollout(completions, group_size, generated - started - scoring, time.perf_counter() - generated + scoring)


def submit_scoring(task, batch: Sequence[Completion], problems: Sequence, weights: dict[str, float]):
    """Start scoring `batch` (each completion's problem is `problems[c.problem_index]`) with one call:
    `task.rewards_pending(...)` where the task has it, else `task.rewards(...)`, whose scores are in at once.
    Returns what `result()` gives the batch's (reward, parts) and `done()` says whether they are in."""
    arguments = ([c.text for c in batch], [problems[c.problem_index] for c in batch], weights)
    completion_ids = [[int(t) for t in c.token_ids] for c in batch]
    pending_rewards = getattr(task, "rewards_pending", None)
    if pending_rewards is None:
        return _Scored(task.rewards(*arguments, completion_ids=completion_ids))
    return pending_rewards(*arguments, completion_ids=completion_ids)


def score_completions(task, completions: Sequence[Completion], problems: Sequence,
                      weights: dict[str, float]) -> None:
    """Give each of `completions` its reward and parts, scored as `sample_and_score` scores a chunk."""
    take_scores([(list(completions), submit_scoring(task, completions, problems, weights))])


class _Scored:
    """A chunk's scores that are in already: `task.rewards`'s."""

    def __init__(self, scores):
        self._scores = scores

    def done(self) -> bool:
        return True

    def result(self):
        return self._scores


def take_scores(waiting: list, finished_only: bool = False) -> None:
    """Give each waiting chunk's completions their (reward, parts), waiting for them (or, `finished_only`,
    taking only those whose scores are in) and leaving in `waiting` the chunks not taken."""
    left = []
    for batch, pending in waiting:
        done = getattr(pending, "done", None)
        if finished_only and not (done is not None and done()):
            left.append((batch, pending))
            continue
        for completion, (reward, parts) in zip(batch, pending.result(), strict=True):
            completion.reward, completion.parts = reward, parts
    waiting[:] = left


def completions_of(sequences, first: int, group_size: int) -> list[Completion]:
    """`Completion`s of a chunk's sequences, whose first is sequence `first` of the rollout."""
    return [Completion((first + offset) // group_size, list(sequence.prompt_ids), list(sequence.token_ids),
                       np.asarray(sequence.logprobs, np.float32), sequence.text, sequence.finish_reason)
            for offset, sequence in enumerate(sequences)]
