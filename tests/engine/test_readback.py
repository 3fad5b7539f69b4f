"""read_together: several tensors in one read-back, with the values `Tensor.numpy()` gives."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, read_together
from wgrpo.engine.dtypes import BFLOAT16, convert


def test_values_and_dtypes_match_numpy_after_one_readback(device, rng):
    arrays = [np.float32(2.5).reshape(()), rng.standard_normal(7).astype(np.float32),
              rng.standard_normal((3, 5)).astype(np.float16),  # 30 bytes: not a whole number of words
              rng.integers(-9, 9, (2, 3)).astype(np.int32), np.zeros((0,), np.float32),
              convert(rng.standard_normal(3).astype(np.float32), BFLOAT16)]
    tensors = [Tensor.from_numpy(a, device) for a in arrays]
    reads = device.runtime.stats.readbacks
    values = read_together(tensors)
    assert device.runtime.stats.readbacks - reads == 1
    for got, want in zip(values, arrays, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_one_tensor_and_none(device):
    assert read_together([]) == []
    np.testing.assert_array_equal(read_together([Tensor.from_numpy(np.arange(3, dtype=np.float32), device)])[0],
                                  np.arange(3, dtype=np.float32))


def test_split_tensors_are_refused(device):
    parts = [Tensor.from_numpy(np.ones((1, 4), np.float32), device) for _ in range(2)]
    with pytest.raises(TypeError, match="item 1 must be an unsplit"):
        read_together([parts[0], Tensor.from_parts(parts)])
