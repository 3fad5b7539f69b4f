// Rotary position embedding on quads: the vec4 variants of kernels/rope.wgsl's rope_forward, rope_backward,
// rope_qk_forward and rope_qk_backward, for head dims with D/2 % 4 == 0. The formula is rope.wgsl's (the spec):
// for head-dim index j < D/2 of row (b, t, h) of x (B, T, H, D), with p = positions[b, t] and
// a = f32(p) * inv_freq[j] (f32),
//   y[.., j]       = x[.., j] cos a - x[.., j + D/2] sin a
//   y[.., j + D/2] = x[.., j + D/2] cos a + x[.., j] sin a
// and the backward is the rotation by -a of dy. The angle is reduced to [-pi, pi] as rope.wgsl's cos_sin does,
// so both variants give the same f32 results up to the cos/sin of a vector vs. a scalar argument.
// Every binding is an array<vec4<...>> view of the scalar entries' binding of the same number, so the host passes
// the same tensors (each a whole number of quads at a 16-byte aligned offset).
// One invocation per (token bt = b * T + t, quad jq < D/8 of the first half): it forms cos and sin of the four
// angles p * inv_freq[4 jq .. 4 jq + 3] once and applies them to quad jq and its partner jq + D/8 of every head
// of the token (and, in rope_qk_*, of every k head). lavapipe pays per load/store instruction, and a vec4 one
// costs about what a scalar one does: 8 elements of a head cost 2 loads and 2 stores here, where the scalar
// entries spend 2 loads, 2 stores and the angle's 2 loads on 2 elements; the head loops need no divisions.
// Neighbouring invocations touch neighbouring quads (coalesced on GPUs).
// Bindings: 0 params (uniform); 1 positions (read, i32, B * T or T), 2 inv_freq (read, vec4<f32>, D/8);
// 3 x, 4 y (rope_forward_vec4, and q, q_out of rope_qk_forward_vec4); 5 dy, 6 dx (rope_backward_vec4, and
// dq_out, dq of rope_qk_backward_vec4); 7 xk, 8 yk (k, k_out) and 9 dyk, 10 dxk (dk_out, dk) of rope_qk_*;
// all vec4<elem>, (B, T, heads, D/4) with heads H for q and H_kv for k.
// Dispatch (every entry): workgroups of WG over B*T*D/8 invocations, 2-D grid (x = min(groups, 65535),
// y = ceil(groups / x)); invocation i = (wg.y * nwg.x + wg.x) * WG + lid is token i / (D/8), quad i % (D/8).
// Math runs in f32 whatever the storage type `elem`; results are stored as elem.

// use prelude

alias elem = f32;

const WG: u32 = 64u;  // invocations per workgroup: more workgroups for a CPU's threads (as qkv_split_*_vec4)

// 2 pi = A + B + C, as in rope.wgsl (A has 8 significant bits, so k * A is exact for |k| < 2^16).
const TWO_PI_A: f32 = 6.28125;
const TWO_PI_B: f32 = 0.0019353071693331003;
const TWO_PI_C: f32 = 1.0253131677018246e-11;
const INV_TWO_PI: f32 = 0.15915494309189535;

struct Params {
    tokens: u32,      // B * T
    half: u32,        // D / 2, a multiple of 4
    heads: u32,       // H, the head count of x (of q in rope_qk_*)
    heads_k: u32,     // H_kv, the head count of k (rope_qk_* only; zero elsewhere)
    seq: u32,         // T
    pos_batched: u32, // 1: positions is (B, T); 0: (T,)
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: x, dy, xk, dyk
@group(0) @binding(1) var<storage, read> positions: array<i32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<elem>>;
@group(0) @binding(5) var<storage, read> dy: array<vec4<elem>>;
@group(0) @binding(6) var<storage, read_write> dx: array<vec4<elem>>;
@group(0) @binding(7) var<storage, read> xk: array<vec4<elem>>;
@group(0) @binding(8) var<storage, read_write> yk: array<vec4<elem>>;
@group(0) @binding(9) var<storage, read> dyk: array<vec4<elem>>;
@group(0) @binding(10) var<storage, read_write> dxk: array<vec4<elem>>;

// Where invocation i works: token bt, quad jq, the quad offset D/8 of each partner and the cos and sin of its four
// angles. Heads of the token lie 2 half4 quads apart.
struct Quad {
    valid: bool,    // bt < B*T (the last workgroup overshoots)
    bt: u32,
    jq: u32,
    half4: u32,     // D/8
    c: vec4<f32>,
    s: vec4<f32>,
}

fn quad(i: u32) -> Quad {
    let half4 = params.half / 4u;
    let bt = i / max(half4, 1u);
    let jq = i - bt * half4;
    let valid = half4 > 0u && bt < params.tokens;
    var c = vec4<f32>(0.0);
    var s = vec4<f32>(0.0);
    if (valid) {
        let row = select(bt % params.seq, bt, params.pos_batched == 1u);  // positions (B, T) or (T,)
        let a = f32(positions[row]) * inv_freq[jq];
        // Cody-Waite reduction of a to r in about [-pi, pi].
        let k = round(a * INV_TWO_PI);
        let r = ((a - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
        c = cos(r);
        s = sin(r);
    }
    return Quad(valid, bt, jq, half4, c, s);
}

// The quad of head 0, index 4 jq, of token `at.bt` in a tensor with `heads` heads.
fn first_quad(at: Quad, heads: u32) -> u32 {
    return at.bt * heads * 2u * at.half4 + at.jq;
}

// rope_forward_vec4: rope_forward on quads: y = x cos a + rotate_half(x) sin a. D/2 % 4 == 0.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, vec4<f32>, D/8),
// 3 x (read, vec4<elem>, B*T*H*D/4), 4 y (read_write, vec4<elem>, B*T*H*D/4).
// Dispatch: WG-wide workgroups over B*T*D/8 invocations (see the file header).
@compute @workgroup_size(WG)
fn rope_forward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let at = quad(flat_index(wg, nwg, lid, WG));
    if (!at.valid) { return; }
    let h4 = at.half4;
    let first = first_quad(at, params.heads);
    for (var h = 0u; h < params.heads; h++) {
        let i = first + h * 2u * h4;
        let x1 = vec4<f32>(x[i]);
        let x2 = vec4<f32>(x[i + h4]);
        y[i] = vec4<elem>(x1 * at.c - x2 * at.s);
        y[i + h4] = vec4<elem>(x2 * at.c + x1 * at.s);
    }
}

// rope_backward_vec4: rope_backward on quads: dx1 = dy1 cos a + dy2 sin a, dx2 = dy2 cos a - dy1 sin a.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, vec4<f32>, D/8),
// 5 dy (read, vec4<elem>, B*T*H*D/4), 6 dx (read_write, vec4<elem>, B*T*H*D/4).
// Dispatch: as rope_forward_vec4.
@compute @workgroup_size(WG)
fn rope_backward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let at = quad(flat_index(wg, nwg, lid, WG));
    if (!at.valid) { return; }
    let h4 = at.half4;
    let first = first_quad(at, params.heads);
    for (var h = 0u; h < params.heads; h++) {
        let i = first + h * 2u * h4;
        let g1 = vec4<f32>(dy[i]);
        let g2 = vec4<f32>(dy[i + h4]);
        dx[i] = vec4<elem>(g1 * at.c + g2 * at.s);
        dx[i + h4] = vec4<elem>(g2 * at.c - g1 * at.s);
    }
}

// rope_qk_forward_vec4: rope_qk_forward on quads: q_out = rope(q), k_out = rope(k), the angles shared by q's and
// k's heads of a token. D/2 % 4 == 0.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, vec4<f32>, D/8),
// 3 x = q (read, vec4<elem>, B*T*H*D/4), 4 y = q_out (read_write, vec4<elem>, B*T*H*D/4),
// 7 xk = k (read, vec4<elem>, B*T*H_kv*D/4), 8 yk = k_out (read_write, vec4<elem>, B*T*H_kv*D/4).
// Dispatch: as rope_forward_vec4.
@compute @workgroup_size(WG)
fn rope_qk_forward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let at = quad(flat_index(wg, nwg, lid, WG));
    if (!at.valid) { return; }
    let h4 = at.half4;
    let first_q = first_quad(at, params.heads);
    for (var h = 0u; h < params.heads; h++) {
        let i = first_q + h * 2u * h4;
        let x1 = vec4<f32>(x[i]);
        let x2 = vec4<f32>(x[i + h4]);
        y[i] = vec4<elem>(x1 * at.c - x2 * at.s);
        y[i + h4] = vec4<elem>(x2 * at.c + x1 * at.s);
    }
    let first_k = first_quad(at, params.heads_k);
    for (var h = 0u; h < params.heads_k; h++) {
        let i = first_k + h * 2u * h4;
        let x1 = vec4<f32>(xk[i]);
        let x2 = vec4<f32>(xk[i + h4]);
        yk[i] = vec4<elem>(x1 * at.c - x2 * at.s);
        yk[i + h4] = vec4<elem>(x2 * at.c + x1 * at.s);
    }
}

// rope_qk_backward_vec4: rope_qk_backward on quads: dq and dk, each the rotation by -a of dq_out and dk_out.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, vec4<f32>, D/8),
// 5 dy = dq_out (read, vec4<elem>, B*T*H*D/4), 6 dx = dq (read_write, vec4<elem>, B*T*H*D/4),
// 9 dyk = dk_out (read, vec4<elem>, B*T*H_kv*D/4), 10 dxk = dk (read_write, vec4<elem>, B*T*H_kv*D/4).
// Dispatch: as rope_forward_vec4.
@compute @workgroup_size(WG)
fn rope_qk_backward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let at = quad(flat_index(wg, nwg, lid, WG));
    if (!at.valid) { return; }
    let h4 = at.half4;
    let first_q = first_quad(at, params.heads);
    for (var h = 0u; h < params.heads; h++) {
        let i = first_q + h * 2u * h4;
        let g1 = vec4<f32>(dy[i]);
        let g2 = vec4<f32>(dy[i + h4]);
        dx[i] = vec4<elem>(g1 * at.c + g2 * at.s);
        dx[i + h4] = vec4<elem>(g2 * at.c - g1 * at.s);
    }
    let first_k = first_quad(at, params.heads_k);
    for (var h = 0u; h < params.heads_k; h++) {
        let i = first_k + h * 2u * h4;
        let g1 = vec4<f32>(dyk[i]);
        let g2 = vec4<f32>(dyk[i + h4]);
        dxk[i] = vec4<elem>(g1 * at.c + g2 * at.s);
        dxk[i + h4] = vec4<elem>(g2 * at.c - g1 * at.s);
    }
}
