// KV-cache bookkeeping for generation: writing new keys/values into the cache, gathering whole rows (sharing
// one prompt's cache among the samples of a group, dropping finished sequences), and each row's position in
// a decode step (computed here so that a recorded decode step needs no host upload).
// Layouts: the cache is (B, T_cap, R) with R = H_kv * D elements per position; new keys/values are (B, T, R).
// gather_rows has a vec4 twin, gather_rows4 (quads of 4 words, for sizes and strides multiples of 4).

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup of every entry

struct WriteParams {
    n: u32,       // invocations that do work: B * T * R
    row: u32,     // R = H_kv * D
    t_new: u32,   // T, the new positions per batch row
    t_cap: u32,   // T_cap, positions per batch row of the cache
    column: u32,  // the cache position of the first new one
}

struct GatherParams {
    n: u32,           // invocations that do work: rows * words
    words: u32,       // 32-bit words copied per row
    src_stride: u32,  // words between consecutive source rows
    dst_stride: u32,  // words between consecutive destination rows
}

struct PositionParams {
    batch: u32,   // B rows
    length: u32,  // cache positions written before this step: the new token's column
}

@group(0) @binding(0) var<uniform> write_params: WriteParams;
@group(0) @binding(0) var<uniform> gather_params: GatherParams;
@group(0) @binding(1) var<storage, read> k_new: array<elem>;
@group(0) @binding(2) var<storage, read> v_new: array<elem>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<elem>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<elem>;
@group(0) @binding(5) var<storage, read> src: array<u32>;
@group(0) @binding(6) var<storage, read> index: array<u32>;
@group(0) @binding(7) var<storage, read_write> dst: array<u32>;
@group(0) @binding(0) var<uniform> position_params: PositionParams;
@group(0) @binding(8) var<storage, read> starts: array<u32>;
@group(0) @binding(9) var<storage, read_write> positions: array<i32>;

// kv_write: k_cache[b, column + t, r] = k_new[b, t, r] and the same for v, for t < T (column + T <= T_cap).
// Bindings: 0 write_params (uniform), 1 k_new, 2 v_new (read, elem, (B, T, R)), 3 k_cache, 4 v_cache
// (read_write, elem, (B, T_cap, R)).
// Dispatch: workgroups of 256 over n, 2-D grid (x = min(ceil(n / 256), 65535), y = ceil(ceil(n / 256) / x));
// invocation i = (wg.y * nwg.x + wg.x) * 256 + lid is element i of k_new.
@compute @workgroup_size(WG)
fn kv_write(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= write_params.n) { return; }
    let r = i % write_params.row;
    let bt = i / write_params.row;  // b * T + t
    let t = bt % write_params.t_new;
    let b = bt / write_params.t_new;
    let j = (b * write_params.t_cap + write_params.column + t) * write_params.row + r;
    k_cache[j] = k_new[i];
    v_cache[j] = v_new[i];
}

// gather_rows: dst[r * dst_stride + c] = src[index[r] * src_stride + c] for c < words, r < rows; raw 32-bit
// words, so any 4-byte dtype (f32 caches, i32 ids) is copied bit for bit.
// Bindings: 0 gather_params (uniform), 5 src (read, u32), 6 index (read, u32, rows), 7 dst (read_write, u32).
// Dispatch: as kv_write over n = rows * words; invocation i is word c = i % words of destination row
// r = i / words.
@compute @workgroup_size(WG)
fn gather_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= gather_params.n) { return; }
    let c = i % gather_params.words;
    let r = i / gather_params.words;
    dst[r * gather_params.dst_stride + c] = src[index[r] * gather_params.src_stride + c];
}

// decode_positions: positions[b] = length - starts[b], the position (after its left padding) of row b's token
// at cache column `length`. Bindings: 0 position_params (uniform), 8 starts (read, u32, (B,)),
// 9 positions (read_write, i32, (B,)).
// Dispatch: as kv_write over n = B; invocation i is row b = i.
@compute @workgroup_size(WG)
fn decode_positions(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let b = flat_index(wg, nwg, lid, WG);
    if (b >= position_params.batch) { return; }
    positions[b] = i32(position_params.length) - i32(starts[b]);
}

// gather_rows4: gather_rows on quads of 4 words, through array<vec4<u32>> views of src and dst. words, src_stride
// and dst_stride are multiples of 4 (and both bindings start on 16 bytes): lavapipe pays per load/store
// instruction, and a vec4 one costs about what a scalar one does; GPUs coalesce them too. A row of W = words / 4
// quads is cut into ceil(W / QUADS) chunks of QUADS contiguous quads, one chunk per invocation, so each
// invocation reads its row's index once and divides once.
// Bindings: 0 gather_params (uniform; n = rows * ceil(W / QUADS), words, src_stride, dst_stride in words),
// 5 src4 (read, vec4<u32>), 6 index (read, u32, rows), 7 dst4 (read_write, vec4<u32>).
// Dispatch: workgroups of WG4 over n, the 2-D grid of kv_write; invocation i handles destination row
// r = i / chunks, quads (i % chunks) * QUADS + k for k < QUADS, each checked against W. QUADS = 1 gives
// neighbouring invocations neighbouring quads (GPUs); a CPU adapter runs faster with a few per invocation
// (engine/kv_cache.py picks). WG4 is smaller than WG so that short copies still spread over several workgroups
// (a CPU adapter runs each on one core).

override QUADS: u32 = 1u;  // quads per invocation of gather_rows4
const WG4: u32 = 64u;      // invocations per workgroup of gather_rows4

@group(0) @binding(5) var<storage, read> src4: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> dst4: array<vec4<u32>>;

@compute @workgroup_size(WG4)
fn gather_rows4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG4);
    if (i >= gather_params.n) { return; }
    let quads = gather_params.words / 4u;
    let chunks = (quads + QUADS - 1u) / QUADS;
    let r = i / chunks;
    let first = (i - r * chunks) * QUADS;
    let end = min(first + QUADS, quads);
    let source = index[r] * (gather_params.src_stride / 4u);
    let to = r * (gather_params.dst_stride / 4u);
    for (var q = first; q < end; q++) {
        dst4[to + q] = src4[source + q];
    }
}
