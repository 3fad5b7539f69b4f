"""A one-line progress bar for training loops, on stderr.

On a terminal the line is redrawn in place; otherwise (CI logs, files) a line is printed every `every` steps
so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


class Progress:
    def __init__(self, total: int, label: str, *, start: int = 0, stream: TextIO | None = None, every: int = 10,
                 width: int = 24):
        self.total, self.label, self.done = total, label, start
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = getattr(self.stream, "isatty", lambda: False)()
        self.every, self.width = max(1, every), width
        self._start, self._start_step = time.perf_counter(), start

    def update(self, step: int, **metrics) -> None:
        """Show that `step` of `total` is done, with the given metrics."""
        self.done = step
        if not self.interactive and step % self.every and step != self.total:
            return
        elapsed = time.perf_counter() - self._start
        rate = (step - self._start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else 0.0
        filled = int(self.width * step / max(1, self.total))
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        parts = " ".join(f"{k} {_format(v)}" for k, v in metrics.items())
        line = f"{self.label} {step:>{len(str(self.total))}}/{self.total} [{bar[:self.width]}] {parts} " \
               f"{_clock(elapsed)}<{_clock(eta)}"
        if self.interactive:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
