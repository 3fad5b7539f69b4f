"""matmul against numpy: every variant, every transpose, batched and broadcast, f32 and f16; its gradient.
The workgroup-tiled variants (kernels/matmul_tiled.wgsl) have their own file, test_matmul_tiled.py."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.ops.matmul import VARIANTS, choose_variant, eligible_variants
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

# (M, N, K): ones, primes, non-multiples of every tile (8, 16, 32 rows; 64 and 256 columns), several workgroups.
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 9), (7, 13, 5), (33, 65, 17), (31, 257, 2), (64, 64, 64), (97, 300, 41)]


def variants(device, m, n, k, ta=False, tb=False, dtype="float32"):
    """The variants that can run the problem, but the workgroup-tiled ones (tests/kernels/test_matmul_tiled.py);
    matmul_cpu's, one layout each, run only where they are eligible."""
    return [v for v in eligible_variants(device, m, n, k, ta, tb, dtype) if VARIANTS[v].family != "matmul_tiled"]


def operands(rng, m, n, k, ta, tb, batch=None, dtype=np.float32):
    lead = (batch,) if batch else ()
    a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(dtype)
    b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(dtype)
    return a, b


def reference(a, b, ta, tb):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (np.swapaxes(a, -1, -2) if ta else a) @ (np.swapaxes(b, -1, -2) if tb else b)


@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_every_variant_matches_numpy(device, rng, m, n, k, ta, tb):
    a, b = operands(rng, m, n, k, ta, tb)
    ta_, tb_ = Tensor.from_numpy(a, device), Tensor.from_numpy(b, device)
    for variant in variants(device, m, n, k, ta, tb):
        out = ops.matmul(ta_, tb_, transpose_a=ta, transpose_b=tb, variant=variant)
        assert out.shape == (m, n)
        assert_close(out.numpy(), reference(a, b, ta, tb), scale=np.sqrt(k))


@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False)])
def test_batched_and_broadcast(device, rng, ta, tb):
    m, n, k, batch = 19, 37, 11, 3
    a, b = operands(rng, m, n, k, ta, tb, batch=batch)
    b2 = b[0]
    for variant in variants(device, m, n, k, ta, tb):
        out = ops.matmul(Tensor.from_numpy(a, device), Tensor.from_numpy(b, device), ta, tb, variant=variant)
        assert_close(out.numpy(), reference(a, b, ta, tb), scale=np.sqrt(k))
        out = ops.matmul(Tensor.from_numpy(a, device), Tensor.from_numpy(b2, device), ta, tb, variant=variant)
        assert out.shape == (batch, m, n)
        assert_close(out.numpy(), reference(a, b2, ta, tb), scale=np.sqrt(k))


def test_f16_storage_with_f32_accumulation(device, rng):
    if not device.has_f16:
        pytest.skip("adapter lacks shader-f16")
    a, b = operands(rng, 45, 70, 130, False, True, dtype=np.float16)
    for variant in variants(device, 45, 70, 130, False, True, "float16"):
        out = ops.matmul(Tensor.from_numpy(a, device), Tensor.from_numpy(b, device), transpose_b=True,
                         variant=variant)
        assert out.dtype == np.float16
        # f32 accumulation: the error is f16 rounding of the result, not of 130 partial sums
        assert_close(out.numpy(), reference(a, b, False, True), "f16", scale=2)


def test_default_variant_follows_the_adapter(device):
    chosen = choose_variant(device, 512)
    assert chosen in VARIANTS
    if device.is_software and device.has_subgroups:
        assert chosen == "sg32x4" and choose_variant(device, 8) == "sg16x4"


@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)])
def test_gradients(device, rng, ta, tb):
    a, b = operands(rng, 3, 4, 5, ta, tb)
    check_gradients(lambda x, y: ops.matmul(x, y, ta, tb), [a, b], device)


def test_gradient_of_a_weight_broadcast_over_the_batch(device, rng):
    a = rng.standard_normal((2, 3, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    check_gradients(lambda x, y: ops.matmul(x, y, transpose_b=True), [a, w], device)


def test_errors_name_the_shapes(device):
    a = Tensor.from_numpy(np.ones((3, 4), np.float32), device)
    with pytest.raises(ValueError, match=r"inner sizes differ: op\(a\) of \(3, 4\) is 3x4, op\(b\) of \(5, 2\)"):
        ops.matmul(a, Tensor.from_numpy(np.ones((5, 2), np.float32), device))
    with pytest.raises(ValueError, match=r"batch sizes differ"):
        ops.matmul(Tensor.from_numpy(np.ones((2, 3, 4), np.float32), device),
                   Tensor.from_numpy(np.ones((3, 4, 2), np.float32), device))
    with pytest.raises(ValueError, match=r"2-D or batched 3-D, got shape \(4,\)"):
        ops.matmul(a, Tensor.from_numpy(np.ones(4, np.float32), device))
    with pytest.raises(ValueError, match="variant must be one of"):
        ops.matmul(a, Tensor.from_numpy(np.ones((4, 2), np.float32), device), variant="fast")


def test_linear_with_and_without_bias(device, rng):
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out = ops.linear(Tensor.from_numpy(x, device), Tensor.from_numpy(w, device), Tensor.from_numpy(b, device))
    assert_close(out.numpy(), x @ w.T + b)
    check_gradients(lambda x_, w_, b_: ops.linear(x_, w_, b_), [x, w, b], device)
    check_gradients(lambda x_, w_: ops.linear(x_, w_), [x, w], device)
    with pytest.raises(ValueError, match=r"weight must be \(out, 5\)"):
        ops.linear(Tensor.from_numpy(x, device), Tensor.from_numpy(w.T.copy(), device))
