"""A run's `metrics.jsonl`: one JSON object per line, each with its integer "step", appended as training goes.

Owns: opening the log of a run that writes from step `first_step` on, made consistent with where the run
starts: rows of steps >= first_step are dropped (written after the checkpoint a run resumes from, by the run
that was killed, or by an earlier run started afresh in the same directory), and a torn last line (a write cut
short by a kill) is removed; the file is then rewritten atomically (a temp file renamed over it) with the rows
that are kept. Any other line that is not a row is an `InputError` naming the file and line. Both trainers
log through `MetricsLog`; `read_rows` reads a log back. Pure Python; no engine import.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgrpo.engine import InputError

METRICS_FILE = "metrics.jsonl"


@dataclass
class Repair:
    """What opening a log changed."""
    dropped_rows: int = 0  # rows of steps >= first_step
    torn_line: bool = False  # a last line cut short, removed

    def describe(self, path: Path, first_step: int) -> str | None:
        """One line for the run's log, or None when the file was left as it was."""
        done = []
        if self.dropped_rows:
            done.append(f"dropped {self.dropped_rows} rows of steps >= {first_step} (this run writes them again)")
        if self.torn_line:
            done.append("removed a torn last line")
        return f"{path}: {'; '.join(done)}" if done else None


def _row(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return record if isinstance(step, int) and not isinstance(step, bool) else None


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a log, in order; a torn last line is left out, any other bad line is an InputError."""
    return _parse(Path(path))[0]


def _parse(path: Path) -> tuple[list[dict], list[str], bool, bool]:
    """(rows, their lines, whether the last line was torn, whether the file ends with a newline or is empty)."""
    if not path.is_file():
        return [], [], False, True
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    rows, kept, torn = [], [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = _row(line)
        if record is None:
            if number == len(lines) and not ends_with_newline:
                torn = True  # the write of the last row was cut short
                continue
            raise InputError(f"{path}:{number}: not a metrics row (a JSON object with an integer \"step\"); "
                             f"fix or remove the line")
        rows.append(record)
        kept.append(line)
    return rows, kept, torn, ends_with_newline or not text


def _write_atomically(path: Path, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare(path: str | Path, first_step: int) -> Repair:
    """Make the log at `path` fit a run that writes steps >= first_step (see the module docstring)."""
    path = Path(path)
    rows, lines, torn, ends_with_newline = _parse(path)
    kept = [line for row, line in zip(rows, lines) if row["step"] < first_step]
    repair = Repair(dropped_rows=len(lines) - len(kept), torn_line=torn)
    if repair.dropped_rows or repair.torn_line or not ends_with_newline:  # the next row must start a line
        _write_atomically(path, kept)
    return repair


class MetricsLog:
    """The log of a run writing from `first_step` on: prepared on opening, then one row per `append`.

    Each row is flushed as it is written, so a killed run loses at most the row being written."""

    def __init__(self, path: str | Path, first_step: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repair = prepare(self.path, first_step)
        self.note = self.repair.describe(self.path, first_step)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
