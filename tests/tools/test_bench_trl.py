"""`wgrpo bench --grpo --trl --quick`: both sides run the same work and the JSON holds TRL's configuration, times
and the ratio; without trl, `--trl` stops before any work with one line naming the extra."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from wgrpo.tools import cli
from wgrpo.tools.bench_trl import TRL_HINT

TINY = ["--hidden-size", "32", "--num-layers", "2", "--num-heads", "4", "--num-kv-heads", "2",
        "--intermediate-size", "48"]
needs_trl = pytest.mark.skipif(importlib.util.find_spec("trl") is None,
                               reason="trl is not installed (the bench extra: pip install 'wgrpo[bench]')")


@needs_trl
def test_quick_run_against_trl(device, tmp_path, capsys):
    path = tmp_path / "grpo.json"
    code = cli.main(["bench", "--grpo", "--trl", "--quick", "--json", str(path), "--torch-threads", "1", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(path.read_text())
    setup, trl, comparison = report["setup"], report["trl"], report["comparison"]
    # the configuration TRL ran is wgrpo's
    config = trl["config"]
    assert (config["num_generations"], config["per_device_train_batch_size"], config["generation_batch_size"],
            config["gradient_accumulation_steps"], config["max_completion_length"]) == (4, 8, 8, 1, 8)
    assert config["beta"] == setup["beta"] == 0.04 and config["loss_type"] == setup["loss_type"] == "grpo"
    assert config["temperature"] == 1.0 and config["max_steps"] == 3 and config["shuffle_dataset"] is False
    assert config["bf16"] is False and config["use_cpu"] is True and trl["threads"] == 1
    assert trl["reference_model"] is True and trl["reward_funcs"] == ["format", "accuracy"]
    assert config["reward_weights"] == [0.1, 1.0]
    # equal work: the same completions, new tokens and prompt tokens in every timed step, all at full length
    assert len(trl["steps"]) == len(report["steps"]) == 2
    assert comparison["equal_work"] is True
    work = {"completions": 8, "new_tokens": 2 * 4 * 8, "prompt_tokens": report["steps"][0]["prompt_tokens"]}
    assert comparison["work_per_step"] == {"wgrpo": work, "trl": work}
    assert all(s["full_length_fraction"] == 1.0 for s in trl["steps"])
    # times and ratios
    for phase in ("rollout", "reward", "update", "total"):
        row = comparison["phases"][phase]
        assert row["wgrpo_s"] > 0 and row["trl_s"] > 0, phase
        assert row["ratio"] == pytest.approx(row["trl_s"] / row["wgrpo_s"])
    assert comparison["ratio"] == comparison["phases"]["total"]["ratio"]
    spread = comparison["step_spread"]
    assert 0 < spread["trl"]["best_s"] <= comparison["phases"]["total"]["trl_s"] <= spread["trl"]["worst_s"]
    assert comparison["best_ratio"] == pytest.approx(spread["trl"]["best_s"] / spread["wgrpo"]["best_s"])
    s = trl["summary"]
    assert s["total_s"] >= s["generate_and_score_s"] >= s["rollout_s"] + s["reward_s"]
    assert 0 < comparison["rollout_share"]["trl"] < 1
    out = captured.out
    assert "TRL / wgrpo" in out and "equal work: both sides ran 8 completions" in out
    assert "TRL GRPO step 2/2" in captured.err  # the progress line


def test_missing_trl_is_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` raises ImportError
    code = cli.main(["bench", "--grpo", "--trl", "--quick", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wgrpo bench: error: --trl"), err
    assert TRL_HINT in lines[0] and TRL_HINT == "pip install 'wgrpo[bench]'"
    assert "setup:" not in err  # nothing was built


def test_trl_without_grpo_is_refused(capsys):
    assert cli.main(["bench", "--trl"]) == 2
    err = capsys.readouterr().err
    assert err == "wgrpo bench: error: --trl times TRL's GRPOTrainer beside wgrpo's GRPO steps: add --grpo\n"
