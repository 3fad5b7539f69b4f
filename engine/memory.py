"""Device bytes in use, by kind, now and at their peak.

Owns: the counters a runtime keeps (`DeviceMemory`) and the kind new tensors are counted as (`memory_kind`).
Every tensor's buffer is counted from its creation to its release under one of `KINDS`: a model's parameters are
`weights`, a parameter's `.grad` is `gradients`, optimizer moments are `optimizer`, the generation cache is
`kv_cache`, and everything else (activations, temporaries, uploads) is `activations`. The pool's free buffers are
not in use and not counted (`Runtime.pool.bytes_held` says what the pool holds in all). Must not import `rl`.
"""

from __future__ import annotations

import contextlib
import threading

from wgrpo.engine.errors import InputError

KINDS = ("weights", "gradients", "optimizer", "activations", "kv_cache")
DEFAULT_KIND = "activations"

_state = threading.local()


def current_kind() -> str:
    """The kind new tensors are counted as on this thread."""
    return getattr(_state, "kind", DEFAULT_KIND)


@contextlib.contextmanager
def memory_kind(kind: str):
    """Count the tensors created inside as `kind` (one of KINDS)."""
    if kind not in KINDS:
        raise ValueError(f"memory_kind: expected one of {KINDS}, got {kind!r}")
    previous = current_kind()
    _state.kind = kind
    try:
        yield
    finally:
        _state.kind = previous


_BYTE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str, what: str, minimum: int = 1) -> int:
    """Bytes written as digits with an optional K, M, G or T (KiB ... TiB): "16G", "1M", "17179869184", at least
    `minimum`; one InputError line naming `what` (an option or environment variable) otherwise."""
    text = str(text).strip()
    scale = _BYTE_UNITS.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) * scale < max(1, minimum):
        expected = "a positive byte count" if minimum <= 1 else f"a byte count of at least {minimum}"
        raise InputError(f"{what}={text!r}: expected {expected} such as 17179869184 or 16G (K, M, G and T mean "
                         f"KiB, MiB, GiB and TiB)")
    return int(digits) * scale


class DeviceMemory:
    """Bytes in use per kind, and the peaks: of each kind alone and of the total."""

    def __init__(self):
        self.current = dict.fromkeys(KINDS, 0)
        self.peak = dict.fromkeys(KINDS, 0)
        self.peak_total = 0

    @property
    def total(self) -> int:
        return sum(self.current.values())

    def allocate(self, kind: str, nbytes: int) -> None:
        self.current[kind] += nbytes
        self.peak[kind] = max(self.peak[kind], self.current[kind])
        self.peak_total = max(self.peak_total, self.total)

    def free(self, kind: str, nbytes: int) -> None:
        self.current[kind] -= nbytes

    def move(self, old: str, new: str, nbytes: int) -> None:
        """Count `nbytes` in use as `new` instead of `old` (an activation that became a parameter's gradient)."""
        if old != new:
            self.free(old, nbytes)
            self.allocate(new, nbytes)

    def reset_peak(self) -> None:
        """Start the peaks over from what is in use now (before a phase whose peak is wanted)."""
        self.peak = dict(self.current)
        self.peak_total = self.total

    def snapshot(self) -> dict:
        """{"current": {kind: bytes}, "peak": {kind: bytes}, "peak_total": bytes} for logs and reports."""
        return {"current": dict(self.current), "peak": dict(self.peak), "peak_total": self.peak_total}
