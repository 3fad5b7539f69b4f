"""Trainable weights out of one model and into another copy in place: the copy then computes what the source
computes, its fused buffers stay the ones its decode steps were recorded on, and a mismatch is refused whole."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import InputError, LoraConfig, Model, ModelConfig, attach_lora, generate
from wgrpo.engine.weight_sync import load_trainable_arrays, trainable_arrays, trainable_tensors

CONFIG = ModelConfig(vocab_size=61, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=40,
                     max_position_embeddings=64, attention_bias=True)


def _logits(model, ids):
    return model(np.asarray(ids, np.int32)[None]).numpy()


def test_loading_a_models_weights_makes_a_copy_compute_the_same(device):
    source = Model.random(CONFIG, seed=1, device=device)
    copy = Model.random(CONFIG, seed=2, device=device)
    buffers = {name: t.parts[0].binding()[:2] for name, t in copy.named_parameters().items()}
    ids = [3, 14, 15, 9, 26, 5]
    assert not np.array_equal(_logits(source, ids), _logits(copy, ids))
    written = load_trainable_arrays(copy, trainable_arrays(source))
    assert written == sum(t.nbytes for t in source.parameters())
    np.testing.assert_array_equal(_logits(source, ids), _logits(copy, ids))
    # written in place: the same blocks at the same offsets (q/k/v and gate/up stay fused)
    assert {name: t.parts[0].binding()[:2] for name, t in copy.named_parameters().items()} == buffers
    a = generate(source, [ids], max_new_tokens=5, temperature=1.0, seed=4, num_samples=3)
    b = generate(copy, [ids], max_new_tokens=5, temperature=1.0, seed=4, num_samples=3)
    for x, y in zip(a.sequences, b.sequences, strict=True):
        np.testing.assert_array_equal(x.token_ids, y.token_ids)
        np.testing.assert_array_equal(x.logprobs, y.logprobs)


def test_a_lora_model_moves_only_its_adapters(device):
    base = Model.random(CONFIG, seed=1, device=device)
    source, copy = Model.random(CONFIG, seed=1, device=device), base
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    attach_lora(source, lora, seed=5)
    attach_lora(copy, lora, seed=6)
    for t in source.adapters.parameters():  # B starts at zero: make the adapters matter
        t.device.runtime.copy(type(t).from_numpy(np.full(t.shape, 0.01, np.float32), device), t)
    arrays = trainable_arrays(source)
    assert set(arrays) == set(source.adapters.named_parameters()) and set(arrays) == set(trainable_tensors(copy))
    load_trainable_arrays(copy, arrays)
    ids = [7, 1, 30]
    np.testing.assert_array_equal(_logits(source, ids), _logits(copy, ids))


def test_a_mismatch_is_refused_before_anything_is_written(device):
    model = Model.random(CONFIG, seed=1, device=device)
    before = trainable_arrays(model)
    other = {name: np.zeros_like(a) for name, a in before.items()}
    name = "model.layers.1.mlp.down_proj.weight"
    wrong = dict(other, **{name: np.zeros((3, 3), np.float32)})
    with pytest.raises(InputError, match=f"weights from step 3: {name} is float32 \\(3, 3\\)"):
        load_trainable_arrays(model, wrong, source="weights from step 3")
    missing = {k: v for k, v in other.items() if k != name}
    with pytest.raises(InputError, match=f"missing {name}"):
        load_trainable_arrays(model, missing)
    after = trainable_arrays(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
