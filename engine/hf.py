"""Hugging Face checkpoints on the host: `config.json`, `model.safetensors` (single or sharded), `tokenizer.json`.

Owns: the HF tensor-name layout of Llama/Qwen2 decoders, its validation (shapes, finite weights, a tokenizer that
fits the vocabulary), and checkpoint writes that a kill or a full disk cannot half-do (`engine.atomic_dir` swaps
the finished directory into place). Everything here is numpy; the GPU model uploads what `load_checkpoint`
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
from typing import Any, Callable, Mapping

import numpy as np
from tokenizers import Tokenizer

from wgrpo.engine.atomic_dir import commit_dir, make_temp_dir, sync_tree
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.errors import CheckpointWriteError, InputError
from wgrpo.engine.json_file import read_json
from wgrpo.engine.safetensors_io import read_safetensors, read_sharded, write_safetensors
from wgrpo.engine.tokenizer import save_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"

# extra_files values: raw bytes, text, a JSON-serializable dict/list, or a callable that writes the given path
ExtraFile = bytes | str | dict | list | Callable[[Path], None]


# ---- reading ---------------------------------------------------------------------------------------------------

def read_config(directory: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` of the checkpoint directory's `config.json`."""
    path = Path(directory) / CONFIG_FILE
    return ModelConfig.from_hf_dict(_read_json(path), source=str(path))


def read_state_dict(directory: str | os.PathLike, require_finite: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as float32 numpy arrays, from `model.safetensors` or, when absent, the shards
    of `model.safetensors.index.json`. Names are HF's; nothing is checked against a config (`check_state_dict`).
    With `require_finite`, a tensor holding NaN or infinite values raises InputError naming its file."""
    directory = Path(directory)
    if (directory / WEIGHTS_FILE).is_file():
        return read_safetensors(directory / WEIGHTS_FILE, require_finite=require_finite)
    if (directory / INDEX_FILE).is_file():
        return read_sharded(directory / INDEX_FILE, require_finite=require_finite)
    hint = ""
    if any((directory / name).exists() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        hint = " (found pytorch_model.bin: convert it to safetensors; pickled weights are not read)"
    raise InputError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE}{hint}")


def load_checkpoint(directory: str | os.PathLike) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """`read_config` + `read_state_dict` + `check_state_dict`: the config and exactly the tensors the model needs,
    every one finite (a NaN or an infinity in a weight raises InputError naming the file and the tensor)."""
    directory = Path(directory)
    config = read_config(directory)
    source = directory / (WEIGHTS_FILE if (directory / WEIGHTS_FILE).is_file() else INDEX_FILE)
    state = read_state_dict(directory, require_finite=True)
    return config, check_state_dict(state, config, source=str(source))


def load_tokenizer(directory: str | os.PathLike, config: ModelConfig | None = None) -> Tokenizer:
    """The `tokenizers.Tokenizer` of the checkpoint directory's `tokenizer.json`; with the model's `config`
    (read from the same directory's config.json), checked to fit its vocabulary (`check_tokenizer_fits`)."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise InputError(f"{path}: no tokenizer file (a checkpoint directory needs tokenizer.json; slow-tokenizer "
                         f"files such as vocab.json/merges.txt or tokenizer.model alone are not read)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{path}: not a valid tokenizer.json: {error}") from None
    if config is not None:
        check_tokenizer_fits(tokenizer, config, tokenizer_source=str(path),
                             config_source=str(Path(directory) / CONFIG_FILE))
    return tokenizer


def check_tokenizer_fits(tokenizer: Tokenizer, config: ModelConfig, tokenizer_source: str = "tokenizer",
                         config_source: str = "config") -> None:
    """Raise InputError when a token id of `tokenizer` (added and special tokens included) has no row in the
    model's embedding, i.e. is >= `config.vocab_size`. A larger model vocabulary is fine: Qwen pads its
    embedding beyond the tokenizer's ids."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if not vocab:
        return
    token, top = max(vocab.items(), key=lambda item: item[1])
    if top >= config.vocab_size:
        raise InputError(f"{tokenizer_source}: the tokenizer has {len(vocab)} tokens with ids up to {top} ({token!r}), "
                         f"but {config_source} has vocab_size {config.vocab_size}: ids >= {config.vocab_size} have "
                         f"no embedding row (is this the tokenizer of another model?)")


# ---- the layout ------------------------------------------------------------------------------------------------

def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name of the config's Llama/Qwen2 layout -> its shape, in model order (lm_head only when
    untied; q/k/v biases only with attention_bias). Linear weights are (out_features, in_features)."""
    c, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, c)}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (c,)
        for name, rows in (("q", q), ("k", kv), ("v", kv)):
            shapes[p + f"self_attn.{name}_proj.weight"] = (rows, c)
            if config.attention_bias:
                shapes[p + f"self_attn.{name}_proj.bias"] = (rows,)
        shapes[p + "self_attn.o_proj.weight"] = (c, q)
        shapes[p + "post_attention_layernorm.weight"] = (c,)
        shapes[p + "mlp.gate_proj.weight"] = (f, c)
        shapes[p + "mlp.up_proj.weight"] = (f, c)
        shapes[p + "mlp.down_proj.weight"] = (c, f)
    shapes["model.norm.weight"] = (c,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, c)
    return shapes


def _is_harmless(name: str) -> bool:
    """Buffers older transformers saved that carry no weights (RoPE's inv_freq is recomputed from rope_theta)."""
    return name.endswith("rotary_emb.inv_freq")


def check_state_dict(state: Mapping[str, Any], config: ModelConfig, source: str = "state_dict") -> dict[str, Any]:
    """Check `state` holds exactly the tensors of `expected_shapes(config)`; returns them in model order.

    Dropped silently: rotary `inv_freq` buffers, and a tied model's `lm_head.weight` when it equals the embedding.
    Raises InputError naming `source`, each missing / wrong-shape / unexpected tensor and its expected shape.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"{source}: expected a mapping of tensor name -> array, got {type(state).__name__}")
    expected = expected_shapes(config)
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name, shape in expected.items():
        if name not in state:
            problems.append(f"missing tensor {name!r} (expected shape {shape})")
            continue
        found = tuple(np.shape(state[name]))
        if found != shape:
            problems.append(f"tensor {name!r} has shape {found}, expected {shape}")
        out[name] = state[name]
    for name in state:
        if name in expected or _is_harmless(name):
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:
            embed = state.get("model.embed_tokens.weight")
            if embed is not None and np.shape(embed) == np.shape(state[name]) and np.array_equal(embed, state[name]):
                continue
            problems.append("tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' but "
                            "tie_word_embeddings is true (set it false to keep a separate head)")
            continue
        problems.append(f"unexpected tensor {name!r} with shape {tuple(np.shape(state[name]))}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        layout = (f"{config.hf_class} with {config.num_layers} layers, hidden {config.hidden_size}, "
                  f"heads {config.num_heads}/{config.num_kv_heads}, vocab {config.vocab_size}")
        raise InputError(f"{source}: does not match the config ({layout}): " + "; ".join(problems[:8]) + more)
    return out


# ---- writing ---------------------------------------------------------------------------------------------------

def generation_config_dict(config: ModelConfig) -> dict[str, Any]:
    """A minimal `generation_config.json`: the special token ids."""
    return {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id}


def write_checkpoint(directory: str | os.PathLike, config: ModelConfig, state_dict: Mapping[str, Any],
                     tokenizer: Tokenizer | None = None,
                     extra_files: Mapping[str, ExtraFile] | None = None) -> Path:
    """Write a Hugging Face checkpoint directory atomically and return its path.

    Files: config.json, model.safetensors (float32; a tied model has no lm_head.weight), generation_config.json,
    and with a tokenizer tokenizer.json + tokenizer_config.json (eos/pad named from the config's ids, else
    `<|endoftext|>`). `extra_files` maps relative paths (subdirectories allowed, e.g. "trainer_state/state.json")
    to bytes, text, a JSON dict/list, or a callable writing the given path; they are written last and may replace
    tokenizer_config.json or generation_config.json (e.g. to keep a pretrained chat template), not config.json or
    the weights.

    Everything is written into a hidden temporary directory beside `directory`, flushed to disk, and swapped into
    place (`engine.atomic_dir.commit_dir`): whenever the writer dies, `directory` holds the previous checkpoint or
    the new one, whole; a killed writer leaves hidden directories that `recover_checkpoints` cleans up. A full
    disk, a quota, a file-size limit or a read-only file system raises `CheckpointWriteError` (an InputError)
    naming the file and the cause, after removing the temporary directory.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"write_checkpoint: config must be a ModelConfig, got {type(config).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"write_checkpoint: tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
    target = Path(directory)
    tensors = check_state_dict(state_dict, config, source="write_checkpoint: state_dict")
    tensors = {name: np.asarray(array) for name, array in tensors.items()}
    for name, array in tensors.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"write_checkpoint: tensor {name!r} has dtype {array.dtype}; expected floating point")
    extra_files = dict(extra_files or {})
    for name in extra_files:
        _check_extra_name(name)
    if target.exists() and not target.is_dir():
        raise InputError(f"write_checkpoint: {target} exists and is not a directory")
    files: list[tuple[str, Callable[[Path], None]]] = [
        (CONFIG_FILE, lambda path: _write_json(path, config.to_hf_dict())),
        (GENERATION_CONFIG_FILE, lambda path: _write_json(path, generation_config_dict(config))),
        (WEIGHTS_FILE, lambda path: write_safetensors(path, tensors)),
    ]
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, config, "write_checkpoint: tokenizer", "write_checkpoint: config")
        special = dict(eos_token=_token_of(tokenizer, config.eos_token_ids[:1], "eos_token_id"),
                       pad_token=_token_of(tokenizer, (config.pad_token_id,), "pad_token_id"),
                       bos_token=_token_of(tokenizer, (config.bos_token_id,), "bos_token_id"),
                       model_max_length=config.max_position_embeddings)
        files.append((TOKENIZER_FILE, lambda path: save_tokenizer(tokenizer, path.parent, **special)))
    for name, content in extra_files.items():
        files.append((name, lambda path, content=content: _write_extra(path, content)))

    existed = target.is_dir()
    with _reporting_write_errors(f"creating a temporary directory in {target.parent}", target.parent, existed):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(target)
    try:
        for name, write in files:
            with _reporting_write_errors(f"writing {target / name}", target / name, existed):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                write(tmp / name)
        with _reporting_write_errors(f"flushing {target} to disk", target, existed):
            sync_tree(tmp)
        with _reporting_write_errors(f"moving the new checkpoint into place at {target}", target, existed):
            commit_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextmanager
def _reporting_write_errors(doing: str, path: Path, existed: bool):
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
        after = "the previous checkpoint is unchanged" if existed else "no checkpoint was written"
        raise CheckpointWriteError(f"{cause} while {doing}; {after}", path=str(path), errno=code) from None


def _os_error_code(error: BaseException) -> int | None:
    if isinstance(error, OSError):
        return error.errno
    match = re.search(r"\(os error (\d+)\)", str(error))  # Rust's std::io::Error, as safetensors/tokenizers say it
    return int(match[1]) if match else None


def _token_of(tokenizer: Tokenizer, ids: tuple, field_name: str) -> str | None:
    if not ids or ids[0] is None:
        return None
    token = tokenizer.id_to_token(ids[0])
    if token is None:
        raise InputError(f"write_checkpoint: config.{field_name} = {ids[0]} is not in the tokenizer's vocabulary "
                         f"(size {tokenizer.get_vocab_size()})")
    return token


def _check_extra_name(name: str) -> None:
    if not isinstance(name, str) or not Path(name).parts or Path(name).is_absolute() or ".." in Path(name).parts:
        raise InputError(f"write_checkpoint: extra_files name {name!r} must be a relative path inside the checkpoint")
    if name in (CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE):
        raise InputError(f"write_checkpoint: extra_files may not replace {name!r}; it is written from the config and "
                         f"state_dict")


def _write_extra(path: Path, content: ExtraFile) -> None:
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, (dict, list)):
        _write_json(path, content)
    else:
        raise TypeError(f"write_checkpoint: extra_files[{path.name!r}] must be bytes, str, a dict/list (JSON) or a "
                        f"callable(path), got {type(content).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return read_json(path)
