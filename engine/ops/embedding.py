"""Token embedding: out[..., :] = weight[ids[...], :], and its deterministic backward.

Kernels in `kernels/embedding.wgsl`: `embedding_forward` (one invocation per output element),
`embedding_backward` (one invocation per (vocab row, channel), summing that id's dy rows in position order, so
there are no float atomics and every run gives the same bits) and `embedding_add_rows` (the same sums for the ids
that occur only, added into an existing gradient). The backward needs the ids on the host: it sorts the positions
by id (stable) and uploads the permutation and CSR offsets. The autograd backward hands the weight's gradient
over as an `EmbeddingRowGrad` (dy and the ids): autograd makes the dense table of it only for a leaf with no
`.grad` yet, and otherwise adds the rows into the gradient already there (a tied LM head's). Pass ids as a numpy array
(the trainer has them on the host anyway: no read-back, and out-of-range ids are refused up front); an int32
Tensor works too, at the cost of one read-back of the ids in the backward (its forward maps out-of-range ids to
rows of zeros, and the backward refuses them).

Each kernel has a vec4 twin (`*4`: quads of 4 channels, `QUADS` of them per invocation) that this module picks
when C % 4 == 0 and every binding starts on 16 bytes (`variant`); the scalar entries stay the spec and the
fallback, and both give the same bits.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo.engine.autograd import Function, SparseGrad
from wgrpo.engine.dtypes import dtype_name
from wgrpo.engine.ops._common import (VEC4_VARIANTS, check_float, check_weight, flat_grid, grid_1d, invocations,
                                     starts_on_quads, vec4_variant)
from wgrpo.engine.tensor import Tensor

VARIANTS = VEC4_VARIANTS
# Quads per invocation of the vec4 entries. Lavapipe pays per load/store instruction and per invocation, so a
# few contiguous quads per invocation help; GPUs keep one quad per invocation, where neighbouring invocations
# read neighbouring quads (coalesced).
SOFTWARE_QUADS = 8
GPU_QUADS = 1


def _variant(variant: str | None, channels: int, tensors, op: str) -> str:
    """The entry kind for this call: "vec4" when C % 4 == 0 and every binding of `tensors` starts on 16 bytes, else
    "scalar"; a given `variant` (tests force one) is checked instead, and "vec4" where it cannot run is refused."""
    aligned = channels % 4 == 0 and starts_on_quads(*tensors)
    return vec4_variant(variant, aligned, op, f"C a multiple of 4 and bindings on 16 bytes, got C={channels}")


def _launch(device, entry: str, kind: str, rows: int, channels: int) -> tuple[str, int, tuple[int, int], dict]:
    """(entry name, Params n, grid, override constants) of `entry` in variant `kind` over rows of C channels."""
    if kind == "scalar":
        n = rows * channels
        return entry, n, flat_grid("embedding", entry, n), {}
    quads = SOFTWARE_QUADS if device.is_software else GPU_QUADS
    n = rows * math.ceil(channels // 4 / quads)
    entry += "4"
    return entry, n, grid_1d(n, invocations("embedding", entry)), {"QUADS": quads}


def _check_weight(weight, op: str) -> None:
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}: weight must be an engine.Tensor, got {type(weight).__name__}")
    check_weight(weight, "weight", op)
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must have shape (V, C), got {weight.shape}")


def _check_range(ids: np.ndarray, vocab: int, op: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        bad = ids[(ids < 0) | (ids >= vocab)]
        raise ValueError(f"{op}: ids must be in [0, {vocab}) for a vocab size of {vocab}; got {bad.size} id(s) out "
                         f"of range, e.g. {int(bad.flat[0])} (ids of shape {ids.shape})")


def _host_ids(ids, vocab: int, op: str) -> np.ndarray:
    """ids from the host as int32, checked for integer dtype and range."""
    array = np.asarray(ids)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must be integers, got dtype {array.dtype} with shape {array.shape}")
    _check_range(array, vocab, op)
    return array.astype(np.int32)


def _device_ids(ids: Tensor, weight: Tensor, op: str) -> Tensor:
    if ids.dtype not in (np.dtype(np.int32), np.dtype(np.uint32)):
        raise TypeError(f"{op}: ids must be int32, got a {ids.dtype} Tensor of shape {ids.shape}")
    if ids.device is not weight.device:
        raise ValueError(f"{op}: ids are on {ids.device.name} but weight is on {weight.device.name}")
    return ids


def embedding_forward(ids: Tensor, weight: Tensor, dtype=None, variant: str | None = None) -> Tensor:
    """The forward kernel alone (no autograd, no range check): ids int32 Tensor (...), weight (V, C) -> (..., C).

    The rows come out in `dtype`: by default the weight's (float32 for bfloat16, which no kernel computes in);
    float32 rows of a float16 weight read it packed and widen it, with no need for shader-f16. A weight held in
    row blocks is one dispatch per block. `variant`: "scalar", "vec4" (C % 4 == 0) or None (vec4 where it
    applies)."""
    channels = weight.shape[1]
    if dtype is None:
        dtype = np.float32 if weight.elem == "bf16" else weight.dtype
    out = Tensor.empty(ids.shape + (channels,), dtype, weight.device)
    packed = out.elem == "f32" and weight.elem in ("bf16", "f16")
    if not packed and out.dtype != weight.dtype:
        raise TypeError(f"embedding: rows of a {dtype_name(weight.dtype)} weight come out as float32 or "
                        f"{dtype_name(weight.dtype)}, not {dtype_name(out.dtype)}")
    kind = _variant(variant, channels, (weight, out), "embedding")
    entry, n, grid, constants = _launch(weight.device, "embedding_forward", kind, ids.size, channels)
    for index, ((first, stop), block) in enumerate(zip(weight.row_ranges, weight.parts)):
        weight.runtime.dispatch("embedding", entry, [ids, block, out], grid,
                                {"n": n, "channels": channels, "vocab": stop - first, "first_row": first,
                                 "fill_others": index == 0},
                                elem=out.elem, weights=weight.elem if packed else "elem", constants=constants,
                                shapes=f"ids {ids.shape}, weight {weight.shape} rows {first}:{stop}")
    return out


def _checked_ids(dy, ids, vocab: int, op: str) -> np.ndarray:
    """The ids as a host int32 array (read back from a Tensor), checked against dy (*ids.shape, C) and vocab."""
    if isinstance(ids, Tensor):
        ids = ids.numpy()
    ids = _host_ids(ids, vocab, op)
    if not isinstance(dy, Tensor):
        raise TypeError(f"{op}: dy must be an engine.Tensor, got {type(dy).__name__}")
    check_float(dy, "dy", op)
    if dy.shape[:-1] != ids.shape or dy.ndim != ids.ndim + 1:
        raise ValueError(f"{op}: dy must have shape {ids.shape} + (C,) for ids of shape {ids.shape}, got {dy.shape}")
    return ids


def embedding_backward(dy: Tensor, ids, vocab: int, variant: str | None = None) -> Tensor:
    """The backward kernel alone: dweight (V, C) with dweight[v] = sum of dy[t] over the positions t with ids[t] = v.

    ids: the forward's ids on the host (any integer array) or an int32 Tensor (read back); dy: (*ids.shape, C).
    `variant` as in `embedding_forward`.
    """
    op = "embedding_backward"
    flat = _checked_ids(dy, ids, vocab, op).reshape(-1)
    channels = dy.shape[-1]
    order = np.argsort(flat, kind="stable").astype(np.uint32)  # positions grouped by id, in position order
    offsets = np.zeros(vocab + 1, np.uint32)
    np.cumsum(np.bincount(flat, minlength=vocab), out=offsets[1:])
    dweight = Tensor.empty((vocab, channels), dy.dtype, dy.device)  # row blocks when over the binding limit
    order, offsets = Tensor.from_numpy(order, dy.device), Tensor.from_numpy(offsets, dy.device)
    kind = _variant(variant, channels, (dy, dweight), op)
    for (first, stop), block in zip(dweight.row_ranges, dweight.parts):
        entry, n, grid, constants = _launch(dy.device, "embedding_backward", kind, stop - first, channels)
        dy.runtime.dispatch("embedding", entry, [dy, order, offsets, block], grid,
                            {"n": n, "channels": channels, "vocab": stop - first, "first_row": first,
                             "fill_others": False},
                            elem=dy.elem, constants=constants, shapes=f"dy {dy.shape}, vocab {vocab} rows {first}:{stop}")
    return dweight


def rows_csr(flat_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions of `flat_ids` grouped by id, as `embedding_add_rows` reads them: (the ids that occur, sorted;
    one u32 array of N + 1 offsets, then N rows, then N positions). Unique id u's positions, in increasing order,
    are positions[offsets[u] .. offsets[u + 1]]; entries past the U unique ids are padding (zeros), so the upload's
    size depends on N only."""
    n = flat_ids.size
    order = np.argsort(flat_ids, kind="stable")
    rows, counts = np.unique(flat_ids, return_counts=True)
    csr = np.zeros(3 * n + 1, np.uint32)
    np.cumsum(counts, out=csr[1 : rows.size + 1])
    csr[rows.size + 1 : n + 1] = n
    csr[n + 1 : n + 1 + rows.size] = rows
    csr[2 * n + 1 :] = order
    return rows, csr


def embedding_add_rows(dweight: Tensor, dy: Tensor, ids, variant: str | None = None) -> Tensor:
    """dweight[v] += sum of dy[t] over the positions t with ids[t] = v, in place, for the ids that occur only;
    returns dweight. Each sum runs from zero in position order and is rounded to dweight's dtype before the add,
    so the result is `add(dweight, embedding_backward(dy, ids, V))` to the bit. dweight (V, C) may be held in
    row blocks; dy (*ids.shape, C) of dweight's dtype; ids as for `embedding_backward`; `variant` as in
    `embedding_forward`."""
    op = "embedding_add_rows"
    if not isinstance(dweight, Tensor) or dweight.ndim != 2:
        raise ValueError(f"{op}: dweight must be a (V, C) engine.Tensor, got "
                         f"{getattr(dweight, 'shape', type(dweight).__name__)}")
    check_float(dweight, "dweight", op)
    vocab, channels = dweight.shape
    flat = _checked_ids(dy, ids, vocab, op).reshape(-1)
    if dy.shape[-1] != channels or dy.dtype != dweight.dtype:
        raise ValueError(f"{op}: dy {dy.shape} {dtype_name(dy.dtype)} must have dweight's {channels} channels "
                         f"and dtype {dtype_name(dweight.dtype)}")
    if dy.device is not dweight.device:
        raise ValueError(f"{op}: dy is on {dy.device.name} but dweight is on {dweight.device.name}")
    kind = _variant(variant, channels, (dy, dweight), op)
    rows, csr = rows_csr(flat)
    csr = Tensor.from_numpy(csr, dy.device)
    for (first, stop), block in zip(dweight.row_ranges, dweight.parts):
        lo, hi = (int(i) for i in np.searchsorted(rows, [first, stop]))  # the unique ids in this block
        if hi == lo or channels == 0:
            continue
        entry, n, grid, constants = _launch(dy.device, "embedding_add_rows", kind, hi - lo, channels)
        dy.runtime.dispatch("embedding", entry, [dy, block, csr], grid,
                            {"n": n, "channels": channels, "vocab": stop - first, "first_row": first,
                             "first_unique": lo, "positions": flat.size, "half": dy.elem == "f16"},
                            elem=dy.elem, constants=constants, shapes=f"dy {dy.shape}, {hi - lo} rows of {first}:{stop}")
    return dweight


class EmbeddingRowGrad(SparseGrad):
    """The gradient of an embedding's weight (V, C) as its rows: dy (*ids.shape, C) and the ids on the host.
    `dense()` is `embedding_backward`; `add_into(acc)` is `embedding_add_rows` (only the rows that occur)."""

    __slots__ = ("dy", "ids")

    def __init__(self, dy: Tensor, ids, vocab: int):
        self.ids = _checked_ids(dy, ids, vocab, "embedding backward")
        self.dy = dy
        self.shape, self.dtype = (vocab, dy.shape[-1]), dy.dtype

    def dense(self) -> Tensor:
        return embedding_backward(self.dy, self.ids, self.shape[0])

    def add_into(self, acc: Tensor) -> None:
        embedding_add_rows(acc, self.dy, self.ids)


class _Embedding(Function):
    @staticmethod
    def forward(ctx, weight, ids, host_ids, dtype):
        ctx.save_for_backward(ids if host_ids is None else host_ids, weight.shape[0])
        return embedding_forward(ids, weight, dtype)

    @staticmethod
    def backward(ctx, dy):
        ids, vocab = ctx.saved
        return EmbeddingRowGrad(dy, ids, vocab), None, None, None


def embedding(ids, weight: Tensor, dtype=None) -> Tensor:
    """Rows of weight (V, C) at ids (any shape, e.g. (B, T)) -> (*ids.shape, C), differentiable in weight.

    ids: a numpy integer array (checked against V on the host) or an int32 Tensor (see the module docstring).
    dtype: of the rows; by default the weight's (float32 for a bfloat16 weight).
    """
    _check_weight(weight, "embedding")
    vocab = weight.shape[0]
    if isinstance(ids, Tensor):
        return _Embedding.apply(weight, _device_ids(ids, weight, "embedding"), None, dtype)
    if not isinstance(ids, (np.ndarray, list, tuple, np.integer, int)):
        raise TypeError(f"embedding: ids must be a numpy integer array or an int32 engine.Tensor, "
                        f"got {type(ids).__name__}")
    host = _host_ids(ids, vocab, "embedding")
    return _Embedding.apply(weight, Tensor.from_numpy(host, weight.device), host, dtype)
