"""The residual add fused with RMSNorm: both outputs against numpy, gradients through either or both; the vec4 entry
also against the scalar one."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.ops.norm import add_rmsnorm_forward
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close
from tests.dispatch_spy import entries_dispatched


def reference(x, r, w, eps):
    s = x.astype(np.float64) + r
    return s, s / np.sqrt(np.mean(s * s, axis=-1, keepdims=True) + eps) * w


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (2, 3, 257), (1100, 5)])
def test_values_match_numpy_in_one_dispatch(device, rng, shape):
    x, r = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    xt, rt, wt = (Tensor.from_numpy(a, device) for a in (x, r, w))
    before = device.runtime.stats.dispatches
    total, y = ops.add_rmsnorm(xt, rt, wt, 1e-5)
    assert device.runtime.stats.dispatches == before + 1
    expected_total, expected_y = reference(x, r, w, 1e-5)
    assert_close(total.numpy(), expected_total)
    assert_close(y.numpy(), expected_y, scale=4)


def test_f16(device, rng):
    if not device.has_f16:
        pytest.skip("adapter lacks shader-f16")
    x, r = (rng.standard_normal((5, 33)).astype(np.float16) for _ in range(2))
    w = rng.standard_normal(33).astype(np.float16)
    total, y = ops.add_rmsnorm(*(Tensor.from_numpy(a, device) for a in (x, r, w)))
    expected_total, expected_y = reference(x.astype(np.float32), r.astype(np.float32), w.astype(np.float32), 1e-6)
    assert_close(total.numpy(), expected_total, "f16")
    assert_close(y.numpy(), expected_y, "f16")


@pytest.mark.parametrize("use", ["both", "norm", "sum"])
def test_gradients(device, rng, use):
    x, r = (rng.standard_normal((3, 6)).astype(np.float32) for _ in range(2))
    w = (1 + 0.3 * rng.standard_normal(6)).astype(np.float32)

    def fn(a, b, c):
        total, y = ops.add_rmsnorm(a, b, c)
        return {"both": ops.add(ops.mul(total, 0.5), y), "norm": y, "sum": ops.mul(total, total)}[use]

    wrt = [0, 1] if use == "sum" else [0, 1, 2]
    check_gradients(fn, [x, r, w], device, wrt=wrt)


def test_errors_name_the_problem(device):
    x = Tensor.from_numpy(np.ones((2, 4), np.float32), device)
    w = Tensor.from_numpy(np.ones(4, np.float32), device)
    with pytest.raises(ValueError, match=r"residual must be a float32 Tensor of shape \(2, 4\)"):
        ops.add_rmsnorm(x, Tensor.from_numpy(np.ones((2, 3), np.float32), device), w)


# ---- the vec4 entry: a last axis that is a multiple of 4 (one quad, primes, several workgroups, rows past the
# 512 quads of w a workgroup holds, the benchmark's hidden 576)
@pytest.mark.parametrize("shape", [(1, 4), (7, 12), (70, 8), (2, 2052), (1, 128, 576)])
def test_vec4_matches_numpy_and_the_scalar_entry(device, rng, shape):
    for elem in (["f32", "f16"] if device.has_f16 else ["f32"]):
        dtype = {"f32": np.float32, "f16": np.float16}[elem]
        x, r = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        w = rng.standard_normal(shape[-1]).astype(dtype)
        xt, rt, wt = (Tensor.from_numpy(a, device) for a in (x, r, w))
        total, y, rstd = add_rmsnorm_forward(xt, rt, wt, 1e-5, variant="vec4")
        expected_total, expected_y = reference(x.astype(np.float32), r.astype(np.float32), w.astype(np.float32), 1e-5)
        assert_close(total.numpy(), expected_total, elem)
        assert_close(y.numpy(), expected_y, elem, scale=4)
        scalar_total, scalar_y, scalar_rstd = add_rmsnorm_forward(xt, rt, wt, 1e-5, variant="scalar")
        np.testing.assert_array_equal(total.numpy(), scalar_total.numpy())  # one rounding of x + r either way
        assert_close(y.numpy(), scalar_y.numpy(), elem, scale=4)
        assert_close(rstd.numpy(), scalar_rstd.numpy())


def test_vec4_is_the_default_where_sizes_allow(device, rng, monkeypatch):
    seen = entries_dispatched(device, monkeypatch)
    for n in (8, 6):
        x, r, w = (Tensor.from_numpy(rng.standard_normal(s).astype(np.float32), device) for s in ((2, n), (2, n), (n,)))
        ops.add_rmsnorm(x, r, w)
    assert seen == ["add_rmsnorm_forward4", "add_rmsnorm_forward"]


def test_vec4_gradients(device, rng):
    x, r = (rng.standard_normal((3, 8)).astype(np.float32) for _ in range(2))
    w = (1 + 0.3 * rng.standard_normal(8)).astype(np.float32)

    def fn(a, b, c):
        total, y = ops.add_rmsnorm(a, b, c)
        return ops.add(ops.mul(total, 0.5), y)

    check_gradients(fn, [x, r, w], device)
