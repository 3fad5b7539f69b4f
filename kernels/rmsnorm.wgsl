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
