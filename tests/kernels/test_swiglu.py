"""kernels/swiglu.wgsl through engine.ops.swiglu: silu(gate) * up and its one-kernel backward.

The backward kernel is checked against the analytic numpy gradient (tight) and, through autograd, against central
finite differences of the GPU forward (loose: f32, eps = 1e-2). The vec4 entries (sizes multiples of 4) are
checked against numpy and, bit for bit, against the scalar entries, with several quads per invocation.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops.swiglu import swiglu_backward, swiglu_forward, swiglu_fused_backward, swiglu_fused_forward
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close
from tests.dispatch_spy import entries_dispatched

swiglu_module = importlib.import_module("wgrpo.engine.ops.swiglu")  # `ops.swiglu` is the function of that name

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


@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 13), (3, 8)])  # the last runs the vec4 entries
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


# ---- vec4 entries: sizes multiples of 4 (n for swiglu, I for swiglu_fused)

# n = 4, a prime number of quads per row, and rows over several workgroups at 8 quads per invocation.
VEC4_SHAPES = [(4,), (13, 68), (3, 5, 1028)]
# (..., 2I), I % 4 == 0: I = 4 in one row or 1-D, N prime, I = 4 * 97 (rows that wrap inside an invocation's
# quads), I = 4 * 259 over several workgroups, N = 1009 rows of 3 quads each.
FUSED_VEC4_SHAPES = [(8,), (1, 8), (13, 24), (3, 5, 776), (2, 7, 2072), (1009, 24)]
# Quads per invocation: one (the GPU default), an odd count (ends that fall inside an invocation), the CPU default.
QUADS = [1, 3, 8]


@pytest.fixture(params=QUADS)
def quads(request, monkeypatch):
    monkeypatch.setattr(swiglu_module, "SOFTWARE_QUADS", request.param)
    monkeypatch.setattr(swiglu_module, "GPU_QUADS", request.param)
    return request.param


@pytest.mark.parametrize("shape", VEC4_SHAPES)
def test_vec4_matches_numpy_and_the_scalar_entries(device, rng, shape, quads):
    for elem in elems(device):
        gate, up, dy = ((3 * rng.standard_normal(shape)).astype(dtype_of(elem)) for _ in range(3))
        tensors = [Tensor.from_numpy(a, device) for a in (gate, up, dy)]
        out = swiglu_forward(*tensors[:2], variant="vec4").numpy()
        assert_close(out, reference(gate, up), elem)
        np.testing.assert_array_equal(out, swiglu_forward(*tensors[:2], variant="scalar").numpy())
        dgate, dup = swiglu_backward(*tensors, variant="vec4")
        expected_dgate, expected_dup = backward_reference(gate, up, dy)
        assert_close(dgate.numpy(), expected_dgate, elem, scale=4 if elem == "f16" else 1)
        assert_close(dup.numpy(), expected_dup, elem, scale=4 if elem == "f16" else 1)
        scalar_dgate, scalar_dup = swiglu_backward(*tensors, variant="scalar")
        np.testing.assert_array_equal(dgate.numpy(), scalar_dgate.numpy())
        np.testing.assert_array_equal(dup.numpy(), scalar_dup.numpy())


@pytest.mark.parametrize("shape", FUSED_VEC4_SHAPES)
def test_fused_vec4_matches_numpy_and_the_scalar_entries(device, rng, shape, quads):
    width = shape[-1] // 2
    for elem in elems(device):
        gate_up = (3 * rng.standard_normal(shape)).astype(dtype_of(elem))
        dy = (3 * rng.standard_normal((*shape[:-1], width))).astype(dtype_of(elem))
        t_gate_up, t_dy = Tensor.from_numpy(gate_up, device), Tensor.from_numpy(dy, device)
        gate, up = gate_up[..., :width], gate_up[..., width:]
        out = swiglu_fused_forward(t_gate_up, variant="vec4").numpy()
        assert out.shape == (*shape[:-1], width)
        assert_close(out, reference(gate, up), elem)
        np.testing.assert_array_equal(out, swiglu_fused_forward(t_gate_up, variant="scalar").numpy())
        got = swiglu_fused_backward(t_gate_up, t_dy, variant="vec4").numpy()
        expected_dgate, expected_dup = backward_reference(gate, up, dy)
        assert_close(got[..., :width], expected_dgate, elem, scale=4 if elem == "f16" else 1)
        assert_close(got[..., width:], expected_dup, elem, scale=4 if elem == "f16" else 1)
        np.testing.assert_array_equal(got, swiglu_fused_backward(t_gate_up, t_dy, variant="scalar").numpy())


def test_vec4_is_the_default_where_sizes_allow(device, rng, monkeypatch):
    seen = entries_dispatched(device, monkeypatch)
    for shape in [(2, 8), (2, 6)]:  # I = 4: vec4; I = 3: scalar
        gate_up = Tensor.from_numpy(rng.standard_normal(shape).astype(np.float32), device)
        dy = Tensor.from_numpy(rng.standard_normal((2, shape[1] // 2)).astype(np.float32), device)
        swiglu_fused_backward(gate_up, dy)
        ops.swiglu_fused(gate_up)
    for n in (8, 6):
        a = Tensor.from_numpy(rng.standard_normal(n).astype(np.float32), device)
        swiglu_backward(a, a, a)
        ops.swiglu(a, a)
    assert seen == ["swiglu_fused_backward4", "swiglu_fused_forward4", "swiglu_fused_backward", "swiglu_fused_forward",
                    "swiglu_backward4", "swiglu_forward4", "swiglu_backward", "swiglu_forward"]


def test_vec4_errors_name_the_problem(device):
    odd = Tensor.from_numpy(np.ones((2, 6), np.float32), device)
    with pytest.raises(InputError, match=r"swiglu_fused: the vec4 variant needs I \(half the last axis\) a multiple "
                                         r"of 4, got shape \(2, 6\)"):
        swiglu_fused_forward(odd, variant="vec4")
    with pytest.raises(InputError, match="swiglu_backward: the vec4 variant needs a size that is a multiple of 4, "
                                         "got 6 elements"):
        swiglu_backward(*[Tensor.from_numpy(np.ones(6, np.float32), device)] * 3, variant="vec4")
    with pytest.raises(InputError, match=r"swiglu: variant must be one of \('scalar', 'vec4'\) or None, got 'vec8'"):
        swiglu_forward(odd, odd, variant="vec8")
