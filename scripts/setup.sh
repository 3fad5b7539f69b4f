#!/usr/bin/env bash
# Sets up wgrpo on a fresh Linux machine: a GPU adapter (Mesa's lavapipe when there is no GPU), a virtual
# environment in .venv, and the package with the extras named in $WGRPO_EXTRAS (default: none).
# Safe to run again: every step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    say "wgrpo needs Python >= 3.10 with venv; install it (Debian/Ubuntu: apt-get install python3 python3-venv)"
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$python" -m venv .venv
fi
extras=${WGRPO_EXTRAS:-}
say "installing wgrpo${extras:+[$extras]} into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"

# Which adapters can wgpu see? "hardware", "software" or "none".
adapters() {
    .venv/bin/python - <<'PY' 2>/dev/null || echo none
import wgpu
kinds = {a.info.get("adapter_type") for a in wgpu.gpu.enumerate_adapters_sync()}
print("hardware" if kinds - {"CPU", None} else "software" if kinds else "none")
PY
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# The archive this machine's apt already uses for bookworm (its own mirror or proxy), as apt reports it.
bookworm_archive() {
    apt-cache policy 2>/dev/null | awk '$3 == "bookworm/main" && $2 ~ /:\/\// {print $2; exit}'
}

add_backports() {
    # Debian bookworm's own Mesa 22 lavapipe works but is ~5x slower for compute than Mesa 25 from backports.
    grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    as_root apt-get update -q >/dev/null
    local archive keyring=/usr/share/keyrings/debian-archive-keyring.gpg options=""
    archive=$(bookworm_archive)
    if [ -z "$archive" ]; then
        say "apt has no source for bookworm/main, so bookworm-backports cannot be derived from it: installing"
        say "bookworm's own (slower) Mesa. For Mesa 25, add a 'bookworm-backports main' line for your Debian"
        say "mirror to /etc/apt/sources.list.d/ and run this script again."
        return 1
    fi
    [ -r "$keyring" ] && options="[signed-by=$keyring] "
    say "adding bookworm-backports from $archive to apt sources"
    printf 'deb %s%s bookworm-backports main\n' "$options" "$archive" | \
        as_root tee /etc/apt/sources.list.d/wgrpo-backports.list >/dev/null
}

install_lavapipe() {
    if [ -r /etc/os-release ] && . /etc/os-release && [ "${VERSION_CODENAME:-}" = bookworm ] && command -v apt-get >/dev/null; then
        if add_backports; then
            as_root apt-get update -q >/dev/null
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q -t bookworm-backports mesa-vulkan-drivers >/dev/null
        else
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q mesa-vulkan-drivers >/dev/null
        fi
    elif command -v apt-get >/dev/null; then
        as_root apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q mesa-vulkan-drivers >/dev/null
    elif command -v dnf >/dev/null; then
        as_root dnf install -y -q mesa-vulkan-drivers >/dev/null
    else
        return 1
    fi
}

found=$(adapters)
if [ "$found" = hardware ]; then
    say "found a GPU adapter"
elif [ "$found" = software ] && [ "${WGRPO_UPDATE_LAVAPIPE:-1}" = 0 ]; then
    say "found a software adapter"
else
    if [ "$found" = none ]; then say "no GPU adapter: installing Mesa's lavapipe (software Vulkan)"
    else say "only a software adapter: installing or updating Mesa's lavapipe"; fi
    if ! install_lavapipe; then
        say "could not install it here. Install your GPU's Vulkan driver, or Mesa's lavapipe:"
        say "  Debian bookworm: apt-get install -t bookworm-backports mesa-vulkan-drivers"
        say "  Debian/Ubuntu:   apt-get install mesa-vulkan-drivers;  Fedora: dnf install mesa-vulkan-drivers"
        [ "$found" = none ] && exit 1
    fi
    [ "$(adapters)" = none ] && { say "still no adapter after installing lavapipe; see 'wgrpo devices'"; exit 1; }
fi
# The code task's sandbox isolates model-written programs with bubblewrap; the test suite exercises it.
case ",$extras," in
    *,test,*)
        if ! command -v bwrap >/dev/null; then
            say "installing bubblewrap for the code sandbox"
            if command -v apt-get >/dev/null; then
                DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q bubblewrap >/dev/null || \
                    say "could not install bubblewrap: sandbox tests fall back to resource limits alone"
            else
                say "install bubblewrap with your package manager for full sandbox isolation"
            fi
        fi ;;
esac
say "ready: .venv/bin/wgrpo"
