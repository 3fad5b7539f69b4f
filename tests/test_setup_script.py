"""scripts/setup.sh: bookworm-backports comes from the archive the machine's apt already uses, never from an
address written in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "scripts" / "setup.sh"

POLICY = """Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://mirror.example.internal/debian-security bookworm-security/main amd64 Packages
     release v=12,o=Debian,a=stable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64
 500 http://apt-proxy.example.internal:3142/debian bookworm/main amd64 Packages
     release v=12.11,o=Debian,a=stable,n=bookworm,l=Debian,c=main,b=amd64
"""


def _run(function: str, policy: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run one function of setup.sh with `apt-cache policy` printing `policy` and apt sources in tmp_path."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (tmp_path / "policy.txt").write_text(policy)
    (fake / "apt-cache").write_text(f"#!/bin/sh\ncat {tmp_path / 'policy.txt'}\n")
    (fake / "apt-cache").chmod(0o755)
    functions = re.findall(r"^(?:bookworm_archive|add_backports)\(\) \{.*?^\}", SETUP.read_text(), re.M | re.S)
    script = "\n".join([
        'say() { echo "[setup] $*"; }',
        'as_root() { "$@"; }',  # the sources are redirected to tmp_path below
        *(f.replace("/etc/apt/", f"{tmp_path}/apt/") for f in functions),
        function,
    ])
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", script.replace("as_root apt-get update -q >/dev/null", ":")],
                          capture_output=True, text=True, env=env)


def test_no_mirror_address_in_the_scripts():
    for script in (REPO / "scripts").glob("*.sh"):
        assert not re.search(r"\w+://", script.read_text()), f"{script.name} names an address"


def test_backports_use_the_archive_apt_already_uses(tmp_path):
    result = _run("add_backports", POLICY, tmp_path)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "apt" / "sources.list.d" / "wgrpo-backports.list").read_text()
    assert re.fullmatch(r"deb (\[signed-by=\S+\] )?http://apt-proxy\.example\.internal:3142/debian "
                        r"bookworm-backports main\n", written), written


def test_without_a_bookworm_source_it_says_what_to_do(tmp_path):
    result = _run("add_backports", "Package files:\n 100 /var/lib/dpkg/status\n", tmp_path)
    assert result.returncode == 1
    assert "bookworm-backports main" in result.stdout and "sources.list.d" in result.stdout
    assert not (tmp_path / "apt" / "sources.list.d" / "wgrpo-backports.list").exists()


def test_an_existing_backports_source_is_kept(tmp_path):
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    (tmp_path / "apt" / "sources.list.d" / "mine.list").write_text("deb http://x/debian bookworm-backports main\n")
    assert _run("add_backports", POLICY, tmp_path).returncode == 0
    assert not (tmp_path / "apt" / "sources.list.d" / "wgrpo-backports.list").exists()
