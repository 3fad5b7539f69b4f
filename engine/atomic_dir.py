"""Directories that appear whole or not at all: written under a hidden temporary name beside their target, then
swapped into place, with the clean-up after a writer that was killed half way.

Owns: the hidden names (`.<name>.tmp-*` for a directory being written, `.<name>.old-*` for a replaced one
awaiting removal), the swap (Linux's atomic `renameat2(RENAME_EXCHANGE)`, else two renames), and
`recover_checkpoints`. Knows nothing of what the directories hold (`engine.hf` writes checkpoints with it).
Host-only: the standard library only; must not import wgpu, numpy, `engine.device`/`engine.runtime` or `rl`.

Replacing an existing directory never passes through a moment where a kill leaves neither the old nor the new
one under the target's name: the exchange swaps both names in one system call; where a file system or OS lacks
it, the target is renamed aside to `.<name>.old-*` first, and `recover_checkpoints` renames it back when the
kill came before the new directory took its place.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

# a leftover of an interrupted write: `.<name>.tmp-<mkdtemp suffix>` or `.<name>.old-<stamp>`
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[A-Za-z0-9_]+$")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# errors by which renameat2 says "not here" (an old kernel or C library, a file system without the flag)
_EXCHANGE_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def make_temp_dir(target: str | os.PathLike) -> Path:
    """A new empty directory `.<name>.tmp-*` beside `target` (same file system, so it can be renamed into place),
    readable like a directory made by `mkdir` (mkdtemp's default is owner-only)."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)
    return tmp


def sync_tree(directory: str | os.PathLike) -> None:
    """fsync every file and directory under `directory`, so that once it is renamed into place a power cut
    cannot leave it with empty or partial files."""
    flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY  # Windows flushes only files opened for writing
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def commit_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete directory `new` at `target`, replacing a directory already there, then delete the old one.

    Raises OSError only while nothing has changed; after the swap, a failure to delete the old copy leaves it
    under a hidden name for `recover_checkpoints`."""
    new, target = Path(new), Path(target)
    replaced = None
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        replaced = new  # the exchange left the old directory under the temporary name
    else:
        replaced = target.parent / f".{target.name}.old-{time.time_ns():016x}{uuid.uuid4().hex[:6]}"
        os.rename(target, replaced)
        try:  # a kill between these two renames leaves only `replaced`, which recover_checkpoints renames back
            os.rename(new, target)
        except BaseException:
            os.rename(replaced, target)
            raise
    try:  # past the commit point: make it durable, best effort
        _fsync_dir(target.parent)
    except OSError:
        pass
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def recover_checkpoints(directory: str | os.PathLike) -> list[str]:
    """Clean up after checkpoint writes that were killed inside `directory` (a trainer's output directory);
    returns one line per action taken, for the log (empty when there was nothing to do).

    - A `.<name>.old-*` with no `<name>` beside it is a replacement killed between its two renames (only where the
      atomic exchange is unavailable): it is renamed back to `<name>`, so the previous checkpoint is there again.
    - Every other `.<name>.tmp-*` or `.<name>.old-*` directory is removed: a half-written checkpoint, a complete
      one whose write was killed before it took its place, or a replaced one whose deletion was cut short.

    Looks only at the entries directly inside `directory`. Call it before the first save and never while another
    process writes checkpoints there: a write in progress looks the same as a killed one.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    leftovers: dict[str, list[Path]] = {"tmp": [], "old": []}
    for entry in sorted(directory.iterdir()):
        match = _LEFTOVER.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            leftovers[match["kind"]].append(entry)
    actions = []
    for old in sorted(leftovers["old"], reverse=True):  # newest first: the stamps sort by time
        target = directory / _LEFTOVER.match(old.name)["name"]
        if not os.path.lexists(target):
            os.rename(old, target)
            actions.append(f"restored {target} from {old.name} (its replacement was interrupted)")
            continue
        shutil.rmtree(old)
        actions.append(f"removed {old} (a replaced checkpoint whose deletion was interrupted)")
    for tmp in leftovers["tmp"]:
        shutil.rmtree(tmp)
        actions.append(f"removed {tmp} (left by an interrupted checkpoint write)")
    if actions:
        _fsync_dir(directory)
    return actions


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically; False where this OS or file system cannot (nothing changed then)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(b), None, str(a))


@functools.lru_cache(maxsize=None)
def _renameat2():
    """glibc's (>= 2.28) `renameat2`, or None off Linux or where the C library lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory's entries (a rename is durable only then); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):  # Windows opens no directories
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # a file system without dir fsync
            raise
    finally:
        os.close(fd)
