"""GRPO over a real local Ray with two rollout workers on the test adapter: the synchronous schedule reproduces the
single-process run's metrics and final weights to the bit, the asynchronous one is deterministic for a seed, a
killed worker is restarted once (and changes nothing), a second loss stops the run with a checkpoint to resume
from, and resumes work in both schedules."""

from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest

from wgrpo.engine import load_pretrained
from wgrpo.rl.errors import ClusterError
from wgrpo.rl.train.callbacks import TrainerCallback
from wgrpo.rl.train.metrics_log import read_rows
from wgrpo.rl.train.pipeline import policy_and_reference
from wgrpo.rl.train.trainer import GRPOLoop
from tests.rl.train.test_trainer import config as train_config, tiny_setup

pytestmark = pytest.mark.usefixtures("local_ray")


def measured(key: str) -> bool:
    """Metrics that time or size the run rather than compute it."""
    return key.startswith(("time/", "memory/", "weight_sync/")) or key.endswith("_per_s")


def computed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not measured(k)} for row in rows]


@pytest.fixture(scope="module")
def start(device, tmp_path_factory):
    """A tiny checkpoint whose samples' rewards differ (so every step has a gradient), and its task."""
    model, tokenizer, task = tiny_setup(device)
    path = tmp_path_factory.mktemp("start") / "tiny"
    model.save_pretrained(path, tokenizer)
    return str(path), task


def config(out, start_dir, **overrides):
    # 5 problems x G 4 over 3 samplers: shards of 2, 2 and 1 groups; evaluations before and after
    options = dict(model=start_dir, steps=3, prompts_per_step=5, eval_every=0, save_every=2, seed=3)
    options.update(overrides)
    return train_config(out, **options)


def single_process(cfg, task, device):
    model, tokenizer = load_pretrained(cfg.model, device, cfg.dtype)
    policy, reference = policy_and_reference(model, cfg)
    GRPOLoop(cfg, policy, tokenizer, task, reference, start_model=cfg.model).run()


def on_cluster(cfg, task, start_dir, callbacks=()):
    from wgrpo.rl.cluster.driver import cluster_loop

    with cluster_loop(cfg, task, start_dir, callbacks=callbacks) as loop:
        loop.run()
        return loop


def final_weights(out):
    from safetensors.numpy import load_file

    return load_file(str(out / "final" / "model.safetensors"))


def assert_same_run(a, b):
    rows_a, rows_b = read_rows(a / "metrics.jsonl"), read_rows(b / "metrics.jsonl")
    assert computed(rows_a) == computed(rows_b)
    weights_a, weights_b = final_weights(a), final_weights(b)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        np.testing.assert_array_equal(weights_a[name], weights_b[name], err_msg=name)


@pytest.fixture
def no_plot(monkeypatch):
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)


@pytest.fixture(scope="module")
def one_process_run(start, device, tmp_path_factory):
    start_dir, task = start
    out = tmp_path_factory.mktemp("one")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GRPOLoop, "_plot", lambda self: None)
        single_process(config(out, start_dir), task, device)
    return out


def test_two_rollout_workers_reproduce_the_single_process_run(start, one_process_run, tmp_path, no_plot):
    start_dir, task = start
    out = tmp_path / "two"
    loop = on_cluster(config(out, start_dir, rollout_workers=2), task, start_dir)
    assert_same_run(one_process_run, out)
    rows = read_rows(out / "metrics.jsonl")
    assert rows[1]["reward_std"] > 0 and rows[3]["loss"] != 0  # rewards differ: the steps had a gradient
    assert "eval_reward" in rows[0] and "eval_reward" in rows[3]
    # the weights moved once per update, the first sync included, to each worker sampling a shard
    synced = [r["weight_sync/bytes"] for r in rows[1:]]
    assert all(b > 0 for b in synced) and len(set(synced)) == 1
    assert loop.cluster.restarts == [0, 0]


def test_the_asynchronous_schedule_is_deterministic_and_one_step_off_policy(start, one_process_run, tmp_path,
                                                                            no_plot):
    start_dir, task = start
    on_cluster(config(tmp_path / "a", start_dir, rollout_workers=2, async_rollouts=1), task, start_dir)
    on_cluster(config(tmp_path / "b", start_dir, rollout_workers=1, async_rollouts=1), task, start_dir)
    assert_same_run(tmp_path / "a", tmp_path / "b")  # also however many workers share the sampling
    rows = [r for r in read_rows(tmp_path / "a" / "metrics.jsonl") if r["step"] > 0]
    assert [r["sampling/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    synchronous = [r for r in read_rows(one_process_run / "metrics.jsonl") if r["step"] > 0]
    assert rows[0]["loss"] == synchronous[0]["loss"]  # step 1 is sampled on-policy in both
    assert rows[1]["reward"] != synchronous[1]["reward"]  # step 2 was sampled before update 1


class KillWorker(TrainerCallback):
    """SIGKILLs rollout worker 0's process at the end of the given steps."""

    def __init__(self, steps):
        self.steps, self.loop = set(steps), None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            worker = self.loop.cluster.workers[0]
            from wgrpo.rl.cluster.ray_cluster import get

            os.kill(get(worker.describe.remote())["pid"], signal.SIGKILL)


def run_with(cfg, task, start_dir, callback):
    from wgrpo.rl.cluster.driver import cluster_loop

    with cluster_loop(cfg, task, start_dir, callbacks=[callback]) as loop:
        callback.loop = loop
        loop.run()
        return loop


def test_a_killed_worker_is_restarted_and_changes_nothing(start, one_process_run, tmp_path, no_plot, capsys):
    start_dir, task = start
    out = tmp_path / "killed"
    loop = run_with(config(out, start_dir, rollout_workers=2), task, start_dir, KillWorker({1}))
    assert loop.cluster.restarts == [1, 0]
    assert "rollout worker 0 died" in capsys.readouterr().out
    assert_same_run(one_process_run, out)


def test_a_worker_lost_twice_stops_the_run_with_a_checkpoint_that_resumes(start, one_process_run, tmp_path,
                                                                          no_plot):
    start_dir, task = start
    out = tmp_path / "lost"
    cfg = config(out, start_dir, rollout_workers=2)
    with pytest.raises(ClusterError, match=r"rollout worker 0 died again after its restart .*resume with: wgrpo "
                                           r"train --resume .*checkpoint-2"):
        run_with(cfg, task, start_dir, KillWorker({1, 2}))
    assert (out / "checkpoint-2" / "model.safetensors").is_file() and not (out / "final").exists()
    resumed = dataclasses.replace(cfg, resume=str(out / "checkpoint-2"))
    on_cluster(resumed, task, start_dir)
    assert_same_run(one_process_run, out)


def test_an_asynchronous_run_resumes_from_its_checkpoint(start, tmp_path, no_plot):
    start_dir, task = start
    out = tmp_path / "async"
    cfg = config(out, start_dir, rollout_workers=1, async_rollouts=1, steps=2, save_every=1)
    on_cluster(cfg, task, start_dir)
    finished = read_rows(out / "metrics.jsonl")
    resumed = dataclasses.replace(cfg, resume=str(out / "checkpoint-1"), steps=3)
    on_cluster(resumed, task, start_dir)
    rows = read_rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert computed(rows[:2]) == computed(finished[:2])
    # the resumed run's first batch is sampled with the checkpoint's weights, the next one step behind again
    assert [r["sampling/staleness"] for r in rows[2:]] == [0.0, 1.0]
    assert (out / "final" / "model.safetensors").is_file()
