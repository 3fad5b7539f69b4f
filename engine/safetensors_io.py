"""Reading `.safetensors` files into numpy float32 arrays, bf16 included, with errors that name the file.

Owns: the file format only (header, dtypes, shards). Host-only: must not import wgpu, torch, `engine.device`/
`engine.runtime` or `rl`. `engine.hf` builds Hugging Face checkpoints on top of it.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

# dtypes numpy reads directly (then widened to float32); BF16 is read as raw uint16 and widened by a bit shift
_NUMPY_FLOATS = {"F32", "F16", "F64"}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of one `.safetensors` file as a float32 numpy array (F32, F16, F64 and BF16 accepted).

    A truncated or corrupt file, or a tensor of another dtype, raises ValueError naming the file (and tensor).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such safetensors file")
    out: dict[str, np.ndarray] = {}
    header = None
    try:
        with safe_open(str(path), framework="numpy") as f:  # validates the header and that it covers the file
            for name in f.keys():
                dtype = f.get_slice(name).get_dtype()
                if dtype == "BF16":
                    if header is None:
                        header = read_header(path)
                    out[name] = _read_bf16(path, header, name)
                elif dtype in _NUMPY_FLOATS:
                    out[name] = np.ascontiguousarray(f.get_tensor(name), dtype=np.float32)
                else:
                    raise ValueError(f"{path}: tensor {name!r} has dtype {dtype}; only F32, F16, BF16 (and F64) "
                                     f"weights are supported")
    except SafetensorError as error:
        raise ValueError(f"{path}: not a valid safetensors file (truncated or corrupt?): {error}") from None
    return out


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file: name -> {"dtype", "shape", "data_offsets"} (and "__metadata__")."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: not a valid safetensors file: {size} bytes, shorter than the 8-byte header "
                             f"length")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, _MAX_HEADER_BYTES):
            raise ValueError(f"{path}: not a valid safetensors file: header length {length} exceeds the file "
                             f"({size} bytes)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a valid safetensors file: header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a valid safetensors file: header is not a JSON object")
    header["__data_start__"] = 8 + length
    return header


def _read_bf16(path: Path, header: dict, name: str) -> np.ndarray:
    """One BF16 tensor: its raw uint16 words shifted into the high half of float32 words (exact widening)."""
    entry = header.get(name)
    if not isinstance(entry, dict) or entry.get("dtype") != "BF16":
        raise ValueError(f"{path}: tensor {name!r}: header entry missing or not BF16")
    shape = tuple(int(n) for n in entry["shape"])
    begin, end = (int(n) for n in entry["data_offsets"])
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != 2 * count:
        raise ValueError(f"{path}: tensor {name!r}: {end - begin} bytes for shape {shape} of BF16 "
                         f"(expected {2 * count})")
    raw = np.fromfile(path, dtype="<u2", count=count, offset=header["__data_start__"] + begin)
    if raw.size != count:
        raise ValueError(f"{path}: tensor {name!r}: file truncated ({raw.size} of {count} BF16 values)")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)


def read_sharded(index_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a sharded checkpoint described by a `*.safetensors.index.json` (its `weight_map` says
    which shard file, beside the index, holds each tensor)."""
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{index_path}: not valid JSON ({error})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path}: expected a non-empty 'weight_map' object of tensor name -> shard file")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise ValueError(f"{index_path}: weight_map[{name!r}] = {shard!r} is not a file name beside the index")
        shards.setdefault(shard, []).append(name)
    out: dict[str, np.ndarray] = {}
    for shard, names in shards.items():
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise ValueError(f"{index_path}: shard {shard!r} (holding {names[0]!r} and {len(names) - 1} more) is "
                             f"missing")
        tensors = read_safetensors(shard_path)
        for name in names:
            if name not in tensors:
                raise ValueError(f"{index_path}: weight_map puts tensor {name!r} in {shard!r}, which does not hold "
                                 f"it")
        for name, array in tensors.items():
            if name in out:
                raise ValueError(f"{shard_path}: tensor {name!r} also appears in another shard")
            out[name] = array
    return out


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write float32 tensors (other float dtypes are converted) with `{"format": "pt"}` metadata, which
    transformers requires, and fsync the file."""
    arrays = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in tensors.items()}
    save_file(arrays, str(path), metadata={"format": "pt", **(metadata or {})})
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
