"""Decode-step attention (one query per row over a KV cache): attention_decode (the scalar spec) and
attention_decode_subgroup (a subgroup per (batch row, kv head), GQA heads sharing each K/V load) against numpy.

Shapes cover B = 1 and primes, head dimensions 4 to 128 (one to four 32-wide chunks, quads past D masked), GQA
groups 1, 2, 3, 5 and 8 (several workgroups per kv head, one with a head past the group), caches of one key and
of several blocks of 8 with a partial last block, and left padding per row (including a row with no visible
key). Cache rows past `length` hold NaN: no result may read them.
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo import kernels
from wgrpo.engine import ops
from wgrpo.engine.errors import InputError
from wgrpo.engine.tensor import Tensor
from wgrpo.engine.ops.attention import CACHE_FAMILY, DECODE_VARIANTS, max_head_dim, refusal
from tests.tolerances import assert_close

# (B, H, H_kv, D, length, T_cap)
SHAPES = [
    (1, 1, 1, 4, 1, 1),       # the smallest: one key, one quad per row
    (1, 2, 1, 8, 9, 12),      # one key past a block of 8, two lanes hold quads
    (3, 6, 2, 8, 13, 20),     # GQA 3:1, B prime
    (5, 9, 3, 64, 37, 40),    # SmolLM-like heads: GQA 3:1, two chunks
    (2, 4, 2, 32, 74, 80),    # the benchmark's heads, several blocks
    (7, 3, 1, 36, 9, 11),     # D = 36: the second chunk holds one quad
    (2, 5, 5, 16, 17, 17),    # no GQA, cache full
    (3, 5, 1, 32, 23, 29),    # GQA 5:1: two workgroups per kv head, the second with a head past the group
    (2, 16, 2, 128, 70, 70),  # GQA 8:1 and the largest head dimension
    (11, 4, 4, 96, 5, 8),     # three chunks, B prime
]


def reference(q, k, v, starts, length, scale):
    """out (B, 1, H, D) of the query at cache position length - 1 over keys starts[b] ..= length - 1 (0 if none)."""
    b, _, heads, d = q.shape
    group = heads // k.shape[2]
    out = np.zeros(q.shape, np.float64)
    for bi in range(b):
        first = int(starts[bi])
        if first >= length:
            continue
        for h in range(heads):
            keys = k[bi, first:length, h // group].astype(np.float64)
            s = keys @ q[bi, 0, h].astype(np.float64) * scale
            p = np.exp(s - s.max())
            out[bi, 0, h] = (p / p.sum()) @ v[bi, first:length, h // group].astype(np.float64)
    return out


def operands(rng, b, heads, kv_heads, d, length, cap, dtype=np.float32):
    q = rng.standard_normal((b, 1, heads, d)).astype(dtype)
    k = rng.standard_normal((b, cap, kv_heads, d)).astype(dtype)
    v = rng.standard_normal((b, cap, kv_heads, d)).astype(dtype)
    k[:, length:] = np.nan  # never written: must not reach any result
    v[:, length:] = np.nan
    starts = rng.integers(0, length, b).astype(np.uint32)
    starts[0] = 0
    return q, k, v, starts


def run(device, q, k, v, starts, length, decode, scale=None):
    tensors = [Tensor.from_numpy(a, device) for a in (q, k, v, starts)]
    return ops.attention_cached(*tensors, length, scale, decode=decode)


def skip_unless_runs(variant, device):
    why = refusal("subgroup", device) if variant == "subgroup" else None
    if why is not None:
        pytest.skip(f"decode variant {variant!r} cannot run here: {why}")


@pytest.mark.parametrize("variant", DECODE_VARIANTS)
@pytest.mark.parametrize("b,heads,kv_heads,d,length,cap", SHAPES)
def test_decode_matches_numpy(device, rng, variant, b, heads, kv_heads, d, length, cap):
    skip_unless_runs(variant, device)
    q, k, v, starts = operands(rng, b, heads, kv_heads, d, length, cap)
    out = run(device, q, k, v, starts, length, variant).numpy()
    assert np.isfinite(out).all()
    assert_close(out, reference(q, k, v, starts, length, 1 / np.sqrt(d)))


@pytest.mark.parametrize("variant", DECODE_VARIANTS)
def test_rows_without_keys_are_zero_and_scale_applies(device, rng, variant):
    skip_unless_runs(variant, device)
    q, k, v, starts = operands(rng, 4, 6, 2, 16, 12, 15)
    starts[1], starts[2], starts[3] = 12, 11, 4  # row 1 sees no key (all padding), row 2 one key
    q *= 4  # sharp softmax: the running max must be right
    out = run(device, q, k, v, starts, 12, variant, scale=0.7).numpy()
    assert np.all(out[1] == 0)
    assert_close(out, reference(q, k, v, starts, 12, 0.7))


@pytest.mark.parametrize("variant", DECODE_VARIANTS)
def test_f16(device, rng, variant):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    skip_unless_runs(variant, device)
    q, k, v, starts = operands(rng, 3, 9, 3, 64, 21, 24, np.float16)
    out = run(device, q, k, v, starts, 21, variant)
    assert out.dtype == np.float16
    assert_close(out.numpy(), reference(q, k, v, starts, 21, 1 / 8), "f16")


def launched(device, monkeypatch, *args, **kwargs):
    """(entry, grid, constants) of the one dispatch attention_cached records (an entry of CACHE_FAMILY)."""
    seen, families = [], set()
    dispatch = device.runtime.dispatch
    refusal("subgroup", device)  # the device's one probe dispatch, if not run yet, outside the spy

    def spy(kernel, entry, buffers, grid, params=None, **options):
        seen.append((entry, tuple(grid), options.get("constants")))
        families.add(kernel)
        return dispatch(kernel, entry, buffers, grid, params, **options)

    monkeypatch.setattr(device.runtime, "dispatch", spy)
    run(device, *args, **kwargs)
    monkeypatch.undo()
    assert len(seen) == 1 and families == {CACHE_FAMILY}
    return seen[0]


def test_default_picks_subgroup_where_it_runs_and_the_launch_is_fixed_over_steps(device, rng, monkeypatch):
    """Recorded decode steps replay with Params extrapolated, so the entry, grid and overrides must not move with
    the cache length."""
    q, k, v, starts = operands(rng, 3, 10, 2, 32, 30, 40)
    first = launched(device, monkeypatch, q, k, v, starts, 20, None)
    assert first == launched(device, monkeypatch, q, k, v, starts, 21, None)
    if refusal("subgroup", device) is None:
        # 5 query heads per kv head: two workgroups of 3 heads each
        assert first == ("attention_decode_subgroup", (2, 2, 3), {"DECODE_CHUNKS": 1, "DECODE_HEADS": 3})
    else:
        assert first[0] == "attention_decode"


def test_head_dim_not_a_multiple_of_4_falls_back(device, rng, monkeypatch):
    q, k, v, starts = operands(rng, 2, 4, 2, 6, 9, 9)
    assert launched(device, monkeypatch, q, k, v, starts, 9, None)[0] == "attention_decode"
    assert_close(run(device, q, k, v, starts, 9, None).numpy(), reference(q, k, v, starts, 9, 1 / np.sqrt(6)))
    with pytest.raises(InputError, match="D=6 is not a multiple of 4"):
        run(device, q, k, v, starts, 9, "subgroup")


def test_bad_decode_argument_is_refused(device, rng):
    q, k, v, starts = operands(rng, 1, 2, 1, 8, 4, 4)
    with pytest.raises(InputError, match="decode must be one of"):
        run(device, q, k, v, starts, 4, "tiled")
    prefill = [Tensor.from_numpy(a, device) for a in (np.zeros((1, 2, 2, 8), np.float32), k, v, starts)]
    with pytest.raises(InputError, match="applies to one query per row"):
        ops.attention_cached(*prefill, 4, decode="serial")


def test_the_cache_family_shares_the_serial_kernels_params_and_max_d():
    """One host dict fills the Params of both families, and _check's bound on D (attention.wgsl's MAX_D) is the one
    the cache entries' private arrays hold."""
    cache, serial = kernels.load(CACHE_FAMILY), kernels.load("attention")
    assert cache.constants["MAX_D"] == serial.constants["MAX_D"] == max_head_dim()
    assert set(cache.entries) == {"attention_cached", "attention_decode", "attention_decode_subgroup"}
    for entry in cache.entries:
        assert cache.params(entry).fields == serial.params("attention_serial").fields, entry
