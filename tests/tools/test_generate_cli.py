"""`wgrpo generate` and `wgrpo bench --generate` on a tiny checkpoint / random model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wgrpo.tools.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, device):
    from wgrpo.engine import Model, ModelConfig
    from wgrpo.engine.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["count: 1 2 3 4 5 6 7 8 9 and <answer>10</answer>"] * 30, vocab_size=280)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=64, eos_token_id=0)
    rng = np.random.default_rng(0)
    state = {name: (t.numpy() + 0.2 * rng.standard_normal(t.shape)).astype(np.float32)  # far from init: varied text
             for name, t in Model.random(config, seed=1, device=device).params.items()}
    model = Model.from_numpy(config, state, device)
    path = tmp_path_factory.mktemp("gen") / "tiny"
    model.save_pretrained(path, tokenizer=tokenizer)
    return path, model, tokenizer


def test_generate_streams_the_same_text_as_the_api(checkpoint, capsys):
    from wgrpo.engine.generate import generate

    path, model, tokenizer = checkpoint
    assert main(["generate", "--model", str(path), "--prompt", "count: 1 2", "--max-new-tokens", "12",
                 "--seed", "3", "--steps-per-submit", "4"]) == 0
    out, err = capsys.readouterr()
    expected = generate(model, ["count: 1 2"], max_new_tokens=12, seed=3, tokenizer=tokenizer).sequences[0].text
    assert out == expected + "\n"
    assert "tokens/s" in err


def test_generate_n_samples(checkpoint, capsys):
    path, _, _ = checkpoint
    assert main(["generate", "--model", str(path), "--prompt", "count:", "-n", "3", "--max-new-tokens", "6",
                 "--temperature", "0.8", "--top-k", "20", "--stop", "</answer>"]) == 0
    out, _ = capsys.readouterr()
    assert [line.startswith(f"--- sample {i} (") for i, line in
            enumerate(l for l in out.splitlines() if l.startswith("--- sample"))] == [True] * 3


def exit_code(argv) -> int:
    """main's exit code, whether it returns it or argparse raises SystemExit for a usage error."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("args,message", [
    (["--prompt", ""], "wgrpo generate: error: --prompt is empty"),
    (["--top-p", "1.5"], "wgrpo generate: error: --top-p 1.5: must be in (0, 1]"),
    (["--temperature", "-1"], "wgrpo generate: error: --temperature -1.0: must be >= 0"),
    (["--temperature", "nan"], "wgrpo generate: error: --temperature nan: expected a finite number"),
    (["--top-k", "-2"], "wgrpo generate: error: --top-k -2: must be at least 0"),
    (["--seed", str(2**64)], f"wgrpo generate: error: --seed {2**64}: must be below 2**64"),
    (["--stop", ""], "wgrpo generate: error: --stop '': a stop string must not be empty"),
    (["--model", "no-such-dir"], "wgrpo generate: error: --model no-such-dir: no such directory"),
    (["--prompt", "x" * 200], "wgrpo generate: error: --prompt: 200 tokens, longer than the model's context")])
def test_generate_bad_input_is_a_one_line_error(checkpoint, capsys, args, message):
    path, _, _ = checkpoint
    argv = ["generate", "--model", str(path), "--prompt", "count:"] + args
    assert exit_code(argv) == 2
    _, err = capsys.readouterr()
    assert err.startswith(message) and err.count("\n") == 1


def test_bench_generate_quick_reports_decode_rates(tmp_path, capsys, device):
    report_path = tmp_path / "gen.json"
    assert main(["bench", "--generate", "--quick", "--no-torch", "--vocab-size", "64", "--hidden-size", "32",
                 "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1", "--intermediate-size", "48",
                 "--json", str(report_path)]) == 0
    out, _ = capsys.readouterr()
    assert "decode tok/s" in out
    report = json.loads(report_path.read_text())
    assert {(c["batch"], c["new_tokens"]) for c in report["cases"]} == {(1, 8), (1, 32), (8, 8), (8, 32)}
    assert all(c["decode_tokens_per_s"] is None or c["decode_tokens_per_s"] > 0 for c in report["cases"])
    assert report["torch"]["used"] is False
    d = report["decode_dispatches"]  # one layer: the step is that layer plus what lies outside the layers
    assert d["per_layer"] > 0 and d["outside_layers"] > 0 and d["per_step"] == d["per_layer"] + d["outside_layers"]
    assert f"dispatches per decode step: {d['per_step']} = {d['per_layer']} per layer x 1" in out
    assert any(c["replayed_steps"] > 0 for c in report["cases"] if c["new_tokens"] == 32)


def test_the_config_checks_its_field_types():
    from wgrpo.engine import InputError
    from wgrpo.tools.generate_cli import GenerateConfig

    with pytest.raises(InputError, match=r"^GenerateConfig: num_samples = 1\.5: expected an integer$"):
        GenerateConfig(num_samples=1.5)
    with pytest.raises(InputError, match=r"^GenerateConfig: stop = 3: expected a string$"):
        GenerateConfig(stop=3)
    assert GenerateConfig(temperature=0).temperature == 0.0


def test_generation_over_the_device_memory_is_refused_before_loading(checkpoint, capsys):
    path, _, _ = checkpoint
    assert main(["generate", "--model", str(path), "--prompt", "1+1=", "--device-memory", "4K"]) == 2
    err = capsys.readouterr().err
    assert "wgrpo: estimated device memory for generation: " in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("wgrpo generate: error: estimated device memory for generation") and "4.00 KiB" in last
