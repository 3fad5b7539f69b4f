"""kernels/rmsnorm.wgsl through engine.ops.rmsnorm: HF Llama/Qwen2 RMSNorm over the last axis, and its backward.

The backward kernels (dx per row, dw per channel summed over rows) are checked against the analytic numpy
gradient (tight) and, through autograd, against central finite differences of the GPU forward (loose). The vec4
entries (a last axis that is a multiple of 4) are checked the same way and against the scalar entries.
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops import norm
from wgrpo.engine.ops.norm import rmsnorm_backward, rmsnorm_forward
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close
from tests.dispatch_spy import entries_dispatched

# Rows of 1 element, primes, a row longer than a 64- or 256-wide workgroup, more rows than one workgroup.
SHAPES = [(1,), (1, 1), (7,), (13, 17), (3, 5, 257), (2, 1031), (131, 3), (2, 3, 1, 11)]


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def dtype_of(elem):
    return {"f32": np.float32, "f16": np.float16}[elem]


def reference(x, w, eps):
    """HF LlamaRMSNorm in float64 (HF works in f32 and rounds x * rstd to the input dtype before * w)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    rstd = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * rstd * w, rstd[..., 0]


def backward_reference(x, w, dy, eps):
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    n = x.shape[-1]
    rstd = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    dot = np.sum(w * dy * x, axis=-1, keepdims=True)
    dx = rstd * (w * dy) - x * rstd**3 * dot / n
    dw = np.sum((dy * x * rstd).reshape(-1, n), axis=0)
    return dx, dw


def data(rng, shape, dtype):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = (1 + 0.5 * rng.standard_normal(shape[-1])).astype(dtype)
    return x, w


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_numpy(device, rng, shape):
    for elem in elems(device):
        x, w = data(rng, shape, dtype_of(elem))
        y, rstd = rmsnorm_forward(Tensor.from_numpy(x, device), Tensor.from_numpy(w, device), 1e-6)
        expected, expected_rstd = reference(x, w, 1e-6)
        assert y.shape == shape and y.dtype == x.dtype and rstd.dtype == np.float32 and rstd.shape == shape[:-1]
        assert_close(y.numpy(), expected, elem)
        assert_close(rstd.numpy(), expected_rstd)  # rstd is f32 whatever the storage dtype
        assert_close(ops.rmsnorm(Tensor.from_numpy(x, device), Tensor.from_numpy(w, device), 1e-6).numpy(),
                     expected, elem)


@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.5])
def test_eps_is_inside_the_square_root(device, rng, eps):
    x = (0.01 * rng.standard_normal((5, 9))).astype(np.float32)  # mean(x^2) ~ 1e-4: eps matters
    w = np.ones(9, np.float32)
    y = ops.rmsnorm(Tensor.from_numpy(x, device), Tensor.from_numpy(w, device), eps).numpy()
    assert_close(y, reference(x, w, eps)[0])


def test_zero_rows_give_zeros_with_eps(device):
    x, w = np.zeros((2, 5), np.float32), np.ones(5, np.float32)
    y = ops.rmsnorm(Tensor.from_numpy(x, device), Tensor.from_numpy(w, device), 1e-6).numpy()
    np.testing.assert_array_equal(y, 0.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_kernels_match_analytic_gradient(device, rng, shape):
    for elem in elems(device):
        x, w = data(rng, shape, dtype_of(elem))
        dy = rng.standard_normal(shape).astype(dtype_of(elem))
        xt, wt = Tensor.from_numpy(x, device), Tensor.from_numpy(w, device)
        _, rstd = rmsnorm_forward(xt, wt, 1e-5)
        dx, dw = rmsnorm_backward(xt, wt, rstd, Tensor.from_numpy(dy, device))
        expected_dx, expected_dw = backward_reference(x, w, dy, 1e-5)
        rows = int(np.prod(shape[:-1]))
        assert dx.shape == shape and dw.shape == w.shape
        assert_close(dx.numpy(), expected_dx, elem, scale=2)
        # dw sums `rows` terms of O(1): widen by the row count's square root (rounding errors random-walk)
        assert_close(dw.numpy(), expected_dw, elem, scale=max(2.0, np.sqrt(rows)))


def test_dw_is_deterministic(device, rng):
    x, w = data(rng, (300, 37), np.float32)
    dy = rng.standard_normal((300, 37)).astype(np.float32)
    xt, wt, dyt = (Tensor.from_numpy(a, device) for a in (x, w, dy))
    _, rstd = rmsnorm_forward(xt, wt, 1e-6)
    first = rmsnorm_backward(xt, wt, rstd, dyt)[1].numpy()
    for _ in range(2):
        np.testing.assert_array_equal(rmsnorm_backward(xt, wt, rstd, dyt)[1].numpy(), first)


@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 13), (1, 1), (4, 1)])
def test_gradients_by_finite_differences(device, rng, shape):
    x, w = data(rng, shape, np.float32)
    check_gradients(lambda a, b: ops.rmsnorm(a, b, 1e-5), [x, w], device)


def test_gradient_only_for_inputs_that_need_it(device, rng):
    x, w = data(rng, (4, 6), np.float32)
    xt = Tensor.from_numpy(x, device).requires_grad_()
    wt = Tensor.from_numpy(w, device)
    dy = rng.standard_normal((4, 6)).astype(np.float32)
    ops.rmsnorm(xt, wt, 1e-6).backward(Tensor.from_numpy(dy, device))
    assert xt.grad is not None and wt.grad is None
    assert_close(xt.grad.numpy(), backward_reference(x, w, dy, 1e-6)[0])


def test_errors_name_the_problem(device):
    x = Tensor.from_numpy(np.ones((2, 3), np.float32), device)
    with pytest.raises(ValueError, match=r"w must have shape \(3,\).*\(2, 3\)\), got \(4,\)"):
        ops.rmsnorm(x, Tensor.from_numpy(np.ones(4, np.float32), device))
    with pytest.raises(TypeError, match="x must be float32 or float16, got int32"):
        ops.rmsnorm(Tensor.from_numpy(np.ones((2, 3), np.int32), device),
                    Tensor.from_numpy(np.ones(3, np.int32), device))
    with pytest.raises(TypeError, match="w must be an engine.Tensor"):
        ops.rmsnorm(x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        ops.rmsnorm(x, Tensor.from_numpy(np.ones(3, np.float32), device), -1.0)
    if device.has_f16:
        with pytest.raises(TypeError, match="x is float32 but w is float16"):
            ops.rmsnorm(x, Tensor.from_numpy(np.ones(3, np.float16), device))


# ---- vec4 entries: a last axis that is a multiple of 4

# One quad; a prime number of rows and of quads; rows over several workgroups; rows longer than the W_HELD = 512
# quads a workgroup holds (the rest read from storage); the benchmark's hidden 576; dw over more column quads than
# one workgroup covers, rows fewer than its 8 strips, and rows that do not split evenly.
VEC4_SHAPES = [(4,), (1, 4), (7, 12), (67, 20), (3, 2052), (2, 64, 576), (3, 8), (300, 36)]


@pytest.fixture(params=[16, 64])
def row_wg(request, monkeypatch):
    """Rows per workgroup of the per-row vec4 entries: the CPU and the GPU choice, on whichever adapter runs."""
    monkeypatch.setattr(norm, "SOFTWARE_ROW_WG", request.param)
    monkeypatch.setattr(norm, "GPU_ROW_WG", request.param)
    return request.param


@pytest.mark.parametrize("shape", VEC4_SHAPES)
def test_vec4_forward_matches_numpy_and_the_scalar_entry(device, rng, shape, row_wg):
    for elem in elems(device):
        x, w = data(rng, shape, dtype_of(elem))
        xt, wt = Tensor.from_numpy(x, device), Tensor.from_numpy(w, device)
        y, rstd = rmsnorm_forward(xt, wt, 1e-6, variant="vec4")
        expected, expected_rstd = reference(x, w, 1e-6)
        assert y.shape == shape and y.dtype == x.dtype and rstd.shape == shape[:-1]
        assert_close(y.numpy(), expected, elem)
        assert_close(rstd.numpy(), expected_rstd)
        scalar_y, scalar_rstd = rmsnorm_forward(xt, wt, 1e-6, variant="scalar")
        assert_close(y.numpy(), scalar_y.numpy(), elem)  # the same formula; the sum of squares in four lanes
        assert_close(rstd.numpy(), scalar_rstd.numpy())


@pytest.mark.parametrize("shape", VEC4_SHAPES)
def test_vec4_backward_matches_analytic_gradient(device, rng, shape, row_wg):
    for elem in elems(device):
        x, w = data(rng, shape, dtype_of(elem))
        dy = rng.standard_normal(shape).astype(dtype_of(elem))
        xt, wt, dyt = (Tensor.from_numpy(a, device) for a in (x, w, dy))
        _, rstd = rmsnorm_forward(xt, wt, 1e-5)
        dx, dw = rmsnorm_backward(xt, wt, rstd, dyt, variant="vec4")
        expected_dx, expected_dw = backward_reference(x, w, dy, 1e-5)
        rows = int(np.prod(shape[:-1]))
        assert dx.shape == shape and dw.shape == w.shape
        assert_close(dx.numpy(), expected_dx, elem, scale=2)
        assert_close(dw.numpy(), expected_dw, elem, scale=max(2.0, np.sqrt(rows)))
        scalar_dx, scalar_dw = rmsnorm_backward(xt, wt, rstd, dyt, variant="scalar")
        assert_close(dx.numpy(), scalar_dx.numpy(), elem, scale=2)
        assert_close(dw.numpy(), scalar_dw.numpy(), elem, scale=max(2.0, np.sqrt(rows)))


def test_vec4_dw_is_deterministic(device, rng):
    x, w = data(rng, (301, 36), np.float32)
    dy = rng.standard_normal((301, 36)).astype(np.float32)
    xt, wt, dyt = (Tensor.from_numpy(a, device) for a in (x, w, dy))
    _, rstd = rmsnorm_forward(xt, wt, 1e-6)
    first = rmsnorm_backward(xt, wt, rstd, dyt, variant="vec4")[1].numpy()
    for _ in range(2):
        np.testing.assert_array_equal(rmsnorm_backward(xt, wt, rstd, dyt, variant="vec4")[1].numpy(), first)


def test_vec4_is_the_default_where_sizes_allow(device, rng, monkeypatch):
    seen = entries_dispatched(device, monkeypatch)
    for n in (8, 6):
        x, w = data(rng, (3, n), np.float32)
        xt = Tensor.from_numpy(x, device).requires_grad_()
        wt = Tensor.from_numpy(w, device).requires_grad_()
        ops.rmsnorm(xt, wt).backward(Tensor.from_numpy(np.ones((3, n), np.float32), device))
    assert seen == ["rmsnorm_forward4", "rmsnorm_backward_dx4", "rmsnorm_backward_dw4",
                    "rmsnorm_forward", "rmsnorm_backward_dx", "rmsnorm_backward_dw"]


@pytest.mark.parametrize("shape", [(3, 8), (2, 1, 12)])
def test_vec4_gradients_by_finite_differences(device, rng, shape):
    x, w = data(rng, shape, np.float32)
    check_gradients(lambda a, b: ops.rmsnorm(a, b, 1e-5), [x, w], device)


def test_vec4_errors_name_the_problem(device):
    x = Tensor.from_numpy(np.ones((2, 6), np.float32), device)
    w = Tensor.from_numpy(np.ones(6, np.float32), device)
    with pytest.raises(InputError, match="rmsnorm: the vec4 variant needs a last axis that is a multiple of 4 .*, "
                                         "got a last axis of 6"):
        rmsnorm_forward(x, w, variant="vec4")
    with pytest.raises(InputError, match=r"rmsnorm_backward: variant must be one of \('scalar', 'vec4'\) or None, "
                                         r"got 'vec8'"):
        rmsnorm_backward(x, w, Tensor.from_numpy(np.ones(2, np.float32), device), x, variant="vec8")
