"""kernels/softmax.wgsl through engine.ops: softmax (plain and causal) and softmax_backward, both variants.

The backward is checked twice: against the analytic numpy formula (tight), and against central finite
differences of L = sum(softmax(x) * w) where every perturbed forward runs on the GPU kernel itself (f32,
eps = 1e-2, loose tolerance: truncation O(eps^2) plus f32 rounding of L divided by 2 eps).
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import ops
from wgrpo.engine.ops.softmax import softmax, softmax_backward
from wgrpo.engine.tensor import Tensor
from tests.tolerances import assert_close

VARIANTS = ["serial", "workgroup"]
SHAPES = [(1,), (1, 1), (7, 13), (3, 5, 257), (2, 1000), (3, 4099), (2, 3, 5, 9)]
# (..., T_q, T_k): T_q == T_k, T_q < T_k (KV cache), one query, a long row.
CAUSAL_SHAPES = [(1, 1), (7, 7), (2, 3, 9, 9), (2, 5, 12), (3, 1, 17), (2, 4, 1030)]


def causal_keep(t_q: int, t_k: int) -> np.ndarray:
    """(T_q, T_k) booleans: query i sees keys j <= i + (T_k - T_q)."""
    return np.arange(t_k)[None, :] <= np.arange(t_q)[:, None] + (t_k - t_q)


def reference(x: np.ndarray, causal: bool = False) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if causal:
        x = np.where(causal_keep(*x.shape[-2:]), x, -np.inf)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def backward_reference(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    y, dy = y.astype(np.float64), dy.astype(np.float64)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def gpu(x: np.ndarray, device) -> Tensor:
    return Tensor.from_numpy(x, device)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_matches_numpy(device, shape, variant):
    x = (3 * np.random.default_rng(1).standard_normal(shape)).astype(np.float32)
    y = softmax(gpu(x, device), variant=variant).numpy()
    assert_close(y, reference(x))
    assert_close(y.sum(axis=-1), np.ones(shape[:-1]))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", CAUSAL_SHAPES)
def test_causal_softmax(device, shape, variant):
    x = (3 * np.random.default_rng(2).standard_normal(shape)).astype(np.float32)
    y = softmax(gpu(x, device), causal=True, variant=variant).numpy()
    assert_close(y, reference(x, causal=True))
    masked = np.broadcast_to(~causal_keep(*shape[-2:]), shape)
    assert np.all(y[masked] == 0.0)  # exactly zero, not merely small
    assert np.all(y[~masked] > 0.0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_large_magnitudes_are_stable(device, variant, magnitude):
    rng = np.random.default_rng(3)
    spread = (magnitude * rng.standard_normal((4, 300))).astype(np.float32)  # exp(x) would overflow
    offset = (magnitude + rng.standard_normal((4, 300))).astype(np.float32)  # large common offset
    for x in (spread, offset):
        y = softmax(gpu(x, device), variant=variant).numpy()
        assert np.all(np.isfinite(y))
        assert_close(y, reference(x))


def test_infinite_logits(device):
    x = np.array([[0.0, -np.inf, 1.0, -np.inf], [-np.inf, -np.inf, -np.inf, 5.0]], np.float32)
    for variant in VARIANTS:
        y = softmax(gpu(x, device), variant=variant).numpy()
        assert_close(y, reference(x))


def test_public_names(device):
    x = np.random.default_rng(4).standard_normal((3, 4, 1100)).astype(np.float32)
    dy = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    y = ops.softmax(gpu(x, device), causal=True)
    assert_close(y.numpy(), reference(x, causal=True))
    assert_close(ops.softmax_backward(y, gpu(dy, device)).numpy(), backward_reference(y.numpy(), dy))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape,causal", [((1,), False), ((7, 13), False), ((3, 5, 257), False), ((3, 4099), False),
                                          ((2, 3, 9, 9), True), ((2, 5, 12), True)])
def test_backward_matches_formula(device, shape, causal, variant):
    rng = np.random.default_rng(6)
    x = (2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y = softmax(gpu(x, device), causal=causal)
    dx = softmax_backward(y, gpu(dy, device), variant=variant).numpy()
    assert_close(dx, backward_reference(y.numpy(), dy))
    if causal:
        assert np.all(dx[np.broadcast_to(~causal_keep(*shape[-2:]), shape)] == 0.0)


@pytest.mark.parametrize("shape,causal,variant,count", [
    ((3, 7), False, "serial", None),
    ((2, 4, 6), True, "serial", None),
    ((2, 1030), False, "workgroup", 8),  # 8 random entries of a row longer than a workgroup
])
def test_backward_matches_finite_differences(device, shape, causal, variant, count):
    """dL/dx for L = sum(softmax(x) * w): the backward kernel against central differences of the GPU forward."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(shape).astype(np.float32)

    def loss(values: np.ndarray) -> float:
        y = softmax(gpu(values, device), causal=causal, variant=variant).numpy()
        return float((y.astype(np.float64) * w).sum())

    y = softmax(gpu(x, device), causal=causal, variant=variant)
    dx = softmax_backward(y, gpu(w, device), variant=variant).numpy()
    eps = 1e-2
    flat = np.arange(x.size) if count is None else rng.choice(x.size, count, replace=False)
    numeric = np.zeros(len(flat))
    for k, index in enumerate(flat):
        plus, minus = x.copy(), x.copy()
        plus.flat[index] += eps
        minus.flat[index] -= eps
        numeric[k] = (loss(plus) - loss(minus)) / (2 * eps)
    np.testing.assert_allclose(dx.flat[flat], numeric, rtol=2e-2, atol=2e-3)


def test_grid_beyond_65535_workgroups(device):
    x = np.random.default_rng(8).standard_normal((65537, 3)).astype(np.float32)
    y = softmax(gpu(x, device), variant="workgroup")  # one workgroup per row: a 2-D grid
    assert_close(y.numpy(), reference(x))


@pytest.mark.parametrize("shape,causal", [((7, 13), False), ((2, 1500), False), ((2, 6, 9), True)])
def test_f16(device, shape, causal):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    rng = np.random.default_rng(9)
    x = (3 * rng.standard_normal(shape)).astype(np.float16)
    dy = rng.standard_normal(shape).astype(np.float16)
    y = ops.softmax(gpu(x, device), causal=causal)
    assert y.dtype == np.float16
    assert_close(y.numpy(), reference(x, causal), "f16")
    dx = ops.softmax_backward(y, gpu(dy, device))
    assert dx.dtype == np.float16
    assert_close(dx.numpy(), backward_reference(y.numpy(), dy), "f16")


def test_errors_name_the_argument(device):
    x = gpu(np.zeros((2, 3), np.float32), device)
    with pytest.raises(TypeError, match="softmax: x must be float32 or float16, got int32"):
        ops.softmax(gpu(np.zeros((2, 3), np.int32), device))
    with pytest.raises(ValueError, match=r"at least 2 dimension\(s\), got shape \(5,\)"):
        ops.softmax(gpu(np.zeros(5, np.float32), device), causal=True)
    with pytest.raises(ValueError, match=r"T_q <= T_k .* got shape \(4, 3\)"):
        ops.softmax(gpu(np.zeros((4, 3), np.float32), device), causal=True)
    with pytest.raises(ValueError, match=r"dy has shape \(3, 2\) but y has shape \(2, 3\)"):
        ops.softmax_backward(x, gpu(np.zeros((3, 2), np.float32), device))
    with pytest.raises(TypeError, match="dy is float16 but y is float32"):
        ops.softmax_backward(x, gpu(np.zeros((2, 3), np.float16), device))
    with pytest.raises(TypeError, match="dy must be an engine.Tensor"):
        ops.softmax_backward(x, np.zeros((2, 3), np.float32))
