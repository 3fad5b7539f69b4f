// Softmax over the last axis of x viewed as (rows, n), contiguous, and its backward.
// Forward: y[r, j] = exp(x[r, j] - m_r) / sum_{k < v_r} exp(x[r, k] - m_r) for j < v_r, y[r, j] = 0 for j >= v_r,
// with m_r = max_{k < v_r} x[r, k] and v_r the row's visible length: n, or with causal = 1 and the query
// position i = r % t_q (x is (..., t_q, n)), v_r = min(n, i + (n - t_q) + 1): query i sees keys j <= i + n - t_q
// (queries aligned to the end of the keys, as with a KV cache; the host ensures t_q <= n).
// The row max and sum are found in one online pass (rescaling the running sum when the max grows).
// Backward: dx[r, j] = y[r, j] * (dy[r, j] - sum_k dy[r, k] y[r, k]) (masked y are 0, so masked dx are 0).
// Math runs in f32 whatever the storage type `elem`; results are stored as elem.
// Bindings: 0 params (uniform); forward entries 1 x (read, elem, rows * n), 2 y (read_write, elem, rows * n);
// backward entries 3 y_saved (read, elem, rows * n), 4 dy (read, elem, rows * n), 5 dx (read_write, elem, rows * n).

// use prelude

alias elem = f32;

const SERIAL_WG: u32 = 64u;  // invocations per workgroup of the *_serial entries
const WG: u32 = 256u;        // invocations per workgroup of the *_workgroup entries (a power of two)

struct Params {
    rows: u32,
    n: u32,       // row length (T_k)
    t_q: u32,     // query rows per causal block (x is (..., t_q, n)); unused unless causal
    causal: u32,  // 1: mask keys j > i + (n - t_q)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;
@group(0) @binding(3) var<storage, read> y_saved: array<elem>;
@group(0) @binding(4) var<storage, read> dy: array<elem>;
@group(0) @binding(5) var<storage, read_write> dx: array<elem>;

var<workgroup> part_max: array<f32, WG>;
var<workgroup> part_sum: array<f32, WG>;

// The number of leading entries of row r that are not masked.
fn visible(r: u32) -> u32 {
    if (params.causal == 0u) { return params.n; }
    return min(params.n, r % params.t_q + (params.n - params.t_q) + 1u);
}

// softmax_serial: y = softmax(x) per row (masked as above), one invocation per row: one online pass for
// (max, sum), one pass writing y. Bindings: 0 params (uniform), 1 x (read, elem, rows * n),
// 2 y (read_write, elem, rows * n).
// Dispatch: workgroups of 64 over rows, 2-D grid (x = min(ceil(rows / 64), 65535), y = ceil(ceil(rows / 64) / x)).
@compute @workgroup_size(SERIAL_WG)
fn softmax_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, SERIAL_WG);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    let v = visible(r);
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var j = 0u; j < v; j++) {
        ms = online(ms, f32(x[base + j]));
    }
    let inv = 1.0 / ms.y;
    for (var j = 0u; j < v; j++) {
        y[base + j] = elem(exp(f32(x[base + j]) - ms.x) * inv);
    }
    for (var j = v; j < params.n; j++) {
        y[base + j] = elem(0.0);
    }
}

// softmax_workgroup: y = softmax(x) per row, one workgroup of 256 per row, for long rows. Invocation t keeps
// online statistics of j = t, t + 256, ...; a tree merges them (8 barriers); then every invocation writes its
// strided entries. Bindings: as softmax_serial.
// Dispatch: one workgroup per row, 2-D grid (x = min(rows, 65535), y = ceil(rows / x)), row wg.y * nwg.x + wg.x.
@compute @workgroup_size(WG)
fn softmax_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);  // uniform over the workgroup, so the return keeps barriers uniform
    if (r >= params.rows) { return; }
    let base = r * params.n;
    let v = visible(r);
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var j = lid; j < v; j += WG) {
        ms = online(ms, f32(x[base + j]));
    }
    part_max[lid] = ms.x;
    part_sum[lid] = ms.y;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            let merged = merge_stats(vec2<f32>(part_max[lid], part_sum[lid]),
                                     vec2<f32>(part_max[lid + half], part_sum[lid + half]));
            part_max[lid] = merged.x;
            part_sum[lid] = merged.y;
        }
        workgroupBarrier();
    }
    let m = part_max[0];
    let inv = 1.0 / part_sum[0];
    for (var j = lid; j < params.n; j += WG) {
        if (j < v) {
            y[base + j] = elem(exp(f32(x[base + j]) - m) * inv);
        } else {
            y[base + j] = elem(0.0);
        }
    }
}

// softmax_backward_serial: dx = y (dy - sum_k dy y) per row, one invocation per row (a pass for the dot, a pass
// writing dx). Bindings: 0 params (uniform; rows, n), 3 y_saved (read, elem, rows * n), 4 dy (read, elem,
// rows * n), 5 dx (read_write, elem, rows * n).
// Dispatch: as softmax_serial.
@compute @workgroup_size(SERIAL_WG)
fn softmax_backward_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, SERIAL_WG);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    var dot = 0.0;
    for (var j = 0u; j < params.n; j++) {
        dot += f32(dy[base + j]) * f32(y_saved[base + j]);
    }
    for (var j = 0u; j < params.n; j++) {
        let yj = f32(y_saved[base + j]);
        dx[base + j] = elem(yj * (f32(dy[base + j]) - dot));
    }
}

// softmax_backward_workgroup: dx = y (dy - sum_k dy y) per row, one workgroup of 256 per row: strided partial
// dots, a tree, then strided writes. Bindings: as softmax_backward_serial.
// Dispatch: as softmax_workgroup.
@compute @workgroup_size(WG)
fn softmax_backward_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    var dot = 0.0;
    for (var j = lid; j < params.n; j += WG) {
        dot += f32(dy[base + j]) * f32(y_saved[base + j]);
    }
    part_sum[lid] = dot;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            part_sum[lid] += part_sum[lid + half];
        }
        workgroupBarrier();
    }
    let total = part_sum[0];
    for (var j = lid; j < params.n; j += WG) {
        let yj = f32(y_saved[base + j]);
        dx[base + j] = elem(yj * (f32(dy[base + j]) - total));
    }
}
