"""Data order: whole epochs in the main stream, a resampling stream of its own, both pure functions of the step."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.rl.train.schedule import RESAMPLE_FIRST_INDEX, epoch_order, resample_order


def test_steps_take_consecutive_batches_of_whole_epochs():
    n, batch = 10, 4
    seen = [i for step in range(5) for i in epoch_order(step, batch, n, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert epoch_order(3, batch, n, seed=3) == epoch_order(3, batch, n, seed=3)
    assert epoch_order(2, batch, None, seed=3) == [8, 9, 10, 11]  # an endless generated task
    assert epoch_order(0, batch, n, seed=3) != epoch_order(0, batch, n, seed=4)


def test_the_order_is_each_epochs_seeded_permutation():
    """The order every existing run was trained with: position p is permutation(seed, p // n)[p % n]."""
    n, batch, seed = 7, 3, 5
    expected = [int(np.random.default_rng([seed, p // n]).permutation(n)[p % n]) for p in range(12 * batch)]
    assert [i for step in range(12) for i in epoch_order(step, batch, n, seed)] == expected


def test_a_batch_larger_than_the_data_spans_epochs():
    order = epoch_order(1, 5, 3, seed=0)  # positions 5..9: the end of epoch 1, all of epoch 2, one of epoch 3
    assert len(order) == 5 and sorted(order[1:4]) == [0, 1, 2]


def test_resampling_stream_is_its_own_and_a_function_of_step_and_round():
    n, batch = 100, 8
    draw = resample_order(3, 1, batch, n, seed=0)
    assert draw == resample_order(3, 1, batch, n, seed=0)
    assert len(set(draw)) == batch and all(0 <= i < n for i in draw)
    assert draw != resample_order(3, 2, batch, n, seed=0) != resample_order(4, 1, batch, n, seed=0)
    assert draw != resample_order(3, 1, batch, n, seed=1)
    small = resample_order(0, 1, 7, 3, seed=0)  # more problems than the data holds: whole permutations first
    assert sorted(small[:6]) == [0, 0, 1, 1, 2, 2] and len(small) == 7
    endless = resample_order(0, 1, batch, None, seed=0)
    assert all(i >= RESAMPLE_FIRST_INDEX for i in endless) and len(set(endless)) == batch
    with pytest.raises(ValueError, match="round 0"):
        resample_order(0, 0, batch, n, seed=0)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant_with_warmup", "constant"])
def test_learning_rate_schedules_by_transformers_name(kind):
    from wgrpo.rl.train.schedule import cosine_lr, scheduled_lr

    rates = [scheduled_lr(kind, step, 10, 1.0, 2, 0.2) for step in range(10)]
    if kind == "constant":  # transformers' constant has no warm-up
        assert rates == [1.0] * 10
        return
    assert rates[:2] == [0.5, 1.0]  # the linear warm-up, then the peak
    if kind == "cosine":
        assert rates == [cosine_lr(step, 10, 1.0, 2, 0.2) for step in range(10)]
    elif kind == "linear":
        assert rates[2:] == pytest.approx([1.0 - 0.8 * k / 8 for k in range(8)])
    else:
        assert rates[2:] == [1.0] * 8
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cyclic'"):
        scheduled_lr("cyclic", 3, 10, 1.0, 2, 0.2)
