"""The tuning table shipped with wgrpo: Mesa's lavapipe (Vulkan on the CPU), so CI and CPU-only users never tune.

Written from `wgrpo bench --autotune` on lavapipe (Mesa 25, AVX2, 2 cores): op -> shape class -> variant, where a
class may be coarse ("NT|f32|m8" holds for any n and k; "*" for anything). `engine.autotune` looks a class up
finest first. No per-vendor table beyond this one: GPUs are measured where they run.
"""

from __future__ import annotations

# matmul classes: "<layout>|<a dtype>/<b storage>|m<M>|n<N>|k<K>", sizes rounded up to powers of two
LAVAPIPE: dict[str, dict[str, str]] = {
    "matmul": {
        "*": "sg32x4",
        **{f"{layout}|{dtypes}|m{m}": "sg16x4" for layout in ("NN", "NT", "TN", "TT")
           for dtypes in ("f32/f32", "f16/f16", "f32/bf16", "f32/f16") for m in (1, 2, 4, 8, 16)},
    },
    "attention": {"*": "serial"},
}


def is_lavapipe(device) -> bool:
    return device.is_software and "llvmpipe" in device.name.lower() and device.summary.backend == "Vulkan"


def shipped_table(device) -> dict[str, dict[str, str]]:
    """The shipped table for `device`'s kind of adapter, or {} (measure it)."""
    if is_lavapipe(device) and device.has_subgroups:
        return LAVAPIPE
    return {}
