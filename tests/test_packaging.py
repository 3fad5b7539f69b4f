"""The wheel: one top-level package, `wgrpo`, holding every module and kernel of the repository's folders.

Built from a copy of the tracked files with the installed setuptools (no build isolation, so no network).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("kernels", "engine", "rl", "tools")


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the wheel is built from the tracked files")
    return [line for line in out.splitlines() if (REPO / line).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools", reason="the test extra installs setuptools to build the wheel offline")
    source = tmp_path_factory.mktemp("source")
    for name in _tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(source)], check=True, capture_output=True)
    (path,) = out.glob("wgrpo-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_has_only_wgrpo_at_its_top_level(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"wgrpo"}


def test_wheel_holds_every_module_and_kernel(wheel):
    expected = {"wgrpo/__init__.py"} | {
        "wgrpo/" + name for name in _tracked_files()
        if name.split("/")[0] in FOLDERS and name.endswith((".py", ".wgsl"))
    }
    assert expected - set(wheel.namelist()) == set()
    assert not [n for n in wheel.namelist() if n.startswith(("wgrpo/tests", "tests/"))]


def test_console_script_points_into_the_package(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "wgrpo = wgrpo.tools.cli:main" in wheel.read(entry_points).decode()
