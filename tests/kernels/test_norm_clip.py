"""kernels/norm_clip.wgsl, dispatched directly: the per-chunk sums of squares (sum_squares_workgroup and its vec4
form sum_squares4 at several workgroup sizes) against numpy, into the slots the host gives them; the clip factor;
and the scale entries (a copy and in place, scalar and vec4 with 1, 3 and 8 quads per invocation) against
numpy and, bit for bit, against each other. Sizes: 1, primes, chunk edges, several chunks and workgroups."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wgrpo.engine import Tensor
from wgrpo.engine.ops._common import flat_grid, grid_1d
from wgrpo.engine.optim import clip_chunk
from tests.tolerances import assert_close

CHUNK = clip_chunk()
SCALAR_SIZES = [1, 7, 1021, CHUNK - 1, CHUNK + 1, 3 * CHUNK + 7]
QUAD_SIZES = [4, 1020, CHUNK, CHUNK + 4, 3 * CHUNK + 12, 2 * 256 * 8 * 4 + 28]


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def gradient(rng, n, elem):
    return rng.standard_normal(n).astype({"f32": np.float32, "f16": np.float16}[elem])


def chunk_sums(g):
    g = g.astype(np.float64)
    return np.array([(g[k:k + CHUNK] ** 2).sum() for k in range(0, g.size, CHUNK)])


def sum_squares(device, entry, g, slot=0, sum_wg=None):
    """The partials an entry writes for gradient g from slot `slot` on (the slots before it keep -1)."""
    count = math.ceil(g.size / CHUNK)
    partials = Tensor.from_numpy(np.full(slot + count + 1, -1.0, np.float32), device)
    elem = "f16" if g.dtype == np.float16 else "f32"
    constants = None if sum_wg is None else {"SUM_WG": sum_wg}
    device.runtime.dispatch("norm_clip", entry, [Tensor.from_numpy(g, device), partials], grid_1d(g.size, CHUNK),
                            {"n": g.size, "slot": slot}, elem=elem, constants=constants)
    out = partials.numpy()
    assert (out[:slot] == -1).all() and out[-1] == -1  # nothing written outside the tensor's slots
    return out[slot:slot + count]


@pytest.mark.parametrize("n", SCALAR_SIZES + QUAD_SIZES)
def test_sum_squares_workgroup_matches_numpy(device, rng, n):
    for elem in elems(device):
        g = gradient(rng, n, elem)
        assert_close(sum_squares(device, "sum_squares_workgroup", g, slot=3), chunk_sums(g), scale=10)


@pytest.mark.parametrize("n", QUAD_SIZES)
@pytest.mark.parametrize("sum_wg", [8, 64, 256])
def test_sum_squares4_matches_numpy(device, rng, n, sum_wg):
    for elem in elems(device):
        g = gradient(rng, n, elem)
        assert_close(sum_squares(device, "sum_squares4", g, slot=2, sum_wg=sum_wg), chunk_sums(g), scale=10)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipping, and a factor clamped at 1
def test_clip_coef_matches_torchs_formula(device, rng, max_norm):
    partials = (rng.random(1000) * 3).astype(np.float32)
    total, scale = (Tensor.empty(s, np.float32, device) for s in ((), (1,)))
    device.runtime.dispatch("norm_clip", "clip_coef_workgroup", [Tensor.from_numpy(partials, device), total, scale],
                            (1,), {"n_partials": partials.size, "max_norm": max_norm})
    norm = np.sqrt(partials.astype(np.float64).sum())
    assert_close(total.numpy(), norm)
    assert_close(scale.numpy()[0], min(1.0, max_norm / (norm + 1e-6)))


def scale_grid(entry, n, quads):
    if entry.endswith("4"):
        return grid_1d(math.ceil(n / (4 * quads)), 256), {"QUADS": quads}
    return flat_grid("norm_clip", entry, n), None


def scaled(device, entry, g, factor, quads=1):
    """g * factor by a scale entry: a copy (clip_scale*) or in place (clip_scale_inplace*)."""
    n, elem = g.size, ("f16" if g.dtype == np.float16 else "f32")
    grad = Tensor.from_numpy(g, device)
    scale = Tensor.from_numpy(np.array([factor], np.float32), device)
    grid, constants = scale_grid(entry, n, quads)
    if "inplace" in entry:
        buffers, result = [scale, grad], grad
    else:
        result = Tensor.empty(g.shape, g.dtype, device)
        buffers = [grad, scale, result]
    device.runtime.dispatch("norm_clip", entry, buffers, grid, {"n": n}, elem=elem, constants=constants)
    if "inplace" not in entry:
        np.testing.assert_array_equal(grad.numpy(), g)  # the copy leaves its input alone
    return result.numpy()


def exact(g, factor):
    return (g.astype(np.float32) * np.float32(factor)).astype(g.dtype)


@pytest.mark.parametrize("entry", ["clip_scale_naive", "clip_scale_inplace_naive"])
@pytest.mark.parametrize("n", SCALAR_SIZES + QUAD_SIZES)
def test_scalar_scale_entries_match_numpy(device, rng, entry, n):
    for elem in elems(device):
        g = gradient(rng, n, elem)
        np.testing.assert_array_equal(scaled(device, entry, g, 0.37), exact(g, 0.37))


@pytest.mark.parametrize("entry", ["clip_scale4", "clip_scale_inplace4"])
@pytest.mark.parametrize("n", QUAD_SIZES)
@pytest.mark.parametrize("quads", [1, 3, 8])
def test_vec4_scale_entries_match_numpy_and_the_scalar_ones(device, rng, entry, n, quads):
    for elem in elems(device):
        g = gradient(rng, n, elem)
        out = scaled(device, entry, g, 0.37, quads)
        np.testing.assert_array_equal(out, exact(g, 0.37))
        np.testing.assert_array_equal(out, scaled(device, entry.replace("4", "_naive"), g, 0.37))


@pytest.mark.parametrize("quads", [1, 8])
def test_clip_scale_inplace4_writes_only_its_binding(device, rng, quads):
    """Rows 2..5 of an (8, 64) gradient bound at a byte offset: the rows around them keep their values."""
    g = gradient(rng, 8 * 64, "f32").reshape(8, 64)
    whole = Tensor.from_numpy(g, device)
    view = whole.rows(2, 5)
    scale = Tensor.from_numpy(np.array([0.5], np.float32), device)
    grid, constants = scale_grid("clip_scale_inplace4", view.size, quads)
    device.runtime.dispatch("norm_clip", "clip_scale_inplace4", [scale, view], grid, {"n": view.size},
                            constants=constants)
    expected = g.copy()
    expected[2:5] *= np.float32(0.5)
    np.testing.assert_array_equal(whole.numpy(), expected)
