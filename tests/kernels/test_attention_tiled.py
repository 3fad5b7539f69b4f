"""kernels/attention_tiled.wgsl through engine.ops.attention (variant="tiled"): the workgroup-memory tiled
attention forward and backward.

Checked against the float64 numpy references of tests/kernels/test_attention.py (explicit softmax and analytic
gradients), against central finite differences of the kernels themselves, and against the serial variant, on
awkward shapes with the tiles chosen for the adapter and with small, odd tiles forced so that short sequences
span several tiles and workgroups. One long sequence is checked with the device's memory counters showing no
(T, T) buffer ever existed there.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from wgrpo import kernels
from wgrpo.engine import InputError, ops
from wgrpo.engine.ops.attention import (MIN_WORKGROUP_STORAGE, VARIANTS, Tiles, attention_backward,
                                        attention_forward, choose_tiles, choose_variant, max_head_dim)
from wgrpo.engine.tensor import Tensor
from tests.gradcheck import check_gradients
from tests.kernels.test_attention import backward_reference, random_qkv, reference
from tests.tolerances import assert_close

# (B, T_q, T_k, H, H_kv, D, causal)
SHAPES = [
    (1, 1, 1, 1, 1, 1, True),       # the smallest case
    (1, 7, 7, 6, 2, 7, True),       # prime T and D, GQA 3:1
    (2, 13, 13, 6, 3, 16, True),    # B = 2, GQA 2:1
    (2, 13, 13, 6, 1, 16, False),   # multi-query, no mask
    (1, 1, 9, 4, 2, 16, True),      # one query over 9 keys
    (2, 5, 9, 6, 2, 64, True),      # T_q < T_k causal: a prefix, then 5 new queries
    (1, 7, 13, 3, 3, 64, False),    # T_q < T_k unmasked, H = H_kv
    (1, 37, 37, 2, 1, 1, True),     # D = 1, several workgroups
    (1, 23, 31, 8, 1, 5, True),     # GQA 8:1, a cached prefix not a multiple of any tile
    (1, 9, 9, 2, 2, max_head_dim(), True),  # the largest head dimension
    (2, 35, 47, 4, 2, max_head_dim(), True),  # D = 128 over several tiles and workgroups
]
# None: the tiles chosen for the adapter; the others split short sequences into many (odd-sized) tiles.
TILES = [None, Tiles(4, 4), Tiles(5, 3)]
OPS = ("forward", "delta", "dq", "dkv")


def gpu(x: np.ndarray, device) -> Tensor:
    return Tensor.from_numpy(x, device)


def run_tiled(device, q, k, v, d_out, causal, tiles):
    """(out, lse, dq, dk, dv) as numpy arrays from the tiled forward and backward."""
    scale = 1 / np.sqrt(q.shape[-1])
    tq, tk, tv = gpu(q, device), gpu(k, device), gpu(v, device)
    out, lse = attention_forward(tq, tk, tv, causal, scale, "tiled", tiles)
    grads = attention_backward(tq, tk, tv, out, lse, gpu(d_out, device), causal, scale, variant="tiled", tiles=tiles)
    return (out.numpy(), lse.numpy(), *(g.numpy() for g in grads))


@pytest.mark.parametrize("tiles", TILES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_numpy(device, shape, tiles):
    q, k, v = random_qkv(shape, seed=1)
    causal = shape[-1]
    d_out = np.random.default_rng(2).standard_normal(q.shape).astype(np.float32)
    out, lse, dq, dk, dv = run_tiled(device, q, k, v, d_out, causal, tiles)
    expected, expected_lse = reference(q, k, v, causal)
    assert_close(out, expected, scale=3)
    assert_close(lse, expected_lse, scale=3)
    for grad, expected in zip((dq, dk, dv), backward_reference(q, k, v, d_out, causal)):
        assert_close(grad, expected, scale=10)


@pytest.mark.parametrize("shape", [(1, 5, 5, 4, 2, 3, True), (1, 2, 6, 2, 1, 4, True), (2, 3, 4, 2, 2, 2, False)],
                         ids=str)
def test_backward_matches_finite_differences(device, shape):
    q, k, v = random_qkv(shape, seed=10)
    check_gradients(lambda a, b, c: ops.attention(a, b, c, causal=shape[-1], variant="tiled", tiles=Tiles(2, 3)),
                    [q, k, v], device)


@pytest.mark.parametrize("shape", [(2, 29, 29, 6, 2, 16, True), (1, 11, 30, 4, 4, 64, False)], ids=str)
def test_tiled_and_serial_agree(device, shape):
    """Same results up to rounding, through autograd, and either backward accepts the other forward's lse."""
    q, k, v = random_qkv(shape, seed=3)
    causal = shape[-1]
    d_out = gpu(np.random.default_rng(4).standard_normal(q.shape).astype(np.float32), device)
    results = {}
    for variant in VARIANTS:
        tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
        out = ops.attention(tq, tk, tv, causal=causal, variant=variant)
        out.backward(d_out)
        results[variant] = [out.numpy()] + [t.grad.numpy() for t in (tq, tk, tv)]
    for serial, tiled in zip(results["serial"], results["tiled"]):
        assert_close(tiled, serial, scale=10)
    tq, tk, tv = gpu(q, device), gpu(k, device), gpu(v, device)
    scale = 1 / np.sqrt(q.shape[-1])
    out, lse = attention_forward(tq, tk, tv, causal, scale, "serial")
    mixed = attention_backward(tq, tk, tv, out, lse, d_out, causal, scale, variant="tiled")
    for grad, serial in zip(mixed, results["serial"][1:]):
        assert_close(grad.numpy(), serial, scale=10)


def test_backward_is_deterministic_and_respects_requires_grad(device):
    shape = (1, 19, 19, 6, 2, 8, True)
    q, k, v = random_qkv(shape, seed=8)
    d_out = gpu(np.random.default_rng(9).standard_normal(q.shape).astype(np.float32), device)
    grads = []
    for _ in range(2):
        tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
        ops.attention(tq, tk, tv, variant="tiled", tiles=Tiles(4, 4)).backward(d_out)
        grads.append([t.grad.numpy() for t in (tq, tk, tv)])
    for first, second in zip(*grads):
        assert np.array_equal(first, second)
    tq, tk, tv = gpu(q, device).requires_grad_(), gpu(k, device), gpu(v, device).requires_grad_()
    ops.attention(tq, tk, tv, variant="tiled", tiles=Tiles(4, 4)).backward(d_out)
    assert tk.grad is None
    assert_close(tq.grad.numpy(), grads[0][0])
    assert_close(tv.grad.numpy(), grads[0][2])


@pytest.mark.parametrize("shape", [(2, 13, 13, 6, 2, 16, True), (1, 9, 20, 2, 1, 64, False)], ids=str)
def test_f16(device, shape):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    q, k, v = random_qkv(shape, np.float16, seed=4)
    causal = shape[-1]
    d_out = np.random.default_rng(5).standard_normal(q.shape).astype(np.float16)
    tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
    out = ops.attention(tq, tk, tv, causal=causal, variant="tiled", tiles=Tiles(4, 4))
    assert out.dtype == np.float16
    assert_close(out.numpy(), reference(q, k, v, causal)[0], "f16")
    out.backward(gpu(d_out, device))
    for grad, expected in zip((tq.grad, tk.grad, tv.grad), backward_reference(q, k, v, d_out, causal)):
        assert grad.dtype == np.float16
        assert_close(grad.numpy(), expected, "f16", scale=2)


def test_long_sequence_without_a_score_matrix(device):
    """T = 1536 causal with GQA: matches the host reference (which does build (T, T) scores, in float64), while
    the device never holds more than a few (T, H, D) tensors beyond its inputs."""
    shape = (1, 1536, 1536, 2, 1, 8, True)
    q, k, v = random_qkv(shape, seed=11)
    d_out = np.random.default_rng(12).standard_normal(q.shape).astype(np.float32)
    scale = 1 / np.sqrt(q.shape[-1])
    tq, tk, tv, t_do = (gpu(x, device) for x in (q, k, v, d_out))
    memory = device.runtime.memory
    earlier_peak, start = memory.peak_total, memory.total
    memory.peak_total = start  # measure the peak of this call alone
    try:
        out, lse = attention_forward(tq, tk, tv, True, scale, "tiled")
        dq, dk, dv = attention_backward(tq, tk, tv, out, lse, t_do, True, scale, variant="tiled")
        results = [x.numpy() for x in (out, lse, dq, dk, dv)]
        extra = memory.peak_total - start
    finally:
        memory.peak_total = max(earlier_peak, memory.peak_total)
    t = shape[1]
    assert extra <= 8 * q.nbytes  # out, dq, dk, dv, lse, delta: O(T * H * D)
    assert extra < t * t * 4  # far below one head's f32 score matrix
    expected_out, expected_lse = reference(q, k, v, True)
    assert_close(results[0], expected_out, scale=3)
    assert_close(results[1], expected_lse, scale=3)
    for grad, expected in zip(results[2:], backward_reference(q, k, v, d_out, True)):
        assert_close(grad, expected, scale=30)  # sums over 1536 keys


def _workgroup_words(entry: str, constants: dict[str, int]) -> int:
    """f32 words of the workgroup arrays `entry` names (in its body or a function it calls), from the WGSL."""
    code = re.sub(r"//[^\n]*", "", kernels.load("attention_tiled").code)
    arrays = dict(re.findall(r"var<workgroup>\s+(\w+)\s*:\s*array<f32,\s*([^>]+)>\s*;", code))
    bodies = {}
    for match in re.finditer(r"\bfn\s+(\w+)\s*\(", code):
        start, depth = code.index("{", match.end()), 0
        for end in range(start, len(code)):
            depth += {"{": 1, "}": -1}.get(code[end], 0)
            if depth == 0:
                break
        bodies[match.group(1)] = code[start:end]
    seen, todo, used = set(), [entry], set()
    while todo:
        fn = todo.pop()
        if fn not in seen:
            seen.add(fn)
            names = set(re.findall(r"\b\w+\b", bodies[fn]))
            used |= names & set(arrays)
            todo += [n for n in names if n in bodies]
    return sum(eval(arrays[name], {"__builtins__": {}}, constants) for name in used)


@pytest.mark.parametrize("d", [1, 7, 64, max_head_dim()])
def test_tiles_fit_the_guaranteed_workgroup_memory(device, d):
    """The host's byte counts equal the WGSL's workgroup arrays, and the chosen tiles fit 16384 bytes (every
    WebGPU adapter) as well as this adapter's limit."""
    entries = {"forward": "attention_tiled", "delta": "attention_backward_delta_tiled",
               "dq": "attention_backward_dq_tiled", "dkv": "attention_backward_dkv_tiled"}
    limit = device.limits["max-compute-workgroup-storage-size"]
    for op in OPS:
        for tiles in (Tiles(5, 3), choose_tiles(op, d), choose_tiles(op, d, limit)):
            assert tiles.workgroup_bytes(op, d) == 4 * _workgroup_words(entries[op], tiles.constants(d))
        assert choose_tiles(op, d).workgroup_bytes(op, d) <= MIN_WORKGROUP_STORAGE
        assert choose_tiles(op, d, limit).workgroup_bytes(op, d) <= limit
    assert choose_tiles("forward", 128, 16384).bq * choose_tiles("forward", 128, 16384).bk < \
        choose_tiles("forward", 16, 16384).bq * choose_tiles("forward", 16, 16384).bk  # smaller tiles for large D


def test_the_default_is_the_chosen_variant_and_variants_are_listed(device):
    shape = (1, 6, 6, 2, 1, 8, True)
    assert VARIANTS == ("serial", "tiled", "subgroup")
    chosen = choose_variant(device, (1, 6, 2, 8), (1, 6, 1, 8))
    assert chosen in VARIANTS
    q, k, v = (gpu(x, device) for x in random_qkv(shape, seed=13))
    default = ops.attention(q, k, v).numpy()
    expected, _ = attention_forward(q, k, v, True, 1 / np.sqrt(8), chosen)
    assert np.array_equal(default, expected.numpy())


def test_errors_name_the_variant_and_tiles(device):
    q, k, v = (gpu(x, device) for x in random_qkv((1, 4, 4, 2, 1, max_head_dim(), True)))
    with pytest.raises(InputError, match=r"variant must be one of \('serial', 'tiled', 'subgroup'\) or None, got 'flash'"):
        ops.attention(q, k, v, variant="flash")
    with pytest.raises(InputError, match=r"variant must be one of"):
        attention_forward(q, k, v, True, 1.0, "flash")
    with pytest.raises(InputError, match=r"lanes=2\) has 2 lanes; D=128 needs at least 4"):
        ops.attention(q, k, v, variant="tiled", tiles=Tiles(4, 4, lanes=2))
    with pytest.raises(InputError, match=r"needs \d+ bytes of workgroup memory for forward at D=128, over the "
                                         r"adapter's \d+; use smaller bq or bk"):
        ops.attention(q, k, v, variant="tiled", tiles=Tiles(64, 64))
    with pytest.raises(InputError, match=r"tiles must be a Tiles with positive bq, bk and lanes"):
        attention_forward(q, k, v, True, 1.0, "tiled", Tiles(0, 4))
