"""Reading and writing `.safetensors` files of float32, float16 and bfloat16 tensors, with errors that name the file.

Owns: the file format only (header, dtypes, shards, finite values). Tensors are read widened to float32, or with
`keep_dtype` in the dtype stored (bfloat16 as `engine.dtypes.BFLOAT16` arrays of the raw words), and written in
the dtype each array has. Every problem of a file is an `InputError` naming it. Host-only: must not import wgpu, torch, `engine.device`/
`engine.runtime` or `rl`. `engine.hf` builds Hugging Face checkpoints on top of it.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from wgrpo.engine.dtypes import BFLOAT16, FLOAT16, FLOAT32, dtype_name, from_bits, widen
from wgrpo.engine.errors import InputError
from wgrpo.engine.json_file import read_json

# dtypes numpy reads directly (then widened to float32); BF16 is read as raw uint16 and widened by a bit shift
_NUMPY_FLOATS = {"F32", "F16", "F64"}
_MAX_HEADER_BYTES = 100 * 1024 * 1024
# safetensors header name <-> the dtype a tensor of it is held in (F64 is read as float32, never written)
STORED_DTYPES = {"F32": FLOAT32, "F16": FLOAT16, "BF16": BFLOAT16, "F64": FLOAT32}
HEADER_NAMES = {FLOAT32: "F32", FLOAT16: "F16", BFLOAT16: "BF16"}  # what write_safetensors writes


def read_safetensors(path: str | os.PathLike, require_finite: bool = False,
                     keep_dtype: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of one `.safetensors` file (F32, F16, F64 and BF16 accepted) as a float32 numpy array, or
    with `keep_dtype` as stored: F16 as float16, BF16 as `BFLOAT16` (F64 still becomes float32).

    A truncated or corrupt file, or a tensor of another dtype, raises InputError naming the file (and tensor); so
    does, with `require_finite`, a tensor holding NaN or infinite values (widening keeps them: f16/bf16 NaN and
    infinities stay NaN and infinities).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such safetensors file")
    out: dict[str, np.ndarray] = {}
    header = None
    try:
        with safe_open(str(path), framework="numpy") as f:  # validates the header and that it covers the file
            for name in f.keys():
                dtype = f.get_slice(name).get_dtype()
                if dtype == "BF16":
                    if header is None:
                        header = read_header(path)
                    out[name] = from_bits(_read_bf16_words(path, header, name))
                elif dtype == "F16" and keep_dtype:
                    out[name] = np.ascontiguousarray(f.get_tensor(name))
                elif dtype in _NUMPY_FLOATS:
                    out[name] = np.ascontiguousarray(f.get_tensor(name), dtype=np.float32)
                else:
                    raise InputError(f"{path}: tensor {name!r} has dtype {dtype}; only F32, F16, BF16 (and F64) "
                                     f"weights are supported")
                if require_finite:
                    _check_finite(path, name, out[name])
                if not keep_dtype and out[name].dtype == BFLOAT16:
                    out[name] = widen(out[name])
    except SafetensorError as error:
        raise InputError(f"{path}: not a valid safetensors file (truncated or corrupt?): {error}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    return out


# 16-bit floats whose exponent bits are all ones are NaN or infinite (then the fraction bits say which)
_EXPONENT_BITS = {BFLOAT16: (0x7F80, 0x007F), np.dtype(np.float16): (0x7C00, 0x03FF)}


def _check_finite(path: Path, name: str, array: np.ndarray) -> None:
    """InputError when `array` holds NaN or infinities. For float32, min and max see both (NaN propagates) in two
    passes without a temporary array; 16-bit tensors are checked on their exponent bits, without widening. Only a
    bad tensor pays for counting."""
    if array.size == 0:
        return
    if array.dtype in _EXPONENT_BITS:
        exponent, fraction = _EXPONENT_BITS[array.dtype]
        words = array.view(np.uint16)
        special = (words & exponent) == exponent
        if not special.any():
            return
        nan = int((special & ((words & fraction) != 0)).sum())
        counts = [(nan, "NaN"), (int(special.sum()) - nan, "infinite")]
    elif np.isfinite(array.min()) and np.isfinite(array.max()):
        return
    else:
        counts = [(int(np.isnan(array).sum()), "NaN"), (int(np.isinf(array).sum()), "infinite")]
    found = " and ".join(f"{count} {kind} value{'s' if count > 1 else ''}" for count, kind in counts if count)
    raise InputError(f"{path}: tensor {name!r} has {found} (a diverged run or a corrupt file; use an earlier "
                     f"checkpoint)")


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file: name -> {"dtype", "shape", "data_offsets"} (and "__metadata__")."""
    path = Path(path)
    try:
        return _read_header(path)
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def tensor_dtype(path: str | os.PathLike, name: str) -> np.dtype:
    """The dtype tensor `name` of a safetensors file is held in (`STORED_DTYPES`), from its header alone."""
    entry = read_header(path).get(name)
    if not isinstance(entry, dict) or entry.get("dtype") not in STORED_DTYPES:
        raise InputError(f"{path}: tensor {name!r} is missing or not {', '.join(STORED_DTYPES)}")
    return STORED_DTYPES[entry["dtype"]]


def _read_header(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise InputError(f"{path}: not a valid safetensors file: {size} bytes, shorter than the 8-byte header "
                             f"length")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, _MAX_HEADER_BYTES):
            raise InputError(f"{path}: not a valid safetensors file: header length {length} exceeds the file "
                             f"({size} bytes)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: not a valid safetensors file: header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a valid safetensors file: header is not a JSON object")
    header["__data_start__"] = 8 + length
    return header


def _read_bf16_words(path: Path, header: dict, name: str) -> np.ndarray:
    """One BF16 tensor's raw uint16 words, in its shape."""
    entry = header.get(name)
    if not isinstance(entry, dict) or entry.get("dtype") != "BF16":
        raise InputError(f"{path}: tensor {name!r}: header entry missing or not BF16")
    shape = tuple(int(n) for n in entry["shape"])
    begin, end = (int(n) for n in entry["data_offsets"])
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != 2 * count:
        raise InputError(f"{path}: tensor {name!r}: {end - begin} bytes for shape {shape} of BF16 "
                         f"(expected {2 * count})")
    raw = np.fromfile(path, dtype="<u2", count=count, offset=header["__data_start__"] + begin)
    if raw.size != count:
        raise InputError(f"{path}: tensor {name!r}: file truncated ({raw.size} of {count} BF16 values)")
    return raw.reshape(shape)


def read_sharded(index_path: str | os.PathLike, require_finite: bool = False,
                 keep_dtype: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of a sharded checkpoint described by a `*.safetensors.index.json` (its `weight_map` says
    which shard file, beside the index, holds each tensor); `require_finite` and `keep_dtype` as in
    `read_safetensors`."""
    index_path = Path(index_path)
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index_path}: expected a non-empty 'weight_map' object of tensor name -> shard file")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise InputError(f"{index_path}: weight_map[{name!r}] = {shard!r} is not a file name beside the index")
        shards.setdefault(shard, []).append(name)
    out: dict[str, np.ndarray] = {}
    for shard, names in shards.items():
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise InputError(f"{index_path}: shard {shard!r} (holding {names[0]!r} and {len(names) - 1} more) is "
                             f"missing")
        tensors = read_safetensors(shard_path, require_finite=require_finite, keep_dtype=keep_dtype)
        for name in names:
            if name not in tensors:
                raise InputError(f"{index_path}: weight_map puts tensor {name!r} in {shard!r}, which does not hold "
                                 f"it")
        for name, array in tensors.items():
            if name in out:
                raise InputError(f"{shard_path}: tensor {name!r} also appears in another shard")
            out[name] = array
    return out


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write tensors in their own dtype (float32, float16 or `BFLOAT16`; float64 becomes float32) with
    `{"format": "pt"}` metadata, which transformers requires, and fsync the file. The header is padded to a
    multiple of 8 bytes, and the data follows in the order given, as the format specifies."""
    arrays = {}
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        if array.dtype not in HEADER_NAMES:
            raise InputError(f"write_safetensors: tensor {name!r} has dtype {dtype_name(array.dtype)}; expected "
                             f"float32, float16 or bfloat16")
        arrays[name] = np.ascontiguousarray(array)
    header: dict = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, array in arrays.items():
        header[name] = {"dtype": HEADER_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for array in arrays.values():
            f.write(array.view(np.uint8).reshape(-1).data if array.size else b"")
        f.flush()
        os.fsync(f.fileno())
