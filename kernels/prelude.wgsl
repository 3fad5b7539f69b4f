// prelude.wgsl -- helpers several kernel families share, each defined once here. A family includes this file
// with a line `// use prelude`, which the registry (kernels/registry.py) replaces with the text below. Nothing
// here binds a resource or is an entry point.

// The running-max start of an online softmax or log-sum-exp: the lowest finite f32, so the first rescale is
// exp(-huge) = 0 and merging two empty partials gives no NaN.
const LOWEST: f32 = -3.4028234663852886e38;

// The index of workgroup `wg` in the 2-D grid the host lays over many workgroups (engine/ops/_common.py,
// grid_1d: x = min(groups, 65535), y = ceil(groups / x)).
fn workgroup_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

// The index of invocation `lid` over such a grid of workgroups of `wg_size` invocations.
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, wg_size: u32) -> u32 {
    return workgroup_index(wg, nwg) * wg_size + lid;
}

// a / b for a < 2^22 and 1 <= b < 2^22 (row, head and position indices), exactly, through f32. CPUs have
// no vector integer division: a u32 `/` becomes one scalar division per SIMD lane (8 on lavapipe), where this is
// one vector float division and two multiply-compares. The float quotient is within one of the true one (WGSL
// allows division 2.5 ULP off; a < 2^22 keeps that under 1), and the two selects correct it either way.
fn div_small(a: u32, b: u32) -> u32 {
    var q = u32(i32(f32(i32(a)) / f32(i32(b))));  // signed conversions: one instruction each on x86
    q = select(q, q - 1u, q * b > a);
    return select(q, q + 1u, (q + 1u) * b <= a);
}

// Online softmax statistics: fold value v into (running max, running sum of exp(x - max)).
fn online(ms: vec2<f32>, v: f32) -> vec2<f32> {
    if (v > ms.x) {
        return vec2<f32>(v, ms.y * exp(ms.x - v) + 1.0);
    }
    return vec2<f32>(ms.x, ms.y + exp(v - ms.x));
}

// Merge the (max, sum) statistics of two disjoint parts of a row.
fn merge_stats(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Jarzynski and Olano's pcg4d hash ("Hash Functions for GPU Rendering", JCGT 2020): four u32 words in, four
// well-mixed words out; the counter-based RNG of sampling and dropout.
fn pcg4d(v_in: vec4<u32>) -> vec4<u32> {
    var v = v_in * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v ^= v >> vec4<u32>(16u);
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v;
}
