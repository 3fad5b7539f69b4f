"""Hugging Face checkpoints on the host: `config.json`, `model.safetensors` (single or sharded), `tokenizer.json`.

Owns: reading a checkpoint (config, finite weights checked against the layout of `engine.hf_layout`; the tokenizer
files are `engine.hf_tokenizer`'s), and directory writes that a kill or a full disk cannot half-do (`write_directory`,
which `write_checkpoint` and `engine.peft_io.save_adapter` use; `engine.atomic_dir` swaps the finished directory into
place). Everything here is numpy; the GPU model uploads what `load_checkpoint`
returns and downloads what `write_checkpoint` takes. Errors in files are `InputError`s naming the file.
Host-only: must not import wgpu, torch, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from wgrpo.engine.atomic_dir import commit_dir, make_temp_dir, sync_tree
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import FLOAT32, convert, dtype_name, float_dtype, is_float
from wgrpo.engine.errors import CheckpointWriteError, InputError
from wgrpo.engine.json_file import read_json
from wgrpo.engine.hf_layout import check_state_dict, expected_shapes
from wgrpo.engine.hf_tokenizer import (TOKENIZER_FILE, check_tokenizer_fits, check_tokenizer_type, load_tokenizer,
                                       write_tokenizer_files)
from wgrpo.engine.safetensors_io import read_safetensors, read_sharded, tensor_dtype, write_safetensors

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"

# what `write_directory` writes as one file: raw bytes, text, a JSON-serializable dict/list, or a callable that
# writes the given path (and may write more files beside it, as the tokenizer's writer does)
FileContent = bytes | str | dict | list | Callable[[Path], None]
ExtraFile = FileContent  # the values of write_checkpoint's and save_adapter's extra_files


# ---- reading ---------------------------------------------------------------------------------------------------

def read_config(directory: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` of the checkpoint directory's `config.json`."""
    path = Path(directory) / CONFIG_FILE
    return ModelConfig.from_hf_dict(_read_json(path), source=str(path))


def read_state_dict(directory: str | os.PathLike, require_finite: bool = False,
                    keep_dtype: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as float32 numpy arrays (with `keep_dtype`: as stored, bfloat16 as
    `engine.dtypes.BFLOAT16`), from `model.safetensors` or, when absent, the shards of
    `model.safetensors.index.json`. Names are HF's; nothing is checked against a config (`check_state_dict`).
    With `require_finite`, a tensor holding NaN or infinite values raises InputError naming its file."""
    directory = Path(directory)
    if (directory / WEIGHTS_FILE).is_file():
        return read_safetensors(directory / WEIGHTS_FILE, require_finite=require_finite, keep_dtype=keep_dtype)
    if (directory / INDEX_FILE).is_file():
        return read_sharded(directory / INDEX_FILE, require_finite=require_finite, keep_dtype=keep_dtype)
    hint = ""
    if any((directory / name).exists() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        hint = " (found pytorch_model.bin: convert it to safetensors; pickled weights are not read)"
    raise InputError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE}{hint}")


def load_checkpoint(directory: str | os.PathLike, dtype: str = "auto") -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """`read_config` + `read_state_dict` + `check_state_dict`: the config and exactly the tensors the model needs,
    every one finite (a NaN or an infinity in a weight raises InputError naming the file and the tensor).

    `dtype` "auto" keeps each tensor's stored dtype (bfloat16 as `engine.dtypes.BFLOAT16`); "float32",
    "bfloat16" or "float16" converts every tensor to it."""
    directory = Path(directory)
    target = None if dtype == "auto" else float_dtype(dtype, "load_checkpoint: dtype")
    config = read_config(directory)
    source = directory / (WEIGHTS_FILE if (directory / WEIGHTS_FILE).is_file() else INDEX_FILE)
    state = read_state_dict(directory, require_finite=True, keep_dtype=target != FLOAT32)
    if target is not None:
        state = {name: convert(array, target) for name, array in state.items()}
    return config, check_state_dict(state, config, source=str(source))


def stored_dtype(directory: str | os.PathLike) -> np.dtype:
    """The dtype the checkpoint stores its embedding in, from the safetensors header alone (no weights read)."""
    directory = Path(directory)
    name, path = "model.embed_tokens.weight", directory / WEIGHTS_FILE
    if not path.is_file():
        index = read_json(directory / INDEX_FILE) if (directory / INDEX_FILE).is_file() else {}
        shard = index.get("weight_map", {}).get(name) if isinstance(index, dict) else None
        if not isinstance(shard, str):
            raise InputError(f"{directory}: no {WEIGHTS_FILE}, nor an {INDEX_FILE} naming the shard of {name!r}")
        path = directory / shard
    return tensor_dtype(path, name)


def checkpoint_dtype(state: Mapping[str, np.ndarray]) -> np.dtype:
    """The dtype a model of this state dict holds: its embedding's (norms and biases are often kept wider)."""
    return np.asarray(state["model.embed_tokens.weight"]).dtype


# ---- writing ---------------------------------------------------------------------------------------------------

def generation_config_dict(config: ModelConfig) -> dict[str, Any]:
    """A minimal `generation_config.json`: the special token ids."""
    return {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id}


def write_checkpoint(directory: str | os.PathLike, config: ModelConfig, state_dict: Mapping[str, Any],
                     tokenizer=None,
                     extra_files: Mapping[str, ExtraFile] | None = None) -> Path:
    """Write a Hugging Face checkpoint directory atomically and return its path.

    Files: config.json (its `torch_dtype` / `dtype` the embedding's), model.safetensors (each tensor in the dtype
    its array has: float32, float16 or `engine.dtypes.BFLOAT16`; a tied model has no lm_head.weight),
    generation_config.json,
    and with a tokenizer its files (a pretrained tokenizer's own tokenizer_config.json and chat templates
    unchanged; our own tokenizers' generated from the config's eos/pad ids, else `<|endoftext|>`). `extra_files` maps relative paths (subdirectories allowed, e.g. "trainer_state/state.json")
    to bytes, text, a JSON dict/list, or a callable writing the given path; they are written last and may replace
    tokenizer_config.json or generation_config.json, not config.json or the weights.

    Written by `write_directory`: whenever the writer dies, `directory` holds the previous checkpoint or the new
    one, whole; a killed writer leaves hidden directories that `recover_checkpoints` cleans up. A full disk, a
    quota, a file-size limit or a read-only file system raises `CheckpointWriteError` (an InputError) naming the
    file and the cause, after removing the temporary directory.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"write_checkpoint: config must be a ModelConfig, got {type(config).__name__}")
    check_tokenizer_type(tokenizer, "write_checkpoint")
    target = Path(directory)
    tensors = check_state_dict(state_dict, config, source="write_checkpoint: state_dict")
    tensors = {name: np.asarray(array) for name, array in tensors.items()}
    for name, array in tensors.items():
        if not is_float(array.dtype):
            raise InputError(f"write_checkpoint: tensor {name!r} has dtype {dtype_name(array.dtype)}; expected "
                             f"floating point")
    hf_config = config.to_hf_dict()
    hf_config["torch_dtype"] = hf_config["dtype"] = dtype_name(checkpoint_dtype(tensors))
    extra_files = dict(extra_files or {})
    for name in extra_files:
        _check_extra_name(name)
    files: list[tuple[str, FileContent]] = [
        (CONFIG_FILE, hf_config),
        (GENERATION_CONFIG_FILE, generation_config_dict(config)),
        (WEIGHTS_FILE, lambda path: write_safetensors(path, tensors)),
    ]
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, config, "write_checkpoint: tokenizer", "write_checkpoint: config")
        files.append((TOKENIZER_FILE, lambda path: write_tokenizer_files(tokenizer, config, path.parent)))
    return write_directory(target, files + list(extra_files.items()), checkpoint=True)


# What a checkpoint directory holds: a directory holding anything else is not replaced by one (that would delete it)
CHECKPOINT_ENTRIES = frozenset({
    CONFIG_FILE, GENERATION_CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE, "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
    "added_tokens.json", "adapter_config.json", "adapter_model.safetensors", "trainer_config.json",
    "trainer_state", "README.md", ".gitattributes"})
_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")


def foreign_entries(directory: str | os.PathLike, written: Iterable[str] = ()) -> list[str]:
    """The entries of `directory` that no checkpoint holds (`CHECKPOINT_ENTRIES`, weight shards, and the top-level
    names in `written`), sorted: what replacing the directory with a checkpoint would delete."""
    allowed = CHECKPOINT_ENTRIES | {Path(name).parts[0] for name in written}
    return sorted(entry.name for entry in Path(directory).iterdir()
                  if entry.name not in allowed and not _SHARD.fullmatch(entry.name))


def write_directory(directory: str | os.PathLike,
                    files: Mapping[str, FileContent] | Iterable[tuple[str, FileContent]],
                    *, what: str = "checkpoint", checkpoint: bool = False) -> Path:
    """Write `files` (relative path -> content: bytes, text, a JSON dict/list, or a callable writing the given
    path) as the directory `directory`, atomically, and return its path. They are written in order, so a later
    one replaces what an earlier callable wrote beside its own file. Whatever `directory` held before is replaced
    whole: files not named here are gone afterwards. With `checkpoint` (a model or adapter directory), a directory
    that holds anything a checkpoint does not (`foreign_entries`: a run's metrics, other checkpoints, ...) is
    refused with an InputError naming it, before anything is written.

    Everything is written into a hidden temporary directory beside `directory`, flushed to disk, and swapped into
    place (`engine.atomic_dir.commit_dir`): a killed writer leaves `directory` as it was or as written, never
    half of it, and hidden directories that `recover_checkpoints` cleans up. An exception while writing removes
    the temporary directory and leaves `directory` as it was; a full disk, a quota, a file-size limit or a
    read-only file system raises `CheckpointWriteError` naming the file, the cause, and whether the previous
    `what` ("checkpoint", "adapter") is unchanged or none was written. Names and contents are checked first."""
    target = Path(directory)
    files = list(files.items() if isinstance(files, Mapping) else files)
    for name, content in files:
        if not isinstance(name, str) or not _is_inside(name):
            raise ValueError(f"write_directory: file name {name!r} must be a relative path inside the directory")
        if not (callable(content) or isinstance(content, (bytes, str, dict, list))):
            raise TypeError(f"write_directory: {name!r} must be bytes, str, a dict/list (JSON) or a callable(path), "
                            f"got {type(content).__name__}")
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a directory; cannot write the {what} there")
    existed = target.is_dir()
    foreign = foreign_entries(target, [name for name, _ in files]) if existed and checkpoint else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"{target}: holds {shown}, which writing the {what} there would delete (a {what} "
                         f"replaces its directory whole); write it into a directory of its own")
    with _reporting_write_errors(f"creating a temporary directory in {target.parent}", target.parent, existed, what):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(target)
    try:
        for name, content in files:
            with _reporting_write_errors(f"writing {target / name}", target / name, existed, what):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                _write_file(tmp / name, content)
        with _reporting_write_errors(f"flushing {target} to disk", target, existed, what):
            sync_tree(tmp)
        with _reporting_write_errors(f"moving the new {what} into place at {target}", target, existed, what):
            commit_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextmanager
def _reporting_write_errors(doing: str, path: Path, existed: bool, what: str):
    """Turn an operating-system failure (ENOSPC, EDQUOT, EFBIG, EROFS, EACCES, ...) inside the block into one
    `CheckpointWriteError` line saying what was being done to `path`. safetensors and tokenizers report such
    failures as their own exception types with "(os error N)" in the message; other exceptions pass unchanged."""
    try:
        yield
    except Exception as error:
        code = _os_error_code(error)
        if code is None:
            raise
        cause = os.strerror(code)
        cause = cause[:1].lower() + cause[1:] + (f" ({errno.errorcode[code]})" if code in errno.errorcode else "")
        after = f"the previous {what} is unchanged" if existed else f"no {what} was written"
        raise CheckpointWriteError(f"{cause} while {doing}; {after}", path=str(path), errno=code) from None


def _os_error_code(error: BaseException) -> int | None:
    if isinstance(error, OSError):
        return error.errno
    match = re.search(r"\(os error (\d+)\)", str(error))  # Rust's std::io::Error, as safetensors/tokenizers say it
    return int(match[1]) if match else None


def _is_inside(name: str) -> bool:
    """Whether `name` is a relative path that stays inside the directory it is joined to."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _check_extra_name(name: str) -> None:
    if not isinstance(name, str) or not _is_inside(name):
        raise InputError(f"write_checkpoint: extra_files name {name!r} must be a relative path inside the checkpoint")
    if name in (CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE):
        raise InputError(f"write_checkpoint: extra_files may not replace {name!r}; it is written from the config and "
                         f"state_dict")


def _write_file(path: Path, content: FileContent) -> None:
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        _write_json(path, content)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return read_json(path)


__all__ = ["CONFIG_FILE", "GENERATION_CONFIG_FILE", "INDEX_FILE", "TOKENIZER_FILE", "WEIGHTS_FILE", "check_state_dict",
           "check_tokenizer_fits", "expected_shapes", "checkpoint_dtype", "generation_config_dict", "load_checkpoint", "stored_dtype", "load_tokenizer",
           "read_config", "read_state_dict", "write_checkpoint", "write_directory"]
