"""The closing table of `wgrpo train`, for a whole run and for a resumed one."""

from __future__ import annotations

import json
from types import SimpleNamespace

from wgrpo.rl.train.pipeline import report


def trainer_in(path):
    return SimpleNamespace(config=SimpleNamespace(output_dir=str(path), eval_problems=200),
                           task=SimpleNamespace(name="arithmetic"))


def test_whole_run_shows_base_gain_and_curves(tmp_path, capsys):
    history = [{"step": 0, "eval/accuracy": 0.355, "eval/format": 1.0},
               {"step": 50, "eval/accuracy": 1.0, "eval/format": 1.0}]
    report(history, trainer_in(tmp_path))
    out = capsys.readouterr().out
    assert "base (step 0)          35.5%    100.0%" in out and "GRPO (step 50)        100.0%" in out
    assert "accuracy change: +64.5 points" in out


def test_resumed_run_takes_the_base_from_its_metrics(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval/accuracy": 0.25, "eval/format": 0.5}) + "\n"
                                            + json.dumps({"step": 1, "reward/mean": 0.1}) + "\n")
    report([{"step": 9, "eval/accuracy": 0.75, "eval/format": 1.0}], trainer_in(tmp_path))
    out = capsys.readouterr().out
    assert "base (step 0)          25.0%     50.0%" in out and "accuracy change: +50.0 points" in out


def test_resumed_elsewhere_shows_the_final_row_only(tmp_path, capsys):
    report([{"step": 9, "eval/accuracy": 0.75, "eval/format": 1.0}], trainer_in(tmp_path))
    out = capsys.readouterr().out
    assert "GRPO (step 9)" in out and "base" not in out and "accuracy change" not in out
