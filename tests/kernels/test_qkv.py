"""kernels/rope.wgsl's qkv_split_forward / qkv_split_backward through engine.ops.qkv.qkv_split (a fused q/k/v
projection split into q, k and v, q and k rotated on the way), against numpy's split and HF's rotary embedding, in
both variants (the scalar spec and `*_vec4`, on quads when D/2 % 4 == 0), and the fused projection ops beside it
(`fused_linear`, `add_linear_columns`) against numpy and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.autograd import no_grad
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops.qkv import split_variant
from tests.dispatch_spy import entries_dispatched
from tests.gradcheck import check_gradients
from tests.kernels.test_rope import backward_reference, dtype_of, elems, qk_positions, reference, weighted_sum
from tests.tolerances import assert_close

# (B, T, H, H_kv, D): one of everything, decoding, grouped-query heads, more k heads than q heads, odd D/2, primes,
# several workgroups of pairs; for the vec4 variant (D/2 % 4 == 0) one quad per half (D = 8), an odd number of
# quads (D = 24), and several workgroups of its (token, quad) invocations.
SHAPES = [(1, 1, 1, 1, 2), (1, 1, 6, 2, 64), (2, 7, 6, 2, 64), (3, 5, 2, 3, 10), (2, 37, 5, 1, 22), (1, 13, 7, 7, 2),
          (1, 1, 1, 1, 8), (3, 5, 2, 3, 24), (2, 37, 5, 1, 16), (4, 33, 4, 2, 32)]
VARIANTS = ["scalar", "vec4"]
# every shape with the scalar variant, and with the vec4 one where it fits
CASES = [(shape, variant) for shape in SHAPES for variant in VARIANTS if variant == "scalar" or shape[-1] % 8 == 0]


def split_reference(qkv, h, h_kv):
    b, t, width = qkv.shape
    heads = qkv.reshape(b, t, h + 2 * h_kv, width // (h + 2 * h_kv))
    return heads[:, :, :h], heads[:, :, h:h + h_kv], heads[:, :, h + h_kv:]


@pytest.mark.parametrize("shape, variant", CASES)
@pytest.mark.parametrize("kind", ["shared", "batched", "tensor"])
def test_split_with_rope_is_rope_qk_of_the_split(device, rng, shape, kind, variant):
    b, t, h, h_kv, d = shape
    for elem in elems(device):
        qkv = rng.standard_normal((b, t, (h + 2 * h_kv) * d)).astype(dtype_of(elem))
        positions = qk_positions(rng, b, t, "batched" if kind == "tensor" else kind)
        given = Tensor.from_numpy(positions, device) if kind == "tensor" else positions
        q, k, v = ops.qkv_split(Tensor.from_numpy(qkv, device), h, h_kv, given, variant=variant)
        assert (q.shape, k.shape, v.shape) == ((b, t, h, d), (b, t, h_kv, d), (b, t, h_kv, d))
        q0, k0, v0 = split_reference(qkv, h, h_kv)
        q_ref, k_ref = ops.rope_qk(Tensor.from_numpy(np.ascontiguousarray(q0), device),
                                   Tensor.from_numpy(np.ascontiguousarray(k0), device), given)
        if variant == "scalar":  # the same f32 formula per pair as rope_qk: bit for bit
            np.testing.assert_array_equal(q.numpy(), q_ref.numpy())
            np.testing.assert_array_equal(k.numpy(), k_ref.numpy())
        else:  # the same formula per component; a compiler may round a vector expression otherwise
            assert_close(q.numpy(), q_ref.numpy(), elem)
            assert_close(k.numpy(), k_ref.numpy(), elem)
        np.testing.assert_array_equal(v.numpy(), v0)
        assert_close(q.numpy(), reference(q0, positions), elem, scale=2)
        assert_close(k.numpy(), reference(k0, positions), elem, scale=2)


@pytest.mark.parametrize("shape, variant", CASES)
def test_split_into_a_cache_writes_k_and_v_at_its_column_only(device, rng, shape, variant):
    b, t, h, h_kv, d = shape
    capacity, column = t + 5, 3
    for elem in elems(device):
        dtype = dtype_of(elem)
        qkv_host = rng.standard_normal((b, t, (h + 2 * h_kv) * d)).astype(dtype)
        positions = qk_positions(rng, b, t, "batched")
        qkv, pos = Tensor.from_numpy(qkv_host, device), Tensor.from_numpy(positions, device)
        inv_freq = Tensor.from_numpy(1.0 / 10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d), device)
        before = rng.standard_normal((2, b, capacity, h_kv, d)).astype(dtype)
        k_cache, v_cache = (Tensor.from_numpy(c, device) for c in before)
        q = ops.qkv_split_into_cache(qkv, h, h_kv, pos, inv_freq, k_cache, v_cache, column, variant=variant)
        q_ref, k_ref, v_ref = ops.qkv_split(qkv, h, h_kv, pos, inv_freq=inv_freq, variant=variant)
        np.testing.assert_array_equal(q.numpy(), q_ref.numpy())
        for cache, new, old in ((k_cache, k_ref, before[0]), (v_cache, v_ref, before[1])):
            expected = old.copy()
            expected[:, column:column + t] = new.numpy()
            np.testing.assert_array_equal(cache.numpy(), expected)  # the other positions untouched
    with pytest.raises(ValueError, match="cannot take"):
        ops.qkv_split_into_cache(qkv, h, h_kv, pos, inv_freq, k_cache, v_cache, capacity - t + 1, variant=variant)


@pytest.mark.parametrize("shape, variant", CASES)
def test_split_without_rope_copies(device, rng, shape, variant):
    b, t, h, h_kv, d = shape
    for elem in elems(device):
        qkv = rng.standard_normal((b, t, (h + 2 * h_kv) * d)).astype(dtype_of(elem))
        qkv[..., ::7] = np.array([np.inf, -np.inf, -0.0], qkv.dtype)[np.arange(qkv[..., ::7].shape[-1]) % 3]
        split = ops.qkv_split(Tensor.from_numpy(qkv, device), h, h_kv, variant=variant)
        for got, expected in zip(split, split_reference(qkv, h, h_kv)):
            got = got.numpy()
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))  # copied, not computed


@pytest.mark.parametrize("shape, variant", CASES)
@pytest.mark.parametrize("rotate", [True, False])
def test_backward_rotates_the_gradients_back_into_their_columns(device, rng, shape, rotate, variant):
    b, t, h, h_kv, d = shape
    for elem in elems(device):
        dtype = dtype_of(elem)
        qkv = Tensor.from_numpy(rng.standard_normal((b, t, (h + 2 * h_kv) * d)).astype(dtype), device)
        qkv.requires_grad_()
        positions = qk_positions(rng, b, t, "batched")
        outputs = ops.qkv_split(qkv, h, h_kv, positions if rotate else None, variant=variant)
        weights = [rng.standard_normal(o.shape).astype(dtype) for o in outputs]
        weighted_sum(outputs, weights, device).backward()
        dq, dk, dv = weights
        if rotate:
            dq, dk = backward_reference(dq, positions), backward_reference(dk, positions)
        expected = np.concatenate([dq, dk, dv], axis=2).reshape(qkv.shape)
        assert_close(qkv.grad.numpy(), expected, elem)


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_unused_output_gets_zeros(device, rng, variant):
    qkv = Tensor.from_numpy(rng.standard_normal((2, 3, 4 * 8)).astype(np.float32), device).requires_grad_()
    _, k, _ = ops.qkv_split(qkv, 2, 1, np.arange(3), variant=variant)
    weight = rng.standard_normal(k.shape).astype(np.float32)
    weighted_sum([k], [weight], device).backward()
    grad = qkv.grad.numpy().reshape(2, 3, 4, 8)
    assert not grad[:, :, [0, 1, 3]].any()
    assert_close(grad[:, :, 2:3], backward_reference(weight, np.arange(3)))


@pytest.mark.parametrize("d", [6, 8])  # the scalar variant, the vec4 one
def test_split_gradients_by_finite_differences(device, rng, d):
    qkv = rng.standard_normal((2, 5, 5 * d)).astype(np.float32)
    check_gradients(lambda x: ops.add(*ops.qkv_split(x, 3, 1, np.arange(7, 12))[1:]), [qkv], device)


@pytest.mark.parametrize("d, expected", [(2, "scalar"), (10, "scalar"), (8, "vec4"), (24, "vec4"), (64, "vec4")])
def test_the_vec4_variant_is_picked_where_quads_fit(device, rng, monkeypatch, d, expected):
    assert split_variant(None, d, "qkv_split") == expected
    entries = entries_dispatched(device, monkeypatch)
    qkv = Tensor.from_numpy(rng.standard_normal((1, 3, 4 * d)).astype(np.float32), device).requires_grad_()
    q, k, v = ops.qkv_split(qkv, 2, 1, np.arange(3))
    weighted_sum([q, k, v], [np.ones(o.shape, np.float32) for o in (q, k, v)], device).backward()
    suffix = "_vec4" if expected == "vec4" else ""
    assert {"qkv_split_forward" + suffix, "qkv_split_backward" + suffix} <= set(entries)


def test_split_errors_name_the_problem(device):
    qkv = Tensor.from_numpy(np.zeros((1, 2, 24), np.float32), device)
    with pytest.raises(ValueError, match=r"qkv_split: qkv must be \(B, T, \(H \+ 2 H_kv\) \* D\) with D even, H = 3, "
                                         r"H_kv = 2; got \(1, 2, 24\)"):
        ops.qkv_split(qkv, 3, 2)
    odd = Tensor.from_numpy(np.zeros((1, 2, 20), np.float32), device)  # four heads of D = 5
    with pytest.raises(ValueError, match=r"qkv_split: qkv must be .* D even, H = 2, H_kv = 1; got \(1, 2, 20\)"):
        ops.qkv_split(odd, 2, 1)
    with pytest.raises(ValueError, match="qkv_split: kv_heads must be an integer >= 1, got 0"):
        ops.qkv_split(qkv, 2, 0)
    with pytest.raises(ValueError, match=r"positions must have shape \(B, T\) = \(1, 2\) or \(T,\) = \(2,\)"):
        ops.qkv_split(qkv, 1, 1, np.arange(3))
    with pytest.raises(InputError, match="qkv_split: the vec4 variant needs D/2 to be a multiple of 4, got D = 6"):
        ops.qkv_split(qkv, 2, 1, variant="vec4")
    with pytest.raises(InputError, match=r"qkv_split: variant must be one of \('scalar', 'vec4'\) or None, got 'x'"):
        ops.qkv_split(qkv, 2, 1, variant="x")


# ---- fused_linear and add_linear_columns

def joined(arrays, device) -> list[Tensor]:
    """`arrays` held in one buffer, each a row view of it (as engine.fused uploads a layer's projections)."""
    whole = Tensor.from_numpy(np.concatenate(arrays), device)
    views, start = [], 0
    for a in arrays:
        views.append(whole.rows(start, start + a.shape[0]))
        start += a.shape[0]
    return views


@pytest.mark.parametrize("rows,outs", [((1,), (64, 64)), ((3, 7), (64, 128, 64)), ((2, 37), (192, 64, 128))])
def test_fused_linear_is_the_linears_side_by_side(device, rng, rows, outs):
    c = 16  # rows of 16 floats: every view begins on a 256-byte boundary
    x = rng.standard_normal((*rows, c)).astype(np.float32)
    ws = [rng.standard_normal((o, c)).astype(np.float32) for o in outs]
    bs = [rng.standard_normal(o).astype(np.float32) for o in outs]
    weights, biases = joined(ws, device), joined(bs, device)
    y = ops.fused_linear(Tensor.from_numpy(x, device), weights, biases)
    assert y.shape == (*rows, sum(outs))
    assert_close(y.numpy(), np.concatenate([x @ w.T + b for w, b in zip(ws, bs)], axis=-1), scale=4)
    xt = Tensor.from_numpy(x, device).requires_grad_()
    for t in (*weights, *biases):
        t.requires_grad_()
    g = rng.standard_normal(y.shape).astype(np.float32)
    ops.fused_linear(xt, weights, biases).backward(Tensor.from_numpy(g, device))
    columns = np.split(g.reshape(-1, sum(outs)), np.cumsum(outs)[:-1], axis=1)
    assert_close(xt.grad.numpy(), g @ np.concatenate(ws), scale=8)
    for w, b, dy in zip(weights, biases, columns):
        assert_close(w.grad.numpy(), dy.T @ x.reshape(-1, c), scale=8)
        assert_close(b.grad.numpy(), dy.sum(axis=0), scale=8)
    assert len({id(t.grad.binding()[0]) for t in (*weights, *biases)}) == 2 * len(outs)  # none shares a buffer


def test_fused_linear_refuses_separate_weights(device, rng):
    x = Tensor.from_numpy(rng.standard_normal((2, 16)).astype(np.float32), device)
    apart = [Tensor.from_numpy(rng.standard_normal((64, 16)).astype(np.float32), device) for _ in range(2)]
    with pytest.raises(ValueError, match="fused_linear: the weights .* must be adjacent row blocks of one buffer"):
        ops.fused_linear(x, apart)
    with pytest.raises(ValueError, match="fused_linear: the biases must be adjacent"):
        ops.fused_linear(x, joined([a.numpy() for a in apart], device), [Tensor.from_numpy(np.zeros(64, np.float32),
                                                                                          device)] * 2)


@pytest.mark.parametrize("limit", [None, 1024])  # 1024: the (70, 8) weight in row blocks of 32, 32 and 6 rows
def test_add_linear_columns_against_numpy_and_finite_differences(device, rng, monkeypatch, limit):
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
    y = rng.standard_normal((1, 3, 80)).astype(np.float32)
    x = rng.standard_normal((1, 3, 8)).astype(np.float32)
    w = rng.standard_normal((70, 8)).astype(np.float32)
    assert Tensor.from_numpy(w, device).is_split == (limit is not None)
    start = 7

    def fn(y, x, w):
        return ops.add_linear_columns(ops.scale(y, 1.0), x, w, start)  # a fresh y: the update goes into it

    with no_grad():
        got = fn(*(Tensor.from_numpy(a, device) for a in (y, x, w))).numpy()
    expected = y.copy()
    expected[..., start:start + 70] += x @ w.T
    assert_close(got, expected)
    check_gradients(fn, [y, x, w], device)
