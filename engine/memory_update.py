"""The policy update of a GRPO step in the memory replay: `rl.train.update.grpo_update` on `Sym` tensors.

Owns `replay_update`: the rollout walked in micro-batches (each padded to its longest row: in the worst case
every row is full length), the reference log-probs of each micro-batch computed in the first iteration and kept
for all mu (a frozen reference model's, or the policy's own with its LoRA adapters off), the policy's log-probs
with autograd's graph (each decoder layer checkpointed or not), `grpo_loss`, the backward adding into `.grad`,
then per iteration `clip_coefficient` (the norm and the clip factor, which AdamW's step applies as it reads each
gradient), AdamW's step and `zero_grad`; and `replay_clip`. Must not import `rl`.
"""

from __future__ import annotations

import math

from wgrpo import kernels
from wgrpo.engine import memory_ops as ops
from wgrpo.engine.memory_graph import grad_mode
from wgrpo.engine.memory_ledger import I32, U32, Host, Sym
from wgrpo.engine.memory_model import ReplayModel


class _MicroBatch:
    def __init__(self, rows: int, steps: int, completion: int):
        self.inputs, self.targets = Host((rows, steps), I32), Host((rows, steps), I32)
        self.old_logp, self.mask, self.advantages = Host((rows, steps)), Host((rows, steps)), Host((rows,))
        self.ref_logp: Sym | None = None
        self.scored_count, self.scoring = rows * completion, None

    def scored(self, ledger) -> tuple:
        """`MicroBatch.scored`: the completion positions' targets and their selection, uploaded once."""
        if self.scoring is None:
            size, count = math.prod(self.targets.shape), self.scored_count
            if 0 < count < size:
                self.scoring = (ledger.upload(Host((count,), I32)), ops.RowSelection(ledger, count, size))
            else:
                self.scoring = (ledger.upload(self.targets), None)
        return self.scoring


def _reference_logprobs(model: ReplayModel, reference: ReplayModel | None, inputs: Host, targets: Sym,
                        positions) -> Sym:
    with grad_mode(False):
        if reference is not None:
            return reference.token_logprobs(inputs, targets, positions=positions)
        with model.disable_adapters():
            return model.token_logprobs(inputs, targets, positions=positions)


def _accumulate_gradients(model: ReplayModel, reference: ReplayModel | None, parts: list[_MicroBatch],
                          kl: bool) -> tuple[list[Sym], list]:
    """`record_gradients`: the losses and metrics stay held, for the one read-back after the optimizer step."""
    ledger = model.ledger
    losses, readers = [], []
    for part in parts:
        targets, positions = part.scored(ledger)
        if kl and part.ref_logp is None:
            part.ref_logp = _reference_logprobs(model, reference, part.inputs, targets, positions)
        logp = model.token_logprobs(part.inputs, targets, positions=positions)
        loss, metrics = ops.grpo_loss(logp, part.old_logp, part.ref_logp, part.advantages, part.mask)
        loss.backward()
        losses.append(loss.detach())
        readers.append(metrics)  # policy_loss's metrics reader holds them
        del logp, loss, metrics
    return losses, readers


def replay_clip(params: list[Sym]) -> tuple[Sym, Sym]:
    """`clip_coefficient`: per-chunk partial sums, the norm and the clip factor (the gradients are not copied: AdamW
    scales them as it reads them); returns (norm, factor)."""
    with_grad = [p for p in params if p.grad is not None]
    ledger, chunk = with_grad[0].ledger, kernels.load("norm_clip").constants["CHUNK"]
    partials = ledger.empty((max(1, sum(math.ceil(p.grad.size / chunk) for p in with_grad)),))
    total_norm, scale = ledger.empty(()), ledger.empty((1,))
    del partials
    return total_norm, scale


def replay_update(model: ReplayModel, reference: ReplayModel | None, micro_batches: list[int], steps: int, *,
                  mu: int, kl: bool, grad_clip: bool, completion: int | None = None) -> None:
    """mu optimizer steps on a rollout cut into micro-batches of `micro_batches` rows of `steps` tokens, the last
    `completion` of each scored (default: all); `kl`: the loss needs the reference log-probs (beta > 0)."""
    parts = [_MicroBatch(rows, steps, steps if completion is None else completion) for rows in micro_batches]
    params = model.trainable_parameters()
    model.training = True
    pending = norm = scale = None
    for _ in range(mu):
        pending = norm = None  # an earlier iteration's results are dropped before the next (only the last is read)
        pending = _accumulate_gradients(model, reference, parts, kl)
        scale = None  # the earlier iteration's clip factor, held until now
        norm, scale = replay_clip(params) if grad_clip else (None, None)
        for p in params:  # AdamW's step creates nothing once its moments exist; zero_grad drops the gradients
            p.grad = None
    # `read_together`: the results side by side in one buffer, read back once
    read = [*pending[0], *pending[1], *([norm] if norm is not None else [])]
    staging = model.ledger.empty((sum(-(-math.prod(t.shape) * t.dtype.itemsize // 4) for t in read),), U32)
    model.training = False
    del norm, scale, pending, read, staging, parts
