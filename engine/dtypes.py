"""The element types of checkpoints and tensors, bfloat16 included, on the host.

numpy has no bfloat16, so a bfloat16 array is held as its raw 16-bit words in `BFLOAT16`, a one-field structured
dtype (`array["bfloat16"]` is the uint16 view): nothing mistakes it for a number, `widen` turns it into float32
exactly, and `to_bfloat16` rounds float32 to it (to nearest even, as torch does). Owns the names users give
(`"bfloat16"`, `"float32"`, ...) and their dtypes. Host-only numpy: must not import wgpu or `rl`.
"""

from __future__ import annotations

import numpy as np

from wgrpo.engine.errors import InputError

BFLOAT16 = np.dtype([("bfloat16", "<u2")])
FLOAT32, FLOAT16 = np.dtype(np.float32), np.dtype(np.float16)

# name -> dtype of the floating-point storage types a model's weights may have
FLOAT_DTYPES = {"float32": FLOAT32, "bfloat16": BFLOAT16, "float16": FLOAT16}
# names torch and transformers also accept
_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def dtype_name(dtype) -> str:
    """"bfloat16" for BFLOAT16, numpy's name (float32, int32, ...) for the rest."""
    dtype = np.dtype(dtype)
    return "bfloat16" if dtype == BFLOAT16 else dtype.name


def float_dtype(name, what: str = "dtype") -> np.dtype:
    """The dtype of a floating-point storage type given by name (float32, bfloat16, float16 and their torch
    spellings such as bf16) or as a dtype; one InputError line naming `what` otherwise."""
    if not isinstance(name, str):
        try:
            dtype = np.dtype(name)  # np.float32, np.dtype("float16"), BFLOAT16
        except TypeError:
            dtype = None
        if dtype in FLOAT_DTYPES.values():
            return dtype
    key = str(name).lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in FLOAT_DTYPES:
        raise InputError(f"{what}: expected one of {sorted(FLOAT_DTYPES)}, got {name!r}")
    return FLOAT_DTYPES[key]


def is_float(dtype) -> bool:
    """float32, float16 or bfloat16 (and float64, which is converted on upload)."""
    dtype = np.dtype(dtype)
    return dtype == BFLOAT16 or dtype.kind == "f"


def widen(array: np.ndarray) -> np.ndarray:
    """float32 values of a float32, float16, float64 or BFLOAT16 array (exact for all but float64)."""
    array = np.asarray(array)
    if array.dtype == BFLOAT16:
        return (array["bfloat16"].astype(np.uint32) << 16).view(np.float32)
    return np.asarray(array, np.float32)


def to_bfloat16(array: np.ndarray) -> np.ndarray:
    """A BFLOAT16 array of float values rounded to nearest even (NaN stays NaN, infinities stay infinite)."""
    array = np.asarray(array)
    if array.dtype == BFLOAT16:
        return array
    bits = np.ascontiguousarray(array, np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(array)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)  # keep NaN a (quiet) NaN
    return rounded.view(BFLOAT16)


def from_bits(words: np.ndarray) -> np.ndarray:
    """The BFLOAT16 array whose raw 16-bit words are `words` (a uint16 array, e.g. read from a file)."""
    return np.ascontiguousarray(words, np.uint16).view(BFLOAT16)


def convert(array: np.ndarray, dtype) -> np.ndarray:
    """`array` (float32, float16 or BFLOAT16) in the floating-point storage type `dtype`."""
    dtype = float_dtype(dtype)
    array = np.asarray(array)
    if array.dtype == dtype:
        return array
    if dtype == BFLOAT16:
        return to_bfloat16(widen(array))
    return widen(array).astype(dtype)
