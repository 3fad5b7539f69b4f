"""`wgrpo train --rollout-workers 2` at the command line, on a real local Ray: the run of one process."""

from __future__ import annotations

import numpy as np

from wgrpo.rl.train.metrics_log import read_rows
from wgrpo.tools.cli import main
from tests.tiny_checkpoint import save_tiny_checkpoint
from tests.tools.test_train_cli import TASK_OPTIONS, exit_code


def test_train_with_rollout_workers_gives_the_single_process_run(local_ray, device, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    from wgrpo.rl.train.trainer import GRPOLoop

    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    model = save_tiny_checkpoint(tmp_path / "tiny", device)
    common = ["train", "--model", str(model), "--task-options", TASK_OPTIONS, "--steps", "2",
              "--prompts-per-step", "3", "--group-size", "4", "--max-new-tokens", "6", "--eval-problems", "3",
              "--lr", "1e-2", "--warmup-lr-steps", "0", "--seed", "5"]
    assert main([*common, "--output-dir", str(tmp_path / "one")]) == 0
    assert main([*common, "--output-dir", str(tmp_path / "two"), "--rollout-workers", "2"]) == 0

    def computed(run):
        return [{k: v for k, v in row.items() if not k.startswith(("time/", "memory/", "weight_sync/"))
                 and not k.endswith("_per_s")} for row in read_rows(tmp_path / run / "metrics.jsonl")]

    assert computed("one") == computed("two") and len(computed("one")) == 3
    one, two = (load_file(str(tmp_path / run / "final" / "model.safetensors")) for run in ("one", "two"))
    assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)


def test_async_rollouts_without_workers_is_a_usage_error(tmp_path, capsys):
    assert exit_code(["train", "--async-rollouts", "1", "--output-dir", str(tmp_path / "run")]) == 2
    assert "--async-rollouts 1: needs --rollout-workers 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
