"""The update in micro-batches: the accumulated gradient is the whole batch's, for every loss type, with and without
activation checkpointing."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Model, ModelConfig
from wgrpo.rl.rollout import Completion, Rollout
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.update import accumulate_gradients, micro_batches

MODEL = ModelConfig(vocab_size=53, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=40,
                    max_position_embeddings=64)
PROMPTS, GROUP, PAD = 3, 4, 0


def _rollout(seed: int = 0) -> Rollout:
    """Prompts and completions of ragged lengths, old log-probs off the policy's (so ratios clip), one empty and
    one truncated completion."""
    rng = np.random.default_rng(seed)
    completions = []
    for problem in range(PROMPTS):
        prompt = rng.integers(1, MODEL.vocab_size, int(rng.integers(2, 9))).tolist()
        for sample in range(GROUP):
            length = 0 if (problem, sample) == (1, 2) else int(rng.integers(1, 12))
            tokens = rng.integers(1, MODEL.vocab_size, length).tolist()
            logprobs = (-4.0 + 0.5 * rng.standard_normal(length)).astype(np.float32)
            reason = "length" if (problem, sample) == (2, 0) else "eos"
            completions.append(Completion(problem, prompt, tokens, logprobs, "", reason,
                                          reward=float(rng.integers(0, 3))))
    return Rollout(completions, GROUP, 0.0, 0.0)


def _gradients(model, reference, config: TrainConfig, rollout: Rollout) -> tuple[float, dict, list[np.ndarray]]:
    for p in model.trainable_parameters():
        p.grad = None
    parts = micro_batches(rollout, config, PAD)
    model.gradient_checkpointing = config.gradient_checkpointing
    loss, metrics = accumulate_gradients(model, reference, parts, config)
    grads = [p.grad.numpy() for p in model.trainable_parameters()]
    return loss, metrics, grads


@pytest.fixture(scope="module")
def models(device):
    policy = Model.random(MODEL, seed=1, device=device).requires_grad_()
    reference = Model.random(MODEL, seed=2, device=device)
    return policy, reference


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("cut", [{"per_device_train_batch_size": 5}, {"gradient_accumulation_steps": 4},
                                 {"per_device_train_batch_size": 1, "gradient_checkpointing": True}])
def test_micro_batches_accumulate_the_whole_batch_gradient(models, loss_type, cut):
    policy, reference = models
    rollout = _rollout()
    common = dict(prompts_per_step=PROMPTS, group_size=GROUP, loss_type=loss_type, beta=0.04, max_new_tokens=12,
                  mask_truncated=True)
    whole_loss, whole_metrics, whole = _gradients(policy, reference, TrainConfig(**common), rollout)
    config = TrainConfig(**common, **cut)
    assert len(config.micro_batches(PROMPTS * GROUP)) > 1
    loss, metrics, grads = _gradients(policy, reference, config, rollout)
    assert loss == pytest.approx(whole_loss, rel=1e-5, abs=1e-6)
    for name, value in whole_metrics.items():
        assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    scale = max(np.abs(g).max() for g in whole)
    assert scale > 0
    for index, (got, want) in enumerate(zip(grads, whole, strict=True)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=f"parameter {index}")


def test_scoring_only_the_completion_positions_changes_nothing(models, device):
    from wgrpo.engine import Tensor

    policy, reference = models
    rollout = _rollout(seed=5)
    config = TrainConfig(prompts_per_step=PROMPTS, group_size=GROUP, beta=0.04, max_new_tokens=12,
                         per_device_train_batch_size=6)
    results = []
    for every_position in (True, False):
        for p in policy.trainable_parameters():
            p.grad = None
        parts = micro_batches(rollout, config, PAD)
        for part in parts:
            if every_position:  # the head over prompts and padding too, as before positions were scored
                part.scoring = (Tensor.from_numpy(part.batch.targets, device), None)
            else:
                assert part.scored(device)[1] is not None  # the rows hold prompts and padding to skip
        loss, metrics = accumulate_gradients(policy, reference, parts, config)
        results.append((loss, metrics, [p.grad.numpy() for p in policy.trainable_parameters()]))
    (loss, metrics, grads), (scored_loss, scored_metrics, scored_grads) = results
    assert scored_loss == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert scored_metrics == pytest.approx(metrics, rel=1e-5, abs=1e-6)
    scale = max(np.abs(g).max() for g in grads)
    for index, (got, want) in enumerate(zip(scored_grads, grads, strict=True)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=f"parameter {index}")


def test_each_micro_batch_is_padded_to_its_own_rows(models):
    rollout = _rollout(seed=3)
    config = TrainConfig(prompts_per_step=PROMPTS, group_size=GROUP, per_device_train_batch_size=4)
    parts = micro_batches(rollout, config, PAD)
    assert [len(p.advantages) for p in parts] == [4, 4, 4]
    for index, part in enumerate(parts):
        rows = rollout.completions[4 * index : 4 * index + 4]
        assert part.batch.inputs.shape[1] == max(len(c.prompt_ids) + len(c.token_ids) for c in rows) - 1


@pytest.mark.parametrize("micro_batch", [0, 5])
def test_an_update_reads_back_once(device, micro_batch):
    """Loss, metrics and gradient norm of every micro-batch come back in one read-back, after the optimizer step,
    and equal what separate reads give."""
    from wgrpo.engine import AdamW
    from wgrpo.rl.train.update import grpo_update

    policy = Model.random(MODEL, seed=1, device=device).requires_grad_()
    reference = Model.random(MODEL, seed=2, device=device)
    rollout = _rollout(seed=5)
    cut = {"per_device_train_batch_size": micro_batch} if micro_batch else {}
    config = TrainConfig(prompts_per_step=PROMPTS, group_size=GROUP, beta=0.04, max_new_tokens=12, grad_clip=1.0,
                         **cut)
    before = [p.numpy() for p in policy.trainable_parameters()]
    expected_loss, expected_metrics = _gradients(policy, reference, config, rollout)[:2]
    for p in policy.trainable_parameters():
        p.grad = None
    optimizer = AdamW(policy.trainable_parameters(), lr=1e-3)
    runtime = policy.device.runtime
    reads = runtime.stats.readbacks
    metrics = grpo_update(policy, reference, optimizer, rollout, config, PAD)
    assert runtime.stats.readbacks - reads == 1
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    for name, value in expected_metrics.items():
        assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert metrics["grad_norm"] > 0
    for p, old in zip(policy.trainable_parameters(), before):  # the optimizer step ran
        assert not np.array_equal(p.numpy(), old)
