"""kernels/embedding.wgsl's `embedding_add_rows` through engine.ops.embedding: an embedding's gradient added as
rows (the positions grouped by id on the host, one invocation per (unique id, channel)) into an existing gradient.

Checked against numpy on awkward shapes and against the dense path (`embedding_backward` then `add`) to the bit,
with the gradient in one buffer and in row blocks, and through autograd on a model whose head is tied to its
embedding: the weight's gradient is the same bits with the dense table and with the row add.
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Model, ModelConfig, Tensor, ops
from wgrpo.engine.ops.embedding import _Embedding, embedding_add_rows, embedding_backward, rows_csr
from tests.tolerances import assert_close

# (ids shape, V, C): one id, vocab 1, primes, a row longer than a 256-wide workgroup, more tokens than the vocab.
CASES = [((1,), 1, 1), ((6,), 1, 3), ((1, 1), 3, 5), ((2, 7), 11, 13), ((3, 37), 101, 13), ((2, 5), 7, 300),
         ((4, 67), 23, 7), ((2, 3, 5), 7, 9)]


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def dtype_of(elem):
    return {"f32": np.float32, "f16": np.float16}[elem]


def rows_reference(acc, dy, ids):
    """acc + the rows, as the kernel rounds: each id's sum in f32 in position order, rounded to acc's dtype, added
    in f32 and rounded again; rows of ids that occur nowhere unchanged."""
    sums = np.zeros(acc.shape, np.float32)
    flat, rows = ids.reshape(-1), dy.reshape(-1, dy.shape[-1]).astype(np.float32)
    for t in range(flat.size):
        sums[flat[t]] += rows[t]
    out = acc.copy()
    used = np.unique(flat)
    out[used] = (acc[used].astype(np.float32) + sums[used].astype(acc.dtype).astype(np.float32)).astype(acc.dtype)
    return out


def add_rows_both_ways(device, acc, dy, ids):
    """(the row add's result, the dense path's result) on the GPU."""
    dense = ops.add(Tensor.from_numpy(acc, device), embedding_backward(Tensor.from_numpy(dy, device), ids,
                                                                       acc.shape[0]))
    into = Tensor.from_numpy(acc, device)
    assert embedding_add_rows(into, Tensor.from_numpy(dy, device), ids) is into
    return into.numpy(), dense.numpy()


def test_csr_groups_positions_by_id_in_position_order():
    rows, csr = rows_csr(np.array([5, 2, 5, 5, 0, 2], np.int32))
    n = 6
    np.testing.assert_array_equal(rows, [0, 2, 5])
    assert csr.dtype == np.uint32 and csr.size == 3 * n + 1
    np.testing.assert_array_equal(csr[:4], [0, 1, 3, 6])  # offsets of the 3 unique ids
    np.testing.assert_array_equal(csr[n + 1 : n + 4], [0, 2, 5])
    np.testing.assert_array_equal(csr[2 * n + 1 :], [4, 1, 5, 0, 2, 3])


@pytest.mark.parametrize("shape, vocab, channels", CASES)
def test_rows_add_into_the_gradient_as_the_dense_path_does(device, rng, shape, vocab, channels):
    for elem in elems(device):
        dtype = dtype_of(elem)
        ids = rng.integers(0, vocab, shape)
        ids.flat[: ids.size // 2] = ids.flat[-1]  # many repeats of one id
        acc = rng.standard_normal((vocab, channels)).astype(dtype)
        dy = rng.standard_normal(shape + (channels,)).astype(dtype)
        rows, dense = add_rows_both_ways(device, acc, dy, ids)
        np.testing.assert_array_equal(rows, dense)  # the same rounding as embedding_backward + add, to the bit
        np.testing.assert_array_equal(rows, rows_reference(acc, dy, ids))
        expected = acc.astype(np.float64)
        np.add.at(expected, ids.reshape(-1), dy.reshape(-1, channels).astype(np.float64))
        assert_close(rows, expected, elem, scale=max(1.0, np.sqrt(ids.size)))


@pytest.mark.parametrize("elem", ["f32", "f16"])
def test_all_ids_equal_touch_one_row(device, rng, elem):
    if elem == "f16" and not device.has_f16:
        pytest.skip("no shader-f16")
    dtype = dtype_of(elem)
    ids = np.full((3, 41), 7)
    acc = rng.standard_normal((19, 11)).astype(dtype)
    dy = rng.standard_normal((3, 41, 11)).astype(dtype)
    rows, dense = add_rows_both_ways(device, acc, dy, ids)
    np.testing.assert_array_equal(rows, dense)
    untouched = np.arange(19) != 7
    np.testing.assert_array_equal(rows[untouched], acc[untouched])  # bit for bit, not merely + 0
    assert_close(rows[7], acc[7].astype(np.float64) + dy.reshape(-1, 11).astype(np.float64).sum(0), elem,
                 scale=np.sqrt(ids.size))


# ids in every block, in the first only, in the last only, at the blocks' edges
@pytest.mark.parametrize("ids", [np.array([96, 80, 64, 48, 32, 16, 0, 95, 17, 16]), np.array([0, 1, 2, 1]),
                                 np.array([96, 95, 96]), np.array([15, 16, 31, 32, 47, 48, 0, 96])])
def test_rows_in_row_blocks(device, monkeypatch, rng, ids):
    monkeypatch.setattr(device, "_binding_bytes", 4096)  # rows of 61 f32 = 244 bytes: blocks of 16 rows
    acc_np = rng.standard_normal((97, 61)).astype(np.float32)
    dy = rng.standard_normal(ids.shape + (61,)).astype(np.float32)
    acc = Tensor.from_numpy(acc_np, device)
    assert acc.is_split and len(acc.parts) == 7
    embedding_add_rows(acc, Tensor.from_numpy(dy, device), ids)
    np.testing.assert_array_equal(acc.numpy(), rows_reference(acc_np, dy, ids))


def test_device_ids_are_read_back(device, rng):
    ids = np.array([[4, 0, 4], [2, 2, 4]])
    acc = rng.standard_normal((5, 6)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 6)).astype(np.float32)
    into = Tensor.from_numpy(acc, device)
    embedding_add_rows(into, Tensor.from_numpy(dy, device), Tensor.from_numpy(ids.astype(np.int32), device))
    np.testing.assert_array_equal(into.numpy(), rows_reference(acc, dy, ids))


def test_errors_name_the_problem(device):
    acc = Tensor.from_numpy(np.zeros((10, 4), np.float32), device)
    dy = Tensor.from_numpy(np.ones((2, 4), np.float32), device)
    with pytest.raises(ValueError, match=r"embedding_add_rows: ids must be in \[0, 10\).*e\.g\. 10"):
        embedding_add_rows(acc, dy, np.array([1, 10]))
    with pytest.raises(ValueError, match=r"dy must have shape \(3,\) \+ \(C,\)"):
        embedding_add_rows(acc, dy, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="must have dweight's 4 channels and dtype float32"):
        embedding_add_rows(acc, Tensor.from_numpy(np.ones((2, 5), np.float32), device), np.array([1, 2]))
    with pytest.raises(ValueError, match=r"dweight must be a \(V, C\) engine.Tensor, got \(10,\)"):
        embedding_add_rows(Tensor.from_numpy(np.zeros(10, np.float32), device), dy, np.array([1, 2]))


# ---------------------------------------------------------------------------------------------- through autograd


def dense_backward(ctx, dy):
    """The embedding's backward as it was: the dense table, summed by autograd with `add`."""
    ids, vocab = ctx.saved
    return embedding_backward(dy, ids, vocab), None, None, None


TIED = ModelConfig(vocab_size=389, hidden_size=96, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                   max_position_embeddings=64, tie_word_embeddings=True)


def tied_embedding_grads(device, steps: int) -> list[np.ndarray]:
    model = Model.random(TIED, seed=3, device=device).requires_grad_()
    weight = model.named_parameters()["model.embed_tokens.weight"]
    assert weight.is_split == (device.max_binding_bytes < weight.nbytes)
    ids = np.random.default_rng(1).integers(0, TIED.vocab_size, (2, 25))
    ids[0, :9] = ids[1, 3]  # repeated ids
    seeds = np.random.default_rng(2).standard_normal((steps, 2, 24)).astype(np.float32)
    grads = []
    for seed in seeds:  # micro-batches: the second sums into the leaf's own buffer
        model.token_logprobs(ids[:, :-1], ids[:, 1:]).backward(Tensor.from_numpy(seed, device))
        grads.append(weight.grad.numpy())
    return grads


@pytest.mark.parametrize("limit", [None, 128 << 10])  # the table in one buffer, and in two row blocks
def test_a_tied_models_embedding_gradient_is_the_dense_paths(device, monkeypatch, limit):
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
    rows = tied_embedding_grads(device, 2)
    with monkeypatch.context() as patch:
        patch.setattr(_Embedding, "backward", staticmethod(dense_backward))
        dense = tied_embedding_grads(device, 2)
    for got, expected in zip(rows, dense):
        np.testing.assert_array_equal(got, expected)
    assert np.any(rows[0] != 0) and np.any(rows[1] != rows[0])
