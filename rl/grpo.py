"""GRPO's math: group advantages, the clipped policy loss with its KL penalty, and dynamic sampling.

Owns: `GRPOLossConfig` (the loss and advantage hyperparameters), `group_advantages`, `dynamic_sampling_filter`,
`reference_loss` (a float64 numpy statement of the whole objective and its gradient w.r.t. the policy's
log-probs: the readable spec the GPU op is tested against), `policy_loss` (the GPU op, `engine.ops.grpo_loss`,
with metrics read only when asked) and `combine_metrics`. DESIGN.md's "GRPO" section is the spec.
Talks to `engine` only (imported when `policy_loss` runs); never imports wgpu.

Micro-batches: a batch walked in pieces with gradients accumulated gives each piece's loss the whole batch's
normalisers (`total_rows` completions, `total_tokens` masked tokens), so the pieces' losses and gradients sum to
the whole batch's for every loss type (token-level losses divide by the whole batch's token count, not each
piece's). Each piece's metrics are its own means plus its token count; `combine_metrics` weighs them into the
whole batch's.

With one update per batch (mu = 1) the policy is the rollout policy, so rho = 1 and, at beta = 0, the loss
*value* is minus a weighted mean of the advantages: exactly 0 for grpo (advantages have zero mean in each group),
near 0 for the token-level types; while its gradient is the policy gradient -w A d logp. A loss near 0 is
expected, not a bug; watch reward and KL instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from wgrpo.rl.errors import input_error

if TYPE_CHECKING:  # for annotations only
    from wgrpo.engine import Tensor

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
METRIC_NAMES = ("kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "ratio_mean", "tokens")  # as engine.ops.grpo


@dataclass
class GRPOLossConfig:
    eps_low: float = field(default=0.2, metadata={"help": "lower clip range: rho is clipped below at 1 - eps_low"})
    eps_high: float = field(default=0.2, metadata={"help": "upper clip range: rho is clipped above at 1 + eps_high "
                                                           "(DAPO's clip-higher uses 0.28)"})
    beta: float = field(default=0.04, metadata={"help": "weight of the k3 KL penalty to the reference model; 0 "
                                                       "needs no reference model (DAPO, Dr. GRPO)"})
    loss_type: str = field(default="grpo", metadata={"help": "aggregation: grpo (per-completion token mean, then "
                                                              "mean over completions), bnpo/dapo (mean over all "
                                                              "completion tokens), dr_grpo (sum / (B x "
                                                              "max_completion_length))"})
    max_completion_length: int = field(default=0, metadata={"help": "dr_grpo's constant L; 0 = the mask's width T "
                                                                    "(the padded completion length)"})
    scale_rewards: str = field(default="std", metadata={"help": "advantage scaling: std ((r - mean) / (std + "
                                                                "adv_eps)) or none (r - mean, Dr. GRPO)"})
    std: str = field(default="population", metadata={"help": "group std: population (divide by G) or bessel "
                                                              "(divide by G - 1, as torch.std and TRL)"})
    adv_eps: float = field(default=1e-4, metadata={"help": "added to the group std before dividing"})

    def __post_init__(self):
        # InputErrors naming the `wgrpo train` option that sets the field, where one does; input_error imports
        # the engine only when there is an error to raise
        if self.loss_type not in LOSS_TYPES:
            raise input_error(f"--loss-type {self.loss_type!r}: GRPOLossConfig.loss_type must be one of "
                              f"{', '.join(LOSS_TYPES)}")
        if not 0.0 <= self.eps_low < 1.0:
            raise input_error(f"--eps-low {self.eps_low}: GRPOLossConfig.eps_low must be in [0, 1)")
        if self.eps_high < 0.0:
            raise input_error(f"--eps-high {self.eps_high}: GRPOLossConfig.eps_high must be >= 0")
        if self.beta < 0.0:
            raise input_error(f"--beta {self.beta}: GRPOLossConfig.beta must be >= 0")
        if self.max_completion_length < 0:
            raise input_error(f"GRPOLossConfig: max_completion_length {self.max_completion_length}: must be >= 0 "
                              f"(0: the padded completion length)")
        if self.scale_rewards not in ("std", "none"):
            raise input_error(f"--scale-rewards {self.scale_rewards!r}: GRPOLossConfig.scale_rewards must be std "
                              f"or none")
        if self.std not in ("population", "bessel"):
            raise input_error(f"GRPOLossConfig: std {self.std!r}: must be population or bessel")
        if not self.adv_eps > 0.0:
            raise input_error(f"GRPOLossConfig: adv_eps {self.adv_eps}: must be > 0")

    @classmethod
    def dapo(cls, **overrides) -> "GRPOLossConfig":
        """DAPO: clip-higher (0.2, 0.28), token-level mean, no KL."""
        return cls(**{"eps_low": 0.2, "eps_high": 0.28, "beta": 0.0, "loss_type": "dapo", **overrides})

    @classmethod
    def dr_grpo(cls, **overrides) -> "GRPOLossConfig":
        """Dr. GRPO: no std scaling of advantages, sum / (B x max completion length), no KL."""
        return cls(**{"beta": 0.0, "loss_type": "dr_grpo", "scale_rewards": "none", **overrides})


# ---------------------------------------------------------------------------------------------- advantages


def _rewards_2d(rewards, name: str = "rewards") -> np.ndarray:
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n_groups, G) with G >= 1, got {rewards.shape}")
    if not np.all(np.isfinite(rewards)):
        raise ValueError(f"{name} must be finite; got NaN or inf at {np.argwhere(~np.isfinite(rewards))[:4].tolist()}")
    return rewards


def group_advantages(rewards, scale: str = "std", eps: float = 1e-4,
                     std: str = "population") -> tuple[np.ndarray, np.ndarray]:
    """(advantages (n_groups, G) float32, zero_signal (n_groups,) bool) of rewards (n_groups, G).

    A_i = (r_i - mean(r)) / (std(r) + eps) with scale "std", A_i = r_i - mean(r) with "none" (Dr. GRPO); std is
    the population one (divide by G) or "bessel" (divide by G - 1; torch.std's default, TRL's choice). A group
    whose rewards are all equal carries no signal: its advantages are exactly 0 and zero_signal marks it, so
    the caller can count it (`zero_signal.mean()` is the logged fraction) or drop it (dynamic sampling).
    """
    if scale not in ("std", "none"):
        raise ValueError(f"group_advantages: scale must be 'std' or 'none', got {scale!r}")
    if std not in ("population", "bessel"):
        raise ValueError(f"group_advantages: std must be 'population' or 'bessel', got {std!r}")
    if not eps > 0:
        raise ValueError(f"group_advantages: eps must be > 0, got {eps}")
    r = _rewards_2d(rewards)
    zero_signal = np.all(r == r[:, :1], axis=1)  # (n_groups,)
    centered = r - r.mean(axis=1, keepdims=True)  # (n_groups, G)
    if scale == "std":
        ddof = 1 if std == "bessel" else 0
        sigma = r.std(axis=1, ddof=ddof, keepdims=True) if r.shape[1] > ddof else np.zeros((len(r), 1))
        centered = centered / (sigma + eps)
    centered[zero_signal] = 0.0
    return centered.astype(np.float32), zero_signal


def dynamic_sampling_filter(rewards) -> np.ndarray:
    """DAPO's dynamic sampling: a keep mask (n_groups,) bool, False for groups whose rewards are all equal."""
    r = _rewards_2d(rewards)
    return ~np.all(r == r[:, :1], axis=1)


# ---------------------------------------------------------------------------------------------- the loss


def reference_loss(logp, old_logp, ref_logp, advantages, mask, *, eps_low: float = 0.2, eps_high: float = 0.2,
                   beta: float = 0.04, loss_type: str = "grpo",
                   max_completion_length: int | None = None, total_rows: int | None = None,
                   total_tokens: float | None = None) -> tuple[float, np.ndarray, dict]:
    """(loss, d loss / d logp (B, T), metrics) in float64 numpy: the spec `engine.ops.grpo_loss` is tested against.

    Shapes and meaning as `engine.ops.grpo_loss`: logp, old_logp, ref_logp (or None with beta = 0), mask (B, T);
    advantages (B,). total_rows, total_tokens: the whole batch's completion and masked-token counts when these
    rows are a micro-batch of it (defaults: B and this mask's sum); the metrics are over these rows alone.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"reference_loss: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    logp, old_logp, mask = (np.asarray(a, np.float64) for a in (logp, old_logp, mask))
    rows = logp.shape[0]
    if total_rows is None:
        total_rows = rows
    elif isinstance(total_rows, bool) or not isinstance(total_rows, (int, np.integer)) or total_rows < rows:
        raise ValueError(f"reference_loss: total_rows must be an int >= the {rows} rows, got {total_rows!r}")
    if total_tokens is not None and not (np.isfinite(total_tokens) and total_tokens >= 0):
        raise ValueError(f"reference_loss: total_tokens must be finite and >= 0, got {total_tokens!r}")
    if ref_logp is None:
        if beta != 0:
            raise ValueError("reference_loss: beta != 0 needs ref_logp")
        ref_logp = logp
    ref_logp = np.asarray(ref_logp, np.float64)
    a = np.asarray(advantages, np.float64)[:, None]  # (B, 1): every token of a completion shares it
    on = mask != 0
    with np.errstate(over="ignore", invalid="ignore"):
        rho = np.where(on, np.exp(logp - old_logp), 1.0)  # (B, T)
        d = np.where(on, ref_logp - logp, 0.0)
    ref_ratio = np.exp(d)  # pi_ref / pi_theta
    kl = ref_ratio - d - 1.0  # k3
    clipped = np.clip(rho, 1.0 - eps_low, 1.0 + eps_high)
    objective = np.minimum(rho * a, clipped * a) - beta * kl  # (B, T)
    high = (a > 0) & (rho > 1.0 + eps_high)
    low = (a < 0) & (rho < 1.0 - eps_low)
    dobjective = np.where(high | low, 0.0, rho * a) - beta * (1.0 - ref_ratio)

    n_row = mask.sum(axis=1, keepdims=True)  # (B, 1)
    n = mask.sum()
    all_tokens = n if total_tokens is None else float(total_tokens)
    if loss_type == "grpo":
        weight = 1.0 / (total_rows * np.maximum(n_row, 1.0))  # (B, 1)
    elif loss_type in ("bnpo", "dapo"):
        weight = np.full((rows, 1), 1.0 / max(all_tokens, 1.0))
    else:
        if not max_completion_length or max_completion_length < 1:
            raise ValueError("reference_loss: dr_grpo needs max_completion_length >= 1")
        weight = np.full((rows, 1), 1.0 / (total_rows * max_completion_length))
    loss = -float(np.sum(np.where(on, weight * mask * objective, 0.0)))
    grad = np.where(on, -weight * mask * dobjective, 0.0)
    per_token = 1.0 / max(n, 1.0)
    metrics = {
        "kl": float(np.sum(np.where(on, mask * kl, 0.0)) * per_token),
        "clip_ratio/low_mean": float(np.sum(mask * low) * per_token),
        "clip_ratio/high_mean": float(np.sum(mask * high) * per_token),
        "ratio_mean": float(np.sum(np.where(on, mask * rho, 0.0)) * per_token),
        "tokens": float(n),
    }
    return loss, grad, metrics


def policy_loss(logp, old_logp, ref_logp, advantages, mask, config: GRPOLossConfig, *,
                total_rows: int | None = None,
                total_tokens: float | None = None) -> tuple["Tensor", "LossMetrics"]:
    """(loss Tensor of shape (), metrics) on the GPU: `engine.ops.grpo_loss` with `config`'s hyperparameters.

    logp: (B, T) Tensor from the policy's token_logprobs (requires grad). old_logp, ref_logp (None when
    config.beta = 0), mask: (B, T) Tensors or numpy arrays; advantages: (B,) or (n_groups, G) with
    n_groups * G = B. `metrics()` reads the metrics back (one small read-back; `metrics.tensor` can instead be
    read with other results in one, see `LossMetrics`) and returns {kl, clip_ratio/low_mean, clip_ratio/high_mean,
    ratio_mean, tokens}; kl is left out without a reference.
    total_rows, total_tokens: the whole batch's completion and masked-token counts when these rows are one
    micro-batch of it (see the module docstring); the metrics stay this micro-batch's (see `combine_metrics`).
    """
    from wgrpo.engine import Tensor, ops  # the GPU side; importing rl.grpo for its numpy functions needs no device

    if not isinstance(advantages, Tensor):
        advantages = np.asarray(advantages, np.float32).reshape(-1)  # (B,)
    ref = ref_logp  # with beta = 0 it only feeds the kl metric; None is fine
    rows, width = (int(n) for n in logp.shape)
    if (config.loss_type == "dr_grpo" and not config.max_completion_length and total_rows is not None
            and total_rows != rows):
        # each micro-batch is padded to its own width, so the mask's width is no constant L of the whole batch
        raise ValueError("policy_loss: dr_grpo over micro-batches needs config.max_completion_length (the whole "
                         "batch's L); 0 would take each micro-batch's own width")
    max_len = config.max_completion_length or width
    loss, metrics = ops.grpo_loss(logp, old_logp, ref, advantages, mask, eps_low=config.eps_low,
                                  eps_high=config.eps_high, beta=config.beta, loss_type=config.loss_type,
                                  max_completion_length=max_len, return_metrics=True, total_rows=total_rows,
                                  total_tokens=total_tokens)

    return loss, LossMetrics(metrics, with_kl=ref is not None)


class LossMetrics:
    """The metrics of one `policy_loss` while they are still on the device: call it to read them back, or read
    `tensor` together with other results (`engine.readback.read_together`) and pass the values to `values`."""

    def __init__(self, tensor, with_kl: bool):
        self.tensor, self.with_kl = tensor, with_kl

    def values(self, read) -> dict[str, float]:
        """{kl, clip_ratio/low_mean, clip_ratio/high_mean, ratio_mean, tokens} from the read-back `tensor`."""
        values = dict(zip(METRIC_NAMES, (float(v) for v in read)))
        if not self.with_kl:
            values.pop("kl")
        return values

    def __call__(self) -> dict[str, float]:
        return self.values(self.tensor.numpy())


def combine_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """The whole batch's metrics from its micro-batches' (each `policy_loss`'s `metrics()`): every mean weighted
    by its micro-batch's token count (a micro-batch without tokens adds nothing), the token counts summed. Each
    mean is 0 when the whole batch has no tokens, as in a single batch."""
    if not parts:
        raise ValueError("combine_metrics: needs the metrics of at least one micro-batch")
    names = set(parts[0])
    if "tokens" not in names or any(set(part) != names for part in parts):
        raise ValueError(f"combine_metrics: every part needs the same metrics, tokens included; got "
                         f"{[sorted(part) for part in parts]}")
    tokens = float(sum(part["tokens"] for part in parts))
    return {name: tokens if name == "tokens" else
            float(sum(part[name] * part["tokens"] for part in parts)) / max(tokens, 1.0) for name in parts[0]}
