"""Selected rows of a tensor and back: `take_rows(x, rows)` is x[rows], `put_rows(y, rows, n)` places y's rows at
`rows` of n zero rows. Both are differentiable, and each one's backward is the other.

They let the LM head score only the positions a loss reads (a GRPO batch's completion tokens, not its prompts
or padding: TRL's `logits_to_keep`, per position). `rows` are distinct, so each direction is a plain gather:
x[rows] forward, and for the backward of x[rows] the gather of dy through the inverse map, whose -1 entries (rows
not taken) give zero rows. Kernels: `embedding` (its forward with device ids; an id outside the table reads as
zeros).
"""

from __future__ import annotations

import numpy as np

from wgrpo.engine.autograd import Function
from wgrpo.engine.ops.embedding import embedding_forward
from wgrpo.engine.tensor import Tensor


def _gather(x: Tensor, ids: Tensor) -> Tensor:
    """x[ids] for float32 x of N rows (any trailing shape): ids (M,) int32 on the device, -1 giving a zero row."""
    if x.dtype != np.float32:
        raise TypeError(f"rows: gathers float32 rows (activations, log-probs), got {x.dtype} of shape {x.shape}")
    flat = x if x.ndim == 2 else x.view((x.shape[0], x.size // max(1, x.shape[0])))
    return embedding_forward(ids, flat).view((ids.shape[0],) + x.shape[1:])


class _Gather(Function):
    @staticmethod
    def forward(ctx, x, ids, inverse):
        ctx.save_for_backward(inverse, ids)
        return _gather(x, ids)

    @staticmethod
    def backward(ctx, dy):
        inverse, _ids = ctx.saved
        return _gather(dy, inverse), None, None


class RowSelection:
    """Distinct rows of an n-row tensor: their indices and the inverse map (n entries: the row's place among the
    selected, -1 for the others), both uploaded once and shared by every take and put of this selection."""

    def __init__(self, rows, n: int, device):
        rows = np.asarray(rows)
        if rows.size == 0:
            rows = rows.astype(np.int32)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise TypeError(f"rows: must be a 1-D integer array, got {rows.dtype} of shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            bad = rows[(rows < 0) | (rows >= n)]
            raise ValueError(f"rows: {bad.size} index(es) outside [0, {n}), e.g. {int(bad[0])}")
        inverse = np.full(n, -1, np.int32)
        inverse[rows] = np.arange(rows.size, dtype=np.int32)
        if np.count_nonzero(inverse >= 0) != rows.size:
            raise ValueError(f"rows: the {rows.size} indices must be distinct")
        self.rows, self.n = rows.astype(np.int32), n
        self.ids = Tensor.from_numpy(self.rows, device)
        self.inverse = Tensor.from_numpy(inverse, device)

    def __len__(self) -> int:
        return int(self.rows.size)

    def take(self, x: Tensor) -> Tensor:
        """x[rows] for x of n rows (any trailing shape), differentiable in x."""
        if x.shape[0] != self.n:
            raise ValueError(f"take_rows: x has {x.shape[0]} rows, the selection is of {self.n}")
        return _Gather.apply(x, self.ids, self.inverse)

    def put(self, y: Tensor) -> Tensor:
        """n rows: y's at the selected rows, zeros elsewhere (y has one row per selected row), differentiable."""
        if y.shape[0] != len(self):
            raise ValueError(f"put_rows: y has {y.shape[0]} rows for a selection of {len(self)}")
        return _Gather.apply(y, self.inverse, self.ids)


def take_rows(x: Tensor, rows) -> Tensor:
    """x[rows] for distinct row indices `rows` (a host integer array), differentiable in x."""
    return RowSelection(rows, x.shape[0], x.device).take(x)


def put_rows(y: Tensor, rows, n: int) -> Tensor:
    """n rows, y[i] at row rows[i] and zeros elsewhere, for distinct `rows` (a host integer array)."""
    return RowSelection(rows, n, y.device).put(y)
