"""kernels/embedding.wgsl through engine.ops.embedding: a row gather and its deterministic backward (positions
sorted by id on the host, one invocation per (vocab row, channel) summing its positions' dy rows).

The backward kernel is checked against np.add.at (tight, with many repeated ids) and, through autograd, against
central finite differences of the GPU forward (loose).
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.ops.embedding import embedding_backward
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

# (ids shape, V, C): one token, primes, a row longer than a 256-wide workgroup, more tokens than the vocab.
CASES = [((1,), 1, 1), ((1, 1), 3, 5), ((2, 7), 11, 13), ((3, 5), 17, 300), ((4, 67), 23, 7), ((9,), 1000, 3),
         ((2, 3, 5), 7, 9)]


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def dtype_of(elem):
    return {"f32": np.float32, "f16": np.float16}[elem]


def backward_reference(dy, ids, vocab):
    dw = np.zeros((vocab, dy.shape[-1]), np.float64)
    np.add.at(dw, ids.reshape(-1), dy.reshape(-1, dy.shape[-1]).astype(np.float64))
    return dw


@pytest.mark.parametrize("shape, vocab, channels", CASES)
def test_forward_gathers_rows(device, rng, shape, vocab, channels):
    for elem in elems(device):
        weight = rng.standard_normal((vocab, channels)).astype(dtype_of(elem))
        ids = rng.integers(0, vocab, shape)
        wt = Tensor.from_numpy(weight, device)
        for given in (ids, Tensor.from_numpy(ids.astype(np.int32), device)):
            out = ops.embedding(given, wt)
            assert out.shape == shape + (channels,) and out.dtype == weight.dtype
            np.testing.assert_array_equal(out.numpy(), weight[ids])  # a copy: exact


@pytest.mark.parametrize("shape, vocab, channels", CASES)
def test_backward_kernel_sums_repeated_ids(device, rng, shape, vocab, channels):
    for elem in elems(device):
        ids = rng.integers(0, vocab, shape)
        ids.flat[: ids.size // 2] = ids.flat[0]  # many repeats of one id
        dy = rng.standard_normal(shape + (channels,)).astype(dtype_of(elem))
        dw = embedding_backward(Tensor.from_numpy(dy, device), ids, vocab).numpy()
        expected = backward_reference(dy, ids, vocab)
        assert dw.shape == (vocab, channels)
        assert_close(dw, expected, elem, scale=max(1.0, np.sqrt(ids.size)))
        unused = np.setdiff1d(np.arange(vocab), ids)
        assert np.all(dw[unused] == 0.0)  # rows of ids that occur nowhere are exact zeros


def test_backward_is_deterministic_and_in_position_order(device, rng):
    ids = rng.integers(0, 5, (8, 250))  # 2000 positions over 5 ids: ~400 terms per row
    dy = (rng.standard_normal((8, 250, 33)) * np.exp(rng.uniform(-8, 8, (8, 250, 1)))).astype(np.float32)
    dyt = Tensor.from_numpy(dy, device)
    first = embedding_backward(dyt, ids, 5).numpy()
    for _ in range(2):
        np.testing.assert_array_equal(embedding_backward(dyt, ids, 5).numpy(), first)
    # The sum runs over each id's positions in increasing order, in f32: the sequential f32 sum, bit for bit.
    flat, rows = ids.reshape(-1), dy.reshape(-1, 33)
    expected = np.zeros((5, 33), np.float32)
    for t in range(flat.size):
        expected[flat[t]] += rows[t]
    np.testing.assert_array_equal(first, expected)


def test_autograd_through_host_and_device_ids(device, rng):
    weight = rng.standard_normal((13, 6)).astype(np.float32)
    ids = np.array([[3, 3, 0, 12], [3, 5, 5, 0]])
    dy = rng.standard_normal((2, 4, 6)).astype(np.float32)
    for given in (ids, ids.astype(np.uint8), Tensor.from_numpy(ids.astype(np.int32), device)):
        wt = Tensor.from_numpy(weight, device).requires_grad_()
        ops.embedding(given, wt).backward(Tensor.from_numpy(dy, device))
        assert_close(wt.grad.numpy(), backward_reference(dy, ids, 13))


@pytest.mark.parametrize("shape, vocab, channels", [((2, 3), 5, 4), ((7,), 3, 2), ((1, 1), 1, 3)])
def test_gradients_by_finite_differences(device, rng, shape, vocab, channels):
    weight = rng.standard_normal((vocab, channels)).astype(np.float32)
    ids = rng.integers(0, vocab, shape)
    check_gradients(lambda w: ops.embedding(ids, w), [weight], device)


def test_errors_name_the_problem(device):
    w = Tensor.from_numpy(np.ones((10, 4), np.float32), device)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 10\) for a vocab size of 10.*e\.g\. 10"):
        ops.embedding(np.array([[1, 10]]), w)
    with pytest.raises(ValueError, match="vocab size of 10.*e.g. -1"):
        ops.embedding(np.array([-1, 2]), w)
    with pytest.raises(TypeError, match="ids must be integers, got dtype float32"):
        ops.embedding(np.array([1.0, 2.0], np.float32), w)
    with pytest.raises(TypeError, match="ids must be int32, got a float32 Tensor"):
        ops.embedding(Tensor.from_numpy(np.array([1.0], np.float32), device), w)
    with pytest.raises(ValueError, match=r"weight must have shape \(V, C\), got \(10,\)"):
        ops.embedding(np.array([1]), Tensor.from_numpy(np.ones(10, np.float32), device))
    with pytest.raises(TypeError, match="weight must be float32, float16 or bfloat16, got int32"):
        ops.embedding(np.array([1]), Tensor.from_numpy(np.ones((10, 4), np.int32), device))


def test_out_of_range_device_ids(device):
    # On the GPU the forward writes zero rows (no read-back to check); the backward reads the ids and refuses them.
    w = Tensor.from_numpy(np.ones((10, 4), np.float32), device).requires_grad_()
    out = ops.embedding(Tensor.from_numpy(np.array([2, 10, -3], np.int32), device), w)
    np.testing.assert_array_equal(out.numpy(), [[1] * 4, [0] * 4, [0] * 4])
    with pytest.raises(ValueError, match=r"ids must be in \[0, 10\)"):
        out.backward(Tensor.from_numpy(np.ones((3, 4), np.float32), device))
