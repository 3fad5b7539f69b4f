"""Log-probabilities at a temperature: log_softmax, token_logprobs (what GRPO needs) and cross_entropy.

Every op divides the logits by `temperature` first (DESIGN.md: log-probs use logits / temperature, the sampling
temperature). Kernels in `kernels/logprob.wgsl`: forward entries `*_serial` (one invocation per row) for rows
shorter than 1024 (`row_kernel`) and `*_workgroup` (one workgroup of 256 per row) for longer ones; each forward
also keeps the row's log-sum-exp (f32), from which the backward recomputes the softmax, so no (rows, V)
probability tensor is ever stored. `token_logprobs` gathers the target's log-prob in the same pass as the
log-sum-exp, and its backward writes d logits directly; both have vec4 twins (quads of 4 elements) used where the
sizes allow (`vec4` of `token_logprobs_into` and `token_logprobs_grad`), the scalar entries staying the
spec and the fallback. Statistics and log-probs are f32 whatever the logits'
dtype. Targets outside [0, V) (negative ones mean "ignored", like PyTorch's ignore_index=-100) get log-prob 0
and no gradient; targets given as numpy arrays are checked on the host and may not be >= V.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo.engine.autograd import Function
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops._common import (as_tensor, check_float, flat_grid, grid_1d, invocations, row_grid, row_kernel,
                                     starts_on_quads)
from wgrpo.engine.tensor import Tensor

# Quads per invocation of token_logprobs_backward_vec4. Lavapipe pays per load/store instruction and per
# invocation, so a short loop of contiguous quads helps ((128, 49152) on lavapipe, 2 cores: 1 quad 53 ms, 4 quads
# 24, 8 quads 18.5, 16 quads 18.8); GPUs keep one quad per invocation, where neighbouring invocations read
# neighbouring quads (coalesced).
SOFTWARE_QUADS = 8
GPU_QUADS = 1

# ---------------------------------------------------------------------------------------------- checks


def _check_logits(x, op: str, name: str = "logits") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be an engine.Tensor, got {type(x).__name__}")
    check_float(x, name, op)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"{op}: {name} needs a non-empty last (vocabulary) axis, got shape {x.shape}")
    if x.size >= 2**32:
        raise ValueError(f"{op}: {name} of shape {x.shape} has over 2**32 elements")


def _inv_temperature(temperature, op: str) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: temperature must be a number, got {type(temperature).__name__}")
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{op}: temperature must be finite and > 0, got {temperature}")
    return 1.0 / temperature


def _targets_tensor(targets, logits: Tensor, op: str, vocab: int | None = None) -> Tensor:
    """targets as an int32 Tensor of shape logits.shape[:-1]; numpy targets are range-checked here. With `vocab`,
    `logits` are the log-probs already taken: the targets have their shape."""
    expected, vocab = (logits.shape[:-1], logits.shape[-1]) if vocab is None else (logits.shape, vocab)
    if isinstance(targets, Tensor):
        if targets.dtype != np.int32:
            raise TypeError(f"{op}: targets must be int32, got {targets.dtype}")
        if targets.device is not logits.device:
            raise ValueError(f"{op}: targets are on {targets.device.name} but logits are on {logits.device.name}")
    elif isinstance(targets, (np.ndarray, list, tuple)):
        targets = np.asarray(targets)
        if targets.size and not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"{op}: targets must be integers, got dtype {targets.dtype}")
        if targets.shape == expected and targets.size and targets.max() >= vocab:
            raise ValueError(f"{op}: targets hold {int(targets.max())}, out of range for a vocabulary of "
                             f"{vocab} (logits of shape {logits.shape}); negative targets are ignored")
    else:
        raise TypeError(f"{op}: targets must be an engine.Tensor or a numpy array, got {type(targets).__name__}")
    if tuple(targets.shape) != expected:
        raise ValueError(f"{op}: targets must have shape {expected} (logits {logits.shape} without the last axis), "
                         f"got {tuple(targets.shape)}")
    if isinstance(targets, np.ndarray):
        targets = Tensor.from_numpy(targets.astype(np.int32), logits.device)
    return targets


def _mask_tensor(mask, targets: Tensor, op: str) -> Tensor | None:
    if mask is None:
        return None
    if isinstance(mask, (np.ndarray, list, tuple)):
        mask = np.asarray(mask, dtype=np.float32)
    mask = as_tensor(mask, "mask", like=targets)
    if mask.dtype != np.float32:
        raise TypeError(f"{op}: mask must be float32 (0/1 per target), got {mask.dtype}")
    if mask.shape != targets.shape:
        raise ValueError(f"{op}: mask must have the targets' shape {targets.shape}, got {mask.shape}")
    return mask


def _params(rows: int, n: int, inv_temp: float) -> dict:
    return {"rows": rows, "n": n, "inv_temp": inv_temp}


# ---------------------------------------------------------------------------------------------- log_softmax


class _LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, inv_temp, variant):
        n = x.shape[-1]
        rows = x.size // n
        y = Tensor.empty(x.shape, x.dtype, x.device)  # (..., V)
        lse = Tensor.empty(x.shape[:-1], np.float32, x.device)  # (...)
        entry = f"log_softmax_{variant}"
        x.runtime.dispatch("logprob", entry, [x, lse, y], row_grid("logprob", entry, rows),
                           _params(rows, n, inv_temp), elem=x.elem, shapes=f"{x.shape}, tau={1 / inv_temp:g}")
        ctx.save_for_backward(x, lse, inv_temp, variant)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, lse, inv_temp, variant = ctx.saved
        if dy.dtype != x.dtype:
            raise TypeError(f"log_softmax backward: dy is {dy.dtype} but x is {x.dtype}")
        n = x.shape[-1]
        rows = x.size // n
        dx = Tensor.empty(x.shape, x.dtype, x.device)  # (..., V)
        entry = f"log_softmax_backward_{variant}"
        x.runtime.dispatch("logprob", entry, [x, lse, dy, dx], row_grid("logprob", entry, rows),
                           _params(rows, n, inv_temp), elem=x.elem, shapes=f"{x.shape}, tau={1 / inv_temp:g}")
        return dx, None, None


def log_softmax(x: Tensor, temperature: float = 1.0, *, variant: str | None = None) -> Tensor:
    """log_softmax(x / temperature) over the last axis, same shape and dtype as x; differentiable.

    `variant` forces a kernel ("serial" or "workgroup"; for tests).
    """
    _check_logits(x, "log_softmax", "x")
    inv_temp = _inv_temperature(temperature, "log_softmax")
    return _LogSoftmax.apply(x, inv_temp, row_kernel(variant, x.shape[-1], "logprob"))


# ---------------------------------------------------------------------------------------------- token_logprobs


def _quad_aligned(t: Tensor) -> bool:
    """Whether `t` (one block) binds as an array of vec4s: a 16-byte aligned offset (always so for whole tensors
    and row views, whose offsets keep the adapter's offset alignment)."""
    return not t.is_split and starts_on_quads(t)


def _vec4_choice(vec4: bool | None, applies: bool, op: str, why: str) -> bool:
    """Whether to dispatch the vec4 twin: where it `applies` (vec4 None), or as `vec4` forces; True where it does
    not apply is refused, naming `why`."""
    if vec4 and not applies:
        raise InputError(f"{op}: the vec4 entry needs {why}")
    return applies if vec4 is None else bool(vec4)


def token_logprobs_into(logits: Tensor, targets: Tensor, logp: Tensor, lse: Tensor, inv_temp: float,
                        variant: str, vec4: bool | None = None) -> None:
    """Dispatch the fused forward: the targets' log-probs into `logp` and each row's log-sum-exp into `lse`
    (both f32 with the targets' shape; views are fine). `vec4`: None picks the vec4 entry where it applies
    ("workgroup" rows, V a multiple of 4), True forces it, False keeps the scalar entry."""
    n = logits.shape[-1]
    rows = logits.size // n
    entry = f"token_logprobs_{variant}"
    grid = row_grid("logprob", entry, rows)  # the vec4 twin has the same grid
    applies = variant == "workgroup" and n % 4 == 0 and _quad_aligned(logits)
    if _vec4_choice(vec4, applies, "token_logprobs", f"the workgroup variant and a vocabulary that is a multiple "
                    f"of 4 (at a 16-byte aligned offset), got the {variant} variant and V = {n}"):
        entry += "_vec4"
    logits.runtime.dispatch("logprob", entry, [logits, targets, logp, lse], grid, _params(rows, n, inv_temp),
                            elem=logits.elem, shapes=f"{logits.shape}, tau={1 / inv_temp:g}")


def token_logprobs_grad(logits: Tensor, targets: Tensor, lse: Tensor, g: Tensor, inv_temp: float,
                        vec4: bool | None = None) -> Tensor:
    """d logits = g (1[j = target] - softmax(logits / tau)_j) / tau, from the forward's log-sum-exp. `vec4`: None
    picks the vec4 entry where it applies (logits' size a multiple of 4, any V), True forces it, False keeps the
    naive entry."""
    if g.dtype != np.float32:
        raise TypeError(f"token_logprobs backward: the gradient must be float32 like the log-probs, got {g.dtype}")
    n = logits.shape[-1]
    rows = logits.size // n
    applies = logits.size % 4 == 0 and _quad_aligned(logits)
    use_vec4 = _vec4_choice(vec4, applies, "token_logprobs backward",
                            f"logits of a size that is a multiple of 4 (at a 16-byte aligned offset), got shape "
                            f"{logits.shape}")
    dlogits = Tensor.empty(logits.shape, logits.dtype, logits.device)  # (..., V)
    if use_vec4:
        entry = "token_logprobs_backward_vec4"
        quads = SOFTWARE_QUADS if logits.device.is_software else GPU_QUADS
        grid = grid_1d(math.ceil(rows * n / (4 * quads)), invocations("logprob", entry))
        constants = {"QUADS": quads}
    else:
        entry = "token_logprobs_backward_naive"
        grid, constants = flat_grid("logprob", entry, rows * n), None
    logits.runtime.dispatch("logprob", entry, [logits, targets, lse, g, dlogits], grid, _params(rows, n, inv_temp),
                            elem=logits.elem, constants=constants, shapes=f"{logits.shape}, tau={1 / inv_temp:g}")
    return dlogits


class _TokenLogprobs(Function):
    @staticmethod
    def forward(ctx, logits, targets, inv_temp, variant):
        logp = Tensor.empty(targets.shape, np.float32, logits.device)  # (...) = (B, T) or (N,)
        lse = Tensor.empty(targets.shape, np.float32, logits.device)
        token_logprobs_into(logits, targets, logp, lse, inv_temp, variant)
        ctx.save_for_backward(logits, targets, lse, inv_temp)
        return logp

    @staticmethod
    def backward(ctx, g):
        logits, targets, lse, inv_temp = ctx.saved
        return token_logprobs_grad(logits, targets, lse, g, inv_temp), None, None, None


def token_logprobs(logits: Tensor, targets, temperature: float = 1.0, *, variant: str | None = None) -> Tensor:
    """log softmax(logits / temperature)[..., targets]: the log-prob of each target token.

    logits: (N, V) or (B, T, V) (any leading shape), float32 or float16. targets: int32 Tensor or integer numpy
    array of the leading shape. Returns float32 of the targets' shape. A negative target is ignored (log-prob 0,
    no gradient). Differentiable with respect to logits. `variant` forces a kernel ("serial" or "workgroup").
    """
    _check_logits(logits, "token_logprobs")
    inv_temp = _inv_temperature(temperature, "token_logprobs")
    targets = _targets_tensor(targets, logits, "token_logprobs")
    return _TokenLogprobs.apply(logits, targets, inv_temp, row_kernel(variant, logits.shape[-1], "logprob"))


# ---------------------------------------------------------------------------------------------- cross_entropy


class _MaskedMeanNll(Function):
    """-sum(w logp) / sum(w) with w = mask * 1[0 <= target < V]: the mean negative log-likelihood."""

    @staticmethod
    def forward(ctx, logp, targets, mask, vocab):
        rows = logp.size
        loss = Tensor.empty((), np.float32, logp.device)
        weight_sum = Tensor.empty((1,), np.float32, logp.device)
        variant = "unmasked" if mask is None else "masked"
        buffers = [targets, logp] + ([] if mask is None else [mask]) + [loss, weight_sum]
        logp.runtime.dispatch("logprob", f"cross_entropy_mean_{variant}", buffers, (1,), _params(rows, vocab, 1.0),
                              shapes=f"targets {targets.shape}, V={vocab}")
        ctx.save_for_backward(targets, mask, vocab, weight_sum)
        return loss

    @staticmethod
    def backward(ctx, g):
        targets, mask, vocab, weight_sum = ctx.saved
        rows = targets.size
        dlogp = Tensor.empty(targets.shape, np.float32, targets.device)
        variant = "unmasked" if mask is None else "masked"
        buffers = [targets] + ([] if mask is None else [mask]) + [weight_sum, g, dlogp]
        entry = f"cross_entropy_backward_{variant}"
        targets.runtime.dispatch("logprob", entry, buffers, flat_grid("logprob", entry, rows),
                                 _params(rows, vocab, 1.0), shapes=f"targets {targets.shape}, V={vocab}")
        return dlogp, None, None, None


def nll_loss(logp: Tensor, targets, vocab: int, mask=None) -> Tensor:
    """Mean over counted positions of -logp, with `cross_entropy`'s counting: from log-probs already taken (the
    fused head `linear_token_logprobs` gives them without a logits tensor). `targets` has logp's shape; a
    position counts when its target is in [0, vocab) and weighs mask[position]. Differentiable in logp."""
    if not isinstance(logp, Tensor) or logp.dtype != np.float32:
        raise TypeError(f"nll_loss: logp must be a float32 engine.Tensor, got {logp!r}")
    targets = _targets_tensor(targets, logp, "nll_loss", vocab)
    mask = _mask_tensor(mask, targets, "nll_loss")
    if targets.size == 0:
        raise ValueError(f"nll_loss: targets of shape {targets.shape} are empty")
    return _MaskedMeanNll.apply(logp, targets, mask, vocab)


def cross_entropy(logits: Tensor, targets, mask=None, temperature: float = 1.0, *,
                  variant: str | None = None) -> Tensor:
    """Mean over counted positions of -token_logprobs(logits, targets, temperature): a float32 scalar Tensor.

    A position counts when its target is in [0, V) (targets < 0 are ignored, like PyTorch's ignore_index=-100)
    and, with `mask` (float 0/1 of the targets' shape), weighs mask[position]. With no counted position the loss
    is 0 (PyTorch gives NaN). Differentiable with respect to logits.
    """
    _check_logits(logits, "cross_entropy")
    inv_temp = _inv_temperature(temperature, "cross_entropy")
    targets = _targets_tensor(targets, logits, "cross_entropy")
    mask = _mask_tensor(mask, targets, "cross_entropy")
    if targets.size == 0:
        raise ValueError(f"cross_entropy: targets of shape {targets.shape} are empty")
    logp = _TokenLogprobs.apply(logits, targets, inv_temp, row_kernel(variant, logits.shape[-1], "logprob"))
    return _MaskedMeanNll.apply(logp, targets, mask, logits.shape[-1])
