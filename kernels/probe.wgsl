// probe.wgsl -- probes of an adapter: its peak FMA throughput and device-memory bandwidth, and the subgroup
// layout the subgroup kernels rely on.
// `wgrpo bench` divides a kernel's GFLOP/s (GB/s) by the peaks to report the fraction of peak.
//
// Bindings (group 0):
//   @binding(0) uniform        params: Params                  every entry
//   @binding(1) storage, read  src: array<vec4<f32>>   probe_copy: n vec4s; probe_fma: unused by the shader
//   @binding(2) storage, rw    dst: array<vec4<f32>>   probe_copy: n vec4s; probe_fma: >= n vec4s (one per invocation)
//   @binding(3) storage, rw    lanes: array<u32>       probe_subgroup_lanes only: 8 entries
// All are plain f32 or u32: the probes measure the adapter, not a dtype.

struct Params {
    n: u32,       // probe_copy: vec4s to copy; probe_fma: invocations that store their result (use all of them)
    iters: u32,   // probe_fma: loop trips per invocation
    seed: f32,    // probe_fma: any value in [0, 1) (0.5 is fine); keeps the inputs opaque to the compiler
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> lanes: array<u32>;

// ---------------------------------------------------------------------------------------------------
// probe_fma: every invocation runs `iters` trips of 32 vec4 FMAs spread over 8 independent accumulators
// (4 dependent FMAs per accumulator per trip), so FMA latency is hidden and nothing but FMA issue rate
// bounds it.  All values are derived from params and the invocation id, and the sum of the accumulators
// is stored, so the compiler can neither fold nor drop the work.  The multiplier x is close to 1 and the
// addend small, so values stay finite for any iters.
//   workgroup_size (PROBE_X, 1, 1) = (64, 1, 1) by default
//   grid = (G, 1, 1) with G * PROBE_X = params.n invocations (G <= 65535); use enough workgroups to fill
//          the adapter (lavapipe: >= 64; GPUs: several per compute unit)
//   FLOPs per dispatch = n * iters * 32 FMAs * 4 lanes * 2 = 256 * n * iters
//   (an FMA counts 2 FLOPs, as usual for peak numbers)
override PROBE_X: u32 = 64u;

@compute @workgroup_size(PROBE_X, 1, 1)
fn probe_fma(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let s = params.seed + f32(i) * 1e-7;
    let x = vec4<f32>(0.999, 0.998, 0.997, 0.996) + vec4<f32>(s * 1e-3);
    let y = vec4<f32>(1e-4, 2e-4, 3e-4, 4e-4) * s;
    var a0 = vec4<f32>(s);
    var a1 = vec4<f32>(s + 1.0);
    var a2 = vec4<f32>(s + 2.0);
    var a3 = vec4<f32>(s + 3.0);
    var a4 = vec4<f32>(s + 4.0);
    var a5 = vec4<f32>(s + 5.0);
    var a6 = vec4<f32>(s + 6.0);
    var a7 = vec4<f32>(s + 7.0);
    for (var it = 0u; it < params.iters; it++) {
        a0 = fma(a0, x, y); a1 = fma(a1, x, y); a2 = fma(a2, x, y); a3 = fma(a3, x, y);
        a4 = fma(a4, x, y); a5 = fma(a5, x, y); a6 = fma(a6, x, y); a7 = fma(a7, x, y);
        a0 = fma(a0, x, y); a1 = fma(a1, x, y); a2 = fma(a2, x, y); a3 = fma(a3, x, y);
        a4 = fma(a4, x, y); a5 = fma(a5, x, y); a6 = fma(a6, x, y); a7 = fma(a7, x, y);
        a0 = fma(a0, x, y); a1 = fma(a1, x, y); a2 = fma(a2, x, y); a3 = fma(a3, x, y);
        a4 = fma(a4, x, y); a5 = fma(a5, x, y); a6 = fma(a6, x, y); a7 = fma(a7, x, y);
        a0 = fma(a0, x, y); a1 = fma(a1, x, y); a2 = fma(a2, x, y); a3 = fma(a3, x, y);
        a4 = fma(a4, x, y); a5 = fma(a5, x, y); a6 = fma(a6, x, y); a7 = fma(a7, x, y);
    }
    if (i < params.n) {
        dst[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    }
}

// ---------------------------------------------------------------------------------------------------
// probe_copy: dst[i] = src[i] for i < n, grid-stride so any grid covers any n.
//   workgroup_size (PROBE_X, 1, 1) = (64, 1, 1) by default
//   grid = (G, 1, 1) with G = min(ceil(n / PROBE_X), 65535) (fewer also works: the loop strides)
//   bytes moved per dispatch = 32 * n  (16 read + 16 written per vec4)
@compute @workgroup_size(PROBE_X, 1, 1)
fn probe_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * PROBE_X;
    for (var i = gid.x; i < params.n; i += stride) {
        dst[i] = src[i];
    }
}

// ---------------------------------------------------------------------------------------------------
// probe_subgroup_lanes: whether a workgroup of 8 invocations is the first 8 lanes of one subgroup
// (subgroup_size >= 8 and subgroup_invocation_id = local_invocation_index), as the subgroup entries of
// attention_sg, attention_decode and sampling require; not so where subgroups are narrower (lavapipe on a CPU
// without AVX has 4 lanes). Lane l writes params.n to lanes[l] where it holds, else 0; the host passes n = 1
// and runs it once per device (engine/ops/_common.py, subgroup_lanes_ok).
//   workgroup_size (SUBGROUP_PROBE_LANES, 1, 1) = (8, 1, 1); grid (1, 1, 1)
const SUBGROUP_PROBE_LANES: u32 = 8u;

// BEGIN subgroup

@compute @workgroup_size(SUBGROUP_PROBE_LANES)
fn probe_subgroup_lanes(@builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32,
                        @builtin(subgroup_size) size: u32) {
    lanes[lid] = select(0u, params.n, size >= SUBGROUP_PROBE_LANES && lane == lid);
}

// END subgroup
