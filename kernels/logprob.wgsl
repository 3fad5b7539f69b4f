// Log-probabilities over the last axis of logits x viewed as (rows, n), contiguous, at temperature tau:
// z[r, j] = x[r, j] / tau, lse_r = log sum_j exp(z[r, j]) (max-subtracted), log_softmax(z)[r, j] = z[r, j] - lse_r.
// - log_softmax_*: the whole (rows, n) log-softmax, plus lse per row for the backward.
// - token_logprobs_*: fused gather logp[r] = z[r, y_r] - lse_r for one target token y_r per row (no (rows, n)
//   intermediate), plus lse per row. A target outside [0, n) (negative = ignored, as PyTorch's ignore_index)
//   gives logp = 0 and a zero gradient row.
// - cross_entropy_*: loss = -sum_r w_r logp[r] / sum_r w_r with w_r = mask_r * 1[0 <= y_r < n] (0 when every
//   weight is 0), and its backward to logp.
// Backward formulas (p = softmax(z)):
//   log_softmax:    dx[r, j] = (dy[r, j] - p[r, j] sum_k dy[r, k]) / tau
//   token_logprobs: dx[r, j] = g[r] (1[j == y_r] - p[r, j]) / tau        (0 for ignored rows)
//   cross_entropy:  dlogp[r] = -g_loss w_r / sum_k w_k
// p is recomputed as exp(z - lse_saved), so no softmax is ever stored. Math and the statistics (lse, logp, loss)
// are f32 whatever the storage type `elem` of x, y, dy and dx.
// Bindings: 0 params (uniform); 1 x (read, elem, rows * n), 2 targets (read, i32, rows),
// 3 logp (read_write, f32, rows), 4 lse (read_write, f32, rows), 5 y (read_write, elem, rows * n),
// 6 lse_saved (read, f32, rows), 7 g (read, f32, rows), 8 dy (read, elem, rows * n), 9 dx (read_write, elem,
// rows * n), 10 logp_in (read, f32, rows), 11 mask (read, f32, rows), 12 loss (read_write, f32, 1),
// 13 weight_sum (read_write, f32, 1), 14 weight_sum_saved (read, f32, 1), 15 g_loss (read, f32, 1),
// 16 dlogp (read_write, f32, rows).
// Dispatch grids, by variant:
//   *_serial:    workgroups of 64 over rows, 2-D grid (x = min(ceil(rows / 64), 65535), y = ceil(ceil(rows / 64) / x)),
//                row (wg.y * nwg.x + wg.x) * 64 + lid; one invocation walks a whole row.
//   *_workgroup: one workgroup of 256 per row, 2-D grid (x = min(rows, 65535), y = ceil(rows / x)), row
//                wg.y * nwg.x + wg.x; strided partials merged by a tree in workgroup memory (8 barriers).
//   *_naive:     workgroups of 256 over the output elements, 2-D grid as elementwise.wgsl, element
//                (wg.y * nwg.x + wg.x) * 256 + lid.
//   cross_entropy_mean_*: a single workgroup of 256, grid (1, 1, 1).

// use prelude

alias elem = f32;

const SERIAL_WG: u32 = 64u;  // invocations per workgroup of the *_serial entries
const WG: u32 = 256u;        // invocations per workgroup of the *_workgroup, *_naive and cross_entropy_mean_* entries

struct Params {
    rows: u32,
    n: u32,          // row length (the vocabulary size V)
    inv_temp: f32,   // 1 / tau
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> logp: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<elem>;
@group(0) @binding(6) var<storage, read> lse_saved: array<f32>;
@group(0) @binding(7) var<storage, read> g: array<f32>;
@group(0) @binding(8) var<storage, read> dy: array<elem>;
@group(0) @binding(9) var<storage, read_write> dx: array<elem>;
@group(0) @binding(10) var<storage, read> logp_in: array<f32>;
@group(0) @binding(11) var<storage, read> mask: array<f32>;
@group(0) @binding(12) var<storage, read_write> loss: array<f32>;
@group(0) @binding(13) var<storage, read_write> weight_sum: array<f32>;
@group(0) @binding(14) var<storage, read> weight_sum_saved: array<f32>;
@group(0) @binding(15) var<storage, read> g_loss: array<f32>;
@group(0) @binding(16) var<storage, read_write> dlogp: array<f32>;

var<workgroup> part_a: array<f32, WG>;
var<workgroup> part_b: array<f32, WG>;

// ------------------------------------------------------------------------------------------------ helpers

// z = x / tau of element i, in f32.
fn z_at(i: u32) -> f32 {
    return f32(x[i]) * params.inv_temp;
}

// lse of row r's z, one invocation walking the row.
fn row_lse_serial(base: u32) -> f32 {
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var j = 0u; j < params.n; j++) {
        ms = online(ms, z_at(base + j));
    }
    return ms.x + log(ms.y);
}

// lse of row r's z, the 256 invocations of a workgroup each folding j = lid, lid + 256, ..., then a tree.
// Every invocation of the workgroup must call it (it has barriers) and gets the same value.
fn row_lse_workgroup(base: u32, lid: u32) -> f32 {
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var j = lid; j < params.n; j += WG) {
        ms = online(ms, z_at(base + j));
    }
    part_a[lid] = ms.x;
    part_b[lid] = ms.y;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            let merged = merge_stats(vec2<f32>(part_a[lid], part_b[lid]), vec2<f32>(part_a[lid + half], part_b[lid + half]));
            part_a[lid] = merged.x;
            part_b[lid] = merged.y;
        }
        workgroupBarrier();
    }
    let result = part_a[0] + log(part_b[0]);
    workgroupBarrier();  // part_a/part_b may be reused by the caller
    return result;
}

// Sum of dy over row r, by a workgroup (strided partials, tree). Every invocation must call it.
fn row_sum_dy_workgroup(base: u32, lid: u32) -> f32 {
    var s = 0.0;
    for (var j = lid; j < params.n; j += WG) {
        s += f32(dy[base + j]);
    }
    part_a[lid] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            part_a[lid] += part_a[lid + half];
        }
        workgroupBarrier();
    }
    let result = part_a[0];
    workgroupBarrier();
    return result;
}

// Whether target t indexes the vocabulary; other targets (negative: ignored) give logp 0 and no gradient.
fn valid_target(t: i32) -> bool {
    return t >= 0 && u32(t) < params.n;
}

// Writes row r's logp and lse given its lse (the gather is one load).
fn store_token_logprob(r: u32, row_lse: f32) {
    let t = targets[r];
    var value = 0.0;
    if (valid_target(t)) {
        value = z_at(r * params.n + u32(t)) - row_lse;
    }
    logp[r] = value;
    lse[r] = row_lse;
}

// ------------------------------------------------------------------------------------------------ token_logprobs

// token_logprobs_serial: logp[r] = x[r, y_r] / tau - lse_r (0 for a target outside [0, n)), lse[r] = lse_r.
// One invocation per row: one online pass for lse, one load for the gather.
// Bindings: 0 params (rows, n, inv_temp), 1 x (read, elem, rows * n), 2 targets (read, i32, rows),
// 3 logp (read_write, f32, rows), 4 lse (read_write, f32, rows). Dispatch: *_serial grid over rows.
@compute @workgroup_size(SERIAL_WG)
fn token_logprobs_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, SERIAL_WG);
    if (r >= params.rows) { return; }
    store_token_logprob(r, row_lse_serial(r * params.n));
}

// token_logprobs_workgroup: as token_logprobs_serial, one workgroup of 256 per row (long vocabularies).
// Bindings: as token_logprobs_serial. Dispatch: *_workgroup grid, one workgroup per row.
@compute @workgroup_size(WG)
fn token_logprobs_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);  // uniform over the workgroup, so the return keeps barriers uniform
    if (r >= params.rows) { return; }
    let row_lse = row_lse_workgroup(r * params.n, lid);
    if (lid == 0u) {
        store_token_logprob(r, row_lse);
    }
}

// token_logprobs_backward_naive: dx[r, j] = g[r] (1[j == y_r] - exp(x[r, j] / tau - lse_r)) / tau, and 0 for
// every j of a row whose target is outside [0, n). One invocation per element of dx; nothing else is stored.
// Bindings: 0 params (rows, n, inv_temp), 1 x (read, elem, rows * n), 2 targets (read, i32, rows),
// 6 lse_saved (read, f32, rows), 7 g (read, f32, rows), 9 dx (read_write, elem, rows * n).
// Dispatch: *_naive grid over rows * n.
@compute @workgroup_size(WG)
fn token_logprobs_backward_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.rows * params.n) { return; }
    let r = i / params.n;
    let j = i % params.n;
    let t = targets[r];
    var d = 0.0;
    if (valid_target(t)) {
        let p = exp(z_at(i) - lse_saved[r]);
        d = g[r] * (select(0.0, 1.0, u32(t) == j) - p) * params.inv_temp;
    }
    dx[i] = elem(d);
}

// ------------------------------------------------------------------------------------------------ log_softmax

// log_softmax_serial: y[r, j] = x[r, j] / tau - lse_r, lse[r] = lse_r. One invocation per row.
// Bindings: 0 params (rows, n, inv_temp), 1 x (read, elem, rows * n), 4 lse (read_write, f32, rows),
// 5 y (read_write, elem, rows * n). Dispatch: *_serial grid over rows.
@compute @workgroup_size(SERIAL_WG)
fn log_softmax_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, SERIAL_WG);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    let row_lse = row_lse_serial(base);
    for (var j = 0u; j < params.n; j++) {
        y[base + j] = elem(z_at(base + j) - row_lse);
    }
    lse[r] = row_lse;
}

// log_softmax_workgroup: as log_softmax_serial, one workgroup of 256 per row, strided writes.
// Bindings: as log_softmax_serial. Dispatch: *_workgroup grid, one workgroup per row.
@compute @workgroup_size(WG)
fn log_softmax_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    let row_lse = row_lse_workgroup(base, lid);
    for (var j = lid; j < params.n; j += WG) {
        y[base + j] = elem(z_at(base + j) - row_lse);
    }
    if (lid == 0u) {
        lse[r] = row_lse;
    }
}

// log_softmax_backward_serial: dx[r, j] = (dy[r, j] - exp(x[r, j] / tau - lse_r) sum_k dy[r, k]) / tau.
// One invocation per row (a pass for the sum, a pass writing dx).
// Bindings: 0 params (rows, n, inv_temp), 1 x (read, elem, rows * n), 6 lse_saved (read, f32, rows),
// 8 dy (read, elem, rows * n), 9 dx (read_write, elem, rows * n). Dispatch: *_serial grid over rows.
@compute @workgroup_size(SERIAL_WG)
fn log_softmax_backward_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, SERIAL_WG);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    var total = 0.0;
    for (var j = 0u; j < params.n; j++) {
        total += f32(dy[base + j]);
    }
    let row_lse = lse_saved[r];
    for (var j = 0u; j < params.n; j++) {
        let p = exp(z_at(base + j) - row_lse);
        dx[base + j] = elem((f32(dy[base + j]) - p * total) * params.inv_temp);
    }
}

// log_softmax_backward_workgroup: as log_softmax_backward_serial, one workgroup of 256 per row.
// Bindings: as log_softmax_backward_serial. Dispatch: *_workgroup grid, one workgroup per row.
@compute @workgroup_size(WG)
fn log_softmax_backward_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);
    if (r >= params.rows) { return; }
    let base = r * params.n;
    let total = row_sum_dy_workgroup(base, lid);
    let row_lse = lse_saved[r];
    for (var j = lid; j < params.n; j += WG) {
        let p = exp(z_at(base + j) - row_lse);
        dx[base + j] = elem((f32(dy[base + j]) - p * total) * params.inv_temp);
    }
}

// ------------------------------------------------------------------------------------------------ cross_entropy

// The weight of row r: the mask value m times 1[0 <= y_r < n].
fn row_weight(r: u32, m: f32) -> f32 {
    return select(0.0, m, valid_target(targets[r]));
}

// Merges the invocations' partial sums (num = sum w logp, den = sum w) by a tree, then invocation 0 writes
// loss = -num / den (0 if den = 0) and weight_sum = den.
fn finish_mean(lid: u32, num: f32, den: f32) {
    part_a[lid] = num;
    part_b[lid] = den;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            part_a[lid] += part_a[lid + half];
            part_b[lid] += part_b[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total = part_b[0];
        loss[0] = select(0.0, -part_a[0] / total, total > 0.0);
        weight_sum[0] = total;
    }
}

// cross_entropy_mean_unmasked: loss[0] = -sum_r w_r logp_in[r] / sum_r w_r, w_r = 1[0 <= y_r < n];
// weight_sum[0] = sum_r w_r. Bindings: 0 params (rows, n), 2 targets (read, i32, rows), 10 logp_in (read, f32,
// rows), 12 loss (read_write, f32, 1), 13 weight_sum (read_write, f32, 1). Dispatch: grid (1, 1, 1).
@compute @workgroup_size(WG)
fn cross_entropy_mean_unmasked(@builtin(local_invocation_index) lid: u32) {
    var num = 0.0;
    var den = 0.0;
    for (var r = lid; r < params.rows; r += WG) {
        let w = row_weight(r, 1.0);
        num += w * logp_in[r];
        den += w;
    }
    finish_mean(lid, num, den);
}

// cross_entropy_mean_masked: as cross_entropy_mean_unmasked with w_r = mask[r] 1[0 <= y_r < n].
// Bindings: as cross_entropy_mean_unmasked plus 11 mask (read, f32, rows). Dispatch: grid (1, 1, 1).
@compute @workgroup_size(WG)
fn cross_entropy_mean_masked(@builtin(local_invocation_index) lid: u32) {
    var num = 0.0;
    var den = 0.0;
    for (var r = lid; r < params.rows; r += WG) {
        let w = row_weight(r, mask[r]);
        num += w * logp_in[r];
        den += w;
    }
    finish_mean(lid, num, den);
}

// The backward of the mean: dlogp[r] = -g_loss w_r / sum_k w_k (0 when the sum is 0).
fn store_mean_grad(r: u32, w: f32) {
    let total = weight_sum_saved[0];
    dlogp[r] = select(0.0, -g_loss[0] * w / total, total > 0.0);
}

// cross_entropy_backward_unmasked: dlogp[r] = -g_loss[0] w_r / weight_sum_saved[0], w_r = 1[0 <= y_r < n].
// Bindings: 0 params (rows, n), 2 targets (read, i32, rows), 14 weight_sum_saved (read, f32, 1),
// 15 g_loss (read, f32, 1), 16 dlogp (read_write, f32, rows). Dispatch: *_naive grid over rows.
@compute @workgroup_size(WG)
fn cross_entropy_backward_unmasked(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, WG);
    if (r >= params.rows) { return; }
    store_mean_grad(r, row_weight(r, 1.0));
}

// cross_entropy_backward_masked: as cross_entropy_backward_unmasked with w_r = mask[r] 1[0 <= y_r < n].
// Bindings: as cross_entropy_backward_unmasked plus 11 mask (read, f32, rows). Dispatch: *_naive grid over rows.
@compute @workgroup_size(WG)
fn cross_entropy_backward_masked(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let r = flat_index(wg, nwg, lid, WG);
    if (r >= params.rows) { return; }
    store_mean_grad(r, row_weight(r, mask[r]));
}
