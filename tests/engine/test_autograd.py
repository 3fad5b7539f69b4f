"""The autograd graph: leaves, accumulation, no_grad and error messages."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.autograd import no_grad


def test_diamond_graph_sums_both_paths(device):
    x = Tensor.from_numpy(np.array([1.0, 2.0, 3.0], np.float32), device).requires_grad_()
    y = ops.add(ops.scale(x, 2.0), ops.mul(x, x))  # dy/dx = 2 + 2x
    y.backward(Tensor.from_numpy(np.ones(3, np.float32), device))
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 6.0, 8.0])


def test_grads_accumulate_across_backward_calls(device):
    x = Tensor.from_numpy(np.ones(2, np.float32), device).requires_grad_()
    ones = Tensor.from_numpy(np.ones(2, np.float32), device)
    ops.scale(x, 3.0).backward(ones)
    ops.scale(x, 3.0).backward(ones)
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


def test_no_grad_records_nothing(device):
    x = Tensor.from_numpy(np.ones(2, np.float32), device).requires_grad_()
    with no_grad():
        y = ops.exp(x)
    assert not y.requires_grad and y._grad_fn is None


def test_constants_get_no_grad(device):
    x = Tensor.from_numpy(np.ones(2, np.float32), device).requires_grad_()
    c = Tensor.from_numpy(np.full(2, 5.0, np.float32), device)
    ops.mul(x, c).backward(Tensor.from_numpy(np.ones(2, np.float32), device))
    assert c.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_errors_name_the_problem(device):
    x = Tensor.from_numpy(np.ones((2, 2), np.float32), device)
    with pytest.raises(ValueError, match="does not require grad"):
        x.backward()
    x.requires_grad_()
    with pytest.raises(ValueError, match=r"non-scalar tensor of shape \(2, 2\)"):
        ops.exp(x).backward()
    with pytest.raises(TypeError, match="int32"):
        Tensor.from_numpy(np.ones(2, np.int32), device).requires_grad_()


# ---------------------------------------------------------------------------------------------- accumulation


@pytest.mark.parametrize("limit", [None, 4 << 10])  # one buffer, and a gradient held in row blocks
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_micro_batch_gradients_sum_in_place_after_the_second(device, monkeypatch, limit, dtype):
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((37, 61)).astype(dtype) for _ in range(4)]
    x = Tensor.from_numpy(np.zeros((37, 61), dtype), device).requires_grad_()
    given = [Tensor.from_numpy(g, device) for g in grads]
    assert limit is None or x.is_split
    memory = device.runtime.memory
    for k, g in enumerate(given):
        if k >= 2:
            held = memory.total
            memory.reset_peak()
        x.backward(g)
        if k == 0:
            assert x.grad is g  # the first gradient is kept as handed over
        if k >= 2:
            assert memory.peak_total == held  # summed in place: nothing allocated
            assert x.grad is summed
        summed = x.grad
    expected = grads[0]
    for g in grads[1:]:
        expected = (expected.astype(np.float32) + g).astype(dtype)  # f32 sums, in the order autograd adds
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    np.testing.assert_array_equal(given[0].numpy(), grads[0])  # a gradient handed over is never written


def test_a_shared_gradient_is_never_summed_into(device):
    # add's backward hands one dy to both operands: each leaf sums into a buffer of its own
    a = Tensor.from_numpy(np.zeros(5, np.float32), device).requires_grad_()
    b = Tensor.from_numpy(np.zeros(5, np.float32), device).requires_grad_()
    for k in range(3):
        ops.add(a, b).backward(Tensor.from_numpy(np.full(5, k + 1.0, np.float32), device))
        if k == 0:
            assert a.grad is b.grad
    assert a.grad is not b.grad
    np.testing.assert_array_equal(a.grad.numpy(), np.full(5, 6.0, np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), np.full(5, 6.0, np.float32))
    # one leaf used twice in one op: its second gradient makes the sum it owns
    x = Tensor.from_numpy(np.ones(3, np.float32), device).requires_grad_()
    dy = Tensor.from_numpy(np.full(3, 2.0, np.float32), device)
    for _ in range(2):
        ops.add(x, x).backward(dy)
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, 8.0, np.float32))
    np.testing.assert_array_equal(dy.numpy(), np.full(3, 2.0, np.float32))


def test_a_sum_handed_on_by_a_checkpoint_is_shared(device):
    # the checkpointed block's input gets a sum of two gradients (h + h), which flows on through an add to two
    # leaves: neither may sum into it later
    from wgrpo.engine.checkpointing import checkpoint

    a = Tensor.from_numpy(np.zeros(4, np.float32), device).requires_grad_()
    b = Tensor.from_numpy(np.zeros(4, np.float32), device).requires_grad_()
    for k in range(3):
        (out,) = checkpoint(lambda h: (ops.add(h, h),), ops.add(a, b))
        out.backward(Tensor.from_numpy(np.full(4, k + 1.0, np.float32), device))
    np.testing.assert_array_equal(a.grad.numpy(), np.full(4, 12.0, np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), np.full(4, 12.0, np.float32))


def test_an_intermediate_no_backward_needs_is_freed_before_backward(device):
    # exp(x) is consumed by an add, whose backward needs no operand: the graph keeps its shape, not its buffer
    x = Tensor.from_numpy(np.full(4096, 0.5, np.float32), device).requires_grad_()
    memory = device.runtime.memory
    before = memory.current["activations"]
    y = ops.exp(x)
    held = memory.current["activations"] - before  # exp's output, which exp's backward saves
    z = ops.add(ops.scale(y, 2.0), y)
    del y
    w = ops.add(z, z)  # z is dropped below: nothing of w's backward reads it
    del z
    assert memory.current["activations"] - before == 2 * held  # y (saved by exp) and w; z and 2y are gone
    w.backward(Tensor.from_numpy(np.ones(4096, np.float32), device))
    np.testing.assert_allclose(x.grad.numpy(), np.full(4096, 6 * np.exp(0.5)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- an embedding's rows


def embedding_rows_case(device, rng, vocab=29, channels=7):
    ids = rng.integers(0, vocab, (2, 6))
    ids[0, :3] = ids[1, 5]  # a repeated id
    dy = rng.standard_normal((2, 6, channels)).astype(np.float32)
    return ids, dy, backward_rows_reference(ids, dy, vocab)


def backward_rows_reference(ids, dy, vocab):
    rows = np.zeros((vocab, dy.shape[-1]), np.float32)  # f32 sums in position order, as the kernel
    for t, v in enumerate(ids.reshape(-1)):
        rows[v] += dy.reshape(-1, dy.shape[-1])[t]
    return rows


@pytest.mark.parametrize("limit", [None, 512])  # one buffer, and the table in two row blocks
def test_embedding_rows_go_into_a_copy_of_a_handed_over_gradient(device, monkeypatch, rng, limit):
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
    ids, dy, rows = embedding_rows_case(device, rng)
    first = rng.standard_normal((29, 7)).astype(np.float32)
    w = Tensor.from_numpy(np.zeros((29, 7), np.float32), device).requires_grad_()
    given = Tensor.from_numpy(first, device)
    w.backward(given)
    assert w.grad is given and w.is_split == (limit is not None)
    ops.embedding(ids, w).backward(Tensor.from_numpy(dy, device))
    assert w.grad is not given and w.grad.owned
    np.testing.assert_array_equal(given.numpy(), first)  # a gradient handed over is never written
    np.testing.assert_array_equal(w.grad.numpy(), first + rows)


def test_embedding_rows_go_into_an_owned_sum_in_place(device, rng):
    ids, dy, rows = embedding_rows_case(device, rng, vocab=3001, channels=16)
    w = Tensor.from_numpy(np.zeros((3001, 16), np.float32), device).requires_grad_()
    dyt = Tensor.from_numpy(dy, device)
    ops.embedding(ids, w).backward(dyt)  # the first: the dense table, made for this leaf and so owned
    summed = w.grad
    assert summed.owned
    np.testing.assert_array_equal(summed.numpy(), rows)
    memory = device.runtime.memory
    out = ops.embedding(ids, w)
    held = memory.total
    memory.reset_peak()
    out.backward(dyt)
    assert w.grad is summed
    assert memory.peak_total - held < w.nbytes // 4  # only the positions grouped by id: no table
    np.testing.assert_array_equal(w.grad.numpy(), rows + rows)


def test_embedding_rows_never_go_into_a_gradient_another_leaf_holds(device, rng):
    # add's backward hands one dy to both leaves; the embedding's rows then reach one of them
    ids, dy, rows = embedding_rows_case(device, rng)
    a = Tensor.from_numpy(np.zeros((29, 7), np.float32), device).requires_grad_()
    b = Tensor.from_numpy(np.zeros((29, 7), np.float32), device).requires_grad_()
    ones = np.ones((29, 7), np.float32)
    ops.add(a, b).backward(Tensor.from_numpy(ones, device))
    assert a.grad is b.grad
    ops.embedding(ids, a).backward(Tensor.from_numpy(dy, device))
    np.testing.assert_array_equal(a.grad.numpy(), ones + rows)
    np.testing.assert_array_equal(b.grad.numpy(), ones)


def test_an_embedding_of_a_non_leaf_weight_gets_the_dense_table(device, rng):
    ids, dy, rows = embedding_rows_case(device, rng)
    w = Tensor.from_numpy(rng.standard_normal((29, 7)).astype(np.float32), device).requires_grad_()
    ops.embedding(ids, ops.scale(w, 3.0)).backward(Tensor.from_numpy(dy, device))
    np.testing.assert_allclose(w.grad.numpy(), 3.0 * rows, rtol=1e-6)
