// GRPO's clipped surrogate objective per token, its aggregation into one scalar loss, and its backward to the
// policy's log-probs (DESIGN.md, "GRPO"). Inputs are (B, T) rows of completions, contiguous, all f32.
// Per token i = (b, t), with m = mask[i] (1 on completion tokens incl. EOS, 0 on prompt and padding),
// A = adv[b], lp = logp[i], old = old_logp[i], ref = ref_logp[i]:
//   rho  = exp(lp - old)
//   kl   = exp(ref - lp) - (ref - lp) - 1                         (k3 estimator)
//   obj  = min(rho A, clamp(rho, 1 - eps_low, 1 + eps_high) A) - beta kl
//   high = A > 0 and rho > 1 + eps_high,  low = A < 0 and rho < 1 - eps_low  (clipped: no policy gradient)
//   dobj = rho A 1[not (high or low)] - beta (1 - exp(ref - lp))   (= d obj / d lp)
// Aggregation, loss = -sum_i w_b m_i obj_i, with n_b = sum_t m[b, t], N = sum_b n_b, and the normalisers of the
// whole batch these B rows belong to (a micro-batch of a gradient-accumulation step): R = total_rows >= B
// completions and N_all = total_tokens masked tokens (or this batch's own N when given_tokens = 0):
//   loss_type 0 grpo:    w_b = 1 / (R max(n_b, 1))   (mean over each completion's tokens, then over completions)
//   loss_type 1 token:   w_b = 1 / max(N_all, 1)     (bnpo and dapo: mean over all completion tokens)
//   loss_type 2 dr_grpo: w_b = 1 / (R L)             (L = max_len, the maximum completion length)
// So the losses (and gradients) of micro-batches given the whole batch's R and N_all sum to the whole batch's.
// With R = B and given_tokens = 0 this is the loss of the B rows on their own.
// Backward: dlogp[i] = -g_loss w_b m_i dobj_i.
// Metrics, over this batch's masked tokens (each 0 when N = 0): [mean kl, clip fraction low, clip fraction high,
// mean rho, N]; micro-batches' metrics combine into the whole batch's as means weighted by their N.
// Tokens with m = 0 contribute nothing, even when their log-probs are not finite.
// Reductions run in a fixed order (no atomics), so results are deterministic: stage 1 sums each row
// (grpo_rows_*), stage 2 (grpo_loss_naive) sums the rows in one workgroup.
// With beta = 0 and no reference model the host binds logp as ref_logp as well, so kl = 0 exactly.
// Bindings: 0 params (uniform); 1 logp (read, f32, B*T), 2 old_logp (read, f32, B*T), 3 ref_logp (read, f32,
// B*T), 4 adv (read, f32, B), 5 mask (read, f32, B*T), 6 row_stats (read_write, f32, B*6), 7 row_stats_in
// (read, f32, B*6), 8 loss (read_write, f32, 1), 9 metrics (read_write, f32, 5), 10 metrics_in (read, f32, 5),
// 11 g_loss (read, f32, 1), 12 dlogp (read_write, f32, B*T).
// row_stats[b] = [sum_t m obj, n_b, sum_t m kl, sum_t m 1[low], sum_t m 1[high], sum_t m rho].

// use prelude

alias elem = f32;  // everything here is f32; the alias keeps the family's build convention

const SERIAL_WG: u32 = 64u;  // invocations per workgroup of grpo_rows_serial
const WG: u32 = 256u;        // invocations per workgroup of the other entries
const STATS: u32 = 6u;       // floats per row in row_stats
const SUMS: u32 = 7u;        // partial sums grpo_loss_naive reduces

struct Params {
    rows: u32,       // B
    t: u32,          // T
    loss_type: u32,  // 0 grpo, 1 token (bnpo, dapo), 2 dr_grpo
    max_len: u32,    // L of dr_grpo
    eps_low: f32,
    eps_high: f32,
    beta: f32,
    total_rows: u32,    // R >= B, completions of the whole batch (grpo, dr_grpo)
    given_tokens: u32,  // 1: total_tokens is N_all; 0: N_all is this batch's own N (bnpo, dapo)
    total_tokens: f32,  // the whole batch's masked-token count when given_tokens = 1
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logp: array<f32>;
@group(0) @binding(2) var<storage, read> old_logp: array<f32>;
@group(0) @binding(3) var<storage, read> ref_logp: array<f32>;
@group(0) @binding(4) var<storage, read> adv: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_stats: array<f32>;
@group(0) @binding(7) var<storage, read> row_stats_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> loss: array<f32>;
@group(0) @binding(9) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(10) var<storage, read> metrics_in: array<f32>;
@group(0) @binding(11) var<storage, read> g_loss: array<f32>;
@group(0) @binding(12) var<storage, read_write> dlogp: array<f32>;

var<workgroup> part: array<f32, SUMS * WG>;  // SUMS partial sums of each invocation

// ------------------------------------------------------------------------------------------------ helpers

struct Token {
    obj: f32,   // the per-token objective
    dobj: f32,  // d obj / d lp
    kl: f32,
    low: f32,   // 1 when clipped below (A < 0), else 0
    high: f32,  // 1 when clipped above (A > 0), else 0
    rho: f32,
}

fn token(i: u32, a: f32) -> Token {
    let lp = logp[i];
    let rho = exp(lp - old_logp[i]);
    let d = ref_logp[i] - lp;
    let ref_ratio = exp(d);  // pi_ref / pi_theta
    let kl = ref_ratio - d - 1.0;
    let lo = 1.0 - params.eps_low;
    let hi = 1.0 + params.eps_high;
    let high = a > 0.0 && rho > hi;
    let low = a < 0.0 && rho < lo;
    var terms: Token;
    terms.obj = min(rho * a, clamp(rho, lo, hi) * a) - params.beta * kl;
    terms.dobj = select(rho * a, 0.0, high || low) - params.beta * (1.0 - ref_ratio);
    terms.kl = kl;
    terms.low = select(0.0, 1.0, low);
    terms.high = select(0.0, 1.0, high);
    terms.rho = rho;
    return terms;
}

// N_all: the whole batch's masked-token count, given by the host or this batch's own count n.
fn all_tokens(n: f32) -> f32 {
    return select(n, params.total_tokens, params.given_tokens != 0u);
}

// Row sums of token i, weighted by its mask: (m obj, m, m kl, m low) and (m high, m rho); zeros where m = 0.
struct Sums {
    a: vec4<f32>,
    b: vec2<f32>,
}

fn token_sums(i: u32, a: f32) -> Sums {
    let m = mask[i];
    var s: Sums;
    if (m == 0.0) {
        return s;  // zero-initialized
    }
    let k = token(i, a);
    s.a = m * vec4<f32>(k.obj, 1.0, k.kl, k.low);
    s.b = m * vec2<f32>(k.high, k.rho);
    return s;
}

fn store_row(b: u32, s: Sums) {
    let o = b * STATS;
    row_stats[o] = s.a.x;
    row_stats[o + 1u] = s.a.y;
    row_stats[o + 2u] = s.a.z;
    row_stats[o + 3u] = s.a.w;
    row_stats[o + 4u] = s.b.x;
    row_stats[o + 5u] = s.b.y;
}

// Tree-sums part[k * WG + 0 .. WG) into part[k * WG] for k < count (every invocation must call it).
fn tree_sum(lid: u32, count: u32) {
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            for (var k = 0u; k < count; k++) {
                part[k * WG + lid] += part[k * WG + lid + half];
            }
        }
        workgroupBarrier();
    }
}

// ------------------------------------------------------------------------------------------------ stage 1

// grpo_rows_serial: row_stats[b] = the masked sums of row b, folded over t in order by one invocation.
// Bindings: 0 params (rows, t, eps_low, eps_high, beta), 1 logp, 2 old_logp, 3 ref_logp, 4 adv, 5 mask,
// 6 row_stats (read_write, B*6). Dispatch: workgroups of 64 over rows, 2-D grid (x = min(ceil(B / 64), 65535),
// y = ceil(ceil(B / 64) / x)), row (wg.y * nwg.x + wg.x) * 64 + lid.
@compute @workgroup_size(SERIAL_WG)
fn grpo_rows_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let b = flat_index(wg, nwg, lid, SERIAL_WG);
    if (b >= params.rows) { return; }
    let a = adv[b];
    var acc: Sums;
    for (var t = 0u; t < params.t; t++) {
        let s = token_sums(b * params.t + t, a);
        acc.a += s.a;
        acc.b += s.b;
    }
    store_row(b, acc);
}

// grpo_rows_workgroup: as grpo_rows_serial, one workgroup of 256 per row: invocation lid folds t = lid,
// lid + 256, ..., then a tree in workgroup memory (8 barriers) merges the partials. For long rows.
// Bindings: as grpo_rows_serial. Dispatch: 2-D grid (x = min(B, 65535), y = ceil(B / x)), row wg.y * nwg.x + wg.x.
@compute @workgroup_size(WG)
fn grpo_rows_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let b = workgroup_index(wg, nwg);
    if (b >= params.rows) { return; }  // uniform per workgroup, so the barriers below stay uniform
    let a = adv[b];
    var acc: Sums;
    for (var t = lid; t < params.t; t += WG) {
        let s = token_sums(b * params.t + t, a);
        acc.a += s.a;
        acc.b += s.b;
    }
    part[lid] = acc.a.x;
    part[WG + lid] = acc.a.y;
    part[2u * WG + lid] = acc.a.z;
    part[3u * WG + lid] = acc.a.w;
    part[4u * WG + lid] = acc.b.x;
    part[5u * WG + lid] = acc.b.y;
    tree_sum(lid, STATS);
    if (lid == 0u) {
        for (var k = 0u; k < STATS; k++) {
            row_stats[b * STATS + k] = part[k * WG];
        }
    }
}

// ------------------------------------------------------------------------------------------------ stage 2

// grpo_loss_naive: loss[0] = -sum_b w_b row_stats[b][0] (w_b per loss_type, see the top), and metrics =
// [sum kl / N, sum low / N, sum high / N, sum rho / N, N] with N = sum_b n_b (divisions by max(N, 1)).
// Invocation lid sums rows b = lid, lid + 256, ... in order, then a tree merges them.
// Bindings: 0 params (rows, loss_type, max_len, total_rows, given_tokens, total_tokens), 7 row_stats_in (read,
// B*6), 8 loss (read_write, 1),
// 9 metrics (read_write, 5). Dispatch: one workgroup of 256, grid (1, 1, 1).
@compute @workgroup_size(WG)
fn grpo_loss_naive(@builtin(local_invocation_index) lid: u32) {
    var row_means = 0.0;  // sum_b obj_b / max(n_b, 1)
    var s = vec4<f32>(0.0);  // (obj, n, kl, low)
    var r = vec2<f32>(0.0);  // (high, rho)
    for (var b = lid; b < params.rows; b += WG) {
        let o = b * STATS;
        let row = vec4<f32>(row_stats_in[o], row_stats_in[o + 1u], row_stats_in[o + 2u], row_stats_in[o + 3u]);
        row_means += row.x / max(row.y, 1.0);
        s += row;
        r += vec2<f32>(row_stats_in[o + 4u], row_stats_in[o + 5u]);
    }
    part[lid] = s.x;
    part[WG + lid] = s.y;
    part[2u * WG + lid] = s.z;
    part[3u * WG + lid] = s.w;
    part[4u * WG + lid] = r.x;
    part[5u * WG + lid] = r.y;
    part[6u * WG + lid] = row_means;
    tree_sum(lid, SUMS);
    if (lid == 0u) {
        let rows = f32(params.total_rows);
        let n = part[WG];
        let per_token = 1.0 / max(n, 1.0);
        var objective = part[6u * WG] / rows;  // grpo
        if (params.loss_type == 1u) {
            objective = part[0] / max(all_tokens(n), 1.0);
        } else if (params.loss_type == 2u) {
            objective = part[0] / (rows * f32(params.max_len));
        }
        loss[0] = -objective;
        metrics[0] = part[2u * WG] * per_token;
        metrics[1] = part[3u * WG] * per_token;
        metrics[2] = part[4u * WG] * per_token;
        metrics[3] = part[5u * WG] * per_token;
        metrics[4] = n;
    }
}

// ------------------------------------------------------------------------------------------------ backward

// grpo_backward_naive: dlogp[i] = -g_loss[0] w_b m_i dobj_i for i = (b, t); w_b from the params (R, N_all) and
// the forward's row_stats_in (n_b) and metrics_in (N, when N_all is not given). Bindings: 0 params, 1 logp,
// 2 old_logp, 3 ref_logp, 4 adv, 5 mask, 7 row_stats_in (read, B*6), 10 metrics_in (read, 5), 11 g_loss (read, 1),
// 12 dlogp (read_write, B*T).
// Dispatch: workgroups of 256 over B*T elements, 2-D grid (x = min(ceil(B*T / 256), 65535),
// y = ceil(ceil(B*T / 256) / x)), element (wg.y * nwg.x + wg.x) * 256 + lid.
@compute @workgroup_size(WG)
fn grpo_backward_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.rows * params.t) { return; }
    let m = mask[i];
    if (m == 0.0) {
        dlogp[i] = 0.0;
        return;
    }
    let b = i / params.t;
    let rows = f32(params.total_rows);
    var w = 1.0 / (rows * max(row_stats_in[b * STATS + 1u], 1.0));  // grpo
    if (params.loss_type == 1u) {
        w = 1.0 / max(all_tokens(metrics_in[4]), 1.0);
    } else if (params.loss_type == 2u) {
        w = 1.0 / (rows * f32(params.max_len));
    }
    dlogp[i] = -g_loss[0] * w * m * token(i, adv[b]).dobj;
}
