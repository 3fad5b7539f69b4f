"""GRPO over a real local Ray with two rollout workers on the test adapter: the synchronous schedule reproduces the
single-process run's metrics and final weights to the bit, the asynchronous one is deterministic for a seed, a
killed worker is restarted once (and changes nothing), a second loss stops the run with a checkpoint to resume
from, and resumes work in both schedules."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest

from wgrpo.engine import load_pretrained
from wgrpo.rl.errors import ClusterError
from wgrpo.rl.train.callbacks import TrainerCallback
from wgrpo.rl.train.checkpoint import STATE_FILE
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
    # the weights moved once per update to each worker: the first weights for the evaluation before step 1
    synced = [r["weight_sync/bytes"] for r in rows[1:]]
    assert synced[0] == 0 and synced[1] == synced[2] > 0
    assert loop.cluster.restarts == [0, 0]


def test_the_asynchronous_schedule_is_deterministic_and_one_step_off_policy(start, one_process_run, tmp_path,
                                                                            no_plot):
    start_dir, task = start
    on_cluster(config(tmp_path / "a", start_dir, rollout_workers=2, async_rollouts=1), task, start_dir)
    on_cluster(config(tmp_path / "b", start_dir, rollout_workers=1, async_rollouts=1), task, start_dir)
    assert_same_run(tmp_path / "a", tmp_path / "b")  # also however many workers share the sampling
    rows = [r for r in read_rows(tmp_path / "a" / "metrics.jsonl") if r["step"] > 0]
    assert [r["sampling/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    assert [r["sampling/weight_version"] for r in rows] == [0.0, 0.0, 1.0]  # as the shards came back
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


class StopAfter(TrainerCallback):
    """Stops the run after step `step` (it saves checkpoint-step)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_an_asynchronous_run_resumes_exactly_from_its_checkpoint(start, tmp_path, no_plot):
    # the batch sampled ahead for step 2 (with the weights before update 1) is kept in checkpoint-1, so the
    # resumed run trains on it as the uninterrupted one does
    start_dir, task = start
    cfg = config(tmp_path / "straight", start_dir, rollout_workers=1, async_rollouts=1)
    on_cluster(cfg, task, start_dir)
    stopped = dataclasses.replace(cfg, output_dir=str(tmp_path / "stopped"))
    on_cluster(stopped, task, start_dir, callbacks=[StopAfter(1)])
    checkpoint = tmp_path / "stopped" / "checkpoint-1"
    assert "sampled_ahead" in json.loads((checkpoint / STATE_FILE).read_text())
    on_cluster(dataclasses.replace(stopped, resume=str(checkpoint)), task, start_dir)
    assert_same_run(tmp_path / "straight", tmp_path / "stopped")
    rows = read_rows(tmp_path / "stopped" / "metrics.jsonl")
    assert [r.get("sampling/staleness") for r in rows] == [None, 0.0, 1.0, 1.0]


def test_lora_dynamic_sampling_chunks_and_more_samplers_than_problems_match_one_process(start, device, tmp_path,
                                                                                        no_plot):
    # LoRA adapters alone move; 2 problems over 3 samplers (the learner's shard is empty); dynamic sampling's
    # extra rounds, generation in chunks, mu = 2, a warm-up and cosine decay, evaluation batches of one problem
    start_dir, task = start
    options = dict(use_peft=True, lora_r=4, lora_alpha=8.0, lr=2e-2, prompts_per_step=2, dynamic_sampling=True,
                   max_sampling_rounds=2, generation_chunk_size=4, mu=2, warmup_lr_steps=1, min_lr_ratio=0.1,
                   per_device_eval_batch_size=1, eval_problems=3)
    single_process(config(tmp_path / "one", start_dir, **options), task, device)
    loop = on_cluster(config(tmp_path / "two", start_dir, rollout_workers=2, **options), task, start_dir)
    rows = read_rows(tmp_path / "two" / "metrics.jsonl")
    assert computed(read_rows(tmp_path / "one" / "metrics.jsonl")) == computed(rows)
    adapters = [(tmp_path / run / "final" / "adapter_model.safetensors").read_bytes() for run in ("one", "two")]
    assert adapters[0] == adapters[1]
    from safetensors.numpy import load_file

    adapter = load_file(str(tmp_path / "two" / "final" / "adapter_model.safetensors"))
    assert loop.cluster.learner_info["trainable_bytes"] == sum(a.nbytes for a in adapter.values())  # not the model
    assert rows[2]["weight_sync/bytes"] == 2 * loop.cluster.learner_info["trainable_bytes"]


def test_an_asynchronous_run_that_loses_a_worker_twice_keeps_every_finished_update(start, tmp_path, no_plot):
    # the second loss comes while step 4 is sampled ahead during update 3: that update still lands, its row is
    # written, and the checkpoint saved on stopping is checkpoint-3 with the weights of three updates
    start_dir, task = start
    straight = config(tmp_path / "straight", start_dir, rollout_workers=2, async_rollouts=1, steps=4, save_every=1)
    on_cluster(straight, task, start_dir)
    lost = dataclasses.replace(straight, output_dir=str(tmp_path / "lost"), save_every=0)
    with pytest.raises(ClusterError, match=r"rollout worker 0 died again .*resume with: .*checkpoint-3"):
        run_with(lost, task, start_dir, KillWorker({1, 2}))
    kept = tmp_path / "lost" / "checkpoint-3"
    assert json.loads((kept / STATE_FILE).read_text())["step"] == 3
    assert (kept / "model.safetensors").read_bytes() == \
        (tmp_path / "straight" / "checkpoint-3" / "model.safetensors").read_bytes()
    rows = read_rows(tmp_path / "lost" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]


def test_an_actors_own_error_comes_back_as_itself(start, tmp_path):
    from wgrpo.engine import NoAdapterError
    from wgrpo.rl.cluster.driver import cluster_loop

    start_dir, task = start
    with pytest.raises(NoAdapterError, match="no adapter matches device='metal'"):
        with cluster_loop(config(tmp_path, start_dir, rollout_workers=1), task, start_dir, device="metal"):
            pass


def test_an_output_dir_the_learner_cannot_see_is_refused(tmp_path):
    from types import SimpleNamespace

    from wgrpo.engine import InputError
    from wgrpo.rl.cluster.driver import check_shared_output

    seen = []
    blind = SimpleNamespace(learner_info={"host": "node-7"},
                            call_learner=lambda method, path: seen.append((method, path)) or False)
    with pytest.raises(InputError, match=f"--output-dir {tmp_path}: the learner actor does not see it from its "
                                         f"node \\(node-7\\); put it on a filesystem every node shares"):
        check_shared_output(blind, tmp_path)
    assert seen[0][0] == "sees" and seen[0][1].startswith(str(tmp_path)) and not list(tmp_path.iterdir())
