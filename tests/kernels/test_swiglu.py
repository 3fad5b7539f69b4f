"""kernels/swiglu.wgsl through engine.ops.swiglu: silu(gate) * up and its one-kernel backward.

The backward kernel is checked against the analytic numpy gradient (tight) and, through autograd, against central
finite differences of the GPU forward (loose: f32, eps = 1e-2).
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.ops.swiglu import swiglu_backward, swiglu_fused_backward
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

SHAPES = [(1,), (7,), (13, 17), (3, 5, 257), (2, 3, 1, 11), (1000, 3)]


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def dtype_of(elem):
    return {"f32": np.float32, "f16": np.float16}[elem]


def sigmoid(g):
    return 0.5 * (1 + np.tanh(g / 2))  # no overflow at large |g|


def reference(gate, up):
    gate, up = gate.astype(np.float64), up.astype(np.float64)
    return gate * sigmoid(gate) * up


def backward_reference(gate, up, dy):
    gate, up, dy = (a.astype(np.float64) for a in (gate, up, dy))
    s = sigmoid(gate)
    return dy * up * s * (1 + gate * (1 - s)), dy * gate * s


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_numpy(device, rng, shape):
    for elem in elems(device):
        gate = (3 * rng.standard_normal(shape)).astype(dtype_of(elem))
        up = rng.standard_normal(shape).astype(dtype_of(elem))
        out = ops.swiglu(Tensor.from_numpy(gate, device), Tensor.from_numpy(up, device))
        assert out.shape == shape and out.dtype == gate.dtype
        assert_close(out.numpy(), reference(gate, up), elem)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_kernel_matches_analytic_gradient(device, rng, shape):
    for elem in elems(device):
        gate, up, dy = ((3 * rng.standard_normal(shape)).astype(dtype_of(elem)) for _ in range(3))
        dgate, dup = swiglu_backward(*(Tensor.from_numpy(a, device) for a in (gate, up, dy)))
        expected_dgate, expected_dup = backward_reference(gate, up, dy)
        assert_close(dgate.numpy(), expected_dgate, elem, scale=4 if elem == "f16" else 1)
        assert_close(dup.numpy(), expected_dup, elem, scale=4 if elem == "f16" else 1)


def test_extremes_stay_finite(device):
    gate = np.array([-1e4, -100, -20, 0, 20, 100, 1e4], np.float32)
    up = np.full_like(gate, 0.5)
    g, u = Tensor.from_numpy(gate, device), Tensor.from_numpy(up, device)
    assert_close(ops.swiglu(g, u).numpy(), reference(gate, up))
    dgate, dup = swiglu_backward(g, u, Tensor.from_numpy(np.ones_like(gate), device))
    expected_dgate, expected_dup = backward_reference(gate, up, np.ones_like(gate))
    assert np.all(np.isfinite(dgate.numpy())) and np.all(np.isfinite(dup.numpy()))
    assert_close(dgate.numpy(), expected_dgate)
    assert_close(dup.numpy(), expected_dup)


@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 13)])
def test_gradients_by_finite_differences(device, rng, shape):
    gate, up = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    check_gradients(ops.swiglu, [gate, up], device)


def test_gradient_only_for_inputs_that_need_it(device, rng):
    gate = Tensor.from_numpy(rng.standard_normal((4, 6)).astype(np.float32), device).requires_grad_()
    up = Tensor.from_numpy(rng.standard_normal((4, 6)).astype(np.float32), device)
    ops.swiglu(gate, up).backward(Tensor.from_numpy(np.ones((4, 6), np.float32), device))
    assert gate.grad is not None and up.grad is None
    expected, _ = backward_reference(gate.numpy(), up.numpy(), np.ones((4, 6)))
    assert_close(gate.grad.numpy(), expected)


def test_errors_name_the_problem(device):
    a = Tensor.from_numpy(np.ones((2, 3), np.float32), device)
    with pytest.raises(ValueError, match=r"gate has shape \(2, 3\) but up has shape \(3, 2\)"):
        ops.swiglu(a, Tensor.from_numpy(np.ones((3, 2), np.float32), device))
    with pytest.raises(TypeError, match="up must be float32 or float16, got int32"):
        ops.swiglu(a, Tensor.from_numpy(np.ones((2, 3), np.int32), device))
    with pytest.raises(TypeError, match="gate must be an engine.Tensor"):
        ops.swiglu(np.ones((2, 3), np.float32), a)
    if device.has_f16:
        with pytest.raises(TypeError, match="gate is float32 but up is float16"):
            ops.swiglu(a, Tensor.from_numpy(np.ones((2, 3), np.float16), device))


# ---- swiglu_fused: gate and up side by side in one tensor (swiglu_fused_forward, swiglu_fused_backward)

# (..., 2I): I = 1, primes, a row of 257, rows over several workgroups.
FUSED_SHAPES = [(2,), (1, 2), (7, 6), (13, 34), (3, 5, 514), (1000, 6)]


@pytest.mark.parametrize("shape", FUSED_SHAPES)
def test_fused_forward_is_swiglu_of_the_halves(device, rng, shape):
    width = shape[-1] // 2
    for elem in elems(device):
        gate_up = (3 * rng.standard_normal(shape)).astype(dtype_of(elem))
        gate, up = np.ascontiguousarray(gate_up[..., :width]), np.ascontiguousarray(gate_up[..., width:])
        out = ops.swiglu_fused(Tensor.from_numpy(gate_up, device))
        assert out.shape == (*shape[:-1], width) and out.dtype == gate_up.dtype
        assert_close(out.numpy(), reference(gate, up), elem)
        # the same formula per element as swiglu: bit for bit
        plain = ops.swiglu(Tensor.from_numpy(gate, device), Tensor.from_numpy(up, device))
        np.testing.assert_array_equal(out.numpy(), plain.numpy())


@pytest.mark.parametrize("shape", FUSED_SHAPES)
def test_fused_backward_kernel_writes_both_halves(device, rng, shape):
    width = shape[-1] // 2
    for elem in elems(device):
        gate_up = (3 * rng.standard_normal(shape)).astype(dtype_of(elem))
        dy = (3 * rng.standard_normal((*shape[:-1], width))).astype(dtype_of(elem))
        d_gate_up = swiglu_fused_backward(Tensor.from_numpy(gate_up, device), Tensor.from_numpy(dy, device))
        assert d_gate_up.shape == shape
        expected_dgate, expected_dup = backward_reference(gate_up[..., :width], gate_up[..., width:], dy)
        got = d_gate_up.numpy()
        assert_close(got[..., :width], expected_dgate, elem, scale=4 if elem == "f16" else 1)
        assert_close(got[..., width:], expected_dup, elem, scale=4 if elem == "f16" else 1)


@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 14)])
def test_fused_gradients_by_finite_differences(device, rng, shape):
    check_gradients(ops.swiglu_fused, [rng.standard_normal(shape).astype(np.float32)], device)


def test_fused_errors_name_the_problem(device):
    with pytest.raises(ValueError, match=r"swiglu_fused: gate_up must have an even last axis .* got shape \(2, 5\)"):
        ops.swiglu_fused(Tensor.from_numpy(np.zeros((2, 5), np.float32), device))
    gate_up = Tensor.from_numpy(np.zeros((2, 6), np.float32), device)
    with pytest.raises(ValueError, match=r"swiglu_fused_backward: dy is \(2, 6\) float32, expected \(2, 3\) float32"):
        swiglu_fused_backward(gate_up, gate_up)
