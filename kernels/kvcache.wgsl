// KV-cache bookkeeping for generation: writing new keys/values into the cache, gathering whole rows (sharing
// one prompt's cache among the samples of a group, dropping finished sequences), and each row's position in
// a decode step (computed here so that a recorded decode step needs no host upload).
// Layouts: the cache is (B, T_cap, R) with R = H_kv * D elements per position; new keys/values are (B, T, R).

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
