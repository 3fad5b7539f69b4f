"""Activation checkpointing: the same gradients as the plain backward, for fewer bytes kept between the passes."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Model, ModelConfig, Tensor, ops
from wgrpo.engine.autograd import backward_many, enable_grad, is_grad_enabled, no_grad
from wgrpo.engine.checkpointing import checkpoint

CONFIG = ModelConfig(vocab_size=61, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=40,
                     max_position_embeddings=32)


def _loss(model, ids):
    logp = model.token_logprobs(ids[:, :-1], ids[:, 1:])  # (B, T)
    weights = Tensor.from_numpy(np.linspace(-1, 1, logp.size, dtype=np.float32).reshape(logp.shape), model.device)
    return ops.sum(ops.mul(logp, weights).reshape(logp.size))


def _gradients(model, ids, checkpointed: bool) -> tuple[float, dict[str, np.ndarray]]:
    model.gradient_checkpointing = checkpointed
    for p in model.trainable_parameters():
        p.grad = None
    loss = _loss(model, ids)
    loss.backward()
    return float(loss.numpy()), {f"{i}": p.grad.numpy() for i, p in enumerate(model.trainable_parameters())}


@pytest.mark.parametrize("batch, steps", [(1, 5), (3, 11)])
def test_checkpointed_layers_give_the_same_gradients(device, batch, steps):
    model = Model.random(CONFIG, seed=3, device=device).requires_grad_()
    ids = np.random.default_rng(batch).integers(0, CONFIG.vocab_size, (batch, steps + 1))
    plain_loss, plain = _gradients(model, ids, checkpointed=False)
    loss, recomputed = _gradients(model, ids, checkpointed=True)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    for name, grad in plain.items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(recomputed[name], grad, rtol=1e-5, atol=1e-6, err_msg=name)


def test_checkpointing_keeps_fewer_activations(device):
    model = Model.random(CONFIG, seed=4, device=device).requires_grad_()
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (4, 25))
    memory = device.runtime.memory
    kept = {}
    for checkpointed in (False, True):
        model.gradient_checkpointing = checkpointed
        before = memory.current["activations"]
        loss = _loss(model, ids)  # the graph holds what the backward will need
        kept[checkpointed] = memory.current["activations"] - before
        loss.backward()
        del loss
        for p in model.parameters():
            p.grad = None
    assert kept[True] < 0.6 * kept[False], kept


def test_inference_and_decoding_run_no_checkpoint(device):
    model = Model.random(CONFIG, seed=5, device=device)
    model.gradient_checkpointing = True
    ids = np.arange(12).reshape(2, 6) % CONFIG.vocab_size
    with no_grad():
        checkpointed = model(ids).numpy()
    model.gradient_checkpointing = False
    np.testing.assert_array_equal(checkpointed, model(ids).numpy())


def test_checkpoint_of_a_block_with_two_outputs_and_a_parameter_only_input(device, rng):
    weight = Tensor.from_numpy(rng.standard_normal((5, 7)).astype(np.float32), device).requires_grad_()
    x = Tensor.from_numpy(rng.standard_normal((3, 7)).astype(np.float32), device)  # needs no gradient

    def block(x):
        y = ops.linear(x, weight)
        return y, ops.mul(y, y)

    grads_out = [Tensor.from_numpy(rng.standard_normal((3, 5)).astype(np.float32), device) for _ in range(2)]
    backward_many(block(x), grads_out)
    plain = weight.grad.numpy()
    weight.grad = None
    outputs = checkpoint(block, x, params=[weight])
    assert all(out.requires_grad for out in outputs)
    backward_many(outputs, grads_out)
    np.testing.assert_allclose(weight.grad.numpy(), plain, rtol=1e-6)


def test_enable_grad_inside_no_grad():
    with no_grad():
        assert not is_grad_enabled()
        with enable_grad():
            assert is_grad_enabled()
        assert not is_grad_enabled()
    assert is_grad_enabled()
