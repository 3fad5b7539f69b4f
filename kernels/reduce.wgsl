// Reductions over the middle axis of x viewed as (outer, n, inner), contiguous row-major:
//   out[o, i] = R over k < n of x[o, k, i], with R chosen by params.op:
//   op 0 sum:     sum_k x[o, k, i]
//   op 1 max:     max_k x[o, k, i]
//   op 2 mean_sq: (sum_k x[o, k, i]^2) / n        (RMSNorm's mean of squares)
// A reduction over the last axis is inner = 1; over the first, outer = 1. Math runs in f32 whatever the
// storage type `elem`; the result is stored as elem. out is (outer, inner), contiguous.
// Both entries bind: 0 params (uniform), 1 x (read, elem, outer * n * inner), 2 out (read_write, elem,
// outer * inner).

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
