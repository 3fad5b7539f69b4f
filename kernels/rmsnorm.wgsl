// RMSNorm over the last axis of x viewed as (rows, n), contiguous, with a weight w of length n
// (Hugging Face Llama / Qwen2 semantics, computed in f32):
//   rstd[r] = 1 / sqrt(mean_j x[r, j]^2 + eps),   y[r, j] = x[r, j] * rstd[r] * w[j].
// Backward, for the gradient dy of y:
//   dx[r, j] = rstd[r] * (w[j] dy[r, j] - x[r, j] * rstd[r]^2 * (1/n) sum_k w[k] dy[r, k] x[r, k])
//   dw[j]    = sum_r dy[r, j] * x[r, j] * rstd[r]   (summed over rows in order: deterministic, no atomics)
// The forward saves rstd (f32, one per row) for the backward. Math runs in f32 whatever the storage type
// `elem`; y, dx and dw are stored as elem.
// Bindings: 0 params (uniform); 1 x (read, elem, rows * n), 2 w (read, elem, n), 3 y (read_write, elem, rows * n),
// 4 rstd (read_write, f32, rows), 5 rstd_saved (read, f32, rows), 6 dy (read, elem, rows * n),
// 7 dx (read_write, elem, rows * n), 8 dw (read_write, elem, n), 9 residual (read, elem, rows * n),
// 10 sum (read_write, elem, rows * n). Each entry binds only those it uses.

// use prelude

alias elem = f32;

const WG: u32 = 64u;  // invocations per workgroup of every entry

struct Params {
    rows: u32,
    n: u32,    // row length (the normalized axis)
    eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: x4, w4, dy4, residual4
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
@group(0) @binding(3) var<storage, read_write> y: array<elem>;
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(5) var<storage, read> rstd_saved: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<elem>;
@group(0) @binding(7) var<storage, read_write> dx: array<elem>;
@group(0) @binding(8) var<storage, read_write> dw: array<elem>;
@group(0) @binding(9) var<storage, read> residual: array<elem>;
@group(0) @binding(10) var<storage, read_write> sum: array<elem>;

// rmsnorm_forward: one invocation per row r: a pass for mean(x^2), then a pass writing y; stores rstd[r].
// Bindings: 0 params (uniform; rows, n, eps), 1 x (read, elem, rows * n), 2 w (read, elem, n),
// 3 y (read_write, elem, rows * n), 4 rstd (read_write, f32, rows).
// Dispatch: workgroups of 64 over rows, 2-D grid (x = min(ceil(rows / 64), 65535), y = ceil(ceil(rows / 64) / x)),
// row (wg.y * nwg.x + wg.x) * 64 + lid.
@compute @workgroup_size(WG)
fn rmsnorm_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, WG);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    var ss = 0.0;
    for (var j = 0u; j < params.n; j++) {
        let v = f32(x[base + j]);
        ss += v * v;
    }
    let s = 1.0 / sqrt(ss / f32(params.n) + params.eps);
    rstd[r] = s;
    for (var j = 0u; j < params.n; j++) {
        y[base + j] = elem(f32(x[base + j]) * s * f32(w[j]));
    }
}

// add_rmsnorm_forward: a transformer block's residual add fused with the next RMSNorm. One invocation per row r:
// sum[r, j] = x[r, j] + residual[r, j] (stored, then read back as stored, so y matches rmsnorm(sum) exactly),
// then rstd[r] and y[r, j] = sum[r, j] * rstd[r] * w[j] as rmsnorm_forward.
// Bindings: 0 params (uniform; rows, n, eps), 1 x (read, elem, rows * n), 2 w (read, elem, n),
// 3 y (read_write, elem, rows * n), 4 rstd (read_write, f32, rows), 9 residual (read, elem, rows * n),
// 10 sum (read_write, elem, rows * n).
// Dispatch: as rmsnorm_forward.
@compute @workgroup_size(WG)
fn add_rmsnorm_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, WG);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    var ss = 0.0;
    for (var j = 0u; j < params.n; j++) {
        let stored = elem(f32(x[base + j]) + f32(residual[base + j]));
        sum[base + j] = stored;
        let v = f32(stored);
        ss += v * v;
    }
    let s = 1.0 / sqrt(ss / f32(params.n) + params.eps);
    rstd[r] = s;
    for (var j = 0u; j < params.n; j++) {
        y[base + j] = elem(f32(sum[base + j]) * s * f32(w[j]));
    }
}

// rmsnorm_backward_dx: one invocation per row r: a pass for c = (1/n) sum_k w[k] dy[r, k] x[r, k], then
// dx[r, j] = rstd (w[j] dy[r, j] - x[r, j] rstd^2 c).
// Bindings: 0 params (uniform; rows, n), 1 x (read, elem, rows * n), 2 w (read, elem, n),
// 5 rstd_saved (read, f32, rows), 6 dy (read, elem, rows * n), 7 dx (read_write, elem, rows * n).
// Dispatch: as rmsnorm_forward.
@compute @workgroup_size(WG)
fn rmsnorm_backward_dx(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, WG);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    let s = rstd_saved[r];
    var dot = 0.0;
    for (var j = 0u; j < params.n; j++) {
        dot += f32(w[j]) * f32(dy[base + j]) * f32(x[base + j]);
    }
    let c = s * s * dot / f32(params.n);
    for (var j = 0u; j < params.n; j++) {
        dx[base + j] = elem(s * (f32(w[j]) * f32(dy[base + j]) - f32(x[base + j]) * c));
    }
}

// rmsnorm_backward_dw: one invocation per channel j: dw[j] = sum_r dy[r, j] x[r, j] rstd[r], rows in order
// (neighbouring invocations read neighbouring channels).
// Bindings: 0 params (uniform; rows, n), 1 x (read, elem, rows * n), 5 rstd_saved (read, f32, rows),
// 6 dy (read, elem, rows * n), 8 dw (read_write, elem, n).
// Dispatch: workgroups of 64 over the n channels, 2-D grid (x = min(ceil(n / 64), 65535),
// y = ceil(ceil(n / 64) / x)), channel (wg.y * nwg.x + wg.x) * 64 + lid.
@compute @workgroup_size(WG)
fn rmsnorm_backward_dw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let j = flat_index(wg, nwg, lid, WG);
    if (j >= params.n) { return; }
    var acc = 0.0;
    for (var r = 0u; r < params.rows; r++) {
        let i = r * params.n + j;
        acc += f32(dy[i]) * f32(x[i]) * rstd_saved[r];
    }
    dw[j] = elem(acc);
}

// ---- vec4 entries: the formulas above on aligned quads of 4 channels, for n % 4 == 0, through array<vec4<elem>>
// views at the scalar arrays' binding numbers (so each takes the buffers of its scalar twin in the same order);
// rstd stays one f32 per row. W = n / 4 quads per row. Sums run in four f32 lanes added at the end, so results
// differ from the scalar entries' by f32 rounding only.
// The per-row entries keep one invocation per row, and a workgroup first copies w (its first W_HELD quads) into
// workgroup memory, behind one barrier: every row reads all of w, and on lavapipe a storage load costs a per-lane
// loop with a bounds check while a workgroup load at an index all lanes share is cheap (rmsnorm_backward_dx on
// (1344, 128), one lavapipe thread: scalar 1.24 ms, vec4 reading w from storage 1.14, from workgroup memory 0.84).
// Channels past W_HELD quads read w from storage (loops of their own; a barrier inside the row loops measured
// 1.5x slower on lavapipe).

override ROW_WG: u32 = 64u;    // invocations (rows) per workgroup of the per-row vec4 entries (the host picks)
const W_HELD: u32 = 512u;      // quads of w a per-row vec4 workgroup holds (8 KiB: n up to 2048 from memory)
const COLUMN_QUADS: u32 = 8u;  // rmsnorm_backward_dw4: column quads per workgroup
const STRIPS: u32 = 8u;        // rmsnorm_backward_dw4: strips of rows per workgroup (COLUMN_QUADS * STRIPS = WG)

@group(0) @binding(1) var<storage, read> x4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> w4: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read_write> y4: array<vec4<elem>>;
@group(0) @binding(6) var<storage, read> dy4: array<vec4<elem>>;
@group(0) @binding(7) var<storage, read_write> dx4: array<vec4<elem>>;
@group(0) @binding(8) var<storage, read_write> dw4: array<vec4<elem>>;
@group(0) @binding(9) var<storage, read> residual4: array<vec4<elem>>;
@group(0) @binding(10) var<storage, read_write> sum4: array<vec4<elem>>;

var<workgroup> w_held: array<vec4<f32>, W_HELD>;
var<workgroup> strip_partials: array<vec4<f32>, WG>;

fn total4(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Copy w's first min(W, W_HELD) quads into w_held, all invocations of the workgroup sharing the work; returns
// that count. Call from uniform control flow, before any invocation returns.
fn hold_w(quads: u32, lid: u32) -> u32 {
    let held = min(quads, W_HELD);
    for (var j = lid; j < held; j += ROW_WG) {
        w_held[j] = vec4<f32>(w4[j]);
    }
    workgroupBarrier();
    return held;
}

// rmsnorm_forward4: rmsnorm_forward on quads. n % 4 == 0.
// Bindings: 0 params (uniform; rows, n, eps), 1 x4 (read, vec4<elem>, rows * W), 2 w4 (read, vec4<elem>, W),
// 3 y4 (read_write, vec4<elem>, rows * W), 4 rstd (read_write, f32, rows).
// Dispatch: workgroups of ROW_WG over rows, 2-D grid (x = min(ceil(rows / ROW_WG), 65535),
// y = ceil(ceil(rows / ROW_WG) / x)), row (wg.y * nwg.x + wg.x) * ROW_WG + lid.
@compute @workgroup_size(ROW_WG)
fn rmsnorm_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let held = hold_w(quads, lid);
    let r = flat_index(wg, nwg, lid, ROW_WG);
    if (r >= params.rows) { return; }
    let base = r * quads;
    var ss = vec4<f32>(0.0);
    for (var j = 0u; j < quads; j++) {
        let v = vec4<f32>(x4[base + j]);
        ss += v * v;
    }
    let s = 1.0 / sqrt(total4(ss) / f32(params.n) + params.eps);
    rstd[r] = s;
    for (var j = 0u; j < held; j++) {
        y4[base + j] = vec4<elem>(vec4<f32>(x4[base + j]) * s * w_held[j]);
    }
    for (var j = held; j < quads; j++) {
        y4[base + j] = vec4<elem>(vec4<f32>(x4[base + j]) * s * vec4<f32>(w4[j]));
    }
}

// add_rmsnorm_forward4: add_rmsnorm_forward on quads. n % 4 == 0.
// Bindings: 0 params (uniform; rows, n, eps), 1 x4 (read, vec4<elem>, rows * W), 2 w4 (read, vec4<elem>, W),
// 3 y4 (read_write, vec4<elem>, rows * W), 4 rstd (read_write, f32, rows), 9 residual4 (read, vec4<elem>,
// rows * W), 10 sum4 (read_write, vec4<elem>, rows * W).
// Dispatch: as rmsnorm_forward4.
@compute @workgroup_size(ROW_WG)
fn add_rmsnorm_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let held = hold_w(quads, lid);
    let r = flat_index(wg, nwg, lid, ROW_WG);
    if (r >= params.rows) { return; }
    let base = r * quads;
    var ss = vec4<f32>(0.0);
    for (var j = 0u; j < quads; j++) {
        let stored = vec4<elem>(vec4<f32>(x4[base + j]) + vec4<f32>(residual4[base + j]));
        sum4[base + j] = stored;
        let v = vec4<f32>(stored);
        ss += v * v;
    }
    let s = 1.0 / sqrt(total4(ss) / f32(params.n) + params.eps);
    rstd[r] = s;
    for (var j = 0u; j < held; j++) {
        y4[base + j] = vec4<elem>(vec4<f32>(sum4[base + j]) * s * w_held[j]);
    }
    for (var j = held; j < quads; j++) {
        y4[base + j] = vec4<elem>(vec4<f32>(sum4[base + j]) * s * vec4<f32>(w4[j]));
    }
}

// rmsnorm_backward_dx4: rmsnorm_backward_dx on quads. n % 4 == 0.
// Bindings: 0 params (uniform; rows, n), 1 x4 (read, vec4<elem>, rows * W), 2 w4 (read, vec4<elem>, W),
// 5 rstd_saved (read, f32, rows), 6 dy4 (read, vec4<elem>, rows * W), 7 dx4 (read_write, vec4<elem>, rows * W).
// Dispatch: as rmsnorm_forward4.
@compute @workgroup_size(ROW_WG)
fn rmsnorm_backward_dx4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let held = hold_w(quads, lid);
    let r = flat_index(wg, nwg, lid, ROW_WG);
    if (r >= params.rows) { return; }
    let base = r * quads;
    let s = rstd_saved[r];
    var dot = vec4<f32>(0.0);
    for (var j = 0u; j < held; j++) {
        dot += w_held[j] * vec4<f32>(dy4[base + j]) * vec4<f32>(x4[base + j]);
    }
    for (var j = held; j < quads; j++) {
        dot += vec4<f32>(w4[j]) * vec4<f32>(dy4[base + j]) * vec4<f32>(x4[base + j]);
    }
    let c = s * s * total4(dot) / f32(params.n);
    for (var j = 0u; j < held; j++) {
        dx4[base + j] = vec4<elem>(s * (w_held[j] * vec4<f32>(dy4[base + j]) - vec4<f32>(x4[base + j]) * c));
    }
    for (var j = held; j < quads; j++) {
        dx4[base + j] = vec4<elem>(s * (vec4<f32>(w4[j]) * vec4<f32>(dy4[base + j]) - vec4<f32>(x4[base + j]) * c));
    }
}

// rmsnorm_backward_dw4: dw[j] = sum_r dy[r, j] x[r, j] rstd[r] on quads of channels, n % 4 == 0. A workgroup of
// 64 covers COLUMN_QUADS = 8 neighbouring quads of channels and cuts the rows into STRIPS = 8 strips of
// ceil(rows / 8): invocation lid sums quad (wg index * 8 + lid % 8) over strip lid / 8, rows in order, then
// strip 0 adds the 8 strip sums in order: deterministic, one barrier, and rows * W quads spread over the
// ceil(W / 8) workgroups' 64 invocations instead of W invocations each walking every row.
// Bindings: 0 params (uniform; rows, n), 1 x4 (read, vec4<elem>, rows * W), 5 rstd_saved (read, f32, rows),
// 6 dy4 (read, vec4<elem>, rows * W), 8 dw4 (read_write, vec4<elem>, W).
// Dispatch: one workgroup of 64 per 8 quads of channels, 2-D grid (x = min(ceil(W / 8), 65535),
// y = ceil(ceil(W / 8) / x)).
@compute @workgroup_size(WG)
fn rmsnorm_backward_dw4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let q = workgroup_index(wg, nwg) * COLUMN_QUADS + lid % COLUMN_QUADS;
    let strip = lid / COLUMN_QUADS;
    let chunk = (params.rows + STRIPS - 1u) / STRIPS;
    let first = strip * chunk;
    let last = min(first + chunk, params.rows);
    var acc = vec4<f32>(0.0);
    if (q < quads) {
        for (var r = first; r < last; r++) {
            let i = r * quads + q;
            acc += vec4<f32>(dy4[i]) * vec4<f32>(x4[i]) * rstd_saved[r];
        }
    }
    strip_partials[lid] = acc;
    workgroupBarrier();
    if (strip == 0u && q < quads) {
        var total = strip_partials[lid];
        for (var k = 1u; k < STRIPS; k++) {
            total += strip_partials[k * COLUMN_QUADS + lid];
        }
        dw4[q] = vec4<elem>(total);
    }
}
