"""Fused scaled-dot-product attention with grouped-query heads (GQA), causal or not, and its backward.

Three variants of the training kernels (`VARIANTS`), with the same layouts and results; `attention(variant=...)`
and the helpers `attention_forward` / `attention_backward` force one (tests, an autotuner), `choose_variant`
picks one otherwise (the per-adapter autotuner's). "tiled" (`kernels/attention_tiled.wgsl`, FlashAttention-2's
schedule: K/V or Q/dO tiles in workgroup memory, shared by a workgroup's block of rows) is meant for GPUs and long
sequences; its tile sizes (`Tiles`) are chosen to fit the adapter's workgroup memory (`choose_tiles`), and its
grid is (ceil(rows / BQ or BK), heads, B). "subgroup" (`kernels/attention_sg.wgsl`, for CPU adapters such as
lavapipe; it needs the subgroup feature, `refusal`) gives each subgroup of 8 invocations G groups of 8 rows
(`subgroup_groups`), a lane holding one row of each group in registers, and streams the other axis past once per
workgroup, each streamed row spread over the lanes and broadcast. The "serial" kernels, in kernels/attention.wgsl
(one invocation per query row, or per key row for dk/dv, streaming over the other axis with an online softmax; no
T x T matrix in memory):
- `attention_serial`: out (B, T_q, H, D) and the per-row log-sum-exp lse (B, H, T_q, f32) the backward reuses;
- `attention_backward_delta_serial`: delta = rowsum(dO * O) (B, H, T_q, f32);
- `attention_backward_dq_serial`: dq, recomputing probabilities from q, k and lse;
- `attention_backward_dkv_serial`: dk and dv for each kv head, looping over the query heads of its group (no
  atomics, so results are deterministic).
Every serial entry runs on a 3-D grid (ceil(rows / WG), heads, B): rows = T_q and heads = H, or for dkv T_k and H_kv.

`attention_cached` (inference only, no gradient) attends new queries over a KV cache (B, T_cap, H_kv, D) whose
first `length` rows are valid and whose batch row b begins at `starts[b]` (left-padded prompts), with the entries of
kernels/attention_decode.wgsl (`CACHE_FAMILY`, which shares the serial kernels' Params and MAX_D):
- `attention_cached` for prefill (T_q queries per row; grid as above);
- one query per row (a decode step), one of `DECODE_VARIANTS`: `attention_decode`, the spec (one invocation per
  (b, h) over a flat grid, so decoding fills every lane), or `attention_decode_subgroup` (one subgroup of 8 lanes
  per (b, kv head) holding up to DECODE_MAX_HEADS of its query heads, so GQA heads share each K/V load; it needs
  the subgroup feature and D a multiple of 4), which is chosen where it can run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from wgrpo import kernels
from wgrpo.engine.autograd import Function
from wgrpo.engine.errors import InputError
from wgrpo.engine.ops._common import MAX_WORKGROUPS, SUBGROUP_LANES, check_float, flat_grid, subgroup_refusal
from wgrpo.engine.tensor import Tensor


def max_head_dim() -> int:
    """The largest head dimension D the kernels hold in private arrays (MAX_D in the WGSL)."""
    return kernels.load("attention").constants["MAX_D"]


# Kernel families of the training entries, by variant: "serial" gives each query (or key) row one invocation that
# streams over the other axis; "tiled" loads K/V (or Q/dO) tiles into workgroup memory once per block of rows
# (FlashAttention-2's schedule, for GPUs and long sequences); "subgroup" streams each K/V (or Q/dO) row once per
# subgroup of 8 * G rows, spread over the lanes and broadcast (CPU adapters). Same layouts and results.
VARIANTS = ("serial", "tiled", "subgroup")
_FAMILIES = {"serial": "attention", "tiled": "attention_tiled", "subgroup": "attention_sg"}
CACHE_FAMILY = "attention_decode"  # the KV-cache entries of generation: prefill and decode steps
_OPS = ("forward", "delta", "dq", "dkv")
# (BQ, BK) of the tiled entries, most preferred first; the first whose workgroup memory fits the adapter is used.
TILE_CANDIDATES = ((32, 32), (32, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4))
MIN_WORKGROUP_STORAGE = 16384  # WebGPU's guaranteed max-compute-workgroup-storage-size


def _block_grid(per_workgroup: int, rows: int, heads: int, batch: int, what: str) -> tuple[int, int, int]:
    """(ceil(rows / per_workgroup), heads, batch): one workgroup per block of rows of one (b, head)."""
    grid = (math.ceil(rows / per_workgroup), heads, batch)
    if max(grid) > MAX_WORKGROUPS:
        raise ValueError(f"attention: {what} needs a grid of {grid} workgroups, over {MAX_WORKGROUPS} per dimension")
    return grid


def _grid(entry: str, rows: int, heads: int, batch: int, what: str, family: str = "attention") -> tuple[int, int, int]:
    """The grid of a serial entry (of attention.wgsl, or `family`), whose workgroups give each row one invocation."""
    return _block_grid(kernels.load(family).invocations(entry), rows, heads, batch, what)


def _entry(op: str, variant: str) -> str:
    return f"attention_{variant}" if op == "forward" else f"attention_backward_{op}_{variant}"


@dataclass(frozen=True)
class Tiles:
    """Tile sizes of the tiled entries (the overrides of kernels/attention_tiled.wgsl): `bq` query rows and `bk`
    key rows, per workgroup or per tile (the forward and dq own BQ queries and step over tiles of BK keys; dk/dv
    own BK keys and step over tiles of BQ queries), and `lanes` invocations per row."""

    bq: int
    bk: int
    lanes: int = 4

    def constants(self, d: int) -> dict[str, int]:
        """The pipeline's override values for head dimension d (ROW: the odd row stride of the tiles)."""
        return {"BQ": self.bq, "BK": self.bk, "LANES": self.lanes, "ROW": d | 1}

    def workgroup_bytes(self, op: str, d: int) -> int:
        """Workgroup memory of `op`'s entry ("forward", "delta", "dq" or "dkv"), as its header sums it."""
        bq, bk, row = self.bq, self.bk, d | 1
        words = {"forward": bq * row + 2 * bk * row + bq * bk, "delta": bq * self.lanes,
                 "dq": 2 * bq * row + 2 * bk * row + bq * bk,
                 "dkv": 2 * bq * row + 2 * bk * row + 2 * bq * bk + 2 * bq}[op]
        return 4 * words

    def rows_per_workgroup(self, op: str) -> int:
        return self.bk if op == "dkv" else self.bq


def _min_lanes(d: int) -> int:
    """Invocations a row needs so that none accumulates more than COLS head-dimension columns."""
    return max(1, math.ceil(d / kernels.load("attention_tiled").constants["COLS"]))


def _chosen_lanes(d: int) -> int:
    """Invocations per row of the tiles chosen for the adapter (choose_tiles, the tuned sizes): 4, or more for a D
    that needs them."""
    return max(4, _min_lanes(d))


def choose_tiles(op: str, d: int, storage_limit: int = MIN_WORKGROUP_STORAGE) -> Tiles:
    """The first of TILE_CANDIDATES whose workgroup memory for `op` at head dimension d fits `storage_limit` bytes
    (the adapter's max-compute-workgroup-storage-size)."""
    lanes = _chosen_lanes(d)
    for bq, bk in TILE_CANDIDATES:
        tiles = Tiles(bq, bk, lanes)
        if tiles.workgroup_bytes(op, d) <= storage_limit:
            return tiles
    raise ValueError(f"attention: no tile size fits {storage_limit} bytes of workgroup memory for {op} at D={d}")


def _storage_limit(device) -> int:
    return device.limits.get("max-compute-workgroup-storage-size", MIN_WORKGROUP_STORAGE)


def _tiles_for(op: str, q: Tensor, tiles: Tiles | None) -> Tiles:
    """The tiles `op` runs with: `tiles` if given (checked against the adapter), else `choose_tiles`."""
    d, limit = q.shape[-1], _storage_limit(q.device)
    if tiles is None:
        return choose_tiles(op, d, limit)
    if not isinstance(tiles, Tiles) or min(tiles.bq, tiles.bk, tiles.lanes) < 1:
        raise InputError(f"attention: tiles must be a Tiles with positive bq, bk and lanes, got {tiles!r}")
    if tiles.lanes < _min_lanes(d):
        raise InputError(f"attention: {tiles!r} has {tiles.lanes} lanes; D={d} needs at least {_min_lanes(d)}")
    invocations = tiles.rows_per_workgroup(op) * tiles.lanes
    max_invocations = q.device.limits.get("max-compute-invocations-per-workgroup", 256)
    if invocations > max_invocations:
        raise InputError(f"attention: {tiles!r} gives {op} {invocations} invocations per workgroup, over the "
                         f"adapter's {max_invocations}; use smaller bq, bk or lanes")
    if tiles.workgroup_bytes(op, d) > limit:
        raise InputError(f"attention: {tiles!r} needs {tiles.workgroup_bytes(op, d)} bytes of workgroup memory for "
                         f"{op} at D={d}, over the adapter's {limit}; use smaller bq or bk")
    return tiles


TUNED_TILES = 4  # the largest TILE_CANDIDATES that fit: what the autotuner times for "tiled"


def tile_choices(device, d: int) -> list[Tiles]:
    """The tiles the autotuner times for "tiled" at head dimension d on `device`: the TUNED_TILES largest of
    TILE_CANDIDATES that fit every tiled entry (workgroup memory and invocations per workgroup)."""
    lanes = _chosen_lanes(d)
    limit = _storage_limit(device)
    invocations = device.limits.get("max-compute-invocations-per-workgroup", 256)
    fitting = [Tiles(bq, bk, lanes) for bq, bk in TILE_CANDIDATES]
    fitting = [t for t in fitting if all(t.workgroup_bytes(op, d) <= limit and t.rows_per_workgroup(op) * lanes
                                         <= invocations for op in _OPS)]
    return fitting[:TUNED_TILES]


def tiled_name(tiles: Tiles) -> str:
    """The variant name of "tiled" at these tiles, as the autotuner records it: "tiled:BQxBK"."""
    return f"tiled:{tiles.bq}x{tiles.bk}"


def _named_tiles(name: str, d: int) -> tuple[str, Tiles | None]:
    """(variant, tiles) of a variant name: "tiled:BQxBK" names tiles (`_chosen_lanes` at D = d); any other name
    none."""
    base, colon, spec = name.partition(":")
    if not colon:
        return name, None
    sizes = re.fullmatch(r"(\d+)x(\d+)", spec)
    if base != "tiled" or sizes is None:
        raise InputError(f"attention: variant {name!r} is not one of {VARIANTS} nor 'tiled:BQxBK' (e.g. 'tiled:32x16')")
    return base, Tiles(int(sizes[1]), int(sizes[2]), _chosen_lanes(d))


def usable_variant(device, name: str, d: int) -> str | None:
    """What to run of a remembered autotuner choice `name` (one of VARIANTS, or "tiled:BQxBK") at head dimension d
    on `device`: the name; "tiled" (tiles chosen for the adapter) where its tiles do not fit at this d (a shape class
    holds several); None where the variant cannot run here (a cache written with other features) or the name is
    not one."""
    try:
        base, tiles = _named_tiles(name, d)
    except InputError:
        return None
    if base not in eligible_variants(device):
        return None
    return name if tiles is None or tiles in tile_choices(device, d) else base


SUBGROUP_CHUNK = 32  # head-dimension elements per register chunk of a lane's row
SUBGROUP_MAX_SLOTS = 8  # chunks a lane holds per row array (G * ceil(D / 32) <= 8)


def refusal(variant: str, device) -> str | None:
    """Why `variant` cannot run on `device`, in words, or None when it can (the subgroup kernels' probe,
    `engine.ops._common.subgroup_refusal`, runs once per device for every op)."""
    return subgroup_refusal(device) if variant == "subgroup" else None


def eligible_variants(device) -> tuple[str, ...]:
    """The VARIANTS `device` can run: what an autotuner times."""
    return tuple(name for name in VARIANTS if refusal(name, device) is None)


def subgroup_groups(op: str, d: int, t_q: int, t_k: int, per_kv: int = 1) -> int:
    """Row groups G (of 8 rows) per workgroup of the subgroup entry of `op` ("forward", "delta", "dq", "dkv") at head
    dimension d, for T_q = t_q, T_k = t_k and per_kv query heads per kv head. More rows per workgroup read each
    streamed row fewer times; on short sequences the extra rows mostly wait on keys they do not see (causal) and
    leave fewer workgroups for the cores. Chosen by `_subgroup_slots` (G * ceil(D / 32) register chunks a lane
    holds), measured on lavapipe (2 cores)."""
    chunks = math.ceil(d / SUBGROUP_CHUNK)
    slots = _subgroup_slots(op, max(t_q, t_k))
    rows = math.ceil(t_k / SUBGROUP_LANES) if op == "dkv" else per_kv * math.ceil(t_q / SUBGROUP_LANES)
    return max(1, min(slots // chunks, rows, SUBGROUP_MAX_SLOTS // chunks))


def _subgroup_slots(op: str, longest: int) -> int:
    """Register chunks per lane (G * ceil(D / 32)) for `op` at sequences of `longest` positions. Measured on lavapipe
    (2 cores, D = 32 to 128, fastest against each other choice, interleaved): 2 up to 64 positions; beyond, 8 for
    the forward (1.06x at T = 128, D = 64 and 1.14-1.65x at D = 128; 1.12-1.3x from T = 256) and for dq and dk/dv from
    256 positions (1.04-1.07x at 256, 1.15-1.2x at 512-2048), 4 for them below (8 there is 5-15% slower)."""
    if longest <= 64:
        return 2
    if op == "forward" or longest >= 256:
        return SUBGROUP_MAX_SLOTS
    return 4


def _subgroup_launch(op: str, params: dict, batch: int) -> tuple[dict[str, int], tuple[int, int, int]]:
    """(override constants, grid) of the subgroup entry of `op` for the problem in `params`."""
    t_q, t_k, heads, kv_heads, d = (params[name] for name in ("t_q", "t_k", "heads", "kv_heads", "d"))
    if op == "delta":  # one row per lane, holding nothing: no override applies
        return {}, _block_grid(SUBGROUP_LANES, t_q, heads, batch, op)
    per_kv = heads // kv_heads
    groups = subgroup_groups(op, d, t_q, t_k, per_kv)
    constants = {"CHUNKS": math.ceil(d / SUBGROUP_CHUNK), "GROUPS": groups}
    row_groups = math.ceil(t_k / SUBGROUP_LANES) if op == "dkv" else per_kv * math.ceil(t_q / SUBGROUP_LANES)
    return constants, _block_grid(groups, row_groups, kv_heads, batch, op)


def choose_variant(device, q_shape: tuple[int, ...], k_shape: tuple[int, ...], elem: str = "f32",
                   causal: bool = True) -> str:
    """The variant `attention` runs when none is given: the per-adapter autotuner's for the shape class
    (`engine.ops.attention_tuning`; lavapipe's shipped table has the measured winners), "serial" while tuning is
    off."""
    from wgrpo.engine.ops.attention_tuning import tuned_variant

    return tuned_variant(device, q_shape, k_shape, elem, causal)


def _resolve(variant: str | None, tiles: Tiles | None, q: Tensor, k: Tensor,
             causal: bool = True) -> tuple[str, Tiles | None]:
    """(variant, tiles) to run: `variant` (None: `choose_variant`), a "tiled:BQxBK" name giving the tiles."""
    name = choose_variant(q.device, q.shape, k.shape, q.elem, causal) if variant is None else variant
    if not isinstance(name, str):
        raise InputError(f"attention: variant must be one of {VARIANTS} or None, got {variant!r}")
    base, named = _named_tiles(name, q.shape[-1])
    if base not in VARIANTS:
        raise InputError(f"attention: variant must be one of {VARIANTS} or None, got {variant!r} ('tiled:BQxBK' "
                         f"names tiled's tiles)")
    why = refusal(base, q.device)
    if why is not None:
        raise InputError(f"attention: variant {base!r} cannot run here: {why}; use variant='serial' or None")
    if named is not None and tiles is not None and (named.bq, named.bk) != (tiles.bq, tiles.bk):
        raise InputError(f"attention: variant {name!r} names other tiles than tiles={tiles!r}")
    return base, tiles if tiles is not None else named


def _dispatch(op: str, variant: str, tiles: Tiles | None, buffers: list, rows: int, heads: int, q: Tensor,
              params: dict, shapes: str) -> None:
    """Record `op`'s entry of `variant` over a grid of (blocks of `rows`, `heads`, B)."""
    entry, family, constants = _entry(op, variant), _FAMILIES[variant], None
    if variant == "tiled":
        chosen = _tiles_for(op, q, tiles)
        constants = chosen.constants(q.shape[-1])
        shapes = f"{shapes}, {chosen}"
        grid = _block_grid(chosen.rows_per_workgroup(op), rows, heads, q.shape[0], op)
    elif variant == "subgroup":
        constants, grid = _subgroup_launch(op, params, q.shape[0])
        shapes = f"{shapes}, G={constants.get('GROUPS', 1)}"
    else:
        grid = _grid(entry, rows, heads, q.shape[0], op)
    q.runtime.dispatch(family, entry, buffers, grid, params, elem=q.elem, constants=constants, shapes=shapes)


def _params(q: Tensor, k: Tensor, causal: bool, scale: float) -> dict:
    _, t_q, heads, d = q.shape
    _, t_k, kv_heads, _ = k.shape
    # t_cap and batch belong to the KV-cache entries only
    return {"t_q": t_q, "t_k": t_k, "heads": heads, "kv_heads": kv_heads, "d": d, "causal": causal, "scale": scale,
            "t_cap": 0, "batch": 0}


def _shapes(q: Tensor, k: Tensor, causal: bool) -> str:
    return f"q {q.shape}, k/v {k.shape}, causal={causal}"


def attention_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, variant: str | None = None,
                      tiles: Tiles | None = None) -> tuple[Tensor, Tensor]:
    """(out (B, T_q, H, D), lse (B, H, T_q) float32) for checked operands, with `variant` (one of VARIANTS; None:
    `choose_variant`; "tiled:BQxBK" gives the tiles) and, for "tiled", `tiles` (None: `choose_tiles` for the
    adapter)."""
    variant, tiles = _resolve(variant, tiles, q, k, causal)
    b, t_q, heads, _ = q.shape
    out = Tensor.empty(q.shape, q.dtype, q.device)
    lse = Tensor.empty((b, heads, t_q), "float32", q.device)
    if out.size == 0:
        return out, lse
    _dispatch("forward", variant, tiles, [q, k, v, out, lse], t_q, heads, q, _params(q, k, causal, scale),
              _shapes(q, k, causal))
    return out, lse


def attention_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, d_out: Tensor, causal: bool,
                       scale: float, need_dq: bool = True, need_dkv: bool = True, variant: str | None = None,
                       tiles: Tiles | None = None):
    """(dq, dk, dv) of attention (None for those not asked for), from the forward's out and lse (of either
    variant: both write the same layouts), with `variant` and `tiles` as `attention_forward`."""
    variant, tiles = _resolve(variant, tiles, q, k, causal)
    b, t_q, heads, _ = q.shape
    _, t_k, kv_heads, _ = k.shape
    params, shapes = _params(q, k, causal, scale), _shapes(q, k, causal)
    delta = Tensor.empty((b, heads, t_q), "float32", q.device)  # (B, H, T_q)
    dq = Tensor.empty(q.shape, q.dtype, q.device) if need_dq else None
    dk = Tensor.empty(k.shape, k.dtype, k.device) if need_dkv else None
    dv = Tensor.empty(v.shape, v.dtype, v.device) if need_dkv else None
    if q.size == 0 or k.size == 0:
        return dq, dk, dv
    _dispatch("delta", variant, tiles, [out, d_out, delta], t_q, heads, q, params, shapes)
    if need_dq:
        _dispatch("dq", variant, tiles, [q, k, v, d_out, lse, delta, dq], t_q, heads, q, params, shapes)
    if need_dkv:
        _dispatch("dkv", variant, tiles, [q, k, v, d_out, lse, delta, dk, dv], t_k, kv_heads, q, params, shapes)
    return dq, dk, dv


class _Attention(Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, variant, tiles):
        out, lse = attention_forward(q, k, v, causal, scale, variant, tiles)
        ctx.save_for_backward(q, k, v, out.detach(), lse, causal, scale, variant, tiles)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse, causal, scale, variant, tiles = ctx.saved
        if d_out.dtype != q.dtype:
            raise TypeError(f"attention backward: the output gradient is {d_out.dtype} but q is {q.dtype}")
        need_dkv = ctx.needs_grad[1] or ctx.needs_grad[2]
        dq, dk, dv = attention_backward(q, k, v, out, lse, d_out, causal, scale, ctx.needs_grad[0], need_dkv,
                                        variant, tiles)
        return dq, dk if ctx.needs_grad[1] else None, dv if ctx.needs_grad[2] else None, None, None, None, None


def _check(q, k, v, causal: bool) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"attention: {name} must be an engine.Tensor, got {type(t).__name__}")
        check_float(t, name, "attention")
        if t.ndim != 4:
            raise ValueError(f"attention: {name} must have shape (B, T, heads, D), got shape {t.shape}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"attention: {name} is {t.dtype} but q is {q.dtype}")
        if t.device is not q.device:
            raise ValueError(f"attention: {name} is on {t.device.name} but q is on {q.device.name}")
    if k.shape != v.shape:
        raise ValueError(f"attention: k and v must have the same shape (B, T_k, H_kv, D), got {k.shape} and {v.shape}")
    (b, t_q, heads, d), (b_k, t_k, kv_heads, d_k) = q.shape, k.shape
    if b_k != b:
        raise ValueError(f"attention: q has batch {b} but k has batch {b_k} (q {q.shape}, k {k.shape})")
    if d_k != d:
        raise ValueError(f"attention: q has head dimension D={d} but k and v have D={d_k} (q {q.shape}, k {k.shape})")
    if d > max_head_dim():
        raise ValueError(f"attention: head dimension D={d} of q {q.shape} exceeds the kernels' maximum of "
                         f"{max_head_dim()}")
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"attention: the H={heads} query heads of q {q.shape} must be a multiple of the "
                         f"H_kv={kv_heads} kv heads of k {k.shape}")
    if causal and t_q > t_k:
        raise ValueError(f"attention: causal needs T_q <= T_k, got q {q.shape} (T_q={t_q}) and k {k.shape} (T_k={t_k})")
    if t_k == 0 and q.size:
        raise ValueError(f"attention: k {k.shape} has no keys for the queries of q {q.shape}")


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, scale: float | None = None, *,
              variant: str | None = None, tiles: Tiles | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v per head, with grouped-query heads.

    q is (B, T_q, H, D); k and v are (B, T_k, H_kv, D) with H a multiple of H_kv: query head h uses kv head
    h // (H / H_kv). Returns (B, T_q, H, D). `scale` defaults to 1 / sqrt(D). With `causal=True` (T_q <= T_k)
    the queries are the last T_q positions: query i sees keys j <= i + (T_k - T_q), as in KV-cached decoding.
    D is at most `max_head_dim()` (128). Differentiable in q, k and v. `variant` forces the kernels of forward
    and backward (one of VARIANTS, "subgroup" only where the adapter has subgroups, or "tiled:BQxBK" with its
    tiles; None: `choose_variant`), `tiles` the tile sizes of "tiled" (None: chosen for the adapter); for tests and
    autotuning.
    """
    _check(q, k, v, causal)
    variant, tiles = _resolve(variant, tiles, q, k, causal)
    if variant == "tiled":
        for op in _OPS:
            _tiles_for(op, q, tiles)  # refuse bad tiles before the forward runs
    scale = 1.0 / math.sqrt(max(q.shape[-1], 1)) if scale is None else float(scale)
    return _Attention.apply(q, k, v, bool(causal), scale, variant, tiles)


def attention_cached(q: Tensor, k_cache: Tensor, v_cache: Tensor, starts: Tensor, length: int,
                     scale: float | None = None, *, decode: str | None = None) -> Tensor:
    """Causal attention of the T_q newest positions over a KV cache, for generation (no gradient).

    q (B, T_q, H, D) holds the queries of cache positions length - T_q .. length - 1; k_cache and v_cache are
    (B, T_cap, H_kv, D) with rows 0 .. length - 1 valid; starts (B,) int32 or uint32 is each row's first key
    (rows before it are left padding). Query i of row b sees keys j with starts[b] <= j <= i + length - T_q; a
    query that sees none (a padding position) gets zeros. Returns (B, T_q, H, D).
    `decode` forces the kernel of a one-query step (T_q = 1), one of DECODE_VARIANTS: "serial" (attention_decode,
    runs everywhere) or "subgroup" (attention_decode_subgroup: the subgroup feature, D a multiple of 4); None picks
    "subgroup" where it can run. For tests and benchmarks.
    """
    _check(q, k_cache, v_cache, causal=False)
    b, t_q, heads, d = q.shape
    t_cap, kv_heads = k_cache.shape[1], k_cache.shape[2]
    if not isinstance(starts, Tensor) or starts.dtype not in (np.dtype(np.int32), np.dtype(np.uint32)):
        raise TypeError(f"attention_cached: starts must be an int32 or uint32 Tensor of shape ({b},), got {starts!r}")
    if starts.shape != (b,):
        raise ValueError(f"attention_cached: starts must have shape ({b},) for q {q.shape}, got {starts.shape}")
    length = int(length)
    if not t_q <= length <= t_cap or length == 0:
        raise ValueError(f"attention_cached: length must be in [T_q, T_cap] = [{t_q}, {t_cap}] and positive for "
                         f"q {q.shape} and a cache {k_cache.shape}, got {length}")
    scale = 1.0 / math.sqrt(max(d, 1)) if scale is None else float(scale)
    out = Tensor.empty(q.shape, q.dtype, q.device)
    if out.size == 0:
        return out
    params = {"t_q": t_q, "t_k": length, "heads": heads, "kv_heads": kv_heads, "d": d, "causal": True,
              "scale": scale, "t_cap": t_cap, "batch": b}
    shapes = f"q {q.shape}, cache {k_cache.shape}, length {length}"
    if t_q == 1:
        entry, grid, constants = _decode_launch(q, kv_heads, decode)
        q.runtime.dispatch(CACHE_FAMILY, entry, [q, k_cache, v_cache, out, starts], grid, params, elem=q.elem,
                           constants=constants, shapes=shapes)
    elif decode is not None:
        raise InputError(f"attention_cached: decode={decode!r} applies to one query per row, but q {q.shape} has "
                         f"T_q={t_q}")
    else:
        q.runtime.dispatch(CACHE_FAMILY, "attention_cached", [q, k_cache, v_cache, out, starts],
                           _grid("attention_cached", t_q, heads, b, "cached", CACHE_FAMILY), params, elem=q.elem,
                           shapes=shapes)
    return out


DECODE_VARIANTS = ("serial", "subgroup")
DECODE_MAX_HEADS = 4  # query heads one workgroup of attention_decode_subgroup holds (a vec4 of scores per key)


def _decode_refusal(variant: str, q: Tensor) -> str | None:
    """Why decode `variant` cannot run for q, in words, or None when it can."""
    if variant == "subgroup":
        if q.shape[-1] % 4:
            return f"it reads rows as quads, and D={q.shape[-1]} is not a multiple of 4"
        return refusal("subgroup", q.device)
    return None


def _decode_launch(q: Tensor, kv_heads: int, decode: str | None) -> tuple[str, tuple[int, ...], dict | None]:
    """(entry, grid, override constants) of a decode step: `decode` if given (checked), else "subgroup" where it can
    run. The choice depends on shapes only, never on the cache length, so recorded steps replay."""
    if decode is not None and decode not in DECODE_VARIANTS:
        raise InputError(f"attention_cached: decode must be one of {DECODE_VARIANTS} or None, got {decode!r}")
    variant = decode or ("subgroup" if _decode_refusal("subgroup", q) is None else "serial")
    why = _decode_refusal(variant, q)
    if why is not None:
        raise InputError(f"attention_cached: decode={variant!r} cannot run here: {why}; use 'serial' or None")
    b, _, heads, d = q.shape
    if variant == "serial":
        return "attention_decode", flat_grid(CACHE_FAMILY, "attention_decode", b * heads), None
    chunks, per_kv = math.ceil(d / SUBGROUP_CHUNK), heads // kv_heads
    # Every K/V element is loaded once per workgroup, so the more heads a workgroup holds the better (lavapipe, D=128,
    # 8 heads per kv head: 4 heads per workgroup 1.0 ms, 2 heads 1.8 ms)
    passes = math.ceil(per_kv / DECODE_MAX_HEADS)  # workgroups per (b, kv head)
    held = math.ceil(per_kv / passes)  # query heads per workgroup, balanced over the passes
    grid = _block_grid(1, passes, kv_heads, b, "decode")
    return "attention_decode_subgroup", grid, {"DECODE_CHUNKS": chunks, "DECODE_HEADS": held}
