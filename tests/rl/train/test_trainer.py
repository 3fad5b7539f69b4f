"""The GRPO trainer on a tiny model: parameters move, rewards are finite, resume is exact, bad options are named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.batch import build_update_batch
from wgrpo.rl.tasks.base import GeneratedTask
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.task_options import parse_options
from wgrpo.rl.train.trainer import GRPOLoop


class CountSevens(GeneratedTask):
    """A toy task whose reward varies between samples of even a random model: the share of distinct characters."""

    name = "sevens"

    def _generate(self, rng):
        n = int(rng.integers(0, 1000))
        return str(n), f"Say sevens after {n}.", "7", {}

    def reward_parts(self, completion, problem):
        return {"accuracy": len(set(completion)) / (1 + len(completion)), "format": 0.0}


def tiny_setup(device, seed=0):
    from wgrpo.engine import Model, ModelConfig
    from wgrpo.engine.tokenizer import END_OF_TEXT, train_tokenizer

    task = CountSevens(template="plain")
    texts = [task.sample(i).prompt + " 7 77 777 123 <answer>7</answer>" for i in range(50)]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=64, eos_token_id=eos,
                         pad_token_id=eos)
    return Model.random(config, seed=seed, device=device), tokenizer, task


def config(tmp_path, **overrides):
    options = dict(task="sevens", task_options="", output_dir=str(tmp_path), steps=2, prompts_per_step=2,
                   group_size=4, max_new_tokens=6, lr=5e-3, warmup_lr_steps=0, min_lr_ratio=1.0, eval_every=0,
                   eval_problems=4, beta=0.04, seed=0)
    options.update(overrides)
    return TrainConfig(**options)


def reference_of(model):
    from wgrpo.engine import Model

    return Model.from_numpy(model.config, model.state_dict(), model.device)


def test_a_few_steps_change_every_parameter(device, tmp_path, monkeypatch):
    monkeypatch.setattr("wgrpo.rl.train.trainer.GRPOLoop._plot", lambda self: None)
    model, tokenizer, task = tiny_setup(device)
    before = model.state_dict()
    trainer = GRPOLoop(config(tmp_path), model, tokenizer, task, reference_of(model))
    records = [trainer.train_step() for _ in range(2)]
    for record in records:
        for key in ("reward", "loss", "kl", "grad_norm", "entropy", "completions/mean_length"):
            assert np.isfinite(record[key]), key
    assert records[0]["reward_std"] > 0, "the toy task must give the groups some signal"
    after = model.state_dict()
    unchanged = [name for name in before if np.array_equal(before[name], after[name])]
    assert not unchanged, f"parameters that did not change: {unchanged}"


def test_resume_continues_exactly(device, tmp_path, monkeypatch):
    monkeypatch.setattr("wgrpo.rl.train.trainer.GRPOLoop._plot", lambda self: None)
    model, tokenizer, task = tiny_setup(device)
    reference = reference_of(model)  # the starting policy, before training moves `model`
    straight = GRPOLoop(config(tmp_path / "a", steps=4, save_every=2, eval_every=0), model, tokenizer, task,
                           reference)
    straight.evaluate = lambda: {}
    straight.run()
    resumed = GRPOLoop.resume_from(config(tmp_path / "b", steps=4), str(tmp_path / "a" / "checkpoint-2"),
                                      device, reference, task=task)
    resumed.evaluate = lambda: {}
    resumed.run()
    a = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    a = [r for r in a if r["step"] > 2 and "loss" in r]
    b = [r for r in b if "loss" in r]
    assert [r["step"] for r in b] == [3, 4]
    for x, y in zip(a, b):
        assert x["reward"] == y["reward"] and x["completions/mean_length"] == y["completions/mean_length"]
        np.testing.assert_allclose(x["loss"], y["loss"], rtol=1e-5, atol=1e-7)


def test_update_batch_aligns_old_logprobs_with_targets():
    batch = build_update_batch([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]],
                               [np.array([-0.5, -0.6]), np.array([-1.0, -1.1, -1.2])], [True, False], pad_id=0)
    np.testing.assert_array_equal(batch.inputs, [[1, 2, 3, 5], [4, 7, 8, 0]])
    np.testing.assert_array_equal(batch.targets, [[2, 3, 5, 6], [7, 8, 9, 0]])
    np.testing.assert_array_equal(batch.mask, [[0, 0, 1, 1], [0, 0, 0, 0]])  # row 2 is not trained on
    np.testing.assert_allclose(batch.old_logp, [[0, 0, -0.5, -0.6], [-1.0, -1.1, -1.2, 0]])
    assert batch.completion_tokens == 2
    np.testing.assert_array_equal(batch.scored, [2, 3, 4, 5, 6])  # every completion token's position, flat
    np.testing.assert_array_equal(batch.scored_targets(), [5, 6, 7, 8, 9])


def test_options_and_errors_are_named(device, tmp_path):
    assert parse_options("digits=2,ops=+,template=plain,instructions=false, x=0.5", "task_options") == {
        "digits": 2, "ops": "+", "template": "plain", "instructions": False, "x": 0.5}
    with pytest.raises(ValueError, match="task_options: expected key=value"):
        parse_options("digits", "task_options")
    model, tokenizer, task = tiny_setup(device)
    with pytest.raises(InputError, match=r"reward-weights.*\['length'\] name no reward of task 'sevens'"):
        GRPOLoop(config(tmp_path, reward_weights="accuracy=1,length=0.5"), model, tokenizer, task,
                    reference_of(model))
    with pytest.raises(InputError, match="top-p"):
        config(tmp_path, top_p=1.5)
    from wgrpo.rl.tasks import get_task

    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


def test_prompts_that_leave_no_room_are_refused_before_any_work(device, tmp_path):
    model, tokenizer, task = tiny_setup(device)  # max_position_embeddings = 64
    with pytest.raises(InputError, match=r"--max-new-tokens 64: leaves no room for a prompt"):
        GRPOLoop(config(tmp_path / "a", max_new_tokens=64), model, tokenizer, task, reference_of(model))
    with pytest.raises(InputError, match=r"sevens train problem 0: prompt .* over the limit of 4 tokens"):
        GRPOLoop(config(tmp_path / "b", max_new_tokens=60), model, tokenizer, task, reference_of(model))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
