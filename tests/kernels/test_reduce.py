"""kernels/reduce.wgsl through engine.ops: sum, max, mean_sq over any axis, every kernel variant.

Error bound: the kernels accumulate in f32, sequentially (reduce_serial), in 256 strided partials plus a tree
(reduce_workgroup) or in 8 sequential strips merged in order (reduce_columns4). The worst case of sequential f32 summation is (n - 1) * 2**-24 * sum|x|; for random data
the error grows like a random walk, so sums are checked with the f32 tolerance widened by sqrt(n) (measured
errors stay about 10x inside it). max is exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from wgrpo.engine import ops
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops.reduce import reduce
from wgrpo.engine.tensor import Tensor
from tests.tolerances import assert_close
from tests.dispatch_spy import entries_dispatched

# (shape, axis): the last axis (fast path), the first, a middle one; primes; rows longer than a workgroup.
CASES = [
    ((1,), 0),
    ((7, 13), -1),
    ((7, 13), 0),
    ((3, 5, 257), -1),
    ((3, 5, 257), 1),
    ((3, 5, 257), 0),
    ((2, 4099), -1),
    ((1000, 3), 0),
    ((2, 3, 4, 5), 2),
    ((2, 3, 4, 5), -4),
]


def reference(x: np.ndarray, op: str, axis: int, keepdims: bool = False) -> np.ndarray:
    x = x.astype(np.float64)
    if op == "sum":
        return x.sum(axis=axis, keepdims=keepdims)
    if op == "max":
        return x.max(axis=axis, keepdims=keepdims)
    return (x * x).mean(axis=axis, keepdims=keepdims)


def check(actual: np.ndarray, x: np.ndarray, op: str, axis: int, elem: str = "f32", keepdims: bool = False):
    expected = reference(x, op, axis, keepdims)
    assert actual.shape == expected.shape
    assert_close(actual, expected, elem, scale=1.0 if op == "max" else math.sqrt(x.shape[axis]))


@pytest.mark.parametrize("variant", ["serial", "workgroup"])
@pytest.mark.parametrize("op", ["sum", "max", "mean_sq"])
@pytest.mark.parametrize("shape,axis", CASES)
def test_reduce_matches_numpy(device, shape, axis, op, variant):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out = reduce(Tensor.from_numpy(x, device), op, axis, variant=variant)
    assert out.dtype == np.float32
    check(out.numpy(), x, op, axis)


@pytest.mark.parametrize("op", ["sum", "max", "mean_sq"])
@pytest.mark.parametrize("shape,axis", [((7, 13), -1), ((2, 4099), 1), ((3, 5, 257), 1)])
def test_public_names_pick_a_variant(device, shape, axis, op):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    out = getattr(ops, op)(Tensor.from_numpy(x, device), axis)
    check(out.numpy(), x, op, axis)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_keepdims(device, axis):
    x = np.random.default_rng(3).standard_normal((5, 6, 7)).astype(np.float32)
    t = Tensor.from_numpy(x, device)
    for op in ("sum", "max", "mean_sq"):
        check(getattr(ops, op)(t, axis=axis, keepdims=True).numpy(), x, op, axis, keepdims=True)


def test_max_handles_infinities_and_large_values(device):
    x = np.array([[-np.inf, -np.inf, -np.inf], [-3e38, -np.inf, -1e30], [1e30, 2e30, -np.inf]], np.float32)
    for variant in ("serial", "workgroup"):
        out = reduce(Tensor.from_numpy(x, device), "max", -1, variant=variant).numpy()
        np.testing.assert_array_equal(out, x.max(axis=-1))


def test_sum_error_within_sequential_bound(device):
    x = np.random.default_rng(4).uniform(0.0, 1.0, (3, 4099)).astype(np.float32)  # same signs: errors add up
    bound = (x.shape[1] - 1) * 2.0**-24 * np.abs(x.astype(np.float64)).sum(axis=1)
    for variant in ("serial", "workgroup"):
        out = reduce(Tensor.from_numpy(x, device), "sum", -1, variant=variant).numpy()
        assert np.all(np.abs(out - x.astype(np.float64).sum(axis=1)) <= bound)


def test_grid_beyond_65535_workgroups(device):
    x = np.random.default_rng(5).standard_normal((65537, 3)).astype(np.float32)
    out = reduce(Tensor.from_numpy(x, device), "sum", -1, variant="workgroup")  # one workgroup per row: 2-D grid
    check(out.numpy(), x, "sum", -1)


def test_empty_axes(device):
    x = Tensor.empty((3, 0, 2), np.float32, device)  # (Tensor.from_numpy refuses empty arrays for now)
    np.testing.assert_array_equal(ops.sum(x, axis=1).numpy(), np.zeros((3, 2), np.float32))
    assert ops.sum(x, axis=0).shape == (0, 2)
    with pytest.raises(ValueError, match=r"max: the reduced axis 1 of x with shape \(3, 0, 2\) is empty"):
        ops.max(x, axis=1)


@pytest.mark.parametrize("op", ["sum", "max", "mean_sq"])
@pytest.mark.parametrize("shape,axis", [((7, 13), -1), ((3, 257, 5), 1), ((2, 1500), -1)])
def test_f16(device, shape, axis, op):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float16)
    out = getattr(ops, op)(Tensor.from_numpy(x, device), axis)
    assert out.dtype == np.float16
    expected = reference(x, op, axis)
    # The f32 accumulation is exact enough; what remains is rounding the result to f16 (relative 2**-11).
    assert_close(out.numpy(), expected, "f16", scale=max(1.0, float(np.abs(expected).max()) / 8))


def test_errors_name_the_argument(device):
    x = Tensor.from_numpy(np.zeros((2, 3), np.float32), device)
    with pytest.raises(ValueError, match=r"sum: axis=2 is out of range for x of shape \(2, 3\)"):
        ops.sum(x, axis=2)
    with pytest.raises(ValueError, match=r"axis=-3"):
        ops.mean_sq(x, axis=-3)
    with pytest.raises(TypeError, match="axis must be an int"):
        ops.sum(x, axis=1.0)
    with pytest.raises(TypeError, match="max: x must be float32 or float16, got int32"):
        ops.max(Tensor.from_numpy(np.zeros((2, 3), np.int32), device))
    with pytest.raises(TypeError, match="x must be an engine.Tensor"):
        ops.sum(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"at least 1 dimension\(s\), got shape \(\)"):
        ops.sum(Tensor.empty((), np.float32, device))
    with pytest.raises(ValueError, match="variant"):
        reduce(x, "sum", variant="tiled")


# ---- reduce_columns4: the axes after the reduced one hold a multiple of 4 elements

# (shape, axis): one quad of outputs from one row; a prime number of rows; the bias gradient of the benchmark's
# joined projection; a middle axis shorter than the 8 strips; primes around a quad axis; rows that do not split into
# 8 strips evenly; output quads over several workgroups; an empty reduced axis.
COLUMN_CASES = [
    ((1, 4), 0),
    ((7, 12), 0),
    ((1000, 256), 0),  # under 1 MiB: CI's second pass binds at most that
    ((5, 3, 4), 1),
    ((2, 1031, 12), 1),
    ((1001, 8), 0),
    ((65, 268), 0),
    ((2, 3, 4, 5), 0),
    ((3, 2, 8), -2),
]


@pytest.mark.parametrize("op", ["sum", "max", "mean_sq"])
@pytest.mark.parametrize("shape,axis", COLUMN_CASES)
def test_columns4_matches_numpy(device, shape, axis, op):
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    out = reduce(Tensor.from_numpy(x, device), op, axis, variant="columns4")
    check(out.numpy(), x, op, axis)


@pytest.mark.parametrize("op", ["sum", "max", "mean_sq"])
def test_columns4_f16(device, op):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    x = np.random.default_rng(8).standard_normal((257, 12)).astype(np.float16)
    out = reduce(Tensor.from_numpy(x, device), op, 0, variant="columns4")
    assert out.dtype == np.float16
    expected = reference(x, op, 0)
    assert_close(out.numpy(), expected, "f16", scale=max(1.0, float(np.abs(expected).max()) / 8))


def test_columns4_max_handles_infinities(device):
    x = np.full((9, 8), -np.inf, np.float32)
    x[3, 1], x[8, 2], x[0, 3] = -3e38, 1e30, 5.0
    out = reduce(Tensor.from_numpy(x, device), "max", 0, variant="columns4").numpy()
    np.testing.assert_array_equal(out, x.max(axis=0))


def test_columns4_is_deterministic_and_the_default(device, monkeypatch):
    x = Tensor.from_numpy(np.random.default_rng(9).standard_normal((1000, 256)).astype(np.float32), device)
    seen = entries_dispatched(device, monkeypatch)
    first = ops.sum(x, axis=0).numpy()
    for _ in range(2):
        np.testing.assert_array_equal(ops.sum(x, axis=0).numpy(), first)
    ops.sum(Tensor.from_numpy(np.ones((3, 6), np.float32), device), axis=0)  # 6 columns: a per-row kernel
    ops.sum(x, axis=1)  # the last axis: inner = 1
    tall = np.random.default_rng(3).standard_normal((5003, 4)).astype(np.float32)
    total = ops.sum(Tensor.from_numpy(tall, device), axis=0)  # one quad over many rows: a workgroup per column
    assert seen == ["reduce_columns4"] * 3 + ["reduce_serial", "reduce_serial", "reduce_workgroup"]
    np.testing.assert_allclose(total.numpy(), tall.sum(axis=0), rtol=1e-4, atol=1e-3)


def test_columns4_grid_beyond_65535_workgroups(device):
    x = np.random.default_rng(10).standard_normal((1, 8 * 4 * 65536 + 12)).astype(np.float32)  # 2-D grid
    if x.nbytes > device.max_binding_bytes:
        pytest.skip(f"{x.nbytes} bytes in one row cannot bind under a binding limit of {device.max_binding_bytes}")
    out = reduce(Tensor.from_numpy(x, device), "sum", 0, variant="columns4")
    np.testing.assert_array_equal(out.numpy(), x[0])


def test_columns4_empty_axis_sums_to_zero(device):
    x = Tensor.empty((3, 0, 4), np.float32, device)
    np.testing.assert_array_equal(reduce(x, "sum", 1, variant="columns4").numpy(), np.zeros((3, 4), np.float32))


def test_columns4_errors_name_the_problem(device):
    x = Tensor.from_numpy(np.zeros((2, 3), np.float32), device)
    with pytest.raises(InputError, match="the columns4 variant needs the axes after the reduced one to hold a "
                                         "multiple of 4 elements .*, got 3 elements"):
        reduce(x, "sum", 0, variant="columns4")
