"""Rows of a TRL-style prompt dataset: what `DatasetTask` trains on and its reward functions read.

Owns `Row` (one row: `where` names it in messages, `data` holds its fields), `load_rows` and `columns`. A dataset
is a list (or tuple) of dicts, a JSONL file (one object per line, read by `rl.jsonl.read_jsonl`), or a
`datasets.Dataset` (duck-typed by its `column_names`; the package is never imported here). Every row needs a
`prompt`: non-blank text, used exactly as written, or a conversation (TRL's conversational format: a list of
{"role", "content"} messages that does not end with the assistant's, which the model writes). Its other fields
are the columns passed to reward functions by name. Errors are `wgrpo.engine.InputError` naming the row
(`train_dataset[3]`, `data.jsonl:4`). Pure Python; imports the engine only to raise that error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from wgrpo.rl.errors import input_error
from wgrpo.rl.jsonl import messages_field, read_jsonl

__all__ = ["Row", "load_rows", "columns", "PROMPT"]

PROMPT = "prompt"
_EXPECTED = 'text, or a conversation: a list of {"role": ..., "content": ...} messages'


@dataclass(frozen=True)
class Row:
    """One row of a dataset: `where` names it ("train_dataset[3]", "data.jsonl:4"); `data` its fields, with a
    conversational prompt as a list of fresh {"role", "content", ...} dicts."""

    where: str
    data: dict

    def is_conversation(self) -> bool:
        return isinstance(self.data[PROMPT], list)


class _At:
    """A row as `rl.jsonl.messages_field` reads a record: its data and where it is."""

    def __init__(self, where: str, data: Mapping):
        self.data, self._where = data, where

    def where(self) -> str:
        return self._where


def load_rows(dataset, name: str) -> list[Row]:
    """Every row of `dataset` (see the module docstring), checked; `name` names it in messages (the argument's
    name, e.g. "train_dataset"). InputError for an empty dataset, a row that is not a dict, a missing or bad
    prompt, a DatasetDict or IterableDataset (saying what to pass instead) or another kind of object."""
    if isinstance(dataset, (str, os.PathLike)):
        raw = [(record.where(), record.data) for record in read_jsonl(dataset)]
    elif isinstance(dataset, (list, tuple)):
        raw = [(f"{name}[{index}]", data) for index, data in enumerate(dataset)]
    elif hasattr(dataset, "column_names"):
        raw = [(f"{name}[{index}]", data) for index, data in enumerate(_hf_rows(dataset, name))]
    else:
        raise input_error(f"{name}: expected a list of dicts, a JSONL file path or a datasets.Dataset, got "
                          f"{type(dataset).__name__}")
    if not raw:
        raise input_error(f"{name} is empty: it needs at least one row with a 'prompt'")
    return [_checked(where, data) for where, data in raw]


def _hf_rows(dataset, name: str) -> list:
    """The rows of a `datasets.Dataset` as dicts; InputError for a DatasetDict or a streaming dataset."""
    kind = type(dataset).__name__
    if isinstance(dataset, Mapping) or isinstance(dataset.column_names, Mapping):
        splits = ", ".join(map(str, dataset.keys()))
        first = next(iter(dataset.keys()), "train")
        raise input_error(f"{name} holds several splits ({kind}: {splits}); pass one split, e.g. "
                          f"{name}=dataset[{first!r}]")
    if "Iterable" in kind or not hasattr(dataset, "__len__"):
        raise input_error(f"{name} is a streamed dataset ({kind}); pass a datasets.Dataset (load_dataset(..., "
                          f"streaming=False)) or a list of dicts")
    if PROMPT not in dataset.column_names:
        raise input_error(f"{name} has no {PROMPT!r} column; its columns: {', '.join(dataset.column_names)} (rename "
                          f"the prompt's column with dataset.rename_column(old, 'prompt'))")
    return dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)


def _checked(where: str, data: Any) -> Row:
    if not isinstance(data, Mapping):
        raise input_error(f"{where}: expected a dict with a {PROMPT!r}, got {type(data).__name__}")
    data = dict(data)
    prompt = data.get(PROMPT)
    if prompt is None:
        fields = ", ".join(map(repr, data)) or "none"
        raise input_error(f"{where}: no {PROMPT!r} (every row needs one: {_EXPECTED}); its fields: {fields}")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise input_error(f"{where}: {PROMPT!r} is blank")
        return Row(where, data)
    if not isinstance(prompt, (list, tuple)):
        raise input_error(f"{where}: {PROMPT!r} must be {_EXPECTED}, got {type(prompt).__name__}")
    messages = messages_field(_At(where, {PROMPT: list(prompt)}), PROMPT)
    if messages[-1]["role"] == "assistant":
        raise input_error(f"{where}: the conversation in {PROMPT!r} ends with an assistant message; a prompt ends "
                          f"before the assistant's turn, which the model writes")
    data[PROMPT] = [dict(message) for message in messages]
    return Row(where, data)


def columns(rows: Iterable[Row]) -> list[str]:
    """The fields of `rows` other than the prompt, in the order first seen: the columns passed to reward
    functions (a row without one gives None there)."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row.data:
            if key != PROMPT:
                seen.setdefault(key, None)
    return list(seen)
