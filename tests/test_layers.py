"""The house: one import root, and imports that flow one way, kernels <- engine <- rl <- tools.

Every import statement of every module (those inside functions too) is read from the source, and every module
is imported for real.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("kernels", "engine", "rl", "tools")  # each may import those before it
# GRPO's algorithm must not depend on the training application built over it (its step loop, and that loop
# scaled out on Ray)
APPLICATION = ("wgrpo.rl.train", "wgrpo.rl.cluster")
# the one module that imports ray (the ray extra)
RAY_MODULE = "wgrpo.rl.cluster.ray_cluster"


def _package_files() -> list[tuple[str, Path]]:
    """(dotted module name, path) of every module of the package."""
    found = [("wgrpo", REPO / "wgrpo" / "__init__.py")]
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(("wgrpo." + ".".join(parts), path))
    return found


FILES = _package_files()
MODULES = {m for m, _ in FILES}


def _imports(path: Path, module: str) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, named by the statement) of every import in the file, relative ones
    resolved; `from a import b` also imports `a.b` (not named by the statement) when that is one of ours."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name, True) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                target = f"{base}.{node.module}" if node.module else base
            names.append((node.lineno, target, True))
            names.extend((node.lineno, f"{target}.{alias.name}", False) for alias in node.names
                         if f"{target}.{alias.name}" in MODULES)
    return names


def _layer(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "wgrpo" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None




@pytest.mark.parametrize("module,path", FILES, ids=[m for m, _ in FILES])
def test_imports_flow_one_way(module, path):
    layer = _layer(module)
    problems = []
    for line, name, named in _imports(path, module):
        top = name.split(".")[0]
        where = f"{path.relative_to(REPO)}:{line}: {name}"
        if top in LAYERS:
            problems.append(f"{where}: import it as wgrpo.{name}")
        target = _layer(name)
        if layer is None:  # the top-level package re-exports from every layer
            continue
        if target is not None and LAYERS.index(target) > LAYERS.index(layer):
            problems.append(f"{where}: {layer} must not import {target}")
        if layer == "kernels" and target not in (None, "kernels"):
            problems.append(f"{where}: kernels import nothing of ours")
        if layer == "rl":
            if top == "wgpu":
                problems.append(f"{where}: rl never imports wgpu")
            if named and target == "engine" and name != "wgrpo.engine":
                problems.append(f"{where}: rl uses the engine's public surface, `from wgrpo.engine import ...`")
            if not module.startswith(APPLICATION) and name.startswith(APPLICATION):
                problems.append(f"{where}: GRPO's algorithm must not import the training application")
        if top == "ray" and module != RAY_MODULE:
            problems.append(f"{where}: only {RAY_MODULE} imports ray")
    assert not problems, "\n".join(problems)


def test_every_module_imports():
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    names = [m for m, _ in FILES if not m.endswith("sandbox_child")]  # a script run inside the sandbox
    if importlib.util.find_spec("ray") is None:  # the ray extra is not installed: its one module cannot import
        names.remove(RAY_MODULE)
    subprocess.run([sys.executable, "-c", code, *names], check=True, cwd="/")


def test_top_level_api_resolves_lazily():
    code = ("import sys, wgrpo\n"
            "assert 'wgrpo.engine' not in sys.modules\n"
            "missing = [n for n in wgrpo.__all__ if getattr(wgrpo, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert wgrpo.Tensor.__module__ == 'wgrpo.engine.tensor'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
