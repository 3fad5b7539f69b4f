"""`wgrpo bench --profile`: the GRPO, model and generation benchmarks add a per-kernel GPU profile of one more call
to their JSON and print it; an adapter without GPU timers is refused before any work; the table's tail."""

from __future__ import annotations

import json

import pytest

from wgrpo.tools import cli
from wgrpo.tools.bench_profile import format_profile, require_timestamps
from tests.tools.test_bench_grpo import TINY


@pytest.fixture
def timed_device(device):
    if not device.has_timestamps:
        pytest.skip("adapter lacks timestamp queries")
    return device


def _check(profile: dict) -> None:
    assert profile["gpu_s"] > 0 and profile["dispatches"] == sum(row["calls"] for row in profile["kernels"])
    assert sum(row["share"] for row in profile["kernels"]) == pytest.approx(1.0)
    assert all("." in row["kernel"] for row in profile["kernels"])
    assert profile["shapes"] and all("shapes" in row for row in profile["shapes"])


def test_grpo_profile_covers_both_phases(timed_device, tmp_path, capsys):
    path = tmp_path / "grpo.json"
    code = cli.main(["bench", "--grpo", "--quick", "--profile", "--json", str(path), *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(path.read_text())
    assert set(report["profile"]) == {"rollout", "update"}
    for phase in ("rollout", "update"):
        _check(report["profile"][phase])
        assert f"{phase} (profiled step):" in captured.out
    kernels = {row["kernel"].split(".")[0] for row in report["profile"]["update"]["kernels"]}
    assert {"adamw", "norm_clip"} <= kernels  # the update's optimizer and clipping are in it
    # the profiled update runs the timed updates' dispatches
    assert report["profile"]["update"]["dispatches"] == report["phases"]["update"]["dispatches"]


def test_model_and_generate_profiles(timed_device, tmp_path, capsys):
    path = tmp_path / "model.json"
    code = cli.main(["bench", "--model", "--quick", "--profile", "--no-torch", "--batch-size", "1", "--seq-len",
                     "8", "--json", str(path), *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(path.read_text())
    _check(report["profile"])
    assert "forward + backward" in captured.out and "ms/call" in captured.out

    path = tmp_path / "generate.json"
    code = cli.main(["bench", "--generate", "--quick", "--profile", "--no-torch", "--json", str(path), *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(path.read_text())
    _check(report["profile"])
    assert any(row["shapes"] == "replayed" for row in report["profile"]["shapes"])


def test_no_timestamps_is_refused():
    class Adapter:
        name, has_timestamps = "a software adapter", False

    with pytest.raises(Exception, match="--profile .* a software adapter lacks the timestamp-query feature"):
        require_timestamps(Adapter())


def test_the_table_sums_up_the_kernels_it_leaves_out():
    kernels = [{"kernel": f"k.e{i}", "calls": 2, "seconds": 0.001 * (5 - i), "share": (5 - i) / 15}
               for i in range(5)]
    text = format_profile("update", {"gpu_s": 0.015, "dispatches": 10, "kernels": kernels}, top=3)
    lines = text.splitlines()
    assert lines[0] == "update: 10 dispatches, 15.0 ms of GPU time"
    assert [line.split()[0] for line in lines[3:6]] == ["k.e0", "k.e1", "k.e2"]
    assert lines[6].split()[:3] == ["(2", "more)", "4"] and lines[6].endswith("20.0%")


def test_profile_without_a_whole_step_benchmark_is_a_usage_error(capsys):
    assert cli.main(["bench", "--quick", "--profile"]) == 2
    assert "--profile times the kernels of a model step" in capsys.readouterr().err
