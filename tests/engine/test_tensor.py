"""Tensor creation, round trips and dtype rules."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32, np.uint32])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 257), (0,)])
def test_round_trip_keeps_values_shape_and_dtype(device, dtype, shape):
    if dtype == np.float16 and not device.has_f16:
        pytest.skip("adapter lacks shader-f16")
    a = (np.arange(int(np.prod(shape))) % 101).astype(dtype).reshape(shape)
    t = Tensor.from_numpy(a, device)
    assert t.shape == shape and t.dtype == np.dtype(dtype)
    out = t.numpy()
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, a)


def test_float64_and_int64_are_converted(device):
    assert Tensor.from_numpy(np.zeros(3), device).dtype == np.float32
    assert Tensor.from_numpy(np.zeros(3, np.int64), device).dtype == np.int32
    with pytest.raises(ValueError, match="int32 range"):
        Tensor.from_numpy(np.array([2**40]), device)


def test_unsupported_dtype_names_it(device):
    with pytest.raises(TypeError, match="complex128"):
        Tensor.from_numpy(np.zeros(3, np.complex128), device)


def test_non_contiguous_input_is_copied(device, rng):
    a = rng.standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_array_equal(Tensor.from_numpy(a.T, device).numpy(), a.T)


def test_device_by_spec(device):
    assert Tensor.from_numpy(np.ones(2, np.float32), str(device.summary.index)).device is device


def test_zero_dim_and_empty_arrays_keep_their_shape(device):
    scalar = Tensor.from_numpy(np.float32(2.5), device)
    assert scalar.shape == () and scalar.numpy() == np.float32(2.5)
    assert Tensor.from_numpy(np.zeros((3, 0, 2), np.float32), device).numpy().shape == (3, 0, 2)
