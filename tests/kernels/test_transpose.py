"""kernels/transpose.wgsl through engine.ops.transpose: any two axes of a rank >= 2 tensor, bit-exact."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import ops
from wgrpo.engine.tensor import Tensor

CASES = [
    ((1, 1), -2, -1),
    ((7, 13), -2, -1),
    ((13, 7), 1, 0),
    ((257, 3), 0, 1),
    ((3, 5, 257), -2, -1),
    ((3, 5, 257), 0, 2),
    ((3, 5, 257), 0, 1),
    ((2, 7, 3, 5), 1, 2),  # (B, T, H, D) -> (B, H, T, D)
    ((2, 3, 7, 5), 1, 2),  # and back
    ((2, 3, 4, 5), 0, 3),
    ((2, 3, 4, 5), -1, 1),
    ((2, 1, 3), 0, 2),  # a size-1 axis in between: data still moves
    ((5, 1, 3), 0, 1),  # only a size-1 axis moves: a plain copy
    ((1, 5, 1, 3), 0, 2),
    ((4, 6), 1, 1),  # the same axis twice: a copy
    ((300, 301), 0, 1),  # more than one workgroup
]


@pytest.mark.parametrize("shape,dim0,dim1", CASES)
def test_transpose_matches_numpy(device, shape, dim0, dim1):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out = ops.transpose(Tensor.from_numpy(x, device), dim0, dim1)
    expected = np.swapaxes(x, dim0, dim1)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out.numpy(), expected)


def test_default_dims_swap_the_last_two(device):
    x = np.random.default_rng(2).standard_normal((2, 3, 11, 6)).astype(np.float32)
    np.testing.assert_array_equal(ops.transpose(Tensor.from_numpy(x, device)).numpy(), np.swapaxes(x, -2, -1))


def test_twice_is_identity_and_input_is_untouched(device):
    x = np.random.default_rng(3).standard_normal((4, 9, 5)).astype(np.float32)
    t = Tensor.from_numpy(x, device)
    back = ops.transpose(ops.transpose(t, 0, 2), 0, 2)
    np.testing.assert_array_equal(back.numpy(), x)
    np.testing.assert_array_equal(t.numpy(), x)


def test_empty(device):
    out = ops.transpose(Tensor.empty((3, 0, 2), np.float32, device), 0, 2)
    assert out.shape == (2, 0, 3)


@pytest.mark.parametrize("shape,dim0,dim1", [((7, 13), 0, 1), ((2, 7, 3, 5), 1, 2), ((3, 5, 257), 0, 2)])
def test_f16(device, shape, dim0, dim1):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float16)
    out = ops.transpose(Tensor.from_numpy(x, device), dim0, dim1)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out.numpy(), np.swapaxes(x, dim0, dim1))


def test_errors_name_the_argument(device):
    x = Tensor.from_numpy(np.zeros((2, 3), np.float32), device)
    with pytest.raises(ValueError, match=r"transpose: x must have at least 2 dimension\(s\), got shape \(5,\)"):
        ops.transpose(Tensor.from_numpy(np.zeros(5, np.float32), device))
    with pytest.raises(ValueError, match=r"transpose: dim1=2 is out of range for x of shape \(2, 3\)"):
        ops.transpose(x, 0, 2)
    with pytest.raises(ValueError, match=r"dim0=-3"):
        ops.transpose(x, -3, 1)
    with pytest.raises(TypeError, match="dim0 must be an int"):
        ops.transpose(x, "0", 1)
    with pytest.raises(TypeError, match="transpose: x must be float32 or float16, got int32"):
        ops.transpose(Tensor.from_numpy(np.zeros((2, 3), np.int32), device))
