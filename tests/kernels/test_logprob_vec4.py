"""The vec4 twins of kernels/logprob.wgsl's token_logprobs entries against the scalar entries and numpy.

token_logprobs_backward_vec4 runs quads over the flat (rows, V) arrays, so it takes any V once rows * V is a
multiple of 4 (quads then cross row ends): V = 1, 3, primes and multiples of 4, one row and several workgroups,
ignored targets, tau != 1, f16 logits; it repeats the naive entry's arithmetic in the same order, so the two
agree to the bit. token_logprobs_workgroup_vec4 (V a multiple of 4) sums in another order than the scalar
entry: both are held to the float64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops import logprob
from tests.kernels.test_logprob import random_case, token_logprobs_grad_ref, token_logprobs_ref
from tests.tolerances import assert_close
from tests.dispatch_spy import entries_dispatched

TEMPERATURES = [1.0, 0.7]
# rows * V % 4 == 0. V = 1 and 3 (every quad crosses rows), primes, multiples of 4, a 3-D (B, T, V); the last
# two span several workgroups of 64 invocations at 8 quads each (2048 elements).
GRAD_SHAPES = [(4, 1), (4, 3), (1, 4), (12, 7), (8, 13), (2, 2, 6), (4, 1031), (6, 1000), (2, 16, 279)]
# 1 quad per invocation as on GPUs, an odd count, lavapipe's 8.
QUADS = [1, 3, 8]
# V % 4 == 0 for the forward twin: one quad per row, fewer quads than invocations, several per invocation.
FORWARD_SHAPES = [(1, 4), (3, 8), (5, 1000), (2, 3, 1028), (2, 5004)]


@pytest.fixture(params=QUADS)
def quads(request, monkeypatch):
    monkeypatch.setattr(logprob, "SOFTWARE_QUADS", request.param)
    monkeypatch.setattr(logprob, "GPU_QUADS", request.param)
    return request.param


def backward_case(shape, seed, device, dtype=np.float32, temperature=1.0):
    """Logits (with two ignored targets where there are rows enough), targets, lse from the forward, and g."""
    rng, x, targets = random_case(shape, seed)
    x = x.astype(dtype)
    if targets.size > 2:
        targets.flat[[0, targets.size // 2]] = [-100, -1]
    g = rng.standard_normal(shape[:-1]).astype(np.float32)
    logits, t, gt = Tensor.from_numpy(x, device), Tensor.from_numpy(targets, device), Tensor.from_numpy(g, device)
    lse = Tensor.empty(shape[:-1], np.float32, device)
    logp = Tensor.empty(shape[:-1], np.float32, device)
    logprob.token_logprobs_into(logits, t, logp, lse, 1.0 / temperature, "serial")
    return x, targets, g, (logits, t, lse, gt)


# ---------------------------------------------------------------------------------------------- backward


@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_vec4_backward_is_the_naive_entry_to_the_bit(device, shape, quads):
    for temperature in TEMPERATURES:
        x, targets, g, args = backward_case(shape, 21, device, temperature=temperature)
        fast = logprob.token_logprobs_grad(*args, 1.0 / temperature, vec4=True).numpy()
        naive = logprob.token_logprobs_grad(*args, 1.0 / temperature, vec4=False).numpy()
        np.testing.assert_array_equal(fast, naive)
        assert_close(fast, token_logprobs_grad_ref(x, targets, g, temperature))
        rows = targets.reshape(-1) < 0
        np.testing.assert_array_equal(fast.reshape(-1, shape[-1])[rows], 0.0)


@pytest.mark.parametrize("shape", [(4, 3), (8, 13), (6, 1000)])
def test_vec4_backward_f16(device, shape, quads):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    x, targets, g, args = backward_case(shape, 22, device, np.float16, temperature=0.7)
    fast = logprob.token_logprobs_grad(*args, 1.0 / 0.7, vec4=True)
    assert fast.dtype == np.float16
    np.testing.assert_array_equal(fast.numpy(), logprob.token_logprobs_grad(*args, 1.0 / 0.7, vec4=False).numpy())
    assert_close(fast.numpy(), token_logprobs_grad_ref(x, targets, g, 0.7), "f16")


def test_vec4_backward_of_a_row_view(device):
    # lm_head's blocks: rows of bigger tensors, at offsets the adapter aligns.
    x, targets, g, (logits, t, lse, gt) = backward_case((64, 7), 23, device)
    start, stop = 32, 64
    args = (logits.rows(start, stop), t.rows(start, stop), lse.rows(start, stop), gt.rows(start, stop))
    fast = logprob.token_logprobs_grad(*args, 1.0, vec4=True).numpy()
    np.testing.assert_array_equal(fast, logprob.token_logprobs_grad(*args, 1.0, vec4=False).numpy())
    assert_close(fast, token_logprobs_grad_ref(x[start:stop], targets[start:stop], g[start:stop]))


# ---------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("shape", FORWARD_SHAPES)
def test_vec4_forward_matches_numpy_and_the_scalar_entry(device, shape):
    for dtype, elem in ((np.float32, "f32"), (np.float16, "f16")):
        if dtype == np.float16 and not device.has_f16:
            continue
        for temperature in TEMPERATURES:
            _, x, targets = random_case(shape, 24)
            x = x.astype(dtype)
            if targets.size > 1:
                targets.flat[-1] = -100
            logits, t = Tensor.from_numpy(x, device), Tensor.from_numpy(targets, device)
            results = []
            for vec4 in (True, False):
                logp = Tensor.empty(shape[:-1], np.float32, device)
                lse = Tensor.empty(shape[:-1], np.float32, device)
                logprob.token_logprobs_into(logits, t, logp, lse, 1.0 / temperature, "workgroup", vec4=vec4)
                results.append((logp.numpy(), lse.numpy()))
            (logp, lse), (scalar_logp, scalar_lse) = results
            # f32 math on the exact inputs either way: only f32 rounding (of sums in different orders) differs.
            assert_close(logp, token_logprobs_ref(x, targets, temperature), scale=10)
            assert_close(logp, scalar_logp, scale=10)
            assert_close(lse, scalar_lse, scale=10)
            if targets.size > 1:
                assert logp.flat[-1] == 0.0, elem


def test_vec4_forward_with_extreme_logits(device):
    x = np.array([[1e4, -1e4, 3e3, 0.0, 1e4, 2.0, 1.0, 0.0], [5.0] * 8, [-3e4 + k for k in range(8)]], np.float32)
    targets = np.array([0, 3, 7], np.int32)
    logits, t = Tensor.from_numpy(x, device), Tensor.from_numpy(targets, device)
    for temperature in TEMPERATURES:
        logp = Tensor.empty((3,), np.float32, device)
        lse = Tensor.empty((3,), np.float32, device)
        logprob.token_logprobs_into(logits, t, logp, lse, 1.0 / temperature, "workgroup", vec4=True)
        assert np.all(np.isfinite(logp.numpy()))
        np.testing.assert_allclose(logp.numpy(), token_logprobs_ref(x, targets, temperature), rtol=1e-5, atol=1e-2)


# ---------------------------------------------------------------------------------------------- choice


def test_vec4_is_the_default_where_sizes_allow(device, monkeypatch):
    seen = entries_dispatched(device, monkeypatch)
    for shape in [(4, 1028), (4, 1031), (3, 1031), (4, 279), (3, 279)]:
        _, x, targets = random_case(shape, 25)
        logits = Tensor.from_numpy(x, device).requires_grad_()
        ops.token_logprobs(logits, targets).backward(Tensor.from_numpy(np.ones(shape[0], np.float32), device))
    assert seen == ["token_logprobs_workgroup_vec4", "token_logprobs_backward_vec4",   # V % 4 == 0
                    "token_logprobs_workgroup", "token_logprobs_backward_vec4",        # rows * V % 4 == 0 only
                    "token_logprobs_workgroup", "token_logprobs_backward_naive",       # odd size: scalar
                    "token_logprobs_serial", "token_logprobs_backward_vec4",           # short rows: serial
                    "token_logprobs_serial", "token_logprobs_backward_naive"]


def test_forcing_vec4_where_it_does_not_apply_is_refused(device):
    _, x, targets, (logits, t, lse, g) = backward_case((3, 5), 26, device)
    with pytest.raises(InputError, match=r"token_logprobs backward: the vec4 entry needs logits of a size that is a "
                                         r"multiple of 4 .*got shape \(3, 5\)"):
        logprob.token_logprobs_grad(logits, t, lse, g, 1.0, vec4=True)
    with pytest.raises(InputError, match="token_logprobs: the vec4 entry needs the workgroup variant .*got the "
                                         "serial variant and V = 5"):
        logprob.token_logprobs_into(logits, t, lse, lse, 1.0, "serial", vec4=True)
    with pytest.raises(InputError, match="V = 5"):
        logprob.token_logprobs_into(logits, t, lse, lse, 1.0, "workgroup", vec4=True)
