"""The training loops' progress bar, on stderr: a thin wrapper over tqdm.

Owns: `Progress`, the step counter the trainers drive with `update(step, **metrics)`; the metrics are shown as
tqdm's postfix in its compact number format. On a terminal tqdm redraws the bar in place; on anything else (CI
logs, files) tqdm draws nothing itself and a plain line is printed every `every` steps, so logs hold no
carriage returns. Imports nothing of the engine.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """Progress of `total` steps under `label`, resuming at `start`; also a context manager that closes it."""

    def __init__(self, total: int, label: str, *, start: int = 0, stream: TextIO | None = None, every: int = 10):
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = max(1, every)
        self._printed = start  # the step of the last plain line (non-interactive only)
        # Off a terminal tqdm must never draw (it redraws with "\r"): an infinite delay keeps it silent while
        # it still counts steps and times them, and `_print_line` writes its formatted state instead. No
        # dynamic_ncols: tqdm then draws nothing at all on a terminal that reports zero columns.
        self._bar = tqdm(total=total, initial=start, desc=label, unit="step", file=self.stream, leave=True,
                         ascii=None if self.interactive else True,
                         delay=0 if self.interactive else float("inf"))

    @property
    def done(self) -> int:
        """The last step reported."""
        return self._bar.n

    def update(self, step: int, **metrics) -> None:
        """Show that `step` of the total is done, with the given metrics (name -> number or text)."""
        self._bar.set_postfix(metrics, refresh=False)  # a dict, not **kwargs: keeps the caller's order
        self._bar.update(step - self._bar.n)
        if not self.interactive and (step % self.every == 0 or step == self._bar.total):
            self._print_line()

    def close(self) -> None:
        """Finish the bar; off a terminal, print the last state if its line was skipped. Safe to call twice."""
        if not self.interactive and self._bar.n != self._printed:
            self._print_line()
        self._bar.close()

    def _print_line(self) -> None:
        self.stream.write(f"{self._bar}\n")
        self.stream.flush()
        self._printed = self._bar.n

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
