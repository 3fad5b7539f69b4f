"""A minimal PNG writer: 8-bit RGB, filter 0 on every row, one zlib-compressed IDAT chunk.

Owns: `encode_png` (an (H, W, 3) uint8 array to PNG bytes) and `write_png` (the same, written to a file through
a temporary name and a rename, so a crash never leaves half an image). Only zlib, struct and numpy; imports
nothing from the engine.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

__all__ = ["PNG_SIGNATURE", "encode_png", "write_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC-32 of type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, *, level: int = 6) -> bytes:
    """PNG bytes of `image`, an (H, W, 3) uint8 RGB array (row 0 at the top)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array of shape (H, W, 3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape (H, W, 3) with H, W >= 1, got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    height, width = image.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # (H, 1 + 3W): filter byte 0, then RGB
    rows[:, 1:] = image.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB), no interlace
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write `image` ((H, W, 3) uint8) to `path` as PNG, atomically (temporary file, then rename)."""
    path = os.fspath(path)
    data = encode_png(image)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
