"""The KV cache of generation: per-layer keys and values on the GPU, and the `attend` hook the model calls.

Owns: `KVCache` (layout, the write of each step's keys/values, attention over the cached prefix, and gathering
rows into a new cache: one prompt's prefill shared by its samples, finished sequences dropped) and
`gather_rows`. Kernels: `kernels/kvcache.wgsl` (kv_write, gather_rows and its vec4 twin gather_rows4, picked when
the row sizes and strides are multiples of 4 words) and `engine.ops.attention_cached`.
Must not import `rl`.

Layout: for each layer, k and v are (B, T_cap, H_kv, D). Prompts are left-padded to a common length, so every
batch row writes the same cache column at each step (`length`, host-known, so no per-row counters live on the
GPU); row b's real tokens begin at `starts[b]`, and the keys before it are masked out of attention.
"""

from __future__ import annotations

import math

import numpy as np

from wgrpo.engine import ops
from wgrpo.engine.ops._common import VEC4_VARIANTS, flat_grid, grid_1d, invocations, starts_on_quads, vec4_variant
from wgrpo.engine.memory import memory_kind
from wgrpo.engine.tensor import Tensor


GATHER_VARIANTS = VEC4_VARIANTS
# Quads per invocation of gather_rows4: lavapipe pays per load/store instruction and per invocation, so a few
# contiguous quads per invocation help; GPUs keep one, where neighbouring invocations copy neighbouring quads.
SOFTWARE_QUADS = 8
GPU_QUADS = 1


def _gather_variant(variant: str | None, words: int, src_stride: int, dst_stride: int, src: Tensor,
                    dst: Tensor) -> str:
    """"vec4" when the sizes, the strides and both bindings' offsets are whole quads (16 bytes), else "scalar"; a
    given `variant` (tests force one) is checked instead, and "vec4" where it cannot run is refused."""
    aligned = (words % 4 == 0 and src_stride % 4 == 0 and dst_stride % 4 == 0
               and starts_on_quads(src, dst))
    return vec4_variant(variant, aligned, "gather_rows", f"words and strides multiples of 4, got {words} words "
                                                         f"and strides {src_stride}, {dst_stride}")


def gather_rows(src: Tensor, index: np.ndarray, words: int, src_stride: int, dst: Tensor, dst_stride: int,
                variant: str | None = None) -> None:
    """Record dst[r * dst_stride + c] = src[index[r] * src_stride + c] for c < words (32-bit words). `variant`:
    "scalar", "vec4" (words and strides multiples of 4) or None (vec4 where it applies)."""
    index = np.asarray(index, np.uint32)
    n = index.size * words
    if src.dtype.itemsize != 4 or dst.dtype.itemsize != 4:
        raise TypeError(f"gather_rows copies 32-bit words; got {src.dtype} and {dst.dtype}")
    if index.size and (int(index.max()) * src_stride + words > src.size or (index.size - 1) * dst_stride + words
                       > dst.size):
        raise ValueError(f"gather_rows: rows {index.tolist()} of {words} words (strides {src_stride}, {dst_stride}) "
                         f"overrun src {src.shape} or dst {dst.shape}")
    if n == 0:
        return
    kind = _gather_variant(variant, words, src_stride, dst_stride, src, dst)
    entry, constants, grid = "gather_rows", {}, flat_grid("kvcache", "gather_rows", n)
    if kind == "vec4":
        quads = SOFTWARE_QUADS if src.device.is_software else GPU_QUADS
        entry, constants = "gather_rows4", {"QUADS": quads}
        n = index.size * math.ceil(words // 4 / quads)
        grid = grid_1d(n, invocations("kvcache", entry))
    src.runtime.dispatch("kvcache", entry, [src, Tensor.from_numpy(index, src.device), dst], grid,
                         {"n": n, "words": words, "src_stride": src_stride, "dst_stride": dst_stride},
                         constants=constants,
                         shapes=f"{index.size} rows of {words} words from {src.shape} into {dst.shape}")


class KVCache:
    """Keys and values of `batch` sequences for every layer, `capacity` positions each.

    `starts` (host, numpy) is each row's first real position; `length` counts the columns written so far (the
    model's forward advances it after its last layer). Pass to `model(ids, positions, cache)`.
    """

    def __init__(self, num_layers: int, batch: int, capacity: int, kv_heads: int, head_dim: int, starts,
                 device, dtype=np.float32):
        starts = np.asarray(starts, np.uint32)
        if starts.shape != (batch,):
            raise ValueError(f"KVCache: starts must have shape ({batch},), got {starts.shape}")
        self.num_layers, self.batch, self.capacity = num_layers, batch, capacity
        self.kv_heads, self.head_dim, self.device, self.dtype = kv_heads, head_dim, device, np.dtype(dtype)
        shape = (batch, capacity, kv_heads, head_dim)
        with memory_kind("kv_cache"):
            self.k = [Tensor.empty(shape, dtype, device) for _ in range(num_layers)]
            self.v = [Tensor.empty(shape, dtype, device) for _ in range(num_layers)]
        self.starts = starts
        self.starts_gpu = Tensor.from_numpy(starts, device)
        self.length = 0

    @classmethod
    def for_model(cls, model, batch: int, capacity: int, starts) -> "KVCache":
        cfg = model.config
        return cls(cfg.num_layers, batch, capacity, cfg.num_kv_heads, cfg.head_dim, starts, model.device)

    @property
    def row_words(self) -> int:
        """32-bit words per cache position of one row (H_kv * D)."""
        return self.kv_heads * self.head_dim

    def decode_positions(self) -> Tensor:
        """(B, 1) int32 on the device: each row's position for the token going into column `length` (its
        column minus its left padding), computed by a kernel so that a decode step uploads nothing."""
        positions = Tensor.empty((self.batch, 1), np.int32, self.device)
        self.device.runtime.dispatch("kvcache", "decode_positions", [self.starts_gpu, positions],
                                     flat_grid("kvcache", "decode_positions", self.batch),
                                     {"batch": self.batch, "length": self.length}, shapes=f"{self.batch} rows")
        return positions

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store k, v (B, T, H_kv, D) at columns length .. length + T - 1, then attend q (B, T, H, D) over every
        cached key of its row; the last layer's call advances `length` by T."""
        batch, steps = k.shape[:2]
        if k.shape != (self.batch, steps, self.kv_heads, self.head_dim) or v.shape != k.shape:
            raise ValueError(f"KVCache.attend: k and v must be ({self.batch}, T, {self.kv_heads}, {self.head_dim}), "
                             f"got {k.shape} and {v.shape}")
        if self.length + steps > self.capacity:
            raise ValueError(f"KVCache.attend: {self.length} cached + {steps} new positions exceed the capacity "
                             f"{self.capacity}")
        n = k.size
        if n:
            k.runtime.dispatch("kvcache", "kv_write", [k, v, self.k[layer], self.v[layer]],
                               flat_grid("kvcache", "kv_write", n),
                               {"n": n, "row": self.row_words, "t_new": steps, "t_cap": self.capacity,
                                "column": self.length},
                               elem=k.elem, shapes=f"k/v {k.shape} into {self.k[layer].shape} at {self.length}")
        out = ops.attention_cached(q, self.k[layer], self.v[layer], self.starts_gpu, self.length + steps)
        if layer == self.num_layers - 1:
            self.length += steps
        return out

    def attend_qkv(self, layer: int, qkv: Tensor, heads: int, positions: Tensor, inv_freq: Tensor) -> Tensor:
        """`attend` for a fused projection qkv (B, T, (H + 2 H_kv) D): q, k rotated, k and v written into the
        cache in one dispatch (`ops.qkv_split_into_cache`), then attention over the cache; advances `length` as
        `attend` does."""
        batch, steps = qkv.shape[:2]
        if batch != self.batch or qkv.shape[-1] != (heads + 2 * self.kv_heads) * self.head_dim:
            raise ValueError(f"KVCache.attend_qkv: qkv must be ({self.batch}, T, ({heads} + 2 x {self.kv_heads}) x "
                             f"{self.head_dim}), got {qkv.shape}")
        if self.length + steps > self.capacity:
            raise ValueError(f"KVCache.attend_qkv: {self.length} cached + {steps} new positions exceed the "
                             f"capacity {self.capacity}")
        q = ops.qkv_split_into_cache(qkv, heads, self.kv_heads, positions, inv_freq, self.k[layer], self.v[layer],
                                     self.length)
        out = ops.attention_cached(q, self.k[layer], self.v[layer], self.starts_gpu, self.length + steps)
        if layer == self.num_layers - 1:
            self.length += steps
        return out

    def gather(self, index, capacity: int | None = None) -> "KVCache":
        """A new cache whose row r holds this cache's row index[r] (its `length` columns and its start): the
        samples of a group sharing one prefill, or the live rows after some sequences finished."""
        index = np.asarray(index, np.int64)
        capacity = self.capacity if capacity is None else capacity
        if capacity < self.length:
            raise ValueError(f"KVCache.gather: capacity {capacity} < the {self.length} cached positions")
        new = KVCache(self.num_layers, index.size, capacity, self.kv_heads, self.head_dim, self.starts[index],
                      self.device, self.dtype)
        words = self.length * self.row_words
        for layer in range(self.num_layers):
            for src, dst in ((self.k[layer], new.k[layer]), (self.v[layer], new.v[layer])):
                gather_rows(src, index, words, self.capacity * self.row_words, dst, capacity * self.row_words)
        new.length = self.length
        return new
