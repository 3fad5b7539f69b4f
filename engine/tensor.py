"""The GPU tensor: a view (shape, dtype, byte offset) of a pooled buffer on one device, or row blocks of several.

Owns: host <-> GPU transfer, buffer lifetime and its byte counts (`engine.memory`), and the split of tensors larger
than the adapter's max_storage_buffer_binding_size: such a tensor is held as row blocks, each its own buffer
(`parts`), behind one Tensor. Which rows go in which block depends on the shape alone (see `row_partition`), so a
parameter, its gradient and its optimizer moments are split alike whatever their dtypes. Ops that take big weights
walk the blocks; any other op that meets a split tensor raises `SplitTensorError` naming the kernel. Tensors are
contiguous, row-major and immutable from the host; ops in `engine.ops` make new ones. Must not import `rl`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from wgrpo.engine.device import Device, get_device
from wgrpo.engine.dtypes import BFLOAT16, convert, dtype_name, float_dtype
from wgrpo.engine.errors import InputError, SplitTensorError
from wgrpo.engine.memory import current_kind
from wgrpo.engine.pool import Block
from wgrpo.engine.runtime import Runtime

# numpy dtype -> WGSL element type; bf16 is stored as packed pairs in u32 words, read by kernels that widen it
WGSL_TYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", BFLOAT16: "bf16", np.dtype(np.int32): "i32",
              np.dtype(np.uint32): "u32"}
# dtypes converted on upload, as torch.as_tensor users expect of a float32-first library
_CONVERTED = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32)}


class _Storage:
    """Owns one pooled block; gives it back to the pool when the last tensor viewing it is gone. Counted in the
    runtime's `memory` under the kind current at its creation until then."""

    __slots__ = ("runtime", "block", "kind")

    def __init__(self, runtime: Runtime, block: Block):
        self.runtime, self.block, self.kind = runtime, block, current_kind()
        runtime.memory.allocate(self.kind, block.nbytes)

    def count_as(self, kind: str) -> None:
        self.runtime.memory.move(self.kind, kind, self.block.nbytes)
        self.kind = kind

    def __del__(self):
        try:
            self.runtime.memory.free(self.kind, self.block.nbytes)
            self.runtime.pool.release(self.block)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass


def row_partition(shape: Sequence[int], dtype, limit: int) -> list[tuple[int, int]] | None:
    """The row blocks (start, stop) a tensor of `shape` is held in on an adapter binding at most `limit` bytes, or
    None when one buffer holds it. Blocks are sized as if the elements were 4 bytes wide whatever `dtype` is, so
    tensors of one shape are split alike (a bf16 weight, its f32 gradient and moments); one row must fit."""
    shape = tuple(int(s) for s in shape)
    size = math.prod(shape)
    nbytes = size * np.dtype(dtype).itemsize
    if size * 4 <= limit or (nbytes <= limit and (len(shape) < 2 or shape[0] < 2)):
        return None
    name = f"a tensor of shape {shape} ({dtype_name(dtype)}, {nbytes} bytes)"
    if len(shape) < 2 or shape[0] < 2:
        raise InputError(f"{name} is over this adapter's max_storage_buffer_binding_size of {limit} bytes and has "
                         f"no rows to split it by")
    row_bytes = math.prod(shape[1:]) * 4
    per_block = limit // row_bytes
    if per_block < 1:
        raise InputError(f"{name}: one row of {shape[1:]} needs {row_bytes} bytes (as float32), over this "
                         f"adapter's max_storage_buffer_binding_size of {limit} bytes")
    return [(start, min(shape[0], start + per_block)) for start in range(0, shape[0], per_block)]


class Tensor:
    """A contiguous n-d array in GPU memory. Build with `Tensor.from_numpy` or `Tensor.empty`."""

    __slots__ = ("shape", "dtype", "device", "_storage", "_offset", "_parts", "requires_grad", "grad", "_grad_fn")

    def __init__(self, storage: _Storage | None, shape: Sequence[int], dtype, device: Device, offset: int = 0,
                 parts: tuple["Tensor", ...] | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.device = device
        self._storage = storage
        self._offset = offset
        self._parts = parts  # row blocks of a split tensor (then storage is None)
        self.requires_grad = False
        self.grad: Tensor | None = None
        self._grad_fn = None  # (autograd Node, output index) for op results that need a gradient

    # ------------------------------------------------------------------ creation

    @classmethod
    def from_numpy(cls, array, device: Device | str | None = None, dtype=None) -> "Tensor":
        """Copy a numpy array (or anything `np.asarray` takes) to the device.

        float32, float16, bfloat16 (`engine.dtypes.BFLOAT16`), int32 and uint32 keep their dtype; float64 becomes
        float32 and int64 becomes int32. `dtype` ("bfloat16", "float16", "float32") converts floats first. A
        tensor over the adapter's binding limit is split into row blocks (see `row_partition`).
        """
        array = np.asarray(array)
        if dtype is not None:
            array = convert(array, float_dtype(dtype, "Tensor.from_numpy: dtype"))
        dtype = _CONVERTED.get(array.dtype, array.dtype)
        if dtype not in WGSL_TYPES:
            raise TypeError(f"Tensor.from_numpy: dtype {array.dtype} is not supported; use one of "
                            f"{[str(d) for d in WGSL_TYPES]} (float64 and int64 are converted)")
        if array.dtype == np.int64 and array.size and (array.min() < -(2**31) or array.max() >= 2**31):
            raise ValueError("Tensor.from_numpy: int64 values outside the int32 range cannot be converted")
        shape = array.shape
        array = np.ascontiguousarray(array, dtype=dtype).reshape(shape)  # ascontiguousarray makes 0-d into 1-d
        device = get_device(device)
        blocks = row_partition(shape, dtype, device.max_binding_bytes)
        if blocks is not None:
            return cls.from_parts([cls.from_numpy(array[start:stop], device) for start, stop in blocks])
        runtime = device.runtime
        return cls(_Storage(runtime, runtime.upload(array.tobytes())), shape, dtype, device)

    @classmethod
    def empty(cls, shape: Sequence[int], dtype=np.float32, device: Device | str | None = None) -> "Tensor":
        """An uninitialized tensor, for kernels to write into (split into row blocks when over the limit)."""
        dtype = np.dtype(dtype)
        if dtype not in WGSL_TYPES:
            raise TypeError(f"Tensor.empty: dtype {dtype_name(dtype)} is not supported")
        shape = tuple(int(s) for s in shape)
        device = get_device(device)
        blocks = row_partition(shape, dtype, device.max_binding_bytes)
        if blocks is not None:
            return cls.from_parts([cls.empty((stop - start, *shape[1:]), dtype, device) for start, stop in blocks])
        runtime = device.runtime
        return cls(_Storage(runtime, runtime.pool.acquire(math.prod(shape) * dtype.itemsize)), shape, dtype, device)

    @classmethod
    def from_parts(cls, parts: Sequence["Tensor"]) -> "Tensor":
        """One tensor whose rows are those of `parts` in order (unsplit tensors of one dtype, device and row
        shape), without a copy; a single part is returned as is."""
        parts = tuple(parts)
        if not parts or any(p.is_split for p in parts):
            raise ValueError("Tensor.from_parts: expected one or more unsplit tensors")
        first = parts[0]
        for p in parts[1:]:
            if p.shape[1:] != first.shape[1:] or p.dtype != first.dtype or p.device is not first.device:
                raise ValueError(f"Tensor.from_parts: parts differ: {first!r} and {p!r}")
        if len(parts) == 1:
            return first
        rows = sum(p.shape[0] for p in parts)
        return cls(None, (rows, *first.shape[1:]), first.dtype, first.device, parts=parts)

    # ------------------------------------------------------------------ properties

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def elem(self) -> str:
        """The WGSL element type of this tensor's data."""
        return WGSL_TYPES[self.dtype]

    @property
    def runtime(self) -> Runtime:
        return self.device.runtime

    @property
    def is_split(self) -> bool:
        """Held as several row blocks (over the adapter's binding limit)."""
        return self._parts is not None

    @property
    def parts(self) -> tuple["Tensor", ...]:
        """The row blocks, in order: several for a split tensor, the tensor itself otherwise."""
        return self._parts if self._parts is not None else (self,)

    @property
    def row_ranges(self) -> list[tuple[int, int]]:
        """(start, stop) rows of each of `parts`."""
        ranges, start = [], 0
        for part in self.parts:
            ranges.append((start, start + part.shape[0]))
            start += part.shape[0]
        return ranges

    def count_as(self, kind: str) -> None:
        """Count this tensor's buffers as `kind` of `engine.memory.KINDS` from now on."""
        for part in self.parts:
            part._storage.count_as(kind)

    # ------------------------------------------------------------------ data

    def binding(self) -> tuple[Block, int, int]:
        if self._parts is not None:
            raise SplitTensorError(
                f"a tensor of shape {self.shape} ({dtype_name(self.dtype)}) is held as {len(self._parts)} row blocks "
                f"(over this adapter's max_storage_buffer_binding_size of {self.device.max_binding_bytes} bytes), "
                f"and this kernel binds one buffer")
        return self._storage.block, self._offset, self.nbytes

    def numpy(self) -> np.ndarray:
        """Copy to the host (flushing the recorded work first). A bfloat16 tensor gives a `BFLOAT16` array (its raw
        words; `engine.dtypes.widen` makes float32 of it)."""
        if self._parts is not None:
            return np.concatenate([part.numpy() for part in self._parts])
        data = self.runtime.read(self._storage.block, self._offset, self.nbytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape).copy()

    def reshape(self, *shape) -> "Tensor":
        """The same data with another shape (one dimension may be -1); no copy."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = tuple(int(s) for s in shape)
        if shape.count(-1) > 1:
            raise ValueError(f"reshape: only one dimension may be -1, got {shape}")
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"reshape: cannot infer -1 for {self.shape} -> {shape}")
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"reshape: {self.shape} has {self.size} elements, {shape} needs {math.prod(shape)}")
        if self.requires_grad:
            from wgrpo.engine.autograd import Reshape

            return Reshape.apply(self, shape)
        return self.view(shape)

    def rows(self, start: int, stop: int) -> "Tensor":
        """Rows start..stop-1 along the first axis, sharing this tensor's memory (no copy, outside autograd).

        Kernels bind it at a byte offset, which must be a multiple of the adapter's
        min_storage_buffer_offset_alignment (at most 256 bytes): choose row blocks accordingly."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise ValueError(f"rows: {start}:{stop} is outside the {self.shape[0]} rows of {self.shape}")
        if self._parts is not None:
            for (first, last), part in zip(self.row_ranges, self._parts):
                if first <= start and stop <= last:
                    return part.rows(start - first, stop - first)
            raise SplitTensorError(f"rows: {start}:{stop} of a tensor of shape {self.shape} spans two of its row "
                                   f"blocks {self.row_ranges}")
        row_bytes = self.nbytes // max(1, self.shape[0])
        offset = self._offset + start * row_bytes
        alignment = self.device.limits.get("min-storage-buffer-offset-alignment", 256)
        if offset % alignment:
            raise ValueError(f"rows: byte offset {offset} of rows {start}:{stop} is not a multiple of the "
                             f"adapter's min_storage_buffer_offset_alignment ({alignment})")
        return Tensor(self._storage, (stop - start, *self.shape[1:]), self.dtype, self.device, offset)

    @classmethod
    def join_rows(cls, tensors: Sequence["Tensor"]) -> "Tensor | None":
        """One tensor whose rows are those of `tensors` in order, when they are adjacent row blocks of one buffer
        (as `rows` cuts them: one storage, dtype and row shape, each beginning where the one before ends), without
        a copy, outside autograd; None otherwise (separate buffers, a gap, a split tensor)."""
        tensors = tuple(tensors)
        if not tensors:
            return None
        first = tensors[0]
        offset = first._offset
        for t in tensors:
            if (t._parts is not None or t._storage is not first._storage or t.ndim < 1 or t.dtype != first.dtype
                    or t.shape[1:] != first.shape[1:] or t._offset != offset):
                return None
            offset += t.nbytes
        rows = sum(t.shape[0] for t in tensors)
        return Tensor(first._storage, (rows, *first.shape[1:]), first.dtype, first.device, first._offset)

    def view(self, shape: tuple[int, ...]) -> "Tensor":
        """The same data with another shape of equal size, outside autograd; `reshape` checks and records. A split
        tensor keeps its rows: only the shape of a row may change."""
        if self._parts is not None:
            shape = tuple(shape)
            if not shape or shape[0] != self.shape[0]:
                raise SplitTensorError(f"view: a tensor of shape {self.shape} held as {len(self._parts)} row blocks "
                                       f"keeps its {self.shape[0]} rows, so it cannot be viewed as {shape}")
            parts = tuple(p.view((p.shape[0], *shape[1:])) for p in self._parts)
            return Tensor(None, shape, self.dtype, self.device, parts=parts)
        return Tensor(self._storage, shape, self.dtype, self.device, self._offset)

    # ------------------------------------------------------------------ autograd

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Mark a leaf (a parameter) so that `backward()` fills its `.grad`."""
        if self.dtype.kind != "f":
            hint = " (bfloat16 weights are frozen storage: train a float32 copy)" if self.dtype == BFLOAT16 else ""
            raise TypeError(f"requires_grad_: only float32/float16 tensors can require grad, this one is "
                            f"{dtype_name(self.dtype)}{hint}")
        self.requires_grad = requires_grad
        return self

    def backward(self, grad: "Tensor | None" = None) -> None:
        """Fill `.grad` of every leaf this tensor depends on (summing into existing `.grad`)."""
        from wgrpo.engine.autograd import backward

        backward(self, grad)

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self._storage, self.shape, self.dtype, self.device, self._offset, self._parts)

    # ------------------------------------------------------------------ operators

    def __add__(self, other):
        from wgrpo.engine import ops

        return ops.add(self, other)

    def __mul__(self, other):
        from wgrpo.engine import ops

        return ops.mul(self, other)

    __radd__ = __add__
    __rmul__ = __mul__

    def __matmul__(self, other):
        from wgrpo.engine import ops

        return ops.matmul(self, other)

    def __repr__(self) -> str:
        split = f", row_blocks={len(self._parts)}" if self._parts is not None else ""
        return f"Tensor(shape={self.shape}, dtype={dtype_name(self.dtype)}{split}, device={self.device.name!r})"
