// KV-cache attention for generation (no gradient): causal scaled-dot-product attention of new queries over a
// cache, with grouped-query heads (GQA); the forward of kernels/attention.wgsl, whose Params struct it shares (one
// host dict fills both), over a cache instead of whole sequences.
// Layouts (contiguous, row-major): q, out: (B, T_q, H, D); k, v: a cache (B, T_cap, H_kv, D) whose rows
// 0 .. T_k - 1 are valid; starts: (B,) u32. Query head h reads kv head g = h / (H / H_kv).
// Batch row b's keys begin at starts[b] (left padding before it is never seen), and the T_q queries are the last
// T_q of T_k positions: query i sees keys j with starts[b] <= j <= i + (T_k - T_q);
//   out_i = softmax_j(scale q_i . k_j) v_j over those keys, and out_i = 0 for a query that sees none.
// Entries: attention_cached (prefill: T_q queries per row), attention_decode (one query per row: a decode step's
// spec) and, at the end and needing subgroups, attention_decode_subgroup (attention_decode's faster variant).
// The serial entries stream over the keys with an online softmax, a row per invocation held in private arrays of
// MAX_D floats (kernels/attention.wgsl's MAX_D, the bound engine/ops/attention.py checks D against).
// Math runs in f32 whatever the storage type `elem`.

// use prelude

alias elem = f32;

const WG: u32 = 16u;     // invocations per workgroup of the serial entries
const KB: u32 = 8u;      // keys per inner step: two vec4s of scores, so each private-array load of a row element
                         // feeds 8 FMAs (about 2x faster than one key at a time on lavapipe)
const MAX_D: u32 = 128u; // the largest head dimension (as kernels/attention.wgsl)

struct Params {
    t_q: u32,
    t_k: u32,       // valid cache rows
    heads: u32,     // H
    kv_heads: u32,  // H_kv (divides H)
    d: u32,         // head dimension D <= MAX_D
    causal: u32,    // unused: every entry here is causal
    scale: f32,
    t_cap: u32,     // rows per batch of the k/v cache (keys 0 .. t_k - 1 of them are valid)
    batch: u32,     // attention_decode only: B
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: q_quads, k_quads, v_quads
@group(0) @binding(1) var<storage, read> q: array<elem>;
@group(0) @binding(2) var<storage, read> k: array<elem>;
@group(0) @binding(3) var<storage, read> v: array<elem>;
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
@group(0) @binding(5) var<storage, read> starts: array<u32>;

// The causal offset T_k - T_q: query i sees keys j <= i + offset().
fn offset() -> u32 {
    return params.t_k - params.t_q;
}

// Element offset of row `pos` of head `head` in a (B, T, n_heads, D) tensor.
fn row_base(b: u32, pos: u32, t: u32, head: u32, n_heads: u32) -> u32 {
    return ((b * t + pos) * n_heads + head) * params.d;
}

// Element d of four cache rows (offsets `base`) of k or v, as f32.
fn k4(base: vec4<u32>, d: u32) -> vec4<f32> {
    return vec4<f32>(f32(k[base.x + d]), f32(k[base.y + d]), f32(k[base.z + d]), f32(k[base.w + d]));
}

fn v4(base: vec4<u32>, d: u32) -> vec4<f32> {
    return vec4<f32>(f32(v[base.x + d]), f32(v[base.y + d]), f32(v[base.z + d]), f32(v[base.w + d]));
}

// ---------------------------------------------------------------------------------------------- serial

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
// 4 out (read_write, elem, (B, T_q, H, D)), 5 starts (read, u32, B).
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
// host checks with probe's probe_subgroup_lanes), D a multiple of 4 and at most 32 * DECODE_CHUNKS,
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
