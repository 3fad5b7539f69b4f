"""Tolerances per storage dtype, in one place, and the comparison every kernel test uses."""

from __future__ import annotations

import numpy as np

# (rtol, atol) for results of O(1) magnitude.
TOLERANCES = {"f32": (1e-4, 1e-5), "f16": (2e-2, 2e-2)}


def assert_close(actual, expected, elem: str = "f32", scale: float = 1.0):
    """Compare against the numpy reference with the dtype's tolerance; `scale` widens it for long sums."""
    rtol, atol = TOLERANCES[elem]
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol * scale, atol=atol * scale)
