"""KV-cache kernels against numpy: attention_cached / attention_decode (per-row first key, keys beyond `length`
never read), kv_write and gather_rows, on awkward shapes."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.kv_cache import KVCache, gather_rows


def reference(q, k, v, starts, length):
    """out (B, T_q, H, D) of query i (cache position length - T_q + i) over keys starts[b] ..= that position."""
    b, t_q, heads, d = q.shape
    group = heads // k.shape[2]
    out = np.zeros(q.shape, np.float64)
    for bi in range(b):
        for i in range(t_q):
            last = length - t_q + i
            if last < starts[bi]:
                continue
            for h in range(heads):
                keys = k[bi, starts[bi]:last + 1, h // group].astype(np.float64)
                s = keys @ q[bi, i, h] / np.sqrt(d)
                p = np.exp(s - s.max())
                out[bi, i, h] = (p / p.sum()) @ v[bi, starts[bi]:last + 1, h // group]
    return out


@pytest.mark.parametrize("b,t_q,length,cap,heads,kv_heads,d", [
    (1, 1, 1, 1, 1, 1, 2), (3, 1, 13, 20, 6, 2, 10), (2, 9, 9, 17, 4, 4, 8), (3, 5, 21, 23, 3, 1, 6),
    (5, 1, 37, 37, 2, 2, 130 // 2)])
def test_attention_cached_matches_numpy(device, rng, b, t_q, length, cap, heads, kv_heads, d):
    q = rng.standard_normal((b, t_q, heads, d)).astype(np.float32)
    k = rng.standard_normal((b, cap, kv_heads, d)).astype(np.float32)
    v = rng.standard_normal((b, cap, kv_heads, d)).astype(np.float32)
    k[:, length:] = np.nan  # never written: must not be read into any result
    v[:, length:] = np.nan
    starts = rng.integers(0, length, b).astype(np.uint32)
    starts[0] = 0
    out = ops.attention_cached(*(Tensor.from_numpy(a, device) for a in (q, k, v, starts)), length).numpy()
    np.testing.assert_allclose(out, reference(q, k, v, starts, length), rtol=1e-4, atol=1e-5)


def test_attention_cached_empty_rows_are_zero_and_errors(device, rng):
    q = Tensor.from_numpy(rng.standard_normal((2, 4, 2, 4)).astype(np.float32), device)
    kv = Tensor.from_numpy(rng.standard_normal((2, 6, 2, 4)).astype(np.float32), device)
    starts = Tensor.from_numpy(np.array([3, 0], np.uint32), device)
    out = ops.attention_cached(q, kv, kv, starts, 4).numpy()
    assert np.all(out[0, :3] == 0) and np.isfinite(out).all()  # padding queries see no key
    with pytest.raises(ValueError, match="length"):
        ops.attention_cached(q, kv, kv, starts, 7)
    with pytest.raises(ValueError, match="starts"):
        ops.attention_cached(q, kv, kv, Tensor.from_numpy(np.zeros(3, np.uint32), device), 4)


def test_kv_write_and_gather(device, rng):
    cache = KVCache(num_layers=2, batch=3, capacity=7, kv_heads=2, head_dim=3, starts=[0, 1, 2], device=device)
    k = rng.standard_normal((3, 4, 2, 3)).astype(np.float32)
    v = rng.standard_normal((3, 4, 2, 3)).astype(np.float32)
    q = Tensor.from_numpy(rng.standard_normal((3, 4, 2, 3)).astype(np.float32), device)
    for layer in range(2):
        cache.attend(layer, q, Tensor.from_numpy(k, device), Tensor.from_numpy(v, device))
    assert cache.length == 4
    np.testing.assert_array_equal(cache.k[1].numpy()[:, :4], k)
    np.testing.assert_array_equal(cache.v[0].numpy()[:, :4], v)
    moved = cache.gather([2, 2, 0, 1], capacity=9)
    assert moved.length == 4 and moved.k[0].shape == (4, 9, 2, 3)
    np.testing.assert_array_equal(moved.k[0].numpy()[:, :4], k[[2, 2, 0, 1]])
    np.testing.assert_array_equal(moved.starts, [2, 2, 0, 1])
    src = Tensor.from_numpy(np.arange(20, dtype=np.int32), device)
    dst = Tensor.from_numpy(np.full(12, -1, np.int32), device)
    gather_rows(src, np.array([3, 0, 1]), 3, 5, dst, 4)
    np.testing.assert_array_equal(dst.numpy(), [15, 16, 17, -1, 0, 1, 2, -1, 5, 6, 7, -1])
