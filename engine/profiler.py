"""GPU time per kernel: every dispatch timed by timestamp queries, grouped by kernel entry and by shape.

Owns: `KernelProfile` (the query set, its resolve buffer and the totals), `timestamp_period_ns`, and
`profile(device)`, the context manager that turns profiling on for a device's runtime. While a profile is on, the
runtime records each dispatch in a compute pass of its own whose beginning and end write timestamps (the
`timestamp-query` feature), and resolves them at each submit; the figures are the GPU's own, without host time.
Splitting passes costs a little on some drivers, so a profiled run is slower than an unprofiled one; the shares
are what to read. Replayed decode steps are timed dispatch by dispatch too, named by their pipelines with the
shapes "replayed". Autotuning pauses the profile (`paused`), so candidates are timed as they run. Must not import
`rl`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import wgpu

from wgrpo.engine.errors import InputError

QUERY_PAIRS = 4096  # dispatches timed per submit, as many as the runtime's Params arena holds; it flushes then
PAIRS_PER_SET = 2048  # 4096 queries, WebGPU's largest query set: two sets hold a submit's timestamps


def timestamp_period_ns(device) -> tuple[float, str]:
    """Nanoseconds per timestamp tick, and where that number came from.

    wgpu-py 0.32 does not wrap `wgpuQueueGetTimestampPeriod`; it is called through wgpu-native's FFI when
    present. WebGPU defines resolved timestamps in nanoseconds, so 1.0 is the fallback.
    """
    try:
        from wgpu.backends.wgpu_native._ffi import lib

        period = float(lib.wgpuQueueGetTimestampPeriod(device.wgpu.queue._internal))
        if period > 0:
            return period, "wgpuQueueGetTimestampPeriod (wgpu-native)"
    except Exception:  # another backend, or a wgpu-py without the private FFI handle
        pass
    return 1.0, "assumed 1 ns per tick (no timestamp period exposed by wgpu-py)"


@dataclass
class KernelTime:
    """Dispatches of one kernel entry (or one entry on one shape) and their GPU seconds."""

    calls: int = 0
    seconds: float = 0.0


@dataclass
class KernelProfile:
    """The GPU seconds of every dispatch recorded while it was on, by `kernel.entry` and by entry and shapes."""

    device: object
    by_entry: dict[str, KernelTime] = field(default_factory=dict)
    by_shape: dict[tuple[str, str], KernelTime] = field(default_factory=dict)
    period_ns: float = 1.0
    _pending: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        self.period_ns = timestamp_period_ns(self.device)[0]
        sets = -(-QUERY_PAIRS // PAIRS_PER_SET)
        self._queries = [self.device.wgpu.create_query_set(label="wgrpo kernel profile", type="timestamp",
                                                           count=2 * PAIRS_PER_SET) for _ in range(sets)]
        self._resolved = self.device.wgpu.create_buffer(
            label="wgrpo kernel profile", size=16 * PAIRS_PER_SET * sets,
            usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)

    @property
    def room(self) -> int:
        """Dispatches this submit can still time (the runtime flushes before it runs out)."""
        return QUERY_PAIRS - len(self._pending)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.by_entry.values())

    @property
    def calls(self) -> int:
        return sum(t.calls for t in self.by_entry.values())

    def timestamp_writes(self, entry: str, shapes: str) -> dict:
        """The `timestamp_writes` of the pass holding the next dispatch, of `entry` on `shapes`."""
        pair = len(self._pending)
        self._pending.append((entry, shapes))
        queries, index = self._queries[pair // PAIRS_PER_SET], 2 * (pair % PAIRS_PER_SET)
        return {"query_set": queries, "beginning_of_pass_write_index": index, "end_of_pass_write_index": index + 1}

    def resolve(self, encoder) -> int:
        """Record the resolve of this submit's timestamps into `encoder`; returns the dispatches they time."""
        for first in range(0, len(self._pending), PAIRS_PER_SET):
            pairs = min(PAIRS_PER_SET, len(self._pending) - first)
            encoder.resolve_query_set(self._queries[first // PAIRS_PER_SET], 0, 2 * pairs, self._resolved, 16 * first)
        return len(self._pending)

    def collect(self, queue) -> None:
        """After the submit holding `resolve`: read its timestamps back and add them up."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        ticks = memoryview(queue.read_buffer(self._resolved, 0, 16 * len(pending))).cast("Q")
        for pair, (entry, shapes) in enumerate(pending):
            seconds = max(0, ticks[2 * pair + 1] - ticks[2 * pair]) * self.period_ns * 1e-9
            for table, key in ((self.by_entry, entry), (self.by_shape, (entry, shapes))):
                row = table.setdefault(key, KernelTime())
                row.calls += 1
                row.seconds += seconds

    def clear(self) -> None:
        self.by_entry.clear()
        self.by_shape.clear()

    def rows(self, by_shape: bool = False, top: int | None = None) -> list[dict]:
        """The table, longest first: name (and shapes), calls, seconds, share of the profiled GPU time."""
        table = self.by_shape if by_shape else self.by_entry
        total = self.seconds or 1.0
        rows = []
        for key, t in sorted(table.items(), key=lambda item: -item[1].seconds):
            entry, shapes = key if by_shape else (key, "")
            rows.append({"kernel": entry, **({"shapes": shapes} if by_shape else {}), "calls": t.calls,
                         "seconds": t.seconds, "share": t.seconds / total})
        return rows[:top] if top else rows


@contextlib.contextmanager
def profile(device):
    """Time every dispatch on `device` until the block ends; yields the `KernelProfile` (complete after the
    block, whose end waits for the GPU). Needs the adapter's `timestamp-query` feature."""
    if not device.has_timestamps:
        raise InputError(f"kernel profiling needs the timestamp-query feature, which {device.name} lacks")
    runtime = device.runtime
    if runtime.profiler is not None:
        raise InputError("a kernel profile is already on for this device; profiles do not nest")
    runtime.synchronize()  # work recorded before the block is not part of it
    result = KernelProfile(device)
    runtime.profiler = result
    try:
        yield result
        runtime.synchronize()
    finally:
        runtime.profiler = None


@contextlib.contextmanager
def paused(runtime):
    """No profile inside the block (autotuning times its candidates as they really run); the profile that was on
    goes on after it, without the block's dispatches."""
    profiler = runtime.profiler
    if profiler is None:
        yield
        return
    runtime.synchronize()  # what the profile holds so far is resolved and counted
    runtime.profiler = None
    try:
        yield
    finally:
        runtime.synchronize()
        runtime.profiler = profiler
