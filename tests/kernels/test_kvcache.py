"""KV-cache kernels against numpy: attention_cached / attention_decode (per-row first key, keys beyond `length`
never read), kv_write and gather_rows, on awkward shapes; gather_rows4 (quads of words) bit for bit as gather_rows."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.errors import InputError
from wgrpo.engine.kv_cache import KVCache, gather_rows
from tests.dispatch_spy import entries_dispatched


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


# ---------------------------------------------------------------------------------------------- gather_rows4

# (rows of index, words, src_stride, dst_stride): one quad, rows of quads below, at and above a chunk, rows packed
# end to end and with gaps, more rows than a workgroup of 64.
GATHER_CASES = [(1, 4, 4, 4), (3, 12, 16, 12), (5, 36, 40, 44), (70, 8, 8, 8), (4, 132, 132, 256), (9, 64, 96, 64)]


@pytest.fixture(params=[1, 3, 8])  # quads per invocation: the GPU choice, a partial chunk, the CPU choice
def gather_quads(request, monkeypatch):
    from wgrpo.engine import kv_cache

    monkeypatch.setattr(kv_cache, "SOFTWARE_QUADS", request.param)
    monkeypatch.setattr(kv_cache, "GPU_QUADS", request.param)
    return request.param


def gather_reference(src, index, words, src_stride, dst, dst_stride):
    out = dst.copy()
    for r, i in enumerate(index):
        out[r * dst_stride : r * dst_stride + words] = src[i * src_stride : i * src_stride + words]
    return out


@pytest.mark.parametrize("rows,words,src_stride,dst_stride", GATHER_CASES)
def test_gather_rows4_copies_words_as_the_scalar_entry(device, rng, gather_quads, rows, words, src_stride,
                                                       dst_stride):
    src_rows = rows + 3
    src = rng.integers(-2**31, 2**31, src_rows * src_stride, dtype=np.int64).astype(np.int32)
    src[:7] = np.array([np.nan, -0.0, np.inf, 1e-45, 0, 1, 2], np.float32).view(np.int32)  # any bits
    index = rng.integers(0, src_rows, rows)
    index[0] = src_rows - 1  # the last row of src
    dst = np.full((rows - 1) * dst_stride + words, -1, np.int32)
    results = []
    for variant in ("vec4", "scalar"):
        out = Tensor.from_numpy(dst, device)
        gather_rows(Tensor.from_numpy(src, device), index, words, src_stride, out, dst_stride, variant=variant)
        results.append(out.numpy())
    np.testing.assert_array_equal(results[0], gather_reference(src, index, words, src_stride, dst, dst_stride))
    np.testing.assert_array_equal(results[0], results[1])


def test_gather_rows_picks_vec4_where_every_size_is_whole_quads(device, monkeypatch, rng):
    used = entries_dispatched(device, monkeypatch)
    src = Tensor.from_numpy(np.arange(64, dtype=np.float32), device)
    dst = Tensor.empty((64,), np.float32, device)
    for words, src_stride, dst_stride, entry in ((8, 16, 12, "gather_rows4"), (6, 16, 12, "gather_rows"),
                                                 (8, 18, 12, "gather_rows"), (8, 16, 10, "gather_rows")):
        del used[:]
        gather_rows(src, np.array([2, 0, 1]), words, src_stride, dst, dst_stride)
        assert used == [entry], (words, src_stride, dst_stride)
        expected = gather_reference(np.arange(64, dtype=np.float32), [2, 0, 1], words, src_stride, dst.numpy(),
                                    dst_stride)
        np.testing.assert_array_equal(dst.numpy(), expected)
    with pytest.raises(InputError, match="gather_rows: the vec4 variant needs words and strides multiples of 4"):
        gather_rows(src, np.array([0]), 6, 16, dst, 12, variant="vec4")
    with pytest.raises(InputError, match="gather_rows: variant must be one of"):
        gather_rows(src, np.array([0]), 8, 16, dst, 12, variant="wide")


def test_cache_gather_in_quads(device, rng, gather_quads):
    cache = KVCache(num_layers=2, batch=5, capacity=11, kv_heads=2, head_dim=6, starts=[0, 1, 2, 3, 4], device=device)
    k = rng.standard_normal((5, 7, 2, 6)).astype(np.float32)
    v = rng.standard_normal((5, 7, 2, 6)).astype(np.float32)
    q = Tensor.from_numpy(rng.standard_normal((5, 7, 2, 6)).astype(np.float32), device)
    for layer in range(2):
        cache.attend(layer, q, Tensor.from_numpy(k, device), Tensor.from_numpy(v, device))
    keep = [4, 1, 1, 3]
    moved = cache.gather(keep, capacity=13)  # rows of 7 * 12 words, strides 11 * 12 and 13 * 12: whole quads
    for layer in range(2):
        np.testing.assert_array_equal(moved.k[layer].numpy()[:, :7], k[keep])
        np.testing.assert_array_equal(moved.v[layer].numpy()[:, :7], v[keep])
