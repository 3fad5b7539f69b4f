"""Training checkpoints: a Hugging Face model directory plus `trainer_state/`.

Owns: what a trainer needs to continue exactly where it stopped, beside the model and its tokenizer:
`trainer_state/state.json` (the step, and the trainer's own entries: the task and start model of a GRPO run;
the optimizer's step, hyperparameters and per-parameter steps), `trainer_state/optimizer.safetensors` (the
optimizer's moments) and `trainer_config.json` (the resolved config). Randomness and the data position need no
file: both trainers derive them from (seed, step). The model files are `engine.hf`'s layout, so any checkpoint
loads in transformers as it is. Written atomically (temp directory, then rename) by `engine.hf.write_checkpoint`;
`recover` cleans up after a save that a kill cut short. Reading a checkpoint back checks every trainer file (a
missing or corrupt one is an `InputError` naming it) and that the tokenizer is there, before the weights load;
an optimizer state that does not fit the optimizer is an `InputError` naming its file (`load_optimizer_state`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from wgrpo.engine import InputError, recover_checkpoints

STATE_DIR = "trainer_state"
STATE_FILE = f"{STATE_DIR}/state.json"
OPTIMIZER_FILE = f"{STATE_DIR}/optimizer.safetensors"
CONFIG_FILE = "trainer_config.json"
TOKENIZER_FILE = "tokenizer.json"  # engine.hf's (and Hugging Face's) name for it


def save_training_checkpoint(directory: str | Path, model, tokenizer, optimizer, state: dict[str, Any],
                             config) -> Path:
    """Write model (or, with LoRA, its adapters as PEFT writes them) + tokenizer + trainer state (`state`: the step
    and the trainer's own entries) + optimizer + resolved config."""
    from wgrpo.engine import write_checkpoint

    opt_state = optimizer.state_dict()
    moments = {}
    per_param = []
    for index, entry in enumerate(opt_state["state"]):
        if entry is None:
            per_param.append(None)
            continue
        per_param.append({"step": entry["step"]})
        moments[f"{index}.exp_avg"] = np.ascontiguousarray(entry["exp_avg"], np.float32)
        moments[f"{index}.exp_avg_sq"] = np.ascontiguousarray(entry["exp_avg_sq"], np.float32)
    optimizer_meta = {"step": opt_state["step"], "hyperparameters": opt_state["hyperparameters"],
                      "state": per_param}
    resolved = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    extra = {
        STATE_FILE: {**state, "optimizer": optimizer_meta},
        OPTIMIZER_FILE: lambda path: save_file(moments, str(path)) if moments else path.write_bytes(b""),
        CONFIG_FILE: resolved,
    }
    if model.adapters is not None:  # a LoRA run saves its adapters only, as a PEFT directory
        from wgrpo.engine import save_adapter

        return save_adapter(directory, model, tokenizer=tokenizer, extra_files=extra)
    return write_checkpoint(directory, model.config, model.state_dict(), tokenizer=tokenizer, extra_files=extra)


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in the checkpoint file `path`, which holds `what` ("the trainer state"); InputError naming
    the file when it is missing, unreadable, not JSON or not an object."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing; {what} is part of every training checkpoint")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read {what}: {error}") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def read_state(directory: str | Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (`state.json`: step, task, ..., optimizer metadata), checked."""
    directory = Path(directory)
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise InputError(f"{directory} is not a training checkpoint: {STATE_FILE} is missing "
                         f"(a plain model directory can start a run with --model, not --resume)")
    state = read_json_object(state_path, "the trainer state")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise InputError(f"{state_path}: \"step\" must be a non-negative integer, got {step!r}")
    meta = state.get("optimizer")
    if not isinstance(meta, dict) or not {"step", "hyperparameters", "state"} <= set(meta):
        raise InputError(f"{state_path}: \"optimizer\" must hold the optimizer's step, hyperparameters and "
                         f"per-parameter state, got {meta!r:.80}")
    if not isinstance(meta["state"], list):
        raise InputError(f"{state_path}: \"optimizer\".\"state\" must be a list, got {meta['state']!r:.80}")
    return state


def load_training_state(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(trainer state, optimizer state dict for `load_optimizer_state`, saved config) of a checkpoint, read
    before its weights: a missing or corrupt file, the tokenizer's included, is an InputError naming it."""
    directory = Path(directory)
    state = read_state(directory)
    if not (directory / TOKENIZER_FILE).is_file():
        raise InputError(f"{directory}: no {TOKENIZER_FILE} next to the model; every training checkpoint holds "
                         f"the tokenizer it was trained with")
    config = read_json_object(directory / CONFIG_FILE, "the trainer config")
    state_path = directory / STATE_FILE
    meta = state.pop("optimizer")
    optimizer_path = directory / OPTIMIZER_FILE
    if not optimizer_path.is_file():
        raise InputError(f"{optimizer_path}: missing; the optimizer state is part of every training checkpoint")
    try:
        moments = load_file(str(optimizer_path)) if optimizer_path.stat().st_size else {}
    except (OSError, SafetensorError) as error:
        raise InputError(f"{optimizer_path}: corrupt optimizer state: {error}") from None
    per_param = []
    for index, entry in enumerate(meta["state"]):
        if entry is None:
            per_param.append(None)
            continue
        if not isinstance(entry, dict) or "step" not in entry:
            raise InputError(f"{state_path}: optimizer state of parameter {index} must be null or hold its "
                             f"\"step\", got {entry!r:.80}")
        try:
            per_param.append({"step": entry["step"], "exp_avg": moments[f"{index}.exp_avg"],
                              "exp_avg_sq": moments[f"{index}.exp_avg_sq"]})
        except KeyError as missing:
            raise InputError(f"{optimizer_path}: tensor {missing} is missing") from None
    optimizer_state = {"step": meta["step"], "hyperparameters": meta["hyperparameters"], "state": per_param}
    return state, optimizer_state, config


def load_optimizer_state(optimizer, optimizer_state: dict[str, Any], directory: str | Path) -> None:
    """`optimizer.load_state_dict(optimizer_state)`, the state read from the checkpoint `directory`; a state that
    does not fit the optimizer (moments of another shape, another count of parameters) is an InputError naming
    the checkpoint's optimizer file."""
    try:
        optimizer.load_state_dict(optimizer_state)
    except InputError as error:
        raise InputError(f"{Path(directory) / OPTIMIZER_FILE}: {error}") from None


def recover(directory: str | Path) -> None:
    """Clean up after saves that a crash or a kill cut short in `directory` (stale temp directories, an
    interrupted replacement; `engine.recover_checkpoints`), and say on stderr what was done."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for action in recover_checkpoints(directory):
        print(f"wgrpo: checkpoints in {directory}: {action}", file=sys.stderr)


def recover_beside(checkpoint: str | Path, *, always: bool = False) -> None:
    """Before reading the checkpoint directory `checkpoint`: clean up after killed saves in the directory that
    holds it (`recover`, which says on stderr what it did), so that a checkpoint a killed
    replacement left aside as `.NAME.old-*` is back under its name.

    A checkpoint to resume from is recovered `always`: its run writes beside it and recovers there anyway.
    Another checkpoint is read only (a --model to start from, one to evaluate), and another run may be saving
    beside it, whose temporary directories `recover` would remove: so only when it is missing, the one case
    where recovery can bring it back."""
    checkpoint = Path(checkpoint).absolute()
    if always or not checkpoint.is_dir():
        recover(checkpoint.parent)


def step_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the `checkpoint-N` training checkpoints in `directory` (those with their state file),
    oldest first."""
    found = []
    for path in Path(directory).glob("checkpoint-*"):
        number = path.name.rpartition("-")[2]
        if number.isdigit() and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(number), path))
    return sorted(found)


def prune_checkpoints(directory: str | Path, limit: int, *, keep: str | Path) -> list[Path]:
    """Delete the oldest `checkpoint-N` directories of `directory` beyond the newest `limit` (transformers'
    save_total_limit), never `keep` (the one just written); returns what was deleted."""
    import shutil

    checkpoints = [path for _, path in step_checkpoints(directory)]
    keep = Path(keep).resolve()
    doomed = [path for path in checkpoints[:max(0, len(checkpoints) - limit)] if path.resolve() != keep]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def last_checkpoint(directory: str | Path) -> Path | None:
    """The training checkpoint in `directory` with the most steps done (a `checkpoint-N`, or `final`), or None:
    what `train(resume_from_checkpoint=True)` continues from, as transformers' get_last_checkpoint."""
    candidates = list(step_checkpoints(directory))
    final = Path(directory) / "final"
    if (final / STATE_FILE).is_file():
        candidates.append((int(read_state(final)["step"]), final))
    return max(candidates, key=lambda item: item[0])[1] if candidates else None
