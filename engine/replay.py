"""Replaying a recorded step: the dispatches of a decode step built once, then re-recorded with new Params.

A decode step runs the same kernels on the same buffers every time; only a few Params fields move with the step
(the cache column, the number of keys, the sampler's token counter), each by the same amount per step. Building
that step through the ops costs host time per dispatch (shape checks, tensors from the pool, Params packing,
bind-group lookups) that dominates small models. `StepReplay` records the dispatches of a few consecutive steps
as the ops issue them, checks that they are the same commands on the same buffers and that every Params word
moves by a constant per step, then replays later steps straight into the compute pass: pipeline, bind group,
Params extrapolated from the recordings, grid. Only integer fields may move (a float's bits can move by a
constant while its value does not). A step holding what a recording cannot reproduce (a host upload, a copy, a
read-back) or differing from the one before is recorded again, up to MAX_ATTEMPTS steps; a Params value that is
not linear in the step makes it give up. The caller then goes on building steps normally. CUDA graphs do the
same for the same reason. Linearity is judged from RECORDINGS steps: a step whose Params bend later (a
`min(length, window)`) must not be replayed, nor one whose written buffers (its outputs) change without
`close()`.

The buffers a replayed step binds are pinned in the pool (`BufferPool.pin`) so nothing else is handed them until
`close`. What the step changes on the host (a KV cache's `length`) the caller keeps up itself. Must not import
`rl`.
"""

from __future__ import annotations

import contextlib

import numpy as np

RECORDINGS = 3  # consecutive steps compared: two differences must agree for a Params word to count as linear
MAX_ATTEMPTS = 6  # steps recorded before giving up when the commands keep differing


class _Recorder:
    """What the runtime reports while one step is recorded (`Runtime.recorder`).

    `keys` say what makes two steps the same commands: pipelines, grids, Params sizes and bindings, where a
    buffer the step reads before it writes it (an input: weights, the KV cache, the last sampled ids) is named by
    itself and must be the same in every step, while one it writes first (an intermediate from the pool, or an
    output) is named by its order of appearance, since the pool may hand the same intermediates out in another
    order from one step to the next."""

    def __init__(self):
        self.commands: list[tuple] = []  # (pipeline, bind group, binds a uniform, grid)
        self.keys: list[tuple] = []
        self.params: list[bytes] = []
        self.blocks: list = []
        self.refused = ""
        self.integer_words: list[frozenset[int]] = []  # per dispatch: the Params words holding integers
        self._names: dict[int, tuple] = {}

    def dispatch(self, pipeline, bind_group, layout_id: int, slices, kinds, has_uniform: bool, data: bytes, grid,
                 blocks, layout=None) -> None:
        self.commands.append((pipeline, bind_group, has_uniform, grid))
        self.integer_words.append(_integer_words(layout))
        bindings = []
        for (number, buffer, offset, size), kind in zip(slices, kinds):
            name = self._names.get(id(buffer))
            if name is None:
                name = ("input", id(buffer)) if kind == "read" else ("written", len(self._names))
                self._names[id(buffer)] = name
            bindings.append((number, name, offset, size))
        self.keys.append((id(pipeline), layout_id, tuple(bindings), has_uniform, grid, len(data)))
        self.params.append(data)
        self.blocks.extend(blocks)

    def refuse(self, reason: str) -> None:
        self.refused = self.refused or reason


def _integer_words(layout) -> frozenset[int]:
    """The 32-bit words of a Params struct that hold u32/i32 fields (only those may move from step to step: a
    float's bits can move by a constant while its value does not)."""
    if layout is None:
        return frozenset()
    return frozenset(word for f in layout.fields if f.scalar in ("u32", "i32")
                     for word in range(f.offset // 4, (f.offset + f.size) // 4))


class StepReplay:
    """Records steps until their commands repeat, then replays them; see the module docstring.

    Use: `if replay.ready: replay.run(step)` else `with replay.record(step): <build the step through the ops>`;
    `close()` when the step's shapes or buffers change (or at the end) to free its buffers."""

    def __init__(self, runtime, what: str = "a decode step", enabled: bool = True):
        self.runtime, self.what, self.enabled = runtime, what, enabled  # disabled: records nothing, never ready
        self.slot = runtime.params_slot_bytes()
        self._takes: list[tuple[int, _Recorder]] = []
        self._attempts = 0
        self.failed = ""  # why replaying was given up, once it was
        self._commands = self._blocks = self._base = self._delta = None
        self._first = 0
        self.replayed = 0  # steps replayed so far

    @property
    def ready(self) -> bool:
        return self._commands is not None

    @property
    def dispatches(self) -> int:
        """Dispatches of one replayed step (0 before it is ready)."""
        return len(self._commands) if self._commands is not None else 0

    @contextlib.contextmanager
    def record(self, step: int):
        """Record the step built inside (it runs normally as well)."""
        if self.ready:
            raise RuntimeError("StepReplay.record: already replaying; call run()")
        recording = self.enabled and not self.failed and self.runtime.recorder is None
        recorder = _Recorder()
        if recording:
            self.runtime.recorder = recorder
        try:
            yield
        finally:
            if recording:
                self.runtime.recorder = None
        if recording:
            self._add(step, recorder)

    def _add(self, step: int, recorder: _Recorder) -> None:
        self._attempts += 1
        if not recorder.commands or len(recorder.commands) * self.slot > (1 << 20):
            self.failed = f"the step has {len(recorder.commands)} dispatches"
            return
        if recorder.refused:  # maybe once only (a first call that tunes or uploads a constant): record again
            self._takes, why = [], f"its steps held {recorder.refused}"
        elif self._takes and (self._takes[-1][0] + 1 != step or self._takes[-1][1].keys != recorder.keys):
            self._takes, why = [], "its commands differed from step to step"  # the first steps may: start over
        else:
            self._takes.append((step, recorder))
            why = "its commands differed from step to step"
        if len(self._takes) == RECORDINGS:
            self._build()
        elif self._attempts >= MAX_ATTEMPTS:
            self.failed = f"{why} over {self._attempts} steps"

    def _build(self) -> None:
        words = self.slot // 4
        takes = []
        for _, recorder in self._takes:
            padded = b"".join(data + bytes(self.slot - len(data)) for data in recorder.params)
            takes.append(np.frombuffer(padded, np.uint32).reshape(-1, words).astype(np.int64))
        deltas = [(later - earlier) & 0xFFFFFFFF for earlier, later in zip(takes, takes[1:])]
        movable = np.zeros_like(takes[0], dtype=bool)
        for row, integers in enumerate(self._takes[0][1].integer_words):
            movable[row, list(integers)] = True
        if any(not np.array_equal(deltas[0], d) for d in deltas[1:]) or np.any(deltas[0][~movable]):
            self.failed = "a Params value does not move by a constant per step (or a float moves)"
            self._takes = []
            return
        # the last recording's commands and buffers: its intermediates are the ones free in the pool now
        first_step = self._takes[0][0]
        last = self._takes[-1][1]
        self._commands, self._first = last.commands, first_step
        self._base, self._delta = takes[0], deltas[0]
        self._blocks = list({id(b): b for b in last.blocks}.values())
        self.runtime.pool.pin(self._blocks)
        self._takes = []

    def run(self, step: int) -> None:
        """Record step `step` from the recordings, with its Params extrapolated."""
        if not self.ready:
            raise RuntimeError(f"StepReplay.run: not ready ({self.failed or 'still recording'})")
        params = ((self._base + self._delta * (step - self._first)) & 0xFFFFFFFF).astype(np.uint32)
        self.runtime.replay(self._commands, params.tobytes(), self._blocks, f"{self.what} {step} (replayed)")
        self.replayed += 1

    def summary(self, batch: int) -> dict:
        """What this batch composition's replay did, for generation's stats."""
        return {"batch": batch, "replayed_steps": self.replayed, "dispatches_per_step": self.dispatches,
                "not_replayed": self.failed}

    def close(self) -> None:
        """Release the pinned buffers; the object records afresh afterwards."""
        if self._blocks is not None:
            self.runtime.pool.unpin(self._blocks)
        self._commands = self._blocks = self._base = self._delta = None
        self._takes, self._attempts, self.failed, self.replayed = [], 0, "", 0
