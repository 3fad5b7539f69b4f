// Fused attention with grouped-query heads (GQA), causal or not, and its backward, tiled for GPUs and long
// sequences (FlashAttention-2's schedule): a workgroup owns a block of BQ query rows (BK key rows for dk/dv),
// loads each tile of the other axis once into workgroup memory, and every invocation of the workgroup reads it
// from there instead of from global memory. Same layouts, Params and results as the training entries of
// attention.wgsl (its serial entries are the readable spec):
// q, out, d_out, dq: (B, T_q, H, D); k, v, dk, dv: (B, T_k, H_kv, D); lse, delta: (B, H, T_q) in f32 whatever
// `elem`. Query head h reads kv head g = h / (H / H_kv). Scores s_ij = scale * q_i . k_j; with causal = 1 query
// i sees keys j <= i + (T_k - T_q) (queries aligned to the end of the keys; the host ensures T_q <= T_k).
//   forward:  P = softmax_j(s_ij) over visible j, out_i = sum_j P_ij v_j, lse_i = log sum_j exp(s_ij)
//   backward: delta_i = dO_i . O_i,  P_ij = exp(s_ij - lse_i),  dS_ij = P_ij (dO_i . v_j - delta_i),
//             dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{h in group, i} dS_ij q_i,  dv_j = sum_{h, i} P_ij dO_i
// No T x T matrix exists: a workgroup keeps one (BQ, BK) tile of scores in workgroup memory at a time, with the
// running max and sum of an online softmax per row. dk/dv loop over the query heads of their kv group, so every
// gradient element is written by exactly one invocation (deterministic, no atomics).
// Workgroups are (LANES, BQ) invocations (BK rows for dk/dv): invocation (lane, r) works for row r of the block.
// In the score step it computes the scores of tile columns lane, lane + LANES, ...; in the accumulate step it
// owns head-dimension columns lane, lane + LANES, ... of its row's accumulators (at most COLS of them, so
// LANES >= ceil(D / COLS)). Rows past the end of T_q or T_k are computed as copies of the last row and never
// stored; tile entries past the end are zero and masked.
// Workgroup memory per entry, in f32 words (the host sizes BQ, BK to the adapter's
// max-compute-workgroup-storage-size; engine/ops/attention.py mirrors these sums):
//   attention_tiled: BQ*ROW + 2*BK*ROW + BQ*BK        delta: BQ*LANES
//   dq: 2*BQ*ROW + 2*BK*ROW + BQ*BK                   dkv: 2*BQ*ROW + 2*BK*ROW + 2*BQ*BK + 2*BQ
// Math runs in f32 whatever the storage type `elem`.

// use prelude

alias elem = f32;

override BQ: u32 = 8u;     // query rows per workgroup (forward, delta, dq) or per tile (dkv)
override BK: u32 = 8u;     // key rows per tile (forward, dq) or per workgroup (dkv)
override LANES: u32 = 4u;  // invocations per row
override ROW: u32 = 65u;   // row stride of the (rows, D) tiles in workgroup memory, >= D; odd avoids bank conflicts
const COLS: u32 = 32u;     // head-dimension columns one invocation accumulates at most
const MAX_D: u32 = 128u;   // the largest head dimension (engine/ops/attention.py refuses larger)

struct Params {
    t_q: u32,
    t_k: u32,
    heads: u32,     // H
    kv_heads: u32,  // H_kv (divides H)
    d: u32,         // head dimension D <= MAX_D
    causal: u32,    // 1: query i sees keys j <= i + (t_k - t_q)
    scale: f32,
    t_cap: u32,     // unused here (KV-cache entries of attention_decode.wgsl)
    batch: u32,     // unused here
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<elem>;
@group(0) @binding(2) var<storage, read> k: array<elem>;
@group(0) @binding(3) var<storage, read> v: array<elem>;
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> o_saved: array<elem>;
@group(0) @binding(7) var<storage, read> d_out: array<elem>;
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;
@group(0) @binding(9) var<storage, read> lse_saved: array<f32>;
@group(0) @binding(10) var<storage, read> delta_saved: array<f32>;
@group(0) @binding(11) var<storage, read_write> dq: array<elem>;
@group(0) @binding(12) var<storage, read_write> dk: array<elem>;
@group(0) @binding(13) var<storage, read_write> dv: array<elem>;

var<workgroup> q_tile: array<f32, BQ * ROW>;    // query rows (times scale in the forward and dq)
var<workgroup> do_tile: array<f32, BQ * ROW>;   // output-gradient rows
var<workgroup> k_tile: array<f32, BK * ROW>;    // key rows (times scale in dkv)
var<workgroup> v_tile: array<f32, BK * ROW>;    // value rows
var<workgroup> s_tile: array<f32, BQ * BK>;     // scores, dS or (dkv, transposed) P of the current tile
var<workgroup> ds_tile: array<f32, BQ * BK>;    // dkv: dS, transposed
var<workgroup> lse_tile: array<f32, BQ>;        // dkv: lse of the query tile
var<workgroup> delta_tile: array<f32, BQ>;      // dkv: delta of the query tile
var<workgroup> part_tile: array<f32, BQ * LANES>;  // delta: partial sums per lane

// The causal offset T_k - T_q: query i sees keys j <= i + offset().
fn offset() -> u32 {
    return params.t_k - params.t_q;
}

// One past the last key that query i_last (a block's last query, so the bound is uniform over it) sees.
fn key_end(i_last: u32) -> u32 {
    if (params.causal == 0u) { return params.t_k; }
    return min(params.t_k, i_last + offset() + 1u);
}

// Whether query i sees key j (j below `end`).
fn visible(i: u32, j: u32, end: u32) -> bool {
    return j < end && (params.causal == 0u || j <= i + offset());
}

// Element offset of row `pos` of head `head` in a (B, T, n_heads, D) tensor.
fn row_base(b: u32, pos: u32, t: u32, head: u32, n_heads: u32) -> u32 {
    return ((b * t + pos) * n_heads + head) * params.d;
}

// Head-dimension columns lane, lane + LANES, ... below D: how many invocation `lane` owns.
fn own_cols(lane: u32) -> u32 {
    return (params.d + LANES - 1u - lane) / LANES;
}

// attention_tiled: out and lse for a block of BQ query rows of one (b, h). Per tile of BK keys: the workgroup
// loads K and V rows into workgroup memory, computes the (BQ, BK) scores, then each row folds its scores into
// an online softmax (running max m and sum l; the accumulator is rescaled when m grows); out = acc / l,
// lse = m + log(l). Tiles past the block's last visible key are skipped.
// Bindings: 0 params (uniform), 1 q (read, elem, (B, T_q, H, D)), 2 k (read, elem, (B, T_k, H_kv, D)),
// 3 v (read, elem, (B, T_k, H_kv, D)), 4 out (read_write, elem, (B, T_q, H, D)), 5 lse (read_write, f32,
// (B, H, T_q)).
// Dispatch: workgroups of (LANES, BQ), grid (ceil(T_q / BQ), H, B): query i = wg.x * BQ + local_id.y of head
// wg.y, batch wg.z.
@compute @workgroup_size(LANES, BQ)
fn attention_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(local_invocation_index) tid: u32) {
    let b = wg.z;
    let h = wg.y;
    let g = h / (params.heads / params.kv_heads);
    let lane = lid.x;
    let r = lid.y;
    let i0 = wg.x * BQ;
    let i = i0 + r;
    let i_row = min(i, params.t_q - 1u);
    let j_end = key_end(min(params.t_q - 1u, i0 + BQ - 1u));  // uniform: the block's last query
    let d_n = params.d;
    for (var e = tid; e < BQ * d_n; e += BQ * LANES) {
        let rr = e / d_n;
        let c = e - rr * d_n;
        let row = min(i0 + rr, params.t_q - 1u);
        q_tile[rr * ROW + c] = f32(q[row_base(b, row, params.t_q, h, params.heads) + c]) * params.scale;
    }
    let cols = own_cols(lane);
    var acc: array<f32, COLS>;
    for (var t = 0u; t < COLS; t++) {
        acc[t] = 0.0;
    }
    var m = LOWEST;
    var l = 0.0;
    for (var j0 = 0u; j0 < j_end; j0 += BK) {
        workgroupBarrier();  // the previous tile is no longer read (and q_tile is written)
        for (var e = tid; e < BK * d_n; e += BQ * LANES) {
            let jr = e / d_n;
            let c = e - jr * d_n;
            let j = j0 + jr;
            let src = row_base(b, min(j, params.t_k - 1u), params.t_k, g, params.kv_heads) + c;
            k_tile[jr * ROW + c] = select(0.0, f32(k[src]), j < params.t_k);
            v_tile[jr * ROW + c] = select(0.0, f32(v[src]), j < params.t_k);
        }
        workgroupBarrier();
        for (var u = lane; u < BK; u += LANES) {
            var s = 0.0;
            for (var c = 0u; c < d_n; c++) {
                s += q_tile[r * ROW + c] * k_tile[u * ROW + c];
            }
            s_tile[r * BK + u] = select(LOWEST, s, visible(i_row, j0 + u, j_end));
        }
        workgroupBarrier();
        var s_max = LOWEST;
        for (var u = 0u; u < BK; u++) {
            s_max = max(s_max, s_tile[r * BK + u]);
        }
        if (s_max > m) {
            let correction = exp(m - s_max);
            l *= correction;
            for (var t = 0u; t < COLS; t++) {
                acc[t] *= correction;
            }
            m = s_max;
        }
        for (var u = 0u; u < BK; u++) {
            let s = s_tile[r * BK + u];
            let p = select(0.0, exp(s - m), s != LOWEST);  // masked entries hold LOWEST
            l += p;
            for (var t = 0u; t < COLS; t++) {
                if (t >= cols) { break; }
                acc[t] += p * v_tile[u * ROW + lane + t * LANES];
            }
        }
    }
    if (i >= params.t_q) { return; }
    let qb = row_base(b, i, params.t_q, h, params.heads);
    let inv = 1.0 / l;
    for (var t = 0u; t < cols; t++) {
        out[qb + lane + t * LANES] = elem(acc[t] * inv);
    }
    if (lane == 0u) {
        lse[(b * params.heads + h) * params.t_q + i] = m + log(l);
    }
}

// attention_backward_delta_tiled: delta_i = sum_d dO[i, d] * O[i, d] per (b, h, query); the LANES invocations
// of a row read interleaved columns (coalesced) and lane 0 adds their partial sums in lane order.
// Bindings: 0 params (uniform), 6 o_saved (read, elem, (B, T_q, H, D)), 7 d_out (read, elem, (B, T_q, H, D)),
// 8 delta (read_write, f32, (B, H, T_q)).
// Dispatch: as attention_tiled.
@compute @workgroup_size(LANES, BQ)
fn attention_backward_delta_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.z;
    let h = wg.y;
    let lane = lid.x;
    let r = lid.y;
    let i = wg.x * BQ + r;
    let base = row_base(b, min(i, params.t_q - 1u), params.t_q, h, params.heads);
    var sum = 0.0;
    for (var c = lane; c < params.d; c += LANES) {
        sum += f32(d_out[base + c]) * f32(o_saved[base + c]);
    }
    part_tile[r * LANES + lane] = sum;
    workgroupBarrier();
    if (lane != 0u || i >= params.t_q) { return; }
    var total = 0.0;
    for (var c = 0u; c < LANES; c++) {
        total += part_tile[r * LANES + c];
    }
    delta[(b * params.heads + h) * params.t_q + i] = total;
}

// attention_backward_dq_tiled: dq_i = scale * sum_j dS_ij k_j for a block of BQ query rows of one (b, h), with
// dS_ij = exp(s_ij - lse_i) (dO_i . v_j - delta_i) recomputed per tile of BK keys (K and V rows in workgroup
// memory, next to the block's scaled q and dO rows).
// Bindings: 0 params (uniform), 1 q, 2 k, 3 v (read, elem, as attention_tiled), 7 d_out (read, elem,
// (B, T_q, H, D)), 9 lse_saved (read, f32, (B, H, T_q)), 10 delta_saved (read, f32, (B, H, T_q)),
// 11 dq (read_write, elem, (B, T_q, H, D)).
// Dispatch: as attention_tiled.
@compute @workgroup_size(LANES, BQ)
fn attention_backward_dq_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                               @builtin(local_invocation_index) tid: u32) {
    let b = wg.z;
    let h = wg.y;
    let g = h / (params.heads / params.kv_heads);
    let lane = lid.x;
    let r = lid.y;
    let i0 = wg.x * BQ;
    let i = i0 + r;
    let i_row = min(i, params.t_q - 1u);
    let j_end = key_end(min(params.t_q - 1u, i0 + BQ - 1u));
    let d_n = params.d;
    for (var e = tid; e < BQ * d_n; e += BQ * LANES) {
        let rr = e / d_n;
        let c = e - rr * d_n;
        let src = row_base(b, min(i0 + rr, params.t_q - 1u), params.t_q, h, params.heads) + c;
        q_tile[rr * ROW + c] = f32(q[src]) * params.scale;
        do_tile[rr * ROW + c] = f32(d_out[src]);
    }
    let stat = (b * params.heads + h) * params.t_q + i_row;
    let lse_i = lse_saved[stat];
    let delta_i = delta_saved[stat];
    let cols = own_cols(lane);
    var acc: array<f32, COLS>;
    for (var t = 0u; t < COLS; t++) {
        acc[t] = 0.0;
    }
    for (var j0 = 0u; j0 < j_end; j0 += BK) {
        workgroupBarrier();
        for (var e = tid; e < BK * d_n; e += BQ * LANES) {
            let jr = e / d_n;
            let c = e - jr * d_n;
            let j = j0 + jr;
            let src = row_base(b, min(j, params.t_k - 1u), params.t_k, g, params.kv_heads) + c;
            k_tile[jr * ROW + c] = select(0.0, f32(k[src]), j < params.t_k);
            v_tile[jr * ROW + c] = select(0.0, f32(v[src]), j < params.t_k);
        }
        workgroupBarrier();
        for (var u = lane; u < BK; u += LANES) {
            var s = 0.0;
            var dp = 0.0;
            for (var c = 0u; c < d_n; c++) {
                s += q_tile[r * ROW + c] * k_tile[u * ROW + c];
                dp += do_tile[r * ROW + c] * v_tile[u * ROW + c];
            }
            // masked keys (whose exp may overflow) are selected away, not multiplied by 0
            s_tile[r * BK + u] = select(0.0, exp(s - lse_i) * (dp - delta_i), visible(i_row, j0 + u, j_end));
        }
        workgroupBarrier();
        for (var u = 0u; u < BK; u++) {
            let ds = s_tile[r * BK + u];
            for (var t = 0u; t < COLS; t++) {
                if (t >= cols) { break; }
                acc[t] += ds * k_tile[u * ROW + lane + t * LANES];
            }
        }
    }
    if (i >= params.t_q) { return; }
    let qb = row_base(b, i, params.t_q, h, params.heads);
    for (var t = 0u; t < cols; t++) {
        dq[qb + lane + t * LANES] = elem(acc[t] * params.scale);
    }
}

// attention_backward_dkv_tiled: for a block of BK keys of kv head g, over the query heads h of its group and
// tiles of BQ queries: dv_j = sum P_ij dO_i, dk_j = scale * sum dS_ij q_i with P_ij = exp(s_ij - lse_i) and
// dS_ij = P_ij (dO_i . v_j - delta_i). The block's scaled k rows and v rows stay in workgroup memory; each query
// tile brings its q and dO rows, lse and delta. Query tiles start at the block's first query that sees any of
// its keys (i >= j - (T_k - T_q) when causal).
// Bindings: 0 params (uniform), 1 q, 2 k, 3 v (read, elem, as attention_tiled), 7 d_out (read, elem,
// (B, T_q, H, D)), 9 lse_saved, 10 delta_saved (read, f32, (B, H, T_q)), 12 dk, 13 dv (read_write, elem,
// (B, T_k, H_kv, D)).
// Dispatch: workgroups of (LANES, BK), grid (ceil(T_k / BK), H_kv, B): key j = wg.x * BK + local_id.y of kv
// head wg.y, batch wg.z.
@compute @workgroup_size(LANES, BK)
fn attention_backward_dkv_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                                @builtin(local_invocation_index) tid: u32) {
    let b = wg.z;
    let g = wg.y;
    let per_kv = params.heads / params.kv_heads;  // query heads per kv head
    let lane = lid.x;
    let r = lid.y;
    let j0 = wg.x * BK;
    let j = j0 + r;
    let j_row = min(j, params.t_k - 1u);
    let d_n = params.d;
    for (var e = tid; e < BK * d_n; e += BK * LANES) {
        let jr = e / d_n;
        let c = e - jr * d_n;
        let src = row_base(b, min(j0 + jr, params.t_k - 1u), params.t_k, g, params.kv_heads) + c;
        k_tile[jr * ROW + c] = f32(k[src]) * params.scale;
        v_tile[jr * ROW + c] = f32(v[src]);
    }
    var i_start = 0u;  // uniform: the first query any key of the block is seen by
    if (params.causal != 0u && j0 > offset()) {
        i_start = j0 - offset();
    }
    let cols = own_cols(lane);
    var dk_acc: array<f32, COLS>;
    var dv_acc: array<f32, COLS>;
    for (var t = 0u; t < COLS; t++) {
        dk_acc[t] = 0.0;
        dv_acc[t] = 0.0;
    }
    for (var h = g * per_kv; h < (g + 1u) * per_kv; h++) {
        let stat = (b * params.heads + h) * params.t_q;
        for (var i0 = i_start; i0 < params.t_q; i0 += BQ) {
            workgroupBarrier();  // the previous query tile is no longer read (and the key block is written)
            for (var e = tid; e < BQ * d_n; e += BK * LANES) {
                let ir = e / d_n;
                let c = e - ir * d_n;
                let i = i0 + ir;
                let src = row_base(b, min(i, params.t_q - 1u), params.t_q, h, params.heads) + c;
                q_tile[ir * ROW + c] = select(0.0, f32(q[src]), i < params.t_q);
                do_tile[ir * ROW + c] = select(0.0, f32(d_out[src]), i < params.t_q);
            }
            for (var ir = tid; ir < BQ; ir += BK * LANES) {
                let i = min(i0 + ir, params.t_q - 1u);
                lse_tile[ir] = lse_saved[stat + i];
                delta_tile[ir] = delta_saved[stat + i];
            }
            workgroupBarrier();
            for (var u = lane; u < BQ; u += LANES) {
                var s = 0.0;
                var dp = 0.0;
                for (var c = 0u; c < d_n; c++) {
                    s += k_tile[r * ROW + c] * q_tile[u * ROW + c];
                    dp += v_tile[r * ROW + c] * do_tile[u * ROW + c];
                }
                let i = i0 + u;
                // rows past T_q are zero in q_tile and do_tile as well, so they add nothing either way
                let seen = i < params.t_q && (params.causal == 0u || j_row <= i + offset());
                let p = select(0.0, exp(s - lse_tile[u]), seen);
                s_tile[r * BQ + u] = p;
                ds_tile[r * BQ + u] = p * (dp - delta_tile[u]);
            }
            workgroupBarrier();
            for (var u = 0u; u < BQ; u++) {
                let p = s_tile[r * BQ + u];
                let ds = ds_tile[r * BQ + u];
                for (var t = 0u; t < COLS; t++) {
                    if (t >= cols) { break; }
                    let c = lane + t * LANES;
                    dv_acc[t] += p * do_tile[u * ROW + c];
                    dk_acc[t] += ds * q_tile[u * ROW + c];
                }
            }
        }
    }
    if (j >= params.t_k) { return; }
    let kb = row_base(b, j, params.t_k, g, params.kv_heads);
    for (var t = 0u; t < cols; t++) {
        dk[kb + lane + t * LANES] = elem(dk_acc[t] * params.scale);
        dv[kb + lane + t * LANES] = elem(dv_acc[t]);
    }
}
