"""The model without the oracle: shapes, parameters, errors. (Numerics against transformers: test_model_oracle.)"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Model, ModelConfig

CONFIG = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48,
                     max_position_embeddings=16)


def test_shapes_and_parameter_names(device):
    model = Model.random(CONFIG, device=device)
    ids = np.arange(10).reshape(2, 5) % 64
    assert model(ids).shape == (2, 5, 64)
    assert model.token_logprobs(ids, ids).shape == (2, 5)
    assert "model.layers.1.self_attn.q_proj.bias" in model.params  # qwen2 has q/k/v biases
    assert all(p.requires_grad for p in model.requires_grad_().parameters())


def test_every_parameter_gets_a_gradient(device):
    from wgrpo.engine import Tensor, ops

    model = Model.random(CONFIG, seed=1, device=device).requires_grad_()
    ids = np.random.default_rng(0).integers(0, 64, (2, 7))
    ops.cross_entropy(model(ids[:, :-1]), Tensor.from_numpy(ids[:, 1:].astype(np.int32), device)).backward()
    for name, p in model.named_parameters().items():
        assert p.grad is not None and np.isfinite(p.grad.numpy()).all(), name
        assert np.abs(p.grad.numpy()).max() > 0, name


def test_errors_name_the_problem(device):
    model = Model.random(CONFIG, device=device)
    with pytest.raises(ValueError, match=r"ids must have shape \(B, T\)"):
        model(np.arange(5))
    with pytest.raises(ValueError, match="17 tokens exceed max_position_embeddings=16"):
        model(np.zeros((1, 17), np.int32))
