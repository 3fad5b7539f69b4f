// SwiGLU, the Llama / Qwen2 MLP activation: out = silu(gate) * up, elementwise over same-shaped tensors,
// silu(g) = g * sigmoid(g). Backward, with s = sigmoid(g):
//   d gate = dy * up * s * (1 + g * (1 - s)),   d up = dy * g * s.
// Math runs in f32 whatever the storage type `elem`; results are stored as elem. sigmoid is 1 / (1 + exp(-g)):
// exp overflows to +inf for g < -88, which gives s = 0 and finite results (no inf * 0).
// Bindings: 0 params (uniform); 1 gate (read, elem, n), 2 up (read, elem, n); forward 3 out (read_write, elem, n);
// backward 4 dy (read, elem, n), 5 dgate (read_write, elem, n), 6 dup (read_write, elem, n).
// Dispatch (every entry): workgroups of 256 over the n elements, 2-D grid (x = min(ceil(n / 256), 65535),
// y = ceil(ceil(n / 256) / x)); invocation (wg.y * nwg.x + wg.x) * 256 + lid handles element i.
// swiglu_fused_forward / swiglu_fused_backward read gate and up from one tensor gate_up (N, 2I), each row gate's
// I values then up's (x @ cat(W_gate, W_up).T): out (N, I) = silu(gate_up[:, :I]) * gate_up[:, I:], and the
// backward writes both gradients into d_gate_up (N, 2I) alike. Bindings 7 gate_up (read), 8 d_gate_up
// (read_write); n = N * I, width = I.

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup of every entry

struct Params {
    n: u32,      // elements in each tensor (swiglu_fused_*: in out, N * I)
    width: u32,  // swiglu_fused_* only: I, the columns of gate (and of up) in a row of gate_up; 0 elsewhere
}

@group(0) @binding(0) var<uniform> params: Params;
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
