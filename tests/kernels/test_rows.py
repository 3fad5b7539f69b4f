"""take_rows / put_rows (engine.ops.rows) against numpy, their gradients, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor
from wgrpo.engine.ops.rows import RowSelection, put_rows, take_rows
from tests.gradcheck import check_gradients


@pytest.mark.parametrize("n, width, picked", [
    (1, 1, [0]),                          # one row of one channel
    (7, 3, [6, 0, 3]),                    # unsorted, a width no quad divides
    (13, 8, [2, 3, 5, 7, 11]),            # vec4 rows, prime counts
    (601, 4, list(range(1, 601, 2))),     # several workgroups of the gather
])
def test_take_and_put_match_numpy_and_each_others_backward(device, rng, n, width, picked):
    rows = np.array(picked)
    x = rng.standard_normal((n, width)).astype(np.float32)
    dy = rng.standard_normal((rows.size, width)).astype(np.float32)
    xt = Tensor.from_numpy(x, device).requires_grad_()
    taken = take_rows(xt, rows)
    taken.backward(Tensor.from_numpy(dy, device))
    np.testing.assert_array_equal(taken.numpy(), x[rows])
    scattered = np.zeros_like(x)
    scattered[rows] = dy
    np.testing.assert_array_equal(xt.grad.numpy(), scattered)  # x[rows]'s gradient: dy at rows, zeros elsewhere

    yt = Tensor.from_numpy(dy, device).requires_grad_()
    put = put_rows(yt, rows, n)
    g = rng.standard_normal((n, width)).astype(np.float32)
    put.backward(Tensor.from_numpy(g, device))
    np.testing.assert_array_equal(put.numpy(), scattered)
    np.testing.assert_array_equal(yt.grad.numpy(), g[rows])


def test_a_vector_keeps_its_shape(device):
    selection = RowSelection([4, 1], 5, device)
    y = selection.put(Tensor.from_numpy(np.array([2.0, 3.0], np.float32), device))
    assert y.shape == (5,)
    np.testing.assert_array_equal(y.numpy(), [0, 3, 0, 0, 2])
    np.testing.assert_array_equal(selection.take(y).numpy(), [2, 3])


def test_finite_differences(device, rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    check_gradients(lambda a: take_rows(a, [5, 2, 0]), [x], device)
    check_gradients(lambda a: put_rows(a, [5, 2, 0], 6), [x[:3]], device)


def test_errors_name_the_problem(device):
    x = Tensor.from_numpy(np.ones((4, 2), np.float32), device)
    with pytest.raises(ValueError, match=r"rows: 1 index\(es\) outside \[0, 4\), e.g. 4"):
        take_rows(x, [0, 4])
    with pytest.raises(ValueError, match="the 3 indices must be distinct"):
        take_rows(x, [1, 2, 1])
    with pytest.raises(TypeError, match="1-D integer array"):
        take_rows(x, [0.5])
    with pytest.raises(ValueError, match="put_rows: y has 4 rows for a selection of 2"):
        put_rows(x, [0, 1], 9)
    with pytest.raises(ValueError, match="take_rows: x has 4 rows, the selection is of 9"):
        RowSelection([0], 9, device).take(x)
    with pytest.raises(TypeError, match="rows: gathers float32 rows"):
        take_rows(Tensor.from_numpy(np.ones((4, 2), np.int32), device), [1])
    assert len(RowSelection([], 4, device)) == 0  # an empty selection is a selection
