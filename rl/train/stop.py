"""Stopping a training run on SIGINT (Ctrl-C) or SIGTERM without losing it.

Owns: the handlers a trainer installs while it trains (`StopOnSignal`) and the command line that resumes from
the checkpoint it saves on stopping (`resume_command`). A first signal asks the loop to stop at the end of the
step in progress; a second one abandons that step where the loop marks it safe (`abandonable()` sections:
sampling and evaluation, which change no state), never inside an update or a save, which always finish, so a
stop never leaves a half-applied update or a half-written checkpoint. The trainer then saves, prints the resume
command and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell reports a
process that the signal ended. Pure Python; no engine import.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import Any, Mapping

from wgrpo.rl.train.fields import field_default, option_flag

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(BaseException):
    """Raised by a second signal inside an `abandonable()` section. A BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way swallows it."""


class _Abandonable:
    def __init__(self, owner: "StopOnSignal"):
        self.owner = owner

    def __enter__(self) -> None:
        if self.owner.signals >= 2:  # the second signal came while the loop could not stop
            raise StopNow
        self.owner._abandonable += 1

    def __exit__(self, *exc) -> None:
        self.owner._abandonable -= 1


class StopOnSignal:
    """While active (a `with` block), SIGINT and SIGTERM request a stop instead of ending the process.

    `requested` says a signal came; `exit_code` is 128 + the first signal's number. The previous handlers come
    back when the block ends. Outside the main thread (where Python cannot install handlers) and for a signal
    the process was started with ignored (`nohup`, a background job of a script), nothing is installed."""

    def __init__(self, label: str = "wgrpo", can_abandon: bool = True):
        self.label, self.can_abandon = label, can_abandon
        self.signum: int | None = None
        self.signals = 0
        self._abandonable = 0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        if self.signum is None:
            raise RuntimeError("no stop was requested")
        return 128 + int(self.signum)

    def abandonable(self) -> _Abandonable:
        """A section that a second signal may abandon by raising `StopNow` (it must change no state)."""
        return _Abandonable(self)

    def _say(self, text: str) -> None:
        # os.write, not print: a handler can interrupt a print to stderr (the progress bar), and a buffered
        # stream refuses a reentrant write
        os.write(2, f"\n{self.label}: {text}\n".encode())

    def _handle(self, signum, frame) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            again = " (send it again to abandon the step)" if self.can_abandon else ""
            self._say(f"{name}: stopping after this step, then saving a checkpoint{again}")
        elif self.signals == 2 and self.can_abandon:
            if self._abandonable:
                self._say(f"{name}: abandoning the step in progress; saving the last finished one")
                raise StopNow
            self._say(f"{name}: stopping as soon as the update or save in progress is done")

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def changed_options(config, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of the dataclass `config` whose values differ from their defaults, by name, but those in
    `skip`: the options a command line must repeat to describe the same run."""
    changed = {}
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        default = field_default(f)
        value = getattr(config, f.name)
        if not (value == default and type(value) is type(default)):
            changed[f.name] = value
    return changed


def resume_command(command: str, checkpoint: str | Path, options: Mapping[str, Any] | None = None) -> str:
    """The shell command that continues a run from `checkpoint`: `command --resume CHECKPOINT`, then `options`
    (field name -> value) as flags: `--name value`, `--name=value` for a value starting with '-', `--name` or
    `--no-name` for a boolean."""
    words = shlex.split(command) + ["--resume", str(checkpoint)]
    for name, value in (options or {}).items():
        flag = option_flag(name)
        if isinstance(value, bool):
            words.append(flag if value else option_flag("no_" + name))
            continue
        text = repr(value) if isinstance(value, float) else str(value)
        # a separate word starting with "-" would read as an option
        words.extend([f"{flag}={text}"] if text.startswith("-") else [flag, text])
    return " ".join(shlex.quote(word) for word in words)
