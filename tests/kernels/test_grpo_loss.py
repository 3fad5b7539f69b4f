"""kernels/grpo.wgsl through engine.ops.grpo_loss: GRPO's clipped objective, its aggregations, metrics, backward.

Hand-computed cases first (the numbers are written out), then random inputs on awkward shapes against the float64
numpy spec `rl.grpo.reference_loss`, finite differences of the GPU forward (tests/gradcheck.py), and gradients
flowing on through token_logprobs into logits and a tiny model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from wgrpo.engine import Model, ModelConfig, Tensor, ops
from wgrpo.engine.ops.grpo import METRIC_NAMES
from wgrpo.rl.grpo import combine_metrics, reference_loss
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

VARIANTS = ["serial", "workgroup"]
LOSS_TYPES = ["grpo", "bnpo", "dapo", "dr_grpo"]


def gpu(a, device):
    return Tensor.from_numpy(np.asarray(a, np.float32), device)


def run(device, logp, old, ref, adv, mask, **kwargs):
    """(loss, dloss/dlogp, metrics dict) from the GPU op, as numpy."""
    x = gpu(logp, device).requires_grad_()
    loss, metrics = ops.grpo_loss(x, old, None if ref is None else np.asarray(ref, np.float32),
                                  np.asarray(adv, np.float32), np.asarray(mask, np.float32), return_metrics=True,
                                  **kwargs)
    assert loss.shape == () and metrics.shape == (5,)
    value = float(loss.numpy())
    loss.backward()
    return value, x.grad.numpy(), dict(zip(METRIC_NAMES, metrics.numpy().tolist()))


# ---------------------------------------------------------------------------------------------- hand-computed

# B = 2 completions, T = 3, old_logp = -1 everywhere and logp = -1 + ln(rho) for these ratios:
#   row 0: A = +1,   mask [1, 1, 0], rho [1.1, 1.5, 3.0 (padding)]
#   row 1: A = -0.5, mask [1, 1, 1], rho [0.5, 1.0, 0.9]
# eps_low = eps_high = 0.2, so rho is clipped to [0.8, 1.2]. Per token, min(rho A, clip(rho) A):
#   (0, 0): min(1.1, 1.1) = 1.1                      not clipped, d obj / d logp = rho A = 1.1
#   (0, 1): min(1.5, 1.2) = 1.2                      clipped high (A > 0, rho > 1.2): gradient 0
#   (1, 0): min(-0.25, -0.4) = -0.4                  clipped low (A < 0, rho < 0.8): gradient 0
#   (1, 1): min(-0.5, -0.5) = -0.5                   d obj / d logp = -0.5
#   (1, 2): min(-0.45, -0.45) = -0.45                d obj / d logp = -0.45
# Row sums: 2.3 (n = 2) and -1.35 (n = 3); N = 5.
#   grpo:    loss = -(2.3 / 2 - 1.35 / 3) / 2 = -0.35; w = 1/4 (row 0), 1/6 (row 1)
#   bnpo:    loss = -(2.3 - 1.35) / 5 = -0.19;         w = 1/5
#   dr_grpo: loss = -(2.3 - 1.35) / (2 * 4) = -0.11875 with L = 4; w = 1/8
# d loss / d logp = -w dobj. Metrics: clip low 1/5, clip high 1/5, mean rho (1.1 + 1.5 + 0.5 + 1 + 0.9) / 5 = 1,
# 5 tokens, kl 0 (beta = 0, no reference model).
RHO = np.array([[1.1, 1.5, 3.0], [0.5, 1.0, 0.9]])
OLD = np.full((2, 3), -1.0)
LOGP = OLD + np.log(RHO)
ADV = np.array([1.0, -0.5])
MASK = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
HAND = {  # loss_type -> (loss, d loss / d logp)
    "grpo": (-0.35, [[-1.1 / 4, 0, 0], [0, 0.5 / 6, 0.45 / 6]]),
    "bnpo": (-0.19, [[-1.1 / 5, 0, 0], [0, 0.5 / 5, 0.45 / 5]]),
    "dapo": (-0.19, [[-1.1 / 5, 0, 0], [0, 0.5 / 5, 0.45 / 5]]),
    "dr_grpo": (-0.11875, [[-1.1 / 8, 0, 0], [0, 0.5 / 8, 0.45 / 8]]),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_hand_computed_losses(device, loss_type, variant):
    loss, grad, metrics = run(device, LOGP, OLD, None, ADV, MASK, beta=0.0, loss_type=loss_type,
                              max_completion_length=4, variant=variant)
    expected_loss, expected_grad = HAND[loss_type]
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    assert_close(grad, expected_grad)
    assert metrics == pytest.approx({"kl": 0.0, "clip_ratio/low_mean": 0.2, "clip_ratio/high_mean": 0.2,
                                     "ratio_mean": 1.0, "tokens": 5.0}, abs=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_hand_computed_kl_penalty(device, variant):
    # The case above with beta = 0.1 and ref_logp = logp + ln 2 (pi_ref = 2 pi_theta) on every token:
    # k3 = exp(ln 2) - ln 2 - 1 = 1 - ln 2 = 0.3068528 per token, so each token's objective drops by 0.1 k3 and
    # the grpo loss (a mean of means) rises by the same: -0.35 + 0.03068528 = -0.31931472.
    # d obj / d logp gains -beta (1 - pi_ref / pi_theta) = -0.1 (1 - 2) = +0.1 on every masked token:
    # row 0 (w = 1/4): -[1.1 + 0.1, 0 + 0.1] / 4 = [-0.3, -0.025]; row 1 (w = 1/6): -[0.1, -0.4, -0.35] / 6.
    k3 = 1.0 - math.log(2.0)
    loss, grad, metrics = run(device, LOGP, OLD, LOGP + math.log(2.0), ADV, MASK, beta=0.1, variant=variant)
    assert loss == pytest.approx(-0.35 + 0.1 * k3, abs=1e-6)
    assert_close(grad, [[-0.3, -0.025, 0.0], [-0.1 / 6, 0.4 / 6, 0.35 / 6]])
    assert metrics["kl"] == pytest.approx(k3, abs=1e-6)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_on_policy_loss_is_zero_but_gradient_is_the_policy_gradient(device, loss_type):
    # mu = 1: logp == old_logp, rho = 1. One group of two with rewards [1, 0] -> A = [+a, -a]; full masks of equal
    # length T = 4. Objective per token = A, so every aggregation gives loss = -(a - a) / ... = 0 exactly, while
    # d loss / d logp = -w A is not 0: grpo w = 1 / (2 * 4), bnpo/dapo w = 1 / 8, dr_grpo w = 1 / (2 * 8) (L = 8).
    a = 0.5 / (0.5 + 1e-4)
    logp = np.log(np.array([[0.5, 0.25, 0.125, 0.9], [0.3, 0.6, 0.2, 0.1]]))
    loss, grad, metrics = run(device, logp, logp, None, [a, -a], np.ones((2, 4)), beta=0.0, loss_type=loss_type,
                              max_completion_length=8)
    w = 1.0 / 16 if loss_type == "dr_grpo" else 1.0 / 8
    assert loss == 0.0
    assert_close(grad, np.array([[-w * a] * 4, [w * a] * 4]))
    assert metrics["ratio_mean"] == pytest.approx(1.0)
    assert metrics["clip_ratio/low_mean"] == metrics["clip_ratio/high_mean"] == 0


def test_clipped_tokens_get_no_policy_gradient(device):
    # One token per row, A = +2 or -2, eps_low = 0.2, eps_high = 0.28 (DAPO's clip-higher); dapo over N = 4
    # tokens, so w = 1/4. Rows:
    #   A = +2, rho = 1.3 > 1.28: clipped high, gradient 0, objective 1.28 * 2 = 2.56
    #   A = +2, rho = 1.25 < 1.28: not clipped, gradient -rho A / 4 = -0.625, objective 2.5
    #   A = -2, rho = 0.7 < 0.8: clipped low, gradient 0, objective 0.8 * -2 = -1.6
    #   A = -2, rho = 1.5: below-clip does not apply to A < 0 above 1 + eps: not clipped, -(1.5 * -2) / 4 = 0.75,
    #           objective -3 (the pessimistic min keeps the unclipped, worse value)
    # loss = -(2.56 + 2.5 - 1.6 - 3) / 4 = -0.115.
    rho = np.array([[1.3], [1.25], [0.7], [1.5]])
    loss, grad, metrics = run(device, np.log(rho) - 2.0, np.full((4, 1), -2.0), None, [2.0, 2.0, -2.0, -2.0],
                              np.ones((4, 1)), beta=0.0, eps_low=0.2, eps_high=0.28, loss_type="dapo")
    assert loss == pytest.approx(-0.115, abs=1e-6)
    assert_close(grad, [[0.0], [-0.625], [0.0], [0.75]])
    assert metrics["clip_ratio/high_mean"] == pytest.approx(0.25)
    assert metrics["clip_ratio/low_mean"] == pytest.approx(0.25)


def test_masked_tokens_cannot_poison_the_loss(device):
    # Padding positions may hold anything (here inf and NaN log-probs): with mask 0 they contribute nothing.
    logp, old = LOGP.copy(), OLD.copy()
    logp[0, 2], old[0, 2] = np.inf, np.nan
    loss, grad, _ = run(device, logp, old, None, ADV, MASK, beta=0.0)
    assert loss == pytest.approx(-0.35, abs=1e-6)
    assert np.isfinite(grad).all() and grad[0, 2] == 0.0


def test_empty_completion_adds_zero(device):
    # Row 1 has no completion tokens: grpo still divides by B = 2 (TRL clamps the row's count to 1), so
    # loss = -(1.1 + 1.2) / 2 / 2 = -0.575; token-level types count only row 0's 2 tokens.
    mask = MASK.copy()
    mask[1] = 0.0
    loss, grad, metrics = run(device, LOGP, OLD, None, ADV, mask, beta=0.0)
    assert loss == pytest.approx(-0.575, abs=1e-6) and metrics["tokens"] == 2.0
    assert np.all(grad[1] == 0.0)
    loss, _, _ = run(device, LOGP, OLD, None, ADV, np.zeros((2, 3)), beta=0.0, loss_type="bnpo")
    assert loss == 0.0


# ---------------------------------------------------------------------------------------------- random vs numpy


def random_case(shape, seed, beta=0.04):
    rng = np.random.default_rng(seed)
    b, t = shape
    logp = rng.normal(-2.0, 1.0, shape).astype(np.float32)
    old = (logp + rng.normal(0.0, 0.25, shape)).astype(np.float32)  # rho spread over both clip edges
    ref = (logp + rng.normal(0.0, 0.3, shape)).astype(np.float32) if beta else None
    adv = rng.normal(0.0, 1.0, b).astype(np.float32)
    lengths = rng.integers(0, t + 1, b)
    start = rng.integers(0, t, b)  # a prompt/padding prefix, completion, padding suffix
    cols = np.arange(t)
    mask = ((cols >= start[:, None]) & (cols < start[:, None] + lengths[:, None])).astype(np.float32)
    mask[0, 0] = 1.0  # at least one token
    return logp, old, ref, adv, mask


# (B, T): one token, primes, rows longer than a workgroup of 256 (and than 4 of them), many rows.
SHAPES = [(1, 1), (1, 7), (3, 1), (7, 13), (2, 257), (3, 1031), (300, 5)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_numpy_reference(device, shape, variant):
    for seed, loss_type in enumerate(LOSS_TYPES):
        beta = 0.0 if loss_type == "dapo" else 0.04
        logp, old, ref, adv, mask = random_case(shape, 10 * seed + sum(shape), beta)
        kwargs = dict(beta=beta, loss_type=loss_type, max_completion_length=shape[1] + 2, eps_high=0.28)
        loss, grad, metrics = run(device, logp, old, ref, adv, mask, variant=variant, **kwargs)
        expected_loss, expected_grad, expected_metrics = reference_loss(logp, old, ref, adv, mask, **kwargs)
        assert_close(loss, expected_loss, scale=10)
        assert_close(grad, expected_grad, scale=10)
        assert_close([metrics[k] for k in METRIC_NAMES], [expected_metrics[k] for k in METRIC_NAMES], scale=10)


def test_deterministic_and_dispatch_counts(device):
    logp, old, ref, adv, mask = random_case((5, 1031), 3)
    stats = device.runtime.stats
    values = []
    for _ in range(2):
        x = gpu(logp, device).requires_grad_()
        before = stats.dispatches
        loss = ops.grpo_loss(x, old, ref, adv, mask)
        assert stats.dispatches - before == 2  # per-row sums, then one workgroup over the rows
        before = stats.dispatches
        loss.backward()
        assert stats.dispatches - before == 1
        values.append((loss.numpy().tobytes(), x.grad.numpy().tobytes()))
    assert values[0] == values[1]  # bit for bit: fixed reduction order, no atomics


# ---------------------------------------------------------------------------------------------- micro-batches

# B = 8 completions of T = 37 columns with ragged [start, end) completion spans; row 3 is empty. Cut in micro-batches
# of 3, 1 and 4 rows, each trimmed (as the trainer pads each to its own longest row) to the columns up to its last
# masked one: widths 12, 1 (the empty row keeps one column) and 37.
MICRO_SPANS = [(1, 5), (0, 12), (3, 9), (0, 0), (4, 37), (0, 30), (0, 2), (6, 17)]
MICRO_SIZES = [3, 1, 4]


def micro_case(seed, beta):
    logp, old, ref, adv, _ = random_case((len(MICRO_SPANS), 37), seed, beta)
    cols = np.arange(37)
    mask = np.array([(cols >= a) & (cols < b) for a, b in MICRO_SPANS], np.float32)
    return logp, old, ref, adv, mask


def micro_batches(mask, sizes):
    """(rows slice, width) of each micro-batch: its rows, and its columns up to its last masked one (at least 1)."""
    out, start = [], 0
    for size in sizes:
        rows = slice(start, start + size)
        used = np.flatnonzero(mask[rows].any(axis=0))
        out.append((rows, int(used[-1]) + 1 if used.size else 1))
        start += size
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batches_sum_to_the_whole_batch(device, loss_type, variant):
    # Each micro-batch gets the whole batch's normalisers (8 completions, all its masked tokens): the losses sum to
    # the whole batch's, the per-row gradients are the whole batch's, and token-weighted metrics are its metrics.
    beta = 0.0 if loss_type == "dapo" else 0.04
    logp, old, ref, adv, mask = micro_case(5, beta)
    kwargs = dict(beta=beta, loss_type=loss_type, max_completion_length=40, eps_high=0.28, variant=variant)
    whole_loss, whole_grad, whole_metrics = run(device, logp, old, ref, adv, mask, **kwargs)
    totals = dict(total_rows=len(mask), total_tokens=float(mask.sum()))
    explicit = run(device, logp, old, ref, adv, mask, **totals, **kwargs)
    assert explicit[0] == whole_loss and np.array_equal(explicit[1], whole_grad)  # the defaults are these totals

    parts = micro_batches(mask, MICRO_SIZES)
    assert [w for _, w in parts] == [12, 1, 37]
    losses, metrics, grad = [], [], np.full_like(whole_grad, np.nan)
    for rows, width in parts:
        cut = [None if a is None else a[rows, :width] for a in (logp, old, ref)]
        loss, g, m = run(device, *cut, adv[rows], mask[rows, :width], **totals, **kwargs)
        losses.append(loss)
        metrics.append(m)
        grad[rows] = 0.0
        grad[rows, :width] = g
    assert_close(sum(losses), whole_loss, scale=10)
    assert_close(grad, whole_grad, scale=10)
    assert np.all(whole_grad[0:3, 12:] == 0.0)  # the trimmed columns carry no gradient
    combined = combine_metrics(metrics)
    assert combined["tokens"] == whole_metrics["tokens"] == mask.sum()
    assert_close([combined[k] for k in METRIC_NAMES], [whole_metrics[k] for k in METRIC_NAMES], scale=10)
    expected_loss, _, _ = reference_loss(logp, old, ref, adv, mask, **{k: v for k, v in kwargs.items()
                                                                       if k != "variant"})
    assert_close(sum(losses), expected_loss, scale=10)


def test_micro_batch_matches_numpy_reference_with_totals(device):
    # One micro-batch on its own, with totals well above its own counts, against the float64 spec.
    for loss_type in LOSS_TYPES:
        logp, old, ref, adv, mask = random_case((7, 13), 21, 0.04)
        kwargs = dict(beta=0.04, loss_type=loss_type, max_completion_length=15, total_rows=19, total_tokens=123.0)
        loss, grad, metrics = run(device, logp, old, ref, adv, mask, **kwargs)
        expected_loss, expected_grad, expected_metrics = reference_loss(logp, old, ref, adv, mask, **kwargs)
        assert_close(loss, expected_loss)
        assert_close(grad, expected_grad)
        assert_close([metrics[k] for k in METRIC_NAMES], [expected_metrics[k] for k in METRIC_NAMES])
        assert metrics["tokens"] == mask.sum()  # the metrics are this micro-batch's own


# ---------------------------------------------------------------------------------------------- backward


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_finite_differences(device, loss_type):
    # Ratios kept clear of the clip edges (finite differences step logp by 1e-2), advantages of size ~3 so the
    # gradient stands well above the check's absolute tolerance.
    rng = np.random.default_rng(7)
    shape = (3, 5)
    old = rng.normal(-2.0, 1.0, shape).astype(np.float32)
    log_ratio = rng.choice([-0.5, -0.1, 0.05, 0.12, 0.4], shape)
    logp = (old + log_ratio).astype(np.float32)
    ref = (logp + rng.normal(0.0, 0.5, shape)).astype(np.float32)
    adv = np.array([3.0, -2.5, 1.5], np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], np.float32)

    def fn(x, old_t, ref_t, adv_t, mask_t):
        return ops.grpo_loss(x, old_t, ref_t, adv_t, mask_t, beta=0.3, loss_type=loss_type, max_completion_length=6)

    check_gradients(fn, [logp, old, ref, adv, mask], device, wrt=[0], seed=1)


def test_gradient_flows_through_token_logprobs_to_logits(device):
    # loss(token_logprobs(z / tau)) : d loss / d z = g (onehot - softmax(z / tau)) / tau, g = d loss / d logp.
    rng = np.random.default_rng(11)
    b, t, v, tau = 3, 6, 37, 0.7
    logits = rng.normal(0.0, 2.0, (b, t, v)).astype(np.float32)
    targets = rng.integers(0, v, (b, t)).astype(np.int32)
    z = logits.astype(np.float64) / tau
    log_softmax = z - z.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    logp = np.take_along_axis(log_softmax, targets[..., None], -1)[..., 0]
    old = logp + rng.normal(0.0, 0.1, (b, t))
    ref = logp + rng.normal(0.0, 0.1, (b, t))
    adv = np.array([1.0, -1.0, 0.5])
    mask = np.ones((b, t))
    mask[:, :2] = 0.0  # the prompt

    x = gpu(logits, device).requires_grad_()
    loss = ops.grpo_loss(ops.token_logprobs(x, targets, tau), old.astype(np.float32), ref.astype(np.float32),
                         adv.astype(np.float32), mask.astype(np.float32))
    loss.backward()
    expected_loss, g, _ = reference_loss(logp, old, ref, adv, mask)
    onehot = np.zeros_like(z)
    np.put_along_axis(onehot, targets[..., None], 1.0, axis=-1)
    assert_close(float(loss.numpy()), expected_loss, scale=10)
    assert_close(x.grad.numpy(), g[..., None] * (onehot - np.exp(log_softmax)) / tau, scale=10)
    assert np.all(x.grad.numpy()[:, :2] == 0.0)  # prompt positions get nothing


def test_every_model_parameter_gets_a_gradient(device):
    config = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=48, max_position_embeddings=16)
    model = Model.random(config, seed=2, device=device).requires_grad_()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, (4, 9))
    logp = model.token_logprobs(ids[:, :-1], ids[:, 1:])  # (4, 8)
    old = logp.numpy()
    mask = np.zeros((4, 8), np.float32)
    mask[:, 3:] = 1.0
    loss = ops.grpo_loss(logp, old, None, np.array([1.0, -1.0, 0.5, -0.5], np.float32), mask, beta=0.0)
    assert abs(float(loss.numpy())) < 1e-6  # on-policy: rho = 1 and the advantages sum to 0
    loss.backward()
    for name, p in model.named_parameters().items():
        grad = p.grad.numpy()
        assert np.isfinite(grad).all() and np.abs(grad).max() > 0, name


# ---------------------------------------------------------------------------------------------- errors


def test_errors_name_the_argument(device):
    x = gpu(LOGP, device)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        ops.grpo_loss(x, OLD, None, ADV, MASK, beta=0.0, loss_type="ppo")
    with pytest.raises(ValueError, match="beta=0.04 needs ref_logp"):
        ops.grpo_loss(x, OLD, None, ADV, MASK)
    with pytest.raises(ValueError, match="max_completion_length"):
        ops.grpo_loss(x, OLD, None, ADV, MASK, beta=0.0, loss_type="dr_grpo")
    with pytest.raises(ValueError, match=r"advantages must have shape \(2,\)"):
        ops.grpo_loss(x, OLD, None, np.ones(3), MASK, beta=0.0)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\)"):
        ops.grpo_loss(x, OLD, None, ADV, MASK[:, :2], beta=0.0)
    with pytest.raises(ValueError, match=r"logp must be float32 of shape \(B, T\)"):
        ops.grpo_loss(gpu(LOGP[0], device), OLD[0], None, ADV[:1], MASK[0], beta=0.0)
    with pytest.raises(ValueError, match="eps_low must be finite and in"):
        ops.grpo_loss(x, OLD, None, ADV, MASK, beta=0.0, eps_low=1.5)
    with pytest.raises(ValueError, match="total_rows must be at least this batch's 2 rows"):
        ops.grpo_loss(x, OLD, None, ADV, MASK, beta=0.0, total_rows=1)
    with pytest.raises(TypeError, match="total_rows must be an int"):
        ops.grpo_loss(x, OLD, None, ADV, MASK, beta=0.0, total_rows=4.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="total_tokens must be finite and in"):
            ops.grpo_loss(x, OLD, None, ADV, MASK, beta=0.0, loss_type="dapo", total_tokens=bad)
    with pytest.raises(TypeError, match="total_tokens must be a number"):
        ops.grpo_loss(x, OLD, None, ADV, MASK, beta=0.0, total_tokens="5")
