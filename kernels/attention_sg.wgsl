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
var<private> live: array<bool, MAX_SLOTS>;   // per group: whether the streamed row concerns it at all

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

// ------------------------------------------------------------------------------------------------ slots

// own[S][t] = x where s == S: one slot element chosen at run time (the loads run in a loop over all slot
// elements, and every slot element takes the loaded value or keeps its own by a select).
fn set_own(S: u32, s: u32, t: u32, x: vec4<f32>) {
    if (S >= SLOTS) { return; }
    own[S][0] = select(own[S][0], x, s == S && t == 0u);
    own[S][1] = select(own[S][1], x, s == S && t == 1u);
    own[S][2] = select(own[S][2], x, s == S && t == 2u);
    own[S][3] = select(own[S][3], x, s == S && t == 3u);
    own[S][4] = select(own[S][4], x, s == S && t == 4u);
    own[S][5] = select(own[S][5], x, s == S && t == 5u);
    own[S][6] = select(own[S][6], x, s == S && t == 6u);
    own[S][7] = select(own[S][7], x, s == S && t == 7u);
}

fn set_own2(S: u32, s: u32, t: u32, x: vec4<f32>) {
    if (S >= SLOTS) { return; }
    own2[S][0] = select(own2[S][0], x, s == S && t == 0u);
    own2[S][1] = select(own2[S][1], x, s == S && t == 1u);
    own2[S][2] = select(own2[S][2], x, s == S && t == 2u);
    own2[S][3] = select(own2[S][3], x, s == S && t == 3u);
    own2[S][4] = select(own2[S][4], x, s == S && t == 4u);
    own2[S][5] = select(own2[S][5], x, s == S && t == 5u);
    own2[S][6] = select(own2[S][6], x, s == S && t == 6u);
    own2[S][7] = select(own2[S][7], x, s == S && t == 7u);
}

fn set_own_any(s: u32, t: u32, x: vec4<f32>) {
    set_own(0u, s, t, x);
    set_own(1u, s, t, x);
    set_own(2u, s, t, x);
    set_own(3u, s, t, x);
    set_own(4u, s, t, x);
    set_own(5u, s, t, x);
    set_own(6u, s, t, x);
    set_own(7u, s, t, x);
}

fn set_own2_any(s: u32, t: u32, x: vec4<f32>) {
    set_own2(0u, s, t, x);
    set_own2(1u, s, t, x);
    set_own2(2u, s, t, x);
    set_own2(3u, s, t, x);
    set_own2(4u, s, t, x);
    set_own2(5u, s, t, x);
    set_own2(6u, s, t, x);
    set_own2(7u, s, t, x);
}

// acc[s][t] (acc2) for a slot element chosen at run time, by selects over slot S's (and `x` elsewhere).
fn pick_acc(S: u32, s: u32, t: u32, x: vec4<f32>) -> vec4<f32> {
    if (S >= SLOTS) { return x; }
    var y = x;
    y = select(y, acc[S][0], s == S && t == 0u);
    y = select(y, acc[S][1], s == S && t == 1u);
    y = select(y, acc[S][2], s == S && t == 2u);
    y = select(y, acc[S][3], s == S && t == 3u);
    y = select(y, acc[S][4], s == S && t == 4u);
    y = select(y, acc[S][5], s == S && t == 5u);
    y = select(y, acc[S][6], s == S && t == 6u);
    y = select(y, acc[S][7], s == S && t == 7u);
    return y;
}

fn pick_acc2(S: u32, s: u32, t: u32, x: vec4<f32>) -> vec4<f32> {
    if (S >= SLOTS) { return x; }
    var y = x;
    y = select(y, acc2[S][0], s == S && t == 0u);
    y = select(y, acc2[S][1], s == S && t == 1u);
    y = select(y, acc2[S][2], s == S && t == 2u);
    y = select(y, acc2[S][3], s == S && t == 3u);
    y = select(y, acc2[S][4], s == S && t == 4u);
    y = select(y, acc2[S][5], s == S && t == 5u);
    y = select(y, acc2[S][6], s == S && t == 6u);
    y = select(y, acc2[S][7], s == S && t == 7u);
    return y;
}

fn acc_any(s: u32, t: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    x = pick_acc(0u, s, t, x);
    x = pick_acc(1u, s, t, x);
    x = pick_acc(2u, s, t, x);
    x = pick_acc(3u, s, t, x);
    x = pick_acc(4u, s, t, x);
    x = pick_acc(5u, s, t, x);
    x = pick_acc(6u, s, t, x);
    x = pick_acc(7u, s, t, x);
    return x;
}

fn acc2_any(s: u32, t: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    x = pick_acc2(0u, s, t, x);
    x = pick_acc2(1u, s, t, x);
    x = pick_acc2(2u, s, t, x);
    x = pick_acc2(3u, s, t, x);
    x = pick_acc2(4u, s, t, x);
    x = pick_acc2(5u, s, t, x);
    x = pick_acc2(6u, s, t, x);
    x = pick_acc2(7u, s, t, x);
    return x;
}

// m[rg] = x (l), and m[rg] (l[rg]), for a group chosen at run time.
fn set_m_any(rg: u32, x: f32) {
    m[0] = select(m[0], x, rg == 0u);
    m[1] = select(m[1], x, rg == 1u);
    m[2] = select(m[2], x, rg == 2u);
    m[3] = select(m[3], x, rg == 3u);
    m[4] = select(m[4], x, rg == 4u);
    m[5] = select(m[5], x, rg == 5u);
    m[6] = select(m[6], x, rg == 6u);
    m[7] = select(m[7], x, rg == 7u);
}

fn set_l_any(rg: u32, x: f32) {
    l[0] = select(l[0], x, rg == 0u);
    l[1] = select(l[1], x, rg == 1u);
    l[2] = select(l[2], x, rg == 2u);
    l[3] = select(l[3], x, rg == 3u);
    l[4] = select(l[4], x, rg == 4u);
    l[5] = select(l[5], x, rg == 5u);
    l[6] = select(l[6], x, rg == 6u);
    l[7] = select(l[7], x, rg == 7u);
}

fn m_any(rg: u32) -> f32 {
    var x = m[0];
    x = select(x, m[0], rg == 0u);
    x = select(x, m[1], rg == 1u);
    x = select(x, m[2], rg == 2u);
    x = select(x, m[3], rg == 3u);
    x = select(x, m[4], rg == 4u);
    x = select(x, m[5], rg == 5u);
    x = select(x, m[6], rg == 6u);
    x = select(x, m[7], rg == 7u);
    return x;
}

fn l_any(rg: u32) -> f32 {
    var x = l[0];
    x = select(x, l[0], rg == 0u);
    x = select(x, l[1], rg == 1u);
    x = select(x, l[2], rg == 2u);
    x = select(x, l[3], rg == 3u);
    x = select(x, l[4], rg == 4u);
    x = select(x, l[5], rg == 5u);
    x = select(x, l[6], rg == 6u);
    x = select(x, l[7], rg == 7u);
    return x;
}

// sum_t own[s][t] . (lane t's x): slot s's chunk of the lane's row against a chunk spread over the lanes.
fn dot_own(s: u32, x: vec4<f32>) -> f32 {
    let a = dot(own[s][0], subgroupBroadcast(x, 0u)) + dot(own[s][1], subgroupBroadcast(x, 1u));
    let b = dot(own[s][2], subgroupBroadcast(x, 2u)) + dot(own[s][3], subgroupBroadcast(x, 3u));
    let c = dot(own[s][4], subgroupBroadcast(x, 4u)) + dot(own[s][5], subgroupBroadcast(x, 5u));
    let d = dot(own[s][6], subgroupBroadcast(x, 6u)) + dot(own[s][7], subgroupBroadcast(x, 7u));
    return (a + b) + (c + d);
}

fn dot_own2(s: u32, x: vec4<f32>) -> f32 {
    let a = dot(own2[s][0], subgroupBroadcast(x, 0u)) + dot(own2[s][1], subgroupBroadcast(x, 1u));
    let b = dot(own2[s][2], subgroupBroadcast(x, 2u)) + dot(own2[s][3], subgroupBroadcast(x, 3u));
    let c = dot(own2[s][4], subgroupBroadcast(x, 4u)) + dot(own2[s][5], subgroupBroadcast(x, 5u));
    let d = dot(own2[s][6], subgroupBroadcast(x, 6u)) + dot(own2[s][7], subgroupBroadcast(x, 7u));
    return (a + b) + (c + d);
}

// The lane's row of group rg (own; own2) . the spread row, over all chunks.
fn group_dot(rg: u32, r: Spread) -> f32 {
    let s = rg * CHUNKS;
    var t = dot_own(s, r.x[0]);
    if (CHUNKS > 1u) { t += dot_own(s + 1u, r.x[1]); }
    if (CHUNKS > 2u) { t += dot_own(s + 2u, r.x[2]); }
    if (CHUNKS > 3u) { t += dot_own(s + 3u, r.x[3]); }
    return t;
}

fn group_dot2(rg: u32, r: Spread) -> f32 {
    let s = rg * CHUNKS;
    var t = dot_own2(s, r.x[0]);
    if (CHUNKS > 1u) { t += dot_own2(s + 1u, r.x[1]); }
    if (CHUNKS > 2u) { t += dot_own2(s + 2u, r.x[2]); }
    if (CHUNKS > 3u) { t += dot_own2(s + 3u, r.x[3]); }
    return t;
}

// acc[s] = acc[s] * c + p x (acc2 += p x), x a chunk spread over the lanes.
fn axpy_acc(s: u32, c: f32, p: f32, x: vec4<f32>) {
    let cv = vec4<f32>(c);
    let pv = vec4<f32>(p);
    acc[s][0] = fma(pv, subgroupBroadcast(x, 0u), acc[s][0] * cv);
    acc[s][1] = fma(pv, subgroupBroadcast(x, 1u), acc[s][1] * cv);
    acc[s][2] = fma(pv, subgroupBroadcast(x, 2u), acc[s][2] * cv);
    acc[s][3] = fma(pv, subgroupBroadcast(x, 3u), acc[s][3] * cv);
    acc[s][4] = fma(pv, subgroupBroadcast(x, 4u), acc[s][4] * cv);
    acc[s][5] = fma(pv, subgroupBroadcast(x, 5u), acc[s][5] * cv);
    acc[s][6] = fma(pv, subgroupBroadcast(x, 6u), acc[s][6] * cv);
    acc[s][7] = fma(pv, subgroupBroadcast(x, 7u), acc[s][7] * cv);
}

fn axpy_acc2(s: u32, p: f32, x: vec4<f32>) {
    let pv = vec4<f32>(p);
    acc2[s][0] = fma(pv, subgroupBroadcast(x, 0u), acc2[s][0]);
    acc2[s][1] = fma(pv, subgroupBroadcast(x, 1u), acc2[s][1]);
    acc2[s][2] = fma(pv, subgroupBroadcast(x, 2u), acc2[s][2]);
    acc2[s][3] = fma(pv, subgroupBroadcast(x, 3u), acc2[s][3]);
    acc2[s][4] = fma(pv, subgroupBroadcast(x, 4u), acc2[s][4]);
    acc2[s][5] = fma(pv, subgroupBroadcast(x, 5u), acc2[s][5]);
    acc2[s][6] = fma(pv, subgroupBroadcast(x, 6u), acc2[s][6]);
    acc2[s][7] = fma(pv, subgroupBroadcast(x, 7u), acc2[s][7]);
}

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
    let per_kv = params.heads / params.kv_heads;
    let total = per_kv * ((params.t_q + LANES - 1u) / LANES);
    let f_raw = x * GROUPS + rg;
    let f = min(f_raw, total - 1u);
    let i = (f / per_kv) * LANES + lane;
    let top = min((f / per_kv) * LANES + LANES - 1u, params.t_q - 1u);
    return Row(min(i, params.t_q - 1u), g * per_kv + f % per_kv, top, rg < GROUPS && f_raw < total && i < params.t_q);
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
    m[rg] = LOWEST;
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
        let r = query_row(s / CHUNKS, x, g, lane);
        let e = 32u * (s % CHUNKS) + 4u * (u % 8u);
        set_own_any(s, u % 8u, q4(row_base(b, r.i, params.t_q, r.h, params.heads), e) * params.scale);
    }
}

// own = the lane's query rows * scale, own2 = their d_out rows, m and l = their lse and delta (dq).
fn load_query_rows_dq(b: u32, x: u32, g: u32, lane: u32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let r = query_row(s / CHUNKS, x, g, lane);
        let base = row_base(b, r.i, params.t_q, r.h, params.heads);
        let e = 32u * (s % CHUNKS) + 4u * (u % 8u);
        set_own_any(s, u % 8u, q4(base, e) * params.scale);
        set_own2_any(s, u % 8u, d_out4(base, e));
    }
    for (var rg = 0u; rg < rolled(GROUPS); rg++) {
        let r = query_row(rg, x, g, lane);
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
        let r = query_row(rg, x, g, lane);
        if (r.store) {
            put_out(row_base(b, r.i, params.t_q, r.h, params.heads), 32u * (s % CHUNKS) + 4u * (u % 8u),
                    acc_any(s, u % 8u) * (1.0 / l_any(rg)) + nan);
        }
    }
    for (var rg = 0u; rg < rolled(GROUPS); rg++) {
        let r = query_row(rg, x, g, lane);
        if (r.store) { lse[(b * params.heads + r.h) * params.t_q + r.i] = m_any(rg) + log(l_any(rg)) + nan; }
    }
}

fn store_dq(b: u32, x: u32, g: u32, lane: u32, nan: f32) {
    for (var u = 0u; u < rolled(SLOTS * 8u); u++) {
        let s = u / 8u;
        let r = query_row(s / CHUNKS, x, g, lane);
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
    let per_kv = params.heads / params.kv_heads;
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
    for (var step = 0u; step < per_kv * n_q; step++) {
        let h = g * per_kv + step / n_q;
        let i = i_start + step % n_q;
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
    }
    store_dkv(b, wg.x, g, lane, poison(lane, lid, size));
}

// END subgroup
