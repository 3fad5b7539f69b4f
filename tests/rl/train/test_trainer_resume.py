"""Checkpoints and logs that survive faults: a resume into the directory of a killed run, leftovers of a killed
save, bad trainer-state files (the tokenizer and the optimizer's included), and when the curves are drawn."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.train.checkpoint import CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE, load_training_state
from wgrpo.rl.train.metrics_log import read_rows
from wgrpo.rl.train.trainer import GRPOLoop
from tests.rl.train.test_trainer import config, reference_of, tiny_setup


def no_eval(trainer):
    trainer.evaluate = lambda: {}
    return trainer


def test_a_resume_in_the_directory_of_a_killed_run_logs_each_step_once(device, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    model, tokenizer, task = tiny_setup(device)
    reference = reference_of(model)
    out = tmp_path / "run"
    no_eval(GRPOLoop(config(out, steps=4, save_every=2), model, tokenizer, task, reference)).run()
    straight = read_rows(out / "metrics.jsonl")
    # as a kill would leave it: the log past the checkpoint, a torn row, a save cut short
    with open(out / "metrics.jsonl", "a") as log:
        log.write('{"step": 5, "rewar')
    shutil.rmtree(out / "final")
    stale = out / ".checkpoint-4.tmp-k1lled"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    resumed = GRPOLoop.resume_from(config(out, steps=4, save_every=2), str(out / "checkpoint-2"), device,
                                      reference, task=task)
    assert not stale.exists()
    assert f"removed {stale}" in capsys.readouterr().err
    no_eval(resumed).run()
    assert "dropped 2 rows of steps >= 3" in capsys.readouterr().err
    rows = read_rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    for before, after in zip(straight[3:], rows[3:]):
        assert before["reward"] == after["reward"]
        np.testing.assert_allclose(before["loss"], after["loss"], rtol=1e-5, atol=1e-7)
    assert (out / "final" / "model.safetensors").is_file()


def test_a_fresh_run_replaces_the_log_of_an_earlier_one(device, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    model, tokenizer, task = tiny_setup(device)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(9)))
    no_eval(GRPOLoop(config(tmp_path, steps=1, beta=0.0), model, tokenizer, task)).run()
    assert [r["step"] for r in read_rows(tmp_path / "metrics.jsonl")] == [0, 1]
    assert "dropped 9 rows" in capsys.readouterr().err


def test_curves_are_drawn_at_evaluations_and_at_the_end(device, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: drawn.append(self.step))
    model, tokenizer, task = tiny_setup(device)
    trainer = GRPOLoop(config(tmp_path, steps=3, eval_every=2, beta=0.0), model, tokenizer, task)
    trainer.evaluate = lambda: {"eval_pass@1": 0.0, "eval_rewards/format/mean": 0.0,
                                "eval_completions/mean_length": 1.0}
    history = trainer.run()
    assert drawn == [2, 3]
    assert [r["step"] for r in history] == [0, 2, 3]


@pytest.fixture
def checkpoint(device, tmp_path):
    model, tokenizer, task = tiny_setup(device)
    trainer = GRPOLoop(config(tmp_path, beta=0.0), model, tokenizer, task)
    return trainer.save(tmp_path / "checkpoint-0")


def edit_json(path, change):
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def test_bad_trainer_state_files_are_named(checkpoint):
    state, optimizer, saved = load_training_state(checkpoint)
    assert state["step"] == 0 and optimizer["state"] and saved["task"] == "sevens"
    state_file, config_file = checkpoint / STATE_FILE, checkpoint / CONFIG_FILE
    original = state_file.read_text()
    edit_json(state_file, lambda s: {k: v for k, v in s.items() if k != "optimizer"})
    with pytest.raises(InputError, match=rf"{state_file}: \"optimizer\" must hold"):
        load_training_state(checkpoint)
    edit_json(state_file, lambda s: {**json.loads(original), "step": "3"})
    with pytest.raises(InputError, match=rf"{state_file}: \"step\" must be a non-negative integer"):
        load_training_state(checkpoint)
    state_file.write_text(original[: len(original) // 2])  # torn
    with pytest.raises(InputError, match=rf"{state_file}: cannot read the trainer state"):
        load_training_state(checkpoint)
    state_file.write_text(original)
    config_file.write_text("{not json")
    with pytest.raises(InputError, match=rf"{config_file}: cannot read the trainer config"):
        load_training_state(checkpoint)
    config_file.unlink()
    with pytest.raises(InputError, match=rf"{config_file}: missing"):
        load_training_state(checkpoint)


@pytest.fixture
def trained(device, tmp_path, monkeypatch):
    """A checkpoint one step in (so that the optimizer holds moments), its task and the trainer's config."""
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    model, tokenizer, task = tiny_setup(device)
    options = config(tmp_path / "run", steps=1, beta=0.0)
    no_eval(GRPOLoop(options, model, tokenizer, task)).run()
    return tmp_path / "run" / "final", task, config(tmp_path / "run", steps=2, beta=0.0)


def test_a_checkpoint_without_its_tokenizer_is_refused_before_its_weights_load(device, trained):
    checkpoint, task, options = trained
    (checkpoint / "tokenizer.json").unlink()
    (checkpoint / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(InputError, match=rf"^{re.escape(str(checkpoint))}: no tokenizer\.json next to the model"):
        GRPOLoop.resume_from(options, str(checkpoint), device, task=task)


def test_a_trainer_without_a_tokenizer_is_refused_by_name(device, tmp_path):
    model, _, task = tiny_setup(device)
    with pytest.raises(ValueError, match=r"GRPOLoop: tokenizer is None"):
        GRPOLoop(config(tmp_path, beta=0.0), model, None, task)


def test_an_optimizer_state_that_does_not_fit_is_named_by_its_file(device, trained):
    from safetensors.numpy import load_file, save_file

    checkpoint, task, options = trained
    optimizer_file = checkpoint / OPTIMIZER_FILE
    moments = load_file(str(optimizer_file))
    save_file({**moments, "0.exp_avg": np.zeros(3, np.float32)}, str(optimizer_file))
    with pytest.raises(InputError, match=rf"^{re.escape(str(optimizer_file))}: AdamW\.load_state_dict: "
                                         rf"state\[0\]\['exp_avg'\] has shape \(3,\)"):
        GRPOLoop.resume_from(options, str(checkpoint), device, task=task)


def test_a_missing_or_corrupt_optimizer_file_is_named(trained):
    checkpoint = trained[0]
    optimizer_file = checkpoint / OPTIMIZER_FILE
    content = optimizer_file.read_bytes()
    optimizer_file.write_bytes(content[: len(content) // 2])
    with pytest.raises(InputError, match=rf"^{re.escape(str(optimizer_file))}: corrupt optimizer state"):
        load_training_state(checkpoint)
    optimizer_file.unlink()
    with pytest.raises(InputError, match=rf"^{re.escape(str(optimizer_file))}: missing; the optimizer state is "
                                         rf"part of every training checkpoint$"):
        load_training_state(checkpoint)
