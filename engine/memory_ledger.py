"""The ledger a memory estimate replays on, and the symbolic tensors that feed it.

Owns `Ledger` (an `engine.memory.DeviceMemory` fed by shapes instead of buffers, with the kind new tensors are
counted as and the binding limit), `Host` (a numpy array of the engine's code, by its shape), `Sym` (a tensor
without data: shape, dtype and a share of one `_Buffer`) and `tensor_bytes`. A `_Buffer` is counted from its
creation until the last `Sym` viewing it is gone, as a pooled buffer of `engine.tensor` is: the replay holds
references exactly where the engine's code does, so Python frees the estimate's bytes when the engine frees the
device's. Each buffer is rounded to the pool's size class and split into row blocks as `Tensor.empty` does. No
device is needed. Must not import `rl`.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from wgrpo.engine.dtypes import FLOAT32
from wgrpo.engine.errors import InputError
from wgrpo.engine.memory import DEFAULT_KIND, DeviceMemory
from wgrpo.engine.pool import size_class
from wgrpo.engine.tensor import row_partition

I32, U32 = np.dtype(np.int32), np.dtype(np.uint32)


def tensor_bytes(shape, dtype, max_binding_bytes: int | None = None) -> int:
    """Bytes the pool hands out for `Tensor.empty(shape, dtype)`: each row block (see `tensor.row_partition`;
    none without `max_binding_bytes`) rounded up to its size class."""
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    blocks = row_partition(shape, dtype, max_binding_bytes) if max_binding_bytes else None
    if blocks is None:
        return size_class(math.prod(shape) * dtype.itemsize)
    row = math.prod(shape[1:]) * dtype.itemsize
    return sum(size_class((stop - start) * row) for start, stop in blocks)


class Host:
    """A numpy array of the engine's code (token ids, masks, positions): a shape and a dtype, on the host."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype=FLOAT32):
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)


class Ledger:
    """Device bytes by kind of the tensors a replay creates (`memory`), and the first activation (or KV cache)
    held in row blocks that is not shaped like a parameter (`split_activation`): the ops take weights, gradients
    and optimizer moments in row blocks, not activations, so such a run fails where that tensor is made."""

    def __init__(self, max_binding_bytes: int | None, parameter_shapes=()):
        self.limit = max_binding_bytes
        self.memory = DeviceMemory()
        self.kind = DEFAULT_KIND
        self.parameter_shapes = set(parameter_shapes)
        self.split_activation: tuple | None = None

    @contextlib.contextmanager
    def counted_as(self, kind: str):
        """`engine.memory.memory_kind` of the replay: tensors created inside are counted as `kind`."""
        previous, self.kind = self.kind, kind
        try:
            yield
        finally:
            self.kind = previous

    def empty(self, shape, dtype=FLOAT32) -> "Sym":
        """`Tensor.empty` (and `Tensor.from_numpy`, which takes the same buffers). A tensor one of whose rows is
        over the binding limit cannot be held at all (the engine refuses it): it counts as a split activation."""
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        try:
            split = self.limit is not None and row_partition(shape, dtype, self.limit) is not None
            nbytes = tensor_bytes(shape, dtype, self.limit)
        except InputError:  # a row over the limit: no tensor of this shape can be held, whatever its kind
            nbytes = size_class(math.prod(shape) * dtype.itemsize)
            self.split_activation = self.split_activation or shape
            return Sym(_Buffer(self, nbytes, self.kind), shape, dtype)
        if split and self.kind in (DEFAULT_KIND, "kv_cache") and self.split_activation is None \
                and shape not in self.parameter_shapes:
            self.split_activation = shape
        return Sym(_Buffer(self, nbytes, self.kind), shape, dtype)

    def upload(self, array: Host) -> "Sym":
        """`Tensor.from_numpy(array)`."""
        return self.empty(array.shape, array.dtype)


class _Buffer:
    """One tensor's pooled bytes (a split tensor's row blocks together), in use until nothing views them."""

    __slots__ = ("ledger", "nbytes", "kind")

    def __init__(self, ledger: Ledger, nbytes: int, kind: str):
        self.ledger, self.nbytes, self.kind = ledger, nbytes, kind
        ledger.memory.allocate(kind, nbytes)

    def count_as(self, kind: str) -> None:
        self.ledger.memory.move(self.kind, kind, self.nbytes)
        self.kind = kind

    def __del__(self):
        self.ledger.memory.free(self.kind, self.nbytes)


class Sym:
    """A tensor of the replay: `engine.tensor.Tensor`'s shape, dtype, views and autograd fields, no data."""

    __slots__ = ("shape", "dtype", "buffer", "requires_grad", "grad", "grad_fn", "owned_grad")

    def __init__(self, buffer: _Buffer, shape, dtype):
        self.buffer, self.shape, self.dtype = buffer, tuple(int(s) for s in shape), np.dtype(dtype)
        self.requires_grad = False
        self.grad: Sym | None = None
        self.grad_fn = None  # (memory_graph.Node, output index)
        self.owned_grad = False  # a leaf's sum of gradients its accumulation allocated (autograd._AccumulatedGrad)

    @property
    def ledger(self) -> Ledger:
        return self.buffer.ledger

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def view(self, shape) -> "Sym":
        return Sym(self.buffer, shape, self.dtype)

    def detach(self) -> "Sym":
        return self.view(self.shape)

    def rows(self, start: int, stop: int) -> "Sym":
        return self.view((stop - start, *self.shape[1:]))

    def reshape(self, *shape) -> "Sym":
        """`Tensor.reshape`: a view, recorded by autograd when the tensor requires grad."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if self.requires_grad:
            from wgrpo.engine.memory_graph import Reshape

            return Reshape.apply(self, shape)
        return self.view(shape)

    def requires_grad_(self, requires_grad: bool = True) -> "Sym":
        self.requires_grad = requires_grad
        return self

    def count_as(self, kind: str) -> None:
        self.buffer.count_as(kind)

    def backward(self) -> None:
        from wgrpo.engine.memory_graph import backward

        backward(self)
