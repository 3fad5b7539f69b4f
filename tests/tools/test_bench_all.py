"""scripts/bench_all.sh: valid bash that runs every benchmark it promises, each with its JSON in the directory
given, at SmolLM2-135M's shape, going on past a failure and exiting 1 at the end. The runs go through a stand-in
interpreter that records its arguments (the real benchmarks take long on a CPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_all.sh"
SMOL = ("--architecture llama --vocab-size 49152 --hidden-size 576 --num-layers 30 --num-heads 9 --num-kv-heads 3 "
        "--intermediate-size 1536 --tie-word-embeddings --batch-size 1 --seq-len 128")
CLI = "-m wgrpo.tools.cli"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path, fail_on: str = "", **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the script with PYTHON a stand-in that logs each call and exits 3 when its arguments hold `fail_on`."""
    log = tmp_path / "calls.log"
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\necho "table of: $*"\n'
                      f'case "$*" in *"{fail_on or "@never@"}"*) exit 3;; esac\n')
    python.chmod(0o755)
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": str(python), "CALLS": str(log), **env}, timeout=60)
    return result, log.read_text().splitlines()


def test_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(SCRIPT, os.X_OK)


def test_runs_every_benchmark_with_its_json(tmp_path):
    result, calls = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert out.is_dir() and (out / "devices.json").read_text().startswith("table of:")
    assert calls == [
        f"{CLI} devices",
        f"{CLI} devices --json",
        f"{CLI} bench --json {out}/kernels.json",
        f"{CLI} bench --autotune {SMOL} --json {out}/autotune.json",
        f"{CLI} bench --model {SMOL} --torch-device auto --json {out}/model.json",
        f"{CLI} bench --generate {SMOL} --gen-batch-sizes 8 --gen-tokens 256 --torch-device auto "
        f"--json {out}/generate.json",
        f"{CLI} bench --grpo --trl --torch-device auto --json {out}/grpo-trl.json",
    ]
    assert "table of: -m wgrpo.tools.cli bench --model" in result.stdout  # each table printed as it goes
    assert "every benchmark ran" in result.stdout


def test_goes_on_past_a_failure_and_exits_1(tmp_path):
    result, calls = _run(tmp_path, fail_on="--autotune")
    assert result.returncode == 1
    assert len(calls) == 7 and calls[-1].startswith(f"{CLI} bench --grpo --trl")  # the rest still ran
    assert result.stderr.strip() == f"bench_all: failed: autotune (reports in {tmp_path / 'out'})"


def test_quick_and_torch_device_overrides(tmp_path):
    result, calls = _run(tmp_path, BENCH_QUICK="1", TORCH_DEVICE="cuda:1")
    assert result.returncode == 0, result.stderr
    benches = [c for c in calls if " bench" in c]
    assert len(benches) == 5 and all("--quick" in c for c in benches)
    assert all("49152" not in c for c in benches)  # tiny shapes
    assert all("--torch-device cuda:1" in c for c in benches if "--model" in c or "--generate" in c or "--trl" in c)
