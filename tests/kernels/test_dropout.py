"""kernels/dropout.wgsl through engine.ops.dropout: the seeded keep mask against its numpy reference bit for bit,
its statistics, the recomputed-mask backward (against dy * mask / (1 - p) and finite differences), row blocks,
p = 0 and refused arguments."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.autograd import no_grad
from wgrpo.engine.ops.dropout import STREAM, _pcg4d_x, dropout_apply, dropout_mask
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

SHAPES = [(1,), (7,), (13, 17), (3, 5, 257), (2, 3, 1, 11), (1000, 3)]  # 1, primes, several workgroups


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def reference(x: np.ndarray, p: float, seed: int) -> np.ndarray:
    """What the kernel computes, in f32: x * (1 / (1 - p) rounded to f32) where kept, else 0."""
    scale = np.float32(1.0 / (1.0 - p))
    return np.where(dropout_mask(x.shape, p, seed), x.astype(np.float32) * scale, np.float32(0))


def gpu_mask(device, shape, p, seed) -> np.ndarray:
    with no_grad():
        return ops.dropout(Tensor.from_numpy(np.ones(shape, np.float32), device), p, seed).numpy() != 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_forward_matches_numpy_bit_for_bit(device, rng, shape, p):
    x = (rng.standard_normal(shape) + 3).astype(np.float32)  # no zeros: a zero output means dropped
    y = ops.dropout(Tensor.from_numpy(x, device), p, seed=1234)
    assert y.shape == shape and y.dtype == np.float32
    assert np.array_equal(y.numpy() != 0, dropout_mask(shape, p, 1234))
    assert np.array_equal(y.numpy(), reference(x, p, 1234))


def test_f16_storage(device, rng):
    if not device.has_f16:
        pytest.skip("the adapter has no shader-f16")
    x = (rng.standard_normal((13, 17)) + 3).astype(np.float16)
    y = ops.dropout(Tensor.from_numpy(x, device), 0.3, seed=5)
    assert y.dtype == np.float16
    assert np.array_equal(y.numpy() != 0, dropout_mask(x.shape, 0.3, 5))
    assert_close(y.numpy(), reference(x, 0.3, 5), "f16")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.95])
def test_kept_fraction_is_one_minus_p(device, p):
    n = 1 << 18
    kept = gpu_mask(device, (n,), p, seed=99).mean()
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)  # five binomial standard deviations


def test_mask_has_no_visible_structure():
    """Neighbouring elements, and the same element under neighbouring seeds, are kept independently."""
    n, p = 1 << 16, 0.5
    mask = dropout_mask((n,), p, 7).astype(np.float64)
    bound = 5 / np.sqrt(n)  # correlation of independent fair coins: about N(0, 1 / n)
    for lag in (1, 2, 256):
        assert abs(np.corrcoef(mask[:-lag], mask[lag:])[0, 1]) < bound
    for other in (8, 7 + 2**16):
        assert abs(np.corrcoef(mask, dropout_mask((n,), p, other))[0, 1]) < bound


def test_same_seed_same_mask_different_seed_different(device):
    shape = (37, 41)
    first = gpu_mask(device, shape, 0.5, seed=3)
    assert np.array_equal(first, gpu_mask(device, shape, 0.5, seed=3))
    for other in (4, 2**32 - 1):
        assert not np.array_equal(first, gpu_mask(device, shape, 0.5, seed=other))
        assert np.array_equal(gpu_mask(device, shape, 0.5, other), dropout_mask(shape, 0.5, other))


def test_mask_depends_on_the_flat_index_alone(device):
    """One mask per (seed, size): any shape of the same size, and a prefix, see the same keep pattern."""
    flat = dropout_mask((210,), 0.4, 11)
    assert np.array_equal(dropout_mask((5, 6, 7), 0.4, 11).ravel(), flat)
    assert np.array_equal(gpu_mask(device, (14, 15), 0.4, 11).ravel(), flat)
    assert np.array_equal(dropout_mask((100,), 0.4, 11), flat[:100])


@pytest.mark.parametrize("shape", [(1,), (13, 17), (3, 5, 257)])
def test_backward_is_dy_times_the_recomputed_mask(device, rng, shape):
    p, seed = 0.3, 77
    x = Tensor.from_numpy(rng.standard_normal(shape).astype(np.float32), device).requires_grad_()
    dy = rng.standard_normal(shape).astype(np.float32)
    ops.dropout(x, p, seed).backward(Tensor.from_numpy(dy, device))
    assert np.array_equal(x.grad.numpy(), reference(dy, p, seed))
    assert np.array_equal(dropout_apply(Tensor.from_numpy(dy, device), p, seed).numpy(), reference(dy, p, seed))


@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 13)])
def test_gradients_by_finite_differences(device, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    check_gradients(lambda t: ops.dropout(t, 0.4, 2024), [x], device)


def test_row_blocks_get_the_mask_of_the_whole_tensor(device, rng, monkeypatch):
    """A tensor held in row blocks: each block is keyed by its global flat indices, forward and backward."""
    monkeypatch.setattr(device, "_binding_bytes", 4096)  # (131, 11) float32 is split into 93 + 38 rows
    x_host = (rng.standard_normal((131, 11)) + 3).astype(np.float32)
    x = Tensor.from_numpy(x_host, device).requires_grad_()
    assert x.is_split
    y = ops.dropout(x, 0.5, seed=8)
    assert y.is_split and y.row_ranges == x.row_ranges
    assert np.array_equal(y.numpy(), reference(x_host, 0.5, 8))
    dy = rng.standard_normal((131, 11)).astype(np.float32)
    y.backward(Tensor.from_numpy(dy, device))
    assert np.array_equal(x.grad.numpy(), reference(dy, 0.5, 8))


def test_the_global_index_carries_into_its_high_word(device, rng):
    """A block starting just below 2^32 (only reachable through huge split tensors) crosses into the high word of
    the 64-bit index as the host reference does."""
    x_host = (rng.standard_normal(600) + 3).astype(np.float32)
    start = 2**32 - 300
    y = Tensor.empty((600,), np.float32, device)
    device.runtime.dispatch("dropout", "dropout_apply", [Tensor.from_numpy(x_host, device), y], (3, 1),
                            {"n": 600, "offset_lo": start, "offset_hi": 0, "seed": 5, "threshold": 2**23,
                             "scale": 2.0})
    index = np.arange(start, start + 600, dtype=np.uint64)
    h = _pcg4d_x(index & np.uint64(0xFFFFFFFF), index >> np.uint64(32), np.full(600, 5, np.uint64),
                 np.full(600, STREAM, np.uint64))
    keep = (h >> np.uint64(8)) >= np.uint64(2**23)
    assert np.array_equal(y.numpy(), np.where(keep, x_host * np.float32(2), np.float32(0)))


def test_u_equal_to_p_is_kept(device):
    """keep = u >= p at the boundary: p set to element 0's own u keeps it; one step of 2^-24 more drops it."""
    h = _pcg4d_x(np.uint64(0), np.uint64(0), np.uint64(3), np.uint64(STREAM))
    u = int(h >> np.uint64(8)) / 2**24
    assert 0 < u < 1 - 2**-24
    assert gpu_mask(device, (1,), u, seed=3)[0] and dropout_mask((1,), u, 3)[0]
    assert not gpu_mask(device, (1,), u + 2**-24, seed=3)[0] and not dropout_mask((1,), u + 2**-24, 3)[0]


def test_p_zero_is_the_identity(device, rng):
    x = Tensor.from_numpy(rng.standard_normal((4, 5)).astype(np.float32), device)
    assert ops.dropout(x, 0.0, seed=1) is x
    assert ops.dropout(x, 0, seed=1) is x
    assert dropout_mask((4, 5), 0.0, 1).all()


def test_extreme_p(device):
    assert not gpu_mask(device, (4096,), 1 - 2**-30, seed=1).any()  # p above the last 2^-24 step: none kept
    assert np.array_equal(gpu_mask(device, (4096,), 2**-30, seed=1), dropout_mask((4096,), 2**-30, 1))


def test_bad_arguments_are_refused(device):
    x = Tensor.from_numpy(np.ones((2, 3), np.float32), device)
    for p in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\)"):
            ops.dropout(x, p, seed=0)
        with pytest.raises(ValueError, match=r"dropout_mask: p must be in \[0, 1\)"):
            dropout_mask((2, 3), p, 0)
    for seed in (-1, 2**32):
        with pytest.raises(ValueError, match=r"dropout: seed must be in \[0, 2\*\*32\)"):
            ops.dropout(x, 0.5, seed)
    with pytest.raises(TypeError, match="dropout: seed must be an int, got float"):
        ops.dropout(x, 0.5, 1.0)
    with pytest.raises(TypeError, match="dropout: p must be a float, got str"):
        ops.dropout(x, "0.5", 1)
    with pytest.raises(TypeError, match="dropout: x must be float32 or float16, got int32"):
        ops.dropout(Tensor.from_numpy(np.ones(3, np.int32), device), 0.5, 1)
    with pytest.raises(TypeError, match="dropout: x must be an engine.Tensor, got ndarray"):
        ops.dropout(np.ones(3, np.float32), 0.5, 1)
