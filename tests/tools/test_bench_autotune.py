"""`wgrpo bench --autotune`: every shape class of a model's step tuned, printed, and kept in the cache file."""

from __future__ import annotations

import json

from wgrpo.tools import cli
from wgrpo.tools.bench_autotune import model_problems


def test_quick_autotune_tunes_prints_and_caches(tmp_path, capsys, device):
    report_path = tmp_path / "tune.json"
    assert cli.main(["bench", "--autotune", "--quick", "--vocab-size", "64", "--hidden-size", "32",
                     "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1", "--intermediate-size", "48",
                     "--batch-size", "2", "--seq-len", "8", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    ops = [row["op"] for row in report["tuned"]]
    assert "matmul" in ops and ops[-1] == "attention"
    cached = json.loads(open(report["cache"]).read())["adapters"][report["key"]]
    for row in report["tuned"]:
        assert row["seconds"][row["winner"]] == min(s for s in row["seconds"].values() if s is not None)
        assert cached[row["op"]][row["class"]] == row["winner"]
        assert f"{row['class']:<34} {row['winner']}" in out


def test_a_model_poses_forward_both_gradients_and_decode_for_every_linear():
    from wgrpo.engine import ModelConfig

    cfg = ModelConfig(vocab_size=100, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=96)
    problems = dict(model_problems(cfg, batch=8, seq=16))
    assert problems["qkv forward"] == dict(m=128, n=128, k=64, transpose_b=True)
    assert problems["down weight gradient"] == dict(m=64, n=96, k=128, transpose_a=True)
    assert problems["lm_head decode, bf16 weights"] == dict(m=8, n=100, k=64, transpose_b=True, weights="bf16")
    assert len(problems) == 5 * 5
