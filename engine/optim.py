"""The optimizer: AdamW and global-norm gradient clipping, as kernels.

Owns: `AdamW` (PyTorch's torch.optim.AdamW semantics: decoupled weight decay, bias correction, a step count per
parameter starting at 1; one `kernels/adamw.wgsl` dispatch per parameter, updating the parameter and its f32
moments in place) with `state_dict` / `load_state_dict` for checkpoints, and `clip_grad_norm_` (kernels in
`kernels/norm_clip.wgsl`; the norm and the clip factor stay on the GPU, so clipping needs no read-back),
`clip_coefficient` (the norm and the factor alone, which `AdamW.step(grad_factor=...)` applies as it reads each
gradient: the trainers clip this way, without a pass over the gradients of its own), and the choice between each kernel's scalar entry and its vec4 form (`vec4_entry`: a block whose bindings can all be
read as quads of 4 elements takes the vec4 one). Nothing here reads GPU data back except `state_dict`. Must not
import `rl`.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from wgrpo import kernels
from wgrpo.engine.errors import InputError
from wgrpo.engine.memory import memory_kind
from wgrpo.engine.ops._common import flat_grid, grid_1d, invocations, starts_on_quads
from wgrpo.engine.tensor import Tensor


# The vec4 form of each scalar entry: the same formula and bindings, on quads of 4 elements.
VEC4_ENTRIES = {
    ("adamw", "adamw_step_naive"): "adamw_step4",
    ("norm_clip", "sum_squares_workgroup"): "sum_squares4",
    ("norm_clip", "clip_scale_naive"): "clip_scale4",
    ("norm_clip", "clip_scale_inplace_naive"): "clip_scale_inplace4",
}
# Per adapter kind, the vec4 entries' overrides. QUADS, quads per invocation of the elementwise ones: lavapipe pays
# per invocation as well as per load/store, so a short loop helps there (measured on the benchmark model's 51
# tensors: AdamW 8.9 ms at 8 quads, 11.1 at 1); GPUs keep one quad per invocation, neighbours reading neighbouring
# quads. SUM_WG, the workgroup of sum_squares4: barriers are dear on a CPU (see kernels/norm_clip.wgsl).
SOFTWARE_CONSTANTS = {"QUADS": 8, "SUM_WG": 8}
GPU_CONSTANTS = {"QUADS": 1, "SUM_WG": 256}


def _quad_aligned(t: Tensor) -> bool:
    """Whether `t` (one block) can be bound as an array of vec4s: whole quads at a 16-byte aligned offset."""
    return t.size % 4 == 0 and starts_on_quads(t)


def vec4_entry(kernel: str, entry: str, quad_views: list[Tensor], vec4: bool = True) -> str:
    """The entry to run for `kernel`.`entry`: its vec4 form where `vec4` is on and every buffer it reads as quads
    (`quad_views`, one block each) is quad aligned, else `entry` itself."""
    if vec4 and all(_quad_aligned(t) for t in quad_views):
        return VEC4_ENTRIES[(kernel, entry)]
    return entry


def _overrides(device) -> dict[str, int]:
    return SOFTWARE_CONSTANTS if device.is_software else GPU_CONSTANTS


def elementwise_grid(kernel: str, entry: str, n: int, device) -> tuple[tuple[int, int], dict | None]:
    """(grid, pipeline constants) of an elementwise entry over n elements on `device`: one element per invocation
    for a scalar entry, QUADS quads per invocation for a vec4 one."""
    if entry not in VEC4_ENTRIES.values():
        return flat_grid(kernel, entry, n), None
    quads = _overrides(device)["QUADS"]
    return grid_1d(math.ceil((n // 4) / quads), invocations(kernel, entry)), {"QUADS": quads}


def sum_squares_constants(entry: str, device) -> dict | None:
    """The pipeline constants of a sum-of-squares entry: the vec4 one's workgroup size."""
    return {"SUM_WG": _overrides(device)["SUM_WG"]} if entry == "sum_squares4" else None


def clip_chunk() -> int:
    """Gradient elements one workgroup of sum_squares_workgroup (or sum_squares4) sums (CHUNK in norm_clip.wgsl)."""
    return kernels.load("norm_clip").constants["CHUNK"]


def _parameter_list(params, op: str) -> list[Tensor]:
    params = [params] if isinstance(params, Tensor) else list(params)
    seen = {}
    for index, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: params[{index}] must be an engine.Tensor, got {type(p).__name__}")
        if p.elem not in ("f32", "f16"):
            raise TypeError(f"{op}: params[{index}] must be float32 or float16, got {p.dtype}")
        if id(p) in seen:
            raise ValueError(f"{op}: params[{index}] is the same tensor as params[{seen[id(p)]}]; pass each once")
        seen[id(p)] = index
    return params


def _check_grad(p: Tensor, index: int, op: str) -> None:
    g = p.grad
    if g.shape != p.shape:
        raise ValueError(f"{op}: params[{index}] has shape {p.shape} but its grad has shape {g.shape}")
    if g.dtype != p.dtype:
        raise TypeError(f"{op}: params[{index}] is {p.dtype} but its grad is {g.dtype}")
    if g.device is not p.device:
        raise ValueError(f"{op}: params[{index}] is on {p.device.name} but its grad is on {g.device.name}")
    if g.row_ranges != p.row_ranges:
        raise ValueError(f"{op}: params[{index}] is held in row blocks {p.row_ranges} but its grad in "
                         f"{g.row_ranges}")


class AdamW:
    """torch.optim.AdamW for engine Tensors (amsgrad, maximize and parameter groups are not supported).

    `lr`, `betas`, `eps` and `weight_decay` are plain attributes: a schedule may set `opt.lr` between steps.
    Moments are float32 whatever the parameter dtype. Parameters without a `.grad` are skipped, as in torch.
    A block whose size is a multiple of 4 takes the vec4 kernel (the same result to the bit); `vec4=False` runs
    the scalar one everywhere.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, vec4: bool = True):
        self.params = _parameter_list(params, "AdamW")
        self.vec4 = vec4
        if not self.params:
            raise ValueError("AdamW: params is empty")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self._check_hyperparameters()
        self.step_count = 0  # calls of step()
        # Per parameter: None until its first update, then {"step": t, "exp_avg": Tensor, "exp_avg_sq": Tensor}.
        self.state: list[dict | None] = [None] * len(self.params)

    def _check_hyperparameters(self) -> None:
        lr, betas, eps, wd = self.lr, self.betas, self.eps, self.weight_decay
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"AdamW: lr must be a finite number >= 0, got {lr!r}")
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW: betas must be two numbers in [0, 1), got {betas!r}")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"AdamW: eps must be a finite number >= 0, got {eps!r}")
        if not (isinstance(wd, (int, float)) and math.isfinite(wd) and wd >= 0):
            raise ValueError(f"AdamW: weight_decay must be a finite number >= 0, got {wd!r}")

    def step(self, grad_factor: Tensor | None = None) -> None:
        """Update every parameter that has a `.grad`: one dispatch each (per row block), recorded into the current
        submit. `grad_factor`, a float32 Tensor of shape (1,) on the parameters' device, multiplies every gradient
        as it is read; the `.grad` tensors are left as they are, unclipped (unlike torch's fused `grad_scale`, a
        loss scale it divides by and writes back). With `clip_coefficient` it is gradient clipping without a pass
        of its own over the gradients."""
        self._check_hyperparameters()
        if grad_factor is not None:
            _check_grad_factor(grad_factor, self.params[0].device)
        beta1, beta2 = (float(b) for b in self.betas)
        self.step_count += 1
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            _check_grad(p, index, "AdamW.step")
            state = self.state[index]
            fresh = state is None
            if fresh:
                with memory_kind("optimizer"):
                    state = self.state[index] = {"step": 0, "exp_avg": Tensor.empty(p.shape, np.float32, p.device),
                                                 "exp_avg_sq": Tensor.empty(p.shape, np.float32, p.device)}
            state["step"] += 1
            t = state["step"]
            # a parameter held in row blocks has its gradient and moments split alike (the split is the shape's)
            blocks = zip(p.parts, p.grad.parts, state["exp_avg"].parts, state["exp_avg_sq"].parts, strict=True)
            for block, (p_block, g_block, m_block, v_block) in enumerate(blocks):
                params = {"n": p_block.size, "fresh": fresh, "decay": 1.0 - self.lr * self.weight_decay,
                          "one_minus_beta1": 1.0 - beta1, "beta2": beta2, "one_minus_beta2": 1.0 - beta2,
                          "eps": self.eps, "step_size": self.lr / (1.0 - beta1**t), "bc2_sqrt": math.sqrt(1.0 - beta2**t)}
                where = f" block {block}" if p.is_split else ""
                params["scaled"] = grad_factor is not None
                buffers = [p_block, g_block, m_block, v_block]
                entry = vec4_entry("adamw", "adamw_step_naive", buffers, self.vec4)
                grid, constants = elementwise_grid("adamw", entry, p_block.size, p.device)
                # unscaled, the gradient stands in for the scale's binding: read only, never read through it
                scale_binding = grad_factor if grad_factor is not None else g_block
                p.runtime.dispatch("adamw", entry, [*buffers, scale_binding], grid, params, elem=p.elem,
                                   constants=constants, shapes=f"params[{index}] {p.shape}{where}")

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (torch's default set_to_none=True)."""
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        """Hyperparameters, the step count and per-parameter moments as numpy float32 arrays (a read-back)."""
        return {
            "step": self.step_count,
            "hyperparameters": {"lr": self.lr, "betas": tuple(self.betas), "eps": self.eps,
                                "weight_decay": self.weight_decay},
            "state": [None if s is None else {"step": s["step"], "exp_avg": s["exp_avg"].numpy(),
                                              "exp_avg_sq": s["exp_avg_sq"].numpy()} for s in self.state],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what `state_dict` returned, for the same parameters in the same order."""
        for key in ("step", "hyperparameters", "state"):
            if key not in state_dict:
                raise InputError(f"AdamW.load_state_dict: the state dict has no {key!r} entry")
        states = state_dict["state"]
        if len(states) != len(self.params):
            raise InputError(f"AdamW.load_state_dict: the state dict holds {len(states)} parameters, "
                             f"this optimizer has {len(self.params)}")
        loaded = []
        for index, (p, s) in enumerate(zip(self.params, states)):
            if s is None:
                loaded.append(None)
                continue
            moments = {}
            for name in ("exp_avg", "exp_avg_sq"):
                value = np.asarray(s[name])
                if value.shape != p.shape:
                    raise InputError(f"AdamW.load_state_dict: state[{index}][{name!r}] has shape {value.shape}, "
                                     f"params[{index}] has shape {p.shape}")
                with memory_kind("optimizer"):
                    moments[name] = Tensor.from_numpy(value.astype(np.float32), p.device)
            step = int(s["step"])
            if step < 1:
                raise InputError(f"AdamW.load_state_dict: state[{index}]['step'] must be >= 1, got {step}")
            loaded.append({"step": step, **moments})
        hyper = state_dict["hyperparameters"]
        self.lr, self.betas = hyper["lr"], tuple(hyper["betas"])
        self.eps, self.weight_decay = hyper["eps"], hyper["weight_decay"]
        self._check_hyperparameters()
        self.step_count = int(state_dict["step"])
        self.state = loaded


def _check_grad_factor(grad_factor, device) -> None:
    if not isinstance(grad_factor, Tensor) or grad_factor.shape != (1,) or grad_factor.dtype != np.float32:
        raise TypeError(f"AdamW.step: grad_factor must be a float32 engine.Tensor of shape (1,), got {grad_factor!r}")
    if grad_factor.device is not device:
        raise ValueError(f"AdamW.step: grad_factor is on {grad_factor.device.name}, the parameters on {device.name}")


def _shared_gradients(params: list[Tensor]) -> set[int]:
    """ids of the parameters whose `.grad` shares a buffer (any row block of it) with another one's `.grad`."""
    holders: dict[int, set[int]] = {}
    for p in params:
        for part in p.grad.parts:
            holders.setdefault(id(part.binding()[0]), set()).add(id(p))
    return {p for owners in holders.values() if len(owners) > 1 for p in owners}


def _check_max_norm(max_norm, op: str) -> None:
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: max_norm must be a number, got {type(max_norm).__name__}")
    if not (math.isfinite(max_norm) and max_norm >= 0):
        raise ValueError(f"{op}: max_norm must be finite and >= 0, got {max_norm}")


def _norm_and_coefficient(with_grad: list[tuple[int, Tensor]], max_norm: float, vec4: bool,
                          op: str) -> tuple[Tensor, Tensor]:
    """(total norm (), clip coefficient (1,)) of the gradients of `with_grad` (index, parameter), on the GPU."""
    for index, p in with_grad:
        _check_grad(p, index, op)
    device = with_grad[0][1].device
    runtime = device.runtime
    chunk = clip_chunk()
    # one partial sum per chunk of each gradient block (a gradient over the binding limit is held in row blocks)
    blocks = [(index, p, g) for index, p in with_grad for g in p.grad.parts]
    partials = Tensor.empty((max(1, sum(math.ceil(g.size / chunk) for _, _, g in blocks)),), np.float32, device)
    slot = 0
    for index, p, g in blocks:
        if p.device is not device:
            raise ValueError(f"{op}: params[{index}] is on {p.device.name}, params[{with_grad[0][0]}] "
                             f"on {device.name}")
        entry = vec4_entry("norm_clip", "sum_squares_workgroup", [g], vec4)
        runtime.dispatch("norm_clip", entry, [g, partials], grid_1d(g.size, chunk), {"n": g.size, "slot": slot},
                         elem=p.elem, constants=sum_squares_constants(entry, device),
                         shapes=f"params[{index}] {p.shape}")
        slot += math.ceil(g.size / chunk)
    total_norm = Tensor.empty((), np.float32, device)
    scale = Tensor.empty((1,), np.float32, device)
    runtime.dispatch("norm_clip", "clip_coef_workgroup", [partials, total_norm, scale], (1,),
                     {"n_partials": slot, "max_norm": float(max_norm)}, shapes=f"{len(with_grad)} gradients")
    return total_norm, scale


def clip_coefficient(params: Iterable[Tensor] | Tensor, max_norm: float,
                     vec4: bool = True) -> tuple[Tensor, Tensor | None]:
    """The global L2 norm of the gradients and the factor clip_grad_norm_ would scale them by, min(1, max_norm /
    (total_norm + 1e-6)), both left on the GPU: (norm of shape (), coefficient of shape (1,)); the coefficient is
    None when no parameter has a `.grad`. The gradients are not touched: hand the coefficient to
    `AdamW.step(grad_factor=...)` to clip inside the step. Parameters without a `.grad` are skipped."""
    _check_max_norm(max_norm, "clip_coefficient")
    params = _parameter_list(params, "clip_coefficient")
    with_grad = [(i, p) for i, p in enumerate(params) if p.grad is not None]
    if not with_grad:
        return Tensor.from_numpy(np.zeros((), np.float32), params[0].device if params else None), None
    return _norm_and_coefficient(with_grad, max_norm, vec4, "clip_coefficient")


def clip_grad_norm_(params: Iterable[Tensor] | Tensor, max_norm: float, vec4: bool = True) -> Tensor:
    """Scale the gradients so that their global L2 norm is at most `max_norm`, as torch's clip_grad_norm_.

    The factor is min(1, max_norm / (total_norm + 1e-6)). Returns the total norm before clipping as a float32
    Tensor of shape () (reading it is a read-back; the clip itself needs none). Each `.grad` is scaled in place,
    except one whose buffers another parameter's `.grad` in `params` also views (autograd hands one gradient
    tensor to both operands of an add): that one is replaced by a scaled copy, so it is scaled once for each
    parameter. Parameters without a `.grad` are skipped. `vec4=False` runs the scalar kernels everywhere.
    """
    _check_max_norm(max_norm, "clip_grad_norm_")
    params = _parameter_list(params, "clip_grad_norm_")
    with_grad = [(i, p) for i, p in enumerate(params) if p.grad is not None]
    if not with_grad:
        device = params[0].device if params else None
        return Tensor.from_numpy(np.zeros((), np.float32), device)
    total_norm, scale = _norm_and_coefficient(with_grad, max_norm, vec4, "clip_grad_norm_")
    device = with_grad[0][1].device
    runtime = device.runtime
    shared = _shared_gradients([p for _, p in with_grad])
    for index, p in with_grad:
        if id(p) not in shared:
            for g in p.grad.parts:
                entry = vec4_entry("norm_clip", "clip_scale_inplace_naive", [g], vec4)
                grid, constants = elementwise_grid("norm_clip", entry, g.size, device)
                runtime.dispatch("norm_clip", entry, [scale, g], grid, {"n": g.size}, elem=p.elem,
                                 constants=constants, shapes=f"params[{index}] {p.shape}")
            continue
        with memory_kind("gradients"):
            out = Tensor.empty(p.shape, p.dtype, device)
        for g, o in zip(p.grad.parts, out.parts, strict=True):
            entry = vec4_entry("norm_clip", "clip_scale_naive", [g, o], vec4)
            grid, constants = elementwise_grid("norm_clip", entry, g.size, device)
            runtime.dispatch("norm_clip", entry, [g, scale, o], grid, {"n": g.size}, elem=p.elem,
                             constants=constants, shapes=f"params[{index}] {p.shape}")
        p.grad = out
    return total_norm
