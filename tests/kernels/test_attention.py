"""kernels/attention.wgsl through engine.ops.attention: fused (causal, grouped-query) attention and its backward.

The forward is compared with an explicit numpy softmax(q k^T * scale + mask) v (float64, kv heads repeated for
GQA); the saved log-sum-exp too. The backward is checked twice: against the analytic numpy gradients (tight),
and against central finite differences of L = sum(attention(q, k, v) * w) where every perturbed forward runs on
the GPU kernel itself (f32, eps = 1e-2, loose tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import ops
from wgrpo.engine.ops.attention import attention_forward, max_head_dim
from wgrpo.engine.tensor import Tensor
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

# (B, T_q, T_k, H, H_kv, D, causal)
SHAPES = [
    (1, 1, 1, 1, 1, 1, True),      # the smallest case
    (1, 7, 7, 6, 2, 5, True),      # prime T, GQA 3:1
    (2, 13, 13, 6, 3, 16, True),   # prime T, B = 2, GQA 2:1
    (2, 13, 13, 6, 1, 16, False),  # multi-query, no mask
    (1, 1, 9, 4, 2, 16, True),     # decoding: one query, a KV cache of 9
    (2, 5, 9, 6, 2, 64, True),     # a prefix in the cache, then 5 new queries
    (1, 7, 13, 3, 3, 64, False),   # T_q < T_k unmasked, H = H_kv
    (1, 37, 37, 2, 1, 1, True),    # D = 1, several workgroups of queries and keys
    (1, 20, 29, 4, 2, 4, True),    # a cached prefix and several workgroups (the dk/dv query range starts late)
    (1, 9, 9, 2, 2, max_head_dim(), True),  # the largest head dimension
]


def causal_keep(t_q: int, t_k: int) -> np.ndarray:
    """(T_q, T_k) booleans: query i sees keys j <= i + (T_k - T_q)."""
    return np.arange(t_k)[None, :] <= np.arange(t_q)[:, None] + (t_k - t_q)


def probabilities(q, k, causal, scale):
    """(P (B, H, T_q, T_k), log-sum-exp (B, H, T_q), K repeated to (B, T_k, H, D)) in float64."""
    heads, kv_heads = q.shape[2], k.shape[2]
    k = np.repeat(k.astype(np.float64), heads // kv_heads, axis=2)  # query head h uses kv head h // (H / H_kv)
    s = np.einsum("bihd,bjhd->bhij", q.astype(np.float64), k) * scale
    if causal:
        s = np.where(causal_keep(q.shape[1], k.shape[1]), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    return e / total, (m + np.log(total))[..., 0], k


def reference(q, k, v, causal=True, scale=None):
    """(out (B, T_q, H, D), lse (B, H, T_q)) of explicit softmax(q k^T * scale + mask) v."""
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    p, lse, _ = probabilities(q, k, causal, scale)
    v = np.repeat(v.astype(np.float64), q.shape[2] // k.shape[2], axis=2)
    return np.einsum("bhij,bjhd->bihd", p, v), lse


def backward_reference(q, k, v, d_out, causal=True, scale=None):
    """(dq, dk, dv) of L = sum(attention(q, k, v) * d_out), analytically, in float64."""
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    group = q.shape[2] // k.shape[2]
    p, _, k_rep = probabilities(q, k, causal, scale)
    v_rep = np.repeat(v.astype(np.float64), group, axis=2)
    d_out = d_out.astype(np.float64)
    dv_rep = np.einsum("bhij,bihd->bjhd", p, d_out)
    dp = np.einsum("bihd,bjhd->bhij", d_out, v_rep)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = scale * np.einsum("bhij,bjhd->bihd", ds, k_rep)
    dk_rep = scale * np.einsum("bhij,bihd->bjhd", ds, q.astype(np.float64))

    def fold(x):  # sum the query heads of each kv group
        b, t, _, d = x.shape
        return x.reshape(b, t, k.shape[2], group, d).sum(axis=3)

    return dq, fold(dk_rep), fold(dv_rep)


def random_qkv(shape, dtype=np.float32, seed=0, magnitude=1.0):
    b, t_q, t_k, h, h_kv, d, _ = shape
    rng = np.random.default_rng(seed)
    q = (magnitude * rng.standard_normal((b, t_q, h, d))).astype(dtype)
    k = rng.standard_normal((b, t_k, h_kv, d)).astype(dtype)
    v = rng.standard_normal((b, t_k, h_kv, d)).astype(dtype)
    return q, k, v


def gpu(x: np.ndarray, device) -> Tensor:
    return Tensor.from_numpy(x, device)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_numpy(device, shape):
    q, k, v = random_qkv(shape, seed=1)
    causal = shape[-1]
    out, lse = attention_forward(gpu(q, device), gpu(k, device), gpu(v, device), causal, 1 / np.sqrt(q.shape[-1]))
    expected, expected_lse = reference(q, k, v, causal)
    assert out.shape == q.shape and lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    assert_close(out.numpy(), expected, scale=3)
    assert_close(lse.numpy(), expected_lse, scale=3)


def test_public_name_scale_and_causal_default(device):
    shape = (2, 6, 6, 4, 2, 8, True)
    q, k, v = random_qkv(shape, seed=2)
    out = ops.attention(gpu(q, device), gpu(k, device), gpu(v, device), scale=0.7)  # causal by default
    assert_close(out.numpy(), reference(q, k, v, True, 0.7)[0], scale=3)
    unmasked = ops.attention(gpu(q, device), gpu(k, device), gpu(v, device), causal=False)
    assert_close(unmasked.numpy(), reference(q, k, v, False)[0], scale=3)
    # The first query sees only the first key: its output is that key's value row.
    assert_close(out.numpy()[:, 0], np.repeat(v[:, 0], 2, axis=1), scale=3)


@pytest.mark.parametrize("magnitude", [300.0, -300.0])
def test_large_scores_are_stable(device, magnitude):
    """Scores of several hundred (exp would overflow in f32): the online softmax must stay finite and exact."""
    shape = (1, 11, 11, 2, 1, 16, True)
    q, k, v = random_qkv(shape, seed=3, magnitude=magnitude)
    out, lse = attention_forward(gpu(q, device), gpu(k, device), gpu(v, device), True, 1 / np.sqrt(16))
    expected, expected_lse = reference(q, k, v, True)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(lse.numpy()))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(lse.numpy(), expected_lse, rtol=1e-5)


def test_f16(device):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    shape = (2, 13, 13, 6, 2, 16, True)
    q, k, v = random_qkv(shape, np.float16, seed=4)
    d_out = np.random.default_rng(5).standard_normal(q.shape).astype(np.float16)
    tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
    out = ops.attention(tq, tk, tv)
    assert out.dtype == np.float16
    assert_close(out.numpy(), reference(q, k, v)[0], "f16")
    out.backward(gpu(d_out, device))
    for grad, expected in zip((tq.grad, tk.grad, tv.grad), backward_reference(q, k, v, d_out)):
        assert grad.dtype == np.float16
        assert_close(grad.numpy(), expected, "f16", scale=2)


BACKWARD_SHAPES = SHAPES + [(2, 4, 11, 6, 1, 3, False), (1, 21, 21, 4, 2, 7, True)]


@pytest.mark.parametrize("shape", BACKWARD_SHAPES, ids=str)
def test_backward_matches_analytic(device, shape):
    q, k, v = random_qkv(shape, seed=6)
    causal = shape[-1]
    d_out = np.random.default_rng(7).standard_normal(q.shape).astype(np.float32)
    tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
    ops.attention(tq, tk, tv, causal=causal).backward(gpu(d_out, device))
    dq, dk, dv = backward_reference(q, k, v, d_out, causal)
    assert_close(tq.grad.numpy(), dq, scale=10)
    assert_close(tk.grad.numpy(), dk, scale=10)
    assert_close(tv.grad.numpy(), dv, scale=10)


def test_backward_is_deterministic_and_respects_requires_grad(device):
    shape = (1, 19, 19, 6, 2, 8, True)
    q, k, v = random_qkv(shape, seed=8)
    d_out = gpu(np.random.default_rng(9).standard_normal(q.shape).astype(np.float32), device)
    grads = []
    for _ in range(2):
        tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
        ops.attention(tq, tk, tv).backward(d_out)
        grads.append([t.grad.numpy() for t in (tq, tk, tv)])
    for first, second in zip(*grads):
        assert np.array_equal(first, second)
    tq, tk, tv = gpu(q, device).requires_grad_(), gpu(k, device), gpu(v, device).requires_grad_()
    ops.attention(tq, tk, tv).backward(d_out)
    assert tk.grad is None
    assert_close(tq.grad.numpy(), grads[0][0])
    assert_close(tv.grad.numpy(), grads[0][2])


@pytest.mark.parametrize("shape", [(1, 5, 5, 4, 2, 3, True), (1, 2, 6, 2, 1, 4, True), (2, 3, 4, 2, 2, 2, False)],
                         ids=str)
def test_backward_matches_finite_differences(device, shape):
    q, k, v = random_qkv(shape, seed=10)
    check_gradients(lambda a, b, c: ops.attention(a, b, c, causal=shape[-1]), [q, k, v], device)


def test_errors_name_the_argument(device):
    def t(*shape, dtype=np.float32):
        return gpu(np.zeros(shape, dtype), device)

    q, kv = t(1, 4, 6, 8), t(1, 4, 2, 8)
    with pytest.raises(ValueError, match=r"q must have shape \(B, T, heads, D\), got shape \(4, 6, 8\)"):
        ops.attention(t(4, 6, 8), kv, kv)
    with pytest.raises(TypeError, match="k must be an engine.Tensor"):
        ops.attention(q, np.zeros((1, 4, 2, 8), np.float32), kv)
    with pytest.raises(TypeError, match="v must be float32 or float16, got int32"):
        ops.attention(q, kv, t(1, 4, 2, 8, dtype=np.int32))
    with pytest.raises(ValueError, match=r"H=6 query heads of q \(1, 4, 6, 8\) must be a multiple of the H_kv=4"):
        ops.attention(q, t(1, 4, 4, 8), t(1, 4, 4, 8))
    with pytest.raises(ValueError, match=r"D=8 but k and v have D=4"):
        ops.attention(q, t(1, 4, 2, 4), t(1, 4, 2, 4))
    with pytest.raises(ValueError, match=r"k and v must have the same shape .* \(1, 4, 2, 8\) and \(1, 5, 2, 8\)"):
        ops.attention(q, kv, t(1, 5, 2, 8))
    with pytest.raises(ValueError, match=r"causal needs T_q <= T_k, got q \(1, 4, 6, 8\) \(T_q=4\) and k \(1, 3, 2, 8\)"):
        ops.attention(q, t(1, 3, 2, 8), t(1, 3, 2, 8))
    with pytest.raises(ValueError, match=r"q has batch 1 but k has batch 2"):
        ops.attention(q, t(2, 4, 2, 8), t(2, 4, 2, 8))
    big = max_head_dim() + 1
    with pytest.raises(ValueError, match=rf"head dimension D={big} .* maximum of {max_head_dim()}"):
        ops.attention(t(1, 2, 1, big), t(1, 2, 1, big), t(1, 2, 1, big))
    ops.attention(q, t(1, 3, 2, 8), t(1, 3, 2, 8), causal=False)  # T_q > T_k is fine without the mask
