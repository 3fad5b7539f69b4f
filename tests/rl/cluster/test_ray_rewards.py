"""Code-task rewards scored as one-CPU Ray tasks, each test run in the real sandbox inside a Ray worker: the same
values as the task scores in this process; and the shards a round is cut into."""

from __future__ import annotations

import dataclasses

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


@needs_isolation
def test_a_code_task_trains_on_the_cluster_as_in_one_process(local_ray, device, tmp_path, monkeypatch):
    # the completions' rewards are Ray tasks here and the task's own threads in one process: the same run
    from wgrpo.engine import END_OF_TEXT, Model, ModelConfig, load_pretrained, train_tokenizer
    from wgrpo.rl.cluster.driver import cluster_loop
    from wgrpo.rl.train.metrics_log import read_rows
    from wgrpo.rl.train.pipeline import policy_and_reference
    from wgrpo.rl.train.task_options import task_of
    from wgrpo.rl.train.trainer import GRPOLoop
    from tests.rl.train.test_trainer import config

    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    path = write_rows(tmp_path)
    cfg = config(tmp_path / "one", task="code", task_options=f"path={path},eval_fraction=0.0,timeout_s=2",
                 prompts_per_step=2, max_new_tokens=8, steps=2, beta=0.0)
    task = task_of(cfg)
    tokenizer = train_tokenizer([task.sample(i).prompt + " <answer>def f(): pass</answer>" for i in range(2)] * 5,
                                vocab_size=400)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    model_config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=2,
                               num_kv_heads=1, intermediate_size=48, max_position_embeddings=512,
                               eos_token_id=eos, pad_token_id=eos)
    start = tmp_path / "start"
    Model.random(model_config, seed=3, device=device).save_pretrained(start, tokenizer)
    cfg = dataclasses.replace(cfg, model=str(start))
    policy, _ = policy_and_reference(load_pretrained(start, device)[0], cfg)
    GRPOLoop(cfg, policy, tokenizer, task, start_model=str(start)).run()
    on_ray = dataclasses.replace(cfg, output_dir=str(tmp_path / "two"), rollout_workers=1)
    from wgrpo.rl.cluster import ray_cluster

    scored = []
    as_tasks = ray_cluster.score_as_tasks
    def counted(task, completions, *rest):
        scored.append(len(completions))
        return as_tasks(task, completions, *rest)

    monkeypatch.setattr(ray_cluster, "score_as_tasks", counted)
    with cluster_loop(on_ray, task_of(on_ray), str(start)) as loop:
        loop.run()
    assert scored == [8, 8]  # each step's 2 x 4 completions, as Ray tasks

    def computed(run):
        return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/", "weight_sync/"))
                 and not k.endswith("_per_s")} for r in read_rows(tmp_path / run / "metrics.jsonl")]

    assert computed("one") == computed("two") and "rewards/accuracy/mean" in computed("two")[1]
