"""kernels/matmul_cpu.wgsl against a float64 numpy reference, each entry dispatched directly in its own layout:
awkward shapes (through the quad loop, its k tail and the single-element fallback), batched and broadcast operands,
windows, accumulate and bias, f16 storage and packed bf16/f16 weights."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from wgrpo import kernels
from wgrpo.engine import Tensor
from wgrpo.engine.dtypes import to_bfloat16, widen
from tests.tolerances import assert_close

FAMILY = "matmul_cpu"
_NAME = re.compile(r"^matmul_cpu_([nt])([nt])(\d+)x(\d+)$")


def entries() -> dict[str, tuple[bool, bool, int, int]]:
    """Entry -> (trans_a, trans_b, rows per invocation, columns per invocation), read from the names."""
    found = {}
    for entry in kernels.load(FAMILY).entries:
        match = _NAME.match(entry)
        assert match, f"{entry} does not follow matmul_cpu_<layout><rows>x<cols>"
        ta, tb, rows, cols = match.groups()
        found[entry] = (ta == "t", tb == "t", int(rows), int(cols))
    return found


ENTRIES = entries()
# entries that compute K in chunks of K_CHUNK, keeping the partial sums in C (f32 C)
CHUNKED = sorted(entry for entry in ENTRIES if ENTRIES[entry][2] > 64)


@pytest.fixture(autouse=True)
def _needs_subgroups(device):
    if not device.has_subgroups:
        pytest.skip("matmul_cpu entries need the subgroup feature")


class Operand:
    """A matrix op(X) is read from: its stored 2-D (or batched 3-D) array inside a bigger buffer, with the row
    length and the element offset the kernel walks it by."""

    def __init__(self, stored: np.ndarray, ld: int, offset: int, buffer: np.ndarray):
        self.stored, self.ld, self.offset, self.buffer = stored, ld, offset, buffer


def place(rng, shape, dtype, pad_cols=0, offset=0, batch=None):
    """Random `shape` (rows, cols) values, stored with `pad_cols` extra columns per row after `offset` elements
    (batch copies back to back), and the whole flat buffer; at least 4 elements (the vec4 bindings)."""
    rows, cols = shape
    ld = cols + pad_cols
    count = batch or 1
    size = max(4, offset + count * rows * ld)
    buffer = rng.standard_normal(size).astype(np.float32)
    block = buffer[offset:offset + count * rows * ld].reshape(count, rows, ld)[:, :, :cols]
    stored = block if batch else block[0]
    return Operand(stored.astype(np.float64), ld, offset, buffer.astype(dtype))


def dispatch(device, entry, a, b, out, m, n, k, *, batch=1, stride_a=0, stride_b=0, stride_c=None, ldc=None,
             offset_c=0, accumulate=False, bias=None, offset_bias=0, elem="f32", weights="elem", constants=None,
             grid_rows=None):
    ta, tb, rows, cols = ENTRIES[entry]
    x, _, _ = kernels.load(FAMILY).workgroup_size(entry)
    ldc = n if ldc is None else ldc
    params = {"M": m, "N": n, "K": k, "batch": batch, "trans_a": ta, "trans_b": tb, "accumulate": accumulate,
              "has_bias": bias is not None, "stride_a": stride_a, "stride_b": stride_b,
              "stride_c": m * ldc if stride_c is None else stride_c, "lda": a.ld, "ldb": b.ld, "ldc": ldc,
              "offset_a": a.offset, "offset_b": b.offset, "offset_c": offset_c, "offset_bias": offset_bias}
    grid = (math.ceil(n / (cols * x)), grid_rows or math.ceil(m / rows), batch)
    at = Tensor.from_numpy(a.buffer, device)
    bt = Tensor.from_numpy(b.buffer, device)
    bias_t = Tensor.from_numpy(bias, device) if bias is not None else at
    device.runtime.dispatch(FAMILY, entry, [at, bt, out, bias_t], grid, params, elem=elem, weights=weights,
                            constants=constants)
    return out.numpy()


def operands(rng, entry, m, n, k, dtype=np.float32, pad=(0, 0), offsets=(0, 0), batch=None):
    ta, tb, _, _ = ENTRIES[entry]
    a = place(rng, (k, m) if ta else (m, k), dtype, pad[0], offsets[0], batch)
    b = place(rng, (n, k) if tb else (k, n), dtype, pad[1], offsets[1], batch)
    return a, b


def reference(a, b, ta, tb):
    return (np.swapaxes(a.stored, -1, -2) if ta else a.stored) @ (np.swapaxes(b.stored, -1, -2) if tb else b.stored)


# (M, N, K): ones, primes, non-multiples of every tile and of the quads (single-element fallback), multiples of 4
# (quad main loop, several workgroups in both directions), and a k tail after the quads (K = 38 with padded rows).
SHAPES = [(1, 1, 1), (5, 1, 9), (7, 13, 5), (33, 65, 17), (31, 257, 2), (97, 300, 41), (36, 44, 52), (72, 136, 40)]


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_entry_matches_numpy_in_its_layout(device, rng, entry):
    ta, tb, _, _ = ENTRIES[entry]
    for m, n, k in SHAPES:
        a, b = operands(rng, entry, m, n, k)
        out = Tensor.empty((m, n), np.float32, device)
        result = dispatch(device, entry, a, b, out, m, n, k)
        assert_close(result, reference(a, b, ta, tb), scale=np.sqrt(k))
    # quads with a k tail: rows padded to multiples of 4 (aligned), K = 38
    m, n, k = 41, 70, 38
    pad = (2 if not ta else (-m) % 4, 2 if tb else (-n) % 4)
    a, b = operands(rng, entry, m, n, k, pad=pad)
    out = Tensor.empty((m, n), np.float32, device)
    assert_close(dispatch(device, entry, a, b, out, m, n, k), reference(a, b, ta, tb), scale=np.sqrt(k))


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_batched_and_broadcast_operands(device, rng, entry):
    ta, tb, _, _ = ENTRIES[entry]
    m, n, k, batch = 19, 37, 12, 3
    a, b = operands(rng, entry, m, n, k, batch=batch)
    stride_a, stride_b = a.stored[0].size, b.stored[0].size
    out = Tensor.empty((batch, m, n), np.float32, device)
    result = dispatch(device, entry, a, b, out, m, n, k, batch=batch, stride_a=stride_a, stride_b=stride_b)
    assert_close(result, reference(a, b, ta, tb), scale=np.sqrt(k))
    for broadcast_a in (True, False):  # one matrix over the batch: stride 0
        a, b = operands(rng, entry, m, n, k, batch=batch)
        if broadcast_a:
            a = Operand(a.stored[0], a.ld, a.offset, a.buffer)
        else:
            b = Operand(b.stored[0], b.ld, b.offset, b.buffer)
        result = dispatch(device, entry, a, b, out, m, n, k, batch=batch, stride_a=0 if broadcast_a else stride_a,
                          stride_b=stride_b if broadcast_a else 0)
        assert_close(result, reference(a, b, ta, tb), scale=np.sqrt(k))


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_windows_accumulate_and_bias(device, rng, entry):
    ta, tb, _, _ = ENTRIES[entry]
    m, n, k = 21, 45, 27
    a_cols, b_cols = (m if ta else k), (k if tb else n)
    bias = rng.standard_normal(n + 7).astype(np.float32)
    # aligned windows (offsets and row lengths multiples of 4: quads, then a k tail) added to C; unaligned ones
    # (single-element reads) written over it; C's window in quads (4-wide stores but for the last column
    # group, N = 45) or not (one element at a time)
    aligned = ((-a_cols) % 4 + 4, (-b_cols) % 4 + 4)
    for accumulate, offsets, pad, (ldc, offset_c) in ((True, (8, 12), aligned, (n + 6, 5)),
                                                      (False, (3, 5), (1, 2), (n + 6, 5)),
                                                      (True, (8, 12), aligned, (n + 3, 8)),
                                                      (False, (3, 5), (1, 2), (n + 3, 4))):
        a, b = operands(rng, entry, m, n, k, pad=pad, offsets=offsets)
        start = rng.standard_normal(offset_c + m * ldc + 3).astype(np.float32)
        out = Tensor.from_numpy(start, device)
        result = dispatch(device, entry, a, b, out, m, n, k, ldc=ldc, offset_c=offset_c, accumulate=accumulate,
                          bias=bias, offset_bias=7)
        expected = start.astype(np.float64)
        window = expected[offset_c:offset_c + m * ldc].reshape(m, ldc)
        window[:, :n] = (window[:, :n] if accumulate else 0) + reference(a, b, ta, tb) + bias[7:7 + n]
        assert_close(result, expected, scale=np.sqrt(k))  # columns and elements outside the window unchanged


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_f16_storage_with_f32_accumulation(device, rng, entry):
    if not device.has_f16:
        pytest.skip("adapter lacks shader-f16")
    ta, tb, _, _ = ENTRIES[entry]
    for m, n, k in ((45, 70, 130), (13, 9, 7)):  # quads, and the single-element fallback
        a, b = operands(rng, entry, m, n, k, dtype=np.float16)
        bias = rng.standard_normal(n).astype(np.float16)
        out = Tensor.empty((m, n), np.float16, device)
        result = dispatch(device, entry, a, b, out, m, n, k, bias=bias, elem="f16")
        assert out.dtype == np.float16
        a.stored, b.stored = a.stored.astype(np.float16).astype(np.float64), b.stored.astype(np.float16).astype(np.float64)
        assert_close(result, reference(a, b, ta, tb) + bias, "f16", scale=2)


@pytest.mark.parametrize("kind", ["bf16", "f16"])
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_packed_16_bit_weights(device, rng, entry, kind):
    ta, tb, _, _ = ENTRIES[entry]
    for m, n, k in ((33, 65, 20), (5, 7, 9)):  # an odd row length: a row starts in the middle of a word
        a, _ = operands(rng, entry, m, n, k)
        values = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        packed = to_bfloat16(values) if kind == "bf16" else values.astype(np.float16)
        b = Operand(widen(packed).astype(np.float64), values.shape[1], 0, packed)
        out = Tensor.empty((m, n), np.float32, device)
        result = dispatch(device, entry, a, b, out, m, n, k, weights=kind)
        assert_close(result, reference(a, b, ta, tb), scale=np.sqrt(k))


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_wide_and_narrow_reads_agree_to_the_bit(device, rng, entry, monkeypatch):
    """The 64-bit-word reads (CPU adapters with shader-int64, the default there) change only how A and B are read:
    the same shapes through the narrow reads give the same bits, for plain and packed weights."""
    if not (device.has_int64 and device.is_software):
        pytest.skip("wide reads are for CPU adapters with shader-int64")
    ta, tb, _, _ = ENTRIES[entry]
    cases = [(m, n, k, "elem") for m, n, k in ((7, 13, 5), (41, 70, 38), (97, 300, 41))] + [(33, 65, 20, "bf16")]
    for m, n, k, weights in cases:
        a, b = operands(rng, entry, m, n, k)
        if weights == "bf16":
            packed = to_bfloat16(b.buffer)
            b = Operand(widen(packed).astype(np.float64)[:b.stored.size].reshape(b.stored.shape), b.ld, 0, packed)
        results = []
        for wide in (True, False):
            monkeypatch.setattr(device, "wide_reads", wide)
            out = Tensor.empty((m, n), np.float32, device)
            results.append(dispatch(device, entry, a, b, out, m, n, k, weights=weights))
        assert_close(results[1], reference(a, b, ta, tb), scale=np.sqrt(k))
        np.testing.assert_array_equal(results[0], results[1], err_msg=f"{entry} {m}x{n}x{k} {weights}")


def test_entry_names_give_their_tiles():
    assert set(ENTRIES) >= {"matmul_cpu_nn32x4", "matmul_cpu_nt32x4", "matmul_cpu_tn32x4", "matmul_cpu_tt32x4"}
    for entry, (_, _, rows, cols) in ENTRIES.items():
        assert kernels.load(FAMILY).workgroup_size(entry) == (8, 1, 1)
        assert rows % 8 == 0 and cols % 4 == 0


@pytest.mark.parametrize("chunk", [4, 12])
@pytest.mark.parametrize("entry", CHUNKED)
def test_chunked_entries_match_numpy_across_chunks(device, rng, entry, chunk):
    """K in several chunks (12: the last one ragged) through the quads, the k tail and the single-element reads;
    M = 160 gives 3 tiles of 64 rows to 2 rows of workgroups (1 and 2), M = 300 5 tiles to 3."""
    ta, tb, _, _ = ENTRIES[entry]
    constants = {"K_CHUNK": chunk}
    for m, n, k in [*SHAPES, (160, 70, 41), (300, 33, 64)]:
        a, b = operands(rng, entry, m, n, k)
        out = Tensor.empty((m, n), np.float32, device)
        assert_close(dispatch(device, entry, a, b, out, m, n, k, constants=constants), reference(a, b, ta, tb),
                     scale=np.sqrt(k))
    m, n, k = 41, 70, 38  # aligned rows, quads then a k tail inside the last chunk
    a, b = operands(rng, entry, m, n, k, pad=(2, (-n) % 4))
    out = Tensor.empty((m, n), np.float32, device)
    assert_close(dispatch(device, entry, a, b, out, m, n, k, constants=constants), reference(a, b, ta, tb),
                 scale=np.sqrt(k))


@pytest.mark.parametrize("entry", CHUNKED)
def test_chunked_entries_add_later_chunks_to_c(device, rng, entry):
    """Windows, accumulate and the bias (added once, with the first chunk), a batch with a broadcast operand,
    packed bf16 weights, and K = 0 (C = bias, or C + bias)."""
    ta, tb, _, _ = ENTRIES[entry]
    constants = {"K_CHUNK": 12}
    m, n, k = 45, 37, 27
    bias = rng.standard_normal(n + 7).astype(np.float32)
    for accumulate, offsets, pad, (ldc, offset_c) in ((True, (8, 12), (5, 7), (n + 7, 4)),
                                                      (False, (3, 5), (1, 2), (n + 3, 5))):
        a, b = operands(rng, entry, m, n, k, pad=pad, offsets=offsets)
        start = rng.standard_normal(offset_c + m * ldc + 3).astype(np.float32)
        out = Tensor.from_numpy(start, device)
        result = dispatch(device, entry, a, b, out, m, n, k, ldc=ldc, offset_c=offset_c, accumulate=accumulate,
                          bias=bias, offset_bias=7, constants=constants)
        expected = start.astype(np.float64)
        window = expected[offset_c:offset_c + m * ldc].reshape(m, ldc)
        window[:, :n] = (window[:, :n] if accumulate else 0) + reference(a, b, ta, tb) + bias[7:7 + n]
        assert_close(result, expected, scale=np.sqrt(k))
    batch = 3
    a, b = operands(rng, entry, m, n, k, batch=batch)
    b = Operand(b.stored[0], b.ld, b.offset, b.buffer)
    out = Tensor.empty((batch, m, n), np.float32, device)
    result = dispatch(device, entry, a, b, out, m, n, k, batch=batch, stride_a=a.stored[0].size, constants=constants)
    assert_close(result, reference(a, b, ta, tb), scale=np.sqrt(k))
    a, _ = operands(rng, entry, m, n, k)
    packed = to_bfloat16(rng.standard_normal((k, n)).astype(np.float32))
    b = Operand(widen(packed).astype(np.float64), n, 0, packed)
    out = Tensor.empty((m, n), np.float32, device)
    assert_close(dispatch(device, entry, a, b, out, m, n, k, weights="bf16", constants=constants),
                 reference(a, b, ta, tb), scale=np.sqrt(k))
    a, b = operands(rng, entry, 4, 4, 1)  # buffers of 4 elements (the vec4 bindings), K = 0
    for accumulate in (False, True):
        start = rng.standard_normal((5, 6)).astype(np.float32)
        out = Tensor.from_numpy(start, device)
        result = dispatch(device, entry, a, b, out, 5, 6, 0, bias=bias[:6], accumulate=accumulate,
                          constants=constants)
        assert_close(result, (start if accumulate else np.zeros_like(start)) + bias[:6])


@pytest.mark.parametrize("entry", CHUNKED)
def test_chunked_entries_cover_m_with_any_rows_of_workgroups(device, rng, entry):
    ta, tb, _, _ = ENTRIES[entry]
    m, n, k = 300, 40, 37
    a, b = operands(rng, entry, m, n, k)
    for grid_rows in (1, 2, 5, 12):  # fewer rows than tiles / 2, one per tile, more than there are tiles
        out = Tensor.from_numpy(np.zeros((m, n), np.float32), device)
        result = dispatch(device, entry, a, b, out, m, n, k, constants={"K_CHUNK": 12}, grid_rows=grid_rows)
        assert_close(result, reference(a, b, ta, tb), scale=np.sqrt(k))


@pytest.mark.parametrize("entry", CHUNKED)
def test_chunked_entries_keep_f16_c_in_one_chunk(device, rng, entry):
    """An f16 C would round every partial sum: K is one chunk there, the same sums as the 32-row entry's."""
    if not device.has_f16:
        pytest.skip("adapter lacks shader-f16")
    ta, tb, _, _ = ENTRIES[entry]
    single = f"matmul_cpu_{'t' if ta else 'n'}{'t' if tb else 'n'}32x4"
    m, n, k = 45, 70, 130
    a, b = operands(rng, entry, m, n, k, dtype=np.float16)
    chunked = dispatch(device, entry, a, b, Tensor.empty((m, n), np.float16, device), m, n, k, elem="f16",
                       constants={"K_CHUNK": 4})
    whole = dispatch(device, single, a, b, Tensor.empty((m, n), np.float16, device), m, n, k, elem="f16")
    np.testing.assert_array_equal(chunked, whole)
