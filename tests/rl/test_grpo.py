"""wgrpo.rl.grpo: group advantages (hand-computed), dynamic sampling, the config, the numpy reference loss, and
policy_loss on the GPU, both checked against a torch implementation of TRL's GRPO loss when torch is present."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wgrpo.rl.grpo import (LOSS_TYPES, METRIC_NAMES, GRPOLossConfig, combine_metrics, dynamic_sampling_filter,
                           group_advantages, policy_loss, reference_loss)

# ---------------------------------------------------------------------------------------------- advantages


def test_advantages_population_std():
    # rewards [1, 0, 0, 1]: mean 0.5, population std sqrt(4 * 0.25 / 4) = 0.5, A = +-0.5 / (0.5 + 1e-4).
    adv, zero = group_advantages([[1.0, 0.0, 0.0, 1.0]])
    a = 0.5 / 0.5001
    np.testing.assert_allclose(adv, [[a, -a, -a, a]], rtol=1e-6)
    assert adv.dtype == np.float32 and zero.tolist() == [False]


def test_advantages_bessel_std_and_no_scaling():
    # Bessel: std = sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.5773503, A = +-0.5 / (0.5773503 + 1e-4).
    adv, _ = group_advantages([[1.0, 0.0, 0.0, 1.0]], std="bessel")
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    np.testing.assert_allclose(adv, [[a, -a, -a, a]], rtol=1e-6)
    # Dr. GRPO: A = r - mean, no std: +-0.5, and the std choice does not matter.
    for std in ("population", "bessel"):
        adv, _ = group_advantages([[1.0, 0.0, 0.0, 1.0]], scale="none", std=std)
        np.testing.assert_array_equal(adv, [[0.5, -0.5, -0.5, 0.5]])


def test_zero_signal_groups_get_zero_advantage_and_are_counted():
    # Groups 0 and 1 are all-equal (no signal); group 2 = [1, 0, 0, 0]: mean 0.25, population std
    # sqrt(0.25 * 0.75) = 0.4330127, A = [0.75, -0.25, -0.25, -0.25] / (0.4330127 + 1e-4).
    # Group 3 = [0.5, 0.5, 0.5, 2.5]: mean 1, population std sqrt(3 * 0.25 + 2.25) / 2 = sqrt(3) / 2 = 0.8660254.
    rewards = [[1.0] * 4, [0.0] * 4, [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 2.5]]
    adv, zero = group_advantages(rewards)
    assert zero.tolist() == [True, True, False, False] and zero.mean() == 0.5
    np.testing.assert_array_equal(adv[:2], 0.0)
    np.testing.assert_allclose(adv[2], np.array([0.75, -0.25, -0.25, -0.25]) / (math.sqrt(0.1875) + 1e-4),
                               rtol=1e-6)
    np.testing.assert_allclose(adv[3], np.array([-0.5, -0.5, -0.5, 1.5]) / (math.sqrt(0.75) + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(adv.sum(axis=1), 0.0, atol=1e-6)  # zero mean per group
    assert dynamic_sampling_filter(rewards).tolist() == [False, False, True, True]


def test_single_sample_groups_have_no_signal():
    adv, zero = group_advantages([[3.0], [1.0]], std="bessel")  # G = 1: Bessel's std is undefined
    np.testing.assert_array_equal(adv, 0.0)
    assert zero.all()


def test_advantage_errors():
    with pytest.raises(ValueError, match=r"rewards must have shape \(n_groups, G\)"):
        group_advantages([1.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        group_advantages([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="scale must be"):
        group_advantages([[1.0, 0.0]], scale="rank")
    with pytest.raises(ValueError, match="std must be"):
        group_advantages([[1.0, 0.0]], std="sample")


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_presets_and_help():
    from dataclasses import fields

    config = GRPOLossConfig()
    assert (config.eps_low, config.eps_high, config.beta, config.loss_type) == (0.2, 0.2, 0.04, "grpo")
    assert all(f.metadata.get("help") for f in fields(GRPOLossConfig))
    dapo = GRPOLossConfig.dapo()
    assert (dapo.eps_high, dapo.beta, dapo.loss_type) == (0.28, 0.0, "dapo")
    assert GRPOLossConfig.dr_grpo().scale_rewards == "none"
    with pytest.raises(ValueError, match="loss_type must be one of"):
        GRPOLossConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="eps_low"):
        GRPOLossConfig(eps_low=1.0)


# ---------------------------------------------------------------------------------------------- reference loss


def test_reference_loss_hand_case():
    # tests/kernels/test_grpo_loss.py's case, worked out there: rho [[1.1, 1.5, pad], [0.5, 1.0, 0.9]], A = [1, -0.5].
    old = np.full((2, 3), -1.0)
    logp = old + np.log([[1.1, 1.5, 3.0], [0.5, 1.0, 0.9]])
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, grad, metrics = reference_loss(logp, old, None, [1.0, -0.5], mask, beta=0.0)
    assert loss == pytest.approx(-0.35)
    np.testing.assert_allclose(grad, [[-1.1 / 4, 0, 0], [0, 0.5 / 6, 0.45 / 6]], atol=1e-12)
    assert metrics == pytest.approx({"kl": 0.0, "clip_ratio/low_mean": 0.2, "clip_ratio/high_mean": 0.2,
                                     "ratio_mean": 1.0, "tokens": 5.0})
    with pytest.raises(ValueError, match="ref_logp"):
        reference_loss(logp, old, None, [1.0, -0.5], mask, beta=0.1)


def test_reference_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    logp = rng.normal(-2.0, 1.0, (3, 4))
    old = logp + rng.normal(0.0, 0.3, (3, 4))
    ref = logp + rng.normal(0.0, 0.3, (3, 4))
    adv, mask = rng.normal(size=3), (rng.random((3, 4)) < 0.7).astype(float)
    for loss_type in LOSS_TYPES:
        kw = dict(beta=0.1, loss_type=loss_type, max_completion_length=5)
        _, grad, _ = reference_loss(logp, old, ref, adv, mask, **kw)
        numeric = np.zeros_like(logp)
        for i in np.ndindex(logp.shape):
            step = np.zeros_like(logp)
            step[i] = 1e-6
            numeric[i] = (reference_loss(logp + step, old, ref, adv, mask, **kw)[0]
                          - reference_loss(logp - step, old, ref, adv, mask, **kw)[0]) / 2e-6
        np.testing.assert_allclose(grad, numeric, atol=1e-7)


# ---------------------------------------------------------------------------------------------- micro-batches


def ragged_batch(seed):
    """8 rows of 15 columns with ragged completion spans, row 3 empty; micro-batches of 3, 1 and 4 rows, each
    trimmed to its columns up to its last masked one (widths 9, 1 and 15), as the trainer pads them."""
    rng = np.random.default_rng(seed)
    logp, old, ref, _, _ = random_batch(seed, (8, 15))
    adv = rng.normal(size=8)
    spans = [(0, 4), (2, 9), (1, 3), (0, 0), (0, 15), (5, 11), (3, 4), (0, 8)]
    mask = np.array([(np.arange(15) >= a) & (np.arange(15) < b) for a, b in spans], np.float64)
    cuts = [(slice(0, 3), 9), (slice(3, 4), 1), (slice(4, 8), 15)]
    return logp, old, ref, adv, mask, cuts


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_reference_micro_batches_sum_to_the_whole_batch(loss_type):
    logp, old, ref, adv, mask, cuts = ragged_batch(4)
    kw = dict(beta=0.04, loss_type=loss_type, max_completion_length=17)
    whole, whole_grad, whole_metrics = reference_loss(logp, old, ref, adv, mask, **kw)
    totals = dict(total_rows=8, total_tokens=mask.sum())
    assert reference_loss(logp, old, ref, adv, mask, **totals, **kw)[0] == whole  # the defaults are these totals
    losses, metrics, grad = [], [], np.zeros_like(logp)
    for rows, width in cuts:
        assert not mask[rows, width:].any()  # only padding is trimmed
        loss, g, m = reference_loss(logp[rows, :width], old[rows, :width], ref[rows, :width], adv[rows],
                                    mask[rows, :width], **totals, **kw)
        losses.append(loss)
        metrics.append(m)
        grad[rows, :width] = g
    assert sum(losses) == pytest.approx(whole, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(grad, whole_grad, rtol=1e-12, atol=1e-15)
    assert combine_metrics(metrics) == pytest.approx(whole_metrics, rel=1e-12, abs=1e-15)
    # without the whole batch's totals the micro-batches are each normalised on their own: not the whole loss
    own = sum(reference_loss(logp[r, :w], old[r, :w], ref[r, :w], adv[r], mask[r, :w], **kw)[0] for r, w in cuts)
    assert own != pytest.approx(whole, rel=1e-3)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_policy_loss_micro_batches_match_the_reference(device, loss_type):
    from wgrpo.engine import Tensor

    logp, old, ref, adv, mask, cuts = ragged_batch(6)
    config = GRPOLossConfig(beta=0.04, loss_type=loss_type, max_completion_length=17)
    kw = dict(beta=0.04, loss_type=loss_type, max_completion_length=17)
    whole, whole_grad, whole_metrics = reference_loss(logp, old, ref, adv, mask, **kw)
    totals = dict(total_rows=8, total_tokens=float(mask.sum()))
    total, grad, metrics = 0.0, np.zeros_like(logp), []
    for rows, width in cuts:
        f32 = [a[rows, :width].astype(np.float32) for a in (logp, old, ref, mask)]
        x = Tensor.from_numpy(f32[0], device).requires_grad_()
        loss, read = policy_loss(x, f32[1], f32[2], adv[rows], f32[3], config, **totals)
        loss.backward()
        total += float(loss.numpy())
        grad[rows, :width] = x.grad.numpy()
        metrics.append(read())
    assert total == pytest.approx(whole, rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(grad, whole_grad, rtol=1e-4, atol=1e-6)
    combined = combine_metrics(metrics)
    np.testing.assert_allclose([combined[k] for k in METRIC_NAMES], [whole_metrics[k] for k in METRIC_NAMES],
                               rtol=1e-4, atol=1e-5)


def test_dr_grpo_micro_batches_need_a_constant_length(device):
    from wgrpo.engine import Tensor

    logp, old, _, adv, mask, _ = ragged_batch(1)
    x = Tensor.from_numpy(logp[:3, :9].astype(np.float32), device)
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(x, old[:3, :9].astype(np.float32), None, adv[:3], mask[:3, :9].astype(np.float32),
                    GRPOLossConfig.dr_grpo(), total_rows=8, total_tokens=float(mask.sum()))


def test_combine_metrics_weights_by_tokens():
    # (0.1 * 2 + 0.4 * 6) / 8 = 0.325, (1.0 * 2 + 0.5 * 6) / 8 = 0.625; a part without tokens adds nothing.
    parts = [{"kl": 0.1, "ratio_mean": 1.0, "tokens": 2.0}, {"kl": 0.4, "ratio_mean": 0.5, "tokens": 6.0},
             {"kl": 0.0, "ratio_mean": 0.0, "tokens": 0.0}]
    assert combine_metrics(parts) == pytest.approx({"kl": 0.325, "ratio_mean": 0.625, "tokens": 8.0})
    assert list(combine_metrics(parts)) == ["kl", "ratio_mean", "tokens"]
    assert combine_metrics([{"kl": 0.0, "tokens": 0.0}] * 2) == {"kl": 0.0, "tokens": 0.0}
    with pytest.raises(ValueError, match="at least one"):
        combine_metrics([])
    with pytest.raises(ValueError, match="same metrics"):
        combine_metrics([{"kl": 0.1, "tokens": 1.0}, {"tokens": 1.0}])


def test_reference_loss_total_errors():
    logp, old, _, adv, mask, _ = ragged_batch(2)
    with pytest.raises(ValueError, match="total_rows"):
        reference_loss(logp, old, None, adv, mask, beta=0.0, total_rows=7)
    with pytest.raises(ValueError, match="total_tokens"):
        reference_loss(logp, old, None, adv, mask, beta=0.0, total_tokens=-1.0)


# ---------------------------------------------------------------------------------------------- vs torch (TRL)


def trl_loss(torch, logp, old, ref, adv, mask, *, eps_low, eps_high, beta, loss_type, max_completion_length):
    """TRL's GRPOLoop._compute_loss, single process (DAPO's num_items_in_batch = the mask's sum)."""
    logp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    old, mask = torch.tensor(old, dtype=torch.float64), torch.tensor(mask, dtype=torch.float64)
    adv = torch.tensor(adv, dtype=torch.float64)
    coef_1 = torch.exp(logp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv.unsqueeze(1), coef_2 * adv.unsqueeze(1))
    if beta != 0.0:
        ref = torch.tensor(ref, dtype=torch.float64)
        per_token_loss = per_token_loss + beta * (torch.exp(ref - logp) - (ref - logp) - 1)
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type in ("bnpo", "dapo"):
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        loss = (per_token_loss * mask).sum() / (logp.size(0) * max_completion_length)
    loss.backward()
    return loss.item(), logp.grad.numpy()


def random_batch(seed, shape=(6, 11)):
    rng = np.random.default_rng(seed)
    logp = rng.normal(-2.0, 1.0, shape).astype(np.float32).astype(np.float64)
    old = (logp + rng.normal(0.0, 0.25, shape)).astype(np.float32).astype(np.float64)
    ref = (logp + rng.normal(0.0, 0.3, shape)).astype(np.float32).astype(np.float64)
    rewards = rng.integers(0, 2, (shape[0] // 3, 3)).astype(float)
    mask = (np.arange(shape[1]) < rng.integers(1, shape[1] + 1, (shape[0], 1))).astype(np.float64)
    return logp, old, ref, rewards, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_reference_and_gpu_match_torch_trl(device, loss_type):
    torch = pytest.importorskip("torch")
    from wgrpo.engine import Tensor

    for seed, beta in ((1, 0.04), (2, 0.0)):
        logp, old, ref, rewards, mask = random_batch(seed)
        config = GRPOLossConfig(beta=beta, loss_type=loss_type, eps_high=0.28, max_completion_length=13)
        adv, _ = group_advantages(rewards, std="bessel")  # TRL's std
        kw = dict(eps_low=config.eps_low, eps_high=config.eps_high, beta=beta, loss_type=loss_type,
                  max_completion_length=13)
        expected, expected_grad = trl_loss(torch, logp, old, ref, adv.reshape(-1), mask, **kw)
        loss, grad, _ = reference_loss(logp, old, ref if beta else None, adv.reshape(-1), mask, **kw)
        assert loss == pytest.approx(expected, rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-12)

        x = Tensor.from_numpy(logp.astype(np.float32), device).requires_grad_()
        gpu_loss, metrics = policy_loss(x, old.astype(np.float32), ref.astype(np.float32) if beta else None, adv,
                                        mask.astype(np.float32), config)
        gpu_loss.backward()
        assert float(gpu_loss.numpy()) == pytest.approx(expected, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(x.grad.numpy(), expected_grad, rtol=1e-4, atol=1e-6)
        values = metrics()
        expected = {"clip_ratio/low_mean", "clip_ratio/high_mean", "ratio_mean", "tokens"}
        assert set(values) == ({"kl"} if beta else set()) | expected
        assert values["tokens"] == mask.sum()


def test_policy_loss_on_policy_value_is_zero(device):
    # mu = 1: logp == old_logp and group advantages have zero mean, so the grpo loss is 0 with a nonzero gradient.
    from wgrpo.engine import Tensor

    logp, _, ref, rewards, mask = random_batch(5)
    adv, _ = group_advantages(rewards)
    x = Tensor.from_numpy(logp.astype(np.float32), device).requires_grad_()
    loss, metrics = policy_loss(x, logp.astype(np.float32), ref.astype(np.float32), adv, mask.astype(np.float32),
                                GRPOLossConfig(beta=0.0))
    loss.backward()
    assert abs(float(loss.numpy())) < 1e-6
    assert np.abs(x.grad.numpy()).max() > 1e-3
    assert metrics()["ratio_mean"] == pytest.approx(1.0) and metrics()["kl"] > 0  # kl is measured even at beta 0
