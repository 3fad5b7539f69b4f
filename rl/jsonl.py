"""JSONL dataset reading with errors that name the file, the line and the field.

Owns: `read_jsonl` (one JSON object per non-blank line) and `field` (a required field under any of several
accepted names). Pure Python; no engine import.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["Record", "read_jsonl", "field"]


@dataclass(frozen=True)
class Record:
    path: str
    line: int  # 1-based line number in the file
    data: dict

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def read_jsonl(path: str | os.PathLike) -> list[Record]:
    """Every non-blank line of `path` as a `Record`; ValueError naming file and line for invalid JSON or a
    line that is not an object; FileNotFoundError / ValueError for a missing or empty file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset file {path!r} does not exist")
    records = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: not UTF-8 text ({error})") from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: invalid JSON: {error.msg} at column {error.colno}") from None
            if not isinstance(data, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
            records.append(Record(path, number, data))
    if not records:
        raise ValueError(f"dataset file {path!r} has no records")
    return records


def field(record: Record, names: Sequence[str], *, kind: str | None = None, types: tuple = (str,)) -> Any:
    """The value of the first of `names` present in `record` (not None, not blank). ValueError naming the file,
    the line, the missing field and the accepted names; or naming the field if its value has the wrong type."""
    label = kind or names[0]
    for name in names:
        value = record.data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in types)
            raise ValueError(f"{record.where()}: field {name!r} must be {expected}, got {type(value).__name__}")
        return value
    accepted = ", ".join(repr(n) for n in names)
    raise ValueError(f"{record.where()}: missing field {label!r} (accepted names: {accepted})")
