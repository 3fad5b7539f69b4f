// Token sampling for generation: one workgroup per batch row picks the next token from its logits row, on the
// GPU, so only token ids ever travel to the host. sample_row is the spec; sample_row_subgroup (at the end) gives
// its bits with one subgroup per row, for CPU adapters.
// For row b with logits z (V values) and x = z * inv_temp (inv_temp = 1 / temperature; 1 when greedy):
//   lse = log sum_i exp(x_i)                      (over the whole vocabulary, unfiltered)
//   greedy (temperature 0): token = argmax_i z_i (the lowest index among equal maxima)
//   otherwise the kept set is filtered as Hugging Face's warpers do, top-k first, then top-p:
//     top-k (0 < k < V): keep x_i >= the k-th largest x (ties at the threshold are kept, as in HF);
//     top-p (p < 1): among those, keep x_i >= t for the largest threshold t whose kept mass
//       sum_{x_j >= t} exp(x_j - max) is >= p times the mass of the top-k set (the smallest top set holding p);
//     token = argmax over kept i of x_i + g_i with Gumbel noise g_i = -log(-log(u_i)) (the Gumbel-max trick:
//       an exact sample of softmax(x) restricted to the kept set), u_i = (hash(i, seq, step, seed) >> 9 + 0.5) / 2^23
//       from the counter-based hash pcg4d, so a (seed, sequence, step) triple always draws the same token however
//       many steps a submit holds and whichever row the sequence occupies. seq = seq_ids[b] + seq_offset (mod
//       2^32): outputs are written at column seq_ids[b], so a batch sampled in parts keys each sequence by its
//       global index while each part's outputs stay only as wide as the part.
//   logprob = x_token - lse: the log-prob under softmax(z / temperature) (under softmax(z) when greedy), as GRPO's
//   old-policy log-probs; the top-k/top-p filter does not renormalize it.
// Thresholds are found by bisection over the 32-bit order-preserving key of x (exact, 32 passes over the row per
// filter), never by sorting. A row whose finished flag is set emits pad_id with logprob 0; a row that samples one
// of the eos_ids sets its flag.
// Math runs in f32 whatever the storage type `elem` of the logits.

// use prelude

alias elem = f32;

const WG: u32 = 64u;  // invocations per workgroup = per row (sample_row_subgroup's lanes mirror these 64)

struct Params {
    rows: u32,      // B, rows of logits
    vocab: u32,     // V
    step: u32,      // index of the token being sampled (the RNG counter)
    n_seq: u32,     // S, columns of the tokens/logprobs outputs
    seed_lo: u32,   // seed bits 0..31
    seed_hi: u32,   // seed bits 32..63
    inv_temp: f32,  // 1 / temperature (1 when greedy)
    greedy: u32,    // 1: argmax
    top_k: u32,     // 0 or >= V: no top-k filter
    top_p: f32,     // in (0, 1]; 1: no top-p filter
    pad_id: u32,    // what finished rows emit
    n_eos: u32,     // entries of eos_ids that count
    out_row: u32,   // the row of tokens/logprobs written (the step, in a decode loop)
    seq_offset: u32,  // added to seq_ids[b] to key the RNG (not to pick the output column)
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: logits4
@group(0) @binding(1) var<storage, read> logits: array<elem>;
@group(0) @binding(2) var<storage, read> seq_ids: array<u32>;
@group(0) @binding(3) var<storage, read> eos_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> finished: array<u32>;
@group(0) @binding(5) var<storage, read_write> next_ids: array<u32>;
@group(0) @binding(6) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(7) var<storage, read_write> logprobs: array<f32>;

var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;
var<workgroup> shared_u: u32;
var<workgroup> shared_f: f32;

// pcg4d: the counter-based hash, in the prelude

// Gumbel noise for vocabulary entry i of sequence seq (the global index) at step `step`.
fn gumbel(i: u32, seq: u32, step: u32) -> f32 {
    let h = pcg4d(vec4<u32>(i, seq, step, params.seed_lo ^ (params.seed_hi * 0x9E3779B9u))).x;
    // 23 bits, so that k + 0.5 is exact in f32 and u stays inside (0, 1): with 24, the largest k rounded to
    // u = 1, whose noise is +inf (that token won whatever its logit, once in 2^24 draws)
    let u = (f32(h >> 9u) + 0.5) * (1.0 / 8388608.0);
    // -log(u) >= 2^-24 exactly; WGSL's log may err by 2^-21 near 1, so the floor keeps the noise finite anywhere
    return -log(max(-log(u), 5.9604645e-8));
}

// An order-preserving map of f32 to u32: a < b (as floats) exactly when key(a) < key(b).
fn key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Workgroup reductions; the result is uniform (read back with workgroupUniformLoad) so that loops and branches
// on it may hold barriers.
fn reduce_max(lid: u32, x: f32) -> f32 {
    red_f[lid] = x;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) { red_f[lid] = max(red_f[lid], red_f[lid + s]); }
    }
    workgroupBarrier();
    if (lid == 0u) { shared_f = red_f[0]; }
    return workgroupUniformLoad(&shared_f);
}

fn reduce_sum(lid: u32, x: f32) -> f32 {
    red_f[lid] = x;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) { red_f[lid] += red_f[lid + s]; }
    }
    workgroupBarrier();
    if (lid == 0u) { shared_f = red_f[0]; }
    return workgroupUniformLoad(&shared_f);
}

fn reduce_count(lid: u32, x: u32) -> u32 {
    red_u[lid] = x;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) { red_u[lid] += red_u[lid + s]; }
    }
    workgroupBarrier();
    if (lid == 0u) { shared_u = red_u[0]; }
    return workgroupUniformLoad(&shared_u);
}

// The index of the largest value (the lowest index among equals).
fn reduce_argmax(lid: u32, x: f32, index: u32) -> u32 {
    red_f[lid] = x;
    red_u[lid] = index;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            let o = lid + s;
            if (red_f[o] > red_f[lid] || (red_f[o] == red_f[lid] && red_u[o] < red_u[lid])) {
                red_f[lid] = red_f[o];
                red_u[lid] = red_u[o];
            }
        }
    }
    workgroupBarrier();
    if (lid == 0u) { shared_u = red_u[0]; }
    return workgroupUniformLoad(&shared_u);
}

fn scaled(base: u32, i: u32) -> f32 {
    return f32(logits[base + i]) * params.inv_temp;
}

// How many x_i of the row have key(x_i) >= t.
fn count_at_least(lid: u32, base: u32, t: u32) -> u32 {
    var n = 0u;
    for (var i = lid; i < params.vocab; i += WG) {
        n += select(0u, 1u, key(scaled(base, i)) >= t);
    }
    return reduce_count(lid, n);
}

// sum of exp(x_i - m) over the x_i with key(x_i) >= t.
fn mass_at_least(lid: u32, base: u32, t: u32, m: f32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < params.vocab; i += WG) {
        let x = scaled(base, i);
        s += select(0.0, exp(x - m), key(x) >= t);
    }
    return reduce_sum(lid, s);
}

// sample_row: the next token of each row (see the top of the file).
// Bindings: 0 params (uniform), 1 logits (read, elem, (B, V)), 2 seq_ids (read, u32, B: the sequence each row
// holds: its output column, and its RNG key after adding seq_offset), 3 eos_ids (read, u32, >= 1 entries, n_eos
// used), 4 finished (read_write, u32, B), 5 next_ids (read_write, i32, B: the sampled token, the next step's input),
// 6 tokens (read_write, i32, (rows, S)) and 7 logprobs (read_write, f32, (rows, S)), written at
// [out_row, seq_ids[b]].
// Dispatch: one workgroup of WG per row, 2-D grid (x = min(B, 65535), y = ceil(B / x)); row = wg.y * nwg.x + wg.x.
@compute @workgroup_size(WG)
fn sample_row(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wg, nwg);
    if (row >= params.rows) { return; }
    let base = row * params.vocab;
    if (lid == 0u) { shared_u = finished[row]; }
    let done = workgroupUniformLoad(&shared_u);
    let column = seq_ids[row];
    let seq = column + params.seq_offset;
    let out_index = params.out_row * params.n_seq + column;
    if (done != 0u) {
        if (lid == 0u) {
            next_ids[row] = params.pad_id;
            tokens[out_index] = params.pad_id;
            logprobs[out_index] = 0.0;
        }
        return;
    }
    workgroupBarrier();  // shared_u is reused by the reductions

    var local_max = LOWEST;
    for (var i = lid; i < params.vocab; i += WG) {
        local_max = max(local_max, scaled(base, i));
    }
    let m = reduce_max(lid, local_max);
    var local_sum = 0.0;
    for (var i = lid; i < params.vocab; i += WG) {
        local_sum += exp(scaled(base, i) - m);
    }
    let lse = m + log(reduce_sum(lid, local_sum));

    var token = 0u;
    if (params.greedy != 0u) {
        var best = LOWEST;
        var best_i = 0u;
        for (var i = lid; i < params.vocab; i += WG) {
            let z = f32(logits[base + i]);
            if (z > best) { best = z; best_i = i; }
        }
        token = reduce_argmax(lid, best, best_i);
    } else {
        var threshold = 0u;  // keep key(x) >= threshold
        if (params.top_k > 0u && params.top_k < params.vocab) {
            // the largest t with count(key >= t) >= k: the k-th largest key
            var lo = 0u;
            var hi = key(m);
            loop {
                if (lo >= hi) { break; }
                let mid = lo + (hi - lo) / 2u + ((hi - lo) & 1u);
                if (count_at_least(lid, base, mid) >= params.top_k) { lo = mid; } else { hi = mid - 1u; }
            }
            threshold = lo;
        }
        if (params.top_p < 1.0) {
            let wanted = params.top_p * mass_at_least(lid, base, threshold, m);
            var lo = threshold;
            var hi = key(m);
            loop {
                if (lo >= hi) { break; }
                let mid = lo + (hi - lo) / 2u + ((hi - lo) & 1u);
                if (mass_at_least(lid, base, mid, m) >= wanted) { lo = mid; } else { hi = mid - 1u; }
            }
            threshold = lo;
        }
        var best = LOWEST;
        var best_i = 0u;
        for (var i = lid; i < params.vocab; i += WG) {
            let x = scaled(base, i);
            if (key(x) >= threshold) {
                let g = x + gumbel(i, seq, params.step);
                if (g > best) { best = g; best_i = i; }
            }
        }
        token = reduce_argmax(lid, best, best_i);
    }
    if (lid != 0u) { return; }
    var eos = 0u;
    for (var e = 0u; e < params.n_eos; e++) {
        eos = eos | select(0u, 1u, eos_ids[e] == token);
    }
    finished[row] = eos;
    next_ids[row] = token;
    tokens[out_index] = token;
    logprobs[out_index] = scaled(base, token) - lse;
}

// BEGIN subgroup

// ---- sample_row_subgroup: sample_row for CPU adapters (lavapipe), one subgroup of 8 lanes per row, no barriers.
// Each lane stands for 8 of sample_row's 64 invocations ("virtual lids") and reproduces their arithmetic exactly:
// lane l holds virtual lids 4l .. 4l + 3 as one vec4 (A) and 32 + 4l .. 32 + 4l + 3 as another (B), so that in
// each 64-element chunk k of the row it reads the row quads 16k + l and 16k + 8 + l (neighbouring lanes,
// neighbouring quads). Each component folds its elements in sample_row's order (increasing k) with sample_row's
// per-element expressions, and sample_row's tree (strides 32, 16, ..., 1 over the 64 partials) becomes A op B,
// subgroupShuffleDown by 4, 2, 1 lanes, then lane 0's components: every sum, count, maximum and argmax has
// sample_row's association and operand order, so the token, the log-prob and the finished flag are the same
// bits. Masked elements (past V) leave a partial unchanged. A row starting off a quad boundary (V % 4 != 0)
// reads each row quad from two aligned quads of the buffer. On lavapipe this saves the 7 workgroup barriers of
// each reduction (3 per row without filters, one per bisection step) and reads 4 elements per load instruction.
// Requirements: each workgroup of 8 invocations is the first 8 lanes of one subgroup (subgroup_size >= 8 and
// subgroup_invocation_id = local_invocation_index); probe.wgsl's probe_subgroup_lanes checks it for the host.
// Bindings: as sample_row, with logits read as 1 logits4 (read, vec4<elem>, ceil(B * V / 4)).
// Dispatch: one workgroup of LANES per row, the grid of sample_row.

const LANES: u32 = 8u;  // invocations per workgroup of sample_row_subgroup: 64 / LANES = 8 virtual lids each

@group(0) @binding(1) var<storage, read> logits4: array<vec4<elem>>;

// Row elements 4q .. 4q + 3 of the row starting at element `base` of logits (unscaled), from one aligned buffer
// quad, or two when base is not a multiple of 4 (the same for the whole row, so the branch is uniform).
fn row_quad(base: u32, q: u32) -> vec4<f32> {
    let e = base + 4u * q;
    let a = vec4<f32>(logits4[e >> 2u]);
    let shift = e & 3u;
    if (shift == 0u) { return a; }
    let b = vec4<f32>(logits4[min((e >> 2u) + 1u, arrayLength(&logits4) - 1u)]);
    if (shift == 1u) { return vec4<f32>(a.yzw, b.x); }
    if (shift == 2u) { return vec4<f32>(a.zw, b.xy); }
    return vec4<f32>(a.w, b.xyz);
}

// Which components of row quad q are row elements (< V).
fn in_row(q: u32) -> vec4<bool> {
    return (vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(params.vocab);
}

fn key4(x: vec4<f32>) -> vec4<u32> {
    return vec4<u32>(key(x.x), key(x.y), key(x.z), key(x.w));
}

// The chunks of 64 elements of a row.
fn row_chunks() -> u32 {
    return (params.vocab + 63u) / 64u;
}

// sample_row's tree over the 64 partials (a, b) of the lanes: strides 32 (a with b), 16, 8, 4 (lanes d = 4, 2, 1
// apart), 2 and 1 (lane 0's components); the result is lane 0's, broadcast.
fn tree_sum(a: vec4<f32>, b: vec4<f32>) -> f32 {
    var v = a + b;
    for (var d = 4u; d > 0u; d >>= 1u) { v += subgroupShuffleDown(v, d); }
    v += v.zwzw;
    v += v.yyyy;
    return subgroupBroadcast(v.x, 0u);
}

fn tree_count(a: vec4<u32>, b: vec4<u32>) -> u32 {
    var v = a + b;
    for (var d = 4u; d > 0u; d >>= 1u) { v += subgroupShuffleDown(v, d); }
    v += v.zwzw;
    v += v.yyyy;
    return subgroupBroadcast(v.x, 0u);
}

fn tree_max(a: vec4<f32>, b: vec4<f32>) -> f32 {
    var v = max(a, b);
    for (var d = 4u; d > 0u; d >>= 1u) { v = max(v, subgroupShuffleDown(v, d)); }
    v = max(v, v.zwzw);
    v = max(v, v.yyyy);
    return subgroupBroadcast(v.x, 0u);
}

// Partials of sample_row's argmax: the best value of each virtual lid and its index.
struct Best {
    value: vec4<f32>,
    index: vec4<u32>,
}

// sample_row's argmax step: o takes p where p is larger, or equal with a lower index.
fn take_better(o: Best, p: Best) -> Best {
    let better = (p.value > o.value) | ((p.value == o.value) & (p.index < o.index));
    return Best(select(o.value, p.value, better), select(o.index, p.index, better));
}

fn tree_argmax(a: Best, b: Best) -> u32 {
    var v = take_better(a, b);
    for (var d = 4u; d > 0u; d >>= 1u) {
        v = take_better(v, Best(subgroupShuffleDown(v.value, d), subgroupShuffleDown(v.index, d)));
    }
    v = take_better(v, Best(v.value.zwzw, v.index.zwzw));
    v = take_better(v, Best(v.value.yyyy, v.index.yyyy));
    return subgroupBroadcast(v.index.x, 0u);
}

// count_at_least over the lanes: how many x_i of the row have key(x_i) >= t.
fn count_at_least4(lane: u32, base: u32, t: u32) -> u32 {
    var a = vec4<u32>(0u);
    var b = vec4<u32>(0u);
    for (var k = 0u; k < row_chunks(); k++) {
        let qa = 16u * k + lane;
        let qb = qa + 8u;
        let xa = row_quad(base, qa) * params.inv_temp;
        let xb = row_quad(base, qb) * params.inv_temp;
        a += select(vec4<u32>(0u), vec4<u32>(1u), in_row(qa) & (key4(xa) >= vec4<u32>(t)));
        b += select(vec4<u32>(0u), vec4<u32>(1u), in_row(qb) & (key4(xb) >= vec4<u32>(t)));
    }
    return tree_count(a, b);
}

// mass_at_least over the lanes: sum of exp(x_i - m) over the x_i with key(x_i) >= t.
fn mass_at_least4(lane: u32, base: u32, t: u32, m: f32) -> f32 {
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    for (var k = 0u; k < row_chunks(); k++) {
        let qa = 16u * k + lane;
        let qb = qa + 8u;
        let xa = row_quad(base, qa) * params.inv_temp;
        let xb = row_quad(base, qb) * params.inv_temp;
        a = select(a, a + select(vec4<f32>(0.0), exp(xa - m), key4(xa) >= vec4<u32>(t)), in_row(qa));
        b = select(b, b + select(vec4<f32>(0.0), exp(xb - m), key4(xb) >= vec4<u32>(t)), in_row(qb));
    }
    return tree_sum(a, b);
}

// The Gumbel-max step of sample_row for row quad q: each kept element i = 4q + c competes with x_i + g_i.
fn gumbel_quad(best: Best, q: u32, x: vec4<f32>, threshold: u32, seq: u32) -> Best {
    var out = best;
    let live = in_row(q) & (key4(x) >= vec4<u32>(threshold));
    for (var c = 0u; c < 4u; c++) {
        if (live[c]) {
            let i = 4u * q + c;
            let g = x[c] + gumbel(i, seq, params.step);
            if (g > out.value[c]) { out.value[c] = g; out.index[c] = i; }
        }
    }
    return out;
}

// sample_row_subgroup: sample_row's result, bit for bit (see above).
// Bindings: 0 params (uniform), 1 logits4 (read, vec4<elem>), 2 seq_ids, 3 eos_ids, 4 finished, 5 next_ids,
// 6 tokens, 7 logprobs as sample_row.
// Dispatch: one workgroup of LANES per row, 2-D grid (x = min(B, 65535), y = ceil(B / x)); row = wg.y * nwg.x + wg.x.
@compute @workgroup_size(LANES)
fn sample_row_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(subgroup_invocation_id) lane: u32) {
    let row = workgroup_index(wg, nwg);
    if (row >= params.rows) { return; }
    let base = row * params.vocab;
    let column = seq_ids[row];
    let seq = column + params.seq_offset;
    let out_index = params.out_row * params.n_seq + column;
    if (finished[row] != 0u) {
        if (lane == 0u) {
            next_ids[row] = params.pad_id;
            tokens[out_index] = params.pad_id;
            logprobs[out_index] = 0.0;
        }
        return;
    }
    let chunks = row_chunks();
    let lowest = vec4<f32>(LOWEST);

    var max_a = lowest;
    var max_b = lowest;
    for (var k = 0u; k < chunks; k++) {
        let qa = 16u * k + lane;
        let qb = qa + 8u;
        max_a = select(max_a, max(max_a, row_quad(base, qa) * params.inv_temp), in_row(qa));
        max_b = select(max_b, max(max_b, row_quad(base, qb) * params.inv_temp), in_row(qb));
    }
    let m = tree_max(max_a, max_b);
    var sum_a = vec4<f32>(0.0);
    var sum_b = vec4<f32>(0.0);
    for (var k = 0u; k < chunks; k++) {
        let qa = 16u * k + lane;
        let qb = qa + 8u;
        sum_a = select(sum_a, sum_a + exp(row_quad(base, qa) * params.inv_temp - m), in_row(qa));
        sum_b = select(sum_b, sum_b + exp(row_quad(base, qb) * params.inv_temp - m), in_row(qb));
    }
    let lse = m + log(tree_sum(sum_a, sum_b));

    var token = 0u;
    var best_a = Best(lowest, vec4<u32>(0u));
    var best_b = Best(lowest, vec4<u32>(0u));
    if (params.greedy != 0u) {
        for (var k = 0u; k < chunks; k++) {
            let qa = 16u * k + lane;
            let qb = qa + 8u;
            let za = row_quad(base, qa);
            let zb = row_quad(base, qb);
            let ia = vec4<u32>(4u * qa) + vec4<u32>(0u, 1u, 2u, 3u);
            let ib = vec4<u32>(4u * qb) + vec4<u32>(0u, 1u, 2u, 3u);
            let take_a = in_row(qa) & (za > best_a.value);
            let take_b = in_row(qb) & (zb > best_b.value);
            best_a = Best(select(best_a.value, za, take_a), select(best_a.index, ia, take_a));
            best_b = Best(select(best_b.value, zb, take_b), select(best_b.index, ib, take_b));
        }
        token = tree_argmax(best_a, best_b);
    } else {
        var threshold = 0u;  // keep key(x) >= threshold
        if (params.top_k > 0u && params.top_k < params.vocab) {
            var lo = 0u;
            var hi = key(m);
            loop {
                if (lo >= hi) { break; }
                let mid = lo + (hi - lo) / 2u + ((hi - lo) & 1u);
                if (count_at_least4(lane, base, mid) >= params.top_k) { lo = mid; } else { hi = mid - 1u; }
            }
            threshold = lo;
        }
        if (params.top_p < 1.0) {
            let wanted = params.top_p * mass_at_least4(lane, base, threshold, m);
            var lo = threshold;
            var hi = key(m);
            loop {
                if (lo >= hi) { break; }
                let mid = lo + (hi - lo) / 2u + ((hi - lo) & 1u);
                if (mass_at_least4(lane, base, mid, m) >= wanted) { lo = mid; } else { hi = mid - 1u; }
            }
            threshold = lo;
        }
        for (var k = 0u; k < chunks; k++) {
            let qa = 16u * k + lane;
            let qb = qa + 8u;
            best_a = gumbel_quad(best_a, qa, row_quad(base, qa) * params.inv_temp, threshold, seq);
            best_b = gumbel_quad(best_b, qb, row_quad(base, qb) * params.inv_temp, threshold, seq);
        }
        token = tree_argmax(best_a, best_b);
    }
    if (lane != 0u) { return; }
    var eos = 0u;
    for (var e = 0u; e < params.n_eos; e++) {
        eos = eos | select(0u, 1u, eos_ids[e] == token);
    }
    finished[row] = eos;
    next_ids[row] = token;
    tokens[out_index] = token;
    logprobs[out_index] = row_quad(base, token / 4u)[token % 4u] * params.inv_temp - lse;
}

// END subgroup
