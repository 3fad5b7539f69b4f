"""kernels/embedding.wgsl's vec4 entries (embedding_forward4, embedding_backward4, embedding_add_rows4) through
engine.ops.embedding: the same bits as the scalar entries and numpy's, on channel counts that are multiples of 4
whose rows of quads are not multiples of the chunk (QUADS per invocation, 1 as on GPUs and more as on CPUs),
several workgroups, 16-bit and packed weights, row blocks, and the scalar fallback where C % 4 != 0.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from wgrpo.engine import Tensor
from wgrpo.engine.dtypes import to_bfloat16, widen
from wgrpo.engine.errors import InputError
from tests.tolerances import assert_close

embedding_ops = importlib.import_module("wgrpo.engine.ops.embedding")  # the module, not ops.embedding the function
from wgrpo.engine.ops.embedding import embedding_add_rows, embedding_backward, embedding_forward  # noqa: E402
from tests.dispatch_spy import entries_dispatched

# (ids shape, V, C): one quad, quads per row below, at and above a chunk, primes, more rows than a workgroup.
CASES = [((1,), 1, 4), ((2, 7), 11, 12), ((3, 5), 17, 36), ((67,), 23, 4), ((3, 89), 5, 132), ((2, 3, 5), 7, 300)]
QUADS = [1, 3, 8]  # per invocation: the GPU choice, one that leaves a partial chunk, the CPU choice


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def dtype_of(elem):
    return {"f32": np.float32, "f16": np.float16}[elem]


@pytest.fixture(params=QUADS)
def quads(request, monkeypatch):
    monkeypatch.setattr(embedding_ops, "SOFTWARE_QUADS", request.param)
    monkeypatch.setattr(embedding_ops, "GPU_QUADS", request.param)
    return request.param


@pytest.mark.parametrize("shape, vocab, channels", CASES)
def test_forward4_copies_rows_as_the_scalar_entry(device, rng, quads, shape, vocab, channels):
    for elem in elems(device):
        weight = rng.standard_normal((vocab, channels)).astype(dtype_of(elem))
        ids = Tensor.from_numpy(rng.integers(0, vocab, shape).astype(np.int32), device)
        wt = Tensor.from_numpy(weight, device)
        vec4 = embedding_forward(ids, wt, variant="vec4").numpy()
        np.testing.assert_array_equal(vec4, weight[ids.numpy()])  # a copy: exact
        np.testing.assert_array_equal(vec4, embedding_forward(ids, wt, variant="scalar").numpy())


@pytest.mark.parametrize("kind", ["bf16", "f16"])
def test_forward4_widens_packed_weights(device, rng, quads, kind):
    values = rng.standard_normal((37, 20)).astype(np.float32)
    packed = to_bfloat16(values) if kind == "bf16" else values.astype(np.float16)
    ids = Tensor.from_numpy(rng.integers(0, 37, (3, 11)).astype(np.int32), device)
    weight = Tensor.from_numpy(packed, device)
    vec4 = embedding_forward(ids, weight, np.float32, variant="vec4").numpy()
    np.testing.assert_array_equal(vec4, widen(packed)[ids.numpy()])
    np.testing.assert_array_equal(vec4, embedding_forward(ids, weight, np.float32, variant="scalar").numpy())


def test_forward4_out_of_range_device_ids_give_zero_rows(device, quads):
    weight = Tensor.from_numpy(np.ones((10, 8), np.float32), device)
    out = embedding_forward(Tensor.from_numpy(np.array([2, 10, -3, 9], np.int32), device), weight, variant="vec4")
    np.testing.assert_array_equal(out.numpy(), [[1] * 8, [0] * 8, [0] * 8, [1] * 8])


def test_forward4_over_row_blocks(device, monkeypatch, rng, quads):
    monkeypatch.setattr(device, "_binding_bytes", 4096)  # rows of 64 f32 = 256 bytes: blocks of 16 rows
    weight_np = rng.standard_normal((97, 64)).astype(np.float32)
    weight = Tensor.from_numpy(weight_np, device)
    assert weight.is_split and len(weight.parts) == 7
    ids = np.array([96, 80, 64, 48, 32, 16, 0, 95, 17, 16, 15, 31, 97, -1], np.int32)
    out = embedding_forward(Tensor.from_numpy(ids, device), weight, variant="vec4").numpy()
    expected = np.zeros((ids.size, 64), np.float32)
    inside = (ids >= 0) & (ids < 97)
    expected[inside] = weight_np[ids[inside]]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("shape, vocab, channels", CASES)
def test_backward4_sums_as_the_scalar_entry(device, rng, quads, shape, vocab, channels):
    for elem in elems(device):
        ids = rng.integers(0, vocab, shape)
        ids.flat[: ids.size // 2] = ids.flat[0]  # many repeats of one id
        dy = Tensor.from_numpy(rng.standard_normal(shape + (channels,)).astype(dtype_of(elem)), device)
        vec4 = embedding_backward(dy, ids, vocab, variant="vec4").numpy()
        np.testing.assert_array_equal(vec4, embedding_backward(dy, ids, vocab, variant="scalar").numpy())
        expected = np.zeros((vocab, channels), np.float64)
        np.add.at(expected, ids.reshape(-1), dy.numpy().reshape(-1, channels).astype(np.float64))
        assert_close(vec4, expected, elem, scale=max(1.0, np.sqrt(ids.size)))
        assert np.all(vec4[np.setdiff1d(np.arange(vocab), ids)] == 0.0)


def test_backward4_over_row_blocks(device, monkeypatch, rng, quads):
    monkeypatch.setattr(device, "_binding_bytes", 4096)  # dweight (97, 64) f32: blocks of 16 rows
    ids = np.array([96, 80, 64, 48, 32, 16, 0, 95, 17, 16, 96])
    dy = Tensor.from_numpy(rng.standard_normal((ids.size, 64)).astype(np.float32), device)
    vec4 = embedding_backward(dy, ids, 97, variant="vec4")
    assert vec4.is_split
    np.testing.assert_array_equal(vec4.numpy(), embedding_backward(dy, ids, 97, variant="scalar").numpy())


@pytest.mark.parametrize("shape, vocab, channels", CASES)
def test_add_rows4_adds_as_the_scalar_entry(device, rng, quads, shape, vocab, channels):
    for elem in elems(device):
        dtype = dtype_of(elem)
        ids = rng.integers(0, vocab, shape)
        ids.flat[: ids.size // 2] = ids.flat[-1]
        acc = rng.standard_normal((vocab, channels)).astype(dtype)
        dy = Tensor.from_numpy(rng.standard_normal(shape + (channels,)).astype(dtype), device)
        results = []
        for variant in ("vec4", "scalar"):
            into = Tensor.from_numpy(acc, device)
            embedding_add_rows(into, dy, ids, variant=variant)
            results.append(into.numpy())
        np.testing.assert_array_equal(results[0], results[1])
        untouched = np.setdiff1d(np.arange(vocab), ids)
        np.testing.assert_array_equal(results[0][untouched], acc[untouched])


@pytest.mark.parametrize("ids", [np.array([96, 80, 64, 48, 32, 16, 0, 95, 17, 16]), np.array([96, 95, 96])])
def test_add_rows4_over_row_blocks(device, monkeypatch, rng, quads, ids):
    monkeypatch.setattr(device, "_binding_bytes", 4096)
    acc_np = rng.standard_normal((97, 64)).astype(np.float32)
    dy = Tensor.from_numpy(rng.standard_normal((ids.size, 64)).astype(np.float32), device)
    results = []
    for variant in ("vec4", "scalar"):
        acc = Tensor.from_numpy(acc_np, device)
        assert acc.is_split
        embedding_add_rows(acc, dy, ids, variant=variant)
        results.append(acc.numpy())
    np.testing.assert_array_equal(results[0], results[1])


def test_the_default_is_vec4_where_c_is_a_multiple_of_4(device, monkeypatch, rng):
    used = entries_dispatched(device, monkeypatch)
    for channels, suffix in ((8, "4"), (6, "")):
        del used[:]
        weight = Tensor.from_numpy(rng.standard_normal((5, channels)).astype(np.float32), device)
        ids = np.array([1, 4, 1])
        out = embedding_forward(Tensor.from_numpy(ids.astype(np.int32), device), weight)
        dy = Tensor.from_numpy(np.ones((3, channels), np.float32), device)
        embedding_backward(dy, ids, 5)
        embedding_add_rows(weight, dy, ids)
        assert used == [f"embedding_forward{suffix}", f"embedding_backward{suffix}", f"embedding_add_rows{suffix}"]
        assert out.shape == (3, channels)


def test_a_vec4_request_that_cannot_run_is_refused(device):
    weight = Tensor.from_numpy(np.ones((5, 6), np.float32), device)
    ids = Tensor.from_numpy(np.array([1, 2], np.int32), device)
    with pytest.raises(InputError, match="embedding: the vec4 variant needs C a multiple of 4.*C=6"):
        embedding_forward(ids, weight, variant="vec4")
    dy = Tensor.from_numpy(np.ones((2, 6), np.float32), device)
    with pytest.raises(InputError, match="embedding_backward: the vec4 variant needs"):
        embedding_backward(dy, np.array([1, 2]), 5, variant="vec4")
    with pytest.raises(InputError, match="embedding_add_rows: the vec4 variant needs"):
        embedding_add_rows(weight, dy, np.array([1, 2]), variant="vec4")
    with pytest.raises(InputError, match=r"variant must be one of \('scalar', 'vec4'\) or None, got 'quad'"):
        embedding_forward(ids, weight, variant="quad")
