"""GRPO's per-token clipped objective, aggregated into a scalar loss, as an autograd op (kernels/grpo.wgsl).

`grpo_loss` takes the policy's log-probs (B, T) (from `token_logprobs`, differentiable), the rollout's
`old_logp`, the frozen reference model's `ref_logp` (or None when beta = 0), one advantage per completion and
the completion mask, and returns loss = -objective aggregated per `loss_type` (DESIGN.md, "GRPO"). A micro-batch
of a gradient-accumulation step passes the whole batch's normalisers (`total_rows`, `total_tokens`), so the
micro-batches' losses and gradients sum to the whole batch's for every loss type; its metrics stay its own (means
over its own tokens, and their count), to be combined weighted by that count. The forward is
two dispatches (per-row sums, then one workgroup over the rows: fixed order, no atomics, deterministic); it also
writes the metrics tensor METRIC_NAMES, read back only when logged. The backward is one dispatch writing
d loss / d logp, which flows on into `token_logprobs` and the model. Must not import `rl`.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.autograd import Function
from wgrpo.engine.ops._common import as_tensor, flat_grid, row_grid, row_kernel
from wgrpo.engine.tensor import Tensor

LOSS_TYPES = {"grpo": 0, "bnpo": 1, "dapo": 1, "dr_grpo": 2}  # name -> the kernel's loss_type code
METRIC_NAMES = ("kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "ratio_mean", "tokens")
# Rows this long get a workgroup each in the forward's first stage. On lavapipe (2 cores) one invocation per row
# is as fast or faster up to T = 4096 (forward + backward of (16, 1024): 0.85 ms serial, 1.1 ms workgroup).
WORKGROUP_MIN_T = 4096


def _row_tensor(value, name: str, like: Tensor, shape: tuple[int, ...]) -> Tensor:
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype != np.float32):
        value = np.asarray(value, dtype=np.float32)
    t = as_tensor(value, name, like=like)
    if t.dtype != np.float32:
        raise TypeError(f"grpo_loss: {name} must be float32, got {t.dtype}")
    if t.shape != shape:
        raise ValueError(f"grpo_loss: {name} must have shape {shape} (logp is {like.shape}), got {t.shape}")
    return t


def _total_rows(value, rows: int) -> int:
    if value is None:
        return rows
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"grpo_loss: total_rows must be an int, got {type(value).__name__}")
    if not rows <= value < 2**32:
        raise ValueError(f"grpo_loss: total_rows must be at least this batch's {rows} rows (the completions of the "
                         f"whole batch it belongs to), got {value}")
    return int(value)


def _number(value, name: str, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"grpo_loss: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"grpo_loss: {name} must be finite and in [{low}, {high}], got {value}")
    return value


class _GRPOLoss(Function):
    @staticmethod
    def forward(ctx, logp, old_logp, ref_logp, advantages, mask, params, variant):
        rows, t = logp.shape
        runtime = logp.runtime
        ref = ref_logp if ref_logp is not None else logp  # beta = 0: kl = 0 exactly
        row_stats = Tensor.empty((rows, kernels.load("grpo").constants["STATS"]), np.float32, logp.device)  # (B, 6)
        entry = f"grpo_rows_{variant}"
        shapes = f"logp {logp.shape}"
        runtime.dispatch("grpo", entry, [logp, old_logp, ref, advantages, mask, row_stats],
                         row_grid("grpo", entry, rows), params, shapes=shapes)
        loss = Tensor.empty((), np.float32, logp.device)  # ()
        metrics = Tensor.empty((len(METRIC_NAMES),), np.float32, logp.device)  # (5,)
        runtime.dispatch("grpo", "grpo_loss_naive", [row_stats, loss, metrics], (1,), params, shapes=shapes)
        ctx.save_for_backward(logp, old_logp, ref, advantages, mask, row_stats, metrics, params)
        return loss, metrics

    @staticmethod
    def backward(ctx, g_loss, _g_metrics):
        logp, old_logp, ref, advantages, mask, row_stats, metrics, params = ctx.saved
        if g_loss is None:  # only the metrics were used downstream: they carry no gradient
            return (None,) * 7
        dlogp = Tensor.empty(logp.shape, np.float32, logp.device)  # (B, T)
        logp.runtime.dispatch("grpo", "grpo_backward_naive",
                              [logp, old_logp, ref, advantages, mask, row_stats, metrics, g_loss, dlogp],
                              flat_grid("grpo", "grpo_backward_naive", logp.size), params,
                              shapes=f"logp {logp.shape}")
        return dlogp, None, None, None, None, None, None


def grpo_loss(logp: Tensor, old_logp, ref_logp, advantages, mask, *, eps_low: float = 0.2, eps_high: float = 0.2,
              beta: float = 0.04, loss_type: str = "grpo", max_completion_length: int | None = None,
              return_metrics: bool = False, variant: str | None = None, total_rows: int | None = None,
              total_tokens: float | None = None):
    """GRPO's loss: -(clipped surrogate - beta k3 KL) per completion token, aggregated per `loss_type`.

    logp: (B, T) float32 Tensor, the policy's log-probs of the sampled tokens at the sampling temperature (from
    `token_logprobs`; may require grad). old_logp: (B, T), recorded at rollout. ref_logp: (B, T) from the frozen
    reference model, or None (only with beta = 0; then KL is 0). advantages: (B,) one per completion. mask: (B, T)
    float, 1 on completion tokens (EOS included), 0 on prompt and padding. The non-logp inputs may be numpy
    arrays and never get gradients. Per token, rho = exp(logp - old_logp),
    objective = min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) - beta (exp(ref - logp) - (ref - logp) - 1).
    loss_type: "grpo" (mean over each completion's tokens, then over completions), "bnpo" / "dapo" (sum over all
    completion tokens / their count), "dr_grpo" (sum / (B * max_completion_length); needs the length).
    Token counts are clamped to at least 1 before dividing (as TRL does), so an empty completion adds 0.
    total_rows (an int >= B) and total_tokens (a finite float >= 0): the completions and the masked tokens of the
    whole batch these rows are a micro-batch of; grpo and dr_grpo divide by total_rows instead of B, bnpo and
    dapo by total_tokens instead of this batch's own token count (counted on the GPU). Defaults: this batch's own.

    Returns the scalar loss Tensor, shape (); with `return_metrics=True`, (loss, metrics) where metrics is a
    (5,) float32 Tensor in METRIC_NAMES order: mean k3 KL, clip fraction low (A < 0, rho < 1 - eps_low), clip
    fraction high (A > 0, rho > 1 + eps_high), mean rho, all over masked tokens, and the masked-token count.
    `variant` forces the first stage's kernel ("serial" or "workgroup"; for tests).
    """
    if not isinstance(logp, Tensor):
        raise TypeError(f"grpo_loss: logp must be an engine.Tensor, got {type(logp).__name__}")
    if logp.dtype != np.float32 or logp.ndim != 2:
        raise ValueError(f"grpo_loss: logp must be float32 of shape (B, T), got {logp.dtype} {logp.shape}")
    rows, t = logp.shape
    if rows == 0 or t == 0:
        raise ValueError(f"grpo_loss: logp of shape {logp.shape} is empty")
    if logp.size >= 2**31:
        raise ValueError(f"grpo_loss: logp of shape {logp.shape} has too many elements")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"grpo_loss: loss_type must be one of {sorted(LOSS_TYPES)}, got {loss_type!r}")
    eps_low = _number(eps_low, "eps_low", 0.0, 1.0)
    eps_high = _number(eps_high, "eps_high", 0.0)
    beta = _number(beta, "beta", 0.0)
    if loss_type == "dr_grpo":
        if isinstance(max_completion_length, bool) or not isinstance(max_completion_length, (int, np.integer)) \
                or max_completion_length < 1:
            raise ValueError("grpo_loss: loss_type 'dr_grpo' needs max_completion_length, an int >= 1, got "
                             f"{max_completion_length!r}")
    max_len = int(max_completion_length) if loss_type == "dr_grpo" else 0
    total_rows = _total_rows(total_rows, rows)
    given_tokens = total_tokens is not None
    total_tokens = _number(total_tokens, "total_tokens", 0.0) if given_tokens else 0.0
    old_logp = _row_tensor(old_logp, "old_logp", logp, (rows, t))
    if ref_logp is None:
        if beta != 0.0:
            raise ValueError(f"grpo_loss: beta={beta} needs ref_logp (the reference model's log-probs); "
                             "pass beta=0 to train without the KL term")
    else:
        ref_logp = _row_tensor(ref_logp, "ref_logp", logp, (rows, t))
    advantages = _row_tensor(advantages, "advantages", logp, (rows,))
    mask = _row_tensor(mask, "mask", logp, (rows, t))
    variant = row_kernel(variant, t, "grpo_loss", WORKGROUP_MIN_T)
    params = {"rows": rows, "t": t, "loss_type": LOSS_TYPES[loss_type], "max_len": max_len, "eps_low": eps_low,
              "eps_high": eps_high, "beta": beta, "total_rows": total_rows, "given_tokens": given_tokens,
              "total_tokens": total_tokens}
    loss, metrics = _GRPOLoss.apply(logp, old_logp, ref_logp, advantages, mask, params, variant)
    metrics = metrics.detach()  # read when logged; never differentiated
    return (loss, metrics) if return_metrics else loss
