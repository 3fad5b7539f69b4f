"""Code-task rewards scored as one-CPU Ray tasks, each test run in the real sandbox inside a Ray worker: the same
values as the task scores in this process; and the shards a round is cut into."""

from __future__ import annotations

import pytest

from wgrpo.rl.cluster.shards import shard_ranges
from wgrpo.rl.rollout import Completion
from wgrpo.rl.tasks import get_task
from tests.rl.test_code_rewards import batch, needs_isolation, write_rows


@needs_isolation
def test_code_rewards_as_ray_tasks_equal_the_tasks_own(local_ray, tmp_path):
    from wgrpo.rl.cluster.ray_cluster import score_as_tasks

    task = get_task("code", path=write_rows(tmp_path), eval_fraction=0.0, timeout_s=1.0)
    texts, problems, accuracy = batch(task)
    completions = [Completion(i, [1], [2], None, text, "stop") for i, text in enumerate(texts)]
    scores = score_as_tasks(task, completions, problems, task.default_weights)
    assert scores == task.rewards(texts, problems, task.default_weights)
    assert [parts["accuracy"] for _, parts in scores] == pytest.approx(accuracy)


@pytest.mark.parametrize("problems, shards, ranges", [
    (5, 3, [(0, 1), (1, 3), (3, 5)]), (6, 3, [(0, 2), (2, 4), (4, 6)]), (1, 1, [(0, 1)]),
    (2, 3, [(0, 0), (0, 1), (1, 2)]), (7, 2, [(0, 3), (3, 7)])])
def test_a_round_is_cut_into_contiguous_parts_of_whole_groups(problems, shards, ranges):
    assert shard_ranges(problems, shards) == ranges


def test_no_shards_is_refused():
    with pytest.raises(ValueError, match="shards must be at least 1, got 0"):
        shard_ranges(4, 0)
