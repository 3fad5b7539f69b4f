"""The fused, blocked LM head + log-probs against the composed ops (matmul, then token_logprobs)."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.ops.lm_head import ROW_ALIGN, block_rows, linear_token_logprobs
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close


def composed(h, w, targets, temperature):
    return ops.token_logprobs(ops.linear(h, w), targets, temperature)


@pytest.mark.parametrize("rows, vocab, width, block_bytes, temperature", [
    (1, 7, 3, 1 << 20, 1.0),          # one row, one block (logits kept for the backward)
    (300, 37, 16, 128 * 37 * 4, 0.7),  # three blocks of 128, 128, 44 rows (logits recomputed)
    (257, 1010, 8, 1, 1.0),            # the smallest block: 64 rows; a vocabulary longer than a workgroup
])
def test_values_and_gradients_equal_the_composed_ops(device, rng, rows, vocab, width, block_bytes, temperature):
    h = rng.standard_normal((rows, width)).astype(np.float32)
    w = rng.standard_normal((vocab, width)).astype(np.float32)
    targets = rng.integers(0, vocab, rows).astype(np.int32)
    targets[::5] = -100  # ignored positions: log-prob 0, no gradient
    g = rng.standard_normal(rows).astype(np.float32)
    results = []
    for fn in (lambda a, b: linear_token_logprobs(a, b, targets, temperature, block_bytes=block_bytes),
               lambda a, b: composed(a, b, targets, temperature)):
        ht, wt = Tensor.from_numpy(h, device).requires_grad_(), Tensor.from_numpy(w, device).requires_grad_()
        out = fn(ht, wt)
        out.backward(Tensor.from_numpy(g, device))
        results.append((out.numpy(), ht.grad.numpy(), wt.grad.numpy()))
    for fused, reference in zip(*results):
        assert_close(fused, reference, scale=4)


def test_finite_differences(device, rng):
    h = rng.standard_normal((5, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    targets = rng.integers(0, 6, 5)
    check_gradients(lambda a, b: linear_token_logprobs(a, b, targets, 0.9), [h, w], device)


def test_blocks_are_aligned_and_bounded():
    assert block_rows(100, 50, 4) == 100  # fits: one block
    assert block_rows(10_000, 151_936, 4, 64 << 20) == ROW_ALIGN  # Qwen2's vocabulary: 128 rows = 78 MB
    assert block_rows(10_000, 10_000, 4, 64 << 20) == 1664  # the most 128-row multiples under 64 MB


def test_errors_name_the_problem(device):
    h = Tensor.from_numpy(np.ones((3, 4), np.float32), device)
    w = Tensor.from_numpy(np.ones((5, 4), np.float32), device)
    with pytest.raises(ValueError, match=r"weight must be \(V, 4\)"):
        linear_token_logprobs(h, Tensor.from_numpy(np.ones((5, 3), np.float32), device), [0, 1, 2])
    with pytest.raises(ValueError, match="out of range for a vocabulary of 5"):
        linear_token_logprobs(h, w, [0, 1, 7])
    with pytest.raises(ValueError, match=r"targets must be integers of shape \(3,\)"):
        linear_token_logprobs(h, w, [0, 1])
