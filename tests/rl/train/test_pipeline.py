"""`wgrpo train` end to end: the closing table of a whole run and of a resumed one, and the checks a resumed run
makes before any work."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from wgrpo.rl.train.pipeline import recover_beside, report


def trainer_in(path):
    return SimpleNamespace(config=SimpleNamespace(output_dir=str(path), eval_problems=200),
                           task=SimpleNamespace(name="arithmetic", primary_reward="accuracy", size=lambda split: None))


def evaluation(step: int, accuracy: float, format_rate: float) -> dict:
    return {"step": step, "eval_pass@1": accuracy, "eval_rewards/accuracy/mean": accuracy,
            "eval_rewards/format/mean": format_rate}


def test_whole_run_shows_base_gain_and_curves(tmp_path, capsys):
    history = [evaluation(0, 0.355, 1.0), evaluation(50, 1.0, 1.0)]
    report(history, trainer_in(tmp_path))
    out = capsys.readouterr().out
    assert "model                 pass@1  accuracy    format" in out
    assert "base (step 0)          35.5%     0.355     1.000" in out and "GRPO (step 50)        100.0%" in out
    assert "(pass@1: full marks on accuracy)" in out and "pass@1 change: +64.5 points" in out


def test_resumed_run_takes_the_base_from_its_metrics(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(evaluation(0, 0.25, 0.5)) + "\n"
                                            + json.dumps({"step": 1, "reward": 0.1}) + "\n")
    report([evaluation(9, 0.75, 1.0)], trainer_in(tmp_path))
    out = capsys.readouterr().out
    assert "base (step 0)          25.0%     0.250     0.500" in out and "pass@1 change: +50.0 points" in out


def test_resumed_elsewhere_shows_the_final_row_only(tmp_path, capsys):
    report([evaluation(9, 0.75, 1.0)], trainer_in(tmp_path))
    out = capsys.readouterr().out
    assert "GRPO (step 9)" in out and "base" not in out and "pass@1 change" not in out


def test_a_torn_last_line_in_the_metrics_is_left_out(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(evaluation(0, 0.25, 0.5)) + "\n"
                                            + '{"step": 1, "rewa')  # a row a kill cut short
    report([evaluation(9, 0.75, 1.0)], trainer_in(tmp_path))
    assert "base (step 0)          25.0%     0.250     0.500" in capsys.readouterr().out


def test_recovery_beside_a_checkpoint(tmp_path, capsys):
    """A checkpoint left aside by a killed replacement comes back before it is read; a checkpoint that is there
    is read as it is, leaving the temp directories beside it (another run may be writing them) unless asked."""
    final, other = tmp_path / "final", tmp_path / ".checkpoint-4.tmp-abc123"
    (tmp_path / ".final.old-00000000000100000000aa").mkdir()
    recover_beside(final)
    assert final.is_dir()
    assert f"restored {final} from .final.old-00000000000100000000aa" in capsys.readouterr().err
    other.mkdir()
    recover_beside(final)
    assert other.is_dir() and capsys.readouterr().err == ""
    recover_beside(final, always=True)
    assert not other.exists() and final.is_dir()


def resumable_checkpoint(path, start_model: str, step: int = 1):
    """A checkpoint's trainer files, as a run at `step` that started from `start_model` wrote them."""
    import dataclasses

    from wgrpo.rl.train.config import TrainConfig

    (path / "trainer_state").mkdir(parents=True)
    (path / "trainer_config.json").write_text(json.dumps(dataclasses.asdict(TrainConfig(
        output_dir=str(path.parent), steps=2, model=start_model))))
    (path / "trainer_state" / "state.json").write_text(json.dumps({
        "step": step, "task": "arithmetic", "start_model": start_model,
        "optimizer": {"step": step, "hyperparameters": {}, "state": []}}))
    return path


def test_a_resume_whose_start_model_is_gone_is_refused_before_any_work(tmp_path):
    from wgrpo.engine import InputError
    from wgrpo.rl.train.config import resume_config
    from wgrpo.rl.train.pipeline import run_train

    checkpoint = resumable_checkpoint(tmp_path / "run" / "checkpoint-1", str(tmp_path / "gone"))
    config, _ = resume_config(checkpoint)
    with pytest.raises(InputError, match=f"start_model {tmp_path / 'gone'} does not exist; the KL penalty's "
                                         f"reference model"):
        run_train(config)
    config, _ = resume_config(checkpoint, {"steps": 1})
    with pytest.raises(InputError, match=r"^--steps 1: .* is at step 1 already; give --steps above 1"):
        run_train(config)


def test_rollout_workers_without_ray_are_refused_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    from wgrpo.engine import InputError
    from wgrpo.rl.train.config import TrainConfig
    from wgrpo.rl.train.pipeline import run_train

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(InputError, match=r"^--rollout-workers 2: Ray is not installed; pip install 'wgrpo\[ray\]'"):
        run_train(TrainConfig(output_dir=str(tmp_path / "run"), model=str(tmp_path / "missing"), rollout_workers=2))
    assert not (tmp_path / "run").exists()
