"""The policy update of one GRPO step, walked in micro-batches with gradients accumulated on the device.

Owns `grpo_update`: group advantages, the micro-batches of the rollout (`TrainConfig.micro_batches`, TRL's
per_device_train_batch_size x gradient_accumulation_steps), each padded to its own longest row, the reference
log-probs (a frozen reference model, or for LoRA the policy with its adapters off), and mu optimizer steps.
Every micro-batch's loss carries the whole batch's normalisers (its completion and token counts), so the
accumulated gradient is the whole-batch gradient for every loss type, not a mean of per-micro-batch means.
Talks to `engine` for the model, the loss and the optimizer; never imports wgpu.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from wgrpo.rl.batch import UpdateBatch, build_update_batch
from wgrpo.rl.grpo import combine_metrics, group_advantages, policy_loss


@dataclass
class MicroBatch:
    batch: UpdateBatch
    advantages: np.ndarray  # (rows,) float32
    ref_logp: object = None  # (rows, T) Tensor once computed: the same for every one of the mu iterations
    scoring: tuple | None = None  # (targets Tensor, positions or None) on the device, uploaded once for all mu

    def scored(self, device) -> tuple:
        """(targets, positions) for `token_logprobs`: the completion positions only when the rows hold others
        (prompts, padding), whose log-probs the loss never reads; else all of them."""
        if self.scoring is None:
            from wgrpo.engine import RowSelection, Tensor

            batch, size = self.batch, self.batch.targets.size
            if 0 < batch.scored.size < size:
                self.scoring = (Tensor.from_numpy(batch.scored_targets(), device),
                                RowSelection(batch.scored, size, device))
            else:
                self.scoring = (Tensor.from_numpy(batch.targets, device), None)
        return self.scoring


def micro_batches(rollout, config, pad_id: int) -> list[MicroBatch]:
    """The rollout's rows cut as `config.micro_batches` says, each with its advantages, padded to its own width."""
    advantages, _ = group_advantages(rollout.rewards(), scale=config.scale_rewards, std=config.advantage_std)
    per_completion = advantages.reshape(-1).astype(np.float32)
    completions = rollout.completions
    trained = [not (config.mask_truncated and c.finish_reason == "length") for c in completions]
    parts = []
    for start, stop in config.micro_batches(len(completions)):
        rows = completions[start:stop]
        batch = build_update_batch([c.prompt_ids for c in rows], [c.token_ids for c in rows],
                                   [c.logprobs for c in rows], trained[start:stop], pad_id)
        parts.append(MicroBatch(batch, per_completion[start:stop]))
    return parts


def _reference_logprobs(model, reference, inputs, targets, temperature: float, positions=None):
    """The frozen reference's log-probs: `reference`'s, or the policy's own with its LoRA adapters off."""
    from wgrpo.engine import no_grad

    with no_grad():
        if reference is not None:
            return reference.token_logprobs(inputs, targets, temperature, positions=positions)
        with model.disable_adapters():
            return model.token_logprobs(inputs, targets, temperature, positions=positions)


def _dropout_on(model) -> bool:
    adapters = model.adapters
    return adapters is not None and model.training and adapters.config.lora_dropout > 0


@dataclass
class PendingResults:
    """What an update computed, still on the device: every micro-batch's loss and metrics, and the gradient norm
    (None without clipping). `read` brings them all back in one read-back."""

    losses: list
    metrics: list  # rl.grpo.LossMetrics, one per micro-batch
    grad_norm: object = None

    def read(self) -> tuple[float, dict[str, float], float | None]:
        """(the whole batch's loss, its metrics, the gradient norm or None)."""
        from wgrpo.engine import read_together

        tensors = [*self.losses, *(m.tensor for m in self.metrics)]
        if self.grad_norm is not None:
            tensors.append(self.grad_norm)
        values = read_together(tensors)
        n = len(self.losses)
        loss = float(sum(float(v) for v in values[:n]))
        metrics = combine_metrics([m.values(v) for m, v in zip(self.metrics, values[n:2 * n])])
        return loss, metrics, float(values[2 * n]) if self.grad_norm is not None else None


def accumulate_gradients(model, reference, parts: list[MicroBatch], config, seed: int = 0) -> tuple[float, dict]:
    """Forward and backward every micro-batch of `parts`, gradients accumulating in the trainable parameters'
    `.grad`; returns (the whole batch's loss, its metrics). Each micro-batch's loss is normalised by the whole
    batch's counts, so the accumulated gradient is the whole batch's, however the rows are cut."""
    loss, metrics, _ = record_gradients(model, reference, parts, config, seed).read()
    return loss, metrics


def record_gradients(model, reference, parts: list[MicroBatch], config, seed: int = 0,
                     on_policy: bool = True) -> PendingResults:
    """`accumulate_gradients` without reading anything back: the losses and metrics stay on the device."""
    device = model.device
    total_rows = sum(len(part.advantages) for part in parts)
    total_tokens = float(sum(part.batch.mask.sum() for part in parts))
    loss_config = config.loss_config()
    losses, readers = [], []
    for index, part in enumerate(parts):
        batch = part.batch
        targets, positions = part.scored(device)
        if config.beta > 0 and part.ref_logp is None:
            part.ref_logp = _reference_logprobs(model, reference, batch.inputs, targets, config.temperature,
                                                positions)
        if model.adapters is not None:  # a fresh dropout mask per micro-batch, the same when a layer is recomputed
            model.adapters.dropout_seed = (seed * 1_000_003 + index) & 0x7FFFFFFF
        logp = model.token_logprobs(batch.inputs, targets, config.temperature, positions=positions)  # (rows, T)
        # The sampler ran without LoRA's dropout, so its log-probs are another network's: with one update per
        # rollout the ratio is taken against this forward's own (detached) log-probs, rho = 1, as TRL does;
        # except for a batch sampled with older weights (async rollouts), whose ratio must see that
        old_logp = logp.detach() if config.mu == 1 and _dropout_on(model) and on_policy else batch.old_logp
        loss, read_metrics = policy_loss(logp, old_logp, part.ref_logp, part.advantages, batch.mask,
                                         loss_config, total_rows=total_rows, total_tokens=total_tokens)
        loss.backward()  # adds into .grad; this micro-batch's graph is freed
        losses.append(loss.detach())
        readers.append(read_metrics)
        del logp, loss
    return PendingResults(losses, readers)


def grpo_update(model, reference, optimizer, rollout, config, pad_id: int, seed: int = 0,
                on_policy: bool = True) -> dict[str, float]:
    """mu optimizer steps of `model` on `rollout`; returns the update's metrics (those of the last step, read
    back once, after it).

    `reference` is the frozen reference model, or None: no KL term (beta = 0), or a LoRA policy whose base,
    adapters off, is the reference. `seed` keys LoRA's dropout masks (one per micro-batch and iteration).
    `on_policy`: whether the current weights sampled `rollout` (False for a batch sampled a step behind)."""
    from wgrpo.engine import clip_coefficient

    parts = micro_batches(rollout, config, pad_id)
    params = model.trainable_parameters()
    metrics: dict[str, float] = {}
    started = time.perf_counter()
    model.train()
    try:
        for iteration in range(config.mu):
            if iteration:  # only the last iteration's results are read back: an earlier one's go first
                del pending
            pending = record_gradients(model, reference, parts, config, seed=seed + 7919 * iteration,
                                       on_policy=on_policy)
            coefficient = None
            if config.grad_clip > 0:  # clip_grad_norm_'s clip, applied as AdamW reads each gradient
                pending.grad_norm, coefficient = clip_coefficient(params, config.grad_clip)
            optimizer.step(grad_factor=coefficient)
            optimizer.zero_grad()
        # the last iteration's loss, metrics and norm, in one read-back after the last optimizer step
        loss, metrics, norm = pending.read()
        metrics = {"loss": loss, **metrics}
        if norm is not None:
            metrics["grad_norm"] = norm
    finally:
        model.eval()
    seconds = time.perf_counter() - started
    tokens = sum(int(np.count_nonzero(part.batch.inputs != pad_id)) for part in parts) * config.mu
    metrics.update({"time/update": seconds, "update_tokens_per_s": tokens / max(seconds, 1e-9),
                    "micro_batches": len(parts)})
    return metrics
