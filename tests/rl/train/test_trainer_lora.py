"""GRPO with LoRA: only the adapters train, the frozen base with its adapters off is the KL reference, checkpoints
are PEFT adapter directories, and a resumed run restores the adapters and their moments exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wgrpo.engine import load_pretrained
from wgrpo.rl.train.metrics_log import read_rows
from wgrpo.rl.train.pipeline import policy_and_reference
from wgrpo.rl.train.trainer import GRPOLoop
from tests.rl.train.test_trainer import config, tiny_setup


@pytest.fixture
def base_dir(device, tmp_path):
    model, tokenizer, _ = tiny_setup(device)
    path = tmp_path / "base"
    model.save_pretrained(path, tokenizer, dtype="bfloat16")
    return path


def lora_config(tmp_path, base_dir, **overrides):
    options = dict(model=str(base_dir), dtype="bfloat16", use_peft=True, lora_r=4, lora_alpha=8.0, lora_dropout=0.1,
                   lr=2e-2)
    return config(tmp_path, **{**options, **overrides})


def lora_trainer(cfg, device, task):
    model, tokenizer = load_pretrained(cfg.model, device, cfg.dtype)
    policy, reference = policy_and_reference(model, cfg)
    trainer = GRPOLoop(cfg, policy, tokenizer, task, reference, start_model=cfg.model)
    trainer.evaluate = lambda: {}
    return trainer


def test_lora_trains_the_adapters_only_against_the_base(device, tmp_path, base_dir, monkeypatch):
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    _, _, task = tiny_setup(device)
    cfg = lora_config(tmp_path / "run", base_dir, steps=2, per_device_train_batch_size=3,
                      gradient_checkpointing=True)
    trainer = lora_trainer(cfg, device, task)
    model = trainer.model
    assert trainer.reference is None and model.dtype.name != "float32"  # the base stays bf16, no copy
    base_before = model.state_dict()
    records = [trainer.train_step() for _ in range(2)]
    for record in records:
        assert np.isfinite(record["loss"]) and np.isfinite(record["kl"])
        assert record["micro_batches"] == 3
        # dropout makes the update's network another than the sampler's: at mu = 1 the ratio is its own, 1
        assert record["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
        assert record["clip_ratio/low_mean"] == record["clip_ratio/high_mean"] == 0.0
    assert records[1]["kl"] > 0  # the adapters moved the policy away from the base it is measured against
    for name, array in model.state_dict().items():
        assert np.array_equal(array.view(np.uint16), base_before[name].view(np.uint16)) if array.dtype.itemsize == 2 \
            else np.array_equal(array, base_before[name]), name
    b_weights = [a for name, a in model.adapters.state_dict().items() if "lora_B" in name]
    assert all(np.abs(b).max() > 0 for b in b_weights)  # every B left its zero init
    assert len(trainer.optimizer.params) == len(model.adapters.parameters())


def test_lora_checkpoints_are_peft_adapters_and_resume_exactly(device, tmp_path, base_dir, monkeypatch):
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    _, _, task = tiny_setup(device)
    straight = lora_trainer(lora_config(tmp_path / "a", base_dir, steps=4, save_every=2), device, task)
    straight.run()
    checkpoint = tmp_path / "a" / "checkpoint-2"
    assert (checkpoint / "adapter_config.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert not (checkpoint / "model.safetensors").exists()  # the base is not copied into every checkpoint
    adapter_config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["base_model_name_or_path"] == str(base_dir)

    resumed_cfg = lora_config(tmp_path / "a", base_dir, steps=4, save_every=2, resume=str(checkpoint))
    resumed = GRPOLoop.resume_from(resumed_cfg, str(checkpoint), device, None, task=task)
    assert resumed.step == 2 and resumed.model.adapters is not None
    assert resumed.optimizer.state[0] is not None  # the adapters' moments came back
    resumed.evaluate = lambda: {}
    final_straight = straight.model.adapters.state_dict()
    resumed.run()
    for name, array in resumed.model.adapters.state_dict().items():
        np.testing.assert_allclose(array, final_straight[name], rtol=1e-5, atol=1e-7, err_msg=name)
    rows = read_rows(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]


def test_a_lora_run_starts_from_an_existing_adapter(device, tmp_path, base_dir, monkeypatch, capsys):
    monkeypatch.setattr(GRPOLoop, "_plot", lambda self: None)
    _, _, task = tiny_setup(device)
    first = lora_trainer(lora_config(tmp_path / "a", base_dir, steps=1), device, task)
    first.run()
    adapter = tmp_path / "a" / "final"
    second = lora_trainer(lora_config(tmp_path / "b", adapter, steps=1, lora_r=8), device, task)
    assert "training the LoRA adapter of" in capsys.readouterr().err
    start = first.model.adapters.state_dict()
    for name, array in second.model.adapters.state_dict().items():
        np.testing.assert_array_equal(array, start[name])  # r=4 as saved: the --lora-* options do not apply
