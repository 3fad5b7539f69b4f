"""Learning-rate schedules and data order shared by the trainers; pure functions of the step, so that a
resumed run continues exactly as an uninterrupted one."""

from __future__ import annotations

import math

import numpy as np


def cosine_lr(step: int, total: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to lr * min_ratio at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def epoch_order(step: int, batch_size: int, n: int | None, seed: int) -> list[int]:
    """Indices for `step`: with a finite data set of n items a fresh permutation per epoch; with an endless
    generated one (n None), simply the next batch_size indices."""
    start = step * batch_size
    if n is None:
        return list(range(start, start + batch_size))
    indices = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n)
        indices.append(int(np.random.default_rng([seed, epoch]).permutation(n)[offset]))
    return indices
