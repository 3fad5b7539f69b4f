"""JSONL dataset reading with errors that name the file, the line and the field.

Owns: `read_jsonl` (one JSON object per non-blank line), `field` (a required field under any of several
accepted names) and `messages_field` (a conversation: TRL's conversational format, a list of {"role",
"content"} messages). Every error is a `wgrpo.engine.InputError` that names the file, and the line
(`<file>:<line>: ...`) when one line is at fault. Pure Python; imports the engine only to raise that error
(`rl.errors`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

from wgrpo.rl.errors import input_error

__all__ = ["Record", "read_jsonl", "field", "messages_field", "is_conversation"]


@dataclass(frozen=True)
class Record:
    path: str
    line: int  # 1-based line number in the file
    data: dict

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def read_jsonl(path: str | os.PathLike) -> list[Record]:
    """Every non-blank line of `path` as a `Record`; InputError naming file and line for text that is not UTF-8,
    invalid JSON or a line that is not an object, and naming the file when it is missing or has no records."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise input_error(f"dataset file {path!r} does not exist" if not os.path.exists(path)
                          else f"dataset file {path!r} is not a file")
    records = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise input_error(f"{path}:{number}: not UTF-8 text ({error})") from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise input_error(f"{path}:{number}: invalid JSON: {error.msg} at column {error.colno}") from None
            if not isinstance(data, dict):
                raise input_error(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
            records.append(Record(path, number, data))
    if not records:
        raise input_error(f"dataset file {path!r} has no records")
    return records


def field(record: Record, names: Sequence[str], *, kind: str | None = None, types: tuple = (str,)) -> Any:
    """The value of the first of `names` present in `record` (not None, not blank). InputError naming the file,
    the line, the missing field and the accepted names; or naming the field if its value has the wrong type."""
    label = kind or names[0]
    for name in names:
        value = record.data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in types)
            raise input_error(f"{record.where()}: field {name!r} must be {expected}, got {type(value).__name__}")
        return value
    accepted = ", ".join(repr(n) for n in names)
    raise input_error(f"{record.where()}: missing field {label!r} (accepted names: {accepted})")


def is_conversation(value: Any) -> bool:
    """Whether a field's value is a conversation (a list) rather than text: what `messages_field` reads."""
    return isinstance(value, list)


def messages_field(record: Record, name: str) -> tuple[dict, ...]:
    """The conversation in field `name` of `record`: a non-empty list of {"role": str, "content": str} messages
    (TRL's conversational format; a message's other keys are kept), as a tuple of fresh dicts. InputError naming
    the file, the line, the field and the message at fault."""
    value = record.data.get(name)
    expected = 'a non-empty list of {"role": ..., "content": ...} messages'
    if not isinstance(value, list) or not value:
        raise input_error(f"{record.where()}: field {name!r} must be text or {expected}, got "
                          f"{type(value).__name__ if value != [] else 'an empty list'}")
    messages = []
    for index, message in enumerate(value):
        at = f"{record.where()}: {name}[{index}]"
        if not isinstance(message, dict):
            raise input_error(f'{at}: expected a {{"role": ..., "content": ...}} message, got {type(message).__name__}')
        for key in ("role", "content"):
            if key not in message:
                raise input_error(f"{at}: no {key!r}")
            if not isinstance(message[key], str) or (key == "role" and not message[key].strip()):
                raise input_error(f"{at}: {key!r} must be a {'non-empty ' if key == 'role' else ''}string, "
                                  f"got {message[key]!r:.40}")
        messages.append(dict(message))
    return tuple(messages)
