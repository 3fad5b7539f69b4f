"""Helpers every op module shares: argument checks, dispatch grids sized by the WGSL's own workgroup sizes, and
the one probe of whether a device's subgroups can run the subgroup kernels."""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.dtypes import dtype_name
from wgrpo.engine.errors import InputError
from wgrpo.engine.tensor import Tensor

MAX_WORKGROUPS = 65535  # WebGPU's guaranteed minimum of max_compute_workgroups_per_dimension


def as_tensor(value, name: str, like: Tensor | None = None) -> Tensor:
    """`value` as a Tensor on `like`'s device; numpy arrays are uploaded, anything else is refused."""
    if isinstance(value, Tensor):
        if like is not None and value.device is not like.device:
            raise ValueError(f"{name} is on {value.device.name} but the other operand is on {like.device.name}")
        return value
    if isinstance(value, np.ndarray):
        return Tensor.from_numpy(value, device=like.device if like is not None else None)
    raise TypeError(f"{name} must be an engine.Tensor or a numpy array, got {type(value).__name__}")


def check_float(t: Tensor, name: str, op: str) -> None:
    if t.elem not in ("f32", "f16"):
        raise TypeError(f"{op}: {name} must be float32 or float16, got {dtype_name(t.dtype)}")


def check_weight(t: Tensor, name: str, op: str) -> None:
    """A weight operand: float32, float16 or bfloat16 (the 16-bit ones read packed by kernels that widen them)."""
    if t.elem not in ("f32", "f16", "bf16"):
        raise TypeError(f"{op}: {name} must be float32, float16 or bfloat16, got {dtype_name(t.dtype)}")


def grid_1d(n: int, per_workgroup: int = 256) -> tuple[int, int]:
    """A 2-D grid of workgroups covering n items; kernels flatten it as (wg.y * nwg.x + wg.x) (the prelude's
    `workgroup_index`)."""
    groups = max(1, math.ceil(n / per_workgroup))
    x = min(groups, MAX_WORKGROUPS)
    return x, math.ceil(groups / x)


def invocations(kernel: str, entry: str) -> int:
    """Invocations per workgroup of `kernel`.`entry`, from its @workgroup_size in the WGSL."""
    return kernels.load(kernel).invocations(entry)


def flat_grid(kernel: str, entry: str, n: int) -> tuple[int, int]:
    """The grid of an entry that gives each of n items one invocation (the prelude's `flat_index`)."""
    return grid_1d(n, invocations(kernel, entry))


ROW_KERNELS = ("serial", "workgroup")
WORKGROUP_MIN_N = 1024  # rows at least this long get a workgroup each, by default


def row_kernel(variant: str | None, n: int, op: str, workgroup_min: int = WORKGROUP_MIN_N) -> str:
    """The variant of a per-row kernel: one invocation per row ("serial") for rows shorter than `workgroup_min`,
    one workgroup per row ("workgroup") for longer ones, where barriers pay off even on a CPU adapter. A given
    `variant` (tests force one) is checked instead."""
    variant = variant or ("workgroup" if n >= workgroup_min else "serial")
    if variant not in ROW_KERNELS:
        raise ValueError(f"{op}: variant must be one of {ROW_KERNELS} or None, got {variant!r}")
    return variant


def row_grid(kernel: str, entry: str, rows: int) -> tuple[int, int]:
    """The grid of a per-row entry (see `row_kernel`; its name ends in the variant) over `rows` rows: a `*_serial`
    entry gives each row one invocation, a `*_workgroup` entry one workgroup."""
    if entry.endswith("_workgroup"):
        return grid_1d(rows, 1)
    assert entry.endswith("_serial"), f"{kernel}.{entry} is not a per-row entry"
    return flat_grid(kernel, entry, rows)


SUBGROUP_LANES = 8  # invocations per workgroup of the subgroup kernels: one subgroup's first 8 lanes
_SUBGROUP_LANES_OK: dict[int, bool] = {}  # id(device) -> subgroup_lanes_ok's probe result


def subgroup_lanes_ok(device) -> bool:
    """Whether a workgroup of 8 invocations is the first 8 lanes of one subgroup on `device`, as every subgroup
    kernel (attention, decode, sampling) requires; not where subgroups are narrower, e.g. lavapipe on a CPU without
    AVX. One probe dispatch (`probe.probe_subgroup_lanes`) per device, its answer kept; needs the subgroup feature."""
    ok = _SUBGROUP_LANES_OK.get(id(device))
    if ok is None:
        flags = Tensor.empty((SUBGROUP_LANES,), np.uint32, device)
        device.runtime.dispatch("probe", "probe_subgroup_lanes", [flags], (1, 1, 1), {"n": 1, "iters": 0, "seed": 0.0})
        ok = _SUBGROUP_LANES_OK[id(device)] = bool(np.all(flags.numpy() == 1))
    return ok


def subgroup_refusal(device) -> str | None:
    """Why the subgroup kernels cannot run on `device`, in words, or None when they can."""
    if not device.has_subgroups:
        return f"it needs the subgroup feature, which {device.name} lacks"
    if not subgroup_lanes_ok(device):
        return f"its workgroups of 8 invocations are not 8 lanes of one subgroup on {device.name}"
    return None


def starts_on_quads(*tensors: Tensor) -> bool:
    """Whether every row block of every tensor is bound at a 16-byte boundary, as an array of vec4s must be (whole
    tensors and row views always are: their offsets keep the adapter's storage offset alignment, 256 bytes here);
    the vec4 entries also need their own sizes in whole quads, which each op checks."""
    return all(part.binding()[1] % 16 == 0 for t in tensors for part in t.parts)


VEC4_VARIANTS = ("scalar", "vec4")


def vec4_variant(variant: str | None, fits: bool, op: str, needs: str) -> str:
    """The entry kind of an op with a scalar spec and a vec4 twin: "vec4" where it `fits`, else "scalar". A given
    `variant` (tests force one) is checked instead: an unknown name, or "vec4" where it does not fit, is refused,
    the latter naming what it `needs`."""
    if variant is None:
        return "vec4" if fits else "scalar"
    if variant not in VEC4_VARIANTS:
        raise InputError(f"{op}: variant must be one of {VEC4_VARIANTS} or None, got {variant!r}")
    if variant == "vec4" and not fits:
        raise InputError(f"{op}: the vec4 variant needs {needs}")
    return variant
