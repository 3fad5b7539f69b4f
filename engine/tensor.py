"""The GPU tensor: a view (shape, dtype, byte offset) of a pooled buffer on one device.

Owns: host <-> GPU transfer and buffer lifetime. Tensors are contiguous, row-major and immutable from the host;
ops in `engine.ops` make new ones. Must not import `rl`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from wgrpo.engine.errors import InputError
from wgrpo.engine.device import Device, get_device
from wgrpo.engine.runtime import Block, Runtime

# numpy dtype -> WGSL element type
WGSL_TYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int32): "i32", np.dtype(np.uint32): "u32"}
# dtypes converted on upload, as torch.as_tensor users expect of a float32-first library
_CONVERTED = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32)}


class _Storage:
    """Owns one pooled block; gives it back to the pool when the last tensor viewing it is gone."""

    __slots__ = ("runtime", "block")

    def __init__(self, runtime: Runtime, block: Block):
        self.runtime, self.block = runtime, block

    def __del__(self):
        try:
            self.runtime.pool.release(self.block)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass


class Tensor:
    """A contiguous n-d array in GPU memory. Build with `Tensor.from_numpy` or `Tensor.empty`."""

    __slots__ = ("shape", "dtype", "device", "_storage", "_offset", "requires_grad", "grad", "_grad_fn")

    def __init__(self, storage: _Storage, shape: Sequence[int], dtype, device: Device, offset: int = 0):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.device = device
        self._storage = storage
        self._offset = offset
        self.requires_grad = False
        self.grad: Tensor | None = None
        self._grad_fn = None  # (autograd Node, output index) for op results that need a gradient

    # ------------------------------------------------------------------ creation

    @classmethod
    def from_numpy(cls, array, device: Device | str | None = None) -> "Tensor":
        """Copy a numpy array (or anything `np.asarray` takes) to the device.

        float32, float16, int32 and uint32 keep their dtype; float64 becomes float32 and int64 becomes int32.
        """
        array = np.asarray(array)
        dtype = _CONVERTED.get(array.dtype, array.dtype)
        if dtype not in WGSL_TYPES:
            raise TypeError(f"Tensor.from_numpy: dtype {array.dtype} is not supported; use one of "
                            f"{[str(d) for d in WGSL_TYPES]} (float64 and int64 are converted)")
        if array.dtype == np.int64 and array.size and (array.min() < -(2**31) or array.max() >= 2**31):
            raise ValueError("Tensor.from_numpy: int64 values outside the int32 range cannot be converted")
        shape = array.shape
        array = np.ascontiguousarray(array, dtype=dtype).reshape(shape)  # ascontiguousarray makes 0-d into 1-d
        device = get_device(device)
        _check_binding_size(array.nbytes, device, array.shape, dtype)
        runtime = device.runtime
        return cls(_Storage(runtime, runtime.upload(array.tobytes())), shape, dtype, device)

    @classmethod
    def empty(cls, shape: Sequence[int], dtype=np.float32, device: Device | str | None = None) -> "Tensor":
        """An uninitialized tensor, for kernels to write into."""
        dtype = np.dtype(dtype)
        if dtype not in WGSL_TYPES:
            raise TypeError(f"Tensor.empty: dtype {dtype} is not supported")
        device = get_device(device)
        nbytes = math.prod(shape) * dtype.itemsize
        _check_binding_size(nbytes, device, shape, dtype)
        runtime = device.runtime
        return cls(_Storage(runtime, runtime.pool.acquire(nbytes)), shape, dtype, device)

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
        return self._storage.runtime

    # ------------------------------------------------------------------ data

    def binding(self) -> tuple[Block, int, int]:
        return self._storage.block, self._offset, self.nbytes

    def numpy(self) -> np.ndarray:
        """Copy to the host (flushing the recorded work first)."""
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
        row_bytes = self.nbytes // max(1, self.shape[0])
        offset = self._offset + start * row_bytes
        alignment = self.device.limits.get("min-storage-buffer-offset-alignment", 256)
        if offset % alignment:
            raise ValueError(f"rows: byte offset {offset} of rows {start}:{stop} is not a multiple of the "
                             f"adapter's min_storage_buffer_offset_alignment ({alignment})")
        return Tensor(self._storage, (stop - start, *self.shape[1:]), self.dtype, self.device, offset)

    def view(self, shape: tuple[int, ...]) -> "Tensor":
        """The same data with another shape of equal size, outside autograd; `reshape` checks and records."""
        return Tensor(self._storage, shape, self.dtype, self.device, self._offset)

    # ------------------------------------------------------------------ autograd

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Mark a leaf (a parameter) so that `backward()` fills its `.grad`."""
        if self.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only float tensors can require grad, this one is {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def backward(self, grad: "Tensor | None" = None) -> None:
        """Fill `.grad` of every leaf this tensor depends on (summing into existing `.grad`)."""
        from wgrpo.engine.autograd import backward

        backward(self, grad)

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self._storage, self.shape, self.dtype, self.device, self._offset)

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
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device.name!r})"


def _check_binding_size(nbytes: int, device: Device, shape, dtype) -> None:
    limit = device.max_binding_bytes
    if nbytes > limit:
        raise InputError(
            f"a tensor of shape {tuple(shape)} ({np.dtype(dtype)}) needs {nbytes} bytes, over this adapter's "
            f"max_storage_buffer_binding_size of {limit} bytes ({device.name}); split it into smaller tensors"
        )
