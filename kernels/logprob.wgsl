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
// vec4 entries (*_vec4): lavapipe pays per load/store instruction, and a vec4 one costs about what a scalar one
// does (GPUs coalesce them too), so the token_logprobs forward and backward have twins on quads of 4 elements.
// The scalar entries stay the spec and the fallback where sizes are not multiples of 4.
// Bindings: 0 params (uniform); 1 x (read, elem, rows * n), 2 targets (read, i32, rows),
// 3 logp (read_write, f32, rows), 4 lse (read_write, f32, rows), 5 y (read_write, elem, rows * n),
// 6 lse_saved (read, f32, rows), 7 g (read, f32, rows), 8 dy (read, elem, rows * n), 9 dx (read_write, elem,
// rows * n), 10 logp_in (read, f32, rows), 11 mask (read, f32, rows), 12 loss (read_write, f32, 1),
// 13 weight_sum (read_write, f32, 1), 14 weight_sum_saved (read, f32, 1), 15 g_loss (read, f32, 1),
// 16 dlogp (read_write, f32, rows). The *_vec4 entries read x and write dx as quads through array<vec4<elem>>
// views of the same slots (1 x4, 9 dx4), so the host binds the same buffers in the same order.
// Dispatch grids, by variant:
//   *_serial:    workgroups of 64 over rows, 2-D grid (x = min(ceil(rows / 64), 65535), y = ceil(ceil(rows / 64) / x)),
//                row (wg.y * nwg.x + wg.x) * 64 + lid; one invocation walks a whole row.
//   *_workgroup: one workgroup of 256 per row, 2-D grid (x = min(rows, 65535), y = ceil(rows / x)), row
//                wg.y * nwg.x + wg.x; strided partials merged by a tree in workgroup memory (8 barriers).
//   *_naive:     workgroups of 256 over the output elements, 2-D grid as elementwise.wgsl, element
//                (wg.y * nwg.x + wg.x) * 256 + lid.
//   *_workgroup_vec4: as *_workgroup.
//   *_backward_vec4: workgroups of 64 over ceil(rows * n / (4 * QUADS)) invocations, 2-D grid (x = min(groups,
//                65535), y = ceil(groups / x)); invocation t = (wg.y * nwg.x + wg.x) * 64 + lid handles the
//                contiguous quads t * QUADS + k, k < QUADS, each checked against rows * n / 4.
//   cross_entropy_mean_*: a single workgroup of 256, grid (1, 1, 1).

// use prelude

alias elem = f32;

const SERIAL_WG: u32 = 64u;  // invocations per workgroup of the *_serial entries
const WG: u32 = 256u;        // invocations per workgroup of the *_workgroup, *_naive and cross_entropy_mean_* entries
const WG4: u32 = 64u;        // invocations per workgroup of token_logprobs_backward_vec4
// Quads per invocation of token_logprobs_backward_vec4: 1 gives neighbouring invocations neighbouring quads
// (GPUs); a CPU adapter runs faster with a few per invocation (engine/ops/logprob.py picks).
override QUADS: u32 = 1u;

struct Params {
    rows: u32,
    n: u32,          // row length (the vocabulary size V)
    inv_temp: f32,   // 1 / tau
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: x4
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
@group(0) @binding(1) var<storage, read> x4: array<vec4<elem>>;       // x as quads (*_vec4 entries)
@group(0) @binding(9) var<storage, read_write> dx4: array<vec4<elem>>;  // dx as quads (*_vec4 entries)

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

// Merges the (max, sum) partials of the 256 invocations of a workgroup by a tree in workgroup memory and gives
// every invocation the lse. Every invocation of the workgroup must call it (it has barriers).
fn merge_workgroup(ms: vec2<f32>, lid: u32) -> f32 {
    part_a[lid] = ms.x;
    part_b[lid] = ms.y;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            let merged = merge_stats(vec2<f32>(part_a[lid], part_b[lid]),
                                     vec2<f32>(part_a[lid + half], part_b[lid + half]));
            part_a[lid] = merged.x;
            part_b[lid] = merged.y;
        }
        workgroupBarrier();
    }
    let result = part_a[0] + log(part_b[0]);
    workgroupBarrier();  // part_a/part_b may be reused by the caller
    return result;
}

// lse of row r's z, the 256 invocations of a workgroup each folding j = lid, lid + 256, ..., then a tree.
// Every invocation of the workgroup must call it (it has barriers) and gets the same value.
fn row_lse_workgroup(base: u32, lid: u32) -> f32 {
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var j = lid; j < params.n; j += WG) {
        ms = online(ms, z_at(base + j));
    }
    return merge_workgroup(ms, lid);
}

// Fold the four values of z into online statistics (max, sum): one rescale to the quad's max, four exponentials.
fn online4(ms: vec2<f32>, z: vec4<f32>) -> vec2<f32> {
    let m = max(ms.x, max(max(z.x, z.y), max(z.z, z.w)));
    let e = exp(z - m);
    return vec2<f32>(m, ms.y * exp(ms.x - m) + (e.x + e.y) + (e.z + e.w));
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

// token_logprobs_workgroup_vec4: as token_logprobs_workgroup on quads of 4 (n % 4 == 0, so every row starts a
// quad), read through the vec4 view x4 of x (binding 1). The same value up to f32 rounding: each quad's
// maximum rescales the running sum once, then its four exponentials are added.
// Bindings: 0 params (rows, n, inv_temp), 1 x4 (read, vec4<elem>, rows * n / 4), 2 targets (read, i32, rows),
// 3 logp (read_write, f32, rows), 4 lse (read_write, f32, rows). Dispatch: *_workgroup grid, one workgroup per row.
@compute @workgroup_size(WG)
fn token_logprobs_workgroup_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wg, nwg);
    if (r >= params.rows) { return; }
    let width = params.n / 4u;
    let base = r * width;
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var j = lid; j < width; j += WG) {
        ms = online4(ms, vec4<f32>(x4[base + j]) * params.inv_temp);
    }
    let row_lse = merge_workgroup(ms, lid);
    if (lid == 0u) {
        let t = targets[r];
        var value = 0.0;
        if (valid_target(t)) {
            let at = r * params.n + u32(t);
            value = f32(x4[at / 4u][at % 4u]) * params.inv_temp - row_lse;
        }
        logp[r] = value;
        lse[r] = row_lse;
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

// What the backward needs of row r: its first flat index, target token, saved lse and incoming gradient g.
struct GradRow {
    start: u32,
    token: i32,
    lse: f32,
    g: f32,
}

fn grad_row(r: u32) -> GradRow {
    return GradRow(r * params.n, targets[r], lse_saved[r], g[r]);
}

// The naive entry's formula for one element of column j with z = x / tau: g (1[j == y] - exp(z - lse)) / tau,
// 0 for an ignored row.
fn token_grad(row: GradRow, j: u32, z: f32) -> f32 {
    if (!valid_target(row.token)) { return 0.0; }
    let p = exp(z - row.lse);
    return row.g * (select(0.0, 1.0, u32(row.token) == j) - p) * params.inv_temp;
}

// token_grad on the four columns j0 .. j0 + 3 of one row.
fn token_grad4(row: GradRow, j0: u32, z: vec4<f32>) -> vec4<f32> {
    if (!valid_target(row.token)) { return vec4<f32>(0.0); }
    let p = exp(z - row.lse);
    let hit = vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u) == vec4<u32>(u32(row.token));
    return row.g * (select(vec4<f32>(0.0), vec4<f32>(1.0), hit) - p) * params.inv_temp;
}

// token_logprobs_backward_vec4: dx4[q] = token_logprobs_backward_naive's dx at the flat indices 4q .. 4q + 3,
// for q < rows * n / 4. Needs rows * n % 4 == 0, not n % 4 == 0: quads run over the flat (rows * n) arrays, and
// one that crosses a row end is done element by element, each with its own row (so any V works, 1 and 3
// included). The row statistics (target, lse, g) are loaded once per row an invocation meets, not once per
// element, and an invocation divides once. Same arithmetic in the same order: bit for bit the naive entry.
// Bindings: 0 params (rows, n, inv_temp), 1 x4 (read, vec4<elem>, rows * n / 4), 2 targets (read, i32, rows),
// 6 lse_saved (read, f32, rows), 7 g (read, f32, rows), 9 dx4 (read_write, vec4<elem>, rows * n / 4).
// Dispatch: *_backward_vec4 grid (see the file header).
@compute @workgroup_size(WG4)
fn token_logprobs_backward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let quads = params.rows * params.n / 4u;
    let first = flat_index(wg, nwg, lid, WG4) * QUADS;
    if (first >= quads) { return; }
    var r = first * 4u / params.n;  // the one division of the invocation
    var row = grad_row(r);
    for (var k = 0u; k < QUADS; k++) {
        let q = first + k;
        if (q >= quads) { return; }
        let i = q * 4u;
        let z = vec4<f32>(x4[q]) * params.inv_temp;
        if (i + 3u < row.start + params.n) {  // the whole quad lies in row r
            dx4[q] = vec4<elem>(token_grad4(row, i - row.start, z));
            continue;
        }
        var d = vec4<f32>(0.0);
        for (var c = 0u; c < 4u; c++) {
            if (i + c >= row.start + params.n) {  // consecutive elements: the next row
                r += 1u;
                row = grad_row(r);
            }
            d[c] = token_grad(row, i + c - row.start, z[c]);
        }
        dx4[q] = vec4<elem>(d);
    }
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
