// Reductions over the middle axis of x viewed as (outer, n, inner), contiguous row-major:
//   out[o, i] = R over k < n of x[o, k, i], with R chosen by params.op:
//   op 0 sum:     sum_k x[o, k, i]
//   op 1 max:     max_k x[o, k, i]
//   op 2 mean_sq: (sum_k x[o, k, i]^2) / n        (RMSNorm's mean of squares)
// A reduction over the last axis is inner = 1; over the first, outer = 1. Math runs in f32 whatever the
// storage type `elem`; the result is stored as elem. out is (outer, inner), contiguous.
// The scalar entries bind: 0 params (uniform), 1 x (read, elem, outer * n * inner), 2 out (read_write, elem,
// outer * inner); reduce_columns4 binds vec4 views of the same two (see its section at the end).

// use prelude

alias elem = f32;

const OP_SUM: u32 = 0u;
const OP_MAX: u32 = 1u;
const OP_MEAN_SQ: u32 = 2u;
const SERIAL_WG: u32 = 64u;  // invocations per workgroup of reduce_serial
const WG: u32 = 256u;        // invocations per workgroup of reduce_workgroup (a power of two)

struct Params {
    outer: u32,
    n: u32,      // length of the reduced axis
    inner: u32,
    op: u32,     // OP_SUM, OP_MAX or OP_MEAN_SQ
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: x4
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> out: array<elem>;

var<workgroup> partial: array<f32, WG>;

// The fold's starting value: -inf for max, 0 otherwise.
fn identity() -> f32 {
    if (params.op == OP_MAX) {
        return bitcast<f32>(0xff800000u);
    }
    return 0.0;
}

// Fold one element into an accumulator.
fn fold(acc: f32, v: f32) -> f32 {
    if (params.op == OP_MAX) {
        return max(acc, v);
    }
    if (params.op == OP_MEAN_SQ) {
        return acc + v * v;
    }
    return acc + v;
}

// Merge two partial accumulators.
fn merge(a: f32, b: f32) -> f32 {
    if (params.op == OP_MAX) {
        return max(a, b);
    }
    return a + b;
}

fn finish(acc: f32) -> f32 {
    if (params.op == OP_MEAN_SQ) {
        return acc / f32(params.n);
    }
    return acc;
}

// reduce_serial: out[o, i] = R_k x[o, k, i], one invocation per output (o, i) folding k = 0..n-1 in order;
// neighbouring invocations read neighbouring i, so a strided (inner > 1) reduction still reads contiguous memory.
// Bindings: 0 params (uniform), 1 x (read, elem, outer * n * inner), 2 out (read_write, elem, outer * inner).
// Dispatch: workgroups of 64 over outer * inner outputs, 2-D grid (x = min(ceil(m / 64), 65535),
// y = ceil(ceil(m / 64) / x)), output index (wg.y * nwg.x + wg.x) * 64 + lid.
@compute @workgroup_size(SERIAL_WG)
fn reduce_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = flat_index(wg, nwg, lid, SERIAL_WG);
    if (idx >= params.outer * params.inner) { return; }
    let o = idx / params.inner;
    let i = idx % params.inner;
    let base = o * params.n * params.inner + i;
    var acc = identity();
    for (var k = 0u; k < params.n; k++) {
        acc = fold(acc, f32(x[base + k * params.inner]));
    }
    out[idx] = elem(finish(acc));
}

// reduce_workgroup: out[o, i] = R_k x[o, k, i], one workgroup of 256 per output (o, i), for long reduced axes.
// Invocation t folds k = t, t + 256, t + 512, ... into its partial; a tree over the 256 partials (8 barriers)
// gives the result. Bindings: as reduce_serial.
// Dispatch: one workgroup per output, 2-D grid (x = min(m, 65535), y = ceil(m / x)) for m = outer * inner,
// output index wg.y * nwg.x + wg.x.
@compute @workgroup_size(WG)
fn reduce_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let idx = workgroup_index(wg, nwg);  // the same for the whole workgroup, so the return below is uniform
    if (idx >= params.outer * params.inner) { return; }
    let o = idx / params.inner;
    let i = idx % params.inner;
    let base = o * params.n * params.inner + i;
    var acc = identity();
    for (var k = lid; k < params.n; k += WG) {
        acc = fold(acc, f32(x[base + k * params.inner]));
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            partial[lid] = merge(partial[lid], partial[lid + half]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[idx] = elem(finish(partial[0]));
    }
}

// ---- A strided reduction (inner % 4 == 0) on aligned quads of 4 neighbouring outputs, through array<vec4<elem>>
// views of x and out at the scalar arrays' binding numbers. The bias gradient of a projection, the sum of
// (rows, cols) over axis 0, is this case: reduce_workgroup gives each column a workgroup of strided scalar loads
// and a tree of 8 barriers, reduce_serial each column one invocation walking every row with scalar loads; here an
// invocation reads one quad per row of a strip of rows (sum of (1344, 256) over axis 0, one lavapipe thread:
// reduce_workgroup 5.1 ms, reduce_serial 0.57, reduce_columns4 0.34).

const COLUMNS_WG: u32 = 64u;   // invocations per workgroup of reduce_columns4 (COLUMN_QUADS * STRIPS)
const COLUMN_QUADS: u32 = 8u;  // output quads per workgroup of reduce_columns4
const STRIPS: u32 = 8u;        // strips of the reduced axis per workgroup of reduce_columns4

@group(0) @binding(1) var<storage, read> x4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<elem>>;

var<workgroup> strip_partials: array<vec4<f32>, COLUMNS_WG>;

// fold, merge and finish on four lanes at once.
fn fold4(acc: vec4<f32>, v: vec4<f32>) -> vec4<f32> {
    if (params.op == OP_MAX) {
        return max(acc, v);
    }
    if (params.op == OP_MEAN_SQ) {
        return acc + v * v;
    }
    return acc + v;
}

fn merge4(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (params.op == OP_MAX) {
        return max(a, b);
    }
    return a + b;
}

fn finish4(acc: vec4<f32>) -> vec4<f32> {
    if (params.op == OP_MEAN_SQ) {
        return acc / f32(params.n);
    }
    return acc;
}

// reduce_columns4: out[o, i] = R_k x[o, k, i] for inner % 4 == 0, four neighbouring i at once. In quads x is
// (outer, n, I4) with I4 = inner / 4, and output quad p = o * I4 + i4 folds the x quads (o * n + k) * I4 + i4.
// A workgroup of 64 covers COLUMN_QUADS = 8 neighbouring output quads and cuts the reduced axis into STRIPS = 8
// strips of ceil(n / 8): invocation lid folds output quad (wg index * 8 + lid % 8) over strip lid / 8, k in order,
// then strip 0 merges the 8 strip results in order (one barrier): deterministic.
// Bindings: 0 params (uniform), 1 x4 (read, vec4<elem>, outer * n * inner / 4), 2 out4 (read_write, vec4<elem>,
// outer * inner / 4).
// Dispatch: one workgroup per 8 output quads, 2-D grid (x = min(ceil(m / 8), 65535), y = ceil(ceil(m / 8) / x))
// for m = outer * inner / 4 output quads.
@compute @workgroup_size(COLUMNS_WG)
fn reduce_columns4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let inner4 = params.inner / 4u;
    let p = workgroup_index(wg, nwg) * COLUMN_QUADS + lid % COLUMN_QUADS;
    let live = p < params.outer * inner4;
    let strip = lid / COLUMN_QUADS;
    let chunk = (params.n + STRIPS - 1u) / STRIPS;
    let first = strip * chunk;
    let last = min(first + chunk, params.n);
    var acc = vec4<f32>(identity());
    if (live) {
        let o = p / inner4;
        let base = o * params.n * inner4 + (p - o * inner4);
        for (var k = first; k < last; k++) {
            acc = fold4(acc, vec4<f32>(x4[base + k * inner4]));
        }
    }
    strip_partials[lid] = acc;
    workgroupBarrier();
    if (strip == 0u && live) {
        var total = strip_partials[lid];
        for (var s = 1u; s < STRIPS; s++) {
            total = merge4(total, strip_partials[s * COLUMN_QUADS + lid]);
        }
        out4[p] = vec4<elem>(finish4(total));
    }
}
