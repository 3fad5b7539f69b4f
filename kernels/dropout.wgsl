// Seeded dropout (LoRA's input dropout): y[i] = x[i] * scale where element i is kept, else 0. The keep mask is a
// pure function of (seed, global flat index), drawn from the counter-based hash pcg4d as sampling.wgsl draws its
// noise, so no mask is ever stored: the backward (dx = dy * keep * scale) and a forward recomputed under
// activation checkpointing run this same entry with the same seed and get the same mask.
//   h = pcg4d(idx_lo, idx_hi, seed, STREAM).x,   u = (h >> 8) / 2^24 (uniform in [0, 1), exact in f32)
//   keep = u >= p, done in integers: (h >> 8) >= threshold with threshold = ceil(p * 2^24) (host side), so the
//   host's numpy reference (engine/ops/dropout.py, dropout_mask) reproduces it bit for bit.
// idx = offset + i over 64 bits: a tensor held in row blocks dispatches once per block with the block's first
// flat index as offset, so its mask is that of the whole tensor. scale = 1 / (1 - p), rounded to f32 on the host.
// Math runs in f32 whatever the storage type `elem`; results are stored as elem.
// Bindings: 0 params (uniform); 1 x (read, elem, n); 2 y (read_write, elem, n).
// Dispatch: workgroups of 256 over the n elements, 2-D grid (x = min(ceil(n / 256), 65535),
// y = ceil(ceil(n / 256) / x)); invocation (wg.y * nwg.x + wg.x) * 256 + lid handles element i.

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup
const STREAM: u32 = 0x64726f70u;  // "drop": keeps this stream apart from other users of pcg4d with equal counters

struct Params {
    n: u32,          // elements of x and y (of this row block)
    offset_lo: u32,  // global flat index of element 0, bits 0..31
    offset_hi: u32,  // bits 32..63
    seed: u32,
    threshold: u32,  // ceil(p * 2^24): keep when (h >> 8) >= threshold
    scale: f32,      // 1 / (1 - p)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

// pcg4d: the counter-based hash, in the prelude

// dropout_apply: y[i] = x[i] * scale if (seed, offset + i) is kept, else 0. The forward (x -> y) and the backward
// (dy -> dx) alike.
// Bindings: 0 params (uniform), 1 x (read, elem, n), 2 y (read_write, elem, n).
// Dispatch: 2-D grid of 256-wide workgroups over n (see the file header).
@compute @workgroup_size(WG)
fn dropout_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let lo = params.offset_lo + i;
    let hi = params.offset_hi + select(0u, 1u, lo < i);  // carry of the 64-bit add
    let h = pcg4d(vec4<u32>(lo, hi, params.seed, STREAM)).x;
    let keep = (h >> 8u) >= params.threshold;
    y[i] = elem(select(0.0, f32(x[i]) * params.scale, keep));
}
