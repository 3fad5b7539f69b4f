"""Tensors over the binding limit, held as row blocks: creation, transfer, views, and every op that meets big
weights (matmul / linear, embedding, the fused LM head, elementwise, AdamW, clipping) against the unsplit result.

The limit is forced down on the shared device (`small_limit`), so the split paths run on tiny shapes."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import AdamW, Tensor, clip_grad_norm_, ops
from wgrpo.engine.dtypes import BFLOAT16, to_bfloat16, widen
from wgrpo.engine.errors import InputError, SplitTensorError
from wgrpo.engine.ops.matmul import VARIANTS, eligible_variants
from wgrpo.engine.tensor import row_partition
from tests.tolerances import assert_close

LIMIT = 4096  # bytes: a (131, 11) float32 tensor (5764 bytes) is split into blocks of 93 and 38 rows


@pytest.fixture
def small_limit(device, monkeypatch):
    monkeypatch.setattr(device, "_binding_bytes", LIMIT)
    return device


def variants(device, m, n, k, ta=False, tb=False, weights="elem"):
    """The variants that can run the problem, but the workgroup-tiled ones (tests/kernels/test_matmul_tiled.py)."""
    return [v for v in eligible_variants(device, m, n, k, ta, tb, weights=weights)
            if VARIANTS[v].family != "matmul_tiled"]


def test_the_partition_depends_on_the_shape_alone():
    assert row_partition((10, 10), np.float32, 4096) is None
    blocks = row_partition((100, 7), np.float32, 1024)  # 36 rows of 28 bytes per block
    assert blocks == [(0, 36), (36, 72), (72, 100)]
    assert row_partition((100, 7), BFLOAT16, 1024) == blocks == row_partition((100, 7), np.float16, 1024)
    assert row_partition((5, 3, 7), np.float32, 200) == [(0, 2), (2, 4), (4, 5)]  # rows of (3, 7)
    with pytest.raises(InputError, match="no rows to split it by"):
        row_partition((2000,), np.float32, 1024)
    with pytest.raises(InputError, match=r"one row of \(300,\) needs 1200 bytes"):
        row_partition((4, 300), np.float32, 1024)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BFLOAT16, np.int32])
def test_a_split_tensor_round_trips(small_limit, rng, dtype):
    values = rng.standard_normal((131, 11)) * 5
    array = to_bfloat16(values.astype(np.float32)) if dtype == BFLOAT16 else values.astype(dtype)
    t = Tensor.from_numpy(array, small_limit)
    assert t.is_split and t.row_ranges == [(0, 93), (93, 131)]
    assert all(p.nbytes <= LIMIT for p in t.parts)
    out = t.numpy()
    assert out.dtype == array.dtype and out.shape == (131, 11)
    assert np.array_equal(out.view(np.uint16) if dtype == BFLOAT16 else out,
                          array.view(np.uint16) if dtype == BFLOAT16 else array)
    assert "row_blocks=2" in repr(t)


def test_views_of_a_split_tensor(small_limit, rng):
    array = rng.standard_normal((100, 4, 6)).astype(np.float32)
    t = Tensor.from_numpy(array, small_limit)  # 42 rows of (4, 6) per block
    assert np.array_equal(t.view((100, 24)).numpy(), array.reshape(100, 24))
    assert np.array_equal(t.rows(42, 84).numpy(), array[42:84])
    assert np.array_equal(t.detach().numpy(), array)
    with pytest.raises(SplitTensorError, match="spans two of its row blocks"):
        t.rows(40, 50)
    with pytest.raises(SplitTensorError, match="cannot be viewed as"):
        t.view((2400,))


def test_an_op_that_binds_one_buffer_names_the_kernel(small_limit, rng):
    t = Tensor.from_numpy(rng.standard_normal((64, 32)).astype(np.float32), small_limit)
    with pytest.raises(SplitTensorError, match=r"softmax\.\w+.*binding 'x'.*held as 2 row blocks"):
        ops.softmax(t)


@pytest.mark.parametrize("m, n, k", [(1, 97, 13), (7, 131, 29), (9, 64, 17)])
def test_linear_against_a_split_weight_and_its_gradients(small_limit, rng, m, n, k):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    for variant in variants(small_limit, m, n, k, tb=True):
        weight = Tensor.from_numpy(w, small_limit).requires_grad_()
        assert weight.is_split
        xt = Tensor.from_numpy(x, small_limit).requires_grad_()
        y = ops.matmul(xt, weight, transpose_b=True, variant=variant)
        assert_close(y.numpy(), x @ w.T, scale=np.sqrt(k))
        y.backward(Tensor.from_numpy(dy, small_limit))
        assert weight.grad.is_split and weight.grad.row_ranges == weight.row_ranges
        assert_close(weight.grad.numpy(), dy.T @ x, scale=np.sqrt(m))
        assert_close(xt.grad.numpy(), dy @ w, scale=np.sqrt(n))


def test_linear_with_a_split_weight_through_the_autograd_of_linear(small_limit, rng):
    x = rng.standard_normal((2, 3, 19)).astype(np.float32)
    w = rng.standard_normal((101, 19)).astype(np.float32)
    weight = Tensor.from_numpy(w, small_limit).requires_grad_()
    y = ops.linear(Tensor.from_numpy(x, small_limit), weight)
    assert_close(y.numpy(), x @ w.T, scale=5)
    y.backward(Tensor.from_numpy(np.ones((2, 3, 101), np.float32), small_limit))
    assert weight.grad.is_split
    assert_close(weight.grad.numpy(), np.broadcast_to(x.reshape(6, 19).sum(0), (101, 19)), scale=5)


def test_a_split_output_of_a_transposed_product(small_limit, rng):
    a = rng.standard_normal((5, 150)).astype(np.float32)  # stored (K, M): op(a) = a.T is (150, 5)
    b = rng.standard_normal((5, 9)).astype(np.float32)
    out = Tensor.empty((150, 9), np.float32, small_limit)
    assert out.is_split
    from wgrpo.engine.ops.matmul import matmul_kernel

    matmul_kernel(Tensor.from_numpy(a, small_limit), Tensor.from_numpy(b, small_limit), True, False, out=out)
    assert_close(out.numpy(), a.T @ b, scale=5)


def test_embedding_with_a_split_weight(small_limit, rng):
    vocab, channels = 301, 7  # 146 rows per block: 3 blocks
    w = rng.standard_normal((vocab, channels)).astype(np.float32)
    ids = np.array([[0, 145, 146, 300], [291, 146, 0, 17]], np.int64)
    weight = Tensor.from_numpy(w, small_limit).requires_grad_()
    assert len(weight.parts) == 3
    out = ops.embedding(ids, weight)
    assert np.array_equal(out.numpy(), w[ids])
    dy = rng.standard_normal((2, 4, channels)).astype(np.float32)
    out.backward(Tensor.from_numpy(dy, small_limit))
    expected = np.zeros_like(w)
    np.add.at(expected, ids.reshape(-1), dy.reshape(-1, channels))
    assert weight.grad.is_split
    assert_close(weight.grad.numpy(), expected)


@pytest.mark.parametrize("rows", [1, 5, 130])
def test_the_fused_lm_head_with_a_split_weight(small_limit, rng, rows):
    # the weight (82,240 bytes) splits into blocks of 218 rows; a block of 64 rows of logits (65,792) fits
    vocab, width = 257, 80
    hidden = rng.standard_normal((rows, width)).astype(np.float32)
    w = rng.standard_normal((vocab, width)).astype(np.float32)
    targets = rng.integers(0, vocab, rows)
    results = []
    for split in (False, True):
        limit = 70_000 if split else 1 << 20
        small_limit._binding_bytes = limit
        h = Tensor.from_numpy(hidden, small_limit).requires_grad_()
        weight = Tensor.from_numpy(w, small_limit).requires_grad_()
        assert weight.is_split == split
        logp = ops.linear_token_logprobs(h, weight, targets, temperature=0.7)
        g = Tensor.from_numpy(np.linspace(-1, 1, rows).astype(np.float32), small_limit)
        logp.backward(g)
        results.append((logp.numpy(), h.grad.numpy(), weight.grad.numpy()))
    for unsplit, split in zip(*results):
        assert_close(split, unsplit)
    logits = hidden @ w.T / 0.7
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    assert_close(results[1][0], logits[np.arange(rows), targets] - lse)


def test_adamw_and_clipping_over_split_parameters(small_limit, rng):
    w = rng.standard_normal((97, 19)).astype(np.float32)
    g = rng.standard_normal((97, 19)).astype(np.float32)
    results = []
    for limit in (1 << 20, LIMIT):
        small_limit._binding_bytes = limit
        p = Tensor.from_numpy(w, small_limit).requires_grad_()
        p.grad = Tensor.from_numpy(g, small_limit)
        norm = clip_grad_norm_([p], 1.0)
        opt = AdamW([p], lr=0.1)
        opt.step()
        opt.step()
        results.append((float(norm.numpy()), p.numpy(), opt.state_dict()["state"][0]["exp_avg"]))
    assert results[1][0] == pytest.approx(float(np.linalg.norm(g)), rel=1e-5)
    for unsplit, split in zip(*results):
        assert_close(split, unsplit)


def test_elementwise_ops_on_split_tensors(small_limit, rng):
    a, b = rng.standard_normal((2, 89, 13)).astype(np.float32)
    ta, tb = Tensor.from_numpy(a, small_limit), Tensor.from_numpy(b, small_limit)
    assert ta.is_split
    assert_close((ta + tb).numpy(), a + b)
    assert_close((ta * tb).numpy(), a * b)
    assert_close(ops.silu(ta).numpy(), a / (1 + np.exp(-a)))
    with pytest.raises(SplitTensorError, match="broadcasting"):
        ta + Tensor.from_numpy(b[0], small_limit)


def test_device_bytes_are_counted_by_kind(device, rng):
    memory = device.runtime.memory
    before = dict(memory.current)
    p = Tensor.from_numpy(rng.standard_normal((64, 64)).astype(np.float32), device)
    assert memory.current["activations"] - before["activations"] >= p.nbytes
    p.count_as("weights")
    assert memory.current["weights"] - before["weights"] >= p.nbytes
    assert memory.peak_total >= memory.total
    del p
    assert memory.current == before
