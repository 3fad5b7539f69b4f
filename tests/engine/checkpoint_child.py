"""A checkpoint writer for tests to kill: run as `python checkpoint_child.py DIR MODE ...` in a subprocess.

  write DIR SEED KILL_AT [fallback]  write checkpoint DIR with the weights of SEED, SIGKILLing itself at KILL_AT
                                     (see KILL_POINTS); `fallback` takes away the atomic exchange, as on a file
                                     system that refuses it
  loop DIR SEED                      write DIR with SEED, SEED + 1, ... forever, printing each seed once its
                                     checkpoint is in place, until killed from outside

The kill points wrap the functions `write_checkpoint` calls; what dies is a real process, mid-way through real
system calls, and what it leaves on disk is what the parent test inspects.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

from wgrpo.engine import atomic_dir, hf
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.hf import expected_shapes, write_checkpoint

CONFIG = ModelConfig(architecture="llama", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     intermediate_size=48, bos_token_id=1, eos_token_id=2)
STATE_FILE = "trainer_state/state.json"


def weights(seed: int) -> dict[str, np.ndarray]:
    """The checkpoint of `seed`: every tensor distinct from every other seed's."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in expected_shapes(CONFIG).items()}


def save(directory: Path, seed: int) -> None:
    write_checkpoint(directory, CONFIG, weights(seed), extra_files={STATE_FILE: {"seed": seed}})


def die(*args, **kwargs) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_after(function):
    """`function`, that SIGKILLs the process once its first call has returned."""
    def wrapped(*args, **kwargs):
        function(*args, **kwargs)
        die()
    return wrapped


def _half_written_weights(path, tensors):
    real_write_safetensors(path, tensors)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    die()


def _partly_deleted(path, *args, **kwargs):
    for root, _, files in os.walk(path):
        for name in files[:2]:
            os.remove(os.path.join(root, name))
    die()


real_write_safetensors = hf.write_safetensors

# where to die -> how to arrange it (the replaced target is the previous checkpoint, `new` the one being written)
KILL_POINTS = {
    "mid-weights": lambda: setattr(hf, "write_safetensors", _half_written_weights),
    "before-swap": lambda: setattr(atomic_dir, "_exchange", die),
    "after-swap": lambda: setattr(atomic_dir, "_exchange", _kill_after(atomic_dir._exchange)),
    "mid-cleanup": lambda: setattr(atomic_dir.shutil, "rmtree", _partly_deleted),
    # with the fallback's two renames: target -> .old, then new -> target
    "before-renames": lambda: setattr(atomic_dir.os, "rename", die),
    "between-renames": lambda: setattr(atomic_dir.os, "rename", _kill_after(os.rename)),
}


def main(argv: list[str]) -> None:
    mode, directory, seed = argv[0], Path(argv[1]), int(argv[2])
    if mode == "write":
        if "fallback" in argv[4:]:
            atomic_dir._exchange = lambda a, b: False
        KILL_POINTS[argv[3]]()
        save(directory, seed)
        sys.exit("the kill point was never reached")
    if mode == "loop":
        print("ready", flush=True)
        while True:
            save(directory, seed)
            print(seed, flush=True)
            seed += 1
    sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
