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
