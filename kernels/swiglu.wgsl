// SwiGLU, the Llama / Qwen2 MLP activation: out = silu(gate) * up, elementwise over same-shaped tensors,
// silu(g) = g * sigmoid(g). Backward, with s = sigmoid(g):
//   d gate = dy * up * s * (1 + g * (1 - s)),   d up = dy * g * s.
// Math runs in f32 whatever the storage type `elem`; results are stored as elem. sigmoid is 1 / (1 + exp(-g)):
// exp overflows to +inf for g < -88, which gives s = 0 and finite results (no inf * 0).
// Bindings: 0 params (uniform); 1 gate (read, elem, n), 2 up (read, elem, n); forward 3 out (read_write, elem, n);
// backward 4 dy (read, elem, n), 5 dgate (read_write, elem, n), 6 dup (read_write, elem, n).
// Dispatch (every scalar entry): workgroups of 256 over the n elements, 2-D grid (x = min(ceil(n / 256), 65535),
// y = ceil(ceil(n / 256) / x)); invocation (wg.y * nwg.x + wg.x) * 256 + lid handles element i.
// swiglu_fused_forward / swiglu_fused_backward read gate and up from one tensor gate_up (N, 2I), each row gate's
// I values then up's (x @ cat(W_gate, W_up).T): out (N, I) = silu(gate_up[:, :I]) * gate_up[:, I:], and the
// backward writes both gradients into d_gate_up (N, 2I) alike. Bindings 7 gate_up (read), 8 d_gate_up
// (read_write); n = N * I, width = I.
// Each entry has a vec4 twin named with a trailing 4 (swiglu_forward4, ...; see "vec4 entries" below): the same
// formula on quads of 4 elements through array<vec4<elem>> views at bindings 9-16, for sizes multiples of 4.

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup of every entry

struct Params {
    n: u32,      // elements in each tensor (swiglu_fused_*: in out, N * I)
    width: u32,  // swiglu_fused_* only: I, the columns of gate (and of up) in a row of gate_up; 0 elsewhere
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: gate4, up4, dy4, gate_up4
@group(0) @binding(1) var<storage, read> gate: array<elem>;
@group(0) @binding(2) var<storage, read> up: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;
@group(0) @binding(4) var<storage, read> dy: array<elem>;
@group(0) @binding(5) var<storage, read_write> dgate: array<elem>;
@group(0) @binding(6) var<storage, read_write> dup: array<elem>;
@group(0) @binding(7) var<storage, read> gate_up: array<elem>;
@group(0) @binding(8) var<storage, read_write> d_gate_up: array<elem>;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// swiglu_forward: out[i] = gate[i] * sigmoid(gate[i]) * up[i].
// Bindings: 0 params (uniform; n), 1 gate (read, elem, n), 2 up (read, elem, n), 3 out (read_write, elem, n).
// Dispatch: 2-D grid of 256-wide workgroups over n (see the file header).
@compute @workgroup_size(WG)
fn swiglu_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let g = f32(gate[i]);
    out[i] = elem(g * sigmoid(g) * f32(up[i]));
}

// swiglu_backward: dgate[i] = dy[i] * up[i] * s * (1 + g (1 - s)), dup[i] = dy[i] * g * s, s = sigmoid(g),
// g = gate[i]; both gradients in one pass.
// Bindings: 0 params (uniform; n), 1 gate (read, elem, n), 2 up (read, elem, n), 4 dy (read, elem, n),
// 5 dgate (read_write, elem, n), 6 dup (read_write, elem, n).
// Dispatch: as swiglu_forward.
@compute @workgroup_size(WG)
fn swiglu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let g = f32(gate[i]);
    let s = sigmoid(g);
    let d = f32(dy[i]);
    dgate[i] = elem(d * f32(up[i]) * s * (1.0 + g * (1.0 - s)));
    dup[i] = elem(d * g * s);
}

// The index in gate_up of gate's element i of out (N, I): row i / I, column i % I; up's is I further on.
fn gate_index(i: u32) -> u32 {
    return (i / params.width) * 2u * params.width + i % params.width;
}

// swiglu_fused_forward: out[r, c] = silu(g) * u with g = gate_up[r, c], u = gate_up[r, I + c].
// Bindings: 0 params (uniform; n = N * I, width = I), 7 gate_up (read, elem, N * 2I), 3 out (read_write, elem,
// N * I).
// Dispatch: 2-D grid of 256-wide workgroups over n (see the file header).
@compute @workgroup_size(WG)
fn swiglu_fused_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let at = gate_index(i);
    let g = f32(gate_up[at]);
    out[i] = elem(g * sigmoid(g) * f32(gate_up[at + params.width]));
}

// swiglu_fused_backward: d_gate_up[r, c] = dy[r, c] * u * s * (1 + g (1 - s)), d_gate_up[r, I + c] =
// dy[r, c] * g * s, with g, u as in swiglu_fused_forward and s = sigmoid(g).
// Bindings: 0 params (uniform; n = N * I, width = I), 7 gate_up (read, elem, N * 2I), 4 dy (read, elem, N * I),
// 8 d_gate_up (read_write, elem, N * 2I).
// Dispatch: as swiglu_fused_forward.
@compute @workgroup_size(WG)
fn swiglu_fused_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let at = gate_index(i);
    let g = f32(gate_up[at]);
    let u = f32(gate_up[at + params.width]);
    let s = sigmoid(g);
    let d = f32(dy[i]);
    d_gate_up[at] = elem(d * u * s * (1.0 + g * (1.0 - s)));
    d_gate_up[at + params.width] = elem(d * g * s);
}

// ---- vec4 entries: the same formulas on aligned quads of 4 elements (array<vec4<elem>> views of the bindings).
// Used when every size is a multiple of 4 elements (n for swiglu_*4, I for swiglu_fused_*4): lavapipe pays per
// load/store instruction, and a vec4 one costs about what a scalar one does; GPUs coalesce them too. Results are
// bit for bit those of the scalar entries. With I % 4 == 0 a quad of gate_up never straddles gate and up: in
// quads a row of gate_up holds W = I / 4 of gate then W of up, so out's quad q (row r = q / W) reads gate_up's
// quads q + r W (gate) and q + r W + W (up).
// Dispatch (every vec4 entry): workgroups of 256 over ceil(n / (4 * QUADS)) invocations, the 2-D grid of the
// file header; invocation t (flattened as in the header) handles the contiguous quads t * QUADS + k, k < QUADS,
// each bounds-checked against n / 4. QUADS = 1 gives neighbouring invocations neighbouring quads (GPUs); a
// CPU adapter runs faster with a few per invocation (engine/ops/swiglu.py picks).

override QUADS: u32 = 1u;  // quads per invocation in the vec4 entries

@group(0) @binding(9) var<storage, read> gate4: array<vec4<elem>>;
@group(0) @binding(10) var<storage, read> up4: array<vec4<elem>>;
@group(0) @binding(11) var<storage, read_write> out4: array<vec4<elem>>;
@group(0) @binding(12) var<storage, read> dy4: array<vec4<elem>>;
@group(0) @binding(13) var<storage, read_write> dgate4: array<vec4<elem>>;
@group(0) @binding(14) var<storage, read_write> dup4: array<vec4<elem>>;
@group(0) @binding(15) var<storage, read> gate_up4: array<vec4<elem>>;
@group(0) @binding(16) var<storage, read_write> d_gate_up4: array<vec4<elem>>;

fn sigmoid4(v: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-v));
}

// The first quad of invocation `lid` of workgroup (wg, nwg).
fn first_quad(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return flat_index(wg, nwg, lid, WG) * QUADS;
}

// swiglu_forward4: swiglu_forward on quads. n % 4 == 0.
// Bindings: 0 params (uniform; n), 9 gate4 (read, vec4<elem>, n / 4), 10 up4 (read, vec4<elem>, n / 4),
// 11 out4 (read_write, vec4<elem>, n / 4).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG)
fn swiglu_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let first = first_quad(wg, nwg, lid);
    for (var k = 0u; k < QUADS; k++) {
        let q = first + k;
        if (q >= quads) { return; }
        let g = vec4<f32>(gate4[q]);
        out4[q] = vec4<elem>(g * sigmoid4(g) * vec4<f32>(up4[q]));
    }
}

// swiglu_backward4: swiglu_backward on quads. n % 4 == 0.
// Bindings: 0 params (uniform; n), 9 gate4, 10 up4, 12 dy4 (read, vec4<elem>, n / 4), 13 dgate4, 14 dup4
// (read_write, vec4<elem>, n / 4).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG)
fn swiglu_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let first = first_quad(wg, nwg, lid);
    for (var k = 0u; k < QUADS; k++) {
        let q = first + k;
        if (q >= quads) { return; }
        let g = vec4<f32>(gate4[q]);
        let s = sigmoid4(g);
        let d = vec4<f32>(dy4[q]);
        dgate4[q] = vec4<elem>(d * vec4<f32>(up4[q]) * s * (1.0 + g * (1.0 - s)));
        dup4[q] = vec4<elem>(d * g * s);
    }
}

// The quad of gate_up holding gate's part of out's quad q, kept as (q, its row): the fused vec4 entries divide
// once per invocation and then step one quad at a time, since a division by the runtime W per quad measured
// ~25% of their time on lavapipe.
struct Cursor {
    q: u32,    // out's quad
    row: u32,  // q / W
    col: u32,  // q % W
}

fn cursor(q: u32, w: u32) -> Cursor {
    let row = q / w;
    return Cursor(q, row, q - row * w);
}

// The cursor of the next quad of out: the column wraps to the next row after W.
fn next_quad(c: Cursor, w: u32) -> Cursor {
    let wrap = c.col + 1u == w;
    return Cursor(c.q + 1u, c.row + select(0u, 1u, wrap), select(c.col + 1u, 0u, wrap));
}

// gate's quad in gate_up for out's quad c.q: row r starts at quad 2 r W.
fn gate_quad(c: Cursor, w: u32) -> u32 {
    return c.q + c.row * w;
}

// swiglu_fused_forward4: swiglu_fused_forward on quads. I % 4 == 0.
// Bindings: 0 params (uniform; n = N * I, width = I), 11 out4 (read_write, vec4<elem>, N * I / 4), 15 gate_up4
// (read, vec4<elem>, N * 2I / 4).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG)
fn swiglu_fused_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let w = params.width / 4u;
    var c = cursor(first_quad(wg, nwg, lid), w);
    for (var k = 0u; k < QUADS; k++) {
        if (c.q >= quads) { return; }
        let at = gate_quad(c, w);
        let g = vec4<f32>(gate_up4[at]);
        out4[c.q] = vec4<elem>(g * sigmoid4(g) * vec4<f32>(gate_up4[at + w]));
        c = next_quad(c, w);
    }
}

// swiglu_fused_backward4: swiglu_fused_backward on quads. I % 4 == 0.
// Bindings: 0 params (uniform; n = N * I, width = I), 12 dy4 (read, vec4<elem>, N * I / 4), 15 gate_up4 (read,
// vec4<elem>, N * 2I / 4), 16 d_gate_up4 (read_write, vec4<elem>, N * 2I / 4).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG)
fn swiglu_fused_backward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let w = params.width / 4u;
    var c = cursor(first_quad(wg, nwg, lid), w);
    for (var k = 0u; k < QUADS; k++) {
        if (c.q >= quads) { return; }
        let at = gate_quad(c, w);
        let g = vec4<f32>(gate_up4[at]);
        let u = vec4<f32>(gate_up4[at + w]);
        let s = sigmoid4(g);
        let d = vec4<f32>(dy4[c.q]);
        d_gate_up4[at] = vec4<elem>(d * u * s * (1.0 + g * (1.0 - s)));
        d_gate_up4[at + w] = vec4<elem>(d * g * s);
        c = next_quad(c, w);
    }
}
