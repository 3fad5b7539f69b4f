"""`wgrpo train` and `wgrpo sft` in a subprocess, stopped by real signals: SIGINT and SIGTERM save a checkpoint,
print the command that resumes it and exit 130 / 143; SIGKILL at a random point loses nothing the last
checkpoint holds. Each resumed run must end with the uninterrupted run's metrics."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wgrpo.rl.train.checkpoint import load_training_state
from wgrpo.rl.train.metrics_log import read_rows
from tests.tiny_checkpoint import save_tiny_checkpoint

# The child restores Python's own SIGINT handler: a test runner started in the background of a script has
# SIGINT ignored, and a process that inherits an ignored signal keeps ignoring it (as the trainer does too).
BOOT = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from wgrpo.tools.cli import main; sys.exit(main(sys.argv[1:]))")
WGRPO = [sys.executable, "-c", BOOT]
STEPS = 8
TASK = ["--task", "arithmetic", "--task-options", "digits=1,ops=+,template=plain,instructions=false"]
TRAIN = ["--steps", str(STEPS), "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "6",
         "--eval-every", "0", "--eval-problems", "4", "--lr", "5e-3", "--warmup-lr-steps", "0", "--seed", "0"]
HANG_GUARD_S = 600  # only against a hung child; no assertion depends on time


@pytest.fixture(scope="module")
def tiny_model(device, tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny", device)


def start(argv, log_path) -> subprocess.Popen:
    log = open(log_path, "w")
    process = subprocess.Popen(WGRPO + argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return process


def finish(process, log_path) -> tuple[int, str]:
    code = process.wait(timeout=HANG_GUARD_S)
    return code, log_path.read_text()


def wait_for(process, ready, what: str) -> None:
    """Poll until `ready()`; the child must still be running then."""
    while not ready():
        assert process.poll() is None, f"the run ended before {what}"
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before {what}"


def logged_step(out, step: int):
    def ready() -> bool:
        try:
            return any(r["step"] >= step and "loss" in r for r in read_rows(out / "metrics.jsonl"))
        except (OSError, ValueError):  # being written
            return False
    return ready


def resume_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("wgrpo: resume with: ")]
    assert len(lines) == 1, output
    return lines[0].removeprefix("wgrpo: resume with: ")


def run_to_end(argv, log_path) -> str:
    code, output = finish(start(argv, log_path), log_path)
    assert code == 0, output
    return output


def assert_same_run(rows, reference):
    assert [r["step"] for r in rows] == [r["step"] for r in reference] == list(range(STEPS + 1))
    for got, want in zip(rows[1:], reference[1:]):
        assert got["reward"] == want["reward"], got["step"]
        assert got["completions/mean_length"] == want["completions/mean_length"], got["step"]
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5, atol=1e-7)
    assert rows[-1]["eval_pass@1"] == reference[-1]["eval_pass@1"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    run_to_end(["train", "--model", str(tiny_model), *TASK, *TRAIN, "--output-dir", str(out)], out / "log.txt")
    return read_rows(out / "metrics.jsonl")


def stop_with(signum, argv, out, after_step: int, log_path) -> tuple[str, int]:
    """Run `wgrpo argv`, send `signum` once step `after_step` is logged; (the printed resume command, the step
    it resumes from), after checking the exit code, the checkpoint and the log it leaves."""
    process = start(argv, log_path)
    wait_for(process, logged_step(out, after_step), f"step {after_step}")
    process.send_signal(signum)
    exit_code, output = finish(process, log_path)
    assert exit_code == 128 + signum, output
    command = resume_line(output)
    words = shlex.split(command)
    assert words[:3] == ["wgrpo", "train", "--resume"] and len(words) == 4, command
    assert words[3].startswith(str(out / "checkpoint-")), command
    stopped_at = int(words[3].rsplit("-", 1)[1])
    assert after_step <= stopped_at < STEPS
    assert load_training_state(words[3])[0]["step"] == stopped_at
    assert [r["step"] for r in read_rows(out / "metrics.jsonl")] == list(range(stopped_at + 1))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp directory left
    return command, stopped_at


def test_sigint_and_sigterm_save_checkpoints_that_resume_exactly(tiny_model, uninterrupted, tmp_path):
    out = tmp_path / "run"
    command, stopped_at = stop_with(signal.SIGINT, ["train", "--model", str(tiny_model), *TASK, *TRAIN,
                                                    "--output-dir", str(out)], out, 1, tmp_path / "first.txt")
    # the resumed run, stopped again: its resume command is as exact
    command, _ = stop_with(signal.SIGTERM, shlex.split(command)[1:], out, stopped_at + 1, tmp_path / "second.txt")
    run_to_end(shlex.split(command)[1:], tmp_path / "last.txt")
    assert_same_run(read_rows(out / "metrics.jsonl"), uninterrupted)


def test_a_kill_at_a_random_point_loses_nothing_the_checkpoints_hold(tiny_model, uninterrupted, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_model), *TASK, *TRAIN, "--save-every", "2", "--output-dir", str(out)]
    process = start(argv, tmp_path / "first.txt")
    wait_for(process, logged_step(out, 2), "step 2")
    time.sleep(float(np.random.default_rng(0).uniform(0, 0.5)))  # into checkpoint-2's save, or a later step
    process.kill()
    finish(process, tmp_path / "first.txt")
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    # from the latest checkpoint; or, when the kill cut the first save short, the same command again
    run_to_end(["train", "--resume", str(checkpoints[-1])] if checkpoints else argv, tmp_path / "resumed.txt")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # leftovers of the kill are gone
    assert_same_run(read_rows(out / "metrics.jsonl"), uninterrupted)


def test_sft_stopped_by_sigint_prints_a_resume_command_that_finishes_the_run(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "add.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "completion": str(a + b)}) + "\n"
                            for a, b in rng.integers(0, 50, size=(64, 2))))
    model = ["--vocab-size", "300", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
             "--num-kv-heads", "1", "--intermediate-size", "48", "--max-length", "16", "--batch-size", "8"]
    argv = ["sft", "--data", str(data), "--steps", "60", *model, "--output-dir"]
    straight = tmp_path / "straight"
    out = tmp_path / "run"
    process = start(argv + [str(out)], tmp_path / "first.txt")
    wait_for(process, logged_step(out, 1), "its first step")
    process.send_signal(signal.SIGINT)
    code, output = finish(process, tmp_path / "first.txt")
    assert code == 130, output
    words = shlex.split(resume_line(output))
    assert words[:4] == ["wgrpo", "sft", "--resume", words[3]] and words[3].startswith(str(out / "checkpoint-"))
    stopped_at = int(words[3].rsplit("-", 1)[1])
    assert stopped_at < 60 and load_training_state(words[3])[0]["step"] == stopped_at
    assert "--data" in words and "--output-dir" in words and "--steps" in words
    run_to_end(words[1:], tmp_path / "resumed.txt")
    run_to_end(argv + [str(straight)], tmp_path / "straight.txt")
    rows, reference = read_rows(out / "metrics.jsonl"), read_rows(straight / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in reference] == list(range(1, 61))
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in reference], rtol=1e-5)


def test_train_stopped_in_its_warm_up_continues_it_when_run_again(tmp_path):
    out = tmp_path / "run"
    warm_up = ["--sft-steps", "150", "--sft-examples", "64", "--vocab-size", "300", "--hidden-size", "32",
               "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1", "--intermediate-size", "48"]
    argv = ["train", "--output-dir", str(out), *TASK, *warm_up, *TRAIN[2:], "--steps", "1"]
    process = start(argv, tmp_path / "stopped.log")
    warm_up_metrics = out / "warmup" / "metrics.jsonl"
    wait_for(process, lambda: warm_up_metrics.is_file() and len(read_rows(warm_up_metrics)) >= 2, "warm-up step 2")
    process.send_signal(signal.SIGINT)
    code, output = finish(process, tmp_path / "stopped.log")
    assert code == 130, output
    assert "resume with: the same `wgrpo train` command" in output
    stopped_at = max(r["step"] for r in read_rows(warm_up_metrics))
    assert stopped_at < 150

    again = run_to_end(argv, tmp_path / "again.log")
    assert f"continuing from {out / 'warmup' / f'checkpoint-{stopped_at}'}" in again
    assert [r["step"] for r in read_rows(warm_up_metrics)] == list(range(1, 151))  # none repeated or lost

    third = run_to_end(argv, tmp_path / "third.log")
    assert f"{out / 'warmup' / 'final'} has these settings already" in third
    changed = run_to_end([*argv, "--sft-lr", "1e-3"], tmp_path / "changed.log")  # other settings: warm up anew
    assert "has these settings already" not in changed and "continuing from" not in changed
