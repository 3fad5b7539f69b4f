"""Token embedding: out[..., :] = weight[ids[...], :], and its deterministic backward.

Kernels in `kernels/embedding.wgsl`: `embedding_forward` (one invocation per output element) and
`embedding_backward` (one invocation per (vocab row, channel), summing that id's dy rows in position order, so
there are no float atomics and every run gives the same bits). The backward needs the ids on the host: it sorts
the positions by id (stable) and uploads the permutation and CSR offsets per vocab row. Pass ids as a numpy array
(the trainer has them on the host anyway: no read-back, and out-of-range ids are refused up front); an int32
Tensor works too, at the cost of one read-back of the ids in the backward (its forward maps out-of-range ids to
rows of zeros, and the backward refuses them).
"""

from __future__ import annotations

import numpy as np

from wgrpo.engine.autograd import Function
from wgrpo.engine.dtypes import dtype_name
from wgrpo.engine.ops._common import check_float, check_weight, flat_grid
from wgrpo.engine.tensor import Tensor


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


def embedding_forward(ids: Tensor, weight: Tensor, dtype=None) -> Tensor:
    """The forward kernel alone (no autograd, no range check): ids int32 Tensor (...), weight (V, C) -> (..., C).

    The rows come out in `dtype`: by default the weight's (float32 for bfloat16, which no kernel computes in);
    float32 rows of a float16 weight read it packed and widen it, with no need for shader-f16. A weight held in
    row blocks is one dispatch per block."""
    channels = weight.shape[1]
    if dtype is None:
        dtype = np.float32 if weight.elem == "bf16" else weight.dtype
    out = Tensor.empty(ids.shape + (channels,), dtype, weight.device)
    packed = out.elem == "f32" and weight.elem in ("bf16", "f16")
    if not packed and out.dtype != weight.dtype:
        raise TypeError(f"embedding: rows of a {dtype_name(weight.dtype)} weight come out as float32 or "
                        f"{dtype_name(weight.dtype)}, not {dtype_name(out.dtype)}")
    n = ids.size * channels
    for index, ((first, stop), block) in enumerate(zip(weight.row_ranges, weight.parts)):
        weight.runtime.dispatch("embedding", "embedding_forward", [ids, block, out],
                                flat_grid("embedding", "embedding_forward", n),
                                {"n": n, "channels": channels, "vocab": stop - first, "first_row": first,
                                 "fill_others": index == 0},
                                elem=out.elem, weights=weight.elem if packed else "elem",
                                shapes=f"ids {ids.shape}, weight {weight.shape} rows {first}:{stop}")
    return out


def embedding_backward(dy: Tensor, ids, vocab: int) -> Tensor:
    """The backward kernel alone: dweight (V, C) with dweight[v] = sum of dy[t] over the positions t with ids[t] = v.

    ids: the forward's ids on the host (any integer array) or an int32 Tensor (read back); dy: (*ids.shape, C).
    """
    op = "embedding_backward"
    if isinstance(ids, Tensor):
        ids = ids.numpy()
    ids = _host_ids(ids, vocab, op)
    if not isinstance(dy, Tensor):
        raise TypeError(f"{op}: dy must be an engine.Tensor, got {type(dy).__name__}")
    check_float(dy, "dy", op)
    if dy.shape[:-1] != ids.shape or dy.ndim != ids.ndim + 1:
        raise ValueError(f"{op}: dy must have shape {ids.shape} + (C,) for ids of shape {ids.shape}, got {dy.shape}")
    channels = dy.shape[-1]
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable").astype(np.uint32)  # positions grouped by id, in position order
    offsets = np.zeros(vocab + 1, np.uint32)
    np.cumsum(np.bincount(flat, minlength=vocab), out=offsets[1:])
    dweight = Tensor.empty((vocab, channels), dy.dtype, dy.device)  # row blocks when over the binding limit
    order, offsets = Tensor.from_numpy(order, dy.device), Tensor.from_numpy(offsets, dy.device)
    for (first, stop), block in zip(dweight.row_ranges, dweight.parts):
        n = (stop - first) * channels
        dy.runtime.dispatch("embedding", "embedding_backward", [dy, order, offsets, block],
                            flat_grid("embedding", "embedding_backward", n),
                            {"n": n, "channels": channels, "vocab": stop - first, "first_row": first,
                             "fill_others": False},
                            elem=dy.elem, shapes=f"dy {dy.shape}, vocab {vocab} rows {first}:{stop}")
    return dweight


class _Embedding(Function):
    @staticmethod
    def forward(ctx, weight, ids, host_ids, dtype):
        ctx.save_for_backward(ids if host_ids is None else host_ids, weight.shape[0])
        return embedding_forward(ids, weight, dtype)

    @staticmethod
    def backward(ctx, dy):
        ids, vocab = ctx.saved
        return embedding_backward(dy, ids, vocab), None, None, None


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
