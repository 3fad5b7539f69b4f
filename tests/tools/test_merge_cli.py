"""`wgrpo merge`: an adapter merged into its base is a plain checkpoint computing what base + adapter compute."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wgrpo.engine import LoraConfig, Model, ModelConfig, attach_lora, load_pretrained, no_grad, save_adapter
from wgrpo.engine.dtypes import BFLOAT16, to_bfloat16
from wgrpo.engine.hf import load_checkpoint, read_state_dict
from wgrpo.engine.lora import merge_lora_weights
from wgrpo.engine.peft_io import ADAPTER_CONFIG_FILE, read_adapter
from wgrpo.engine.tokenizer import train_tokenizer
from wgrpo.tools.cli import main
from tests.tolerances import assert_close

IDS = np.random.default_rng(0).integers(0, 260, size=(2, 6))


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, device):
    """A base checkpoint with a tokenizer and a generation config of its own, and a random adapter of it."""
    root = tmp_path_factory.mktemp("merge")
    tokenizer = train_tokenizer(["count: 1 2 3 4 5 6 7 8 9"] * 20, vocab_size=280)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=64, eos_token_id=0)
    rng = np.random.default_rng(1)
    state = {k: (v + 0.2 * rng.standard_normal(v.shape)).astype(np.float32)
             for k, v in Model.random(config, seed=1, device=device).state_dict().items()}
    Model.from_numpy(config, state, device).save_pretrained(root / "base", tokenizer=tokenizer)
    (root / "base" / "generation_config.json").write_text(json.dumps({"eos_token_id": 0, "temperature": 0.6}))
    model, _ = load_pretrained(root / "base", device)
    adapters = attach_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    adapters.load_state_dict({k: (0.3 * rng.standard_normal(t.shape)).astype(np.float32)
                              for k, t in adapters.named_parameters().items()})
    save_adapter(root / "adapter", model)
    with no_grad():
        expected = model(IDS).numpy()
    return root, expected


def logits_of(path, device):
    model, tokenizer = load_pretrained(path, device)
    assert model.adapters is None
    with no_grad():
        return model(IDS).numpy(), model, tokenizer


def test_merge_writes_a_checkpoint_with_the_adapted_logits(adapter, device, tmp_path, capsys):
    root, expected = adapter
    assert main(["merge", str(root / "adapter"), str(tmp_path / "merged")]) == 0
    assert "merge: wrote" in capsys.readouterr().err
    logits, model, tokenizer = logits_of(tmp_path / "merged", device)
    assert_close(logits, expected, scale=10)
    assert model.dtype == np.float32 and tokenizer is not None
    assert not (tmp_path / "merged" / ADAPTER_CONFIG_FILE).exists()
    assert json.loads((tmp_path / "merged" / "generation_config.json").read_text())["temperature"] == 0.6


def test_merge_to_bfloat16_with_an_explicit_base(adapter, device, tmp_path, monkeypatch):
    root, _ = adapter
    monkeypatch.chdir(root)
    assert main(["merge", "adapter", str(tmp_path / "merged"), "--base", "base", "--dtype", "bfloat16"]) == 0
    _, model, _ = logits_of(tmp_path / "merged", device)
    assert model.dtype == BFLOAT16
    # every tensor is the float32 merge rounded once to bfloat16
    config, base = load_checkpoint(root / "base")
    lora_config, arrays = read_adapter(root / "adapter", config)
    expected = merge_lora_weights(base, arrays, lora_config.scaling)
    written = read_state_dict(tmp_path / "merged", keep_dtype=True)
    assert sorted(written) == sorted(expected)
    for name, array in expected.items():
        assert written[name].dtype == BFLOAT16 and np.array_equal(written[name], to_bfloat16(array)), name


def exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_bad_input_is_a_one_line_error(adapter, tmp_path, capsys):
    root, _ = adapter
    for argv, message in [
        ([str(root / "adapter"), str(root / "adapter")], "is the adapter's directory"),
        ([str(root / "adapter"), str(root / "base")], "is the base model's directory"),
        ([str(root / "base"), str(tmp_path / "x")], "no adapter_config.json: not a PEFT adapter directory"),
        ([str(tmp_path / "none"), str(tmp_path / "x")], "no such adapter directory"),
        ([str(root / "adapter"), str(tmp_path / "x"), "--base", str(tmp_path / "none")], "no such directory"),
    ]:
        assert exit_code(["merge", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("wgrpo merge: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()
    assert exit_code(["merge", str(root / "adapter"), str(tmp_path / "x"), "--dtype", "int8"]) == 2
    assert "invalid choice" in capsys.readouterr().err
