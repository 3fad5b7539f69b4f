"""`wgrpo bench --grpo --quick` on a tiny model: well-formed JSON with rollout, reward and update, positive times,
fixed-length completions; the FLOP formula by hand; bad options are usage errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from wgrpo.tools import cli
from wgrpo.tools.bench_grpo import GRPOBenchConfig, forward_flops, update_flops

TINY = ["--hidden-size", "32", "--num-layers", "2", "--num-heads", "4", "--num-kv-heads", "2",
        "--intermediate-size", "48"]


def test_quick_run_through_the_cli(device, tmp_path, capsys):
    path = tmp_path / "grpo.json"
    code = cli.main(["bench", "--grpo", "--quick", "--json", str(path), *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(path.read_text())
    assert report["adapter"]["name"] == device.name
    assert report["model"]["hidden_size"] == 32 and report["model"]["num_layers"] == 2
    setup = report["setup"]
    assert (setup["prompts"], setup["group_size"], setup["new_tokens"]) == (2, 4, 8)
    assert setup["reference_model"] is True and setup["full_length"] is True
    assert "</answer>" in setup["banned_texts"] and "<|endoftext|>" in setup["banned_texts"]
    assert set(report["phases"]) == {"rollout", "reward", "update"}
    for phase, entry in report["phases"].items():
        assert entry["seconds"] > 0, phase
        assert 0 <= entry["time_share"] <= 1
    rollout, update = report["phases"]["rollout"], report["phases"]["update"]
    assert rollout["tokens"] == 2 * 4 * 8  # every completion ran the full length
    assert all(s["full_length_fraction"] == 1.0 for s in report["steps"]) and len(report["steps"]) == 2
    assert rollout["flops"] > 0 and update["flops"] > 0 and report["phases"]["reward"]["flops"] == 0
    assert rollout["flop_share"] + update["flop_share"] == pytest.approx(1.0)
    for entry in (rollout, update):
        assert entry["gflops_per_s"] > 0 and entry["tokens_per_s"] > 0 and entry["submits"] >= 1
        assert entry["dispatches"] > 0
    # once the pool's free lists settle (a step or two) it hands each step the same buffers: bind groups are hits
    assert report["steps"][-1]["update_counters"]["bind_groups_created"] == 0
    total = report["total"]
    assert total["seconds"] >= rollout["seconds"] + update["seconds"]
    assert report["verdict"]["rollout_flop_share"] == pytest.approx(rollout["flop_share"])
    assert "rollout" in captured.out and "update" in captured.out and "verdict: rollout takes" in captured.out
    assert "GRPO step 2/2" in captured.err  # the progress line


def test_forward_flops_by_hand():
    config = SimpleNamespace(hidden_size=8, num_heads=2, num_kv_heads=1, head_dim=4, intermediate_size=16,
                             num_layers=3, vocab_size=10)
    body = 3 * (8 * 8 + 2 * 8 * 4 + 8 * 8 + 3 * 8 * 16)  # q, k and v, o, gate/up/down
    positions, attended = 5, 15  # one causal sequence of 5: 1 + 2 + ... + 5 pairs
    expected = 2 * body * 5 + 2 * 10 * 8 * 5 + 3 * 4 * 8 * 15
    assert forward_flops(config, positions, attended) == expected
    assert forward_flops(config, 5, 15, head_rows=1) == expected - 2 * 10 * 8 * 4


def test_update_flops_count_the_head_on_completion_tokens_only():
    config = SimpleNamespace(hidden_size=8, num_heads=2, num_kv_heads=1, head_dim=4, intermediate_size=16,
                             num_layers=3, vocab_size=10)
    completions = [SimpleNamespace(prompt_ids=[1, 2, 3], token_ids=[4, 5]),
                   SimpleNamespace(prompt_ids=[1], token_ids=[6, 7, 8])]
    rollout = SimpleNamespace(completions=completions)  # rows of 4 positions (prompt + completion - 1, padded)
    forward = forward_flops(config, 2 * 4, 2 * 10, head_rows=5)  # the head on the 5 completion tokens
    assert update_flops(config, rollout, reference=True) == 4 * forward
    assert update_flops(config, rollout, reference=False, mu=2) == 6 * forward


@pytest.mark.parametrize("args, message", [
    (["--grpo-prompts", "0"], "--grpo-prompts must be at least 1"),
    (["--grpo-beta", "-1"], "--grpo-beta must be at least 0"),
    (["--rollout-workers", "-1"], "--rollout-workers must be at least 0"),
    (["--async-rollouts", "1"], "--async-rollouts 1: must be 0 or 1, and 1 needs --rollout-workers 1 or more"),
])
def test_bad_options_are_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--grpo", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_grpo_options(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--grpo," in text
    for f in fields(GRPOBenchConfig):
        assert "--" + f.name.replace("_", "-") in text
