"""The adapter's own peak, measured by the probe kernels of `kernels/probe.wgsl`: FMA throughput and copy bandwidth.

Owns: the probe dispatch code and the FLOP / byte formulas, kept here as constants that must match the header of
`kernels/probe.wgsl` (its entries `probe_fma` and `probe_copy`). Must not import `rl`.
"""

from __future__ import annotations

import math

import numpy as np

from engine.ops._common import MAX_WORKGROUPS, grid_1d, pack
from engine.tensor import Tensor
from tools.bench_timing import Timer

PROBE_FAMILY = "probe"

# probe_fma: each invocation runs `iterations` rounds of FMA_CHAINS independent vec4 FMAs (a vec4 FMA is 4
# multiplies and 4 adds: 8 FLOPs). FLOPs = invocations * iterations * FMA_CHAINS * FLOPS_PER_VEC4_FMA.
FMA_ENTRY = "probe_fma"
FMA_WORKGROUP = 64  # invocations per workgroup, @workgroup_size of probe_fma
FMA_CHAINS = 8  # vec4 FMAs per iteration
FLOPS_PER_VEC4_FMA = 8

# probe_copy: dst[i] = src[i] over n vec4<f32>. Bytes = n * 16 read + n * 16 written.
COPY_ENTRY = "probe_copy"
COPY_WORKGROUP = 256
VEC4_BYTES = 16


def probe_available() -> tuple[bool, str]:
    """Whether `kernels/probe.wgsl` exists with both entries; else the reason."""
    import kernels

    try:
        source = kernels.load(PROBE_FAMILY)
    except ValueError as error:
        return False, str(error)
    missing = [e for e in (FMA_ENTRY, COPY_ENTRY) if e not in source.entries]
    if missing:
        return False, f"kernels/{PROBE_FAMILY}.wgsl lacks the entries {missing}"
    return True, ""


def fma_flops(invocations: int, iterations: int) -> int:
    return invocations * iterations * FMA_CHAINS * FLOPS_PER_VEC4_FMA


def copy_bytes(n_vec4: int) -> int:
    return 2 * n_vec4 * VEC4_BYTES


def _fma_grid(workgroups: int) -> tuple[int, int]:
    x = min(workgroups, MAX_WORKGROUPS)
    return x, math.ceil(workgroups / x)


def run_fma_probe(device, timer: Timer, workgroups: int, iterations: int, repeat: int, trials: int) -> dict:
    """GFLOP/s of the FMA probe with `workgroups` x FMA_WORKGROUP invocations."""
    runtime = device.runtime
    invocations = workgroups * FMA_WORKGROUP
    out = Tensor.empty((invocations, 4), np.float32, device)  # the sums, so the compiler keeps the chains
    params = pack("IIII", invocations, iterations, 0, 0)
    grid = _fma_grid(workgroups)

    def call():
        runtime.dispatch(PROBE_FAMILY, FMA_ENTRY, [out], grid, params, shapes=f"{invocations} x {iterations}")

    call()
    values = out.numpy()
    if not np.all(np.isfinite(values)):
        raise RuntimeError(f"{FMA_ENTRY} wrote non-finite values: the probe kernel is broken")
    timing = timer.time(call, repeat, trials)
    flops = fma_flops(invocations, iterations)
    return {"entry": FMA_ENTRY, "invocations": invocations, "iterations": iterations, "flops": flops,
            "time_us": timing.median * 1e6, "gflops": flops / timing.median * 1e-9, "timer": timing.timer,
            "repeat": timing.repeat, "trials": trials}


def run_copy_probe(device, timer: Timer, n_vec4: int, repeat: int, trials: int) -> dict:
    """GB/s of the copy probe over `n_vec4` vec4<f32> elements."""
    runtime = device.runtime
    src_host = np.arange(n_vec4 * 4, dtype=np.float32).reshape(n_vec4, 4)
    src = Tensor.from_numpy(src_host, device)
    dst = Tensor.empty((n_vec4, 4), np.float32, device)
    params = pack("IIII", n_vec4, 0, 0, 0)
    grid = grid_1d(n_vec4, COPY_WORKGROUP)

    def call():
        runtime.dispatch(PROBE_FAMILY, COPY_ENTRY, [src, dst], grid, params, shapes=f"{n_vec4} vec4")

    call()
    if not np.array_equal(dst.numpy(), src_host):
        raise RuntimeError(f"{COPY_ENTRY} did not copy its input: the probe kernel is broken")
    timing = timer.time(call, repeat, trials)
    nbytes = copy_bytes(n_vec4)
    return {"entry": COPY_ENTRY, "elements": n_vec4, "bytes": nbytes, "time_us": timing.median * 1e6,
            "gbps": nbytes / timing.median * 1e-9, "timer": timing.timer, "repeat": timing.repeat, "trials": trials}
