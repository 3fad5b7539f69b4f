"""`wgrpo bench --checkpoints --quick`: tiny shapes of Qwen2.5, Qwen3, Llama 3.2 and SmolLM2, random weights from
transformers, in float32 and bfloat16: every check passes, bfloat16 weights take half the bytes, and the run holds
under a forced small binding limit that splits the embedding. The full presets are checked against the releases'
parameter counts without building their weights; the row checks on hand-made rows; bad options are usage errors.

Needs the `oracle` extra (torch and transformers); skips cleanly without it.
"""

from __future__ import annotations

import json
import sys

import pytest

from wgrpo.engine import InputError
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import float_dtype
from wgrpo.engine.tensor import row_partition
from wgrpo.tools.bench import BenchConfig
from wgrpo.tools.bench_checkpoints import (NEW_TOKENS, PRESETS, QUICK, CheckpointBenchConfig, hf_config, oracle_modules,
                                           row_failures, run_checkpoint_bench)

# A forced binding limit below every quick embedding (at least 1024 x 48 x 2 bytes in bfloat16) and above every
# other tensor of the run (the largest: the prompt's logits, 16 x 1024 x 4 bytes).
SMALL_LIMIT = 80 * 1024

# parameter counts of the released checkpoints (tied embeddings counted once)
RELEASED_PARAMETERS = {"qwen2.5-0.5b": 494_032_768, "qwen3-0.6b": 596_049_920, "llama-3.2-1b": 1_235_814_400,
                       "smollm2-135m": 134_515_008}


def _run(tmp_path, capsys, **options):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    path = tmp_path / "checkpoints.json"
    code = run_checkpoint_bench(CheckpointBenchConfig(**options), BenchConfig(quick=True, json=str(path)))
    captured = capsys.readouterr()
    return code, json.loads(path.read_text()), captured


def _check_rows(report):
    rows = report["rows"]
    assert [(r["shape"], r["dtype"]) for r in rows] == [(s, d) for s in PRESETS for d in ("float32", "bfloat16")]
    for r in rows:
        where = f"{r['shape']} {r['dtype']}"
        assert r["ok"] and r["failures"] == [], where
        assert r["logits_error"] <= 1e-3 and r["round_trip_error"] <= 1e-3, where
        assert r["greedy"]["matching"] == NEW_TOKENS and r["greedy"]["ours"] == r["greedy"]["transformers"], where
        assert len(set(r["greedy"]["ours"])) > 2, where  # not a model echoing one token: the init std is large enough
        assert r["device_dtype"] == r["dtype"], where
        assert r["saved"]["config_dtype"] == r["saved"]["config_torch_dtype"] == r["dtype"], where
        assert r["saved"]["class"] == r["architecture"], where
        assert r["peak_bytes"] >= r["weights_bytes"] > 0 and r["load_s"] > 0, where
    by_shape = {}
    for r in rows:
        by_shape.setdefault(r["shape"], {})[r["dtype"]] = r
    for shape, pair in by_shape.items():
        f32, bf16 = pair["float32"], pair["bfloat16"]
        assert f32["parameters"] == bf16["parameters"] == ModelConfig.from_hf_dict(
            {"architectures": [QUICK[shape].hf_class], **QUICK[shape].fields}).num_parameters()
        assert 0.45 < bf16["weights_bytes"] / f32["weights_bytes"] < 0.55, shape


def test_quick_run_passes_every_check(device, tmp_path, capsys):
    code, report, captured = _run(tmp_path, capsys)
    assert code == 0, captured.err
    assert report["adapter"]["name"] == device.name and report["config"]["quick"] is True
    _check_rows(report)
    # the quick shapes keep the architecture's traits: Qwen3's head_dim over hidden / heads, llama3 RoPE scaling
    qwen3 = report["shapes"]["qwen3-0.6b"]
    assert qwen3["head_dim"] != qwen3["hidden_size"] // qwen3["num_attention_heads"]
    assert report["shapes"]["llama-3.2-1b"]["rope_scaling"]["rope_type"] == "llama3"
    table = captured.out.splitlines()
    assert any("logits err" in line and "greedy" in line for line in table)
    for shape in PRESETS:
        for dtype in ("float32", "bfloat16"):
            assert any(line.split()[:2] == [shape, dtype] and line.split()[-1] == "ok" for line in table)
    assert "FAIL" not in captured.out
    assert "[8/8] smollm2-135m bfloat16" in captured.err  # the progress line


def test_quick_run_with_the_embedding_split_into_row_blocks(device, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(device, "_binding_bytes", SMALL_LIMIT)
    code, report, captured = _run(tmp_path, capsys)
    assert code == 0, captured.err
    assert report["setup"]["max_binding_bytes"] == SMALL_LIMIT
    _check_rows(report)
    for r in report["rows"]:
        fields = QUICK[r["shape"]].fields
        blocks = row_partition((fields["vocab_size"], fields["hidden_size"]), float_dtype(r["dtype"]), SMALL_LIMIT)
        assert r["embedding_row_blocks"] == len(blocks) > 1, (r["shape"], r["dtype"])


def test_one_shape_one_dtype(device, tmp_path, capsys):
    code, report, captured = _run(tmp_path, capsys, shapes="qwen3-0.6b", dtypes="bfloat16")
    assert code == 0, captured.err
    assert [(r["shape"], r["dtype"]) for r in report["rows"]] == [("qwen3-0.6b", "bfloat16")]


def test_presets_have_the_released_parameter_counts():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for name, preset in PRESETS.items():
        config = hf_config(preset, transformers)
        ours = ModelConfig.from_hf_dict(config.to_dict())
        assert ours.architecture == preset.model_type and ours.tie_word_embeddings
        assert ours.num_parameters() == RELEASED_PARAMETERS[name], name
        with torch.device("meta"):  # shapes only: no memory for the weights
            model = transformers.AutoModelForCausalLM.from_config(config)
        assert type(model).__name__ == preset.hf_class
        assert sum(p.numel() for p in model.parameters()) == RELEASED_PARAMETERS[name], name
    assert ModelConfig.from_hf_dict(hf_config(PRESETS["llama-3.2-1b"], transformers).to_dict()).rope_factor == 32.0
    assert ModelConfig.from_hf_dict(hf_config(PRESETS["qwen3-0.6b"], transformers).to_dict()).head_dim == 128


def _passing_row(**changes):
    row = {"shape": "smollm2-135m", "dtype": "bfloat16", "parameters": 1000, "weights_bytes": 2048,
           "logits_error": 2e-6, "round_trip_error": 0.0,
           "greedy": {"ours": [1, 2, 3, 4, 5, 6, 7, 8], "transformers": [1, 2, 3, 4, 5, 6, 7, 8], "matching": 8,
                      "of": 8, "min_gap": 0.01},
           "saved": {"config_torch_dtype": "bfloat16", "config_dtype": "bfloat16", "tensors": ["BF16"]}}
    row.update(changes)
    return row


def test_row_checks():
    assert row_failures(_passing_row()) == []
    assert "logits differ by 0.002" in row_failures(_passing_row(logits_error=2e-3))[0]
    assert "saved-checkpoint logits" in row_failures(_passing_row(round_trip_error=float("nan")))[0]
    greedy = {"ours": [1, 2, 9, 9, 9, 9, 9, 9], "transformers": [1, 2, 3, 4, 5, 6, 7, 8], "matching": 2, "of": 8,
              "min_gap": 1e-7}
    assert "first 2 agree; smallest top-2 gap 1e-07" in row_failures(_passing_row(greedy=greedy))[0]
    saved = {"config_torch_dtype": "float32", "config_dtype": "float32", "tensors": ["BF16"]}
    assert "torch_dtype 'float32'" in row_failures(_passing_row(saved=saved))[0]
    assert "4000 device bytes" in row_failures(_passing_row(weights_bytes=4000))[0]  # held as float32
    assert row_failures({"error": "TypeError: boom"}) == ["TypeError: boom"]


@pytest.mark.parametrize("options, message", [
    ({"shapes": "qwen2.5-0.5b,gpt2"}, "--shapes: expected a comma-separated list of qwen2.5-0.5b, qwen3-0.6b"),
    ({"shapes": ""}, "--shapes: expected"),
    ({"dtypes": "float16"}, "--dtypes: expected a comma-separated list of float32, bfloat16, got 'float16'"),
])
def test_bad_options_are_input_errors(options, message):
    with pytest.raises(InputError, match=message) as info:
        CheckpointBenchConfig(**options)
    assert "\n" not in str(info.value)


def test_without_transformers_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    with pytest.raises(InputError, match=r"pip install 'wgrpo\[oracle\]'") as info:
        oracle_modules()
    assert "\n" not in str(info.value)
