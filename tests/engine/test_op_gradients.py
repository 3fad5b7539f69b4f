"""Finite-difference checks of the gradients of reductions, softmax, transpose and broadcast_to."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.autograd import no_grad
from tests.gradcheck import check_gradients


@pytest.mark.parametrize("op", ["sum", "mean_sq"])
@pytest.mark.parametrize("shape, axis, keepdims", [((5,), 0, False), ((3, 7), -1, False), ((3, 4, 5), 1, True),
                                                   ((2, 1100), 1, False)])
def test_reduction_gradients(device, rng, op, shape, axis, keepdims):
    x = rng.standard_normal(shape).astype(np.float32)
    check_gradients(lambda t: getattr(ops, op)(t, axis, keepdims), [x], device)


@pytest.mark.parametrize("shape, causal", [((3, 7), False), ((2, 4, 6), True), ((2, 1030), False)])
def test_softmax_gradient(device, rng, shape, causal):
    x = rng.standard_normal(shape).astype(np.float32)
    check_gradients(lambda t: ops.softmax(t, causal=causal), [x], device)


@pytest.mark.parametrize("shape, dims", [((3, 5), (0, 1)), ((2, 3, 4, 5), (1, 2)), ((1, 4, 3), (0, 1))])
def test_transpose_gradient(device, rng, shape, dims):
    x = rng.standard_normal(shape).astype(np.float32)
    check_gradients(lambda t: ops.transpose(t, *dims), [x], device)


def test_broadcast_to_values_and_gradient(device, rng):
    x = rng.standard_normal((3, 1, 5)).astype(np.float32)
    np.testing.assert_array_equal(ops.broadcast_to(Tensor.from_numpy(x, device), (2, 3, 4, 5)).numpy(),
                                  np.broadcast_to(x, (2, 3, 4, 5)))
    check_gradients(lambda t: ops.broadcast_to(t, (2, 3, 4, 5)), [x], device)
    with pytest.raises(ValueError, match=r"\(3, 1, 5\) cannot be broadcast to \(3, 2\)"):
        ops.broadcast_to(Tensor.from_numpy(x, device), (3, 2))


def test_max_refuses_to_build_a_graph(device):
    x = Tensor.from_numpy(np.ones((2, 3), np.float32), device).requires_grad_()
    with pytest.raises(ValueError, match="max: has no gradient"):
        ops.max(x)
    with no_grad():
        np.testing.assert_array_equal(ops.max(x).numpy(), [1.0, 1.0])
