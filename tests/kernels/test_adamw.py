"""kernels/adamw.wgsl: adamw_step_naive and its vec4 form adamw_step4, dispatched directly, against a float64
numpy port of torch's single-tensor AdamW, on a first step (moments read as 0) and a later one; the vec4 entry
also bit for bit against the scalar one, with 1, 3 and 8 quads per invocation and several workgroups."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wgrpo.engine import Tensor
from wgrpo.engine.ops._common import flat_grid, grid_1d
from tests.tolerances import assert_close

SCALAR_SIZES = [1, 7, 257, 1021, 5003]
QUAD_SIZES = [4, 8, 1020, 4100, 2 * 256 * 8 * 4 + 28]  # the last spans several workgroups at 8 quads each
LR, BETAS, EPS, WD = 1e-2, (0.9, 0.95), 1e-8, 0.1


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def step_params(n: int, t: int, fresh: bool, scaled: bool = False) -> dict:
    b1, b2 = BETAS
    return {"n": n, "fresh": fresh, "scaled": scaled, "decay": 1.0 - LR * WD, "one_minus_beta1": 1.0 - b1, "beta2": b2,
            "one_minus_beta2": 1.0 - b2, "eps": EPS, "step_size": LR / (1.0 - b1**t),
            "bc2_sqrt": math.sqrt(1.0 - b2**t)}


def reference(p, g, m, v, t):
    """torch.optim.AdamW's update of one tensor at step t, in float64; m and v are the moments before it."""
    p, g, m, v = (a.astype(np.float64) for a in (p, g, m, v))
    b1, b2 = BETAS
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p * (1 - LR * WD) - LR / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + EPS)
    return p, m, v


def case(rng, n, elem):
    dtype = {"f32": np.float32, "f16": np.float16}[elem]
    p, g = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    m = (0.1 * rng.standard_normal(n)).astype(np.float32)
    v = (0.01 * rng.random(n)).astype(np.float32)
    return p, g, m, v


def run(device, entry, arrays, t, fresh, quads=1, scale=None):
    """Dispatch one AdamW step of `entry` on copies of arrays = (p, g, m, v), the gradient read times `scale`
    when given; returns them after the step."""
    tensors = [Tensor.from_numpy(a, device) for a in arrays]
    scale_binding = tensors[1] if scale is None else Tensor.from_numpy(np.array([scale], np.float32), device)
    n = arrays[0].size
    if entry == "adamw_step4":
        grid, constants = grid_1d(math.ceil(n / (4 * quads)), 256), {"QUADS": quads}
    else:
        grid, constants = flat_grid("adamw", entry, n), None
    elem = "f16" if arrays[0].dtype == np.float16 else "f32"
    device.runtime.dispatch("adamw", entry, [*tensors, scale_binding], grid,
                            step_params(n, t, fresh, scale is not None), elem=elem, constants=constants)
    p, g, m, v = (x.numpy() for x in tensors)
    np.testing.assert_array_equal(g, arrays[1])  # the gradient is read, never written
    return p, m, v


def check(actual, expected, elem):
    p, m, v = actual
    ref_p, ref_m, ref_v = expected
    assert_close(p, ref_p, elem)
    assert_close(m, ref_m)
    assert_close(v, ref_v)


@pytest.mark.parametrize("n", SCALAR_SIZES + QUAD_SIZES)
@pytest.mark.parametrize("fresh", [True, False])
def test_scalar_entry_matches_numpy(device, rng, n, fresh):
    for elem in elems(device):
        p, g, m, v = case(rng, n, elem)
        t = 1 if fresh else 3
        zeros = np.zeros(n, np.float64)
        expected = reference(p, g, zeros if fresh else m, zeros if fresh else v, t)
        check(run(device, "adamw_step_naive", (p, g, m, v), t, fresh), expected, elem)


@pytest.mark.parametrize("n", QUAD_SIZES)
@pytest.mark.parametrize("fresh", [True, False])
@pytest.mark.parametrize("quads", [1, 3, 8])
def test_vec4_entry_matches_numpy_and_the_scalar_entry(device, rng, n, fresh, quads):
    for elem in elems(device):
        p, g, m, v = case(rng, n, elem)
        t = 1 if fresh else 3
        zeros = np.zeros(n, np.float64)
        expected = reference(p, g, zeros if fresh else m, zeros if fresh else v, t)
        vec4 = run(device, "adamw_step4", (p, g, m, v), t, fresh, quads)
        check(vec4, expected, elem)
        scalar = run(device, "adamw_step_naive", (p, g, m, v), t, fresh)
        for a, b in zip(vec4, scalar):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("quads", [1, 8])
def test_vec4_entry_writes_only_its_binding(device, rng, quads):
    """Rows 2..5 of (8, 64) tensors bound at a byte offset: the rows around them keep their values."""
    arrays = case(rng, 8 * 64, "f32")
    whole = [Tensor.from_numpy(a.reshape(8, 64), device) for a in arrays]
    views = [t.rows(2, 5) for t in whole]
    n = views[0].size
    device.runtime.dispatch("adamw", "adamw_step4", [*views, views[1]], grid_1d(math.ceil(n / (4 * quads)), 256),
                            step_params(n, 2, False), constants={"QUADS": quads})
    p, g, m, v = (a.reshape(8, 64) for a in arrays)
    expected = reference(p[2:5], g[2:5], m[2:5], v[2:5], 2)
    for t, before, after in zip((whole[0], whole[2], whole[3]), (p, m, v), expected):
        got = t.numpy()
        np.testing.assert_array_equal(np.delete(got, [2, 3, 4], axis=0), np.delete(before, [2, 3, 4], axis=0))
        assert_close(got[2:5], after)


@pytest.mark.parametrize("entry", ["adamw_step_naive", "adamw_step4"])
def test_a_gradient_scale_is_the_step_on_the_scaled_gradient(device, rng, entry):
    n = 1028
    for elem in elems(device):
        p, g, m, v = case(rng, n, elem)
        scale = np.float32(0.37)
        scaled = (g.astype(np.float32) * scale)  # f32 math, as the kernel's read of g * scale
        expected = reference(p, scaled, m, v, 3)
        got = run(device, entry, (p, g, m, v), 3, False, scale=float(scale))
        check(got, expected, elem)
        if elem == "f32":  # the same f32 products as scaling the gradient first
            same = run(device, entry, (p, scaled.astype(np.float32), m, v), 3, False)
            for a, b in zip(got, same):
                np.testing.assert_array_equal(a, b)
