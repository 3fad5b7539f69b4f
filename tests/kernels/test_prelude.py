"""kernels/prelude.wgsl's integer helpers run on the device against numpy: div_small is exact over
the range they promise (a < 2^22, 1 <= b < 2^22): every small pair, divisible pairs and the numbers either side of
them, random ones and the ends. (Lavapipe's division is correctly rounded, which keeps the float quotient's floor
exact here; the corrections are for adapters whose division is up to 2.5 ULP off, as WGSL allows.)"""

from __future__ import annotations

import numpy as np
import wgpu

from wgrpo.kernels.registry import KERNEL_DIR

SHADER = """
@group(0) @binding(0) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn divide(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= arrayLength(&pairs)) { return; }
    let p = pairs[id.x];
    out[id.x] = div_small(p.x, p.y);
}
"""


def _divide_on(device, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    gpu = device.wgpu
    code = (KERNEL_DIR / "prelude.wgsl").read_text() + SHADER
    pairs = np.stack([a, b], axis=1).astype(np.uint32)
    src = gpu.create_buffer_with_data(data=pairs.tobytes(), usage=wgpu.BufferUsage.STORAGE)
    dst = gpu.create_buffer(size=4 * len(pairs), usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    pipeline = gpu.create_compute_pipeline(layout="auto", compute={
        "module": gpu.create_shader_module(code=code), "entry_point": "divide"})
    bind_group = gpu.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": src}}, {"binding": 1, "resource": {"buffer": dst}}])
    encoder = gpu.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, bind_group)
    compute.dispatch_workgroups(-(-len(pairs) // 64))
    compute.end()
    gpu.queue.submit([encoder.finish()])
    return np.frombuffer(gpu.queue.read_buffer(dst), np.uint32)


def test_div_small_is_exact_where_it_promises(device, rng):
    limit = 1 << 22
    small = np.arange(0, 257)
    grid_a, grid_b = np.meshgrid(small, np.arange(1, 65))  # every pair of small indices and divisors
    b = rng.integers(1, limit, 20000)
    q = rng.integers(0, limit, 20000) // b
    near = np.concatenate([q * b, q * b + b - 1, np.maximum(q * b, 1) - 1])  # divisible, and one either side
    a = np.concatenate([grid_a.ravel(), near, rng.integers(0, limit, 20000), [limit - 1, limit - 1, 0]])
    b = np.concatenate([grid_b.ravel(), b, b, b, rng.integers(1, limit, 20000), [1, limit - 1, limit - 1]])
    keep = a < limit
    a, b = a[keep], b[keep]
    np.testing.assert_array_equal(_divide_on(device, a, b), a // b)
