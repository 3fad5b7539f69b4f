"""Checkpoint writes under real faults: a writer SIGKILLed at every step of a save (with the atomic exchange and
with the two-rename fallback) and at random moments of a loop of saves; a full disk, a file-size limit and a
read-only file system. After each, `recover_checkpoints` leaves no hidden directory and the checkpoint at the
target is the previous one or the new one, whole."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.engine.checkpoint_child import CONFIG, STATE_FILE, weights
from wgrpo.engine import CheckpointWriteError, InputError, recover_checkpoints
from wgrpo.engine.atomic_dir import _exchange
from wgrpo.engine.hf import load_checkpoint, write_checkpoint

CHILD = Path(__file__).with_name("checkpoint_child.py")
OLD, NEW = 1, 2


def save(directory: Path, seed: int) -> None:
    write_checkpoint(directory, CONFIG, weights(seed), extra_files={STATE_FILE: {"seed": seed}})


def run_child(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=120)


def seed_of(directory: Path) -> int:
    """The seed whose checkpoint `directory` holds, after checking every tensor and the trainer state agree."""
    config, state = load_checkpoint(directory)
    seed = json.loads((directory / STATE_FILE).read_text())["seed"]
    assert config == CONFIG
    for name, array in weights(seed).items():
        np.testing.assert_array_equal(state[name], array, err_msg=f"{name} of seed {seed}")
    return seed


def hidden(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


def exchange_works(directory: Path) -> bool:
    (directory / "probe-a").mkdir()
    (directory / "probe-b").mkdir()
    try:
        return _exchange(directory / "probe-a", directory / "probe-b")
    finally:
        os.rmdir(directory / "probe-a")
        os.rmdir(directory / "probe-b")


# ---- the exchange itself ---------------------------------------------------------------------------------------

def test_the_exchange_is_atomic_here(tmp_path):
    """On Linux, renameat2(RENAME_EXCHANGE) must work on the file system the tests (and /tmp) use; elsewhere the
    fallback is what runs, and the kill tests below cover it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only; the two-rename fallback runs here")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "from_a").touch()
    assert _exchange(tmp_path / "a", tmp_path / "b")
    assert os.listdir(tmp_path / "b") == ["from_a"] and os.listdir(tmp_path / "a") == []
    with pytest.raises(FileNotFoundError):
        _exchange(tmp_path / "missing", tmp_path / "b")


# ---- kills at chosen points ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kill_at,fallback,survivor", [
    ("mid-weights", False, OLD),
    ("before-swap", False, OLD),
    ("after-swap", False, NEW),
    ("mid-cleanup", False, NEW),
    ("mid-weights", True, OLD),
    ("before-renames", True, OLD),
    ("between-renames", True, OLD),  # the target is missing until recover_checkpoints renames the old copy back
    ("mid-cleanup", True, NEW),
])
def test_a_kill_during_a_replacement_leaves_the_old_or_the_new_checkpoint(tmp_path, kill_at, fallback, survivor):
    if not fallback and not exchange_works(tmp_path):
        pytest.skip("no atomic exchange on this OS or file system: the fallback cases are what runs here")
    target = tmp_path / "final"
    save(target, OLD)
    result = run_child("write", str(target), str(NEW), kill_at, *(["fallback"] if fallback else []))
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert hidden(tmp_path), "the kill should have left a hidden directory behind"

    actions = recover_checkpoints(tmp_path)
    assert actions and all(str(tmp_path) in line for line in actions)
    assert sorted(os.listdir(tmp_path)) == ["final"]
    assert seed_of(target) == survivor
    assert recover_checkpoints(tmp_path) == []
    save(target, 3)  # and the next save works normally
    assert seed_of(target) == 3 and sorted(os.listdir(tmp_path)) == ["final"]


def test_a_kill_during_the_first_save_leaves_nothing(tmp_path):
    result = run_child("write", str(tmp_path / "checkpoint-10"), str(NEW), "mid-weights")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert hidden(tmp_path)
    assert len(recover_checkpoints(tmp_path)) == 1
    assert os.listdir(tmp_path) == []


def test_a_recovered_checkpoint_loads_with_load_pretrained(tmp_path, device):
    from wgrpo.engine import load_pretrained

    target = tmp_path / "final"
    save(target, OLD)
    result = run_child("write", str(target), str(NEW), "between-renames", "fallback")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not target.exists()  # the window the fallback has and recover_checkpoints closes
    assert "restored" in recover_checkpoints(tmp_path)[0]
    model, _ = load_pretrained(target, device)
    for name, array in weights(OLD).items():
        np.testing.assert_array_equal(model.params[name].numpy(), array, err_msg=name)


def test_kills_at_random_moments_of_a_loop_of_saves(tmp_path):
    target = tmp_path / "final"
    save(target, 0)
    rng = random.Random(0)
    held, seed = 0, 1  # the seed `target` holds, the first seed the next writer saves
    for _ in range(6):
        child = subprocess.Popen([sys.executable, str(CHILD), "loop", str(target), str(seed)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            time.sleep(rng.uniform(0.0, 0.25))  # a random moment of some save: the kill is what is tested
            child.kill()
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == -signal.SIGKILL, err
        saved = [int(line) for line in out.split()]
        recover_checkpoints(tmp_path)
        assert sorted(os.listdir(tmp_path)) == ["final"]
        in_flight = saved[-1] + 1 if saved else seed  # it may or may not have taken its place
        assert seed_of(target) in ((saved[-1] if saved else held), in_flight)
        held, seed = seed_of(target), in_flight + 1


def test_recover_checkpoints_touches_nothing_else(tmp_path):
    save(tmp_path / "checkpoint-5", 5)
    for name in ("notes.tmp-1", ".cache", ".final.tmp-"):  # not hidden, not ours, no suffix
        (tmp_path / name).mkdir()
    (tmp_path / ".final.tmp-abc").touch()  # a file, where a checkpoint write leaves directories
    (tmp_path / "metrics.jsonl").touch()
    before = sorted(os.listdir(tmp_path))
    assert recover_checkpoints(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == before
    assert recover_checkpoints(tmp_path / "missing") == []


def test_recover_restores_the_newest_old_copy(tmp_path):
    """Two interrupted fallback replacements in a row (recovery never ran between them): the newer old copy wins."""
    save(tmp_path / "older", 4)
    save(tmp_path / "newer", 5)
    os.rename(tmp_path / "older", tmp_path / ".final.old-00000000000000010000aa")
    os.rename(tmp_path / "newer", tmp_path / ".final.old-00000000000000020000bb")
    actions = recover_checkpoints(tmp_path)
    assert len(actions) == 2 and "restored" in actions[0] and "removed" in actions[1]
    assert sorted(os.listdir(tmp_path)) == ["final"] and seed_of(tmp_path / "final") == 5


# ---- disk full, file-size limits, read-only file systems --------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB tmpfs (needs root or CAP_SYS_ADMIN); skipped with the reason where mounting is refused."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


BIG = {"hidden_size": 128, "intermediate_size": 256, "vocab_size": 512}  # ~3 MB of float32 weights


def big_config():
    from dataclasses import replace

    return replace(CONFIG, **BIG)


def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(small_disk):
    from wgrpo.engine.hf import expected_shapes

    target = small_disk / "final"
    save(target, OLD)
    config = big_config()
    state = {name: np.ones(shape, np.float32) for name, shape in expected_shapes(config).items()}
    with pytest.raises(CheckpointWriteError) as info:
        write_checkpoint(target, config, state)
    message = str(info.value)
    assert message == (f"no space left on device (ENOSPC) while writing {target}/model.safetensors; "
                       f"the previous checkpoint is unchanged")
    assert isinstance(info.value, InputError) and info.value.errno == 28
    assert sorted(os.listdir(small_disk)) == ["final"]  # the temporary directory is gone, its space free again
    assert seed_of(target) == OLD
    save(target, NEW)  # the freed space is enough for a checkpoint of the old size
    assert seed_of(target) == NEW

    with pytest.raises(CheckpointWriteError, match=r"no space left on device .*; no checkpoint was written$"):
        write_checkpoint(small_disk / "checkpoint-7", config, state)
    assert sorted(os.listdir(small_disk)) == ["final"]


def test_a_read_only_file_system_is_one_line(small_disk):
    target = small_disk / "final"
    save(target, OLD)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    expected = (f"read-only file system (EROFS) while creating a temporary directory in {small_disk}; "
                f"the previous checkpoint is unchanged")
    with pytest.raises(CheckpointWriteError) as info:
        save(target, NEW)
    assert str(info.value) == expected
    assert seed_of(target) == OLD


def test_a_file_size_limit_is_one_line(tmp_path):
    """RLIMIT_FSIZE (no root needed): the kernel refuses writes past the limit with EFBIG."""
    pytest.importorskip("resource")
    target = tmp_path / "final"
    save(target, OLD)
    script = textwrap.dedent(f"""
        import resource
        from dataclasses import replace
        import numpy as np
        from wgrpo.engine import CheckpointWriteError
        from wgrpo.engine.hf import expected_shapes, write_checkpoint
        from tests.engine.checkpoint_child import CONFIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the old checkpoint is ~40 KB
        config = replace(CONFIG, **{BIG!r})
        try:
            write_checkpoint({str(target)!r}, config, {{n: np.ones(s, np.float32) for n, s in
                                                       expected_shapes(config).items()}})
        except CheckpointWriteError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"file too large (EFBIG) while writing {target}/model.safetensors; "
                                     f"the previous checkpoint is unchanged")
    assert sorted(os.listdir(tmp_path)) == ["final"] and seed_of(target) == OLD
