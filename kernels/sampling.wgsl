// Token sampling for generation: one workgroup per batch row picks the next token from its logits row, on the
// GPU, so only token ids ever travel to the host.
// For row b with logits z (V values) and x = z * inv_temp (inv_temp = 1 / temperature; 1 when greedy):
//   lse = log sum_i exp(x_i)                      (over the whole vocabulary, unfiltered)
//   greedy (temperature 0): token = argmax_i z_i (the lowest index among equal maxima)
//   otherwise the kept set is filtered as Hugging Face's warpers do, top-k first, then top-p:
//     top-k (0 < k < V): keep x_i >= the k-th largest x (ties at the threshold are kept, as in HF);
//     top-p (p < 1): among those, keep x_i >= t for the largest threshold t whose kept mass
//       sum_{x_j >= t} exp(x_j - max) is >= p times the mass of the top-k set (the smallest top set holding p);
//     token = argmax over kept i of x_i + g_i with Gumbel noise g_i = -log(-log(u_i)) (the Gumbel-max trick:
//       an exact sample of softmax(x) restricted to the kept set), u_i = (hash(i, seq, step, seed) >> 8 + 0.5) / 2^24
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

const WG: u32 = 64u;  // invocations per workgroup = per row

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
    let u = (f32(h >> 8u) + 0.5) * (1.0 / 16777216.0);
    return -log(-log(u));
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
