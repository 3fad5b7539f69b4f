"""kernels/rope.wgsl and kernels/rope_vec4.wgsl (its vec4 variants) through engine.ops.rope, against a numpy port of Hugging Face's Llama rotary embedding
(`LlamaRotaryEmbedding.forward`, `rotate_half`, `apply_rotary_pos_emb`), and its backward (the inverse rotation).

The backward kernel is checked against the analytic numpy gradient (tight) and, through autograd, against central
finite differences of the GPU forward (loose).
"""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.autograd import no_grad
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops.rope import (_RopeQK, default_inv_freq, rope_backward, rope_forward, rope_inv_freq,
                                    rope_variant)
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

# (B, T, H, D): one of everything, odd D/2, primes, a head dim of 128, several workgroups of pairs.
SHAPES = [(1, 1, 1, 2), (2, 7, 3, 10), (1, 13, 2, 64), (3, 5, 4, 128), (2, 37, 5, 22)]


def elems(device):
    return ["f32", "f16"] if device.has_f16 else ["f32"]


def dtype_of(elem):
    return {"f32": np.float32, "f16": np.float16}[elem]


# ---- numpy port of transformers' modeling_llama (f32 where HF computes in f32; the rotation itself in float64)

def hf_inv_freq(dim, base):
    # _compute_default_rope_parameters: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return (np.float32(1.0) / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32)
                                                    / np.float32(dim)))).astype(np.float32)


def hf_cos_sin(inv_freq, position_ids):
    # LlamaRotaryEmbedding.forward: freqs = (inv_freq[None, :, None] @ position_ids[:, None, :]).transpose(1, 2)
    freqs = (position_ids.astype(np.float32)[:, :, None] * inv_freq[None, None, :]).astype(np.float32)
    emb = np.concatenate([freqs, freqs], axis=-1).astype(np.float64)  # (B, T, D)
    return np.cos(emb), np.sin(emb)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return np.concatenate([-x2, x1], axis=-1)


def apply_rotary_pos_emb(q, cos, sin, unsqueeze_dim=1):
    cos, sin = np.expand_dims(cos, unsqueeze_dim), np.expand_dims(sin, unsqueeze_dim)
    return q * cos + rotate_half(q) * sin


def reference(x, positions, theta=10000.0, inv_freq=None):
    """x (B, T, H, D) -> HF's q_embed, computed in HF's (B, H, T, D) layout and transposed back."""
    b, t, _, d = x.shape
    position_ids = np.broadcast_to(positions, (b, t))
    cos, sin = hf_cos_sin(hf_inv_freq(d, theta) if inv_freq is None else inv_freq, position_ids)
    q = x.astype(np.float64).transpose(0, 2, 1, 3)
    return apply_rotary_pos_emb(q, cos, sin).transpose(0, 2, 1, 3)


def backward_reference(dy, positions, theta=10000.0):
    """dx = R(a)^T dy = dy * cos + rotate_half^T(dy) * sin, rotate_half^T(y) = cat(y2, -y1)."""
    b, t, _, d = dy.shape
    cos, sin = hf_cos_sin(hf_inv_freq(d, theta), np.broadcast_to(positions, (b, t)))
    dy = dy.astype(np.float64)
    y1, y2 = dy[..., : d // 2], dy[..., d // 2 :]
    return dy * cos[:, :, None] + np.concatenate([y2, -y1], axis=-1) * sin[:, :, None]


# ---- tests

def test_default_inv_freq_is_hfs():
    np.testing.assert_array_equal(default_inv_freq(64, 10000.0), hf_inv_freq(64, 10000.0))
    np.testing.assert_allclose(default_inv_freq(8, 10000.0), 10000.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)


LLAMA3 = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)


@pytest.mark.parametrize("head_dim, params", [
    (64, dict(rope_type="default", rope_theta=10000.0)),
    (16, dict(rope_type="linear", rope_theta=500000.0, factor=4.0)),
    (128, dict(rope_type="linear", rope_theta=1e6, factor=2)),
    (64, dict(rope_type="llama3", rope_theta=500000.0, **LLAMA3)),
    (128, dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=8192)),  # Llama 3.2's settings
    (24, dict(rope_type="llama3", rope_theta=10000.0, factor=3.3, low_freq_factor=0.5, high_freq_factor=3.7,
              original_max_position_embeddings=24)),
])
def test_rope_inv_freq_matches_transformers_rope_init_functions(head_dim, params):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = transformers.LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
                                         max_position_embeddings=16384, rope_parameters=dict(params))
    rope_type = params["rope_type"]
    if rope_type == "default":
        compute = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding.compute_default_rope_parameters
    else:
        compute = ROPE_INIT_FUNCTIONS[rope_type]
    expected, attention_factor = compute(hf_config, device="cpu")
    expected = expected.numpy()
    ours = rope_inv_freq(head_dim, **params)
    assert ours.dtype == np.float32 and ours.shape == (head_dim // 2,)
    assert attention_factor == 1.0  # cos and sin are not rescaled, so the kernel needs nothing more
    # the same f32 steps; only torch's and numpy's float32 pow may differ by an ulp in the base frequencies
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=0)


def test_scaled_inv_freq_differ_from_default_where_they_should():
    base = default_inv_freq(64, 500000.0)
    np.testing.assert_array_equal(rope_inv_freq(64, 500000.0), base)
    np.testing.assert_array_equal(rope_inv_freq(64, 500000.0, "linear", factor=4.0), base / np.float32(4.0))
    scaled = rope_inv_freq(64, 500000.0, "llama3", **{**LLAMA3, "original_max_position_embeddings": 64})
    wavelen = 2 * np.pi / base.astype(np.float64)
    high = wavelen < 64 / 4.0  # short wavelengths: kept
    low = wavelen > 64 / 1.0  # long wavelengths: divided by the factor
    assert high.any() and low.any() and (~high & ~low).any()
    np.testing.assert_array_equal(scaled[high], base[high])
    np.testing.assert_allclose(scaled[low], base[low] / 8.0, rtol=1e-6)
    medium = ~high & ~low  # blended: strictly between the two
    assert np.all(scaled[medium] < base[medium]) and np.all(scaled[medium] > base[medium] / 8.0)


def test_rope_inv_freq_errors():
    with pytest.raises(ValueError, match="rope_type 'yarn' is not supported; supported: 'default', 'linear', 'llama3'"):
        rope_inv_freq(8, 10000.0, "yarn", factor=2.0)
    with pytest.raises(ValueError, match="factor must be > 0"):
        rope_inv_freq(8, 10000.0, "linear", factor=0.0)
    with pytest.raises(ValueError, match="llama3 needs original_max_position_embeddings"):
        rope_inv_freq(8, 10000.0, "llama3", factor=8.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_hf(device, rng, shape):
    b, t, _, _ = shape
    for elem in elems(device):
        x = rng.standard_normal(shape).astype(dtype_of(elem))
        positions = rng.integers(0, 2048, (b, t)).astype(np.int32)
        y = ops.rope(Tensor.from_numpy(x, device), positions, 10000.0)
        assert y.shape == shape and y.dtype == x.dtype
        assert_close(y.numpy(), reference(x, positions), elem)


def test_halves_not_interleaved_pairs(device):
    # x = e_0 at position p: HF pairs j with j + D/2, so y = cos(p) e_0 + sin(p) e_{D/2} (interleaved would use e_1)
    x = np.zeros((1, 1, 1, 4), np.float32)
    x[..., 0] = 1.0
    y = ops.rope(Tensor.from_numpy(x, device), np.array([3], np.int32)).numpy()[0, 0, 0]
    assert_close(y, [np.cos(3.0), 0.0, np.sin(3.0), 0.0])


@pytest.mark.parametrize("theta", [10000.0, 1e6])
def test_shared_positions_offsets_and_long_contexts(device, rng, theta):
    x = rng.standard_normal((2, 9, 3, 64)).astype(np.float32)
    xt = Tensor.from_numpy(x, device)
    for positions in (np.arange(9, dtype=np.int32),                  # (T,) shared by the batch
                      np.arange(1000, 1009, dtype=np.int32),         # a KV-cache offset
                      rng.integers(20000, 32768, 9).astype(np.int32),  # long context: the angle reduction matters
                      Tensor.from_numpy(np.arange(5, 14, dtype=np.int32), device)):  # positions on the GPU
        host = positions.numpy() if isinstance(positions, Tensor) else positions
        assert_close(ops.rope(xt, positions, theta).numpy(), reference(x, host, theta), scale=2)


def test_batched_positions_differ_per_row(device, rng):
    x = np.broadcast_to(rng.standard_normal((1, 4, 2, 16)), (2, 4, 2, 16)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3], [7, 8, 9, 10]], np.int32)
    y = ops.rope(Tensor.from_numpy(x, device), Tensor.from_numpy(positions, device)).numpy()
    assert_close(y, reference(x, positions))
    assert not np.allclose(y[0], y[1])


def test_custom_inv_freq(device, rng):
    x = rng.standard_normal((1, 6, 2, 16)).astype(np.float32)
    inv_freq = hf_inv_freq(16, 500000.0) / np.float32(8.0)  # e.g. a scaled rope
    positions = np.arange(6, dtype=np.int32) * 100
    y = ops.rope(Tensor.from_numpy(x, device), positions, inv_freq=inv_freq).numpy()
    assert_close(y, reference(x, positions, inv_freq=inv_freq))


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_kernel_matches_analytic_gradient(device, rng, shape):
    b, t, _, _ = shape
    for elem in elems(device):
        dy = rng.standard_normal(shape).astype(dtype_of(elem))
        positions = rng.integers(0, 4096, (b, t)).astype(np.int32)
        dx = rope_backward(Tensor.from_numpy(dy, device), positions, 10000.0).numpy()
        assert_close(dx, backward_reference(dy, positions), elem)


def test_backward_inverts_forward(device, rng):
    x = rng.standard_normal((2, 5, 3, 32)).astype(np.float32)
    positions = rng.integers(0, 100, 5).astype(np.int32)
    y = rope_forward(Tensor.from_numpy(x, device), positions, 10000.0)
    assert_close(rope_backward(y, positions, 10000.0).numpy(), x)


@pytest.mark.parametrize("shape, positions", [((1, 3, 2, 4), [0, 5, 9]), ((2, 4, 3, 6), [[1, 2, 3, 4], [9, 8, 7, 6]])])
def test_gradients_by_finite_differences(device, rng, shape, positions):
    x = rng.standard_normal(shape).astype(np.float32)
    positions = np.array(positions, np.int32)
    check_gradients(lambda a: ops.rope(a, positions, 10000.0), [x], device)


def test_errors_name_the_problem(device):
    x = Tensor.from_numpy(np.ones((1, 3, 2, 4), np.float32), device)
    with pytest.raises(ValueError, match=r"head dim D of x with shape \(1, 3, 2, 5\) must be even"):
        ops.rope(Tensor.from_numpy(np.ones((1, 3, 2, 5), np.float32), device), np.arange(3))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, H, D\), got \(3, 2, 4\)"):
        ops.rope(Tensor.from_numpy(np.ones((3, 2, 4), np.float32), device), np.arange(3))
    with pytest.raises(TypeError, match="positions must be integers, got dtype float32"):
        ops.rope(x, np.arange(3, dtype=np.float32))
    with pytest.raises(TypeError, match="positions must be int32, got a float32 Tensor"):
        ops.rope(x, Tensor.from_numpy(np.arange(3, dtype=np.float32), device))
    with pytest.raises(ValueError, match=r"positions must have shape \(B, T\) = \(1, 3\) or \(T,\) = \(3,\).*\(4,\)"):
        ops.rope(x, np.arange(4))
    with pytest.raises(TypeError, match="x must be float32 or float16, got int32"):
        ops.rope(Tensor.from_numpy(np.ones((1, 3, 2, 4), np.int32), device), np.arange(3))
    with pytest.raises(ValueError, match="theta must be > 0"):
        ops.rope(x, np.arange(3), 0.0)
    with pytest.raises(ValueError, match=r"inv_freq must be floats of shape \(2,\)"):
        ops.rope(x, np.arange(3), inv_freq=np.ones(4, np.float32))


# ---- rope_qk: q and k rotated in one dispatch (rope_qk_forward, rope_qk_backward)

# (B, T, H, H_kv, D): decoding (T = 1), grouped-query heads (6 / 2), more k heads than q heads, D = 2, primes, several
# workgroups of pairs.
QK_SHAPES = [(1, 1, 1, 1, 2), (1, 1, 6, 2, 64), (2, 7, 6, 2, 64), (3, 5, 2, 3, 10), (2, 37, 5, 1, 22), (1, 13, 7, 7, 2)]


def qk_positions(rng, b, t, kind):
    """Positions as KV-cached decoding passes them: (T,) after a cache of 1000, or (B, T) with a different cache
    length per row, as numpy or as a GPU Tensor (made by the caller)."""
    if kind == "shared":
        return np.arange(1000, 1000 + t, dtype=np.int32)
    return (rng.integers(0, 3000, (b, 1)) + np.arange(t)).astype(np.int32)


def weighted_sum(outputs, weights, device):
    """sum_i <outputs[i], weights[i]> as one scalar Tensor, so that one backward reaches every output."""
    total = None
    for out, w in zip(outputs, weights):
        term = ops.sum(ops.mul(out, Tensor.from_numpy(w, device)).reshape((out.size,)))
        total = term if total is None else ops.add(total, term)
    return total


@pytest.mark.parametrize("shape", QK_SHAPES)
@pytest.mark.parametrize("kind", ["shared", "batched", "tensor"])
def test_rope_qk_equals_two_ropes(device, rng, shape, kind):
    b, t, h, h_kv, d = shape
    for elem in elems(device):
        dtype = dtype_of(elem)
        q = rng.standard_normal((b, t, h, d)).astype(dtype)
        k = rng.standard_normal((b, t, h_kv, d)).astype(dtype)
        wq = rng.standard_normal(q.shape).astype(dtype)
        wk = rng.standard_normal(k.shape).astype(dtype)
        positions = qk_positions(rng, b, t, "batched" if kind == "tensor" else kind)
        if kind == "tensor":
            positions = Tensor.from_numpy(positions, device)

        fused = [Tensor.from_numpy(q, device).requires_grad_(), Tensor.from_numpy(k, device).requires_grad_()]
        q_rot, k_rot = ops.rope_qk(*fused, positions)
        assert q_rot.shape == q.shape and k_rot.shape == k.shape and q_rot.dtype == k_rot.dtype == dtype
        weighted_sum([q_rot, k_rot], [wq, wk], device).backward()

        twice = [Tensor.from_numpy(q, device).requires_grad_(), Tensor.from_numpy(k, device).requires_grad_()]
        q_ref, k_ref = ops.rope(twice[0], positions), ops.rope(twice[1], positions)
        weighted_sum([q_ref, k_ref], [wq, wk], device).backward()

        # The same f32 formulas per pair: bit for bit.
        np.testing.assert_array_equal(q_rot.numpy(), q_ref.numpy())
        np.testing.assert_array_equal(k_rot.numpy(), k_ref.numpy())
        np.testing.assert_array_equal(fused[0].grad.numpy(), twice[0].grad.numpy())
        np.testing.assert_array_equal(fused[1].grad.numpy(), twice[1].grad.numpy())
        host = positions.numpy() if isinstance(positions, Tensor) else positions
        assert_close(q_rot.numpy(), reference(q, host), elem, scale=2)
        assert_close(k_rot.numpy(), reference(k, host), elem, scale=2)


def test_rope_qk_custom_inv_freq_and_theta(device, rng):
    q = rng.standard_normal((2, 3, 4, 16)).astype(np.float32)
    k = rng.standard_normal((2, 3, 2, 16)).astype(np.float32)
    positions = np.arange(40, 43, dtype=np.int32)
    inv_freq = hf_inv_freq(16, 500000.0) / np.float32(8.0)
    for kwargs in ({"theta": 1e6}, {"inv_freq": inv_freq}, {"inv_freq": Tensor.from_numpy(inv_freq, device)}):
        q_rot, k_rot = ops.rope_qk(Tensor.from_numpy(q, device), Tensor.from_numpy(k, device), positions, **kwargs)
        q_ref = ops.rope(Tensor.from_numpy(q, device), positions, **kwargs)
        k_ref = ops.rope(Tensor.from_numpy(k, device), positions, **kwargs)
        np.testing.assert_array_equal(q_rot.numpy(), q_ref.numpy())
        np.testing.assert_array_equal(k_rot.numpy(), k_ref.numpy())


def test_rope_qk_only_q_needs_grad(device, rng):
    q = rng.standard_normal((2, 5, 6, 8)).astype(np.float32)
    k = rng.standard_normal((2, 5, 2, 8)).astype(np.float32)
    wq, wk = rng.standard_normal(q.shape).astype(np.float32), rng.standard_normal(k.shape).astype(np.float32)
    positions = np.arange(7, 12, dtype=np.int32)
    qt, kt = Tensor.from_numpy(q, device).requires_grad_(), Tensor.from_numpy(k, device)
    weighted_sum(ops.rope_qk(qt, kt, positions), [wq, wk], device).backward()
    assert kt.grad is None
    assert_close(qt.grad.numpy(), backward_reference(wq, positions))


def test_rope_qk_k_output_unused(device, rng):
    q = rng.standard_normal((1, 4, 6, 8)).astype(np.float32)
    k = rng.standard_normal((1, 4, 2, 8)).astype(np.float32)
    positions = np.array([[3, 4, 5, 6]], np.int32)
    wq = rng.standard_normal(q.shape).astype(np.float32)
    qt, kt = Tensor.from_numpy(q, device).requires_grad_(), Tensor.from_numpy(k, device).requires_grad_()
    q_rot, _ = ops.rope_qk(qt, kt, positions)
    weighted_sum([q_rot], [wq], device).backward()
    assert kt.grad is None  # skipped, not a tensor of zeros
    assert_close(qt.grad.numpy(), backward_reference(wq, positions))
    # and the other way round: q's output unused
    qt, kt = Tensor.from_numpy(q, device).requires_grad_(), Tensor.from_numpy(k, device).requires_grad_()
    _, k_rot = ops.rope_qk(qt, kt, positions)
    wk = rng.standard_normal(k.shape).astype(np.float32)
    weighted_sum([k_rot], [wk], device).backward()
    assert qt.grad is None
    assert_close(kt.grad.numpy(), backward_reference(wk, positions))


def test_rope_qk_dispatch_counts(device, rng):
    q = Tensor.from_numpy(rng.standard_normal((2, 3, 6, 16)).astype(np.float32), device).requires_grad_()
    k = Tensor.from_numpy(rng.standard_normal((2, 3, 2, 16)).astype(np.float32), device).requires_grad_()
    positions = Tensor.from_numpy(np.arange(5, 8, dtype=np.int32), device)
    inv_freq = Tensor.from_numpy(default_inv_freq(16), device)
    stats = device.runtime.stats
    before = stats.dispatches
    q_rot, k_rot = ops.rope_qk(q, k, positions, inv_freq=inv_freq)
    assert stats.dispatches - before == 1
    before = stats.dispatches
    ops.rope_qk(q, k, positions)  # numpy inv_freq and positions are uploads, not dispatches
    assert stats.dispatches - before == 1
    # The backward of rope_qk alone: gradients fed straight into the Function, one per output.
    node = q_rot._grad_fn[0]
    assert k_rot._grad_fn[0] is node
    dq_out = Tensor.from_numpy(np.ones(q.shape, np.float32), device)
    dk_out = Tensor.from_numpy(np.ones(k.shape, np.float32), device)
    for grads in ((dq_out, dk_out), (dq_out, None), (None, dk_out)):
        before = stats.dispatches
        with no_grad():
            dq, dk = _RopeQK.backward(node.ctx, *grads)[:2]
        assert stats.dispatches - before == 1
        assert (dq is None) == (grads[0] is None) and (dk is None) == (grads[1] is None)


@pytest.mark.parametrize("shape, positions", [((1, 3, 2, 2, 4), [0, 5, 9]),
                                              ((2, 4, 3, 1, 6), [[1, 2, 3, 4], [9, 8, 7, 6]]),
                                              ((1, 1, 3, 3, 64), [1000])])
def test_rope_qk_gradients_by_finite_differences(device, rng, shape, positions):
    b, t, h, h_kv, d = shape
    q = rng.standard_normal((b, t, h, d)).astype(np.float32)
    k = rng.standard_normal((b, t, h_kv, d)).astype(np.float32)
    positions = np.array(positions, np.int32)
    # Both outputs in one result (k's broadcast over q's heads), so the backward is the fused rope_qk_backward.
    check_gradients(lambda a, c: ops.add(*ops.rope_qk(a, c, positions)), [q, k], device)
    # One output used: the other gradient is skipped.
    check_gradients(lambda a, c: ops.rope_qk(a, c, positions)[0], [q, k], device, wrt=[0])
    check_gradients(lambda a, c: ops.rope_qk(a, c, positions)[1], [q, k], device, wrt=[1])


def test_rope_qk_errors_name_the_problem(device):
    def gpu(*shape, dtype=np.float32):
        return Tensor.from_numpy(np.ones(shape, dtype), device)

    q = gpu(1, 3, 4, 8)
    with pytest.raises(ValueError, match=r"rope_qk: q and k must have the same head dim D, got q \(1, 3, 4, 8\) "
                                         r"and k \(1, 3, 2, 6\)"):
        ops.rope_qk(q, gpu(1, 3, 2, 6), np.arange(3))
    with pytest.raises(ValueError, match=r"rope_qk: q and k must have the same \(B, T\), got q \(1, 3, 4, 8\) "
                                         r"and k \(1, 2, 2, 8\)"):
        ops.rope_qk(q, gpu(1, 2, 2, 8), np.arange(3))
    with pytest.raises(ValueError, match=r"same \(B, T\), got q \(1, 3, 4, 8\) and k \(2, 3, 2, 8\)"):
        ops.rope_qk(q, gpu(2, 3, 2, 8), np.arange(3))
    with pytest.raises(ValueError, match=r"rope_qk: the head dim D of q with shape \(1, 3, 4, 5\) must be even"):
        ops.rope_qk(gpu(1, 3, 4, 5), gpu(1, 3, 2, 5), np.arange(3))
    with pytest.raises(ValueError, match=r"rope_qk: the head dim D of k with shape \(1, 3, 2, 5\) must be even"):
        ops.rope_qk(q, gpu(1, 3, 2, 5), np.arange(3))
    with pytest.raises(ValueError, match=r"rope_qk: k must have shape \(B, T, H, D\), got \(3, 2, 8\)"):
        ops.rope_qk(q, gpu(3, 2, 8), np.arange(3))
    with pytest.raises(TypeError, match=r"rope_qk: k must be an engine.Tensor, got ndarray"):
        ops.rope_qk(q, np.ones((1, 3, 2, 8), np.float32), np.arange(3))
    with pytest.raises(ValueError, match=r"rope_qk: positions must have shape \(B, T\) = \(1, 3\) or \(T,\)"):
        ops.rope_qk(q, gpu(1, 3, 2, 8), np.arange(4))
    with pytest.raises(ValueError, match=r"rope_qk: inv_freq must be floats of shape \(4,\)"):
        ops.rope_qk(q, gpu(1, 3, 2, 8), np.arange(3), inv_freq=np.ones(3, np.float32))
    if device.has_f16:
        with pytest.raises(TypeError, match="rope_qk: q and k must have the same dtype, got q float32 and k float16"):
            ops.rope_qk(q, gpu(1, 3, 2, 8, dtype=np.float16), np.arange(3))


# ---- the vec4 variants (kernels/rope_vec4.wgsl): both variants against the reference, the choice and refusals

# (B, T, H, H_kv, D) with D/2 % 4 == 0: D = 8, 24, 64; one head and three; one token, 37, and enough tokens for
# several 64-wide workgroups of (token, quad) invocations (2 * 37 * 64/8 = 592).
VEC4_SHAPES = [(1, 1, 1, 1, 8), (1, 37, 3, 1, 24), (2, 37, 3, 1, 64), (3, 5, 1, 3, 8), (1, 1, 3, 3, 64)]


def capture_entries(device, monkeypatch):
    """The kernel entries the runtime is asked to dispatch, in order, as "family.entry"."""
    entries, dispatch = [], device.runtime.dispatch

    def recording(family, entry, *args, **kwargs):
        entries.append(f"{family}.{entry}")
        return dispatch(family, entry, *args, **kwargs)

    monkeypatch.setattr(device.runtime, "dispatch", recording)
    return entries


@pytest.mark.parametrize("shape", VEC4_SHAPES)
@pytest.mark.parametrize("variant", ["scalar", "vec4"])
def test_rope_variants_match_reference(device, rng, shape, variant):
    b, t, h, _, d = shape
    for elem in elems(device):
        x = rng.standard_normal((b, t, h, d)).astype(dtype_of(elem))
        positions = rng.integers(0, 30000, (b, t)).astype(np.int32)  # a position per row
        xt = Tensor.from_numpy(x, device)
        assert_close(rope_forward(xt, positions, variant=variant).numpy(), reference(x, positions), elem, scale=2)
        assert_close(rope_backward(xt, positions, variant=variant).numpy(), backward_reference(x, positions), elem,
                     scale=2)


@pytest.mark.parametrize("shape", VEC4_SHAPES)
def test_rope_qk_vec4_matches_scalar_and_reference(device, rng, shape, monkeypatch):
    b, t, h, h_kv, d = shape
    entries = capture_entries(device, monkeypatch)
    for elem in elems(device):
        dtype = dtype_of(elem)
        q = rng.standard_normal((b, t, h, d)).astype(dtype)
        k = rng.standard_normal((b, t, h_kv, d)).astype(dtype)
        wq, wk = rng.standard_normal(q.shape).astype(dtype), rng.standard_normal(k.shape).astype(dtype)
        positions = qk_positions(rng, b, t, "batched" if b > 1 else "shared")
        results = {}
        for variant in ("scalar", "vec4"):
            leaves = [Tensor.from_numpy(q, device).requires_grad_(), Tensor.from_numpy(k, device).requires_grad_()]
            outs = ops.rope_qk(*leaves, positions, variant=variant)
            weighted_sum(outs, [wq, wk], device).backward()
            results[variant] = [o.numpy() for o in outs] + [leaf.grad.numpy() for leaf in leaves]
        for scalar, vec4 in zip(results["scalar"], results["vec4"]):
            assert_close(vec4, scalar, elem)
        q_rot, k_rot, dq, dk = results["vec4"]
        assert_close(q_rot, reference(q, positions), elem, scale=2)
        assert_close(k_rot, reference(k, positions), elem, scale=2)
        assert_close(dq, backward_reference(wq, positions), elem, scale=2)
        assert_close(dk, backward_reference(wk, positions), elem, scale=2)
    assert "rope_vec4.rope_qk_forward_vec4" in entries and "rope_vec4.rope_qk_backward_vec4" in entries
    assert "rope.rope_qk_forward" in entries and "rope.rope_qk_backward" in entries


def test_rope_vec4_gradients_by_finite_differences(device, rng):
    x = rng.standard_normal((1, 3, 2, 8)).astype(np.float32)
    positions = np.array([0, 5, 9], np.int32)
    check_gradients(lambda a: ops.rope(a, positions, variant="vec4"), [x], device)
    q, k = rng.standard_normal((1, 3, 3, 8)).astype(np.float32), rng.standard_normal((1, 3, 1, 8)).astype(np.float32)
    check_gradients(lambda a, c: ops.add(*ops.rope_qk(a, c, positions, variant="vec4")), [q, k], device)
    check_gradients(lambda a, c: ops.rope_qk(a, c, positions, variant="vec4")[1], [q, k], device, wrt=[1])


def test_rope_variant_choice(device, rng, monkeypatch):
    entries = capture_entries(device, monkeypatch)
    for d, kernel in ((8, "rope_vec4.rope_forward_vec4"), (64, "rope_vec4.rope_forward_vec4"),
                      (4, "rope.rope_forward"), (10, "rope.rope_forward"), (12, "rope.rope_forward")):
        x = Tensor.from_numpy(rng.standard_normal((1, 3, 2, d)).astype(np.float32), device)
        entries.clear()
        ops.rope(x, np.arange(3))
        assert entries == [kernel], d
    q = Tensor.from_numpy(rng.standard_normal((1, 2, 4, 16)).astype(np.float32), device)
    k = Tensor.from_numpy(rng.standard_normal((1, 2, 2, 16)).astype(np.float32), device)
    entries.clear()
    ops.rope_qk(q, k, np.arange(2))
    ops.rope_qk(q, k, np.arange(2), variant="scalar")
    assert entries == ["rope_vec4.rope_qk_forward_vec4", "rope.rope_qk_forward"]
    # A tensor bound at an offset that is no multiple of 16 bytes cannot be read as quads: scalar, or refused.
    storage = Tensor.from_numpy(np.zeros(2 * 3 * 2 * 8 + 1, np.float32), device)
    shifted = Tensor(storage._storage, (2, 3, 2, 8), storage.dtype, device, storage._offset + 4)
    assert rope_variant(None, [shifted], "rope") == "scalar"
    assert rope_variant(None, [q, k], "rope") == "vec4"
    with pytest.raises(InputError, match=r"rope: the vec4 variant needs every tensor at a 16-byte aligned offset"):
        rope_variant("vec4", [q, shifted], "rope")


def test_rope_variant_refusals(device):
    x = Tensor.from_numpy(np.ones((1, 3, 2, 12), np.float32), device)
    with pytest.raises(InputError, match=r"rope: the vec4 variant needs D/2 to be a multiple of 4, got D = 12"):
        ops.rope(x, np.arange(3), variant="vec4")
    with pytest.raises(InputError, match=r"rope_qk: the vec4 variant needs D/2 to be a multiple of 4, got D = 12"):
        ops.rope_qk(x, x, np.arange(3), variant="vec4")
    with pytest.raises(InputError, match=r"rope_forward: variant must be one of \('scalar', 'vec4'\) or None, "
                                         r"got 'quad'"):
        rope_forward(x, np.arange(3), variant="quad")
    with pytest.raises(InputError, match=r"rope_qk: variant must be one of"):
        ops.rope_qk(x, x, np.arange(3), variant="fast")
