"""The workgroup-tiled matmul variants (kernels/matmul_tiled.wgsl) against numpy: every tile configuration, scalar
and vec4 loads, every transpose, batched and broadcast, windows, accumulate and bias, f16 storage, packed bf16 / f16
weights; which variants a problem is eligible for, and the refusal of those it is not.

lavapipe runs these slowly (barriers are expensive on a CPU), so the shapes stay small; f16 and packed weights, whose
code is the same for every tile size, run on one configuration in each load form."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo import kernels
from wgrpo.engine import InputError, Tensor, ops
from wgrpo.engine.dtypes import to_bfloat16, widen
from wgrpo.engine.ops.matmul import VARIANTS, Problem, Tiling, Window, choose_variant, eligible_variants, matmul_kernel
from tests.kernels.test_matmul import operands, reference
from tests.tolerances import assert_close

TILED = [name for name, spec in VARIANTS.items() if spec.family == "matmul_tiled"]
SCALAR = [name for name in TILED if not VARIANTS[name].vec4]
VEC4 = [name for name in TILED if VARIANTS[name].vec4]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]
# (M, N, K): ones, primes, non-multiples of every tile (64, 128; BK 8, 16), several workgroups in both axes
# (131 x 257 is 3 x 5 workgroups of 64 and 2 x 3 of 128), K below BK, K over several tiles and not a multiple of BK.
SHAPES = [(1, 1, 1), (7, 13, 5), (33, 65, 17), (131, 257, 29), (20, 9, 70)]
# vec4 loads need row lengths that are multiples of 4 in every transpose: M, N, K all are, no tile size is.
VEC4_SHAPES = [(4, 4, 4), (12, 20, 8), (132, 260, 44)]


def shapes(variant):
    return VEC4_SHAPES if VARIANTS[variant].vec4 else SHAPES


@pytest.mark.parametrize("ta, tb", TRANSPOSES)
@pytest.mark.parametrize("variant", TILED)
def test_every_tile_configuration_matches_numpy(device, rng, variant, ta, tb):
    for m, n, k in shapes(variant):
        a, b = operands(rng, m, n, k, ta, tb)
        out = ops.matmul(Tensor.from_numpy(a, device), Tensor.from_numpy(b, device), ta, tb, variant=variant)
        assert out.shape == (m, n)
        assert_close(out.numpy(), reference(a, b, ta, tb), scale=np.sqrt(k))


@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False)])
def test_batched_and_broadcast(device, rng, ta, tb):
    m, n, k, batch = 20, 36, 12, 3  # multiples of 4, so the vec4 forms take every layout
    a, b = operands(rng, m, n, k, ta, tb, batch=batch)
    for variant in TILED:
        for x, y in ((a, b), (a, b[0]), (a[1], b)):  # batched; b broadcast; a broadcast
            out = ops.matmul(Tensor.from_numpy(x, device), Tensor.from_numpy(y, device), ta, tb, variant=variant)
            assert out.shape == (batch, m, n)
            assert_close(out.numpy(), reference(x, y, ta, tb), scale=np.sqrt(k))


def test_accumulate_and_bias(device, rng):
    m, n, k = 37, 41, 20  # a linear layer's layout: x (M, K) @ W.T, W (N, K)
    x, w = operands(rng, m, n, k, False, True)
    bias = rng.standard_normal(n).astype(np.float32)
    start = rng.standard_normal((m, n)).astype(np.float32)
    expected = reference(x, w, False, True)
    for variant in TILED:
        xt, wt, bt = (Tensor.from_numpy(v, device) for v in (x, w, bias))
        out = matmul_kernel(xt, wt, transpose_b=True, variant=variant, bias=bt)
        assert_close(out.numpy(), expected + bias, scale=5)
        into = Tensor.from_numpy(start, device)
        matmul_kernel(xt, wt, transpose_b=True, variant=variant, out=into, accumulate=True, bias=bt)
        assert_close(into.numpy(), start + expected + bias, scale=5)


@pytest.mark.parametrize("ta", [False, True])
def test_windows_of_wider_matrices(device, rng, ta):
    """A window of a wider A (offset and row length multiples of 4, so the vec4 forms take it) into a window of a
    wider C, whose other elements stay. Outside its window A is NaN: with K = 13 the vec4 loads along K read 3
    columns past it, which must be zeroed (zero B rows alone would give NaN * 0)."""
    rows, cols = ((2, 15), (4, 41)) if ta else ((3, 40), (8, 21))  # op(A) is 37 x 13 either way
    wide = np.full((30, 52) if ta else (50, 48), np.nan, np.float32)
    a = wide[rows[0]:rows[1], cols[0]:cols[1]]
    a[:] = rng.standard_normal(a.shape)
    b = rng.standard_normal((13, 28)).astype(np.float32)
    expected = reference(a, b, ta, False)
    for variant in TILED:
        out = Tensor.from_numpy(np.full((40, 60), 7.0, np.float32), device)
        matmul_kernel(Window(Tensor.from_numpy(wide, device), rows=rows, cols=cols), Tensor.from_numpy(b, device),
                      transpose_a=ta, variant=variant, out=Window(out, rows=(1, 38), cols=(5, 33)))
        result = out.numpy()
        assert_close(result[1:38, 5:33], expected, scale=4)
        result[1:38, 5:33] = 7
        assert (result == 7).all(), f"{variant} wrote outside its window"


def test_f16_storage_with_f32_accumulation(device, rng):
    if not device.has_f16:
        pytest.skip("adapter lacks shader-f16")
    for ta, tb in TRANSPOSES:
        a, b = operands(rng, 44, 68, 132, ta, tb, dtype=np.float16)
        for variant in ("tiled64x64", "tiled64x64_vec4"):
            out = ops.matmul(Tensor.from_numpy(a, device), Tensor.from_numpy(b, device), ta, tb, variant=variant)
            assert out.dtype == np.float16
            # f32 accumulation: the error is f16 rounding of the result, not of 132 partial sums
            assert_close(out.numpy(), reference(a, b, ta, tb), "f16", scale=2)


@pytest.mark.parametrize("kind", ["bf16", "f16"])
@pytest.mark.parametrize("ta, tb", TRANSPOSES)
def test_packed_16_bit_weights_of_f32_activations(device, rng, kind, ta, tb):
    for variant in ("tiled64x64", "tiled64x64_vec4"):
        for m, n, k in shapes(variant)[:3]:
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
            values = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
            packed = to_bfloat16(values) if kind == "bf16" else values.astype(np.float16)
            out = ops.matmul(Tensor.from_numpy(a, device), Tensor.from_numpy(packed, device), ta, tb, variant=variant)
            assert out.dtype == np.float32
            assert_close(out.numpy(), reference(a, widen(packed), ta, tb), scale=np.sqrt(k))


def test_the_packed_build_reads_vec4_through_the_words():
    for kind in ("bf16", "f16"):
        code = kernels.load("matmul_tiled", "f32", True, kind).code
        assert "var<storage, read> b: array<u32>;" in code and "fn b_at4(i: u32) -> vec4<f32>" in code
        assert "var<storage, read> b4" not in code  # the vec4 view of elem weights is gone with the block


def test_eligibility_follows_the_layout(device):
    assert set(TILED) <= set(eligible_variants(device, 64, 64, 64))  # lavapipe has 32 KiB of workgroup memory
    unaligned = eligible_variants(device, 64, 64, 13)  # lda = 13
    assert set(SCALAR) <= set(unaligned) and not set(VEC4) & set(unaligned)
    # transposes decide which size is a row length: A stored K x M has lda = M
    assert not set(VEC4) & set(eligible_variants(device, 13, 64, 64, transpose_a=True))
    assert set(VEC4) <= set(eligible_variants(device, 13, 64, 64))
    assert set(VEC4) <= set(eligible_variants(device, 16, 16, 13, lda=16, offset_a=8))  # a window, aligned
    assert not set(VEC4) & set(eligible_variants(device, 16, 16, 12, lda=16, offset_a=2))
    assert not set(VEC4) & set(eligible_variants(device, 16, 16, 12, batch=2, stride_b=190))
    assert not set(VEC4) & set(eligible_variants(device, 16, 16, 16, aligned_bindings=False))
    # packed weights take both load forms; float16 in either spelling
    assert set(TILED) <= set(eligible_variants(device, 16, 16, 16, weights="bf16"))
    assert eligible_variants(device, 8, 8, 8, dtype=np.float16) == eligible_variants(device, 8, 8, 8, dtype="f16")
    with pytest.raises(InputError, match="dtype must be float32 or float16"):
        eligible_variants(device, 8, 8, 8, dtype="bfloat16")


def test_an_ineligible_variant_is_refused_and_the_eligible_ones_run(device, rng):
    a, b = operands(rng, 7, 9, 13, False, False)
    at, bt = Tensor.from_numpy(a, device), Tensor.from_numpy(b, device)
    eligible = eligible_variants(device, 7, 9, 13)
    for variant in TILED:
        if variant in eligible:
            assert_close(ops.matmul(at, bt, variant=variant).numpy(), reference(a, b, False, False), scale=4)
        else:
            with pytest.raises(InputError, match=rf"variant '{variant}' cannot compute \(7, 13\) @ \(13, 9\): vec4 "
                                                 rf"loads need a's stored row length, element offset and batch "
                                                 rf"stride to be multiples of 4, got 13, 0, 0; variants that can: "):
                ops.matmul(at, bt, variant=variant)
    wide = Tensor.from_numpy(rng.standard_normal((8, 16)).astype(np.float32), device)
    with pytest.raises(InputError, match=r"got 16, 1, 0"):  # a window starting at column 1
        matmul_kernel(Window(wide, cols=(1, 14)), bt, variant="tiled128x128_vec4")
    with pytest.raises(InputError, match=r"need K >= 1"):
        ops.matmul(Tensor.from_numpy(np.zeros((4, 0), np.float32), device),
                   Tensor.from_numpy(np.zeros((0, 4), np.float32), device), variant="tiled64x64_vec4")


def test_tiles_over_the_workgroup_memory_are_refused(device, monkeypatch, rng):
    monkeypatch.setitem(device.limits, "max-compute-workgroup-storage-size", 16384)  # WebGPU's minimum
    spec = VARIANTS["tiled64x64"]
    assert spec.tiling.workgroup_bytes == 17408
    assert "tiled64x64" not in eligible_variants(device, 64, 64, 64)
    a = Tensor.from_numpy(rng.standard_normal((8, 8)).astype(np.float32), device)
    with pytest.raises(InputError, match=r"variant 'tiled64x64' cannot compute .*: its 64x64x16 tiles in 2 stage\(s\) "
                                         r"need 17408 bytes of workgroup memory, over .*'s "
                                         r"max-compute-workgroup-storage-size of 16384"):
        ops.matmul(a, a, variant="tiled64x64")
    assert spec.refusal(device, Problem(8, 8, 8)) is not None


def test_tilings_are_checked_and_give_the_pipeline_constants():
    tiling = Tiling(128, 64, 16, tm=8, tn=4)
    assert tiling.constants() == {"BM": 128, "BN": 64, "BK": 16, "TM": 8, "TN": 4, "STAGES": 2, "WG_X": 16,
                                  "WG_Y": 16}
    assert VARIANTS["tiled128x64"].workgroup_tile() == (128, 64)  # the registry's @workgroup_size, resolved
    for bad, message in [(dict(tm=6), "tm and tn must be 4 or 8"), (dict(bm=100), "multiples of tm and tn"),
                         (dict(bk=6), "bk must be a positive multiple of 4"), (dict(stages=3), "stages must be 1 or 2"),
                         (dict(bk=64), "over 16 elements of a tile")]:
        with pytest.raises(ValueError, match=message):
            Tiling(**{"bm": 128, "bn": 128, "bk": 8, **bad})


def test_the_default_never_picks_a_tiled_variant_yet(device):
    for m in (1, 32, 512):
        assert VARIANTS[choose_variant(device, m)].family == "matmul"


@pytest.mark.parametrize("tb", [True, False])
def test_weights_held_in_row_blocks(device, rng, monkeypatch, tb):
    """A weight over the binding limit is walked block by block: with transpose_b each block's columns of C and
    its share of the bias (offset_bias), else its share of the inner sum (accumulated)."""
    monkeypatch.setattr(device, "_binding_bytes", 6144)  # the weight in blocks of 96 rows, x and C whole
    x = rng.standard_normal((9, 16) if tb else (9, 132)).astype(np.float32)
    w = rng.standard_normal((132, 16)).astype(np.float32)
    bias = rng.standard_normal(132 if tb else 16).astype(np.float32)
    expected = reference(x, w, False, tb) + bias
    for variant in TILED:
        weight = Tensor.from_numpy(w, device)
        assert weight.is_split
        out = matmul_kernel(Tensor.from_numpy(x, device), weight, transpose_b=tb, variant=variant,
                            bias=Tensor.from_numpy(bias, device))
        assert_close(out.numpy(), expected, scale=4)
