"""Warm-up traces: right without the bug, wrong exactly where a carry or borrow is forgotten, and well formed."""

from __future__ import annotations

import numpy as np

from wgrpo.rl.tasks import get_task
from wgrpo.rl.train.traces import addition_trace, multiplication_trace, subtraction_trace, warmup_completion, warmup_records


def test_traces_compute_the_right_result():
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, 10_000, size=(200, 2)):
        assert addition_trace(a, b)[1] == a + b
        assert subtraction_trace(a, b)[1] == a - b
        assert multiplication_trace(a, b)[1] == a * b


def test_the_bug_forgets_carries_and_borrows_only_when_there_are_some():
    assert addition_trace(86, 52, buggy=True) == ("6+2+0=8, 8+5+0=13", 38)
    assert addition_trace(23, 41, buggy=True)[1] == 64  # no carry: the bug changes nothing
    assert subtraction_trace(52, 17, buggy=True)[1] != 35
    assert subtraction_trace(58, 17, buggy=True)[1] == 41
    assert multiplication_trace(12, 3, buggy=True)[1] == 37


def test_completions_score_as_their_result_says():
    task = get_task("arithmetic", digits=2, ops="+-*", template="plain", instructions=False)
    rng = np.random.default_rng(1)
    for i in range(300):
        problem = task.sample(i)
        completion, right = warmup_completion(problem, rng, error_rate=0.5)
        parts = task.reward_parts(completion, problem)
        assert parts["format"] == 1.0 and parts["accuracy"] == float(right)


def test_records_are_reproducible():
    task = get_task("arithmetic", digits=2, ops="+")
    assert warmup_records(task, 20, 0.6, seed=3) == warmup_records(task, 20, 0.6, seed=3)
    assert warmup_records(task, 20, 0.6, seed=3) != warmup_records(task, 20, 0.6, seed=4)
