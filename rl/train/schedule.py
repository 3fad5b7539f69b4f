"""Learning-rate schedules and data order shared by the trainers; pure functions of the step, so that a
resumed run continues exactly as an uninterrupted one.

Data order has two streams:
- the main stream (`epoch_order`): the problems laid end to end, one seeded permutation per epoch, consumed
  in order by the batches; step s takes the next batch_size problems, so every problem comes once per epoch;
- the resampling stream (`resample_order`): the extra problems that dynamic sampling draws when too many
  groups carried no signal, keyed by (seed, step, round) and never by the main stream's position, so
  resampling leaves the epochs whole.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# Keys the resampling stream's generator apart from the epoch permutations ([seed, epoch]).
RESAMPLE_STREAM = 0x5EED_DA
# An endless generated task's resampled problems are drawn at indices from here on, which the main stream
# (index = step * batch_size + j) never reaches.
RESAMPLE_FIRST_INDEX = 1 << 40


def cosine_lr(step: int, total: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to lr * min_ratio at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def scheduled_lr(kind: str, step: int, total: int, lr: float, warmup: int, min_ratio: float) -> float:
    """The learning rate of `step` under schedule `kind` (transformers' lr_scheduler_type names): `cosine`
    (`cosine_lr`), `linear` (warm-up, then a straight line to lr * min_ratio at `total`), `constant_with_warmup`
    (warm-up, then lr) or `constant` (lr from the first step; no warm-up, as in transformers)."""
    if kind == "constant":
        return lr
    if kind == "cosine":
        return cosine_lr(step, total, lr, warmup, min_ratio)
    if step < warmup:
        return lr * (step + 1) / warmup
    if kind == "constant_with_warmup":
        return lr
    if kind == "linear":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return lr * (1 - (1 - min_ratio) * progress)
    raise ValueError(f"unknown learning-rate schedule {kind!r}")


@lru_cache(maxsize=4)  # a batch touches one epoch, two at an epoch boundary
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False  # shared by every caller through the cache
    return order


def epoch_order(step: int, batch_size: int, n: int | None, seed: int) -> list[int]:
    """The main stream's indices for `step`: positions step * batch_size onwards of the epochs laid end to end,
    a fresh permutation of the n items per epoch; with an endless generated task (n None), simply the next
    batch_size indices."""
    start = step * batch_size
    if n is None:
        return list(range(start, start + batch_size))
    if n < 1:
        raise ValueError(f"epoch_order: the data set is empty (n={n})")
    indices: list[int] = []
    position = start
    while len(indices) < batch_size:
        epoch, offset = divmod(position, n)
        take = min(batch_size - len(indices), n - offset)
        indices.extend(_permutation(seed, epoch, n)[offset : offset + take].tolist())
        position += take
    return indices


def resample_order(step: int, round_: int, batch_size: int, n: int | None, seed: int) -> list[int]:
    """Dynamic sampling's problems for extra sampling round `round_` (>= 1) of `step`: batch_size problems drawn
    without replacement (with n < batch_size: whole permutations, then part of one) from a generator of their
    own keyed by (seed, step, round_); an endless task's at indices from RESAMPLE_FIRST_INDEX on."""
    if round_ < 1:
        raise ValueError(f"resample_order: round 0 is the main stream's (epoch_order); got round {round_}")
    rng = np.random.default_rng([seed, RESAMPLE_STREAM, step, round_])
    if n is None:
        return (RESAMPLE_FIRST_INDEX + rng.integers(0, 1 << 62, size=batch_size)).tolist()
    if n < 1:
        raise ValueError(f"resample_order: the data set is empty (n={n})")
    permutations = [rng.permutation(n) for _ in range(-(-batch_size // n))]
    return np.concatenate(permutations)[:batch_size].tolist()
