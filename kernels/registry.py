"""Loads the WGSL kernel families and describes their bindings.

Owns: reading `kernels/<family>.wgsl`, specializing its element type (`alias elem = f32;` becomes f16 on
request), and finding which bindings each entry point uses. Knows nothing of wgpu: `engine.runtime` turns
these descriptions into pipelines. Must not import `engine` or `rl`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
ELEMENT_TYPES = ("f32", "f16")

_BINDING = re.compile(
    r"@group\((\d+)\)\s*@binding\((\d+)\)\s*var<\s*(uniform|storage)\s*(?:,\s*(read|read_write)\s*)?>\s*(\w+)\s*:"
)
_FUNCTION = re.compile(r"\bfn\s+(\w+)\s*\(")
_ENTRY = re.compile(r"@compute\b[^;{]*?\bfn\s+(\w+)\s*\(")
_IDENTIFIER = re.compile(r"(?<![.\w])[A-Za-z_]\w*")  # not after a dot: `v.x` is a swizzle, not `x`
_ELEM_ALIAS = re.compile(r"^alias\s+elem\s*=\s*f32\s*;\s*$", re.MULTILINE)
# Entries that need the `subgroup` feature sit between these lines; naga rejects the whole module without it.
_SUBGROUP_BLOCK = re.compile(r"^// BEGIN subgroup$.*?^// END subgroup$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Binding:
    """One resource variable: `kind` is "uniform", "read" or "read_write"."""

    name: str
    group: int
    binding: int
    kind: str


@dataclass(frozen=True)
class KernelSource:
    family: str
    elem: str
    code: str
    entries: dict[str, tuple[Binding, ...]]  # entry point -> bindings it touches, by binding number

    def bindings(self, entry: str) -> tuple[Binding, ...]:
        if entry not in self.entries:
            raise ValueError(
                f"kernel family {self.family!r} has no entry point {entry!r}; it has {sorted(self.entries)}"
            )
        return self.entries[entry]


def families() -> list[str]:
    return sorted(p.stem for p in KERNEL_DIR.glob("*.wgsl"))


@lru_cache(maxsize=None)
def load(family: str, elem: str = "f32", subgroups: bool = True) -> KernelSource:
    """The source of `kernels/<family>.wgsl` with `elem` as its element type, and its entry points.

    With `subgroups=False` the `// BEGIN subgroup` ... `// END subgroup` block is cut out, so the rest of the
    family compiles on adapters without the feature (its entries are then absent).
    """
    if elem not in ELEMENT_TYPES:
        raise ValueError(f"elem must be one of {ELEMENT_TYPES}, got {elem!r}")
    path = KERNEL_DIR / f"{family}.wgsl"
    if not path.is_file():
        raise ValueError(f"no kernel family {family!r}: {path} does not exist; known: {families()}")
    code = path.read_text()
    if not subgroups:
        code = _SUBGROUP_BLOCK.sub("", code)
    if elem != "f32":
        if not _ELEM_ALIAS.search(code):
            raise ValueError(f"{path.name} has no `alias elem = f32;` line, so it cannot be built for {elem}")
        code = "enable f16;\n" + _ELEM_ALIAS.sub(f"alias elem = {elem};", code, count=1)
    return KernelSource(family, elem, code, _entry_bindings(_strip_comments(code)))


def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", code)


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


def _entry_bindings(code: str) -> dict[str, tuple[Binding, ...]]:
    """Each entry point's bindings: those named in its body or in any function it calls, transitively."""
    bindings = {
        m.group(5): Binding(m.group(5), int(m.group(1)), int(m.group(2)), "uniform" if m.group(3) == "uniform" else (m.group(4) or "read"))
        for m in _BINDING.finditer(code)
    }
    bodies = _function_bodies(code)
    names_in = {fn: set(_IDENTIFIER.findall(body)) for fn, body in bodies.items()}
    entries = {}
    for entry in _ENTRY.findall(code):
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
