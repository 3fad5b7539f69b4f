"""The matmul kernels and what each can run: `Variant`, the `VARIANTS` table, `Problem`, `eligible_variants`.

Three kernel families compute the same thing with the same Params and bindings: `kernels/matmul.wgsl` (a readable
`matmul_naive`, register-blocked and subgroup variants), `kernels/matmul_cpu.wgsl` (subgroup variants with vec4
loads, one entry per layout, fastest on CPU adapters) and `kernels/matmul_tiled.wgsl` (workgroup-memory tiles
with a 2-D register block per invocation, and a form with vec4 loads, written for GPUs).
`VARIANTS` names each entry with its tile constants; a variant can refuse a problem (`Variant.refusal`: missing
features, tiles over the adapter's workgroup memory, a layout unaligned for vec4 loads) and `eligible_variants`
lists those that can run one, for the autotuner (`engine.ops.matmul_tuning`) to time. `choose_variant` is each
adapter's default when nothing was tuned.
"""

from __future__ import annotations

from dataclasses import dataclass

from wgrpo import kernels
from wgrpo.engine.device import Device
from wgrpo.engine.dtypes import dtype_name, float_dtype
from wgrpo.engine.errors import InputError
from wgrpo.kernels.registry import WEIGHT_STORAGE

_MAX_STAGED = 16  # MAX_STAGED in matmul_tiled.wgsl: tile elements one invocation copies per operand


@dataclass(frozen=True)
class Tiling:
    """Tile sizes of `kernels/matmul_tiled.wgsl` (its override constants): a workgroup computes a `bm` x `bn` block
    of C, K in steps of `bk` through `stages` workgroup buffers (2: double-buffered), each invocation a `tm` x `tn`
    register block, so the workgroup is (bn / tn) x (bm / tm) invocations."""

    bm: int
    bn: int
    bk: int
    tm: int = 8
    tn: int = 8
    stages: int = 2

    def __post_init__(self):
        wrong = [f"tm and tn must be 4 or 8, got {self.tm}, {self.tn}"] if {self.tm, self.tn} - {4, 8} else []
        if self.bm % self.tm or self.bn % self.tn:
            wrong.append(f"bm and bn must be multiples of tm and tn, got {self.bm}, {self.bn}")
        if self.bk < 4 or self.bk % 4:
            wrong.append(f"bk must be a positive multiple of 4, got {self.bk}")
        if self.stages not in (1, 2):
            wrong.append(f"stages must be 1 or 2, got {self.stages}")
        if not wrong and max(self.bm, self.bn) * self.bk > _MAX_STAGED * self.invocations:
            wrong.append(f"an invocation would copy over {_MAX_STAGED} elements of a tile per step; use a smaller bk "
                         f"or register block")
        if wrong:
            raise ValueError(f"matmul tiling {self}: " + "; ".join(wrong))

    @property
    def invocations(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def workgroup_bytes(self) -> int:
        """Workgroup memory of both tiles in every stage: k rows of bm/4 (bn/4) vec4s plus one of padding."""
        return self.stages * self.bk * (self.bm // 4 + 1 + self.bn // 4 + 1) * 16

    def constants(self) -> dict[str, int]:
        return {"BM": self.bm, "BN": self.bn, "BK": self.bk, "TM": self.tm, "TN": self.tn, "STAGES": self.stages,
                "WG_X": self.bn // self.tn, "WG_Y": self.bm // self.tm}


@dataclass(frozen=True)
class Problem:
    """One matmul as a kernel sees it: op(A) (m x k) @ op(B) (k x n) over `batch`; how A and B are stored (row
    lengths, None for whole matrices; element offsets; batch strides, 0 = broadcast); A's element type ("f32" or
    "f16"), B's storage ("elem", or packed "bf16" / "f16", see `weight_storage`), and whether both buffers are
    bound at 16-byte boundaries (a tensor's are; a view's need not be)."""

    m: int
    n: int
    k: int
    transpose_a: bool = False
    transpose_b: bool = False
    elem: str = "f32"
    weights: str = "elem"
    batch: int = 1
    lda: int | None = None
    ldb: int | None = None
    offset_a: int = 0
    offset_b: int = 0
    stride_a: int = 0
    stride_b: int = 0
    aligned_bindings: bool = True

    @property
    def row_lengths(self) -> tuple[int, int]:
        """(lda, ldb): the stored row lengths, those of whole matrices where not given."""
        lda = self.lda if self.lda is not None else (self.m if self.transpose_a else self.k)
        ldb = self.ldb if self.ldb is not None else (self.k if self.transpose_b else self.n)
        return lda, ldb

    def unaligned_operand(self) -> tuple[str, tuple[int, int, int]] | None:
        """("a" or "b", its (row length, element offset, batch stride)) for the first operand with one of those
        not a multiple of 4 (what vec4 loads of whole quads need), or None."""
        lda, ldb = self.row_lengths
        for name, layout in (("a", (lda, self.offset_a, self.stride_a)), ("b", (ldb, self.offset_b, self.stride_b))):
            if any(value % 4 for value in layout):
                return name, layout
        return None


@dataclass(frozen=True)
class Variant:
    """One matmul entry point. A workgroup of (X, Y, 1) invocations (its @workgroup_size) covers `tile_m` * Y rows
    and `tile_n` * X columns of C (see each entry's header). `family` is its WGSL file, `tiling` the override
    constants of a matmul_tiled entry, `vec4` marks an entry that loads 4 consecutive elements at once, `layout`
    the only transposes an entry computes (matmul_cpu's are one per layout)."""

    entry: str
    tile_m: int
    tile_n: int
    needs_subgroups: bool = False
    family: str = "matmul"
    tiling: Tiling | None = None
    vec4: bool = False
    layout: str | None = None  # "NN", "NT", "TN" or "TT": the one layout an entry computes (None: any)

    @property
    def constants(self) -> dict[str, int] | None:
        """The pipeline's override constants (None: the WGSL defaults)."""
        return self.tiling.constants() if self.tiling else None

    def workgroup_tile(self) -> tuple[int, int]:
        """(rows, columns) of C one workgroup computes."""
        x, y, _ = kernels.workgroup_size(self.family, self.entry, self.constants)
        return self.tile_m * y, self.tile_n * x

    def refusal(self, device: Device, problem: Problem) -> str | None:
        """Why this variant cannot run `problem` on `device`, in words, or None when it can."""
        if self.needs_subgroups and not device.has_subgroups:
            return f"it needs subgroups, which {device.name} lacks"
        layout = ("T" if problem.transpose_a else "N") + ("T" if problem.transpose_b else "N")
        if self.layout is not None and layout != self.layout:
            return f"it computes {self.layout} products only, this one is {layout}"
        if self.family == "matmul_cpu" and not device.is_software:
            # made for CPU adapters; where C's rows do not start on quads it writes single components of shared
            # vec4s, which WGSL leaves unsynchronized between invocations on a GPU
            return f"it is made for CPU adapters, {device.name} is not one"
        if self.family == "matmul_cpu" and (problem.m * problem.k < 4 or problem.k * problem.n < 4):
            return "it binds A and B as vec4 arrays, which need at least 4 elements each"
        if problem.elem == "f16" and not device.has_f16:
            return f"f16 needs the shader-f16 feature, which {device.name} lacks"
        tiling, limits = self.tiling, device.limits
        if tiling is not None:
            storage = limits.get("max-compute-workgroup-storage-size", 16384)
            if tiling.workgroup_bytes > storage:
                return (f"its {tiling.bm}x{tiling.bn}x{tiling.bk} tiles in {tiling.stages} stage(s) need "
                        f"{tiling.workgroup_bytes} bytes of workgroup memory, over {device.name}'s "
                        f"max-compute-workgroup-storage-size of {storage}")
            invocations = limits.get("max-compute-invocations-per-workgroup", 256)
            if tiling.invocations > invocations:
                return (f"its workgroups of {tiling.invocations} invocations exceed {device.name}'s "
                        f"max-compute-invocations-per-workgroup of {invocations}")
        if self.vec4:
            if problem.k == 0:
                return "vec4 loads need K >= 1 (an empty operand binds less than one vec4)"
            unaligned = problem.unaligned_operand()
            if unaligned is not None:
                name, layout = unaligned
                return (f"vec4 loads need {name}'s stored row length, element offset and batch stride to be "
                        f"multiples of 4, got {', '.join(map(str, layout))}")
            if not problem.aligned_bindings:
                return "vec4 loads need both operands bound at 16-byte boundaries (a view of a tensor is not)"
        return None


def _tiled(tiling: Tiling, vec4: bool = False) -> Variant:
    return Variant("matmul_tiled_vec4" if vec4 else "matmul_tiled", tiling.tm, tiling.tn, family="matmul_tiled",
                   tiling=tiling, vec4=vec4)


# Tile configurations for GPUs (on lavapipe, where barriers are expensive, sg32x4 is 4x faster than any).
_TILINGS = {
    "tiled64x64": Tiling(64, 64, 16, tm=4, tn=4),  # 256 invocations, 17 KiB
    "tiled128x64": Tiling(128, 64, 16, tm=8, tn=4),  # 256 invocations, 25 KiB
    "tiled128x128": Tiling(128, 128, 8, tm=8, tn=8),  # 256 invocations, 17 KiB
    "tiled128x128k16": Tiling(128, 128, 16, tm=8, tn=8, stages=1),  # 256 invocations, 17 KiB, two barriers a step
}

def _cpu(layout: str, rows: int, cols: int) -> Variant:
    """An entry of kernels/matmul_cpu.wgsl: one layout, vec4 loads, rows x cols per invocation (CPU adapters)."""
    return Variant(f"matmul_cpu_{layout.lower()}{rows}x{cols}", tile_m=rows, tile_n=cols, needs_subgroups=True,
                   family="matmul_cpu", layout=layout)


VARIANTS = {
    "naive": Variant("matmul_naive", tile_m=1, tile_n=1),
    "reg8x4": Variant("matmul_reg8x4", tile_m=8, tile_n=4),
    "sg16x4": Variant("matmul_sg16x4", tile_m=16, tile_n=4, needs_subgroups=True),
    "sg32x4": Variant("matmul_sg32x4", tile_m=32, tile_n=4, needs_subgroups=True),
    # on lavapipe 0.40 of the FMA probe where sg32x4 gets 0.27 (rows and offsets multiples of 4); 64 rows: 1.1x
    # the 32-row tiles over 64 rows; nn128x4: two 64-row tiles sharing their strip of B, K in chunks (f32, the
    # most at M <= 128 with a long K)
    **{f"cpu_{layout.lower()}{rows}x{cols}": _cpu(layout, rows, cols)
       for layout, rows, cols in (("NN", 32, 4), ("NT", 32, 4), ("TN", 32, 4), ("TT", 32, 4), ("NN", 64, 4),
                                  ("NT", 64, 4), ("TN", 64, 4), ("NN", 128, 4), ("NN", 16, 4), ("NT", 16, 4),
                                  ("NN", 8, 8), ("NT", 8, 8))},
    **{name: _tiled(tiling) for name, tiling in _TILINGS.items()},
    **{f"{name}_vec4": _tiled(tiling, vec4=True) for name, tiling in _TILINGS.items()},
}


def choose_variant(device: Device, m: int) -> str:
    """The fastest variant measured for this kind of adapter.

    On lavapipe (a CPU adapter, subgroups of 8) sharing rows of A through subgroup broadcasts is 3-4x faster
    than plain register blocking: sg32x4 reaches ~45 GFLOP/s at 512^3 on 2 cores, reg8x4 ~13, naive ~2.3.
    The subgroup variants are verified only where subgroups are 8 wide, so hardware adapters get reg8x4 until
    measured there (the tiled variants are candidates for a per-adapter autotuner: `eligible_variants`).
    """
    if device.is_software and device.has_subgroups:
        return "sg32x4" if m >= 32 else "sg16x4"
    return "reg8x4"


def eligible_variants(device: Device, m: int, n: int, k: int, transpose_a: bool = False, transpose_b: bool = False,
                      dtype="float32", weights: str = "elem", **layout) -> list[str]:
    """The names of the `VARIANTS` that can compute op(A) (m x k) @ op(B) (k x n) on `device`, in table order:
    what an autotuner times and what `variant=` accepts for this problem. `dtype` is A's (float32 or float16, any
    spelling `float_dtype` takes, or "f32" / "f16"); `weights` is B's storage ("elem": A's dtype, or "bf16" / "f16"
    packed weights of float32 A). `layout` takes the rest of `Problem` (batch, lda, ldb, offset_a, offset_b,
    stride_a, stride_b, aligned_bindings) for windows and batched operands; the defaults describe whole matrices."""
    elem = dtype if isinstance(dtype, str) and dtype in ("f32", "f16") else {"float32": "f32", "float16": "f16"}.get(
        dtype_name(float_dtype(dtype, "eligible_variants: dtype")))
    if elem is None:
        raise InputError(f"eligible_variants: dtype must be float32 or float16, got {dtype!r}")
    if weights not in WEIGHT_STORAGE:
        raise InputError(f"eligible_variants: weights must be one of {WEIGHT_STORAGE}, got {weights!r}")
    problem = Problem(m, n, k, bool(transpose_a), bool(transpose_b), elem, weights, **layout)
    return [name for name, spec in VARIANTS.items() if spec.refusal(device, problem) is None]
