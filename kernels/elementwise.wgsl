// Elementwise kernels: binary ops with numpy broadcasting, and unary maps.
// Math runs in f32 whatever the storage type `elem` (f16 storage is the f16 build of this file).
// Dispatch (every scalar entry): workgroups of WG = 256 invocations over n = number of output elements, laid out
// as a 2-D grid (x = min(ceil(n / 256), 65535), y = ceil(ceil(n / 256) / x)); invocation i handles element i.
// The broadcasting entries (add, mul, broadcast) bind BroadcastParams, the maps (affine, silu, gelu, exp, the
// *_backward ones and add_inplace) MapParams, both at binding 0. add, mul and add_inplace have vec4 twins for
// same-shape operands (add_vec4, ...; see "vec4 entries" at the end), binding MapParams.

// use prelude

alias elem = f32;

const WG: u32 = 256u;      // invocations per workgroup of every entry
const MAX_RANK: u32 = 6u;  // dimensions a broadcast handles (dims and strides hold up to 8)

struct BroadcastParams {
    n: u32,                         // output elements
    rank: u32,                      // dimensions used in dims/strides (<= MAX_RANK), outermost first
    dims: array<vec4<u32>, 2>,      // output shape, dims[k / 4][k % 4]
    a_strides: array<vec4<u32>, 2>, // element strides of a per output dimension (0 where broadcast)
    b_strides: array<vec4<u32>, 2>,
}

struct MapParams {
    n: u32,      // elements
    alpha: f32,  // affine: y = alpha * x + beta
    beta: f32,
}

@group(0) @binding(0) var<uniform> broadcast_params: BroadcastParams;
// wide reads: a4, b4
@group(0) @binding(0) var<uniform> map_params: MapParams;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;
@group(0) @binding(4) var<storage, read> x: array<elem>;
@group(0) @binding(5) var<storage, read_write> y: array<elem>;

// The offsets into a and b of output element i, walking dimensions innermost first.
fn broadcast_offsets(i: u32) -> vec2<u32> {
    // One dimension (same shapes, or a scalar): no division. The host merges dimensions to get here often.
    if (broadcast_params.rank == 1u) {
        return i * vec2<u32>(broadcast_params.a_strides[0][0], broadcast_params.b_strides[0][0]);
    }
    var rest = i;
    var offsets = vec2<u32>(0u, 0u);
    for (var k = i32(broadcast_params.rank) - 1; k >= 0; k--) {
        let d = broadcast_params.dims[k / 4][k % 4];
        let coord = rest % d;
        rest = rest / d;
        offsets += coord * vec2<u32>(broadcast_params.a_strides[k / 4][k % 4],
                                     broadcast_params.b_strides[k / 4][k % 4]);
    }
    return offsets;
}

// add_naive: out[i] = a[ia(i)] + b[ib(i)] with broadcasting.
// Bindings: broadcast_params, a (read), b (read), out (read_write).
@compute @workgroup_size(WG)
fn add_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= broadcast_params.n) { return; }
    let o = broadcast_offsets(i);
    out[i] = elem(f32(a[o.x]) + f32(b[o.y]));
}

// add_inplace_naive: out[i] = out[i] + b[i] (an accumulation into out; same shapes, no broadcasting).
// Bindings: map_params (n), b (read), out (read_write). Each element is read and written by one invocation.
@compute @workgroup_size(WG)
fn add_inplace_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= map_params.n) { return; }
    out[i] = elem(f32(out[i]) + f32(b[i]));
}

// mul_naive: out[i] = a[ia(i)] * b[ib(i)] with broadcasting. Bindings as add_naive.
@compute @workgroup_size(WG)
fn mul_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= broadcast_params.n) { return; }
    let o = broadcast_offsets(i);
    out[i] = elem(f32(a[o.x]) * f32(b[o.y]));
}

// broadcast_naive: out[i] = a[ia(i)] (numpy broadcast_to, materialized).
// Bindings: broadcast_params, a (read), out (read_write).
@compute @workgroup_size(WG)
fn broadcast_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= broadcast_params.n) { return; }
    out[i] = a[broadcast_offsets(i).x];
}

// affine_naive: y[i] = alpha * x[i] + beta (scale is beta = 0). Bindings: map_params, x (read), y (read_write).
@compute @workgroup_size(WG)
fn affine_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= map_params.n) { return; }
    y[i] = elem(map_params.alpha * f32(x[i]) + map_params.beta);
}

// silu_naive: y[i] = x[i] * sigmoid(x[i]). Bindings: map_params, x (read), y (read_write).
@compute @workgroup_size(WG)
fn silu_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= map_params.n) { return; }
    let v = f32(x[i]);
    y[i] = elem(v / (1.0 + exp(-v)));
}

// gelu_naive: the tanh approximation, y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Bindings: map_params, x (read), y (read_write). tanh is written through exp of a non-positive argument so
// large |x| cannot overflow.
@compute @workgroup_size(WG)
fn gelu_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= map_params.n) { return; }
    let v = f32(x[i]);
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    let e = exp(-2.0 * abs(u));
    let t = sign(u) * (1.0 - e) / (1.0 + e);
    y[i] = elem(0.5 * v * (1.0 + t));
}

// exp_naive: y[i] = exp(x[i]). Bindings: map_params, x (read), y (read_write).
@compute @workgroup_size(WG)
fn exp_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= map_params.n) { return; }
    y[i] = elem(exp(f32(x[i])));
}

// silu_backward_naive: out[i] = b[i] * s (1 + a[i] (1 - s)), s = sigmoid(a[i]); a = x, b = dy, out = dx.
// Bindings: map_params (n), a (read), b (read), out (read_write). Same shapes, no broadcasting.
@compute @workgroup_size(WG)
fn silu_backward_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= map_params.n) { return; }
    let v = f32(a[i]);
    let s = 1.0 / (1.0 + exp(-v));
    out[i] = elem(f32(b[i]) * s * (1.0 + v * (1.0 - s)));
}

// gelu_backward_naive: out[i] = b[i] * d/dx gelu_tanh(a[i]); a = x, b = dy, out = dx.
// d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u).
// Bindings as silu_backward_naive.
@compute @workgroup_size(WG)
fn gelu_backward_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= map_params.n) { return; }
    let v = f32(a[i]);
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    let e = exp(-2.0 * abs(u));
    let t = sign(u) * (1.0 - e) / (1.0 + e);
    let du = 0.7978845608028654 * (1.0 + 0.134145 * v * v);
    out[i] = elem(f32(b[i]) * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du));
}

// ---- vec4 entries: add, mul and add_inplace of same-shape operands on aligned quads of 4 elements, through
// array<vec4<elem>> views at the scalar arrays' binding numbers (so each takes the buffers of its scalar twin in
// the same order). For n % 4 == 0 with no broadcasting; bit for bit the scalar entries' results. lavapipe pays
// per load/store instruction, and a vec4 one costs about what a scalar one does; GPUs coalesce them too.
// Dispatch (every vec4 entry): workgroups of WG4 = 64 over ceil(n / (4 * QUADS)) invocations, 2-D grid
// (x = min(groups, 65535), y = ceil(groups / x)); invocation t = (wg.y * nwg.x + wg.x) * 64 + lid handles the
// contiguous quads t * QUADS + k, k < QUADS, each checked against n / 4. QUADS = 1 gives neighbouring invocations
// neighbouring quads (GPUs); a CPU adapter runs faster with a few per invocation (engine/ops/elementwise.py picks;
// on lavapipe contiguous quads measured ~10% faster than quads strided by the workgroup, and 64 invocations per
// workgroup as fast as 256 while splitting small tensors over more cores).

const WG4: u32 = 64u;      // invocations per workgroup of the vec4 entries
override QUADS: u32 = 1u;  // quads per invocation of the vec4 entries

@group(0) @binding(1) var<storage, read> a4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<elem>>;

// The first of the QUADS contiguous quads of invocation `lid` of workgroup (wg, nwg).
fn first_quad(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return flat_index(wg, nwg, lid, WG4) * QUADS;
}

// add_vec4: out4[q] = a4[q] + b4[q] for q < n / 4 (add_naive on same shapes). n % 4 == 0.
// Bindings: 0 map_params (n), 1 a4 (read, vec4<elem>, n / 4), 2 b4 (read, vec4<elem>, n / 4),
// 3 out4 (read_write, vec4<elem>, n / 4). Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG4)
fn add_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let quads = map_params.n / 4u;
    let first = first_quad(wg, nwg, lid);
    for (var k = 0u; k < QUADS; k++) {
        let q = first + k;
        if (q >= quads) { return; }
        out4[q] = vec4<elem>(vec4<f32>(a4[q]) + vec4<f32>(b4[q]));
    }
}

// mul_vec4: out4[q] = a4[q] * b4[q] for q < n / 4 (mul_naive on same shapes). n % 4 == 0.
// Bindings and dispatch as add_vec4.
@compute @workgroup_size(WG4)
fn mul_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let quads = map_params.n / 4u;
    let first = first_quad(wg, nwg, lid);
    for (var k = 0u; k < QUADS; k++) {
        let q = first + k;
        if (q >= quads) { return; }
        out4[q] = vec4<elem>(vec4<f32>(a4[q]) * vec4<f32>(b4[q]));
    }
}

// add_inplace_vec4: out4[q] = out4[q] + b4[q] for q < n / 4 (add_inplace_naive on quads). n % 4 == 0.
// Bindings: 0 map_params (n), 2 b4 (read, vec4<elem>, n / 4), 3 out4 (read_write, vec4<elem>, n / 4).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG4)
fn add_inplace_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let quads = map_params.n / 4u;
    let first = first_quad(wg, nwg, lid);
    for (var k = 0u; k < QUADS; k++) {
        let q = first + k;
        if (q >= quads) { return; }
        out4[q] = vec4<elem>(vec4<f32>(out4[q]) + vec4<f32>(b4[q]));
    }
}
