"""What the memory-estimate tests share: the runtime's counters read around some work, and a GRPO step written
with the engine alone, as `rl.train.trainer` runs it (generation in chunks of whole groups, a greedy evaluation,
then `rl.train.update.grpo_update`: micro-batches, reference log-probs kept for all mu, clip, AdamW)."""

from __future__ import annotations

import gc

import numpy as np

from wgrpo.engine import Model, Tensor, clip_coefficient, generate, no_grad, ops, read_together
from wgrpo.engine.memory import KINDS, memory_kind
from wgrpo.engine.ops.rows import RowSelection


def in_use(memory) -> dict:
    """Bytes in use by kind now, once tensors that earlier tests dropped in reference cycles are collected."""
    gc.collect()
    return dict(memory.current)


def measured_peaks(memory, base: dict) -> dict:
    """The counters' peaks since `reset_peak`, less what was in use before the test built anything."""
    peaks = {kind: memory.peak[kind] - base[kind] for kind in KINDS}
    return {**peaks, "total": memory.peak_total - sum(base.values())}


def assert_matches(estimate, measured: dict) -> None:
    """Every kind's peak and the total's, to the byte."""
    assert {**estimate.peak, "total": estimate.total} == measured, (estimate.peak, estimate.total, measured)


def random_model(config, seed, device, dtype=None):
    with memory_kind("weights"):  # RoPE's inv_freq too
        return Model.random(config, seed=seed, device=device, dtype=dtype)


def prompts(config, batch, length, seed=0):
    return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, length)).tolist()


class MicroBatch:
    """Rows start..stop of the rollout as `rl.train.update.micro_batches` pads them (all of full length here)."""

    def __init__(self, tokens: np.ndarray, prompt_tokens: int, start: int, stop: int):
        rows = tokens[start:stop]
        self.inputs, self.targets = rows[:, :-1], rows[:, 1:]
        self.mask = np.zeros(self.inputs.shape, np.float32)
        self.mask[:, prompt_tokens - 1:] = 1.0
        self.old_logp = np.zeros(self.inputs.shape, np.float32)
        self.advantages = np.random.default_rng(start).standard_normal(stop - start).astype(np.float32)
        self.ref_logp = None
        self.scoring = None

    def scored(self, device):
        """`rl.train.update.MicroBatch.scored`: the completion positions' targets and selection, uploaded once
        (here the mask's positions, which are every completion token: every row is trained and full length)."""
        if self.scoring is None:
            positions = np.flatnonzero(self.mask)
            if 0 < positions.size < self.mask.size:
                self.scoring = (Tensor.from_numpy(self.targets.reshape(-1)[positions], device),
                                RowSelection(positions, self.mask.size, device))
            else:
                self.scoring = (Tensor.from_numpy(self.targets, device), None)
        return self.scoring


def _reference_logprobs(model, reference, inputs, targets, positions):
    with no_grad():
        if reference is not None:
            return reference.token_logprobs(inputs, targets, positions=positions)
        with model.disable_adapters():
            return model.token_logprobs(inputs, targets, positions=positions)


def _accumulate_gradients(model, reference, parts, beta: float) -> tuple[list, list]:
    """The losses and metrics stay on the device, for the one read-back after the optimizer step."""
    losses, readers = [], []
    for part in parts:
        targets, positions = part.scored(model.device)
        if beta > 0 and part.ref_logp is None:
            part.ref_logp = _reference_logprobs(model, reference, part.inputs, targets, positions)
        logp = model.token_logprobs(part.inputs, targets, positions=positions)
        loss, metrics = ops.grpo_loss(logp, part.old_logp, part.ref_logp, part.advantages, part.mask, beta=beta,
                                      return_metrics=True)
        loss.backward()
        losses.append(loss.detach())
        readers.append(metrics)
        del logp, loss
    return losses, readers


def update(model, reference, optimizer, tokens, prompt_tokens: int, ranges, mu: int, clip: bool, beta: float):
    """`grpo_update` on rows of `tokens` cut at `ranges` [(start, stop)]."""
    parts = [MicroBatch(tokens, prompt_tokens, start, stop) for start, stop in ranges]
    params = model.trainable_parameters()
    model.train()
    pending = norm = None
    for _ in range(mu):
        pending = norm = None  # only the last iteration's results are read back
        pending = _accumulate_gradients(model, reference, parts, beta)
        scale = None  # the earlier iteration's clip factor, held until now
        norm, scale = clip_coefficient(params, 1.0) if clip else (None, None)
        optimizer.step(grad_factor=scale)
        optimizer.zero_grad()
    read_together([*pending[0], *pending[1], *([norm] if norm is not None else [])])
    model.eval()


def grpo_step(model, reference, optimizer, prompt_ids, *, group: int, new_tokens: int, ranges, mu: int = 1,
              clip: bool = True, eval_batch: int = 0, generation_batch: int = 0, beta: float = 0.04) -> None:
    """Sample every prompt's group (`generation_batch` completions at a time), evaluate greedily, update."""
    chunk = generation_batch // group if generation_batch else len(prompt_ids)
    sequences = []
    for start in range(0, len(prompt_ids), chunk):
        sequences += generate(model, prompt_ids[start:start + chunk], max_new_tokens=new_tokens, num_samples=group,
                              eos_token_ids=(), seed=1).sequences
    if eval_batch:
        generate(model, prompts(model.config, eval_batch, len(prompt_ids[0]), seed=5), max_new_tokens=new_tokens,
                 temperature=0.0, eos_token_ids=())
    tokens = np.array([s.prompt_ids + s.token_ids.tolist() for s in sequences], np.int32)
    update(model, reference, optimizer, tokens, len(prompt_ids[0]), ranges, mu, clip, beta)
