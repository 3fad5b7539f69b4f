"""kernels/logprob.wgsl through engine.ops: log_softmax, token_logprobs and cross_entropy, both row variants.

Forwards are compared with float64 numpy references; backward kernels with the analytic numpy gradients (tight)
and with central finite differences of the GPU forward itself (tests/gradcheck.py, loose). Every op works on
logits / temperature, as GRPO's log-probs do (DESIGN.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

VARIANTS = ["serial", "workgroup"]
TEMPERATURES = [1.0, 0.7]
# (..., V): one row of one, primes, a vocabulary longer than a workgroup, a 3-D (B, T, V).
SHAPES = [(1, 1), (1, 7), (13, 17), (3, 1000), (2, 5003), (2, 3, 257)]


def log_softmax_ref(x, temperature=1.0):
    z = np.asarray(x, dtype=np.float64) / temperature
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def token_logprobs_ref(x, targets, temperature=1.0):
    ls = log_softmax_ref(x, temperature)
    valid = targets >= 0
    picked = np.take_along_axis(ls, np.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    return np.where(valid, picked, 0.0)


def token_logprobs_grad_ref(x, targets, g, temperature=1.0):
    """d/dx of sum(g * logp): g (1[j = y] - softmax(x / tau)) / tau, zero rows for ignored targets."""
    p = np.exp(log_softmax_ref(x, temperature))
    onehot = np.zeros_like(p)
    valid = targets >= 0
    np.put_along_axis(onehot, np.where(valid, targets, 0)[..., None], 1.0, axis=-1)
    return np.where(valid[..., None], g[..., None] * (onehot - p) / temperature, 0.0)


def cross_entropy_ref(x, targets, mask=None):
    w = (targets >= 0).astype(np.float64) * (1.0 if mask is None else mask)
    return -(w * token_logprobs_ref(x, targets)).sum() / w.sum(), w


def random_case(shape, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    targets = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)
    return rng, x, targets


def gpu(a, device):
    return Tensor.from_numpy(a, device)


# ---------------------------------------------------------------------------------------------- forwards


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_matches_numpy(device, shape, variant):
    _, x, _ = random_case(shape, 1)
    for temperature in TEMPERATURES:
        y = ops.log_softmax(gpu(x, device), temperature, variant=variant)
        assert y.shape == shape and y.dtype == np.float32
        assert_close(y.numpy(), log_softmax_ref(x, temperature), scale=10)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_token_logprobs_matches_numpy(device, shape, variant):
    _, x, targets = random_case(shape, 2)
    for temperature in TEMPERATURES:
        logp = ops.token_logprobs(gpu(x, device), gpu(targets, device), temperature, variant=variant)
        assert logp.shape == shape[:-1] and logp.dtype == np.float32
        assert_close(logp.numpy(), token_logprobs_ref(x, targets, temperature), scale=10)


def test_token_logprobs_is_one_dispatch_each_way(device):
    _, x, targets = random_case((4, 1000), 3)
    logits = gpu(x, device).requires_grad_()
    stats = device.runtime.stats
    before = stats.dispatches
    logp = ops.token_logprobs(logits, targets, 0.7)
    assert stats.dispatches - before == 1
    before = stats.dispatches
    logp.backward(gpu(np.ones(4, np.float32), device))
    assert stats.dispatches - before == 1


def test_extreme_logits_stay_finite(device):
    # Rows far from 0 (the max is subtracted), a row of equal values, and a dominant token.
    x = np.array([[1e4, -1e4, 3e3, 0.0, 1e4], [5.0] * 5, [-3e4, -3e4 + 1, -3e4 + 2, -3e4, -3e4],
                  [80.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    targets = np.array([0, 3, 2, 1], np.int32)
    for variant in VARIANTS:
        for temperature in TEMPERATURES:
            # z = x / tau of order 1e4 carries f32 rounding of about 1e-3, hence the absolute tolerance.
            logp = ops.token_logprobs(gpu(x, device), targets, temperature, variant=variant).numpy()
            assert np.all(np.isfinite(logp))
            np.testing.assert_allclose(logp, token_logprobs_ref(x, targets, temperature), rtol=1e-5, atol=1e-2)
            y = ops.log_softmax(gpu(x, device), temperature, variant=variant).numpy()
            np.testing.assert_allclose(y, log_softmax_ref(x, temperature), rtol=1e-5, atol=1e-2)


def test_negative_targets_are_ignored(device):
    _, x, targets = random_case((6, 11), 4)
    targets[[1, 4]] = [-100, -1]
    logits = gpu(x, device).requires_grad_()
    logp = ops.token_logprobs(logits, targets, 0.7)
    np.testing.assert_array_equal(logp.numpy()[[1, 4]], 0.0)
    logp.backward(gpu(np.ones(6, np.float32), device))
    grad = logits.grad.numpy()
    np.testing.assert_array_equal(grad[[1, 4]], 0.0)
    assert np.all(np.abs(grad[[0, 2, 3, 5]]).sum(axis=-1) > 0)


# ---------------------------------------------------------------------------------------------- backwards


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 13), (3, 1000), (2, 5003), (2, 3, 17)])
def test_token_logprobs_backward_matches_formula(device, shape, variant):
    rng, x, targets = random_case(shape, 5)
    g = rng.standard_normal(shape[:-1]).astype(np.float32)
    for temperature in TEMPERATURES:
        logits = gpu(x, device).requires_grad_()
        ops.token_logprobs(logits, targets, temperature, variant=variant).backward(gpu(g, device))
        assert_close(logits.grad.numpy(), token_logprobs_grad_ref(x, targets, g, temperature))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 13), (3, 1000), (2, 5003)])
def test_log_softmax_backward_matches_formula(device, shape, variant):
    rng, x, _ = random_case(shape, 6)
    dy = rng.standard_normal(shape).astype(np.float32)
    for temperature in TEMPERATURES:
        t = gpu(x, device).requires_grad_()
        ops.log_softmax(t, temperature, variant=variant).backward(gpu(dy, device))
        p = np.exp(log_softmax_ref(x, temperature))
        expected = (dy - p * dy.astype(np.float64).sum(axis=-1, keepdims=True)) / temperature
        assert_close(t.grad.numpy(), expected, scale=10)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_log_softmax_finite_differences(device, temperature):
    _, x, _ = random_case((3, 7), 7, scale=1.0)
    check_gradients(lambda t: ops.log_softmax(t, temperature), [x], device)
    _, x, _ = random_case((2, 1030), 8, scale=1.0)
    check_gradients(lambda t: ops.log_softmax(t, temperature), [x], device)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("shape", [(4, 9), (2, 3, 5), (2, 1030)])
def test_token_logprobs_finite_differences(device, shape, temperature):
    _, x, targets = random_case(shape, 9, scale=1.0)
    check_gradients(lambda t: ops.token_logprobs(t, targets, temperature), [x], device)


def test_cross_entropy_finite_differences(device):
    _, x, targets = random_case((2, 4, 9), 10, scale=1.0)
    targets[0, 1] = -100
    mask = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], np.float32)
    check_gradients(lambda t: ops.cross_entropy(t, targets, mask), [x], device)
    check_gradients(lambda t: ops.cross_entropy(t, targets, temperature=0.7), [x], device)


# ---------------------------------------------------------------------------------------------- cross_entropy


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 1000), (2, 3, 257)])
def test_cross_entropy_matches_numpy(device, shape):
    rng, x, targets = random_case(shape, 11)
    mask = (rng.random(shape[:-1]) < 0.7).astype(np.float32)
    mask.flat[0] = 1.0
    targets.flat[-1] = -100  # ignored even where the mask says 1
    if targets.size == 1:
        targets.flat[0] = 0
    for m in (None, mask):
        logits = gpu(x, device).requires_grad_()
        loss = ops.cross_entropy(logits, targets, m)
        assert loss.shape == () and loss.dtype == np.float32
        expected, w = cross_entropy_ref(x, targets, m)
        assert_close(loss.numpy(), expected, scale=10)
        loss.backward()
        g = (-w / w.sum()).astype(np.float32)
        assert_close(logits.grad.numpy(), token_logprobs_grad_ref(x, targets, g))


def test_cross_entropy_with_nothing_counted_is_zero(device):
    _, x, targets = random_case((3, 5), 12)
    logits = gpu(x, device).requires_grad_()
    loss = ops.cross_entropy(logits, targets, np.zeros(3, np.float32))
    assert float(loss.numpy()) == 0.0
    loss.backward()
    np.testing.assert_array_equal(logits.grad.numpy(), 0.0)


def test_cross_entropy_matches_torch(device):
    torch = pytest.importorskip("torch")
    _, x, targets = random_case((2, 5, 1000), 13)
    targets[1, 2] = -100
    logits = gpu(x, device).requires_grad_()
    loss = ops.cross_entropy(logits, targets)
    loss.backward()
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tx.reshape(-1, 1000), torch.tensor(targets.reshape(-1), dtype=torch.long))
    tl.backward()
    assert_close(loss.numpy(), tl.item(), scale=10)
    assert_close(logits.grad.numpy(), tx.grad.numpy())


# ---------------------------------------------------------------------------------------------- f16


@pytest.mark.parametrize("variant", VARIANTS)
def test_f16_logits_accumulate_in_f32(device, variant):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    rng, x32, targets = random_case((3, 1031), 14)
    x = x32.astype(np.float16)
    g = rng.standard_normal(3).astype(np.float32)
    for temperature in TEMPERATURES:
        logits = gpu(x, device).requires_grad_()
        logp = ops.token_logprobs(logits, targets, temperature, variant=variant)
        assert logp.dtype == np.float32
        # f32 math on the exact f16 inputs: only the f32 rounding separates it from the float64 reference.
        assert_close(logp.numpy(), token_logprobs_ref(x, targets, temperature), scale=10)
        logp.backward(gpu(g, device))
        assert logits.grad.dtype == np.float16
        assert_close(logits.grad.numpy(), token_logprobs_grad_ref(x, targets, g, temperature), "f16")
        y = ops.log_softmax(gpu(x, device), temperature, variant=variant)
        assert y.dtype == np.float16
        assert_close(y.numpy(), log_softmax_ref(x, temperature), "f16")


# ---------------------------------------------------------------------------------------------- errors


def test_errors_name_the_problem(device):
    logits = gpu(np.zeros((2, 3, 5), np.float32), device)
    good = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 3\).*got \(3, 2\)"):
        ops.token_logprobs(logits, np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 3\).*got \(6,\)"):
        ops.cross_entropy(logits, gpu(np.zeros(6, np.int32), device))
    with pytest.raises(ValueError, match="targets hold 5, out of range for a vocabulary of 5"):
        ops.token_logprobs(logits, good + 5)
    with pytest.raises(TypeError, match="targets must be integers, got dtype float32"):
        ops.token_logprobs(logits, good.astype(np.float32))
    with pytest.raises(TypeError, match="targets must be int32, got float32"):
        ops.token_logprobs(logits, gpu(good.astype(np.float32), device))
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=f"temperature must be finite and > 0, got {bad}"):
            ops.token_logprobs(logits, good, bad)
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            ops.log_softmax(logits, bad)
    with pytest.raises(ValueError, match=r"mask must have the targets' shape \(2, 3\), got \(2, 2\)"):
        ops.cross_entropy(logits, good, np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match="logits must be float32 or float16, got int32"):
        ops.token_logprobs(gpu(np.zeros((2, 5), np.int32), device), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match=r"non-empty last \(vocabulary\) axis, got shape \(2, 0\)"):
        ops.token_logprobs(gpu(np.zeros((2, 0), np.float32), device), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="variant must be one of"):
        ops.log_softmax(logits, variant="tiled")
