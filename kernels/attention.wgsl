// Fused scaled-dot-product attention with grouped-query heads (GQA), causal or not, and its backward.
// Layouts (contiguous, row-major): q, out, d_out, dq: (B, T_q, H, D); k, v, dk, dv: (B, T_k, H_kv, D);
// lse, delta: (B, H, T_q) in f32 whatever `elem`. Query head h reads kv head g = h / (H / H_kv).
// Scores s_ij = scale * q_i . k_j; with causal = 1 query i sees keys j <= i + (T_k - T_q) (queries aligned to
// the end of the keys, as with a KV cache; the host ensures T_q <= T_k), otherwise all keys.
//   forward:  P = softmax_j(s_ij) over visible j, out_i = sum_j P_ij v_j, lse_i = log sum_j exp(s_ij)
//   backward: delta_i = dO_i . O_i,  P_ij = exp(s_ij - lse_i),  dS_ij = P_ij (dO_i . v_j - delta_i),
//             dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{h in group, i} dS_ij q_i,  dv_j = sum_{h, i} P_ij dO_i
// No T x T matrix is ever stored: each invocation streams over keys (forward, dq) or queries (dk/dv) with the
// running statistics of an online softmax. dk/dv loop over the query heads of their kv group, so every gradient
// element is written by exactly one invocation (deterministic, no atomics).
// D is at most MAX_D: each invocation keeps its rows in private arrays of MAX_D floats.
// The KV-cache entries of generation (prefill and decode) are kernels/attention_decode.wgsl's.
// Dispatch: workgroups of WG invocations, 3-D grid (x = ceil(rows / WG), y = heads, z = B) where
// rows/heads are T_q/H (forward, delta, dq) or T_k/H_kv (dkv). Row i = wg.x * WG + lid, so a workgroup shares
// (b, head): its key/value (or query) loads and loop bounds are uniform, one load broadcast to the SIMD lanes.
// Math runs in f32 whatever the storage type `elem`.

// use prelude

alias elem = f32;

const WG: u32 = 16u;     // invocations per workgroup (rows of one (b, head))
const KB: u32 = 8u;      // keys (queries, for dk/dv) per inner step: two vec4s of scores, so each private-array
                         // load of a row element feeds 8 FMAs (about 2x faster than one key at a time on lavapipe)
const MAX_D: u32 = 128u; // the largest head dimension (engine/ops/attention.py refuses larger)

struct Params {
    t_q: u32,
    t_k: u32,
    heads: u32,     // H
    kv_heads: u32,  // H_kv (divides H)
    d: u32,         // head dimension D <= MAX_D
    causal: u32,    // 1: query i sees keys j <= i + (t_k - t_q)
    scale: f32,
    t_cap: u32,     // unused here: kernels/attention_decode.wgsl's KV-cache entries share this struct
    batch: u32,     // unused here, as t_cap
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

// The causal offset T_k - T_q: query i sees keys j <= i + offset().
fn offset() -> u32 {
    return params.t_k - params.t_q;
}

// One past the last key that query i_last (a workgroup's last query, so the bound is uniform over it) sees.
fn key_end(i_last: u32) -> u32 {
    if (params.causal == 0u) { return params.t_k; }
    return min(params.t_k, i_last + offset() + 1u);
}

// Element offset of row `pos` of head `head` in a (B, T, n_heads, D) tensor.
fn row_base(b: u32, pos: u32, t: u32, head: u32, n_heads: u32) -> u32 {
    return ((b * t + pos) * n_heads + head) * params.d;
}

// Whether query i sees keys j0 .. j0 + 3, each also below `end`.
fn visible4(i: u32, j0: u32, end: u32) -> vec4<bool> {
    let j = vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u);
    let limit = select(vec4<u32>(i + offset()), vec4<u32>(0xffffffffu), params.causal == 0u);
    return (j < vec4<u32>(end)) & (j <= limit);
}

// Whether queries i0 .. i0 + 3 (below T_q) see key j.
fn seen_by4(i0: u32, j: u32) -> vec4<bool> {
    let i = vec4<u32>(i0, i0 + 1u, i0 + 2u, i0 + 3u);
    let causal_ok = vec4<bool>(params.causal == 0u) | (vec4<u32>(j) <= i + vec4<u32>(offset()));
    return (i < vec4<u32>(params.t_q)) & causal_ok;
}

// Element offsets of rows pos0 .. pos0 + 3 of head `head` in a (B, T, n_heads, D) tensor, clamped to row T - 1
// (rows past the end are read but masked out).
fn row_bases4(b: u32, pos0: u32, t: u32, head: u32, n_heads: u32) -> vec4<u32> {
    let pos = min(vec4<u32>(pos0, pos0 + 1u, pos0 + 2u, pos0 + 3u), vec4<u32>(t - 1u));
    return ((b * t + pos) * n_heads + head) * params.d;
}

// Element d of four rows (offsets `base`) of k, v, q or d_out, as f32.
fn k4(base: vec4<u32>, d: u32) -> vec4<f32> {
    return vec4<f32>(f32(k[base.x + d]), f32(k[base.y + d]), f32(k[base.z + d]), f32(k[base.w + d]));
}

fn v4(base: vec4<u32>, d: u32) -> vec4<f32> {
    return vec4<f32>(f32(v[base.x + d]), f32(v[base.y + d]), f32(v[base.z + d]), f32(v[base.w + d]));
}

fn q4(base: vec4<u32>, d: u32) -> vec4<f32> {
    return vec4<f32>(f32(q[base.x + d]), f32(q[base.y + d]), f32(q[base.z + d]), f32(q[base.w + d]));
}

fn d_out4(base: vec4<u32>, d: u32) -> vec4<f32> {
    return vec4<f32>(f32(d_out[base.x + d]), f32(d_out[base.y + d]), f32(d_out[base.z + d]), f32(d_out[base.w + d]));
}

// Entries i0 .. i0 + 3 of the (B, H, T_q) statistics lse and delta from the row starting at `row`, clamped to
// the row's last query.
fn lse4(row: u32, i0: u32) -> vec4<f32> {
    let i = min(vec4<u32>(i0, i0 + 1u, i0 + 2u, i0 + 3u), vec4<u32>(params.t_q - 1u)) + row;
    return vec4<f32>(lse_saved[i.x], lse_saved[i.y], lse_saved[i.z], lse_saved[i.w]);
}

fn delta4(row: u32, i0: u32) -> vec4<f32> {
    let i = min(vec4<u32>(i0, i0 + 1u, i0 + 2u, i0 + 3u), vec4<u32>(params.t_q - 1u)) + row;
    return vec4<f32>(delta_saved[i.x], delta_saved[i.y], delta_saved[i.z], delta_saved[i.w]);
}

// attention_serial: out and lse for one query row per invocation: an online softmax over the visible keys
// (the running max m and sum l; the output accumulator is rescaled only when m grows), then out = acc / l,
// lse = m + log(l). Bindings: 0 params (uniform), 1 q (read, elem, (B, T_q, H, D)), 2 k (read, elem,
// (B, T_k, H_kv, D)), 3 v (read, elem, (B, T_k, H_kv, D)), 4 out (read_write, elem, (B, T_q, H, D)),
// 5 lse (read_write, f32, (B, H, T_q)).
// Dispatch: (ceil(T_q / WG), H, B); invocation (wg, lid) is query i = wg.x * WG + lid of head wg.y, batch wg.z.
@compute @workgroup_size(WG)
fn attention_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.z;
    let h = wg.y;
    let g = h / (params.heads / params.kv_heads);
    let i = wg.x * WG + lid;
    let j_end = key_end(min(params.t_q - 1u, wg.x * WG + WG - 1u));  // uniform: the workgroup's last query
    let i_row = min(i, params.t_q - 1u);  // lanes past T_q compute a copy of the last row and store nothing
    let qb = row_base(b, i_row, params.t_q, h, params.heads);
    var qr: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    for (var d = 0u; d < params.d; d++) {
        qr[d] = f32(q[qb + d]) * params.scale;
        acc[d] = 0.0;
    }
    var m = LOWEST;
    var l = 0.0;
    for (var j = 0u; j < j_end; j += KB) {
        let vis_a = visible4(i_row, j, j_end);
        let vis_b = visible4(i_row, j + 4u, j_end);
        let kb_a = row_bases4(b, j, params.t_k, g, params.kv_heads);
        let kb_b = row_bases4(b, j + 4u, params.t_k, g, params.kv_heads);
        var s_a = vec4<f32>(0.0);
        var s_b = vec4<f32>(0.0);
        for (var d = 0u; d < params.d; d++) {
            let qd = qr[d];
            s_a += qd * k4(kb_a, d);
            s_b += qd * k4(kb_b, d);
        }
        s_a = select(vec4<f32>(LOWEST), s_a, vis_a);
        s_b = select(vec4<f32>(LOWEST), s_b, vis_b);
        let s4 = max(s_a, s_b);
        let s_max = max(max(s4.x, s4.y), max(s4.z, s4.w));
        if (s_max > m) {
            let correction = exp(m - s_max);
            l *= correction;
            for (var d = 0u; d < params.d; d++) {
                acc[d] *= correction;
            }
            m = s_max;
        }
        let p_a = select(vec4<f32>(0.0), exp(s_a - m), vis_a);
        let p_b = select(vec4<f32>(0.0), exp(s_b - m), vis_b);
        let p_sum = p_a + p_b;
        l += p_sum.x + p_sum.y + p_sum.z + p_sum.w;
        for (var d = 0u; d < params.d; d++) {
            acc[d] += dot(p_a, v4(kb_a, d)) + dot(p_b, v4(kb_b, d));
        }
    }
    if (i >= params.t_q) { return; }
    let inv = 1.0 / l;
    for (var d = 0u; d < params.d; d++) {
        out[qb + d] = elem(acc[d] * inv);
    }
    lse[(b * params.heads + h) * params.t_q + i] = m + log(l);
}

// attention_backward_delta_serial: delta_i = sum_d dO[i, d] * O[i, d] per (b, h, query).
// Bindings: 0 params (uniform), 6 o_saved (read, elem, (B, T_q, H, D)), 7 d_out (read, elem, (B, T_q, H, D)),
// 8 delta (read_write, f32, (B, H, T_q)).
// Dispatch: as attention_serial.
@compute @workgroup_size(WG)
fn attention_backward_delta_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.z;
    let h = wg.y;
    let i = wg.x * WG + lid;
    if (i >= params.t_q) { return; }
    let base = row_base(b, i, params.t_q, h, params.heads);
    var sum = 0.0;
    for (var d = 0u; d < params.d; d++) {
        sum += f32(d_out[base + d]) * f32(o_saved[base + d]);
    }
    delta[(b * params.heads + h) * params.t_q + i] = sum;
}

// attention_backward_dq_serial: dq_i = scale * sum_j P_ij (dO_i . v_j - delta_i) k_j over the keys query i sees,
// P_ij = exp(scale q_i . k_j - lse_i) recomputed. Bindings: 0 params (uniform), 1 q, 2 k, 3 v (read, elem, as
// attention_serial), 7 d_out (read, elem, (B, T_q, H, D)), 9 lse_saved (read, f32, (B, H, T_q)),
// 10 delta_saved (read, f32, (B, H, T_q)), 11 dq (read_write, elem, (B, T_q, H, D)).
// Dispatch: as attention_serial.
@compute @workgroup_size(WG)
fn attention_backward_dq_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.z;
    let h = wg.y;
    let g = h / (params.heads / params.kv_heads);
    let i = wg.x * WG + lid;
    let j_end = key_end(min(params.t_q - 1u, wg.x * WG + WG - 1u));
    let i_row = min(i, params.t_q - 1u);
    let qb = row_base(b, i_row, params.t_q, h, params.heads);
    let stat = (b * params.heads + h) * params.t_q + i_row;
    let lse_i = lse_saved[stat];
    let delta_i = delta_saved[stat];
    var qr: array<f32, MAX_D>;
    var dor: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    for (var d = 0u; d < params.d; d++) {
        qr[d] = f32(q[qb + d]) * params.scale;
        dor[d] = f32(d_out[qb + d]);
        acc[d] = 0.0;
    }
    for (var j = 0u; j < j_end; j += KB) {
        let vis_a = visible4(i_row, j, j_end);
        let vis_b = visible4(i_row, j + 4u, j_end);
        let kb_a = row_bases4(b, j, params.t_k, g, params.kv_heads);
        let kb_b = row_bases4(b, j + 4u, params.t_k, g, params.kv_heads);
        var s_a = vec4<f32>(0.0);
        var s_b = vec4<f32>(0.0);
        var dp_a = vec4<f32>(0.0);
        var dp_b = vec4<f32>(0.0);
        for (var d = 0u; d < params.d; d++) {
            let qd = qr[d];
            let dod = dor[d];
            s_a += qd * k4(kb_a, d);
            s_b += qd * k4(kb_b, d);
            dp_a += dod * v4(kb_a, d);
            dp_b += dod * v4(kb_b, d);
        }
        // dS = P (dP - delta); masked keys (whose exp may overflow) are selected away, not multiplied by 0
        let ds_a = select(vec4<f32>(0.0), exp(s_a - lse_i) * (dp_a - delta_i), vis_a);
        let ds_b = select(vec4<f32>(0.0), exp(s_b - lse_i) * (dp_b - delta_i), vis_b);
        for (var d = 0u; d < params.d; d++) {
            acc[d] += dot(ds_a, k4(kb_a, d)) + dot(ds_b, k4(kb_b, d));
        }
    }
    if (i >= params.t_q) { return; }
    for (var d = 0u; d < params.d; d++) {
        dq[qb + d] = elem(acc[d] * params.scale);
    }
}

// attention_backward_dkv_serial: for key j of kv head g, over the query heads h of its group and the queries i
// that see j: dv_j = sum P_ij dO_i, dk_j = scale * sum P_ij (dO_i . v_j - delta_i) q_i, with P recomputed from
// lse. Bindings: 0 params (uniform), 1 q, 2 k, 3 v (read, elem, as attention_serial), 7 d_out (read, elem,
// (B, T_q, H, D)), 9 lse_saved, 10 delta_saved (read, f32, (B, H, T_q)), 12 dk, 13 dv (read_write, elem,
// (B, T_k, H_kv, D)).
// Dispatch: (ceil(T_k / WG), H_kv, B); invocation (wg, lid) is key j = wg.x * WG + lid of kv head wg.y, batch wg.z.
@compute @workgroup_size(WG)
fn attention_backward_dkv_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.z;
    let g = wg.y;
    let per_kv = params.heads / params.kv_heads;  // query heads per kv head
    let j = wg.x * WG + lid;
    let j_row = min(j, params.t_k - 1u);
    // The first query any key of this workgroup is seen by (uniform): i >= j - (T_k - T_q).
    var i_start = 0u;
    if (params.causal != 0u && wg.x * WG > offset()) {
        i_start = wg.x * WG - offset();
    }
    let kb = row_base(b, j_row, params.t_k, g, params.kv_heads);
    var kr: array<f32, MAX_D>;
    var vr: array<f32, MAX_D>;
    var dk_acc: array<f32, MAX_D>;
    var dv_acc: array<f32, MAX_D>;
    for (var d = 0u; d < params.d; d++) {
        kr[d] = f32(k[kb + d]) * params.scale;
        vr[d] = f32(v[kb + d]);
        dk_acc[d] = 0.0;
        dv_acc[d] = 0.0;
    }
    for (var h = g * per_kv; h < (g + 1u) * per_kv; h++) {
        let stat = (b * params.heads + h) * params.t_q;
        for (var i = i_start; i < params.t_q; i += KB) {
            let vis_a = seen_by4(i, j_row);
            let vis_b = seen_by4(i + 4u, j_row);
            let qb_a = row_bases4(b, i, params.t_q, h, params.heads);
            let qb_b = row_bases4(b, i + 4u, params.t_q, h, params.heads);
            var s_a = vec4<f32>(0.0);
            var s_b = vec4<f32>(0.0);
            var dp_a = vec4<f32>(0.0);
            var dp_b = vec4<f32>(0.0);
            for (var d = 0u; d < params.d; d++) {
                let kd = kr[d];
                let vd = vr[d];
                s_a += kd * q4(qb_a, d);
                s_b += kd * q4(qb_b, d);
                dp_a += vd * d_out4(qb_a, d);
                dp_b += vd * d_out4(qb_b, d);
            }
            let p_a = select(vec4<f32>(0.0), exp(s_a - lse4(stat, i)), vis_a);
            let p_b = select(vec4<f32>(0.0), exp(s_b - lse4(stat, i + 4u)), vis_b);
            let ds_a = p_a * (dp_a - delta4(stat, i));
            let ds_b = p_b * (dp_b - delta4(stat, i + 4u));
            for (var d = 0u; d < params.d; d++) {
                dv_acc[d] += dot(p_a, d_out4(qb_a, d)) + dot(p_b, d_out4(qb_b, d));
                dk_acc[d] += dot(ds_a, q4(qb_a, d)) + dot(ds_b, q4(qb_b, d));
            }
        }
    }
    if (j >= params.t_k) { return; }
    for (var d = 0u; d < params.d; d++) {
        dk[kb + d] = elem(dk_acc[d] * params.scale);
        dv[kb + d] = elem(dv_acc[d]);
    }
}
