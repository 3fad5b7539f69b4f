"""Loads the WGSL kernel families and describes their entry points.

Owns: reading `kernels/<family>.wgsl`, expanding its `// use prelude` line into `kernels/prelude.wgsl` (the helpers
several families share) and its `// use <family>.<part>` lines into the family's own parts
(`kernels/<family>.<part>.wgsl`: one family's code in files of a readable size), specializing its element type
(`alias elem = f32;` becomes f16 on request), and describing each entry point: the bindings it uses, the uniform
struct it binds (`params`, a `ParamsLayout` that packs values by field name), and its `@workgroup_size` with
`const`/`override` names resolved. Knows nothing of wgpu: `engine.runtime` turns these descriptions into pipelines.
Must not import `engine` or `rl`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from wgrpo.kernels.params import ParamsLayout, parse_structs

KERNEL_DIR = Path(__file__).resolve().parent
ELEMENT_TYPES = ("f32", "f16")
PRELUDE = "prelude"  # kernels/prelude.wgsl: shared helpers, not a family of its own

_BINDING = re.compile(
    r"@group\((\d+)\)\s*@binding\((\d+)\)\s*var<\s*(uniform|storage)\s*(?:,\s*(read|read_write)\s*)?>\s*(\w+)\s*:"
    r"\s*([^;]+?)\s*;"
)
_FUNCTION = re.compile(r"\bfn\s+(\w+)\s*\(")
# The attributes before a function (`@compute @workgroup_size(64)`), and its name.
_ATTRIBUTED_FN = re.compile(r"((?:@\w+(?:\s*\([^)]*\))?\s*)+)\bfn\s+(\w+)\s*\(")
_WORKGROUP_SIZE = re.compile(r"@workgroup_size\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![.\w])[A-Za-z_]\w*")  # not after a dot: `v.x` is a swizzle, not `x`
_ELEM_ALIAS = re.compile(r"^alias\s+elem\s*=\s*f32\s*;\s*$", re.MULTILINE)
# Module-scope constants start at the line's first column; function-scope ones are indented.
_CONSTANT = re.compile(r"^(?:@id\(\d+\)\s*)?(const|override)\s+(\w+)\s*(?::\s*\w+\s*)?(?:=\s*([^;]+?)\s*)?;",
                       re.MULTILINE)
_INT_LITERAL = re.compile(r"-?(0[xX][0-9a-fA-F]+|\d+)[iu]?")
_FLOAT_LITERAL = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?[fh]?")
_USE = re.compile(r"^// use ([\w.]+)$", re.MULTILINE)
# Entries that need the `subgroup` feature sit between these lines; naga rejects the whole module without it.
_SUBGROUP_BLOCK = re.compile(r"^// BEGIN subgroup$.*?^// END subgroup$", re.MULTILINE | re.DOTALL)
# A family whose weights may be stored packed declares the weight binding and its reader between these lines:
#   @group(0) @binding(2) var<storage, read> b: array<elem>;
#   fn b_at(i: u32) -> f32 { return f32(b[i]); }
# and optionally a reader of 4 elements from i, a multiple of 4 (over its own vec4 view of the binding):
#   fn b_at4(i: u32) -> vec4<f32> { return vec4<f32>(b4[i >> 2u]); }
_WEIGHTS_BLOCK = re.compile(r"^// BEGIN weights$(.*?)^// END weights$", re.MULTILINE | re.DOTALL)
_WEIGHTS_READER = re.compile(r"\bfn\s+(\w+)\s*\(\s*i\s*:\s*u32\s*\)\s*->\s*f32")
_WEIGHTS_READER4 = re.compile(r"\bfn\s+(\w+)\s*\(\s*i\s*:\s*u32\s*\)\s*->\s*vec4\s*<\s*f32\s*>")
# How element i of a packed weight array `w` (two 16-bit values per u32 word, the first in the low half) widens.
_PACKED_READS = {
    "bf16": "let word = {w}[i >> 1u];\n    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));",
    "f16": "return unpack2x16float({w}[i >> 1u])[i & 1u];",
}
# Elements i .. i+3 (i a multiple of 4): the two words i/2 and i/2 + 1.
_PACKED_READS4 = {
    "bf16": "let lo = {w}[i >> 1u];\n    let hi = {w}[(i >> 1u) + 1u];\n"
            "    return bitcast<vec4<f32>>(vec4<u32>(lo << 16u, lo & 0xffff0000u, hi << 16u, hi & 0xffff0000u));",
    "f16": "return vec4<f32>(unpack2x16float({w}[i >> 1u]), unpack2x16float({w}[(i >> 1u) + 1u]));",
}
WEIGHT_STORAGE = ("elem", *_PACKED_READS)
# A family may read its f32 quads as 64-bit words, two elements each: on lavapipe every storage read is a loop over
# the 8 lanes with a bounds check per word, so 8-byte words halve that work. The family names the read-only
# `array<vec4<elem>>` bindings read that way in a `// wide reads: a, b` line; `load(..., wide_reads=True)` (f32)
# declares them `array<vec2<u64>>` (the same 16 bytes per quad) and wraps each read `x[i]` in `wide_quad(x[i])`.
_WIDE_READS = re.compile(r"^// wide reads: (.+)$", re.MULTILINE)
# (Its names are ones no family binds: the registry finds an entry's bindings by the identifiers it reaches.)
_WIDE_QUAD = ("// The 4 f32 elements held in two 64-bit words, the first in the low half of the first (wide reads).\n"
              "fn wide_quad(wide_words: vec2<u64>) -> vec4<f32> {\n"
              "    let lo = wide_words.x;\n    let hi = wide_words.y;\n"
              "    return vec4<f32>(bitcast<f32>(u32(lo)), bitcast<f32>(u32(lo >> 32u)), bitcast<f32>(u32(hi)),\n"
              "                     bitcast<f32>(u32(hi >> 32u)));\n}")


@dataclass(frozen=True)
class Binding:
    """One resource variable: `kind` is "uniform", "read" or "read_write"; `type` its WGSL store type."""

    name: str
    group: int
    binding: int
    kind: str
    type: str = ""


@dataclass(frozen=True)
class KernelSource:
    """One build of a family: its code and, per entry point, the bindings it uses, the uniform struct it binds
    (None when it binds none) and its `@workgroup_size` expressions; `constants` holds the module's `const` and
    `override` declarations whose value is a plain number (overrides: their default)."""

    family: str
    elem: str
    code: str
    entries: dict[str, tuple[Binding, ...]]  # entry point -> bindings it touches, by binding number
    layouts: dict[str, ParamsLayout | None]
    workgroup_sizes: dict[str, tuple[str, ...]]
    constants: dict[str, int | float]
    overrides: frozenset[str]
    _resolved: dict = field(default_factory=dict, compare=False, repr=False)  # entry -> its size with no constants

    def _check(self, entry: str) -> None:
        if entry not in self.entries:
            raise ValueError(
                f"kernel family {self.family!r} has no entry point {entry!r}; it has {sorted(self.entries)}"
            )

    def bindings(self, entry: str) -> tuple[Binding, ...]:
        self._check(entry)
        return self.entries[entry]

    def params(self, entry: str) -> ParamsLayout | None:
        """The layout of the uniform struct `entry` binds, or None if it binds no uniform."""
        self._check(entry)
        return self.layouts[entry]

    def workgroup_size(self, entry: str, constants: Mapping[str, int] | None = None) -> tuple[int, int, int]:
        """`entry`'s @workgroup_size as (x, y, z). A name resolves to its value in `constants` (the override
        values a pipeline is built with) if it is an `override`, else to the module's declaration."""
        if not constants and entry in self._resolved:
            return self._resolved[entry]  # grids ask for this on every dispatch
        self._check(entry)
        sizes = []
        for expression in self.workgroup_sizes[entry]:
            literal = _number(expression)
            if isinstance(literal, int):
                value = literal
            elif constants and expression in constants and expression in self.overrides:
                value = constants[expression]
            elif isinstance(self.constants.get(expression), int):
                value = self.constants[expression]
            else:
                raise ValueError(f"{self.family}.{entry}: @workgroup_size names {expression!r}, which is not a "
                                 f"const or override with an integer value")
            sizes.append(int(value))
        resolved = tuple(sizes + [1] * (3 - len(sizes)))
        if not constants:
            self._resolved[entry] = resolved
        return resolved

    def invocations(self, entry: str, constants: Mapping[str, int] | None = None) -> int:
        """Invocations per workgroup of `entry` (x * y * z of its workgroup size)."""
        x, y, z = self.workgroup_size(entry, constants)
        return x * y * z


def families() -> list[str]:
    return sorted(p.stem for p in KERNEL_DIR.glob("*.wgsl") if p.stem != PRELUDE and "." not in p.stem)


@lru_cache(maxsize=None)
def load(family: str, elem: str = "f32", subgroups: bool = True, weights: str = "elem",
         wide_reads: bool = False) -> KernelSource:
    """The source of `kernels/<family>.wgsl` with `elem` as its element type, and its entry points.

    With `subgroups=False` the `// BEGIN subgroup` ... `// END subgroup` block is cut out, so the rest of the
    family compiles on adapters without the feature (its entries are then absent). `weights` = "bf16" or "f16"
    stores the family's weight binding (its `// BEGIN weights` block) as packed pairs of 16-bit values in u32
    words, widened to f32 by the block's reader function; "elem" keeps it an array of `elem`. `wide_reads`
    reads the quads of the bindings a family's `// wide reads:` line names as 64-bit words (needs the
    shader-int64 feature); f16 builds and families without the line ignore it.
    """
    if elem not in ELEMENT_TYPES:
        raise ValueError(f"elem must be one of {ELEMENT_TYPES}, got {elem!r}")
    if weights not in WEIGHT_STORAGE:
        raise ValueError(f"weights must be one of {WEIGHT_STORAGE}, got {weights!r}")
    path = KERNEL_DIR / f"{family}.wgsl"
    if family == PRELUDE:
        raise ValueError(f"{path.name} holds the helpers families include with `// use {PRELUDE}`; it is not a "
                         f"kernel family; known: {families()}")
    if not path.is_file():
        raise ValueError(f"no kernel family {family!r}: {path} does not exist; known: {families()}")
    if "." in family:
        raise ValueError(f"{path.name} is a part of the {family.split('.')[0]!r} family (included with "
                         f"`// use {family}`), not a kernel family; known: {families()}")
    code = expand_includes(path.read_text(), path.name, family)
    if not subgroups:
        code = _SUBGROUP_BLOCK.sub("", code)
    if weights != "elem":
        code = _pack_weights(code, path.name, weights)
    if wide_reads and elem == "f32":
        code = _widen_reads(code, path.name, may_lack=not subgroups or weights != "elem")
    if elem != "f32":
        if not _ELEM_ALIAS.search(code):
            raise ValueError(f"{path.name} has no `alias elem = f32;` line, so it cannot be built for {elem}")
        code = "enable f16;\n" + _ELEM_ALIAS.sub(f"alias elem = {elem};", code, count=1)
    return parse(family, elem, code)


def _pack_weights(code: str, name: str, weights: str) -> str:
    """`code` with its weights block declaring a u32 array of packed `weights` values and a reader widening them
    (and a 4-element reader, when the block has one). Other bindings in the block (a vec4 view) are dropped."""
    block = _WEIGHTS_BLOCK.search(code)
    if block is None:
        raise ValueError(f"{name} has no `// BEGIN weights` block, so its weights cannot be stored as {weights}")
    binding = _BINDING.search(block.group(1))
    reader = _WEIGHTS_READER.search(block.group(1))
    if binding is None or reader is None:
        raise ValueError(f"{name}: the weights block needs one storage binding and a `fn NAME(i: u32) -> f32` reader")
    group, number, array = binding.group(1), binding.group(2), binding.group(5)
    packed = (f"@group({group}) @binding({number}) var<storage, read> {array}: array<u32>;\n"
              f"fn {reader.group(1)}(i: u32) -> f32 {{\n    {_PACKED_READS[weights].format(w=array)}\n}}\n")
    reader4 = _WEIGHTS_READER4.search(block.group(1))
    if reader4 is not None:
        packed += f"fn {reader4.group(1)}(i: u32) -> vec4<f32> {{\n    {_PACKED_READS4[weights].format(w=array)}\n}}\n"
    return code[:block.start()] + packed + code[block.end():]


def _widen_reads(code: str, name: str, may_lack: bool) -> str:
    """`code` with the bindings its `// wide reads:` line names read as 64-bit words (see `_WIDE_READS`). A name
    that packed weights made an array<u32> (its reader widens already) is left, and so is one a cut subgroup
    block or a packed weights block took away (`may_lack`)."""
    marker = _WIDE_READS.search(code)
    if marker is None:
        return code
    widened = False
    for array in (part.strip() for part in marker.group(1).split(",")):
        declaration = re.compile(rf"(var<\s*storage\s*,\s*read\s*>\s*{array}\s*:\s*)([^;]+?)\s*;")
        found = declaration.search(code)
        if found is None:
            if may_lack:
                continue
            raise ValueError(f"{name}: `// wide reads:` names {array!r}, which is not a read-only storage binding")
        stored = re.sub(r"\s+", "", found.group(2))
        if stored == "array<u32>":
            continue
        if stored != "array<vec4<elem>>":
            raise ValueError(f"{name}: `// wide reads:` names {array!r}, declared {stored}, not array<vec4<elem>>")
        code = declaration.sub(lambda m: m.group(1) + "array<vec2<u64>>;", code, count=1)
        code = _wrap_reads(code, array)
        widened = True
    marker = _WIDE_READS.search(code)  # the wrapping moved it
    return code[:marker.start()] + (_WIDE_QUAD if widened else "") + code[marker.end():]


def _wrap_reads(code: str, array: str) -> str:
    """Every `array[...]` in `code` outside comments as `wide_quad(array[...])`; an index must close on its line."""
    read = re.compile(rf"(?<![.\w]){array}\[")
    lines = []
    for line in code.split("\n"):
        text, slash, comment = line.partition("//")
        out, at = [], 0
        for match in read.finditer(text):
            if match.start() < at:
                continue
            depth, i = 1, match.end()
            while depth and i < len(text):
                depth += {"[": 1, "]": -1}.get(text[i], 0)
                i += 1
            if depth:
                raise ValueError(f"a read of {array!r} does not close on its line: {line.strip()!r}")
            out.append(text[at:match.start()] + f"wide_quad({text[match.start():i]})")
            at = i
        lines.append("".join(out) + text[at:] + slash + comment)
    return "\n".join(lines)


def workgroup_size(family: str, entry: str, constants: Mapping[str, int] | None = None) -> tuple[int, int, int]:
    """`load(family).workgroup_size(entry, constants)`: what grid computations divide by."""
    return load(family).workgroup_size(entry, constants)


def expand_includes(code: str, name: str, family: str) -> str:
    """`code` (the file `name` of `family`) with each `// use NAME` line replaced by `kernels/NAME.wgsl`: the
    prelude, or one of the family's parts (`<family>.<part>`). Each is included at most once; parts include
    nothing themselves."""
    uses = _USE.findall(code)
    for target in dict.fromkeys(uses):  # in file order: the first problem is the one named
        if uses.count(target) > 1:
            what = "the prelude" if target == PRELUDE else target
            raise ValueError(f"{name} has {uses.count(target)} `// use {target}` lines; {what} may be included once")
        if target != PRELUDE and not target.startswith(f"{family}."):
            raise ValueError(f"{name}: `// use {target}` names neither the {PRELUDE} nor a part of {family} "
                             f"({family}.<part>)")
        if not (KERNEL_DIR / f"{target}.wgsl").is_file():
            raise ValueError(f"{name}: `// use {target}`: {KERNEL_DIR / target}.wgsl does not exist")

    def included(match: re.Match) -> str:
        text = (KERNEL_DIR / f"{match.group(1)}.wgsl").read_text()
        nested = _USE.search(text) if match.group(1) != PRELUDE else None
        if nested is not None:
            raise ValueError(f"{match.group(1)}.wgsl: a part includes nothing (`{nested.group(0)}`); its family's "
                             f"file does")
        return text.rstrip("\n")

    return _USE.sub(included, code)


def parse(family: str, elem: str, code: str) -> KernelSource:
    """Describe the entry points of the WGSL module `code` (already expanded and specialized)."""
    stripped = _strip_comments(code)
    constants, overrides = _constants(stripped)
    bindings = _bindings(stripped)
    entries = _entry_bindings(stripped, bindings)
    structs = parse_structs(stripped)
    layouts = {}
    for entry, used in entries.items():
        uniforms = [b for b in used if b.kind == "uniform"]
        if len(uniforms) > 1:
            raise ValueError(f"{family}.{entry} binds {len(uniforms)} uniforms {[u.name for u in uniforms]}; an "
                             f"entry binds at most one Params struct")
        if not uniforms:
            layouts[entry] = None
        elif uniforms[0].type not in structs:
            raise ValueError(f"{family}.{entry}: uniform {uniforms[0].name!r} has type {uniforms[0].type}, which "
                             f"is not a struct of this module")
        else:
            layouts[entry] = ParamsLayout(family, entry, uniforms[0].type, structs[uniforms[0].type], constants)
    return KernelSource(family, elem, code, entries, layouts, _workgroup_sizes(family, stripped), constants,
                        overrides)


def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", code)


def _number(text: str | None) -> int | float | None:
    """The value of an integer or float literal, or None for anything else (an expression, a call)."""
    if text is None:
        return None
    integer = _INT_LITERAL.fullmatch(text)
    if integer:
        digits = integer.group(1)
        value = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
        return -value if text.startswith("-") else value
    if _FLOAT_LITERAL.fullmatch(text):
        return float(text.rstrip("fh"))
    return None


def _constants(code: str) -> tuple[dict[str, int | float], frozenset[str]]:
    values, overrides = {}, set()
    for kind, name, text in _CONSTANT.findall(code):
        if kind == "override":
            overrides.add(name)
        value = _number(text or None)
        if value is not None:
            values[name] = value
    return values, frozenset(overrides)


def _workgroup_sizes(family: str, code: str) -> dict[str, tuple[str, ...]]:
    sizes = {}
    for match in _ATTRIBUTED_FN.finditer(code):
        attributes = match.group(1)
        if "@compute" in attributes:
            size = _WORKGROUP_SIZE.search(attributes)
            if size is None:
                raise ValueError(f"{family}.{match.group(2)}: a compute entry needs a @workgroup_size")
            sizes[match.group(2)] = tuple(part.strip() for part in size.group(1).split(",") if part.strip())
    return sizes


def _function_bodies(code: str) -> dict[str, str]:
    """Function name -> the text of its body, found by matching braces."""
    bodies = {}
    for match in _FUNCTION.finditer(code):
        start = code.index("{", match.end())
        depth, i = 0, start
        while True:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            if depth == 0:
                break
            i += 1
        bodies[match.group(1)] = code[start : i + 1]
    return bodies


def _bindings(code: str) -> dict[str, Binding]:
    return {
        m.group(5): Binding(m.group(5), int(m.group(1)), int(m.group(2)),
                            "uniform" if m.group(3) == "uniform" else (m.group(4) or "read"),
                            re.sub(r"\s+", "", m.group(6)))
        for m in _BINDING.finditer(code)
    }


def _entry_bindings(code: str, bindings: dict[str, Binding]) -> dict[str, tuple[Binding, ...]]:
    """Each entry point's bindings: those named in its body or in any function it calls, transitively."""
    bodies = _function_bodies(code)
    names_in = {fn: set(_IDENTIFIER.findall(body)) for fn, body in bodies.items()}
    entries = {}
    for match in _ATTRIBUTED_FN.finditer(code):
        if "@compute" not in match.group(1):
            continue
        entry = match.group(2)
        seen, todo = set(), [entry]
        while todo:
            fn = todo.pop()
            if fn in seen:
                continue
            seen.add(fn)
            todo.extend(n for n in names_in[fn] if n in bodies)
        used = set().union(*(names_in[fn] for fn in seen))
        entries[entry] = tuple(sorted((b for n, b in bindings.items() if n in used), key=lambda b: (b.group, b.binding)))
    return entries
