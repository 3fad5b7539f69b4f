"""The tuning table shipped with wgrpo: Mesa's lavapipe (Vulkan on the CPU), so CI and CPU-only users never tune.

From measurements on lavapipe (Mesa 25, AVX2, 2 cores; `wgrpo bench --autotune` prints them): op -> shape class ->
variant, where a class may be coarse ("NT|f32/f32|a4|m8" holds for any N and K; "*" for anything).
`engine.autotune` looks a class up finest first. No per-vendor table beyond this one: GPUs are measured where they
run.
"""

from __future__ import annotations

# matmul classes: "<layout>|<a dtype>/<b storage>|<a4: rows and offsets multiples of 4, else a1>|m<M>|n<N>|k<K>",
# sizes rounded up to powers of two. Aligned problems take matmul_cpu's entries (one per layout, vec4 loads: 0.48-0.56
# of the FMA probe where sg32x4 gets 0.36-0.39), by rows: 8x8 tiles up to 8 rows, 16x4 up to 16, 32x4 above (NN
# f32 over 32 rows: nn128x4, see below); unaligned ones the subgroup kernels of matmul.wgsl (matmul_cpu falls back to
# single loads there: 0.24).
_DTYPES = ("f32/f32", "f16/f16", "f32/bf16", "f32/f16")
_SMALL = (1, 2, 4, 8)
_MATMUL = {"*": "sg32x4"}
for _d in _DTYPES:
    for _layout in ("NN", "NT", "TN", "TT"):
        _MATMUL.update({f"{_layout}|{_d}|a1|m{m}": "sg16x4" for m in (*_SMALL, 16)})
        _MATMUL[f"{_layout}|{_d}|a1"] = "sg32x4"
    for _layout in ("NN", "NT"):
        _MATMUL[f"{_layout}|{_d}|a4"] = f"cpu_{_layout.lower()}32x4"
        _MATMUL.update({f"{_layout}|{_d}|a4|m{m}": f"cpu_{_layout.lower()}8x8" for m in _SMALL})
        _MATMUL[f"{_layout}|{_d}|a4|m16"] = f"cpu_{_layout.lower()}16x4"
    for _layout in ("TN", "TT"):  # their M is a layer's width: a handful of rows is rare, sg16x4 kept there
        _MATMUL[f"{_layout}|{_d}|a4"] = f"cpu_{_layout.lower()}32x4"
        _MATMUL.update({f"{_layout}|{_d}|a4|m{m}": "sg16x4" for m in (*_SMALL, 16)})
# NN f32 over 32 rows: cpu_nn128x4 (the 32-row tiles sharing a strip of B in one workgroup, K in chunks of 2048)
# reads each strip from memory once instead of once per tile. Measured on lavapipe (2 cores, each run after a
# 64 MB cache flush, as a layer's weights are read in a training step), M x N x K, ms, nn32x4 -> nn128x4:
# 128x576x49152 (a 49k vocabulary's head, dX) 434-440 -> 291-294 (sg32x4: 483-487), 128x576x3072 21-27 -> 17.5-18,
# 128x576x576 4.2 -> 3.6, 64x576x3072 13.0 -> 10.0, 96x576x3072 14.9 -> 13.8, 160x576x3072 23.0 -> 23.2,
# 256x576x3072 37.5 -> 34.0, 512^3 10.1 -> 9.5, 2048x576x576 50.4 -> 47.5; at M = 32 both 7.0-7.1 (one tile);
# the benchmark model's update step (M = 1344, N = 128): its NN products 80.6 -> 78.1 ms.
# Not chosen for f16 A (one chunk only, since C would round the partial sums: 128x576x3072 15.3 -> 16.3,
# K = 49152 241 -> 257) nor packed 16-bit weights (bf16 at K = 3072: 16.8 -> 17.1; at K = 49152 it would win,
# 291-308 -> 273, but a class cannot tell K = 3072 from 49152 at every N).
_MATMUL["NN|f32/f32|a4"] = "cpu_nn128x4"
_MATMUL["NN|f32/f32|a4|m32"] = "cpu_nn32x4"

# attention: the subgroup kernels beat serial in every class measured (T 1 to 512, D 8 to 128, groups 1 to 4, f32
# and f16, causal or not): about 2x at T <= 8 (dispatch costs), 4-8x from T = 42 on; tiled was slower than serial.
LAVAPIPE: dict[str, dict[str, str]] = {"matmul": _MATMUL, "attention": {"*": "subgroup"}}


def is_lavapipe(device) -> bool:
    return device.is_software and "llvmpipe" in device.name.lower() and device.summary.backend == "Vulkan"


def shipped_table(device) -> dict[str, dict[str, str]]:
    """The shipped table for `device`'s kind of adapter, or {} (measure it)."""
    if is_lavapipe(device) and device.has_subgroups:
        return LAVAPIPE
    return {}
