"""Uniform parameter structs: their WGSL memory layout, and packing them from values given by field name.

Owns: reading a module's `struct` declarations, laying a struct out as the uniform address space requires
(WGSL's alignment and size rules: vec3/vec4 and arrays align to 16, array elements 16 bytes apart, the struct's
size rounded up to its alignment of at least 16), and `ParamsLayout.pack`, which turns `{field: value}` into the
struct's bytes and refuses a missing, unknown or mistyped field with a message naming the kernel, the entry and
the field. Supported member types: u32, i32, f32, their vec2/vec3/vec4, and fixed-size arrays of those.
Knows nothing of wgpu. Must not import `engine` or `rl`.
"""

from __future__ import annotations

import math
import operator
import re
import struct
from dataclasses import dataclass
from typing import Mapping

SCALAR_CODES = {"u32": "I", "i32": "i", "f32": "f"}  # WGSL scalar -> struct module code
_RANGES = {"u32": (0, 2**32), "i32": (-(2**31), 2**31)}
_VECTOR = re.compile(r"^vec([234])<(\w+)>$")
_VECTOR_SHORT = re.compile(r"^vec([234])([uif])$")  # vec4u, vec2f, ...
_ARRAY = re.compile(r"^array<(.+),\s*(\w+)>$")
_STRUCT = re.compile(r"\bstruct\s+(\w+)\s*\{([^}]*)\}")


class ParamsError(TypeError):
    """The values given for a kernel's Params struct do not match it: a field missing, unknown or mistyped.

    A TypeError, as Python's own for a call with a missing or unexpected keyword argument."""


@dataclass(frozen=True)
class _Type:
    """A WGSL type in the uniform address space: its alignment, size, scalar type, and the byte offset of each
    of its scalars in memory order."""

    name: str
    align: int
    size: int
    scalar: str
    slots: tuple[int, ...]


@dataclass(frozen=True)
class Field:
    """One member of a uniform struct. `count` is 0 for a scalar, else the number of scalars it holds (a vector's
    components, an array's elements times theirs) given as one sequence in memory order."""

    name: str
    type: str
    scalar: str  # "u32", "i32" or "f32"
    offset: int
    size: int
    count: int


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def parse_structs(code: str) -> dict[str, list[tuple[str, str]]]:
    """Struct name -> its members as (name, type) in declaration order, for comment-free WGSL `code`."""
    structs = {}
    for match in _STRUCT.finditer(code):
        members, depth, start = [], 0, 0
        body = match.group(2)
        pieces = []
        for i, char in enumerate(body):  # split on the commas outside <...>
            depth += {"<": 1, ">": -1}.get(char, 0)
            if char == "," and depth == 0:
                pieces.append(body[start:i])
                start = i + 1
        pieces.append(body[start:])
        for piece in pieces:
            piece = piece.strip()
            if not piece:
                continue
            name, _, type_ = piece.partition(":")
            members.append((name.strip(), re.sub(r"\s+", "", type_).replace(",", ", ")))
        structs[match.group(1)] = members
    return structs


def _type(type_: str, constants: Mapping[str, object], where: str) -> _Type:
    if type_ in SCALAR_CODES:
        return _Type(type_, 4, 4, type_, (0,))
    vector = _VECTOR.match(type_) or _VECTOR_SHORT.match(type_)
    if vector:
        n, scalar = int(vector.group(1)), vector.group(2)
        scalar = {"u": "u32", "i": "i32", "f": "f32"}.get(scalar, scalar)
        if scalar in SCALAR_CODES:
            return _Type(type_, 8 if n == 2 else 16, 4 * n, scalar, tuple(4 * i for i in range(n)))
    array = _ARRAY.match(type_)
    if array:
        element = _type(array.group(1), constants, where)
        count = array.group(2)
        literal = re.fullmatch(r"(\d+)[iu]?", count)
        count = int(literal.group(1)) if literal else constants.get(count)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{where}: the length of {type_} is not a positive integer literal or const")
        stride = _round_up(element.size, element.align)
        if stride % 16:
            raise ValueError(f"{where}: {type_} cannot live in a uniform buffer, whose array elements must be "
                             f"16 bytes apart (use vec4 elements)")
        slots = tuple(i * stride + s for i in range(count) for s in element.slots)
        return _Type(type_, _round_up(element.align, 16), count * stride, element.scalar, slots)
    raise ValueError(f"{where}: type {type_} is not supported in a Params struct (u32, i32, f32, their vectors, "
                     f"and fixed-size arrays of those are)")


class ParamsLayout:
    """The uniform struct one entry point binds: its fields at their offsets, its size, and `pack`.

    Built once per kernel family build (the registry caches it), so that `pack` does no parsing: it looks the
    values up in field order and hands them to a precompiled `struct.Struct`.
    """

    __slots__ = ("kernel", "entry", "struct", "fields", "size", "_packer", "_names", "_counts", "_scalar_only",
                 "_values_of")

    def __init__(self, kernel: str, entry: str, struct_name: str, members: list[tuple[str, str]],
                 constants: Mapping[str, object]):
        self.kernel, self.entry, self.struct = kernel, entry, struct_name
        where = f"{kernel}.{entry}: struct {struct_name}"
        if not members:
            raise ValueError(f"{where} has no fields")
        fields, offset, align, fmt, cursor = [], 0, 16, "<", 0
        for name, type_ in members:
            if type_.startswith("@") or name.startswith("@"):
                raise ValueError(f"{where}: member attributes such as {name or type_} are not supported")
            t = _type(type_, constants, f"{where}, field {name!r}")
            offset = _round_up(offset, t.align)
            align = max(align, t.align)
            fields.append(Field(name, type_, t.scalar, offset, t.size, 0 if type_ == t.scalar else len(t.slots)))
            code = SCALAR_CODES[t.scalar]
            for slot in t.slots:
                fmt += "x" * (offset + slot - cursor) + code
                cursor = offset + slot + 4
            offset += t.size
        self.size = _round_up(offset, align)
        self._packer = struct.Struct(fmt + "x" * (self.size - cursor))
        self.fields = tuple(fields)
        self._names = tuple(f.name for f in fields)
        self._counts = tuple(f.count for f in fields)
        self._scalar_only = not any(self._counts)
        # The values in field order, as a tuple, at C speed (packing is on the decode loop's hot path).
        getter = operator.itemgetter(*self._names)
        self._values_of = getter if len(self._names) > 1 else (lambda values: (getter(values),))

    @property
    def offsets(self) -> dict[str, int]:
        """Field name -> byte offset."""
        return {f.name: f.offset for f in self.fields}

    def signature(self) -> str:
        return f"struct {self.struct} {{{', '.join(f'{f.name}: {f.type}' for f in self.fields)}}}"

    def pack(self, values: Mapping[str, object] | None) -> bytes:
        """The struct's bytes for `values` (field name -> value), exactly `size` long.

        Scalars take a number (an int for u32/i32: a bool counts as 0 or 1; an int or float for f32). A vector or
        array field takes a sequence of at most `count` numbers in memory order (`array<vec4<u32>, 2>`: 8); the
        ones left out are zeros. Raises ParamsError naming the kernel, the entry and the field.
        """
        values = {} if values is None else values
        try:
            if self._scalar_only:
                args = self._values_of(values)
            else:
                args = []
                for name, count in zip(self._names, self._counts):
                    value = values[name]
                    if not count:
                        args.append(value)
                        continue
                    value = tuple(value)
                    if len(value) > count:
                        raise ParamsError(f"{self._where(name)} holds {count} values, got {len(value)}")
                    args.extend(value)
                    args.extend((0,) * (count - len(value)))
        except (KeyError, TypeError) as error:
            if isinstance(error, ParamsError):
                raise
            raise self._diagnose(values) from None
        if len(values) != len(self._names):
            raise self._diagnose(values)
        try:
            return self._packer.pack(*args)
        except (struct.error, TypeError, OverflowError):
            raise self._diagnose(values) from None

    def _where(self, name: str) -> str:
        field_ = next(f for f in self.fields if f.name == name)
        return f"{self.kernel}.{self.entry}: params field {name!r} ({field_.type})"

    def _diagnose(self, values) -> ParamsError:
        """The error for values that did not pack: the first missing, unknown or mistyped field."""
        if not isinstance(values, Mapping):
            return ParamsError(f"{self.kernel}.{self.entry}: params must be a mapping of field names to values "
                               f"({self.signature()}), got {type(values).__name__}")
        missing = [n for n in self._names if n not in values]
        if missing:
            return ParamsError(f"{self.kernel}.{self.entry}: params lack field(s) {missing} of {self.signature()}")
        unknown = [n for n in values if n not in self._names]
        if unknown:
            return ParamsError(f"{self.kernel}.{self.entry}: {self.signature()} has no field(s) {unknown}")
        for f in self.fields:
            problem = _value_problem(f, values[f.name])
            if problem:
                return ParamsError(f"{self._where(f.name)} {problem}")
        return ParamsError(f"{self.kernel}.{self.entry}: params {dict(values)} do not pack as {self.signature()}")


def _scalar_problem(scalar: str, value) -> str:
    if scalar == "f32":
        if isinstance(value, str) or not hasattr(value, "__float__"):
            return f"needs a number, got {value!r} ({type(value).__name__})"
        if math.isfinite(float(value)) and abs(float(value)) > 3.4028234663852886e38:
            return f"needs a value within f32's range, got {value!r}"
        return ""
    if not hasattr(value, "__index__"):
        return f"needs an integer, got {value!r} ({type(value).__name__})"
    low, high = _RANGES[scalar]
    if not low <= int(value) < high:
        return f"needs an integer in [{low}, {high}), got {int(value)}"
    return ""


def _value_problem(f: Field, value) -> str:
    if not f.count:
        return _scalar_problem(f.scalar, value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return f"needs a sequence of at most {f.count} numbers, got {value!r} ({type(value).__name__})"
    for i, item in enumerate(value):
        problem = _scalar_problem(f.scalar, item)
        if problem:
            return f"element {i} {problem}"
    return ""
