"""Several small tensors brought to the host in one read-back.

Each read-back waits for the GPU and costs a round trip (~0.2 ms on a CPU adapter, more on a discrete GPU), so a
step that needs its loss, its metrics and its gradient norm copies them side by side into one buffer on the
device and reads that once. Owns `read_together`. Must not import `rl`.
"""

from __future__ import annotations

import numpy as np

from wgrpo.engine.tensor import Tensor

_ALIGN = 4  # buffer copies move whole 32-bit words at 4-byte offsets


def read_together(tensors: list[Tensor]) -> list[np.ndarray]:
    """The values of `tensors` (unsplit, on one device), as `Tensor.numpy()` gives them, after one read-back."""
    tensors = list(tensors)
    if not tensors:
        return []
    device = tensors[0].device
    offsets, total = [], 0
    for index, t in enumerate(tensors):
        if not isinstance(t, Tensor) or t.is_split:
            raise TypeError(f"read_together: item {index} must be an unsplit engine.Tensor, got {t!r}")
        if t.device is not device:
            raise ValueError(f"read_together: item {index} is on {t.device.name}, item 0 on {device.name}")
        offsets.append(total)
        total += -(-t.nbytes // _ALIGN) * _ALIGN
    if len(tensors) == 1:
        return [tensors[0].numpy()]
    staging = Tensor.empty((total // 4,), np.uint32, device)
    runtime = device.runtime
    for t, offset in zip(tensors, offsets):
        if t.nbytes:
            runtime.copy(t, _Slice(staging, offset, t.nbytes))
    raw = staging.numpy().view(np.uint8)
    return [raw[offset:offset + t.nbytes].view(t.dtype).reshape(t.shape).copy() for t, offset in zip(tensors, offsets)]


class _Slice:
    """`nbytes` of a tensor's buffer from byte `offset`, as a copy destination."""

    def __init__(self, tensor: Tensor, offset: int, nbytes: int):
        self.tensor, self.offset, self.nbytes = tensor, offset, nbytes

    def binding(self):
        block, base, _ = self.tensor.binding()
        return block, base + self.offset, self.nbytes
