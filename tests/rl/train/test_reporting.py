"""wgrpo.rl.train.reporting: report_to checked before work starts, TensorBoard event files read back with
tensorboard's own reader (both writers), an offline wandb run read back from its files, the completions table."""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.train.reporting import (REPORT_TO_CHOICES, check_report_to, completion_rows, format_completions,
                                      open_reporters)


def missing(monkeypatch, *modules):
    """Make `modules` look uninstalled: find_spec answers None and import raises ImportError."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


# --- report_to ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("report_to, expected", [
    ("tensorboard,wandb", ["jsonl", "tensorboard", "wandb"]),
    ([" WandB", "tensorboard", "wandb"], ["jsonl", "wandb", "tensorboard"]),
    ("jsonl", ["jsonl"]),
    ("none", ["jsonl"]),
    ("", ["jsonl"]),
    ([], ["jsonl"]),
])
def test_report_to_is_normalised_with_jsonl_always_first(report_to, expected):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    assert check_report_to(report_to) == expected


def test_all_is_jsonl_and_every_installed_integration(monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    assert check_report_to("all") == ["jsonl", "tensorboard", "wandb"]
    missing(monkeypatch, "wandb")
    assert check_report_to("all") == ["jsonl", "tensorboard"]
    missing(monkeypatch, "tensorboard", "tensorboardX")
    assert check_report_to("all") == ["jsonl"]
    assert set(REPORT_TO_CHOICES) >= {"jsonl", "tensorboard", "wandb", "all", "none"}


@pytest.mark.parametrize("report_to, message", [
    ("mlflow", "report_to: mlflow is not supported; wgrpo reports to jsonl, tensorboard, wandb"),
    (["trackio"], "trackio is not supported"),
    ("tensorboard,comet_ml", "comet_ml is not supported"),
    ("tensorbord", "unknown name 'tensorbord' (did you mean tensorboard?)"),
    ("none,wandb", "'none' cannot be combined"),
    (3, "expected a comma-separated string or a list of names"),
])
def test_unknown_or_unsupported_names_are_one_line_errors(report_to, message):
    with pytest.raises(InputError) as error:
        check_report_to(report_to)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name, modules", [("tensorboard", ("tensorboard", "tensorboardX")), ("wandb", ("wandb",))])
def test_a_missing_package_names_its_extra(monkeypatch, tmp_path, name, modules):
    missing(monkeypatch, *modules)
    for call in (lambda: check_report_to(name), lambda: open_reporters(f"jsonl,{name}", tmp_path)):
        with pytest.raises(InputError, match=rf"pip install 'wgrpo\[{name}\]'"):
            call()
    assert not (tmp_path / "runs").exists()  # refused before anything is opened


# --- TensorBoard ------------------------------------------------------------------------------------------------

@pytest.fixture(params=["tensorboard", "tensorboardX"])
def writer(request, monkeypatch):
    """Each of the reporter's writers: tensorboard's own event writer, and tensorboardX's when installed."""
    pytest.importorskip("tensorboard")  # the reader
    if request.param == "tensorboardX":
        pytest.importorskip("tensorboardX")
    else:
        missing(monkeypatch, "tensorboardX")
    return request.param


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_finite_scalars_in_output_dir_runs(tmp_path, writer):
    (reporter,) = open_reporters("tensorboard", tmp_path, run_name="r", config={"lr": 1e-4})
    for step in (1, 2, 3):
        reporter.log({"step": step, "loss": 1.0 / step, "reward/mean": np.float32(step / 4), "tokens": 10 * step,
                      "kl": math.nan if step == 2 else 0.5, "task": "arithmetic", "grad": math.inf,
                      "eval_reward": 0.5}, step)
    reporter.log_completions([{"step": 3, "prompt": "p", "completion": "c"}], 3)  # no scalars: nothing
    reporter.close()
    scalars = read_scalars(tmp_path / "runs")
    # not "step", text or non-finite values; transformers' chart names (train/x, and eval_x as eval/x)
    assert set(scalars) == {"train/loss", "train/reward/mean", "train/tokens", "train/kl", "eval/reward"}
    assert scalars["train/loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert scalars["train/reward/mean"] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert scalars["train/tokens"] == [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert scalars["train/kl"] == [(1, 0.5), (3, 0.5)]
    assert scalars["eval/reward"] == [(1, 0.5), (2, 0.5), (3, 0.5)]


def test_tensorboard_honours_logging_dir(tmp_path, writer):
    (reporter,) = open_reporters(["tensorboard"], tmp_path / "out", logging_dir=tmp_path / "tb")
    reporter.log({"loss": 2.0}, 7)
    reporter.close()
    assert read_scalars(tmp_path / "tb") == {"train/loss": [(7, 2.0)]}
    assert not (tmp_path / "out" / "runs").exists()


def _next_second():
    """Event files are named by the second they are opened in: a later run's file must sort after."""
    time.sleep(1.02 - time.time() % 1)


def _run(tmp_path, steps, value, resume_step=None):
    (reporter,) = open_reporters("tensorboard", tmp_path, resume_step=resume_step)
    for step in steps:
        reporter.log({"loss": value + step}, step)
    reporter.close()


def test_a_resumed_run_replaces_the_steps_after_its_checkpoint_and_a_fresh_run_all(tmp_path, writer):
    _run(tmp_path, range(0, 6), 100.0)  # killed after step 5; its last checkpoint was step 3
    _next_second()
    _run(tmp_path, range(4, 7), 200.0, resume_step=3)
    assert read_scalars(tmp_path / "runs")["train/loss"] == [(0, 100.0), (1, 101.0), (2, 102.0), (3, 103.0),
                                                             (4, 204.0), (5, 205.0), (6, 206.0)]
    _next_second()
    _run(tmp_path, range(0, 2), 300.0)  # started afresh in the same directory, as metrics.jsonl is
    assert read_scalars(tmp_path / "runs")["train/loss"] == [(0, 300.0), (1, 301.0)]


# --- wandb ------------------------------------------------------------------------------------------------------

def _wandb_records(path: Path):
    """The records of wandb's transaction log (run-ID.wandb): a 7-byte header, then leveldb-log chunks in
    32 KiB blocks (4-byte checksum, 2-byte length, 1-byte kind: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        pytest.skip(f"{path.name}: not the transaction log format this test reads")
    position, pieces, block = 7, b"", 32768
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            yield record


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                        "WANDB_DIR": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
                        "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data"),
                        "WANDB_PROJECT": "grpo-test"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_wandb_offline_run_holds_the_metrics_config_and_completions(tmp_path, offline_wandb):
    out = tmp_path / "out"
    (reporter,) = open_reporters("wandb", out, run_name="countdown-1", config={"lr": 1e-4, "beta": 0.04})
    rows = completion_rows(2, ["1+1="], ["2", "3"], {"accuracy": [1.0, 0.0]}, [0.7, -0.7])
    try:
        reporter.log({"step": 1, "loss": 0.5, "reward/mean": 0.25}, 1)
        reporter.log({"step": 2, "loss": 0.25, "reward/mean": 0.75}, 2)
        reporter.log_completions(rows, 2)
    finally:
        reporter.close()
    # finish() returns before wandb's service has closed the run's log, which it writes out whole only then
    import wandb
    wandb.teardown()
    (run_dir,) = (out / "wandb").glob("offline-run-*")  # dir=output_dir
    # wandb-summary.json is written when a run is synced, not offline: the run's own log holds what was logged
    (log,) = run_dir.glob("run-*.wandb")
    history, run, kinds = {}, None, []
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        kinds.append(kind)
        if kind == "history":
            items = {}
            for item in record.history.item:  # a table is flattened into nested keys
                *parents, key = item.nested_key or [item.key]
                place = items
                for parent in parents:
                    place = place.setdefault(parent, {})
                place[key] = json.loads(item.value_json)
            history[items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif kind == "run":
            run = record.run
    assert "exit" in kinds, f"{log.name} ({log.stat().st_size} bytes) ends before the run's exit: {kinds}"
    assert history[1] == {"train/loss": 0.5, "train/reward/mean": 0.25}  # "step" is wandb's x axis, not a metric
    assert {k: v for k, v in history[2].items() if k != "completions"} == {"train/loss": 0.25, "train/reward/mean": 0.75}
    assert history[2]["completions"]["_type"] == "table-file"
    assert (run.project, run.display_name) == ("grpo-test", "countdown-1")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert {k: config[k] for k in ("lr", "beta")} == {"lr": 1e-4, "beta": 0.04}
    table = json.loads((run_dir / "files" / history[2]["completions"]["path"]).read_text())
    assert table["columns"] == ["step", "prompt", "completion", "reward", "advantage", "rewards/accuracy"]
    assert table["data"] == [[2, "1+1=", "2", 1.0, 0.7, 1.0], [2, "1+1=", "3", 0.0, -0.7, 0.0]]


# --- the completions table --------------------------------------------------------------------------------------

def test_completion_rows_repeat_a_groups_prompt_and_sum_the_parts():
    rows = completion_rows(5, ["a", "b"], ["a1", "a2", "b1", "b2"],
                           {"accuracy": [1, 0, 0, 1], "format": np.array([0.1, 0.1, 0.0, None], object)},
                           np.array([0.5, -0.5, -1.0, 1.0]))
    assert [(r["prompt"], r["completion"]) for r in rows] == [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")]
    assert list(rows[0]) == ["step", "prompt", "completion", "reward", "advantage", "rewards/accuracy",
                             "rewards/format"]
    assert [r["reward"] for r in rows] == [pytest.approx(1.1), 0.1, 0.0, 1.0]  # a missing part counts as none
    assert rows[3]["rewards/format"] is None and rows[2]["advantage"] == -1.0
    assert all(r["step"] == 5 for r in rows)
    json.dumps(rows)  # numpy values come out as plain numbers


def test_completion_rows_take_the_weighted_total_and_check_lengths():
    rows = completion_rows(1, ["a", "a"], ["x", "y"], {"accuracy": [1.0, 0.0]}, [1.0, -1.0], reward=[0.8, 0.0])
    assert [r["reward"] for r in rows] == [0.8, 0.0]
    with pytest.raises(ValueError, match="advantages has 1 values for 2 completions"):
        completion_rows(1, ["a"], ["x", "y"], {}, [1.0])
    with pytest.raises(ValueError, match=r"rewards\['format'\] has 3 values"):
        completion_rows(1, ["a"], ["x", "y"], {"format": [1, 1, 1]}, [1.0, -1.0])
    with pytest.raises(ValueError, match="3 prompts for 4 completions"):
        completion_rows(1, ["a", "b", "c"], ["w", "x", "y", "z"], {}, [0.0] * 4)


def test_format_completions_is_a_readable_table_of_tails():
    prompt = "Solve step by step.\nWhat is 123 + 456?"
    rows = completion_rows(3, [prompt], ["The answer is 579.", "5" * 60, "x"], {"accuracy": [1.0, 0.0, None]},
                           [2 / 3, -1 / 3, -1 / 3])
    text = format_completions(rows, limit=2, width=20)
    lines = text.splitlines()
    assert lines[0].split() == ["step", "prompt", "completion", "reward", "advantage", "rewards/accuracy"]
    assert len(lines) == 4 and lines[-1] == "… 1 more rows"
    assert "…What is 123 + 456?" in lines[1] and "step." not in lines[1]  # the prompt's tail, on one line
    assert "The answer is 579." in lines[1] and "…" + "5" * 19 in lines[2] and "5" * 21 not in lines[2]
    assert lines[1].split()[-3:] == ["1.000", "0.667", "1.000"]
    assert lines[2].split()[-3:] == ["0.000", "-0.333", "0.000"]
    assert len({len(line) for line in lines[:3]}) == 1  # columns line up
    everything = format_completions(rows, None, width=20).splitlines()
    assert len(everything) == 4 and everything[-1].split()[-3:] == ["-", "-0.333", "-"]
    assert format_completions([], 5) == "(no completions)"
