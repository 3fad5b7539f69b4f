"""Timers for `wgrpo bench`: GPU timestamp queries when the adapter has them, else wall clock over one submit.

Owns: the timestamp query set, its resolve buffer and the tick period, and the "record R calls, submit once,
take the median of several trials" loop. Knows nothing about which kernels run: callers hand in a function that
records one call. Must not import `rl`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import wgpu

from wgrpo.engine.profiler import timestamp_period_ns
from wgrpo.engine.runtime import KernelError

# The runtime flushes when its uniform arena (4096 dispatch slots) fills, which would end a timed pass early.
MAX_DISPATCHES_PER_TRIAL = 3000
# The timer named when an op flushes while it is recorded (a read-back inside the op): host recording included.
INCLUSIVE_TIMER = "wall-clock-with-recording"


@dataclass
class Timing:
    """Seconds per call: `median` and `best` over trials, by the timer named in `timer`."""

    median: float
    best: float
    trials: list[float]
    wall_median: float  # wall clock over the submit and its completion, per call
    timer: str  # "gpu-timestamps", "wall-clock" or INCLUSIVE_TIMER
    repeat: int  # calls recorded per trial


class Timer:
    """Times recorded calls on one device; uses GPU timestamps when `use_timestamps` and the device has them."""

    def __init__(self, device, max_trials: int = 64, use_timestamps: bool = True, target_seconds: float = 0.1):
        self.device = device
        self.target_seconds = target_seconds  # how long one trial should take when the repeat count is automatic
        self.runtime = device.runtime
        self.max_trials = max_trials
        self.use_timestamps = bool(use_timestamps and device.has_timestamps)
        self.period_ns, self.period_source = timestamp_period_ns(device) if self.use_timestamps else (0.0, "")
        if self.use_timestamps:
            count = 2 * max_trials
            self._queries = device.wgpu.create_query_set(label="wgrpo bench timestamps", type="timestamp",
                                                         count=count)
            self._resolved = device.wgpu.create_buffer(
                label="wgrpo bench timestamps", size=8 * count,
                usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)

    @property
    def name(self) -> str:
        return "gpu-timestamps" if self.use_timestamps else "wall-clock"

    def pick_repeat(self, record_call: Callable[[], object], dispatches_per_call: int = 1) -> int:
        """Calls per trial so that a trial takes about `target_seconds`, from one timed call."""
        once = self.time(record_call, 1, 1).median
        most = max(1, MAX_DISPATCHES_PER_TRIAL // max(1, dispatches_per_call))
        return int(min(most, max(1, round(self.target_seconds / max(once, 1e-9)))))

    def time(self, record_call: Callable[[], object], repeat: int, trials: int, dispatches_per_call: int = 1) -> Timing:
        """Record `repeat` calls of `record_call` into one submit, `trials` times; seconds per call.

        `repeat=0` picks the count (see `pick_repeat`); the count used is `Timing.repeat`. GPU timestamps
        bracket one compute pass holding all `repeat` calls. `record_call` must only record dispatches (no
        read-back, no copy: a copy ends the timed pass and the rest would go untimed).
        """
        if not 1 <= trials <= self.max_trials:
            raise ValueError(f"trials must be in 1..{self.max_trials}, got {trials}")
        if repeat < 0:
            raise ValueError(f"repeat must be at least 1 (or 0 for automatic), got {repeat}")
        if repeat == 0:
            repeat = self.pick_repeat(record_call, dispatches_per_call)
        if repeat * dispatches_per_call > MAX_DISPATCHES_PER_TRIAL:
            raise ValueError(f"repeat {repeat} x {dispatches_per_call} dispatches per call exceeds the "
                             f"{MAX_DISPATCHES_PER_TRIAL} dispatches one timed submit can hold")
        runtime, stats = self.runtime, self.runtime.stats
        runtime.synchronize()  # setup (uploads, a warm-up call) is not part of any trial
        wall, inclusive, flushed = [], [], 0
        for t in range(trials):
            before = (stats.submits, stats.readbacks)
            begin = time.perf_counter()
            timed = self.use_timestamps and not flushed
            if timed:
                try:
                    with runtime.timed_pass(self._queries, 2 * t, 2 * t + 1):
                        for _ in range(repeat):
                            record_call()
                except KernelError:  # the op copies, submits or reads back while recorded: no single pass holds it
                    timed = False
                    flushed += 1
                    runtime.flush()
                    begin = time.perf_counter()
            if not timed:
                for _ in range(repeat):
                    record_call()
            flushed += (stats.submits, stats.readbacks) != before
            start = time.perf_counter()
            runtime.synchronize()
            end = time.perf_counter()
            wall.append((end - start) / repeat)
            inclusive.append((end - begin) / repeat)
        if flushed:
            # The op submitted or read back while being recorded, so neither the timed pass nor the last submit
            # holds all of its work: time recording, submits and waits together.
            return Timing(statistics.median(inclusive), min(inclusive), inclusive, statistics.median(inclusive),
                          INCLUSIVE_TIMER, repeat)
        if not self.use_timestamps:
            return Timing(statistics.median(wall), min(wall), wall, statistics.median(wall), self.name, repeat)
        runtime.encoder().resolve_query_set(self._queries, 0, 2 * trials, self._resolved, 0)
        runtime.flush()
        ticks = memoryview(self.device.wgpu.queue.read_buffer(self._resolved, 0, 16 * trials)).cast("Q")
        per_call = [(ticks[2 * t + 1] - ticks[2 * t]) * self.period_ns * 1e-9 / repeat for t in range(trials)]
        if any(p <= 0 for p in per_call):  # a driver that writes no real timestamps: fall back to the wall clock
            return Timing(statistics.median(wall), min(wall), wall, statistics.median(wall), "wall-clock", repeat)
        return Timing(statistics.median(per_call), min(per_call), per_call, statistics.median(wall), self.name,
                      repeat)


def time_host(fn: Callable[[], object], min_seconds: float = 0.05, max_runs: int = 50) -> float:
    """Best seconds per call of a host function (numpy), over at least `min_seconds` or `max_runs` runs."""
    fn()  # warm-up: allocation, BLAS thread start
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 3 or (spent < min_seconds and runs < max_runs):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return best
