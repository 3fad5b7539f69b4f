"""kernels/rope.wgsl through engine.ops.rope, against a numpy port of Hugging Face's Llama rotary embedding
(`LlamaRotaryEmbedding.forward`, `rotate_half`, `apply_rotary_pos_emb`), and its backward (the inverse rotation).

The backward kernel is checked against the analytic numpy gradient (tight) and, through autograd, against central
finite differences of the GPU forward (loose).
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import Tensor, ops
from engine.ops.rope import default_inv_freq, rope_backward, rope_forward
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
