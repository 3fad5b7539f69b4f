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


@pytest.mark.parametrize("rows, vocab, block_bytes, picked", [
    (9, 11, 1 << 20, [1, 2, 3, 7]),                   # one block
    (300, 37, 64 * 37 * 4, list(range(5, 300, 3))),  # blocks of the 99 scored rows
    (5, 6, 1 << 20, [4]),                             # one scored row
])
def test_scored_positions_give_those_rows_log_probs_and_zeros_elsewhere(device, rng, rows, vocab, block_bytes,
                                                                        picked):
    positions = np.array(picked)
    h = rng.standard_normal((rows, 8)).astype(np.float32)
    w = rng.standard_normal((vocab, 8)).astype(np.float32)
    targets = rng.integers(0, vocab, rows).astype(np.int32)
    g = np.zeros(rows, np.float32)
    g[positions] = rng.standard_normal(positions.size)  # the loss reads the scored rows only
    results = []
    for kwargs, t in ((dict(), targets), (dict(positions=positions), targets),
                      (dict(positions=positions), Tensor.from_numpy(targets[positions], device))):
        ht, wt = Tensor.from_numpy(h, device).requires_grad_(), Tensor.from_numpy(w, device).requires_grad_()
        out = linear_token_logprobs(ht, wt, t, 0.8, block_bytes=block_bytes, **kwargs)
        out.backward(Tensor.from_numpy(g, device))
        results.append((out.numpy(), ht.grad.numpy(), wt.grad.numpy()))
    (full, d_h, d_w), *scored = results
    unscored = np.setdiff1d(np.arange(rows), positions)
    for logp, d_h_scored, d_w_scored in scored:
        assert_close(logp[positions], full[positions], scale=4)
        assert not logp[unscored].any()
        assert_close(d_h_scored, d_h, scale=4)  # rows the head skipped get no gradient, as with g = 0 there
        assert_close(d_w_scored, d_w, scale=4)


def test_scored_positions_need_their_targets(device):
    h = Tensor.from_numpy(np.ones((4, 2), np.float32), device)
    w = Tensor.from_numpy(np.ones((3, 2), np.float32), device)
    with pytest.raises(ValueError, match=r"targets must hold the 2 scored positions' targets \(or all 4 on the "
                                         r"host\), got shape \(3,\)"):
        linear_token_logprobs(h, w, [0, 1, 2], positions=[1, 3])
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):  # all of them on the device: not gathered
        linear_token_logprobs(h, w, Tensor.from_numpy(np.zeros(4, np.int32), device), positions=[1, 3])
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        linear_token_logprobs(h, w, [0, 1], positions=[1, 4])
    with pytest.raises(ValueError, match=r"positions choose no row \(positions=None scores every row\)"):
        linear_token_logprobs(h, w, [], positions=[])


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
