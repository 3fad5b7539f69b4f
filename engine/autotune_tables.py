"""The tuning table shipped with wgrpo: Mesa's lavapipe (Vulkan on the CPU), so CI and CPU-only users never tune.

From measurements on lavapipe (Mesa 25, AVX2, 2 cores; `wgrpo bench --autotune` prints them): op -> shape class ->
variant, where a class may be coarse ("NT|f32/f32|a4|m8" holds for any N and K; "*" for anything).
`engine.autotune` looks a class up finest first. No per-vendor table beyond this one: GPUs are measured where they
run.
"""

from __future__ import annotations

# matmul classes: "<layout>|<a dtype>/<b storage>|<a4: rows and offsets multiples of 4, else a1>|m<M>|n<N>|k<K>",
# sizes rounded up to powers of two. Aligned problems take matmul_cpu's entries (one per layout, vec4 loads: 0.48-0.56
# of the FMA probe where sg32x4 gets 0.36-0.39), by rows: 8x8 tiles up to 8 rows, 16x4 up to 16, 32x4 above;
# unaligned ones the subgroup kernels of matmul.wgsl (matmul_cpu falls back to single loads there: 0.24).
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
