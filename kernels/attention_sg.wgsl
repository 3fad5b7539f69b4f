// Fused scaled-dot-product attention with grouped-query heads (GQA), causal or not, and its backward, scheduled
// for CPU adapters (lavapipe): the same Params, bindings, layouts and results as the training entries of
// kernels/attention.wgsl, so either family's backward accepts the other's forward.
// Layouts (contiguous, row-major): q, out, d_out, dq: (B, T_q, H, D); k, v, dk, dv: (B, T_k, H_kv, D);
// lse, delta: (B, H, T_q) in f32 whatever `elem`. Query head h reads kv head g = h / (H / H_kv).
// Scores s_ij = scale * q_i . k_j; with causal = 1 query i sees keys j <= i + (T_k - T_q) (queries aligned to the
// end of the keys; the host ensures T_q <= T_k), otherwise all keys.
//   forward:  P = softmax_j(s_ij), out_i = sum_j P_ij v_j, lse_i = log sum_j exp(s_ij)
//   backward: delta_i = dO_i . O_i,  P_ij = exp(s_ij - lse_i),  dS_ij = P_ij (dO_i . v_j - delta_i),
//             dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{h in group, i} dS_ij q_i,  dv_j = sum_{h, i} P_ij dO_i
//
// Schedule. A workgroup is one subgroup of 8 invocations ("lanes"). It owns GROUPS row groups of 8 rows, lane l
// holding row l of each: query rows (forward, dq) or key rows (dk/dv), kept in registers in chunks of 32
// elements (slot s = group * CHUNKS + chunk, GROUPS * CHUNKS <= 8 slots). The other axis streams past one row
// at a time: keys and values for forward and dq, queries and d_out for dk/dv. Each lane loads 4 elements of each
// chunk of a streamed row (elements 32c + 4 lane .. + 3), so the workgroup reads every streamed element once, no
// two lanes the same, and the row reaches all lanes by subgroupBroadcast. On lavapipe
// a storage load costs a bounds check and a branch per lane while a broadcast is one permute: this reads each
// streamed element once per 8 * GROUPS rows, where kernels/attention.wgsl reads it once per row, in every lane.
// The forward keeps an online softmax per row; dk/dv loop over the query heads of their kv group, so every
// gradient element is written by exactly one invocation (deterministic, no atomics). Math runs in f32.
// Every per-lane array is indexed by constants only (calls with literal slot and group numbers): an index
// known only at run time would move it to memory, gathered lane by lane.
//
// Requirements: the `subgroup` feature, and each workgroup of 8 invocations must be the first 8 lanes of one
// subgroup (subgroup_size >= 8 and subgroup_invocation_id = local_invocation_index), as on lavapipe (8 or 16
// lanes) and on GPUs with 32- or 64-wide subgroups; probe.wgsl's probe_subgroup_lanes checks it for the host,
// and where it does not hold these entries store NaN. D <= 32 * CHUNKS <= MAX_D; any D (elements past D are masked).
// Dispatch (8 invocations per workgroup): forward and dq (ceil(H / H_kv * ceil(T_q / 8) / GROUPS), H_kv, B);
// dk/dv (ceil(ceil(T_k / 8) / GROUPS), H_kv, B); delta (ceil(T_q / 8), H, B). In forward and dq workgroup x owns
// the flat row groups f = x * GROUPS + rg: query positions f / (H / H_kv) * 8 .. + 7 of head
// g * (H / H_kv) + f % (H / H_kv), the query heads of a kv group side by side so that they share every key row.

// use prelude

alias elem = f32;

const LANES: u32 = 8u;     // invocations per workgroup = rows per group = rows per streamed block
const MAX_D: u32 = 128u;   // the largest head dimension (4 chunks of 32)
const MAX_SLOTS: u32 = 8u;
override CHUNKS: u32 = 1u;                 // 32-element chunks of a row: ceil(D / 32)
override GROUPS: u32 = 2u;                 // row groups of 8 per workgroup
override SLOTS: u32 = GROUPS * CHUNKS;     // chunks a lane holds per row array, <= MAX_SLOTS

struct Params {
    t_q: u32,
    t_k: u32,
    heads: u32,     // H
    kv_heads: u32,  // H_kv (divides H)
    d: u32,         // head dimension D <= 32 * CHUNKS
    causal: u32,    // 1: query i sees keys j <= i + (t_k - t_q)
    scale: f32,
    t_cap: u32,     // unused here (KV-cache entries of kernels/attention.wgsl)
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

// 32 elements of a row held by one lane: [t] = elements 32c + 4t .. 32c + 4t + 3 of chunk c.
alias Chunk = array<vec4<f32>, 8>;

// One streamed row (key, value, query or d_out) spread over the lanes: x[c] = this lane's elements
// 32c + 4 lane .. + 3 of chunk c.
struct Spread {
    x: array<vec4<f32>, 4>,
}

// Per-lane registers (private variables start at zero).
var<private> own: array<Chunk, MAX_SLOTS>;   // the lane's rows by slot: q * scale (forward, dq), k * scale (dk/dv)
var<private> own2: array<Chunk, MAX_SLOTS>;  // d_out (dq), v (dk/dv)
var<private> acc: array<Chunk, MAX_SLOTS>;   // out (forward), dq, dk
var<private> acc2: array<Chunk, MAX_SLOTS>;  // dv
var<private> m: array<f32, MAX_SLOTS>;       // per group: running max (forward), lse (dq)
var<private> l: array<f32, MAX_SLOTS>;       // per group: running sum (forward), delta (dq)
var<private> corr: array<f32, MAX_SLOTS>;    // per group: the forward's rescale factor for the streamed row
var<private> pa: array<f32, MAX_SLOTS>;      // per group: P (forward, dk/dv) or dS (dq) of the streamed row
var<private> dsa: array<f32, MAX_SLOTS>;     // per group: dS (dk/dv) of the streamed row
var<private> row_i: array<u32, MAX_SLOTS>;   // per group: the lane's row (clamped to the last one)
var<private> row_h: array<u32, MAX_SLOTS>;   // per group: its query head (forward, dq)
var<private> row_top: array<u32, MAX_SLOTS>; // per group: its last query (forward, dq) or first key (dk/dv)
var<private> live: array<bool, MAX_SLOTS>;      // per group: whether the streamed row concerns it at all
var<private> row_store: array<bool, MAX_SLOTS>; // per group: whether the lane's row exists (its results are stored)

// BEGIN subgroup

fn offset() -> u32 {
    return params.t_k - params.t_q;
}

// Element offset of row `pos` of head `head` in a (B, T, n_heads, D) tensor.
fn row_base(b: u32, pos: u32, t: u32, head: u32, n_heads: u32) -> u32 {
    return ((b * t + pos) * n_heads + head) * params.d;
}

// Elements e .. e + 3 of the row at `base` as f32, 0 past D: lanes wholly past D load nothing (small D), and the
// reads past D of the lane that straddles it (which may fall in the next row or past the buffer, whose robust
// access returns some value or 0) are selected away.
fn in_row4(e: u32) -> vec4<bool> {
    return vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.d);
}

fn q4(base: u32, e: u32) -> vec4<f32> {
    if (e >= params.d) { return vec4<f32>(0.0); }
    let x = vec4<f32>(f32(q[base + e]), f32(q[base + e + 1u]), f32(q[base + e + 2u]), f32(q[base + e + 3u]));
    return select(vec4<f32>(0.0), x, in_row4(e));
}

fn k4(base: u32, e: u32) -> vec4<f32> {
    if (e >= params.d) { return vec4<f32>(0.0); }
    let x = vec4<f32>(f32(k[base + e]), f32(k[base + e + 1u]), f32(k[base + e + 2u]), f32(k[base + e + 3u]));
    return select(vec4<f32>(0.0), x, in_row4(e));
}

fn v4(base: u32, e: u32) -> vec4<f32> {
    if (e >= params.d) { return vec4<f32>(0.0); }
    let x = vec4<f32>(f32(v[base + e]), f32(v[base + e + 1u]), f32(v[base + e + 2u]), f32(v[base + e + 3u]));
    return select(vec4<f32>(0.0), x, in_row4(e));
}

fn o4(base: u32, e: u32) -> vec4<f32> {
    if (e >= params.d) { return vec4<f32>(0.0); }
    let x = vec4<f32>(f32(o_saved[base + e]), f32(o_saved[base + e + 1u]), f32(o_saved[base + e + 2u]),
                      f32(o_saved[base + e + 3u]));
    return select(vec4<f32>(0.0), x, in_row4(e));
}

fn d_out4(base: u32, e: u32) -> vec4<f32> {
    if (e >= params.d) { return vec4<f32>(0.0); }
    let x = vec4<f32>(f32(d_out[base + e]), f32(d_out[base + e + 1u]), f32(d_out[base + e + 2u]),
                      f32(d_out[base + e + 3u]));
    return select(vec4<f32>(0.0), x, in_row4(e));
}

// Row `base` of k (v, q, d_out) spread over the lanes, chunks past CHUNKS left at 0.
fn spread_k(base: u32, e: u32) -> Spread {
    var s: Spread;
    s.x[0] = k4(base, e);
    if (CHUNKS > 1u) { s.x[1] = k4(base, 32u + e); }
    if (CHUNKS > 2u) { s.x[2] = k4(base, 64u + e); }
    if (CHUNKS > 3u) { s.x[3] = k4(base, 96u + e); }
    return s;
}

fn spread_v(base: u32, e: u32) -> Spread {
    var s: Spread;
    s.x[0] = v4(base, e);
    if (CHUNKS > 1u) { s.x[1] = v4(base, 32u + e); }
    if (CHUNKS > 2u) { s.x[2] = v4(base, 64u + e); }
    if (CHUNKS > 3u) { s.x[3] = v4(base, 96u + e); }
    return s;
}

fn spread_q(base: u32, e: u32) -> Spread {
    var s: Spread;
    s.x[0] = q4(base, e);
    if (CHUNKS > 1u) { s.x[1] = q4(base, 32u + e); }
    if (CHUNKS > 2u) { s.x[2] = q4(base, 64u + e); }
    if (CHUNKS > 3u) { s.x[3] = q4(base, 96u + e); }
    return s;
}

fn spread_d_out(base: u32, e: u32) -> Spread {
    var s: Spread;
    s.x[0] = d_out4(base, e);
    if (CHUNKS > 1u) { s.x[1] = d_out4(base, 32u + e); }
    if (CHUNKS > 2u) { s.x[2] = d_out4(base, 64u + e); }
    if (CHUNKS > 3u) { s.x[3] = d_out4(base, 96u + e); }
    return s;
}

// NaN where this workgroup is not the first 8 lanes of one subgroup (see Requirements), else 0: added to every
// stored value, so that a lane mapping the exchanges cannot serve gives NaN rather than wrong numbers.
fn poison(lane: u32, lid: u32, size: u32) -> f32 {
    return bitcast<f32>(select(0u, 0x7fc00000u, size < LANES || lane != lid));
}

// n, as a trip count the compiler cannot prove constant (H >= 1), so that the loops over slot elements and
// groups that load and store stay loops: unrolled, they would repeat the per-lane load and store code for every
// slot, and compile time grows with code size times the registers live across it.
fn rolled(n: u32) -> u32 {
    return min(n, n * params.heads);
}

// The family's other files, parts included here: the per-lane register slots, then the row groups and
// the entries' steps. The entries follow.
// use attention_sg.slots
// use attention_sg.rows

// ------------------------------------------------------------------------------------------------ entries

// attention_subgroup: out and lse, an online softmax per query row.
// Bindings: 0 params (uniform), 1 q (read, elem, (B, T_q, H, D)), 2 k, 3 v (read, elem, (B, T_k, H_kv, D)),
// 4 out (read_write, elem, (B, T_q, H, D)), 5 lse (read_write, f32, (B, H, T_q)).
// Grid (ceil(H / H_kv * ceil(T_q / 8) / GROUPS), H_kv, B); lane l of row group rg holds one query row
// (query_row): q * scale and its output accumulator. One key per step, up to the workgroup's last visible
// key: its k and v rows spread over the lanes, scores by broadcast dot products, the softmax update, the value
// accumulated by broadcast multiply-adds.
@compute @workgroup_size(8)
fn attention_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                      @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) size: u32) {
    let b = wg.z;
    let g = wg.y;
    keep_row(0u, query_row(0u, wg.x, g, lane));
    keep_row(1u, query_row(1u, wg.x, g, lane));
    keep_row(2u, query_row(2u, wg.x, g, lane));
    keep_row(3u, query_row(3u, wg.x, g, lane));
    keep_row(4u, query_row(4u, wg.x, g, lane));
    keep_row(5u, query_row(5u, wg.x, g, lane));
    keep_row(6u, query_row(6u, wg.x, g, lane));
    keep_row(7u, query_row(7u, wg.x, g, lane));
    load_query_rows(b, wg.x, g, lane);
    let last = row_top[min(GROUPS, MAX_SLOTS) - 1u];  // the workgroup's last query
    let j_end = select(params.t_k, min(params.t_k, last + offset() + 1u), params.causal != 0u);
    let e = 4u * lane;
    for (var j = 0u; j < j_end; j++) {
        let ka = spread_k(row_base(b, j, params.t_k, g, params.kv_heads), e);
        let va = spread_v(row_base(b, j, params.t_k, g, params.kv_heads), e);
        query_group_live(0u, j);
        query_group_live(1u, j);
        query_group_live(2u, j);
        query_group_live(3u, j);
        query_group_live(4u, j);
        query_group_live(5u, j);
        query_group_live(6u, j);
        query_group_live(7u, j);
        fwd_softmax(0u, j, ka);
        fwd_softmax(1u, j, ka);
        fwd_softmax(2u, j, ka);
        fwd_softmax(3u, j, ka);
        fwd_softmax(4u, j, ka);
        fwd_softmax(5u, j, ka);
        fwd_softmax(6u, j, ka);
        fwd_softmax(7u, j, ka);
        fwd_values(0u, va);
        fwd_values(1u, va);
        fwd_values(2u, va);
        fwd_values(3u, va);
        fwd_values(4u, va);
        fwd_values(5u, va);
        fwd_values(6u, va);
        fwd_values(7u, va);
    }
    store_out(b, wg.x, g, lane, poison(lane, lid, size));
}

// attention_backward_delta_subgroup: delta_i = sum_d dO[i, d] * O[i, d], one query row per lane.
// Bindings: 0 params (uniform), 6 o_saved (read, elem, (B, T_q, H, D)), 7 d_out (read, elem, (B, T_q, H, D)),
// 8 delta (read_write, f32, (B, H, T_q)). Grid (ceil(T_q / 8), H, B): lane l is query wg.x * 8 + l of head
// wg.y, batch wg.z.
@compute @workgroup_size(8)
fn attention_backward_delta_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                                     @builtin(subgroup_invocation_id) lane: u32,
                                     @builtin(subgroup_size) size: u32) {
    let i = wg.x * LANES + lid;
    if (i >= params.t_q) { return; }
    let base = row_base(wg.z, i, params.t_q, wg.y, params.heads);
    var sum = vec4<f32>(0.0);
    for (var e = 0u; e < params.d; e += 4u) {
        sum += d_out4(base, e) * o4(base, e);
    }
    delta[(wg.z * params.heads + wg.y) * params.t_q + i] = (sum.x + sum.y) + (sum.z + sum.w) + poison(lane, lid, size);
}

// attention_backward_dq_subgroup: dq_i = scale * sum_j P_ij (dO_i . v_j - delta_i) k_j over the keys query i
// sees, P recomputed from lse. Bindings: 0 params (uniform), 1 q, 2 k, 3 v (read, elem, as attention_subgroup),
// 7 d_out (read, elem, (B, T_q, H, D)), 9 lse_saved, 10 delta_saved (read, f32, (B, H, T_q)), 11 dq (read_write,
// elem, (B, T_q, H, D)). Grid as attention_subgroup; lane l of group rg holds a query row: q * scale, dO, lse,
// delta and dq. One key per step, its k and v rows spread over the lanes.
@compute @workgroup_size(8)
fn attention_backward_dq_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                                  @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) size: u32) {
    let b = wg.z;
    let g = wg.y;
    keep_row(0u, query_row(0u, wg.x, g, lane));
    keep_row(1u, query_row(1u, wg.x, g, lane));
    keep_row(2u, query_row(2u, wg.x, g, lane));
    keep_row(3u, query_row(3u, wg.x, g, lane));
    keep_row(4u, query_row(4u, wg.x, g, lane));
    keep_row(5u, query_row(5u, wg.x, g, lane));
    keep_row(6u, query_row(6u, wg.x, g, lane));
    keep_row(7u, query_row(7u, wg.x, g, lane));
    load_query_rows_dq(b, wg.x, g, lane);
    let last = row_top[min(GROUPS, MAX_SLOTS) - 1u];
    let j_end = select(params.t_k, min(params.t_k, last + offset() + 1u), params.causal != 0u);
    let e = 4u * lane;
    for (var j = 0u; j < j_end; j++) {
        let ka = spread_k(row_base(b, j, params.t_k, g, params.kv_heads), e);
        let va = spread_v(row_base(b, j, params.t_k, g, params.kv_heads), e);
        query_group_live(0u, j);
        query_group_live(1u, j);
        query_group_live(2u, j);
        query_group_live(3u, j);
        query_group_live(4u, j);
        query_group_live(5u, j);
        query_group_live(6u, j);
        query_group_live(7u, j);
        dq_ds(0u, j, ka, va);
        dq_ds(1u, j, ka, va);
        dq_ds(2u, j, ka, va);
        dq_ds(3u, j, ka, va);
        dq_ds(4u, j, ka, va);
        dq_ds(5u, j, ka, va);
        dq_ds(6u, j, ka, va);
        dq_ds(7u, j, ka, va);
        dq_accumulate(0u, ka);
        dq_accumulate(1u, ka);
        dq_accumulate(2u, ka);
        dq_accumulate(3u, ka);
        dq_accumulate(4u, ka);
        dq_accumulate(5u, ka);
        dq_accumulate(6u, ka);
        dq_accumulate(7u, ka);
    }
    store_dq(b, wg.x, g, lane, poison(lane, lid, size));
}

// attention_backward_dkv_subgroup: for key j of kv head g, over the query heads h of its group and the queries i
// that see j: dv_j = sum P_ij dO_i, dk_j = scale * sum P_ij (dO_i . v_j - delta_i) q_i, P recomputed from lse.
// Bindings: 0 params (uniform), 1 q, 2 k, 3 v (read, elem, as attention_subgroup), 7 d_out (read, elem,
// (B, T_q, H, D)), 9 lse_saved, 10 delta_saved (read, f32, (B, H, T_q)), 12 dk, 13 dv (read_write, elem,
// (B, T_k, H_kv, D)). Grid (ceil(ceil(T_k / 8) / GROUPS), H_kv, B); lane l of group rg holds key
// (wg.x * GROUPS + rg) * 8 + l: k * scale, v, dk and dv. One query per step, each query head of the group in
// turn, from the first query that sees the workgroup's first key: its q and d_out rows spread over the lanes.
@compute @workgroup_size(8)
fn attention_backward_dkv_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                                   @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) size: u32) {
    let b = wg.z;
    let g = wg.y;
    let per_kv = div_small(params.heads, params.kv_heads);
    keep_row(0u, key_row(0u, wg.x, lane));
    keep_row(1u, key_row(1u, wg.x, lane));
    keep_row(2u, key_row(2u, wg.x, lane));
    keep_row(3u, key_row(3u, wg.x, lane));
    keep_row(4u, key_row(4u, wg.x, lane));
    keep_row(5u, key_row(5u, wg.x, lane));
    keep_row(6u, key_row(6u, wg.x, lane));
    keep_row(7u, key_row(7u, wg.x, lane));
    load_key_rows(b, wg.x, g, lane);
    let first = row_top[0];
    let i_start = select(0u, first - min(first, offset()), params.causal != 0u);
    let n_q = params.t_q - i_start;  // queries per head
    let e = 4u * lane;
    // step = (h - g * per_kv) * n_q + (i - i_start), h and i carried rather than divided out of step
    var h = g * per_kv;
    var i = i_start;
    for (var step = 0u; step < per_kv * n_q; step++) {
        let qa = spread_q(row_base(b, i, params.t_q, h, params.heads), e);
        let da = spread_d_out(row_base(b, i, params.t_q, h, params.heads), e);
        let stat = (b * params.heads + h) * params.t_q + i;
        let lse_i = lse_saved[stat];
        let delta_i = delta_saved[stat];
        key_group_live(0u, i);
        key_group_live(1u, i);
        key_group_live(2u, i);
        key_group_live(3u, i);
        key_group_live(4u, i);
        key_group_live(5u, i);
        key_group_live(6u, i);
        key_group_live(7u, i);
        dkv_ds(0u, i, qa, da, lse_i, delta_i);
        dkv_ds(1u, i, qa, da, lse_i, delta_i);
        dkv_ds(2u, i, qa, da, lse_i, delta_i);
        dkv_ds(3u, i, qa, da, lse_i, delta_i);
        dkv_ds(4u, i, qa, da, lse_i, delta_i);
        dkv_ds(5u, i, qa, da, lse_i, delta_i);
        dkv_ds(6u, i, qa, da, lse_i, delta_i);
        dkv_ds(7u, i, qa, da, lse_i, delta_i);
        dkv_accumulate(0u, qa, da);
        dkv_accumulate(1u, qa, da);
        dkv_accumulate(2u, qa, da);
        dkv_accumulate(3u, qa, da);
        dkv_accumulate(4u, qa, da);
        dkv_accumulate(5u, qa, da);
        dkv_accumulate(6u, qa, da);
        dkv_accumulate(7u, qa, da);
        let wrap = i + 1u == params.t_q;  // the next head's first query
        i = select(i + 1u, i_start, wrap);
        h = select(h, h + 1u, wrap);
    }
    store_dkv(b, wg.x, g, lane, poison(lane, lid, size));
}

// END subgroup
