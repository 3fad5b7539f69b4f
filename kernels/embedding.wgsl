// Token embedding: a row gather from weight (V, C), and its backward as a deterministic segmented sum.
// Forward: out[t, c] = weight[ids[t], c] for the N = number of token positions; an id outside [0, V) gives a
// row of zeros (the host refuses such ids when it has them).
// Backward (no float atomics): the host sorts the positions by id (stable), uploads that permutation `order`
// (N u32) and CSR offsets (V + 1 u32: the positions of id v are order[offsets[v] .. offsets[v + 1]]); then
//   dweight[v, c] = sum_{k in offsets[v] .. offsets[v+1]} dy[order[k], c]
// in increasing position order; ids that occur nowhere get rows of exact zeros. Each (v, c) is one invocation,
// so the result is the same on every run.
// Row add (an existing gradient, e.g. a tied LM head's, plus the rows of the ids that occur): the host groups
// the positions by id into one u32 array `csr` of 3N + 1 words: offsets (N + 1: the positions of the u-th
// unique id are positions[offsets[u] .. offsets[u + 1]]), rows (N: the unique ids, increasing) and positions
// (N); entries past the U unique ids are padding. Then dweight[rows[u], c] += elem(sum of those dy[t, c]).
// Math runs in f32 whatever the storage type `elem`; results are stored as elem. The forward's weight may be
// stored as packed bf16/f16 pairs in u32 words (the pipeline's weights = bf16/f16), read through weight_at.
// A weight held in row blocks (over the binding limit) is one dispatch per block: the block holds rows
// first_row .. first_row + vocab - 1; the forward's first block writes zeros for ids outside it (later blocks
// skip them, fill_others = 0), and the backward's offsets stay those of the whole vocabulary.
// Bindings: 0 params (uniform); forward 1 ids (read, i32, N), 2 weight (read, elem, V * C),
// 3 out (read_write, elem, N * C); backward 4 dy (read, elem, N * C), 5 order (read, u32, N),
// 6 offsets (read, u32, V + 1), 7 dweight (read_write, elem, V * C); row add 8 csr (read, u32, 3N + 1).
// Each entry has a vec4 twin named with a trailing 4 (embedding_forward4, ...; see "vec4 entries" below): the
// same formula on quads of 4 channels through array<vec4<elem>> views of bindings 2, 3, 4 and 7, for C % 4 == 0.

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup of every entry

struct Params {
    n: u32,           // invocations that do work: N * C (forward) or rows of this block * C (backward)
    channels: u32,    // C
    vocab: u32,       // rows of the weight (block) bound
    first_row: u32,   // the first vocabulary row of that block (0 for a whole weight)
    fill_others: u32, // forward: 1 writes zeros for ids outside the block, 0 leaves their rows alone
}

struct RowsParams {
    n: u32,            // invocations that do work: unique ids inside this block * C
    channels: u32,     // C
    vocab: u32,        // rows of the dweight block bound
    first_row: u32,    // the first vocabulary row of that block
    first_unique: u32, // the first unique id (index into rows) inside that block
    positions: u32,    // N, the number of token positions (where csr's rows and positions start)
    half: u32,         // 1 when elem is f16: the sum is rounded to f16 before the add (quantizeToF16)
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: weight4, dy4
@group(0) @binding(0) var<uniform> rows_params: RowsParams;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
// BEGIN weights
@group(0) @binding(2) var<storage, read> weight: array<elem>;
@group(0) @binding(2) var<storage, read> weight4: array<vec4<elem>>;
fn weight_at(i: u32) -> f32 { return f32(weight[i]); }
// Elements i .. i + 3 of weight, i a multiple of 4.
fn weight_at4(i: u32) -> vec4<f32> { return vec4<f32>(weight4[i >> 2u]); }
// END weights
@group(0) @binding(3) var<storage, read_write> out: array<elem>;
@group(0) @binding(4) var<storage, read> dy: array<elem>;
@group(0) @binding(5) var<storage, read> order: array<u32>;
@group(0) @binding(6) var<storage, read> offsets: array<u32>;
@group(0) @binding(7) var<storage, read_write> dweight: array<elem>;
@group(0) @binding(8) var<storage, read> csr: array<u32>;

// embedding_forward: out[t, c] = weight[ids[t], c] (zeros for an id outside [0, V)), invocation i = t * C + c.
// Bindings: 0 params (uniform; n = N * C, channels, vocab), 1 ids (read, i32, N), 2 weight (read, elem, V * C),
// 3 out (read_write, elem, N * C).
// Dispatch: workgroups of 256 over N * C, 2-D grid (x = min(ceil(n / 256), 65535), y = ceil(ceil(n / 256) / x)),
// invocation (wg.y * nwg.x + wg.x) * 256 + lid.
@compute @workgroup_size(WG)
fn embedding_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let t = i / params.channels;
    let c = i % params.channels;
    let id = ids[t];
    if (id < i32(params.first_row) || u32(id) - params.first_row >= params.vocab) {
        if (params.fill_others != 0u) { out[i] = elem(0.0); }
        return;
    }
    out[i] = elem(weight_at((u32(id) - params.first_row) * params.channels + c));
}

// embedding_backward: dweight[v, c] = sum over the positions t of id v (in increasing t) of dy[t, c],
// invocation i = v * C + c; the positions come from order[offsets[v] .. offsets[v + 1]].
// Bindings: 0 params (uniform; n = V * C, channels, vocab), 4 dy (read, elem, N * C), 5 order (read, u32, N),
// 6 offsets (read, u32, V + 1), 7 dweight (read_write, elem, V * C).
// Dispatch: workgroups of 256 over V * C, 2-D grid as embedding_forward.
@compute @workgroup_size(WG)
fn embedding_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let v = params.first_row + i / params.channels;
    let c = i % params.channels;
    var acc = 0.0;
    for (var k = offsets[v]; k < offsets[v + 1u]; k++) {
        acc += f32(dy[order[k] * params.channels + c]);
    }
    dweight[i] = elem(acc);
}

// embedding_add_rows: dweight[rows[u] - first_row, c] += elem(sum over k in offsets[u] .. offsets[u + 1] of
// dy[positions[k], c]) for the unique ids u = first_unique .. of this block, invocation i = (u - first_unique) * C + c.
// The sum runs from zero in position order and is rounded to elem before the add, as embedding_backward followed
// by add_naive computes it. Each element is read and written by one invocation; rows outside the block are skipped.
// Bindings: 0 rows_params (uniform), 4 dy (read, elem, N * C), 7 dweight (read_write, elem, V * C of this block),
// 8 csr (read, u32, 3N + 1).
// Dispatch: workgroups of 256 over U_block * C, 2-D grid as embedding_forward.
@compute @workgroup_size(WG)
fn embedding_add_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= rows_params.n) { return; }
    let channels = rows_params.channels;
    let u = rows_params.first_unique + i / channels;
    let c = i % channels;
    let n_pos = rows_params.positions;
    if (u >= n_pos) { return; }
    let row = csr[n_pos + 1u + u] - rows_params.first_row;  // wraps to a huge value below first_row
    if (row >= rows_params.vocab) { return; }
    var acc = 0.0;
    for (var k = csr[u]; k < csr[u + 1u]; k++) {
        acc += f32(dy[csr[2u * n_pos + 1u + k] * channels + c]);
    }
    // rounded as a stored elem would be: f32(elem(acc)) alone may be folded to acc by the shader compiler
    let sum = select(acc, quantizeToF16(acc), rows_params.half != 0u);
    let j = row * channels + c;
    dweight[j] = elem(f32(dweight[j]) + sum);
}

// ---- vec4 entries: the same formulas on aligned quads of 4 channels (array<vec4<elem>> views of the bindings).
// Used when C % 4 == 0 (and every binding starts on 16 bytes): lavapipe pays per load/store instruction, and a
// vec4 one costs about what a scalar one does; GPUs coalesce them too. Results are bit for bit those of the
// scalar entries: a copy, or the same f32 sums in the same order per element.
// A row of C channels holds W = C / 4 quads, cut into ceil(W / QUADS) chunks of QUADS contiguous quads; each
// invocation handles one chunk of one row, so it reads the row's id (or offsets) once and divides once.
// Dispatch (every vec4 entry): workgroups of WG4 over n = rows * ceil(W / QUADS) invocations, the 2-D grid of the
// scalar entries; invocation i (flattened as there) handles row i / chunks, quads (i % chunks) * QUADS + k,
// k < QUADS, each checked against W. QUADS = 1 gives neighbouring invocations neighbouring quads (GPUs); a CPU
// adapter runs faster with a few per invocation (engine/ops/embedding.py picks). WG4 is smaller than WG so that
// a decode step's few rows still spread over several workgroups (a CPU adapter runs each on one core).

override QUADS: u32 = 1u;  // quads per invocation in the vec4 entries
const WG4: u32 = 64u;      // invocations per workgroup of the vec4 entries

@group(0) @binding(3) var<storage, read_write> out4: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read> dy4: array<vec4<elem>>;
@group(0) @binding(7) var<storage, read_write> dweight4: array<vec4<elem>>;

// The row and the first quad of invocation i, for rows of `quads` quads cut into chunks of QUADS.
fn chunk_start(i: u32, quads: u32) -> vec2<u32> {
    let chunks = (quads + QUADS - 1u) / QUADS;
    let row = i / chunks;
    return vec2<u32>(row, (i - row * chunks) * QUADS);
}

// embedding_forward4: embedding_forward on quads of channels. C % 4 == 0.
// Bindings: 0 params (uniform; n = N * ceil(C / (4 QUADS)), channels, vocab, first_row, fill_others), 1 ids (read,
// i32, N), 2 weight4 (read, vec4<elem>, V * C / 4; or packed bf16/f16 words, read through weight_at4),
// 3 out4 (read_write, vec4<elem>, N * C / 4).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG4)
fn embedding_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG4);
    if (i >= params.n) { return; }
    let quads = params.channels / 4u;
    let start = chunk_start(i, quads);
    let t = start.x;
    let end = min(start.y + QUADS, quads);
    let id = ids[t];
    if (id < i32(params.first_row) || u32(id) - params.first_row >= params.vocab) {
        if (params.fill_others != 0u) {
            for (var q = start.y; q < end; q++) { out4[t * quads + q] = vec4<elem>(0.0); }
        }
        return;
    }
    let src = (u32(id) - params.first_row) * quads;
    for (var q = start.y; q < end; q++) {
        out4[t * quads + q] = vec4<elem>(weight_at4((src + q) * 4u));
    }
}

// embedding_backward4: embedding_backward on quads of channels. C % 4 == 0.
// Bindings: 0 params (uniform; n = rows of this block * ceil(C / (4 QUADS)), channels, vocab, first_row),
// 4 dy4 (read, vec4<elem>, N * C / 4), 5 order (read, u32, N), 6 offsets (read, u32, V + 1),
// 7 dweight4 (read_write, vec4<elem>, V * C / 4 of this block).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG4)
fn embedding_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG4);
    if (i >= params.n) { return; }
    let quads = params.channels / 4u;
    let start = chunk_start(i, quads);
    let v = start.x;
    let end = min(start.y + QUADS, quads);
    let first = offsets[params.first_row + v];
    let stop = offsets[params.first_row + v + 1u];
    for (var q = start.y; q < end; q++) {
        var acc = vec4<f32>(0.0);
        for (var k = first; k < stop; k++) {
            acc += vec4<f32>(dy4[order[k] * quads + q]);
        }
        dweight4[v * quads + q] = vec4<elem>(acc);
    }
}

// embedding_add_rows4: embedding_add_rows on quads of channels. C % 4 == 0.
// Bindings: 0 rows_params (uniform; n = U_block * ceil(C / (4 QUADS)), the rest as embedding_add_rows),
// 4 dy4 (read, vec4<elem>, N * C / 4), 7 dweight4 (read_write, vec4<elem>, V * C / 4 of this block),
// 8 csr (read, u32, 3N + 1).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG4)
fn embedding_add_rows4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG4);
    if (i >= rows_params.n) { return; }
    let quads = rows_params.channels / 4u;
    let start = chunk_start(i, quads);
    let u = rows_params.first_unique + start.x;
    let n_pos = rows_params.positions;
    if (u >= n_pos) { return; }
    let row = csr[n_pos + 1u + u] - rows_params.first_row;  // wraps to a huge value below first_row
    if (row >= rows_params.vocab) { return; }
    let end = min(start.y + QUADS, quads);
    let first = csr[u];
    let stop = csr[u + 1u];
    for (var q = start.y; q < end; q++) {
        var acc = vec4<f32>(0.0);
        for (var k = first; k < stop; k++) {
            acc += vec4<f32>(dy4[csr[2u * n_pos + 1u + k] * quads + q]);
        }
        let sum = select(acc, quantizeToF16(acc), rows_params.half != 0u);
        let j = row * quads + q;
        dweight4[j] = vec4<elem>(vec4<f32>(dweight4[j]) + sum);
    }
}
