"""A run's `metrics.jsonl`: one JSON object per line, each with its integer "step", appended as training goes.

Owns: reading a log (`read_rows`, the one reader of the format: strict for the trainers, lenient for a view
such as the curves), and opening the log of a run that writes from step `first_step` on, made consistent with
where the run starts: rows of steps >= first_step are dropped (written after the checkpoint a run resumes from,
by the run that was killed, or by an earlier run started afresh in the same directory), and a torn last line
(a write cut short by a kill) is removed; the file is then rewritten atomically (a temp file renamed over it,
with the log's own permissions) with the rows that are kept, and the temp files of a rewrite that a kill cut
short are removed. Any other line that is not a row is an `InputError` naming the file and line. Both trainers
log through `MetricsLog`. Pure Python: the engine's InputError is imported only when one is raised
(`rl.errors.input_error`), so that the curves read a log without loading the engine.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgrpo.rl.errors import input_error

METRICS_FILE = "metrics.jsonl"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


@dataclass
class Repair:
    """What opening a log changed."""
    dropped_rows: int = 0  # rows of steps >= first_step
    torn_line: bool = False  # a last line cut short, removed
    removed_temp_files: int = 0  # left by a rewrite that a kill cut short

    def describe(self, path: Path, first_step: int) -> str | None:
        """One line for the run's log, or None when the file was left as it was."""
        done = []
        if self.dropped_rows:
            done.append(f"dropped {self.dropped_rows} rows of steps >= {first_step} (this run writes them again)")
        if self.torn_line:
            done.append("removed a torn last line")
        if self.removed_temp_files:
            done.append(f"removed {self.removed_temp_files} temp files of an interrupted rewrite "
                        f"({_temp_prefix(path)}*)")
        return f"{path}: {'; '.join(done)}" if done else None


def _row(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return record if isinstance(step, int) and not isinstance(step, bool) else None


def read_rows(path: str | Path, *, strict: bool = True) -> list[dict]:
    """The rows of a log, in order ([] when there is no log yet). A torn last line (a row being written by a
    running trainer, or cut short by a kill) is always left out. Any other line that is not a row (a JSON object
    with an integer "step"; blank lines aside) is an InputError naming the file and line when `strict`, and is
    skipped otherwise: for a reader that only shows the log, such as the curves."""
    return _parse(Path(path), strict)[0]


def _parse(path: Path, strict: bool = True) -> tuple[list[dict], list[str], bool, bool]:
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
            if not strict:
                continue
            raise input_error(f"{path}:{number}: not a metrics row (a JSON object with an integer \"step\"); "
                              f"fix or remove the line")
        rows.append(record)
        kept.append(line)
    return rows, kept, torn, ends_with_newline or not text


def _write_atomically(path: Path, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
    try:
        os.fchmod(fd, stat.S_IMODE(path.stat().st_mode))  # the log's own, not mkstemp's 0o600
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
    removed = _remove_temp_files(path)
    rows, lines, torn, ends_with_newline = _parse(path)
    kept = [line for row, line in zip(rows, lines) if row["step"] < first_step]
    repair = Repair(dropped_rows=len(lines) - len(kept), torn_line=torn, removed_temp_files=removed)
    if repair.dropped_rows or repair.torn_line or not ends_with_newline:  # the next row must start a line
        _write_atomically(path, kept)
    return repair


def _remove_temp_files(path: Path) -> int:
    """Remove the temp files that rewrites of `path` killed before their rename left beside it; how many.
    Like `recover_checkpoints`, for a run's start only: a rewrite in progress looks the same as a killed one."""
    if not path.parent.is_dir():
        return 0
    leftovers = [entry for entry in path.parent.iterdir()
                 if entry.name.startswith(_temp_prefix(path)) and entry.is_file() and not entry.is_symlink()]
    for entry in leftovers:
        entry.unlink(missing_ok=True)
    return len(leftovers)


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
