"""GRPO with weights over the binding limit: the embedding (tied head) and its gradient and moments held in row
blocks, beside a bf16 reference, train as the unsplit run does; a run whose activations cannot fit one binding is
refused before its first step, in one line."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.train.trainer import GRPOLoop
from tests.rl.train.test_trainer import CountSevens, config

# the (300, 80) embedding is 96,000 bytes; a 64-row block of logits 76,800: the weight splits, the activations fit
LIMIT = 80_000


def wide_setup(device):
    from wgrpo.engine import Model, ModelConfig
    from wgrpo.engine.tokenizer import END_OF_TEXT, train_tokenizer

    task = CountSevens(template="plain")
    tokenizer = train_tokenizer([task.sample(i).prompt + " 7 77 777 123 <answer>7</answer>" for i in range(50)],
                                vocab_size=300)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    model_config = ModelConfig(vocab_size=300, hidden_size=80, num_layers=1, num_heads=4, num_kv_heads=2,
                               intermediate_size=48, max_position_embeddings=64, eos_token_id=eos, pad_token_id=eos,
                               tie_word_embeddings=True)
    return Model.random(model_config, seed=3, device=device), tokenizer, task


def one_step(device, tmp_path, limit, monkeypatch):
    monkeypatch.setattr(device, "_binding_bytes", limit)
    model, tokenizer, task = wide_setup(device)
    trainer = GRPOLoop(config(tmp_path, steps=1), model, tokenizer, task, model.to("bfloat16"))
    record = trainer.train_step()
    embedding = model.params["model.embed_tokens.weight"]
    return record, embedding.is_split, {name: p.numpy() for name, p in model.params.items()}


def test_split_weights_train_like_whole_ones(device, tmp_path, monkeypatch):
    monkeypatch.setattr("wgrpo.rl.train.trainer.GRPOLoop._plot", lambda self: None)
    whole, whole_split, whole_weights = one_step(device, tmp_path / "whole", 1 << 30, monkeypatch)
    split, split_split, split_weights = one_step(device, tmp_path / "split", LIMIT, monkeypatch)
    assert split_split and not whole_split
    for key in ("reward", "completions/mean_length", "loss", "kl", "grad_norm", "entropy"):
        assert split[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), key
    # AdamW's first step moves a weight by lr * g / (|g| + eps): ~lr * sign(g), but a gradient within a few eps of
    # zero moves it by a fraction of lr that the order of f32 sums sets (the split head sums its row blocks apart),
    # so the bound is 2% of lr (5e-3); a wrong gradient moves weights by about lr
    for name, value in whole_weights.items():
        np.testing.assert_allclose(split_weights[name], value, rtol=1e-4, atol=1e-4, err_msg=name)
    assert not np.array_equal(split_weights["model.embed_tokens.weight"],
                              wide_setup(device)[0].params["model.embed_tokens.weight"].numpy())


def test_activations_over_the_binding_limit_are_refused_before_the_first_step(device, tmp_path, monkeypatch):
    monkeypatch.setattr(device, "_binding_bytes", 20_000)  # a 64-row block of logits (76,800 bytes) cannot bind
    model, tokenizer, task = wide_setup(device)
    with pytest.raises(InputError) as error:
        GRPOLoop(config(tmp_path), model, tokenizer, task, model.to("bfloat16"))
    message = str(error.value)
    assert "\n" not in message and message.startswith("a GRPO step: an activation of shape (")
    assert "max_storage_buffer_binding_size of 19.5 KiB" in message and "--prompts-per-step" in message
    assert not (tmp_path / "metrics.jsonl").exists()
