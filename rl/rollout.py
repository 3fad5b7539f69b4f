"""Rollout and scoring: G completions per problem from the current policy, each scored by the task's rewards.

Owns: calling `engine.generate` (one shared prefill per prompt, old-policy log-probs returned alongside the
tokens), in chunks of whole groups when `generation_batch_size` bounds how many completions are sampled at once
(each chunk keyed by its sequences' global indices, so chunking changes memory, not the completions), and
turning texts into reward parts with one `task.rewards` call per chunk (so a task can score a batch in
parallel). A chunk is scored in a background thread while the next one generates, one chunk at a time and in
order, so slow rewards (a sandbox, a judge) overlap generation. Talks to `engine` only through `generate`;
never imports wgpu.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

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
        return {name: _nan_stat(np.nanmean, values) for name, values in self.parts().items()}

    def part_stds(self) -> dict[str, float]:
        """Each part's population std over the completions it applies to (nanstd; NaN when none)."""
        return {name: _nan_stat(np.nanstd, values) for name, values in self.parts().items()}

    @property
    def new_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


def _nan_stat(stat, values: np.ndarray) -> float:
    if np.isnan(values).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stat(values))


def sample_groups(model, prompts: Sequence, group_size: int, generation_batch_size: int = 0, **generate_options):
    """`group_size` samples of every prompt (`engine.generate`'s sequences, prompt-major), generated
    `generation_batch_size` completions at a time (a positive multiple of group_size: whole groups; 0: all at once).
    Each chunk's sequences are keyed by their global index (`first_sequence`), so the chunks draw the tokens one
    call would. `generate_options` go to every `generate` call."""
    return [sequence for chunk in generate_chunks(model, prompts, group_size, generation_batch_size,
                                                  **generate_options) for sequence in chunk]


def generate_chunks(model, prompts: Sequence, group_size: int, generation_batch_size: int = 0,
                    **generate_options) -> Iterator[list]:
    """`sample_groups`, one chunk's sequences at a time, as each chunk finishes generating (the arguments are
    checked before the first chunk starts)."""
    _check_chunking(group_size, generation_batch_size)
    return _chunks(model, prompts, group_size, generation_batch_size, generate_options)


def _check_chunking(group_size, generation_batch_size) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
    if isinstance(generation_batch_size, bool) or not isinstance(generation_batch_size, (int, np.integer)) \
            or generation_batch_size < 0 or generation_batch_size % group_size:
        raise ValueError(f"generation_batch_size must be 0 (all at once) or a positive multiple of group_size "
                         f"{group_size} (whole groups), got {generation_batch_size!r}")


def _chunks(model, prompts, group_size, generation_batch_size, generate_options) -> Iterator[list]:
    from wgrpo.engine import generate

    per_call = int(generation_batch_size) // group_size or len(prompts)  # prompts per generate call
    for first in range(0, len(prompts), per_call):
        result = generate(model, list(prompts[first:first + per_call]), num_samples=group_size,
                          first_sequence=first * group_size, **generate_options)
        yield list(result.sequences)


def sample_and_score(model, tokenizer, task, problems: Sequence, group_size: int, *, max_new_tokens: int,
                     temperature: float, top_k: int, top_p: float, seed: int, weights: dict[str, float],
                     stop: Sequence[str] | None = None, generation_batch_size: int = 0) -> Rollout:
    """G samples of every problem; each group shares one prompt prefill. Completions come back group by group.

    stop: strings that end a completion besides the end-of-text token (default: the task's `stop_strings`).
    generation_batch_size: completions sampled per `generate` call, a positive multiple of group_size (whole
    groups), or 0 for all at once. The chunks draw the tokens one call would (the sampler's RNG is keyed by each
    sequence's global index); only float rounding of a chunk's different left padding can tell them apart. Each
    finished chunk is scored (`task.rewards(texts, problems, weights, completion_ids=)`) in a background thread
    while the next generates; `seconds_reward` is the time spent waiting for rewards after the last chunk. One
    chunk (the default) is scored in the calling thread."""
    if not problems:
        raise ValueError("sample_and_score: problems is empty")
    stop = task.stop_strings if stop is None else stop
    started = time.perf_counter()
    chunks = generate_chunks(model, [problem.prompt for problem in problems], group_size, generation_batch_size,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             seed=seed, stop=list(stop), tokenizer=tokenizer)

    def score(batch: list[Completion]) -> None:
        scores = task.rewards([c.text for c in batch], [problems[c.problem_index] for c in batch], weights,
                              completion_ids=[[int(t) for t in c.token_ids] for c in batch])
        for completion, (reward, parts) in zip(batch, scores, strict=True):
            completion.reward, completion.parts = reward, parts

    per_call = int(generation_batch_size) // group_size or len(problems)
    if per_call >= len(problems):  # one chunk: nothing to overlap its scoring with
        completions = _completions(next(chunks), 0, group_size)
        generated = time.perf_counter()
        score(completions)
        return Rollout(completions, group_size, generated - started, time.perf_counter() - generated)
    completions, pending = [], []
    # one scoring thread: chunks are scored one at a time, in order, so task.rewards never runs twice at once
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-rewards") as scorer:
        try:
            for sequences in chunks:
                for future in pending:
                    if future.done():
                        future.result()  # a reward that failed stops the rollout before more generation
                batch = _completions(sequences, len(completions), group_size)
                completions.extend(batch)
                pending.append(scorer.submit(score, batch))
            generated = time.perf_counter()
            for future in pending:
                future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return Rollout(completions, group_size, generated - started, time.perf_counter() - generated)


def _completions(sequences, first: int, group_size: int) -> list[Completion]:
    """`Completion`s of a chunk's sequences, whose first is sequence `first` of the rollout."""
    return [Completion((first + offset) // group_size, list(sequence.prompt_ids), list(sequence.token_ids),
                       np.asarray(sequence.logprobs, np.float32), sequence.text, sequence.finish_reason)
            for offset, sequence in enumerate(sequences)]
