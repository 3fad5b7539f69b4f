// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_ with norm_type 2), all on the GPU:
// 1. sum_squares_workgroup, once per gradient tensor: workgroup k writes partials[slot + k] =
//    sum of g[i]^2 over its chunk i in [k * CHUNK, (k + 1) * CHUNK); the host gives each tensor its own slots.
// 2. clip_coef_workgroup, once: total_norm = sqrt(sum of all partials), scale = min(1, max_norm / (total_norm + 1e-6)).
// 3. clip_scale_inplace_naive, once per gradient tensor: g[i] *= scale (scale read from the GPU buffer, so the
//    host never waits for the norm); clip_scale_naive, out[i] = g[i] * scale, for a gradient tensor several
//    parameters share (scaled in place it would be scaled once per parameter).
// Sums are f32 whatever the storage type `elem` of the gradients. The naive/workgroup entries are the spec;
// sum_squares4, clip_scale4 and clip_scale_inplace4 do the same on quads of 4 elements (used when n % 4 == 0).

// use prelude

alias elem = f32;

const WG: u32 = 256u;          // invocations per workgroup (a power of two)
const CHUNK: u32 = 4096u;      // gradient elements per workgroup of sum_squares_workgroup (16 per invocation)

struct SumParams {
    n: u32,     // elements of the gradient
    slot: u32,  // the first partial slot of this tensor
}

struct CoefParams {
    n_partials: u32,  // partial sums to add up
    max_norm: f32,
}

struct ScaleParams {
    n: u32,  // elements of the gradient
}

@group(0) @binding(0) var<uniform> sum_params: SumParams;
// wide reads: g4
@group(0) @binding(0) var<uniform> coef_params: CoefParams;
@group(0) @binding(0) var<uniform> scale_params: ScaleParams;
@group(0) @binding(1) var<storage, read> g: array<elem>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read> partials_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> total_norm: array<f32>;
@group(0) @binding(5) var<storage, read_write> scale: array<f32>;
@group(0) @binding(6) var<storage, read> scale_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<elem>;
@group(0) @binding(8) var<storage, read_write> g_inout: array<elem>;

var<workgroup> part: array<f32, WG>;

// Tree sum of part[0..WG) by the whole workgroup; every invocation must call it and gets the sum.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    part[lid] = value;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            part[lid] += part[lid + half];
        }
        workgroupBarrier();
    }
    return part[0];
}

// sum_squares_workgroup: partials[slot + k] = sum_{i in chunk k} g[i]^2, chunk k = [k * 4096, min((k + 1) * 4096, n)).
// Bindings: 0 sum_params (uniform), 1 g (read, elem, n), 2 partials (read_write, f32, slot + ceil(n / 4096)).
// Dispatch: one workgroup of 256 per chunk, 2-D grid (x = min(ceil(n / 4096), 65535), y = ceil(ceil(n / 4096) / x)),
// chunk k = wg.y * nwg.x + wg.x.
@compute @workgroup_size(WG)
fn sum_squares_workgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let k = workgroup_index(wg, nwg);  // uniform over the workgroup, so the return keeps barriers uniform
    if (k >= (sum_params.n + CHUNK - 1u) / CHUNK) { return; }  // the grid's overshoot in its last row
    let start = k * CHUNK;
    let end = min(start + CHUNK, sum_params.n);
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        let v = f32(g[i]);
        s += v * v;
    }
    let total = workgroup_sum(lid, s);
    if (lid == 0u) {
        partials[sum_params.slot + k] = total;
    }
}

// clip_coef_workgroup: total_norm[0] = sqrt(sum_{k < n_partials} partials_in[k]);
// scale[0] = min(1, max_norm / (total_norm[0] + 1e-6)) (torch's clip_coef, clamped at 1).
// Bindings: 0 coef_params (uniform), 3 partials_in (read, f32, n_partials), 4 total_norm (read_write, f32, 1),
// 5 scale (read_write, f32, 1). Dispatch: one workgroup, grid (1, 1, 1).
@compute @workgroup_size(WG)
fn clip_coef_workgroup(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var k = lid; k < coef_params.n_partials; k += WG) {
        s += partials_in[k];
    }
    let norm = sqrt(workgroup_sum(lid, s));
    if (lid == 0u) {
        total_norm[0] = norm;
        scale[0] = min(1.0, coef_params.max_norm / (norm + 1e-6));
    }
}

// clip_scale_naive: out[i] = g[i] * scale_in[0].
// Bindings: 0 scale_params (uniform), 1 g (read, elem, n), 6 scale_in (read, f32, 1), 7 out (read_write, elem, n).
// Dispatch: workgroups of 256 over n, 2-D grid (x = min(ceil(n / 256), 65535), y = ceil(ceil(n / 256) / x)),
// element (wg.y * nwg.x + wg.x) * 256 + lid.
@compute @workgroup_size(WG)
fn clip_scale_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= scale_params.n) { return; }
    out[i] = elem(f32(g[i]) * scale_in[0]);
}

// clip_scale_inplace_naive: g_inout[i] = g_inout[i] * scale_in[0] (each element read and written by one invocation).
// Bindings: 0 scale_params (uniform), 6 scale_in (read, f32, 1), 8 g_inout (read_write, elem, n).
// Dispatch: as clip_scale_naive.
@compute @workgroup_size(WG)
fn clip_scale_inplace_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= scale_params.n) { return; }
    g_inout[i] = elem(f32(g_inout[i]) * scale_in[0]);
}

// ---- vec4 entries: the same formulas on aligned quads (array<vec4<elem>> views at the binding numbers of the
// scalar arrays, so each entry takes the same buffers in the same order as its scalar form). lavapipe pays per
// load/store instruction and a vec4 one costs about what a scalar one does; GPUs coalesce them too.

override QUADS: u32 = 1u;  // quads per invocation of clip_scale4 and clip_scale_inplace4

@group(0) @binding(1) var<storage, read> g4: array<vec4<elem>>;
@group(0) @binding(7) var<storage, read_write> out4: array<vec4<elem>>;
@group(0) @binding(8) var<storage, read_write> g_inout4: array<vec4<elem>>;

// Invocations per workgroup of sum_squares4 (a power of two, at most CHUNK / 4). On a CPU adapter each barrier
// of the tree sum costs about a pass over the workgroup's invocations, so there one subgroup's width (8) with a
// long serial loop beats 256 (measured on lavapipe: 0.25 ms against 3.1 ms for a (576, 576) gradient).
override SUM_WG: u32 = 256u;

var<workgroup> part4: array<f32, SUM_WG>;

// workgroup_sum over a workgroup of SUM_WG invocations (part4 in place of part).
fn workgroup_sum4(lid: u32, value: f32) -> f32 {
    part4[lid] = value;
    workgroupBarrier();
    for (var half = SUM_WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            part4[lid] += part4[lid + half];
        }
        workgroupBarrier();
    }
    return part4[0];
}

// sum_squares4: sum_squares_workgroup on quads: partials[slot + k] = sum of g[i]^2 over chunk k, the same
// 4096-element chunks (so the same partial slots); quads [k * 1024, min((k + 1) * 1024, n / 4)). n % 4 == 0.
// Bindings: 0 sum_params (uniform), 1 g4 (read, vec4<elem>, n / 4), 2 partials (read_write, f32,
// slot + ceil(n / 4096)). Dispatch: as sum_squares_workgroup, one workgroup (of SUM_WG) per chunk.
@compute @workgroup_size(SUM_WG)
fn sum_squares4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let k = workgroup_index(wg, nwg);  // uniform over the workgroup, so the return keeps barriers uniform
    if (k >= (sum_params.n + CHUNK - 1u) / CHUNK) { return; }  // the grid's overshoot in its last row
    let start = k * (CHUNK / 4u);
    let end = min(start + CHUNK / 4u, sum_params.n / 4u);
    var s = vec4<f32>(0.0);
    for (var q = start + lid; q < end; q += SUM_WG) {
        let v = vec4<f32>(g4[q]);
        s += v * v;
    }
    let total = workgroup_sum4(lid, (s.x + s.y) + (s.z + s.w));
    if (lid == 0u) {
        partials[sum_params.slot + k] = total;
    }
}

// The first quad invocation `lid` of workgroup (wg, nwg) handles in the scale entries; the others follow every
// WG quads.
fn first_quad(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wg, nwg) * WG * QUADS + lid;
}

// clip_scale4: clip_scale_naive on quads: out4[q] = g4[q] * scale_in[0]. n % 4 == 0.
// Bindings: 0 scale_params (uniform), 1 g4 (read, vec4<elem>, n / 4), 6 scale_in (read, f32, 1),
// 7 out4 (read_write, vec4<elem>, n / 4).
// Dispatch: workgroups of 256 over ceil(n / (4 * QUADS)) invocations, 2-D grid (x = min(groups, 65535),
// y = ceil(groups / x)); invocation lid of workgroup w handles quads w * 256 * QUADS + j * 256 + lid, j < QUADS.
@compute @workgroup_size(WG)
fn clip_scale4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let quads = scale_params.n / 4u;
    let first = first_quad(wg, nwg, lid);
    let c = scale_in[0];
    for (var j = 0u; j < QUADS; j++) {
        let q = first + j * WG;
        if (q >= quads) { return; }
        out4[q] = vec4<elem>(vec4<f32>(g4[q]) * c);
    }
}

// clip_scale_inplace4: clip_scale_inplace_naive on quads: g_inout4[q] *= scale_in[0]. n % 4 == 0.
// Bindings: 0 scale_params (uniform), 6 scale_in (read, f32, 1), 8 g_inout4 (read_write, vec4<elem>, n / 4).
// Dispatch: as clip_scale4.
@compute @workgroup_size(WG)
fn clip_scale_inplace4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let quads = scale_params.n / 4u;
    let first = first_quad(wg, nwg, lid);
    let c = scale_in[0];
    for (var j = 0u; j < QUADS; j++) {
        let q = first + j * WG;
        if (q >= quads) { return; }
        g_inout4[q] = vec4<elem>(vec4<f32>(g_inout4[q]) * c);
    }
}
