"""A subcommand's options, generated from its config dataclass, and read from a `--config FILE.toml` file.

Owns: `add_config_arguments` (one `--field-name` option per field, with its help text), `config_from_args` (the
config instance the parsed options describe), `given_options` (the fields given on the command line or in the
file, whatever their values) and `apply_config_file` (a TOML file's values made the subcommand's defaults, each
checked as its field checks it). A value out of its range is named where it came from: the option
(`--group-size 1: ...`), or the file and key (`run.toml: group_size = 1: ...`, `named_by_source`). Every field
needs a default and `field(metadata={"help": ...})`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import types
import typing
from typing import Any, Iterator

from wgrpo.engine import InputError

GIVEN = "options_given"  # namespace attribute: the config fields set on the command line
FROM_FILE = "options_from_file"  # namespace attribute: {field: value as the --config file wrote it}
OPTIONS_FILE = "options_file"  # namespace attribute: the --config file's path


def _mark_given(namespace: argparse.Namespace, dest: str) -> None:
    given = getattr(namespace, GIVEN, None)
    if given is None:
        given = set()
        setattr(namespace, GIVEN, given)
    given.add(dest)


class _StoreGiven(argparse.Action):
    """argparse's plain store, remembering that the option was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _mark_given(namespace, self.dest)


class _BooleanGiven(argparse.BooleanOptionalAction):
    """`--x / --no-x`, remembering that the option was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _mark_given(namespace, self.dest)


def given_options(args: argparse.Namespace) -> set[str]:
    """The config fields given explicitly, on the command line or in the --config file, whatever their value
    (equal to the default or not)."""
    return set(getattr(args, GIVEN, ())) | set(getattr(args, FROM_FILE, ()))


def _option_type(hint) -> type:
    """The scalar type of a field's annotation: int, float, str, bool, or one of them `| None`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions are supported as options, got {hint}")
        return _option_type(args[0])
    if hint in (int, float, str, bool):
        return hint
    raise TypeError(f"unsupported option type {hint}: use int, float, str, bool or one of them | None")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type,
                         aliases: dict[str, list[str]] | None = None) -> None:
    """Add one `--field-name` option per field of the dataclass `config_cls` to `parser`, also spelled
    `--alias` for each of `aliases[field]` (other names of the option, such as TRL's).

    Each field must have a default and `metadata={"help": ...}`; `metadata={"choices": [...]}` restricts the
    value and `metadata={"metavar": ...}` names it in `--help`. Booleans become `--x / --no-x`. Each option
    records on the namespace that it was given (`given_options`), and its action knows its `config_class`.
    """
    from wgrpo.rl.train.fields import field_default, option_flag

    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls must be a dataclass, got {config_cls!r}")
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} options")
    for f in dataclasses.fields(config_cls):
        help_text = f.metadata.get("help")
        if not help_text:
            raise TypeError(f"{config_cls.__name__}.{f.name} needs field(metadata={{'help': ...}})")
        default = field_default(f)
        if default is dataclasses.MISSING:
            raise TypeError(f"{config_cls.__name__}.{f.name} needs a default")
        kind = _option_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        if kind is bool:
            kwargs["action"] = _BooleanGiven
            kwargs["help"] = f"{help_text} (default: {'on' if default else 'off'})"
        else:
            kwargs["action"] = _StoreGiven
            kwargs["type"] = kind
            kwargs["help"] = help_text if default in (None, "") else f"{help_text} (default: {default})"
            if "choices" in f.metadata:
                kwargs["choices"] = list(f.metadata["choices"])
            if "metavar" in f.metadata:
                kwargs["metavar"] = f.metadata["metavar"]
            elif "choices" not in f.metadata:
                kwargs["metavar"] = kind.__name__.upper()
        flags = [option_flag(f.name), *(option_flag(alias) for alias in (aliases or {}).get(f.name, ()))]
        action = group.add_argument(*flags, **kwargs)
        action.config_class = config_cls  # lets a --config file's value be checked as this field's


def config_from_args(config_cls: type, args: argparse.Namespace):
    """The `config_cls` instance that the parsed options describe.

    Each value is checked against its field's type first, naming the option (`--grad-clip nan: expected a finite
    number`), then by the dataclass's own checks (`__post_init__`), whose `OptionError` names the --config file
    and key when the value came from there. Bad input (an `InputError`) is a usage error when `args` came from
    the command line's parser: `PROG: error: ...` on stderr, one line, and exit code 2, as argparse's own;
    without a parser it propagates, as does every other exception (a bug keeps its traceback).
    """
    from wgrpo.rl.train.fields import checked_field_value

    try:
        with named_by_source(args):
            values = {f.name: checked_field_value(config_cls, f.name, getattr(args, f.name), as_option=True)
                      for f in dataclasses.fields(config_cls)}
            return config_cls(**values)
    except InputError as error:
        parser = getattr(args, "parser", None)
        if parser is None:
            raise
        parser.exit(2, f"{parser.prog}: error: {error}\n")


@contextlib.contextmanager
def named_by_source(args: argparse.Namespace) -> Iterator[None]:
    """Inside, an `OptionError` about a value that the --config file set (and the command line did not
    override) becomes the same error naming the file and key, with the value as the file wrote it."""
    from wgrpo.rl.train.config import OptionError

    try:
        yield
    except OptionError as error:
        written = getattr(args, FROM_FILE, {})
        if error.name in written and error.name not in getattr(args, GIVEN, ()):
            raise error.in_file(getattr(args, OPTIONS_FILE), written[error.name]) from None
        raise


# ---------------------------------------------------------------------------------------------- --config FILE.toml


def config_file_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--config FILE.toml` to a subcommand's parser (read by `apply_config_file`)."""
    parser.add_argument("--config", metavar="FILE.toml", default=None,
                        help="read options from a TOML file (keys are the option names with underscores); options "
                             "given on the command line win")


def apply_config_file(subparser: argparse.ArgumentParser, path: str | None) -> None:
    """Make the values of the TOML file at `path` (none: nothing to do) the defaults of `subparser`, so that
    flags still override them.

    Each value is checked as its config field checks it, naming the file (`run.toml: steps = 1.5: expected an
    integer`); a table is accepted for a `key=value,...` option. The keys count as given (`given_options`)."""
    from wgrpo.rl.train.fields import checked_field_value, file_value

    if not path:
        return
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as error:
        raise InputError(f"--config {path}: cannot read it ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"--config {path} is not valid TOML: {error}") from None
    fields = {action.dest: action.config_class for action in subparser._actions if hasattr(action, "config_class")}
    unknown = sorted(set(values) - set(fields) - {"device"})
    if unknown:
        raise InputError(f"--config {path} sets unknown options {unknown}; see `{subparser.prog} --help`")
    if not isinstance(values.get("device", ""), str):
        raise InputError(f"{path}: device = {file_value(values['device'])}: expected a string")
    checked = {name: checked_field_value(fields[name], name, value, path) if name in fields else value
               for name, value in values.items()}
    subparser.set_defaults(**checked, **{FROM_FILE: dict(values), OPTIONS_FILE: path})
