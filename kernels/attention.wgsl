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
// KV-cache entries (attention_cached, attention_decode): k and v are a cache (B, T_cap, H_kv, D) whose rows
// 0 .. T_k - 1 are valid, and batch row b's keys begin at starts[b] (left padding before it is never seen):
// query i sees keys j with starts[b] <= j <= i + (T_k - T_q). A query that sees no key gets out = 0.
// attention_decode_subgroup (at the end, needing subgroups) is attention_decode's faster variant.
// Dispatch (training entries): workgroups of WG invocations, 3-D grid (x = ceil(rows / WG), y = heads, z = B) where
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
    t_cap: u32,     // cached entries only: rows per batch of the k/v cache (keys 0 .. t_k - 1 of them are valid)
    batch: u32,     // attention_decode only: B
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
@group(0) @binding(14) var<storage, read> starts: array<u32>;

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

// ---------------------------------------------------------------------------------------------- KV cache

// Element offsets of cache rows j0 .. j0 + 3 of kv head g, batch b, clamped to the last valid row T_k - 1 (rows
// past it, possibly never written, are neither read nor seen).
fn cache_bases4(b: u32, j0: u32, g: u32) -> vec4<u32> {
    let j = min(vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u), vec4<u32>(params.t_k - 1u));
    return ((b * params.t_cap + j) * params.kv_heads + g) * params.d;
}

// Whether keys j0 .. j0 + 3 lie in [first, last].
fn in_range4(j0: u32, first: u32, last: u32) -> vec4<bool> {
    let j = vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u);
    return (j >= vec4<u32>(first)) & (j <= vec4<u32>(last));
}

// One query row against the cache: out[ob .. ob + D) = softmax over keys first ..= last of (scale q . k_j) v_j,
// streamed with an online softmax in blocks of KB keys from j_begin (a multiple of KB, uniform); zeros when no
// key is visible. q row at element offset qb.
fn cached_row(b: u32, g: u32, qb: u32, j_begin: u32, j_end: u32, first: u32, last: u32, store: bool) {
    var qr: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    for (var d = 0u; d < params.d; d++) {
        qr[d] = f32(q[qb + d]) * params.scale;
        acc[d] = 0.0;
    }
    var m = LOWEST;
    var l = 0.0;
    for (var j = j_begin; j < j_end; j += KB) {
        let vis_a = in_range4(j, first, last);
        let vis_b = in_range4(j + 4u, first, last);
        let kb_a = cache_bases4(b, j, g);
        let kb_b = cache_bases4(b, j + 4u, g);
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
    if (!store) { return; }
    let inv = select(1.0 / l, 0.0, l == 0.0);
    for (var d = 0u; d < params.d; d++) {
        out[qb + d] = elem(acc[d] * inv);
    }
}

// attention_cached: causal attention of T_q new queries (the last T_q of T_k positions) over a KV cache whose
// batch rows start at starts[b] (prefill of left-padded prompts). Query i of batch b, head h sees cache rows
// j in [starts[b], i + T_k - T_q]; out = softmax_j(scale q_i . k_j) v_j, or 0 when that range is empty.
// Bindings: 0 params (uniform; t_q, t_k, heads, kv_heads, d, scale, t_cap, batch (decode); causal unused),
// 1 q (read, elem, (B, T_q, H, D)), 2 k (read, elem, (B, T_cap, H_kv, D)), 3 v (read, elem, (B, T_cap, H_kv, D)),
// 4 out (read_write, elem, (B, T_q, H, D)), 14 starts (read, u32, B).
// Dispatch: (ceil(T_q / WG), H, B); invocation (wg, lid) is query i = wg.x * WG + lid of head wg.y, batch wg.z.
@compute @workgroup_size(WG)
fn attention_cached(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.z;
    let h = wg.y;
    let g = h / (params.heads / params.kv_heads);
    let i = wg.x * WG + lid;
    let j_end = min(params.t_k, min(params.t_q - 1u, wg.x * WG + WG - 1u) + offset() + 1u);
    let first = starts[b];
    let i_row = min(i, params.t_q - 1u);
    let qb = row_base(b, i_row, params.t_q, h, params.heads);
    cached_row(b, g, qb, min(first, j_end) / KB * KB, j_end, first, i_row + offset(), i < params.t_q);
}

// attention_decode: one new query per batch row (T_q = 1, decoding) against a KV cache: row r = b * H + h sees
// cache rows j in [starts[b], T_k - 1]; out = softmax_j(scale q . k_j) v_j (0 when starts[b] >= T_k).
// One invocation per (b, h), so a decode step fills every lane. Bindings: as attention_cached with q and out
// (B, 1, H, D).
// Dispatch: workgroups of WG over B * H rows, 2-D grid (x = min(ceil(B * H / WG), 65535),
// y = ceil(ceil(B * H / WG) / x)); row r = (wg.y * nwg.x + wg.x) * WG + lid.
@compute @workgroup_size(WG)
fn attention_decode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let rows = params.batch * params.heads;
    let r = flat_index(wg, nwg, lid, WG);
    let r_row = min(r, rows - 1u);
    let b = r_row / params.heads;
    let h = r_row % params.heads;
    let g = h / (params.heads / params.kv_heads);
    let qb = (b * params.heads + h) * params.d;
    cached_row(b, g, qb, 0u, params.t_k, starts[b], params.t_k - 1u, r < rows);
}

// ------------------------------------------------------------------------------------ decode, subgroup

// attention_decode_subgroup: attention_decode's result, scheduled for a subgroup: a workgroup is one subgroup of 8
// lanes owning one (b, kv head g) and DECODE_HEADS of its query heads (the GQA group, or a block of it), so each
// K/V element is loaded once per workgroup, not once per query head. A row is spread over the lanes as quads:
// lane l holds elements 32c + 4l .. + 3 of chunk c (c < DECODE_CHUNKS = ceil(D / 32)) of each held q row (times
// scale) and output accumulator, in registers. Keys stream past in blocks of 8 from starts[b]: the lanes load
// their quads of the block's key and value rows (vec4 loads, each element once), form the partial dot products
// of each key with every held head (a vec4, one component per head), and a transposing butterfly of shuffles
// leaves lane i the scores of key i of the block. Lane i then takes the online-softmax step of its key (one exp
// per lane and block; the block's running max is shared by a max over the lanes), each key's weights reach every
// lane by a broadcast, and the accumulators are rescaled once per block. Keys of the last block past T_k - 1 are
// not loaded and get weight 0. Per-lane running sums are added over the lanes at the end.
// On lavapipe a vec4 load still costs a bounds-checked load per element and lane, so what pays there is loading each
// K/V element once per GQA group; on a GPU a row's quads are one coalesced load of the lanes.
// Requirements: the `subgroup` feature, each workgroup of 8 invocations the first 8 lanes of one subgroup (the
// host checks with attention_sg's attention_subgroup_lanes), D a multiple of 4 and at most 32 * DECODE_CHUNKS,
// DECODE_HEADS <= 4. Bindings: as attention_decode, with q, k, v and out read as quads (array<vec4<elem>> views
// of bindings 1 .. 4). Dispatch: (ceil((H / H_kv) / DECODE_HEADS), H_kv, B); workgroup (x, g, b) owns query
// heads g * (H / H_kv) + x * DECODE_HEADS + t for t < DECODE_HEADS, those below (g + 1) * (H / H_kv).
@group(0) @binding(1) var<storage, read> q_quads: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> k_quads: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> v_quads: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read_write> out_quads: array<vec4<elem>>;

const DECODE_LANES: u32 = 8u;      // invocations per workgroup = keys per block
override DECODE_CHUNKS: u32 = 1u;  // 32-element chunks of a row: ceil(D / 32), at most 4
override DECODE_HEADS: u32 = 2u;   // query heads per workgroup, at most 4

// Per-lane registers, slot 4 t + c for head t, chunk c; indexed by literals only (an index known only at run time
// would move them to memory, gathered lane by lane).
var<private> dec_q: array<vec4<f32>, 16>;
var<private> dec_acc: array<vec4<f32>, 16>;

// BEGIN subgroup

// Whether this lane's quad of chunk c lies in the row (D is a multiple of 4, so a quad is wholly in or out).
fn dec_quad_in(c: u32, lane: u32) -> bool {
    return 32u * c + 4u * lane < params.d;
}

// The lane's quad of chunk c of the row at quad offset row4, 0 past D. The load is clamped into the row rather
// than branched around on the lane (a little faster on lavapipe).
fn dec_k(row4: u32, c: u32, lane: u32) -> vec4<f32> {
    let x = vec4<f32>(k_quads[row4 + min(8u * c + lane, params.d / 4u - 1u)]);
    return select(vec4<f32>(0.0), x, dec_quad_in(c, lane));
}

fn dec_v(row4: u32, c: u32, lane: u32) -> vec4<f32> {
    let x = vec4<f32>(v_quads[row4 + min(8u * c + lane, params.d / 4u - 1u)]);
    return select(vec4<f32>(0.0), x, dec_quad_in(c, lane));
}

// dec_q slots of head t (literal) from the q row at quad offset row4, times scale; zeros for a head past the group.
fn dec_q_quad(row4: u32, c: u32, lane: u32) -> vec4<f32> {
    let x = vec4<f32>(q_quads[row4 + min(8u * c + lane, params.d / 4u - 1u)]);
    return select(vec4<f32>(0.0), x * params.scale, dec_quad_in(c, lane));
}

fn dec_load_q(t: u32, row4: u32, live: bool, lane: u32) {
    if (t >= DECODE_HEADS || !live) { return; }
    dec_q[4u * t] = dec_q_quad(row4, 0u, lane);
    if (DECODE_CHUNKS > 1u) { dec_q[4u * t + 1u] = dec_q_quad(row4, 1u, lane); }
    if (DECODE_CHUNKS > 2u) { dec_q[4u * t + 2u] = dec_q_quad(row4, 2u, lane); }
    if (DECODE_CHUNKS > 3u) { dec_q[4u * t + 3u] = dec_q_quad(row4, 3u, lane); }
}

// The lane's partial products of chunk c (literal) of a key with every held head: (head 0, 1, 2, 3).
fn dec_dots(c: u32, x: vec4<f32>) -> vec4<f32> {
    var s = vec4<f32>(dot(dec_q[c], x), 0.0, 0.0, 0.0);
    if (DECODE_HEADS > 1u) { s.y = dot(dec_q[4u + c], x); }
    if (DECODE_HEADS > 2u) { s.z = dot(dec_q[8u + c], x); }
    if (DECODE_HEADS > 3u) { s.w = dot(dec_q[12u + c], x); }
    return s;
}

// The lane's partial scores of cache row j (batch b, kv head g) with every held head; 0 for a row past T_k - 1,
// whose load is skipped (uniformly).
fn dec_partial(b: u32, j: u32, g: u32, lane: u32) -> vec4<f32> {
    if (j >= params.t_k) { return vec4<f32>(0.0); }
    let row4 = dec_cache_row4(b, j, g);
    var s = dec_dots(0u, dec_k(row4, 0u, lane));
    if (DECODE_CHUNKS > 1u) { s += dec_dots(1u, dec_k(row4, 1u, lane)); }
    if (DECODE_CHUNKS > 2u) { s += dec_dots(2u, dec_k(row4, 2u, lane)); }
    if (DECODE_CHUNKS > 3u) { s += dec_dots(3u, dec_k(row4, 3u, lane)); }
    return s;
}

// One butterfly step: of the pair (a, b) the lane keeps a (b where `high`) and adds what its partner lane ^ mask
// passes, the other one of its pair.
fn dec_fold(a: vec4<f32>, b: vec4<f32>, high: bool, mask: u32) -> vec4<f32> {
    return select(a, b, high) + subgroupShuffleXor(select(b, a, high), mask);
}

// Given lane partials x0 .. x7 of 8 keys, the sums over the lanes of key `lane`'s (7 shuffles, not 8 reductions).
fn dec_transpose_sum(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>,
                     x6: vec4<f32>, x7: vec4<f32>, lane: u32) -> vec4<f32> {
    let b2 = (lane & 4u) != 0u;
    let y0 = dec_fold(x0, x4, b2, 4u);  // keys 0 or 4 (by lane bit 2), summed over lane pairs
    let y1 = dec_fold(x1, x5, b2, 4u);
    let y2 = dec_fold(x2, x6, b2, 4u);
    let y3 = dec_fold(x3, x7, b2, 4u);
    let b1 = (lane & 2u) != 0u;
    let z0 = dec_fold(y0, y2, b1, 2u);
    let z1 = dec_fold(y1, y3, b1, 2u);
    return dec_fold(z0, z1, (lane & 1u) != 0u, 1u);
}

// max (sum) over the 8 lanes, in every lane: butterflies of shuffles, which lavapipe compiles to permutes, where
// its subgroupMax and subgroupAdd loop over the lanes (measured: a subgroupMax per block cost a third of the time).
fn dec_lanes_max(x: vec4<f32>) -> vec4<f32> {
    let a = max(x, subgroupShuffleXor(x, 4u));
    let b = max(a, subgroupShuffleXor(a, 2u));
    return max(b, subgroupShuffleXor(b, 1u));
}

fn dec_lanes_sum(x: vec4<f32>) -> vec4<f32> {
    let a = x + subgroupShuffleXor(x, 4u);
    let b = a + subgroupShuffleXor(a, 2u);
    return b + subgroupShuffleXor(b, 1u);
}

// The lane's quads of a value row (chunks past DECODE_CHUNKS left at 0).
struct DecRow {
    x: array<vec4<f32>, 4>,
}

// The lane's quads of value row j (batch b, kv head g); zeros for a row past T_k - 1, not loaded.
fn dec_value_row(b: u32, j: u32, g: u32, lane: u32) -> DecRow {
    var r: DecRow;
    if (j >= params.t_k) { return r; }
    let row4 = dec_cache_row4(b, j, g);
    r.x[0] = dec_v(row4, 0u, lane);
    if (DECODE_CHUNKS > 1u) { r.x[1] = dec_v(row4, 1u, lane); }
    if (DECODE_CHUNKS > 2u) { r.x[2] = dec_v(row4, 2u, lane); }
    if (DECODE_CHUNKS > 3u) { r.x[3] = dec_v(row4, 3u, lane); }
    return r;
}

// dec_acc of chunk c (literal) += p[t] * x for every held head t.
fn dec_axpy(c: u32, p: vec4<f32>, x: vec4<f32>) {
    dec_acc[c] = fma(vec4<f32>(p.x), x, dec_acc[c]);
    if (DECODE_HEADS > 1u) { dec_acc[4u + c] = fma(vec4<f32>(p.y), x, dec_acc[4u + c]); }
    if (DECODE_HEADS > 2u) { dec_acc[8u + c] = fma(vec4<f32>(p.z), x, dec_acc[8u + c]); }
    if (DECODE_HEADS > 3u) { dec_acc[12u + c] = fma(vec4<f32>(p.w), x, dec_acc[12u + c]); }
}

// Accumulate value row r with weights p (a component per head).
fn dec_add_row(r: DecRow, p: vec4<f32>) {
    dec_axpy(0u, p, r.x[0]);
    if (DECODE_CHUNKS > 1u) { dec_axpy(1u, p, r.x[1]); }
    if (DECODE_CHUNKS > 2u) { dec_axpy(2u, p, r.x[2]); }
    if (DECODE_CHUNKS > 3u) { dec_axpy(3u, p, r.x[3]); }
}

// dec_acc of head t (literal) *= f.
fn dec_rescale_head(t: u32, f: f32) {
    if (t >= DECODE_HEADS) { return; }
    dec_acc[4u * t] *= f;
    if (DECODE_CHUNKS > 1u) { dec_acc[4u * t + 1u] *= f; }
    if (DECODE_CHUNKS > 2u) { dec_acc[4u * t + 2u] *= f; }
    if (DECODE_CHUNKS > 3u) { dec_acc[4u * t + 3u] *= f; }
}

fn dec_rescale(f: vec4<f32>) {
    dec_rescale_head(0u, f.x);
    dec_rescale_head(1u, f.y);
    dec_rescale_head(2u, f.z);
    dec_rescale_head(3u, f.w);
}

// out row of head t (literal) at quad offset row4 = dec_acc / l (0 where l = 0: no visible key).
fn dec_store(t: u32, row4: u32, l: f32, live: bool, lane: u32) {
    if (t >= DECODE_HEADS || !live) { return; }
    let inv = select(1.0 / l, 0.0, l == 0.0);
    dec_store_quad(row4, 0u, dec_acc[4u * t] * inv, lane);
    if (DECODE_CHUNKS > 1u) { dec_store_quad(row4, 1u, dec_acc[4u * t + 1u] * inv, lane); }
    if (DECODE_CHUNKS > 2u) { dec_store_quad(row4, 2u, dec_acc[4u * t + 2u] * inv, lane); }
    if (DECODE_CHUNKS > 3u) { dec_store_quad(row4, 3u, dec_acc[4u * t + 3u] * inv, lane); }
}

fn dec_store_quad(row4: u32, c: u32, x: vec4<f32>, lane: u32) {
    if (dec_quad_in(c, lane)) {
        out_quads[row4 + 8u * c + lane] = vec4<elem>(x);
    }
}

// Quad offset of cache row j of kv head g, batch b.
fn dec_cache_row4(b: u32, j: u32, g: u32) -> u32 {
    return ((b * params.t_cap + j) * params.kv_heads + g) * (params.d / 4u);
}

@compute @workgroup_size(DECODE_LANES)
fn attention_decode_subgroup(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(subgroup_invocation_id) lane: u32) {
    let b = wg.z;
    let g = wg.y;
    let per_kv = params.heads / params.kv_heads;
    let t0 = wg.x * DECODE_HEADS;  // the first held head, within the group
    let quads = params.d / 4u;
    let q_row4 = (b * params.heads + g * per_kv + t0) * quads;  // head t0 + t's row is q_row4 + t * quads
    dec_load_q(0u, q_row4, t0 < per_kv, lane);
    dec_load_q(1u, q_row4 + quads, t0 + 1u < per_kv, lane);
    dec_load_q(2u, q_row4 + 2u * quads, t0 + 2u < per_kv, lane);
    dec_load_q(3u, q_row4 + 3u * quads, t0 + 3u < per_kv, lane);
    var m = vec4<f32>(LOWEST);  // running max per head (uniform)
    var l = vec4<f32>(0.0);     // this lane's keys' share of the running sum per head
    for (var j = starts[b]; j < params.t_k; j += DECODE_LANES) {
        // values first, so that their loads overlap those of the keys
        let val0 = dec_value_row(b, j, g, lane);
        let val1 = dec_value_row(b, j + 1u, g, lane);
        let val2 = dec_value_row(b, j + 2u, g, lane);
        let val3 = dec_value_row(b, j + 3u, g, lane);
        let val4 = dec_value_row(b, j + 4u, g, lane);
        let val5 = dec_value_row(b, j + 5u, g, lane);
        let val6 = dec_value_row(b, j + 6u, g, lane);
        let val7 = dec_value_row(b, j + 7u, g, lane);
        let s = dec_transpose_sum(dec_partial(b, j, g, lane), dec_partial(b, j + 1u, g, lane),
                                  dec_partial(b, j + 2u, g, lane), dec_partial(b, j + 3u, g, lane),
                                  dec_partial(b, j + 4u, g, lane), dec_partial(b, j + 5u, g, lane),
                                  dec_partial(b, j + 6u, g, lane), dec_partial(b, j + 7u, g, lane), lane);
        let visible = j + lane < params.t_k;  // this lane's key
        let s_own = select(vec4<f32>(LOWEST), s, visible);
        let m_new = max(m, dec_lanes_max(s_own));
        let correction = exp(m - m_new);
        let p = select(vec4<f32>(0.0), exp(s_own - m_new), visible);
        l = l * correction + p;
        m = m_new;
        dec_rescale(correction);
        dec_add_row(val0, subgroupBroadcast(p, 0u));
        dec_add_row(val1, subgroupBroadcast(p, 1u));
        dec_add_row(val2, subgroupBroadcast(p, 2u));
        dec_add_row(val3, subgroupBroadcast(p, 3u));
        dec_add_row(val4, subgroupBroadcast(p, 4u));
        dec_add_row(val5, subgroupBroadcast(p, 5u));
        dec_add_row(val6, subgroupBroadcast(p, 6u));
        dec_add_row(val7, subgroupBroadcast(p, 7u));
    }
    let total = dec_lanes_sum(l);
    // out has q's layout (B, 1, H, D)
    dec_store(0u, q_row4, total.x, t0 < per_kv, lane);
    dec_store(1u, q_row4 + quads, total.y, t0 + 1u < per_kv, lane);
    dec_store(2u, q_row4 + 2u * quads, total.z, t0 + 2u < per_kv, lane);
    dec_store(3u, q_row4 + 3u * quads, total.w, t0 + 3u < per_kv, lane);
}

// END subgroup
