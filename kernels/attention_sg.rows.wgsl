// attention_sg.rows.wgsl -- attention_sg's row groups and the steps of its entries: which rows a lane holds,
// the forward's online softmax, dq's and dk/dv's per-row terms, and the loads and stores of the held rows. A
// part of the attention_sg family, included by attention_sg.wgsl (`// use attention_sg.rows`) inside its
// subgroup block.

// ------------------------------------------------------------------------------------------------ row groups

// A group's row for this lane: i (clamped to the last row), its query head h (forward, dq), `top` (the group's
// last query, or for dk/dv its first key) and whether the lane's row exists.
struct Row {
    i: u32,
    h: u32,
    top: u32,
    store: bool,
}

// Query row group rg of workgroup x (kv head g): flat group f = x * GROUPS + rg, position block f / per_kv of
// head g * per_kv + f % per_kv; lane l holds query f / per_kv * 8 + l.
fn query_row(rg: u32, x: u32, g: u32, lane: u32) -> Row {
    if (rg >= GROUPS) { return Row(0u, 0u, 0u, false); }
    let per_kv = div_small(params.heads, params.kv_heads);
    let total = per_kv * ((params.t_q + LANES - 1u) / LANES);
    let f_raw = x * GROUPS + rg;
    let f = min(f_raw, total - 1u);
    let block = div_small(f, per_kv);
    let i = block * LANES + lane;
    let top = min(block * LANES + LANES - 1u, params.t_q - 1u);
    return Row(min(i, params.t_q - 1u), g * per_kv + (f - block * per_kv), top,
               f_raw < total && i < params.t_q);
}

// Key row group rg of workgroup x: lane l holds key (x * GROUPS + rg) * 8 + l.
fn key_row(rg: u32, x: u32, lane: u32) -> Row {
    let f = min(x * GROUPS + rg, (params.t_k + LANES - 1u) / LANES - 1u);
    let j = (x * GROUPS + rg) * LANES + lane;
    return Row(min(f * LANES + lane, params.t_k - 1u), 0u, f * LANES, rg < GROUPS && j < params.t_k);
}

fn keep_row(rg: u32, r: Row) {
    row_i[rg] = r.i;
    row_h[rg] = r.h;
    row_top[rg] = r.top;
    row_store[rg] = r.store;
    m[rg] = LOWEST;
}

// The row kept for group rg, a group number known only at run time (the loops over slot elements), by selects
// over the kept ones: recomputing it there would divide by H / H_kv per slot element (div_small's float division
// is cheaper than a CPU's u32 one, a scalar division per lane, but selects are cheaper still).
fn kept_row(rg: u32) -> Row {
    var r = Row(row_i[0], row_h[0], row_top[0], row_store[0]);
    if (GROUPS > 1u && rg == 1u) { r = Row(row_i[1], row_h[1], row_top[1], row_store[1]); }
    if (GROUPS > 2u && rg == 2u) { r = Row(row_i[2], row_h[2], row_top[2], row_store[2]); }
    if (GROUPS > 3u && rg == 3u) { r = Row(row_i[3], row_h[3], row_top[3], row_store[3]); }
    if (GROUPS > 4u && rg == 4u) { r = Row(row_i[4], row_h[4], row_top[4], row_store[4]); }
    if (GROUPS > 5u && rg == 5u) { r = Row(row_i[5], row_h[5], row_top[5], row_store[5]); }
    if (GROUPS > 6u && rg == 6u) { r = Row(row_i[6], row_h[6], row_top[6], row_store[6]); }
    if (GROUPS > 7u && rg == 7u) { r = Row(row_i[7], row_h[7], row_top[7], row_store[7]); }
    return r;
}

// Whether query i sees key j (j < T_k).
fn sees(i: u32, j: u32) -> bool {
    return params.causal == 0u || j <= i + offset();
}

// Whether query group rg sees key j at all (uniform: its last query decides).
fn query_group_live(rg: u32, j: u32) {
    live[rg] = rg < GROUPS && (params.causal == 0u || j <= row_top[rg] + offset());
}

// Whether key group rg is seen by query i at all (uniform: its first key decides).
fn key_group_live(rg: u32, i: u32) {
    live[rg] = rg < GROUPS && (params.causal == 0u || row_top[rg] <= i + offset());
}

// ------------------------------------------------------------------------------------------------ forward

// The online softmax of group rg over key j (its row spread in ka): P relative to the new running max (pa) and
// the factor rescaling the earlier terms (corr).
fn fwd_softmax(rg: u32, j: u32, ka: Spread) {
    if (!live[rg]) { return; }
    let vis = sees(row_i[rg], j);
    let s = select(LOWEST, group_dot(rg, ka), vis);
    let m_new = max(m[rg], s);
    let c = exp(m[rg] - m_new);
    pa[rg] = select(0.0, exp(s - m_new), vis);
    l[rg] = l[rg] * c + pa[rg];
    m[rg] = m_new;
    corr[rg] = c;
}

// acc[s] = acc[s] * corr + pa v_j (the value row spread in va).
fn fwd_values(s: u32, va: Spread) {
    if (s >= SLOTS || !live[s / CHUNKS]) { return; }
    let rg = s / CHUNKS;
    axpy_acc(s, corr[rg], pa[rg], va.x[s % CHUNKS]);
}

// ------------------------------------------------------------------------------------------------ dq

// Group rg's dS = P (dP - delta) for key j (its k row spread in ka, its v row in va), P recomputed from lse;
// masked keys (whose exp may overflow) are selected away, not multiplied by 0.
fn dq_ds(rg: u32, j: u32, ka: Spread, va: Spread) {
    if (!live[rg]) { return; }
    let p = exp(group_dot(rg, ka) - m[rg]);
    pa[rg] = select(0.0, p * (group_dot2(rg, va) - l[rg]), sees(row_i[rg], j));
}

fn dq_accumulate(s: u32, ka: Spread) {
    if (s >= SLOTS || !live[s / CHUNKS]) { return; }
    axpy_acc(s, 1.0, pa[s / CHUNKS], ka.x[s % CHUNKS]);
}

// ------------------------------------------------------------------------------------------------ dk, dv

// Group rg's P = exp(s - lse) (pa) and dS = P (dP - delta) (dsa) for query i (its q row spread in qa, its d_out
// row in da, its lse and delta).
fn dkv_ds(rg: u32, i: u32, qa: Spread, da: Spread, lse_i: f32, delta_i: f32) {
    if (!live[rg]) { return; }
    let p = select(0.0, exp(group_dot(rg, qa) - lse_i), sees(i, row_i[rg]));
    pa[rg] = p;
    dsa[rg] = p * (group_dot2(rg, da) - delta_i);
}

fn dkv_accumulate(s: u32, qa: Spread, da: Spread) {
    if (s >= SLOTS || !live[s / CHUNKS]) { return; }
    let rg = s / CHUNKS;
    axpy_acc2(s, pa[rg], da.x[s % CHUNKS]);
    axpy_acc(s, 1.0, dsa[rg], qa.x[s % CHUNKS]);
}

// ------------------------------------------------------------------------------------------------ loads, stores

// own = the lane's query rows * scale (forward), one slot element u = 8 s + t per loop step.
fn load_query_rows(b: u32, x: u32, g: u32, lane: u32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let r = kept_row(s / CHUNKS);
        let e = 32u * (s % CHUNKS) + 4u * (u % 8u);
        set_own_any(s, u % 8u, q4(row_base(b, r.i, params.t_q, r.h, params.heads), e) * params.scale);
    }
}

// own = the lane's query rows * scale, own2 = their d_out rows, m and l = their lse and delta (dq).
fn load_query_rows_dq(b: u32, x: u32, g: u32, lane: u32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let r = kept_row(s / CHUNKS);
        let base = row_base(b, r.i, params.t_q, r.h, params.heads);
        let e = 32u * (s % CHUNKS) + 4u * (u % 8u);
        set_own_any(s, u % 8u, q4(base, e) * params.scale);
        set_own2_any(s, u % 8u, d_out4(base, e));
    }
    for (var rg = 0u; rg < rolled(GROUPS); rg++) {
        let r = kept_row(rg);
        let stat = (b * params.heads + r.h) * params.t_q + r.i;
        set_m_any(rg, lse_saved[stat]);
        set_l_any(rg, delta_saved[stat]);
    }
}

// own = the lane's key rows * scale, own2 = their value rows (dk/dv).
fn load_key_rows(b: u32, x: u32, g: u32, lane: u32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let base = row_base(b, key_row(s / CHUNKS, x, lane).i, params.t_k, g, params.kv_heads);
        let e = 32u * (s % CHUNKS) + 4u * (u % 8u);
        set_own_any(s, u % 8u, k4(base, e) * params.scale);
        set_own2_any(s, u % 8u, v4(base, e));
    }
}

fn put_out(base: u32, e: u32, x: vec4<f32>) {
    if (e < params.d) { out[base + e] = elem(x.x); }
    if (e + 1u < params.d) { out[base + e + 1u] = elem(x.y); }
    if (e + 2u < params.d) { out[base + e + 2u] = elem(x.z); }
    if (e + 3u < params.d) { out[base + e + 3u] = elem(x.w); }
}

fn put_dq(base: u32, e: u32, x: vec4<f32>) {
    if (e < params.d) { dq[base + e] = elem(x.x); }
    if (e + 1u < params.d) { dq[base + e + 1u] = elem(x.y); }
    if (e + 2u < params.d) { dq[base + e + 2u] = elem(x.z); }
    if (e + 3u < params.d) { dq[base + e + 3u] = elem(x.w); }
}

fn put_dk(base: u32, e: u32, x: vec4<f32>) {
    if (e < params.d) { dk[base + e] = elem(x.x); }
    if (e + 1u < params.d) { dk[base + e + 1u] = elem(x.y); }
    if (e + 2u < params.d) { dk[base + e + 2u] = elem(x.z); }
    if (e + 3u < params.d) { dk[base + e + 3u] = elem(x.w); }
}

fn put_dv(base: u32, e: u32, x: vec4<f32>) {
    if (e < params.d) { dv[base + e] = elem(x.x); }
    if (e + 1u < params.d) { dv[base + e + 1u] = elem(x.y); }
    if (e + 2u < params.d) { dv[base + e + 2u] = elem(x.z); }
    if (e + 3u < params.d) { dv[base + e + 3u] = elem(x.w); }
}

fn store_out(b: u32, x: u32, g: u32, lane: u32, nan: f32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let rg = s / CHUNKS;
        let r = kept_row(rg);
        if (r.store) {
            put_out(row_base(b, r.i, params.t_q, r.h, params.heads), 32u * (s % CHUNKS) + 4u * (u % 8u),
                    acc_any(s, u % 8u) * (1.0 / l_any(rg)) + nan);
        }
    }
    for (var rg = 0u; rg < rolled(GROUPS); rg++) {
        let r = kept_row(rg);
        if (r.store) { lse[(b * params.heads + r.h) * params.t_q + r.i] = m_any(rg) + log(l_any(rg)) + nan; }
    }
}

fn store_dq(b: u32, x: u32, g: u32, lane: u32, nan: f32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let r = kept_row(s / CHUNKS);
        if (r.store) {
            put_dq(row_base(b, r.i, params.t_q, r.h, params.heads), 32u * (s % CHUNKS) + 4u * (u % 8u),
                   acc_any(s, u % 8u) * params.scale + nan);
        }
    }
}

fn store_dkv(b: u32, x: u32, g: u32, lane: u32, nan: f32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let r = key_row(s / CHUNKS, x, lane);
        if (r.store) {
            let base = row_base(b, r.i, params.t_k, g, params.kv_heads);
            let e = 32u * (s % CHUNKS) + 4u * (u % 8u);
            put_dk(base, e, acc_any(s, u % 8u) * params.scale + nan);
            put_dv(base, e, acc2_any(s, u % 8u) + nan);
        }
    }
}
