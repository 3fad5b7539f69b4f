"""Turning sampled completions into the padded arrays a policy update needs.

Each row is prompt + completion; the update scores every completion token (its end-of-text too, when the
sequence ended with one) and nothing else: `scored` lists those positions, the only ones whose log-probs the
update computes. Pure numpy; no engine import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class UpdateBatch:
    inputs: np.ndarray  # (N, T) int32: tokens fed to the model
    targets: np.ndarray  # (N, T) int32: the next token at each position
    mask: np.ndarray  # (N, T) float32: 1 where the target is a completion token that is trained on
    old_logp: np.ndarray  # (N, T) float32: the rollout policy's log-prob of each target (0 off the mask)
    completion_tokens: int
    scored: np.ndarray  # (P,) int32: the flat positions row * T + t holding a completion token's target

    def scored_targets(self) -> np.ndarray:
        """The targets at `scored`, in its order."""
        return self.targets.reshape(-1)[self.scored]


def build_update_batch(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                       logprobs: Sequence[np.ndarray], trained: Sequence[bool], pad_id: int) -> UpdateBatch:
    """Rows of prompt + completion, right-padded; `trained[i]` False masks row i out entirely (for example a
    truncated completion under overlong filtering)."""
    if not (len(prompts) == len(completions) == len(logprobs) == len(trained)):
        raise ValueError("build_update_batch: prompts, completions, logprobs and trained differ in length")
    width = max(len(p) + len(c) for p, c in zip(prompts, completions)) - 1
    n = len(prompts)
    inputs = np.full((n, width), pad_id, np.int32)
    targets = np.full((n, width), pad_id, np.int32)
    mask = np.zeros((n, width), np.float32)
    old_logp = np.zeros((n, width), np.float32)
    scored = []
    for row, (prompt, completion, lp, keep) in enumerate(zip(prompts, completions, logprobs, trained)):
        if len(lp) != len(completion):
            raise ValueError(f"row {row}: {len(completion)} completion tokens but {len(lp)} log-probs")
        tokens = list(prompt) + list(completion)
        inputs[row, : len(tokens) - 1] = tokens[:-1]
        targets[row, : len(tokens) - 1] = tokens[1:]
        start = len(prompt) - 1  # the position whose target is the first completion token
        old_logp[row, start : start + len(completion)] = lp
        scored.append(np.arange(start, start + len(completion)) + row * width)
        if keep and completion:
            mask[row, start : start + len(completion)] = 1.0
    return UpdateBatch(inputs, targets, mask, old_logp, int(mask.sum()), np.concatenate(scored).astype(np.int32))


def micro_batch_ranges(rows: int, per_device: int = 0, accumulation: int = 0) -> list[tuple[int, int]]:
    """(start, stop) of the micro-batches that walk `rows` completions in order: `per_device` rows each (the last
    may be shorter), or `accumulation` near-equal ones; with neither (0), one batch of them all."""
    if rows < 1:
        raise ValueError(f"micro_batch_ranges: rows must be >= 1, got {rows}")
    if per_device < 0 or accumulation < 0:
        raise ValueError(f"micro_batch_ranges: sizes must be >= 0, got {per_device}, {accumulation}")
    if per_device:
        starts = range(0, rows, per_device)
        return [(start, min(start + per_device, rows)) for start in starts]
    count = min(max(accumulation, 1), rows)
    bounds = [round(i * rows / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))
