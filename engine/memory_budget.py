"""What a device can hold, and the check that a run's estimated memory fits it before long work starts.

Owns: `device_memory_budget` (where that can be known; `$WGRPO_DEVICE_MEMORY` overrides it), `parse_memory`,
`host_memory_available` and `check_fits`. Estimates are `engine.memory_estimate`'s. Must not import `rl`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from wgrpo.engine.errors import InputError
from wgrpo.engine.memory import parse_bytes
from wgrpo.engine.memory_estimate import MemoryEstimate, format_bytes

MEMORY_VAR = "WGRPO_DEVICE_MEMORY"  # bytes the device may hold, e.g. 16G (K, M, G, T: KiB ... TiB)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes the device can hold, and where that figure came from (for messages)."""

    nbytes: int
    source: str


def parse_memory(text: str, what: str = f"${MEMORY_VAR}") -> int:
    """Bytes the device can hold, as written in an option or `$WGRPO_DEVICE_MEMORY` ("16G")."""
    return parse_bytes(text, what)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _number(text: str) -> int | None:
    """The number a /proc or cgroup field starts with; None for none (cgroup v2 writes "max" for no limit)."""
    fields = text.split()
    return int(fields[0]) if fields and fields[0].isdigit() else None


def host_memory_available(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process may still take from the host: MemAvailable, or less where a memory cgroup (v2
    memory.max, v1 memory.limit_in_bytes, of this process's group or an ancestor) allows less."""
    meminfo = dict(line.partition(":")[::2] for line in _read(proc / "meminfo").splitlines())
    kilobytes = _number(meminfo.get("MemAvailable", ""))
    known = [] if kilobytes is None else [kilobytes * 1024]
    groups = [line.split(":", 2) for line in _read(proc / "self" / "cgroup").splitlines()]
    for _, controllers, path in [g for g in groups if len(g) == 3] or [["", "", "/"], ["", "memory", "/"]]:
        if controllers and "memory" not in controllers.split(","):
            continue
        base, files = (cgroup, ("memory.max", "memory.current")) if not controllers else \
            (cgroup / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes"))
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts) + 1):
            folder = base.joinpath(*parts[:depth])
            limit, usage = _number(_read(folder / files[0])), _number(_read(folder / files[1]))
            if limit is not None and limit < 1 << 60:  # v1 writes a huge number for no limit
                known.append(max(0, limit - (usage or 0)))
    return min(known) if known else None


def device_memory_budget(device, override: str | None = None) -> MemoryBudget | None:
    """What `device` (an `engine.device.Device`) can hold, or None when that cannot be known.

    `override` (an option's text) or else `$WGRPO_DEVICE_MEMORY` ("16G") decides when set. wgpu reports no
    memory size (wgpu-py 0.32: neither the adapter's info, its limits nor its features say one), so a hardware
    adapter's budget is unknown. A CPU adapter (lavapipe) keeps its buffers in host memory: its budget is what
    the host still has free (`host_memory_available`) plus what the runtime's buffer pool already holds."""
    text = str(override if override is not None else os.environ.get(MEMORY_VAR, "")).strip()
    if text:
        what = "device memory" if override is not None else f"${MEMORY_VAR}"
        return MemoryBudget(parse_memory(text, what), f"{what}={text}")
    available = host_memory_available() if device.is_software else None
    if available is None:
        return None
    held = device.runtime.pool.bytes_held if "runtime" in vars(device) else 0  # made on first use, not to ask
    return MemoryBudget(available + held, f"the host memory free to the CPU adapter {device.name}")


def check_fits(estimate: MemoryEstimate, budget: MemoryBudget | int | None, advice: str | None = None) -> None:
    """Raise InputError, one line naming the estimate by kind, the budget and what to change, when
    `estimate.total` is over `budget` (nothing to check when the budget is unknown, None), or naming the
    activation when one is over the binding limit. `advice` replaces the estimate's own (to name the options
    that change it)."""
    if estimate.split_activation is not None:
        shape = estimate.split_activation
        raise InputError(f"{estimate.what}: an activation of shape {shape} (float32, {format_bytes(4 * math.prod(shape))}) "
                         f"is over this adapter's max_storage_buffer_binding_size of "
                         f"{format_bytes(estimate.max_binding_bytes)}, and only weights, gradients and optimizer "
                         f"moments may be held in row blocks; use {advice or estimate.advice}")
    if budget is None:
        return
    if not isinstance(budget, MemoryBudget):
        budget = MemoryBudget(int(budget), "the budget given")
    if estimate.total <= budget.nbytes:
        return
    raise InputError(f"estimated device memory for {estimate.what}: {format_bytes(estimate.total)} at peak "
                     f"({estimate.by_kind()}), over the {format_bytes(budget.nbytes)} this device can hold "
                     f"({budget.source}); use {advice or estimate.advice}, or set ${MEMORY_VAR} if it holds more")
