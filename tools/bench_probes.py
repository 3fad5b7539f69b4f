"""The adapter's own peak, measured by the probe kernels of `kernels/probe.wgsl`: FMA throughput and copy bandwidth.

Owns: the probe dispatch code and the FLOP / byte formulas, kept here as constants that must match the header of
`kernels/probe.wgsl` (its entries `probe_fma` and `probe_copy`; `tests/tools/test_bench.py` compares them); the
workgroup size comes from the kernel itself, through the registry. Must not import `rl`.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo import kernels
from wgrpo.engine.ops._common import MAX_WORKGROUPS
from wgrpo.engine.tensor import Tensor
from wgrpo.tools.bench_timing import Timer

PROBE_FAMILY = "probe"

# probe_fma: each of n invocations runs `iters` trips of FMA_VEC4_PER_ITER vec4 FMAs (8 accumulators, 4 FMAs
# each); a vec4 FMA is 4 lanes x 2 FLOPs. FLOPs per dispatch = n * iters * 32 * 4 * 2 = 256 * n * iters.
# Grid (n / workgroup size, 1, 1), at most 65535 workgroups. Params: n, iters, seed.
FMA_ENTRY = "probe_fma"
FMA_VEC4_PER_ITER = 32
FLOPS_PER_VEC4_FMA = 8
FMA_SEED = 0.5  # any value in [0, 1)

# probe_copy: dst[i] = src[i] over n vec4<f32>, grid-stride. Bytes per dispatch = 16 read + 16 written per vec4.
# Grid (min(ceil(n / workgroup size), 65535), 1, 1). Params: n (iters and seed unused).
COPY_ENTRY = "probe_copy"
VEC4_BYTES = 16


def probe_workgroup(entry: str) -> int:
    """Invocations per workgroup of a probe entry (the `PROBE_X` override's default, which the bench keeps)."""
    return kernels.load(PROBE_FAMILY).invocations(entry)


def probe_available() -> tuple[bool, str]:
    """Whether `kernels/probe.wgsl` exists with both entries; else the reason."""
    try:
        source = kernels.load(PROBE_FAMILY)
    except ValueError as error:
        return False, str(error)
    missing = [e for e in (FMA_ENTRY, COPY_ENTRY) if e not in source.entries]
    if missing:
        return False, f"kernels/{PROBE_FAMILY}.wgsl lacks the entries {missing}"
    return True, ""


def fma_flops(invocations: int, iterations: int) -> int:
    return invocations * iterations * FMA_VEC4_PER_ITER * FLOPS_PER_VEC4_FMA


def copy_bytes(n_vec4: int) -> int:
    return 2 * n_vec4 * VEC4_BYTES


def _storage(entry: str, buffers: dict) -> list:
    """The tensors for `entry`'s storage bindings, in binding order (the registry drops the ones it never uses)."""
    return [buffers[b.name] for b in kernels.load(PROBE_FAMILY).bindings(entry) if b.kind != "uniform"]


def run_fma_probe(device, timer: Timer, workgroups: int, iterations: int, repeat: int, trials: int) -> dict:
    """GFLOP/s of the FMA probe with `workgroups` x its workgroup size invocations."""
    runtime = device.runtime
    workgroups = min(workgroups, MAX_WORKGROUPS)
    invocations = workgroups * probe_workgroup(FMA_ENTRY)
    dst = Tensor.empty((invocations, 4), np.float32, device)  # the sums, so the compiler keeps the chains
    buffers = _storage(FMA_ENTRY, {"src": Tensor.empty((1, 4), np.float32, device), "dst": dst})
    params = {"n": invocations, "iters": iterations, "seed": FMA_SEED}

    def call():
        runtime.dispatch(PROBE_FAMILY, FMA_ENTRY, buffers, (workgroups, 1, 1), params,
                         shapes=f"{invocations} invocations x {iterations} iters")

    call()
    if not np.all(np.isfinite(dst.numpy())):
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
    buffers = _storage(COPY_ENTRY, {"src": src, "dst": dst})
    params = {"n": n_vec4, "iters": 0, "seed": 0.0}
    grid = (min(math.ceil(n_vec4 / probe_workgroup(COPY_ENTRY)), MAX_WORKGROUPS), 1, 1)

    def call():
        runtime.dispatch(PROBE_FAMILY, COPY_ENTRY, buffers, grid, params, shapes=f"{n_vec4} vec4")

    call()
    if not np.array_equal(dst.numpy(), src_host):
        raise RuntimeError(f"{COPY_ENTRY} did not copy its input: the probe kernel is broken")
    timing = timer.time(call, repeat, trials)
    nbytes = copy_bytes(n_vec4)
    return {"entry": COPY_ENTRY, "elements": n_vec4, "bytes": nbytes, "time_us": timing.median * 1e6,
            "gbps": nbytes / timing.median * 1e-9, "timer": timing.timer, "repeat": timing.repeat, "trials": trials}
