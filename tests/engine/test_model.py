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


def test_token_logprobs_of_chosen_positions_only(device):
    from wgrpo.engine import Tensor
    from wgrpo.engine.ops.rows import RowSelection

    model = Model.random(CONFIG, seed=2, device=device).requires_grad_()
    ids = np.random.default_rng(3).integers(0, 64, (3, 6))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    positions = np.array([2, 3, 4, 8, 9, 14])  # flat b * T + t: the tails of three rows of 5
    weights = np.zeros(15, np.float32)
    weights[positions] = np.arange(1, 7)
    results = []
    for chosen, t in ((None, targets), (positions, targets),
                      (RowSelection(positions, 15, device), targets.reshape(-1)[positions])):
        for p in model.parameters():
            p.grad = None
        logp = model.token_logprobs(inputs, t, positions=chosen)
        assert logp.shape == (3, 5)
        logp.backward(Tensor.from_numpy(weights.reshape(3, 5), device))  # a loss of the chosen positions
        results.append((logp.numpy().reshape(-1), [p.grad.numpy() for p in model.parameters()]))
    (full, full_grads), *chosen_results = results
    for logp, grads in chosen_results:
        np.testing.assert_allclose(logp[positions], full[positions], rtol=1e-5, atol=1e-6)
        assert not np.delete(logp, positions).any()  # the others come out 0
        for got, want in zip(grads, full_grads, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_errors_name_the_problem(device):
    model = Model.random(CONFIG, device=device)
    with pytest.raises(ValueError, match=r"ids must have shape \(B, T\)"):
        model(np.arange(5))
    with pytest.raises(ValueError, match="17 tokens exceed max_position_embeddings=16"):
        model(np.zeros((1, 17), np.int32))
