"""The pool of storage buffers a runtime hands tensors: free lists by size class, reused rather than destroyed.

A freed tensor's buffer goes back to its size class; the next request of that class gets the oldest free block
(see `BufferPool`); one no pending command touches when the host is to write into it. Must not import `rl`.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import wgpu

if TYPE_CHECKING:
    from wgrpo.engine.runtime import RuntimeStats

_STORAGE_USAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST


class Block:
    """One pooled GPU buffer. `epoch` is the last submit that may still touch it."""

    __slots__ = ("buffer", "nbytes", "epoch", "pinned", "serial")

    def __init__(self, buffer: wgpu.GPUBuffer, nbytes: int, serial: int):
        self.buffer, self.nbytes, self.epoch = buffer, nbytes, -1
        self.pinned = 0  # replayable recordings that bind it: kept out of the free lists while any does
        self.serial = serial  # order of creation: the free lists hand out the oldest first


def size_class(nbytes: int) -> int:
    """Round up so that similar sizes share free lists: to 256 B, then to one of 8 steps per power of two."""
    nbytes = max(256, (nbytes + 255) & ~255)
    step = max(256, 1 << (nbytes.bit_length() - 4))
    return (nbytes + step - 1) // step * step


def _newest_first(block: Block) -> int:
    return -block.serial


class BufferPool:
    """Free lists of storage buffers by size class. Buffers are never destroyed while the pool lives.

    A request gets the oldest free block of its class, not the last one freed: which block a tensor receives
    then depends only on which blocks are free, not on the order they were freed in, so a step that repeats the
    last one's allocations and frees receives the same buffers again, and its bind groups are cache hits (with
    the most recently freed block first, a step freeing its tensors in the order it made them would get them
    back permuted, and every dispatch would build a new bind group).
    """

    def __init__(self, device: wgpu.GPUDevice, stats: RuntimeStats):
        self._device, self._stats = device, stats
        self._free: dict[int, list[Block]] = {}
        # Every block ever created, so that its buffer is reachable from the pool: a tensor dropped inside a
        # reference cycle (a traceback's frames, say) is collected with the blocks only it reaches, and the
        # collector would run the wgpu buffer's finalizer (releasing it) even as the tensor's own finalizer
        # hands the block back to the free list.
        self._blocks: list[Block] = []
        self._parked: list[Block] = []  # pinned blocks no tensor holds any more: free once unpinned
        self.bytes_held = 0

    def acquire(self, nbytes: int, *, writable_before: int | None = None) -> Block:
        """A block of at least `nbytes`. With `writable_before=epoch`, only a block no pending command uses.

        The host's `queue.write_buffer` lands before the commands still being recorded, so a block the current
        recording reads or writes must not receive host data.
        """
        size = size_class(nbytes)
        free = self._free.get(size, [])  # newest to oldest
        for i in range(len(free) - 1, -1, -1):
            if writable_before is None or free[i].epoch < writable_before:
                self._stats.buffers_reused += 1
                return free.pop(i)
        buffer = self._device.create_buffer(size=size, usage=_STORAGE_USAGE)
        self._stats.buffers_created += 1
        self.bytes_held += size
        block = Block(buffer, size, serial=self._stats.buffers_created)  # the count only grows: a creation order
        self._blocks.append(block)
        return block

    def release(self, block: Block) -> None:
        if block.pinned:
            self._parked.append(block)
            return
        bisect.insort(self._free.setdefault(block.nbytes, []), block, key=_newest_first)

    def pin(self, blocks) -> None:
        """Keep `blocks` from being handed out again (a recorded step replays into them), free ones included."""
        for block in set(blocks):
            block.pinned += 1
        for size, free in self._free.items():
            kept = [block for block in free if not block.pinned]
            if len(kept) != len(free):
                self._parked.extend(block for block in free if block.pinned)
                self._free[size] = kept

    def unpin(self, blocks) -> None:
        """Undo `pin`: the blocks no tensor holds go back to the free lists."""
        for block in set(blocks):
            block.pinned -= 1
        parked, self._parked = self._parked, []
        for block in parked:
            self.release(block)

    def trim(self) -> int:
        """Destroy every free buffer, giving its memory back; returns the bytes freed. Only safe once no
        recorded or submitted command can touch a free block (`Runtime.trim` waits for that)."""
        free = [block for blocks in self._free.values() for block in blocks]
        for block in free:
            block.buffer.destroy()
        dropped = {id(block) for block in free}
        self._blocks = [block for block in self._blocks if id(block) not in dropped]
        self._free.clear()
        freed = sum(block.nbytes for block in free)
        self.bytes_held -= freed
        return freed
