"""The fields of config dataclasses: their command-line names, defaults and types, and their values as a file
writes them.

Owns: `option_flag` (a field's option, `group_size` -> `--group-size`), `field_default`, the type check every
config dataclass shares (`check_field_types`, `checked_field_value`), `options_text` (a table as a
`key=value,...` option string) and `file_value` (a value in TOML syntax, as a message quotes what a file says).
Pure Python: bad input raises the engine's `InputError` through `rl.errors.input_error`, which imports the
engine only then, so modules that must not import the engine (`rl.train.stop`) can use these helpers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import re
import types
import typing
from typing import Any, Callable, Mapping

from wgrpo.rl.errors import input_error

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # a TOML key that needs no quotes


def option_flag(name: str) -> str:
    """The command-line option of the config field `name`: 'group_size' -> '--group-size'."""
    return "--" + name.replace("_", "-")


def field_default(f: dataclasses.Field):
    """The default of the dataclass field `f` (a new value from its factory); `dataclasses.MISSING` if none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def file_value(value) -> str:
    """`value` as a TOML file writes it (`true`, `3`, `1.5`, `nan`, `"text"`, `["+"]`, `{digits = 1}`); a
    JSON file writes scalars alike, and its `null` is shown as `null`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        keys = (k if isinstance(k, str) and _BARE_KEY.match(k) else json.dumps(str(k)) for k in value)
        return "{" + ", ".join(f"{k} = {file_value(v)}" for k, v in zip(keys, value.values())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(file_value, value)) + "]"
    return str(value)  # a TOML date or time


class Mismatch(Exception):
    """A value that does not fit its field; the caller names the field and where the value came from."""


@functools.cache
def _hints(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def check_field_types(config, where: str | None = None) -> None:
    """Check every field of the dataclass instance `config` against its annotation, in place.

    int: an integer (not a bool, not 1.5); float: a finite number (an int is stored as a float); bool: True or
    False only; str: a string; `X | None`: None or X; `metadata={"choices": ...}`: one of them;
    `metadata={"key_value": True}`: a 'key=value,...' string, or a mapping (a TOML table), stored as that string.
    InputError `"{where}: {name} = {value}: expected ..."`: `where` is the file the values came from (its values
    are then shown in TOML syntax), else the class name (and Python's repr).
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        checked = checked_field_value(type(config), f.name, value, where)
        if checked is not value:
            object.__setattr__(config, f.name, checked)  # frozen dataclasses too


def checked_field_value(config_cls: type, name: str, value, where: str | None = None, *, as_option: bool = False):
    """`value` as field `name` of the dataclass `config_cls` holds it (see `check_field_types`): InputError
    naming `where` (the TOML file, the checkpoint's config; default: the class name), the field and the value;
    `as_option` names the command-line option instead (`--grad-clip nan: expected a finite number`)."""
    metadata = {f.name: f.metadata for f in dataclasses.fields(config_cls)}[name]
    show = file_value if where is not None else repr
    try:
        return _fit(_hints(config_cls)[name], value, metadata, show)
    except Mismatch as mismatch:
        source = f"{where or config_cls.__name__}: {name} = {show(value)}"
        named = f"{option_flag(name)} {value}" if as_option else source
        raise input_error(f"{named}: {mismatch}") from None


def _fit(hint, value, metadata: Mapping[str, Any], show: Callable[[Any], str]):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions are supported as config fields, got {hint}")
        if value is None:
            return None
        hint = args[0]
    if hint is bool:
        if not isinstance(value, bool):
            raise Mismatch("expected true or false")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise Mismatch("expected an integer")
        value = int(value)
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise Mismatch("expected a number")
        value = float(value)
        if not math.isfinite(value):
            raise Mismatch("expected a finite number")
    elif hint is str:
        if metadata.get("key_value") and isinstance(value, Mapping):
            value = options_text(value, show)
        if not isinstance(value, str):
            raise Mismatch("expected a string of the form 'key=value,...' or a table" if metadata.get("key_value")
                           else "expected a string")
    else:
        raise TypeError(f"unsupported config field type {hint}: use int, float, str, bool or one of them | None")
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise Mismatch("expected one of " + ", ".join(map(show, choices)))
    return value


def options_text(options: Mapping, show: Callable[[Any], str] = repr) -> str:
    """{'digits': 3, 'instructions': False} -> 'digits=3,instructions=false', which `config.parse_options` reads
    back. Mismatch for a value that is no number, string or boolean, or text holding ',' (or a key holding '='),
    quoting it with `show`."""
    items = []
    for key, value in options.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            text = str(value)
        else:
            raise Mismatch(f"a table's values must be numbers, strings or booleans, got {key} = {show(value)}")
        if not isinstance(key, str) or not key or "," in key or "=" in key or "," in text:
            raise Mismatch(f"a table's keys and values may not hold ',' (nor its keys '='), got {key} = "
                           f"{show(value)}")
        items.append(f"{key}={text}")
    return ",".join(items)
