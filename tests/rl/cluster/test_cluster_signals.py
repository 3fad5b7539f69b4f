"""`wgrpo train --rollout-workers 1` in a subprocess with a Ray of its own, stopped by Ctrl-C's SIGINT to its
whole process group (which Ray's own processes ignore) or by SIGTERM to the driver: the learner and the worker
outlive the signal, the step in progress finishes, checkpoint-N is saved and the resume command printed; the
resumed run ends as one process's does."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from wgrpo.rl.train.metrics_log import read_rows
from tests.rl.train.test_signals import BOOT, HANG_GUARD_S, TASK, logged_step, resume_line, wait_for
from tests.tiny_checkpoint import save_tiny_checkpoint

STEPS = 6
TRAIN = ["--steps", str(STEPS), "--prompts-per-step", "3", "--group-size", "4", "--max-new-tokens", "6",
         "--eval-every", "0", "--eval-problems", "3", "--lr", "1e-2", "--warmup-lr-steps", "0", "--seed", "2"]


@pytest.mark.parametrize("signum, to_group, exit_code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
                         ids=["ctrl-c to the group", "sigterm to the driver"])
def test_a_signal_saves_a_checkpoint_that_resumes(local_ray, device, tmp_path, signum, to_group, exit_code):
    import sys

    model = save_tiny_checkpoint(tmp_path / "tiny", device)
    out = tmp_path / "run"
    argv = [sys.executable, "-c", BOOT, "train", "--model", str(model), *TASK, *TRAIN, "--output-dir", str(out),
            "--rollout-workers", "1"]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    try:
        wait_for(process, logged_step(out, 2), "step 2")
        (os.killpg if to_group else os.kill)(process.pid, signum)
        code = process.wait(timeout=HANG_GUARD_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert code == exit_code, output
    command = resume_line(output)
    checkpoint = command.split("--resume ")[1].strip()
    stopped_at = int(checkpoint.rpartition("-")[2])
    assert 2 <= stopped_at < STEPS and (out / f"checkpoint-{stopped_at}" / "model.safetensors").is_file()

    from wgrpo.tools.cli import main

    with pytest.MonkeyPatch.context() as patch:  # the test's own Ray serves the resumed run
        patch.setattr("wgrpo.rl.train.trainer.GRPOLoop._plot", lambda self: None)
        assert main(["train", "--resume", checkpoint]) == 0
        assert main(["train", "--model", str(model), *TASK, *TRAIN, "--output-dir", str(tmp_path / "one")]) == 0
    measured = ("time/", "memory/", "weight_sync/")
    rows, reference = (
        [{k: v for k, v in row.items() if not k.startswith(measured) and not k.endswith("_per_s")}
         for row in read_rows(path / "metrics.jsonl")] for path in (out, tmp_path / "one"))
    assert [r["step"] for r in rows] == list(range(STEPS + 1))
    assert rows == reference
