"""The tuning table shipped with wgrpo: Mesa's lavapipe (Vulkan on the CPU), so CI and CPU-only users never tune.

From measurements on lavapipe (Mesa 25, AVX2, 2 cores; `wgrpo bench --autotune` prints them): op -> shape class ->
variant, where a class may be coarse ("NT|f32/f32|a4|m8" holds for any N and K; "*" for anything).
`engine.autotune` looks a class up finest first. No per-vendor table beyond this one: GPUs are measured where they
run.
"""

from __future__ import annotations

# matmul classes: "<layout>|<a dtype>/<b storage>|<a4: rows and offsets multiples of 4, else a1>|m<M>|n<N>|k<K>",
# sizes rounded up to powers of two. Aligned problems take matmul_cpu's entries (one per layout, vec4 loads read as
# 64-bit words: 0.40 of the FMA probe at 512^3 where sg32x4 gets 0.27), by rows: 8x8 tiles up to 8 rows, 16x4 up to
# 16, 32x4 up to 64 (NN f32: nn128x4 from 33, see below), 64x4 above; unaligned ones the subgroup kernels of
# matmul.wgsl (matmul_cpu falls back to single loads there).
# 64 rows over 32, GFLOP/s on lavapipe (2 cores), 32x4 -> 64x4: f32 512^3 NN 34.6 -> 37.6, NT 33.6 -> 37.6, TN
# 34.7 -> 37.3; NT 1344x768x128 (the benchmark model's update) 30.6 -> 35.0, TN 384x128x1344 30.8 -> 38.0; bf16
# weights NT 1344x768x128 23.5 -> 27.4, NN 512^3 28.7 -> 33.1; f16 NT 1344x768x128 24.2 -> 26.3, TN 768x128x1344
# 30.0 -> 32.0. At 33-64 rows one 64-row tile per strip halves the workgroups: mixed (NT 64x1536x576 33.1 -> 31.2,
# TN 64x576x576 17.8 -> 20.9), so the 32-row entries keep that class.
_DTYPES = ("f32/f32", "f16/f16", "f32/bf16", "f32/f16")
_SMALL = (1, 2, 4, 8)
_MATMUL = {"*": "sg32x4"}
for _d in _DTYPES:
    for _layout in ("NN", "NT", "TN", "TT"):
        _MATMUL.update({f"{_layout}|{_d}|a1|m{m}": "sg16x4" for m in (*_SMALL, 16)})
        _MATMUL[f"{_layout}|{_d}|a1"] = "sg32x4"
    for _layout in ("NN", "NT", "TN"):
        _MATMUL[f"{_layout}|{_d}|a4"] = f"cpu_{_layout.lower()}64x4"
        _MATMUL.update({f"{_layout}|{_d}|a4|m{m}": f"cpu_{_layout.lower()}32x4" for m in (32, 64)})
    _MATMUL[f"TT|{_d}|a4"] = "cpu_tt32x4"
    for _layout in ("NN", "NT"):
        _MATMUL.update({f"{_layout}|{_d}|a4|m{m}": f"cpu_{_layout.lower()}8x8" for m in _SMALL})
        _MATMUL[f"{_layout}|{_d}|a4|m16"] = f"cpu_{_layout.lower()}16x4"
    for _layout in ("TN", "TT"):  # their M is a layer's width: a handful of rows is rare, sg16x4 kept there
        _MATMUL.update({f"{_layout}|{_d}|a4|m{m}": "sg16x4" for m in (*_SMALL, 16)})
# NN f32 at 33-128 rows: cpu_nn128x4 (two 64-row tiles sharing a strip of B in one workgroup, K in chunks of 2048)
# reads each strip from memory once per 128 rows, not once per 64. Measured on lavapipe (2 cores, each run after a
# 64 MB cache flush, as a layer's weights are read in a training step), M x N x K, ms, nn64x4 -> nn128x4:
# 128x576x49152 (a 49k vocabulary's head, dX) 255 -> 224 (nn32x4 334), 128x576x3072 15.0 -> 13.7,
# 128x1536x576 7.8 -> 7.1, 64x576x3072 8.7 -> 8.2 (nn32x4 9.5), 48x768x128 1.04 -> 0.85; over 128 rows a
# third tile often costs more than the strip saves (160x576x3072 19.8 -> 24.3, 1344x128x768 7.5 -> 9.3), so
# nn64x4 runs there. Not for f16 A (one chunk only, since C would round the partial sums) nor packed 16-bit
# weights (a class cannot tell K = 3072 from 49152 at every N).
_MATMUL.update({f"NN|f32/f32|a4|m{m}": "cpu_nn128x4" for m in (64, 128)})

# attention: the subgroup kernels beat serial in every class measured (T 1 to 512, D 8 to 128, groups 1 to 4, f32
# and f16, causal or not): about 2x at T <= 8 (dispatch costs), 4-8x from T = 42 on; tiled was slower than serial.
# More row groups at long sequences (up to 8, `engine.ops.attention.subgroup_groups`) only widened the gap (forward
# 5.5x serial at T = 512, D = 64: `wgrpo bench --filter attention`).
LAVAPIPE: dict[str, dict[str, str]] = {"matmul": _MATMUL, "attention": {"*": "subgroup"}}


def is_lavapipe(device) -> bool:
    return device.is_software and "llvmpipe" in device.name.lower() and device.summary.backend == "Vulkan"


def shipped_table(device) -> dict[str, dict[str, str]]:
    """The shipped table for `device`'s kind of adapter, or {} (measure it)."""
    if is_lavapipe(device) and device.has_subgroups:
        return LAVAPIPE
    return {}
