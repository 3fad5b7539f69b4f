"""16-bit weights read packed (two bf16 or f16 values per u32 word) and widened to f32 inside the kernels:
matmul in every variant and transpose, embedding and the fused LM head, against numpy on the widened values;
also held in row blocks over a forced small binding limit."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo import kernels
from wgrpo.engine import Tensor, ops
from wgrpo.engine.dtypes import BFLOAT16, to_bfloat16, widen
from wgrpo.engine.ops.matmul import VARIANTS, Window, eligible_variants, matmul_kernel
from tests.tolerances import assert_close

SHAPES = [(1, 1, 1), (5, 1, 9), (7, 13, 5), (33, 65, 17), (31, 257, 2)]
DTYPES = {"bf16": BFLOAT16, "f16": np.float16}


def variants(device, m, n, k, ta=False, tb=False, weights="elem"):
    """The variants that can run the problem, but the workgroup-tiled ones (tests/kernels/test_matmul_tiled.py)."""
    return [v for v in eligible_variants(device, m, n, k, ta, tb, weights=weights)
            if VARIANTS[v].family != "matmul_tiled"]


def weights(rng, shape, kind):
    values = rng.standard_normal(shape).astype(np.float32)
    packed = to_bfloat16(values) if kind == "bf16" else values.astype(np.float16)
    return packed, widen(packed)


def test_the_packed_source_declares_u32_words_and_a_widening_reader():
    code = kernels.load("matmul", "f32", True, "bf16").code
    assert "var<storage, read> b: array<u32>;" in code and "fn b_at(i: u32) -> f32" in code
    assert "unpack2x16float" in kernels.load("embedding", "f32", True, "f16").code
    with pytest.raises(ValueError, match="no `// BEGIN weights` block"):
        kernels.load("softmax", "f32", True, "bf16")


@pytest.mark.parametrize("kind", DTYPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_matmul_with_16_bit_weights_matches_numpy(device, rng, kind, m, n, k, ta, tb):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    packed, wide = weights(rng, (n, k) if tb else (k, n), kind)
    at, bt = Tensor.from_numpy(a, device), Tensor.from_numpy(packed, device)
    expected = (a.T if ta else a).astype(np.float64) @ (wide.T if tb else wide).astype(np.float64)
    for variant in variants(device, m, n, k, ta, tb, kind):
        out = ops.matmul(at, bt, transpose_a=ta, transpose_b=tb, variant=variant)
        assert out.dtype == np.float32
        assert_close(out.numpy(), expected, scale=np.sqrt(k))


@pytest.mark.parametrize("kind", DTYPES)
def test_linear_with_a_bias_and_batched_activations(device, rng, kind):
    x = rng.standard_normal((3, 5, 23)).astype(np.float32)
    packed, wide = weights(rng, (11, 23), kind)
    bias = rng.standard_normal(11).astype(np.float32)
    y = ops.linear(Tensor.from_numpy(x, device), Tensor.from_numpy(packed, device), Tensor.from_numpy(bias, device))
    assert_close(y.numpy(), x @ wide.T + bias, scale=5)


def test_windows_read_and_write_columns_of_wider_matrices(device, rng):
    a = rng.standard_normal((9, 40)).astype(np.float32)
    packed, wide = weights(rng, (13, 17), "bf16")  # (K, N) = (13, 17) against a's columns 20..33
    out = Tensor.from_numpy(np.full((9, 50), 7.0, np.float32), device)
    for variant in variants(device, 9, 17, 13, weights="bf16"):
        matmul_kernel(Window(Tensor.from_numpy(a, device), cols=(20, 33)), Tensor.from_numpy(packed, device),
                      variant=variant, out=Window(out, cols=(30, 47)))
        result = out.numpy()
        assert_close(result[:, 30:47], a[:, 20:33] @ wide, scale=4)
        assert (result[:, :30] == 7).all() and (result[:, 47:] == 7).all()


@pytest.mark.parametrize("kind", DTYPES)
def test_embedding_of_16_bit_weights(device, rng, kind):
    packed, wide = weights(rng, (37, 9), kind)  # odd rows: a row starts in the middle of a word
    ids = rng.integers(0, 37, (3, 11))
    out = ops.embedding(ids, Tensor.from_numpy(packed, device), dtype=np.float32)
    assert out.dtype == np.float32
    assert np.array_equal(out.numpy(), wide[ids])


@pytest.mark.parametrize("split", [False, True])
def test_the_lm_head_with_bf16_weights(device, rng, monkeypatch, split):
    vocab, width, rows = 301, 80, 70
    if split:
        monkeypatch.setattr(device, "_binding_bytes", 90_000)  # a (64, 301) f32 logits block fits, the weight not
    packed, wide = weights(rng, (vocab, width), "bf16")
    weight = Tensor.from_numpy(packed, device)
    assert weight.is_split == split
    hidden = rng.standard_normal((rows, width)).astype(np.float32)
    targets = rng.integers(0, vocab, rows)
    logp = ops.linear_token_logprobs(Tensor.from_numpy(hidden, device), weight, targets)
    logits = hidden.astype(np.float64) @ wide.T
    top = logits.max(1, keepdims=True)
    expected = logits[np.arange(rows), targets] - (np.log(np.exp(logits - top).sum(1)) + top[:, 0])
    assert_close(logp.numpy(), expected, scale=3)
    y = ops.linear(Tensor.from_numpy(hidden[:3], device), weight)
    assert_close(y.numpy(), hidden[:3] @ wide.T, scale=3)


def test_16_bit_weights_stay_frozen(device, rng):
    packed, _ = weights(rng, (4, 4), "bf16")
    with pytest.raises(TypeError, match="bfloat16 weights are frozen storage"):
        Tensor.from_numpy(packed, device).requires_grad_()
    with pytest.raises(TypeError, match="a must be float32 or float16, got bfloat16"):
        ops.matmul(Tensor.from_numpy(packed, device), Tensor.from_numpy(np.ones((4, 4), np.float32), device))
    with pytest.raises(TypeError, match="b may differ only as bfloat16 or float16 weights of float32"):
        ops.matmul(Tensor.from_numpy(np.ones((4, 4), np.float16), device), Tensor.from_numpy(packed, device))
