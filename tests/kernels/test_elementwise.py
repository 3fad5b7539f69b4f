"""Elementwise kernels against numpy on awkward shapes, f32 and f16; the vec4 entries of add, mul and add_ also
against their scalar twins, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.ops import elementwise
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close
from tests.dispatch_spy import entries_dispatched

SHAPES = [(1,), (7,), (13, 17), (3, 5, 257), (2, 1, 3, 1, 5, 2), (1000, 3)]
BROADCASTS = [((7,), (1,)), ((13, 17), (17,)), ((13, 1), (1, 17)), ((3, 1, 5), (4, 5)), ((2, 3, 4), (2, 1, 4)),
              ((1,), (3, 5, 257))]


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


UNARY = {
    "silu": (ops.silu, lambda x: x / (1 + np.exp(-x))),
    "gelu": (ops.gelu, gelu_tanh),
    "exp": (ops.exp, np.exp),
    "scale": (lambda t: ops.scale(t, -2.5), lambda x: -2.5 * x),
}


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def dtype_of(elem):
    return {"f32": np.float32, "f16": np.float16}[elem]


@pytest.mark.parametrize("shape_a, shape_b", BROADCASTS + [(s, s) for s in SHAPES])
@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary_broadcasts_like_numpy(device, rng, shape_a, shape_b, op):
    for elem in elems(device):
        a = rng.standard_normal(shape_a).astype(dtype_of(elem))
        b = rng.standard_normal(shape_b).astype(dtype_of(elem))
        out = getattr(ops, op)(Tensor.from_numpy(a, device), Tensor.from_numpy(b, device))
        expected = a.astype(np.float32) + b if op == "add" else a.astype(np.float32) * b
        assert out.shape == expected.shape
        assert_close(out.numpy(), expected, elem)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", SHAPES)
def test_unary_matches_numpy(device, rng, name, shape):
    op, reference = UNARY[name]
    for elem in elems(device):
        x = (rng.standard_normal(shape) * 3).astype(dtype_of(elem))
        assert_close(op(Tensor.from_numpy(x, device)).numpy(), reference(x.astype(np.float64)), elem)


def test_gelu_and_silu_stay_finite_at_extremes(device):
    x = np.array([-1e4, -100, -20, 0, 20, 100, 1e4], np.float32)
    t = Tensor.from_numpy(x, device)
    assert_close(ops.gelu(t).numpy(), gelu_tanh(x.astype(np.float64)))
    stable_silu = x * 0.5 * (1 + np.tanh(x.astype(np.float64) / 2))  # sigmoid without exp overflow
    assert_close(ops.silu(t).numpy(), stable_silu)


def test_python_scalars_and_operators(device, rng):
    a = rng.standard_normal((4, 9)).astype(np.float32)
    t = Tensor.from_numpy(a, device)
    assert_close((t + 1.5).numpy(), a + 1.5)
    assert_close((2.0 * t).numpy(), 2 * a)
    assert_close((t * t + t).numpy(), a * a + a)


def test_more_workgroups_than_one_grid_row(device):
    n = 65535 * 256 + 1000  # needs the second grid dimension
    if n * 4 > device.max_binding_bytes:
        pytest.skip(f"a 1-D tensor of {n * 4} bytes cannot bind under a binding limit of {device.max_binding_bytes}")
    x = np.arange(n, dtype=np.float32) % 1000
    out = ops.affine(Tensor.from_numpy(x, device), 0.5, 1.0).numpy()
    np.testing.assert_array_equal(out, 0.5 * x + 1.0)


def test_errors_name_the_problem(device):
    f = Tensor.from_numpy(np.ones((2, 3), np.float32), device)
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(4,\) do not broadcast"):
        ops.add(f, Tensor.from_numpy(np.ones(4, np.float32), device))
    with pytest.raises(TypeError, match="float32 or float16, got int32"):
        ops.silu(Tensor.from_numpy(np.ones(3, np.int32), device))
    if device.has_f16:
        with pytest.raises(TypeError, match="dtypes float32 and float16"):
            ops.add(f, Tensor.from_numpy(np.ones((2, 3), np.float16), device))


@pytest.mark.parametrize("name", ["add", "mul"])
@pytest.mark.parametrize("shape_a, shape_b", [((3, 5), (3, 5)), ((3, 1, 5), (4, 5)), ((7,), (1,))])
def test_binary_gradients(device, rng, name, shape_a, shape_b):
    a = rng.standard_normal(shape_a).astype(np.float32)
    b = rng.standard_normal(shape_b).astype(np.float32)
    check_gradients(getattr(ops, name), [a, b], device)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradients(device, rng, name):
    x = rng.standard_normal((3, 7)).astype(np.float32)
    check_gradients(UNARY[name][0], [x], device)


def test_gradients_accumulate_over_reuse_and_reshape(device, rng):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    check_gradients(lambda t: ops.mul(t, t).reshape(2, 12) + ops.exp(t).reshape(2, 12), [a], device)


# ---- vec4 entries: add, mul and add_ of operands of the output's size, sizes multiples of 4

# One quad, a prime number of quads, several workgroups of 64 invocations at 8 quads each, and a broadcast that
# reads both operands in order ((1, 3, 8) against (3, 8)).
VEC4_SHAPES = [((4,), (4,)), ((13, 68), (13, 68)), ((3, 5, 1028), (3, 5, 1028)), ((1, 3, 8), (3, 8))]
# Quads per invocation: one (the GPU default), an odd count (ends that fall inside an invocation), the CPU default.
QUADS = [1, 3, 8]


@pytest.fixture(params=QUADS)
def quads(request, monkeypatch):
    monkeypatch.setattr(elementwise, "SOFTWARE_QUADS", request.param)
    monkeypatch.setattr(elementwise, "GPU_QUADS", request.param)
    return request.param


@pytest.mark.parametrize("shape_a, shape_b", VEC4_SHAPES)
@pytest.mark.parametrize("op", ["add", "mul"])
def test_vec4_binary_matches_numpy_and_the_scalar_entry(device, rng, shape_a, shape_b, op, quads):
    for elem in elems(device):
        a = rng.standard_normal(shape_a).astype(dtype_of(elem))
        b = rng.standard_normal(shape_b).astype(dtype_of(elem))
        ta, tb = Tensor.from_numpy(a, device), Tensor.from_numpy(b, device)
        out = elementwise.binary_kernel(f"{op}_naive", ta, tb).numpy()
        expected = a.astype(np.float32) + b if op == "add" else a.astype(np.float32) * b
        assert out.shape == expected.shape
        assert_close(out, expected, elem)
        np.testing.assert_array_equal(out, elementwise.binary_kernel(f"{op}_naive", ta, tb, vec4=False).numpy())


@pytest.mark.parametrize("shape", [(4,), (13, 68), (3, 5, 1028)])
def test_vec4_add_inplace_is_add_to_the_bit(device, rng, shape, quads):
    for elem in elems(device):
        start, b = (rng.standard_normal(shape).astype(dtype_of(elem)) for _ in range(2))
        tb = Tensor.from_numpy(b, device)
        vec4_acc, scalar_acc = Tensor.from_numpy(start, device), Tensor.from_numpy(start, device)
        added = ops.add(Tensor.from_numpy(start, device), tb).numpy()
        assert elementwise.add_(vec4_acc, tb) is vec4_acc
        elementwise.add_(scalar_acc, tb, vec4=False)
        np.testing.assert_array_equal(vec4_acc.numpy(), added)
        np.testing.assert_array_equal(scalar_acc.numpy(), added)
        elementwise.add_(vec4_acc, tb)  # a second accumulation reads what the first wrote
        assert_close(vec4_acc.numpy(), start.astype(np.float32) + 2 * b.astype(np.float32), elem, scale=2)


def test_vec4_is_the_default_where_sizes_allow(device, rng, monkeypatch):
    seen = entries_dispatched(device, monkeypatch)
    t = {shape: Tensor.from_numpy(rng.standard_normal(shape).astype(np.float32), device)
         for shape in [(2, 8), (2, 6), (8,), (1, 2, 8), (7,)]}
    ops.add(t[(2, 8)], t[(2, 8)])      # same shapes, 16 elements: vec4
    ops.mul(t[(1, 2, 8)], t[(2, 8)])   # nothing broadcast: vec4
    ops.add(t[(2, 6)], t[(2, 6)])      # 12 elements, but rows of 6: still whole quads, vec4
    ops.add(t[(2, 8)], t[(8,)])        # broadcast: scalar
    elementwise.add_(Tensor.from_numpy(np.ones(8, np.float32), device), t[(8,)])
    ops.mul(t[(7,)], t[(7,)])          # 7 elements: scalar
    elementwise.add_(Tensor.from_numpy(np.ones(7, np.float32), device), t[(7,)])
    assert seen == ["add_vec4", "mul_vec4", "add_vec4", "add_naive", "add_inplace_vec4", "mul_naive",
                    "add_inplace_naive"]
