// Rotary position embedding, Hugging Face Llama convention (rotate_half: the head dim D split in two halves,
// not interleaved pairs). x is (B, T, H, D), contiguous; positions is (B, T) (pos_batched = 1) or (T,) shared by
// every batch row (pos_batched = 0). For head-dim index j < D/2 of row (b, t, h), with p = positions[b, t]:
//   a = f32(p) * inv_freq[j]   (f32, as HF's rotary embedding computes it)
//   y[.., j]       = x[.., j] cos a - x[.., j + D/2] sin a
//   y[.., j + D/2] = x[.., j + D/2] cos a + x[.., j] sin a
// i.e. y = x * cat(cos, cos) + rotate_half(x) * cat(sin, sin), rotate_half(x) = cat(-x2, x1).
// inv_freq (D/2 f32 values, 1 / theta^(2j / D) by default) comes from the host, computed exactly as HF does: WGSL's
// pow is a few ulp off, and one ulp of inv_freq moves the angle at position 32k by 2e-3 rad.
// Backward is the inverse rotation (angle -a) of dy. Before cos/sin the f32 angle is reduced to [-pi, pi] here
// (WGSL bounds cos/sin error only on [-pi, pi]), with 2 pi split in three parts: accurate for |a| < 2^16 * 2 pi,
// i.e. positions below about 400k.
// Math runs in f32 whatever the storage type `elem`; results are stored as elem.
// Bindings: 0 params (uniform); 1 positions (read, i32, B * T or T), 2 inv_freq (read, f32, D/2); forward
// 3 x (read, elem, B*T*H*D), 4 y (read_write, elem, B*T*H*D); backward 5 dy (read, elem, B*T*H*D),
// 6 dx (read_write, elem, B*T*H*D).
// Dispatch (rope_forward, rope_backward): one invocation per rotated pair, n_pairs = B*T*H*(D/2), workgroups of
// 256, 2-D grid (x = min(ceil(n_pairs / 256), 65535), y = ceil(ceil(n_pairs / 256) / x)); pair
// (wg.y * nwg.x + wg.x) * 256 + lid.
// rope_qk_forward / rope_qk_backward rotate q (B, T, H, D) and k (B, T, H_kv, D) in one dispatch (decoding is bound
// by dispatch count): pairs [0, n_q_pairs) are q's, [n_q_pairs, n_pairs) k's, each with the same formula and the
// same positions and inv_freq; they add bindings 7 xk, 8 yk (forward) and 9 dyk, 10 dxk (backward) for k.
// qkv_split_forward / qkv_split_backward take an attention layer's fused projection qkv (N, (H + 2 H_kv) D),
// N = B*T, each row the q heads, then the k heads, then the v heads (x @ cat(Wq, Wk, Wv).T), apart into q
// (B, T, H, D), k and v (B, T, H_kv, D), rotating q and k by the formula above when rotate = 1 (copying them when
// 0: Qwen3 normalizes them first) and copying v: one dispatch for the split and the RoPE. Bindings 11 qkv,
// 12 q_out, 13 k_out, 14 v_out (forward) and 15 dq, 16 dk, 17 dv, 18 dqkv (backward). When decoding, the
// forward writes k and v straight into their KV cache (kv_t_cap, kv_column), which saves the cache write.
// qkv_split_forward_vec4 / qkv_split_backward_vec4 (at the end) compute the same on quads when D/2 % 4 == 0.

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup of every entry

// 2 pi = A + B + C (B, C: f32 values of the remainders). A has 8 significant bits, so k * A is exact for
// |k| < 2^16 and a - k A is exact; k B and k C add rounding errors of about |k| 1e-10.
const TWO_PI_A: f32 = 6.28125;
const TWO_PI_B: f32 = 0.0019353071693331003;
const TWO_PI_C: f32 = 1.0253131677018246e-11;
const INV_TWO_PI: f32 = 0.15915494309189535;

struct Params {
    n_pairs: u32,     // B * T * H * D / 2
    half: u32,        // D / 2
    heads: u32,       // H
    seq: u32,         // T
    pos_batched: u32, // 1: positions is (B, T); 0: (T,)
    // rope_qk_* only (zero for rope_forward / rope_backward):
    heads_k: u32,     // H_kv, the head count of k
    n_q_pairs: u32,   // B * T * H * D / 2; n_pairs is then B * T * (H + H_kv) * D / 2
    // qkv_split_* only (zero elsewhere); heads and heads_k are H and H_kv, n_pairs is B * T * (H + 2 H_kv) * D / 2
    rotate: u32,      // 1: q and k are rotated; 0: copied
    // qkv_split_forward only: k_out and v_out are (B, kv_t_cap, H_kv, D) and token t of row b goes to position
    // kv_column + t (a KV cache); kv_t_cap = T, kv_column = 0 make them (B, T, H_kv, D)
    kv_t_cap: u32,
    kv_column: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: qkv4, dq4, dk4, dv4
@group(0) @binding(1) var<storage, read> positions: array<i32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<elem>;
@group(0) @binding(4) var<storage, read_write> y: array<elem>;
@group(0) @binding(5) var<storage, read> dy: array<elem>;
@group(0) @binding(6) var<storage, read_write> dx: array<elem>;
@group(0) @binding(7) var<storage, read> xk: array<elem>;
@group(0) @binding(8) var<storage, read_write> yk: array<elem>;
@group(0) @binding(9) var<storage, read> dyk: array<elem>;
@group(0) @binding(10) var<storage, read_write> dxk: array<elem>;
@group(0) @binding(11) var<storage, read> qkv: array<elem>;
@group(0) @binding(12) var<storage, read_write> q_out: array<elem>;
@group(0) @binding(13) var<storage, read_write> k_out: array<elem>;
@group(0) @binding(14) var<storage, read_write> v_out: array<elem>;
@group(0) @binding(15) var<storage, read> dq: array<elem>;
@group(0) @binding(16) var<storage, read> dk: array<elem>;
@group(0) @binding(17) var<storage, read> dv: array<elem>;
@group(0) @binding(18) var<storage, read_write> dqkv: array<elem>;

// (cos a, sin a) for pair i, and the element offset of its first half: i = ((b * T + t) * H + h) * D/2 + j.
struct Rotation {
    c: f32,
    s: f32,
    offset: u32,  // index of x[b, t, h, j]; its partner is offset + D/2
}

fn rotation(i: u32) -> Rotation {
    return rotation_of(i, params.heads);
}

// As rotation, for pair i of a tensor with `heads` heads (rope_qk_*: H for q, H_kv for k).
fn rotation_of(i: u32, heads: u32) -> Rotation {
    let j = i % params.half;
    let row = i / params.half;   // (b * T + t) * heads + h
    let cs = cos_sin(row / heads, j);
    return Rotation(cs.x, cs.y, row * 2u * params.half + j);
}

// The position of token bt = b * T + t.
fn position(bt: u32) -> i32 {
    if (params.pos_batched == 1u) {
        return positions[bt];
    }
    return positions[bt % params.seq];
}

// (cos a, sin a) of head-dim index j < D/2 at token bt = b * T + t.
fn cos_sin(bt: u32, j: u32) -> vec2<f32> {
    let a = f32(position(bt)) * inv_freq[j];
    // Cody-Waite reduction of a to r in about [-pi, pi].
    let k = round(a * INV_TWO_PI);
    let r = ((a - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
    return vec2<f32>(cos(r), sin(r));
}

// Where pair i of qkv_split_* lies: the element of its first half in the fused row (`fused`, its partner is
// fused + D/2) and in its own tensor (`own`), which tensor (0 q, 1 k, 2 v) and its token bt = b * T + t.
struct SplitPair {
    fused: u32,
    own: u32,
    part: u32,
    bt: u32,
    j: u32,
}

fn split_pair(i: u32) -> SplitPair {
    let half = params.half;
    let j = i % half;
    let head_row = i / half;                          // bt * (H + 2 H_kv) + fused head
    let width = params.heads + 2u * params.heads_k;
    let bt = head_row / width;
    let head = head_row % width;
    var part = 0u;
    var own_row = bt * params.heads + head;           // q: (bt, head)
    if (head >= params.heads + params.heads_k) {
        part = 2u;
        own_row = bt * params.heads_k + head - params.heads - params.heads_k;
    } else if (head >= params.heads) {
        part = 1u;
        own_row = bt * params.heads_k + head - params.heads;
    }
    return SplitPair(head_row * 2u * half + j, own_row * 2u * half + j, part, bt, j);
}

// rope_forward: y = x cos a + rotate_half(x) sin a, one invocation per pair (j, j + D/2) of one (b, t, h).
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, f32, D/2),
// 3 x (read, elem, B*T*H*D), 4 y (read_write, elem, B*T*H*D).
// Dispatch: 2-D grid of 256-wide workgroups over n_pairs (see the file header).
@compute @workgroup_size(WG)
fn rope_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n_pairs) { return; }
    let rot = rotation(i);
    let x1 = f32(x[rot.offset]);
    let x2 = f32(x[rot.offset + params.half]);
    y[rot.offset] = elem(x1 * rot.c - x2 * rot.s);
    y[rot.offset + params.half] = elem(x2 * rot.c + x1 * rot.s);
}

// rope_backward: dx = the rotation by -a of dy: dx1 = dy1 cos a + dy2 sin a, dx2 = dy2 cos a - dy1 sin a.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, f32, D/2),
// 5 dy (read, elem, B*T*H*D), 6 dx (read_write, elem, B*T*H*D).
// Dispatch: as rope_forward.
@compute @workgroup_size(WG)
fn rope_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n_pairs) { return; }
    let rot = rotation(i);
    let g1 = f32(dy[rot.offset]);
    let g2 = f32(dy[rot.offset + params.half]);
    dx[rot.offset] = elem(g1 * rot.c + g2 * rot.s);
    dx[rot.offset + params.half] = elem(g2 * rot.c - g1 * rot.s);
}

// rope_qk_forward: rope_forward of q and of k in one dispatch: q_out = rope(q), k_out = rope(k), same positions.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, f32, D/2),
// 3 x = q (read, elem, B*T*H*D), 4 y = q_out (read_write, elem, B*T*H*D),
// 7 xk = k (read, elem, B*T*H_kv*D), 8 yk = k_out (read_write, elem, B*T*H_kv*D).
// Dispatch: 2-D grid of 256-wide workgroups over n_pairs = B*T*(H + H_kv)*D/2 (see the file header); pair
// i < n_q_pairs is q's pair i, otherwise k's pair i - n_q_pairs.
@compute @workgroup_size(WG)
fn rope_qk_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n_pairs) { return; }
    if (i < params.n_q_pairs) {
        let rot = rotation_of(i, params.heads);
        let x1 = f32(x[rot.offset]);
        let x2 = f32(x[rot.offset + params.half]);
        y[rot.offset] = elem(x1 * rot.c - x2 * rot.s);
        y[rot.offset + params.half] = elem(x2 * rot.c + x1 * rot.s);
    } else {
        let rot = rotation_of(i - params.n_q_pairs, params.heads_k);
        let x1 = f32(xk[rot.offset]);
        let x2 = f32(xk[rot.offset + params.half]);
        yk[rot.offset] = elem(x1 * rot.c - x2 * rot.s);
        yk[rot.offset + params.half] = elem(x2 * rot.c + x1 * rot.s);
    }
}

// rope_qk_backward: rope_backward of dq_out and of dk_out in one dispatch (each the rotation by -a).
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, f32, D/2),
// 5 dy = dq_out (read, elem, B*T*H*D), 6 dx = dq (read_write, elem, B*T*H*D),
// 9 dyk = dk_out (read, elem, B*T*H_kv*D), 10 dxk = dk (read_write, elem, B*T*H_kv*D).
// Dispatch: as rope_qk_forward.
@compute @workgroup_size(WG)
fn rope_qk_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n_pairs) { return; }
    if (i < params.n_q_pairs) {
        let rot = rotation_of(i, params.heads);
        let g1 = f32(dy[rot.offset]);
        let g2 = f32(dy[rot.offset + params.half]);
        dx[rot.offset] = elem(g1 * rot.c + g2 * rot.s);
        dx[rot.offset + params.half] = elem(g2 * rot.c - g1 * rot.s);
    } else {
        let rot = rotation_of(i - params.n_q_pairs, params.heads_k);
        let g1 = f32(dyk[rot.offset]);
        let g2 = f32(dyk[rot.offset + params.half]);
        dxk[rot.offset] = elem(g1 * rot.c + g2 * rot.s);
        dxk[rot.offset + params.half] = elem(g2 * rot.c - g1 * rot.s);
    }
}

// qkv_split_forward: q_out, k_out, v_out = the q, k and v heads of each fused row qkv[bt] (its (H + 2 H_kv) heads
// of D in that order), q and k rotated as rope_forward rotates them when rotate = 1, copied when 0; v copied.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, f32, D/2),
// 11 qkv (read, elem, B*T*(H + 2 H_kv)*D), 12 q_out (read_write, elem, B*T*H*D),
// 13 k_out (read_write, elem, B*T*H_kv*D), 14 v_out (read_write, elem, B*T*H_kv*D).
// Dispatch: 2-D grid of 256-wide workgroups over n_pairs = B*T*(H + 2 H_kv)*D/2 (see the file header); pair i is
// head-dim index i % (D/2) of fused head (i / (D/2)) % (H + 2 H_kv) of row i / ((D/2)(H + 2 H_kv)).
@compute @workgroup_size(WG)
fn qkv_split_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n_pairs) { return; }
    let at = split_pair(i);
    var x1 = f32(qkv[at.fused]);
    var x2 = f32(qkv[at.fused + params.half]);
    if (at.part == 2u) {
        let own = kv_position(at);
        v_out[own] = elem(x1);
        v_out[own + params.half] = elem(x2);
        return;
    }
    if (params.rotate == 1u) {
        let cs = cos_sin(at.bt, at.j);
        let r1 = x1 * cs.x - x2 * cs.y;
        x2 = x2 * cs.x + x1 * cs.y;
        x1 = r1;
    }
    if (at.part == 0u) {
        q_out[at.own] = elem(x1);
        q_out[at.own + params.half] = elem(x2);
    } else {
        let own = kv_position(at);
        k_out[own] = elem(x1);
        k_out[own + params.half] = elem(x2);
    }
}

// The element of pair `at` (a k or v pair) in a (B, kv_t_cap, H_kv, D) k_out / v_out, at position kv_column + t.
fn kv_position(at: SplitPair) -> u32 {
    let b = at.bt / params.seq;
    let t = at.bt % params.seq;
    let head = (at.own / (2u * params.half)) % params.heads_k;
    return ((b * params.kv_t_cap + params.kv_column + t) * params.heads_k + head) * 2u * params.half + at.j;
}

// qkv_split_backward: dqkv, the gradient of qkv, from those of q_out, k_out and v_out: each pair of dq and dk
// rotated back (rope_backward's rotation by -a) when rotate = 1, copied when 0; dv copied; all into their columns
// of the fused rows.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq (read, f32, D/2),
// 15 dq (read, elem, B*T*H*D), 16 dk (read, elem, B*T*H_kv*D), 17 dv (read, elem, B*T*H_kv*D),
// 18 dqkv (read_write, elem, B*T*(H + 2 H_kv)*D).
// Dispatch: as qkv_split_forward.
@compute @workgroup_size(WG)
fn qkv_split_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n_pairs) { return; }
    let at = split_pair(i);
    var g1: f32;
    var g2: f32;
    if (at.part == 0u) {
        g1 = f32(dq[at.own]);
        g2 = f32(dq[at.own + params.half]);
    } else if (at.part == 1u) {
        g1 = f32(dk[at.own]);
        g2 = f32(dk[at.own + params.half]);
    } else {
        g1 = f32(dv[at.own]);
        g2 = f32(dv[at.own + params.half]);
    }
    if (at.part != 2u && params.rotate == 1u) {
        let cs = cos_sin(at.bt, at.j);
        let r1 = g1 * cs.x + g2 * cs.y;
        g2 = g2 * cs.x - g1 * cs.y;
        g1 = r1;
    }
    dqkv[at.fused] = elem(g1);
    dqkv[at.fused + params.half] = elem(g2);
}

// ---- vec4 entries: qkv_split_* on quads (array<vec4<elem>> views of the same bindings), for D/2 % 4 == 0.
// One invocation per (token bt, quad jq < D/8 of the first half): it forms cos and sin of the four angles
// p * inv_freq[4 jq .. 4 jq + 3] once and applies them to quad jq and its partner jq + D/8 of every q and k head
// of the token, then copies its v quads. lavapipe pays per load/store instruction and a vec4 one costs about
// what a scalar one does: here 8 elements of a head cost 2 loads and 2 stores, where the scalar entries spend 2
// loads, 2 stores and 2 loads of the angles' inputs on 2 elements; the head loops need no divisions (measured on
// lavapipe: ~2.5x faster than one invocation per (token, head, quad)). Neighbouring invocations touch
// neighbouring quads (coalesced on GPUs).
// Dispatch (qkv_split_forward_vec4, qkv_split_backward_vec4): workgroups of WG4 over B*T*D/8 invocations in the
// 2-D grid of the file header; invocation i is token i / (D/8), quad i % (D/8). Params as the scalar entries'
// (n_pairs = B*T*(H + 2 H_kv)*D/2, from which the token count is recovered).

const WG4: u32 = 64u;  // invocations per workgroup of the vec4 entries: more workgroups for a CPU's threads

@group(0) @binding(2) var<storage, read> inv_freq4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> qkv4: array<vec4<elem>>;
@group(0) @binding(12) var<storage, read_write> q_out4: array<vec4<elem>>;
@group(0) @binding(13) var<storage, read_write> k_out4: array<vec4<elem>>;
@group(0) @binding(14) var<storage, read_write> v_out4: array<vec4<elem>>;
@group(0) @binding(15) var<storage, read> dq4: array<vec4<elem>>;
@group(0) @binding(16) var<storage, read> dk4: array<vec4<elem>>;
@group(0) @binding(17) var<storage, read> dv4: array<vec4<elem>>;
@group(0) @binding(18) var<storage, read_write> dqkv4: array<vec4<elem>>;

// Where invocation i of a vec4 entry works, in quads: its partner quads lie `half4` = D/8 further on, and each
// next head 2 half4 further on.
struct SplitQuad {
    valid: bool,  // bt < B*T (the last workgroup overshoots)
    bt: u32,      // token b * T + t
    jq: u32,      // quad of the first half: head-dim indices 4 jq .. 4 jq + 3
    fused: u32,   // quad of qkv[bt, head 0, 4 jq]
    q: u32,       // quad of q_out[bt, head 0, 4 jq]
    kv: u32,      // quad of k_out[b, kv_column + t, head 0, 4 jq] (and of v_out's)
    half4: u32,   // D/8
}

fn split_quad(i: u32) -> SplitQuad {
    let half4 = params.half / 4u;
    let width = params.heads + 2u * params.heads_k;
    let tokens = params.n_pairs / (width * params.half);
    let bt = i / half4;
    let jq = i - bt * half4;
    let b = bt / params.seq;
    let kv_row = bt + b * (params.kv_t_cap - params.seq) + params.kv_column;  // b * kv_t_cap + kv_column + t
    let head4 = 2u * half4;
    return SplitQuad(bt < tokens, bt, jq, bt * width * head4 + jq, bt * params.heads * head4 + jq,
                     kv_row * params.heads_k * head4 + jq, half4);
}

// (cos, sin) of the four angles of head-dim indices 4 jq .. 4 jq + 3 at token bt, reduced as cos_sin does.
struct Turn4 {
    c: vec4<f32>,
    s: vec4<f32>,
}

fn turn4(bt: u32, jq: u32) -> Turn4 {
    let a = f32(position(bt)) * inv_freq4[jq];
    let k = round(a * INV_TWO_PI);
    let r = ((a - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
    return Turn4(cos(r), sin(r));
}

// qkv_split_forward_vec4: qkv_split_forward on quads. D/2 % 4 == 0.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq4 (read, vec4<f32>, D/8),
// 11 qkv4 (read, vec4<elem>, B*T*(H + 2 H_kv)*D/4), 12 q_out4 (read_write, vec4<elem>, B*T*H*D/4),
// 13 k_out4, 14 v_out4 (read_write, vec4<elem>, B*kv_t_cap*H_kv*D/4).
// Dispatch: the vec4 grid (see above).
@compute @workgroup_size(WG4)
fn qkv_split_forward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let at = split_quad(flat_index(wg, nwg, lid, WG4));
    if (!at.valid) { return; }
    let h4 = at.half4;
    let head4 = 2u * h4;
    let k_first = at.fused + params.heads * head4;  // the token's first k head in qkv4
    let v_first = k_first + params.heads_k * head4;
    if (params.rotate == 1u) {
        let turn = turn4(at.bt, at.jq);
        for (var h = 0u; h < params.heads; h++) {
            let src = at.fused + h * head4;
            let dst = at.q + h * head4;
            let x1 = vec4<f32>(qkv4[src]);
            let x2 = vec4<f32>(qkv4[src + h4]);
            q_out4[dst] = vec4<elem>(x1 * turn.c - x2 * turn.s);
            q_out4[dst + h4] = vec4<elem>(x2 * turn.c + x1 * turn.s);
        }
        for (var h = 0u; h < params.heads_k; h++) {
            let src = k_first + h * head4;
            let dst = at.kv + h * head4;
            let x1 = vec4<f32>(qkv4[src]);
            let x2 = vec4<f32>(qkv4[src + h4]);
            k_out4[dst] = vec4<elem>(x1 * turn.c - x2 * turn.s);
            k_out4[dst + h4] = vec4<elem>(x2 * turn.c + x1 * turn.s);
        }
    } else {
        for (var h = 0u; h < params.heads; h++) {
            q_out4[at.q + h * head4] = qkv4[at.fused + h * head4];
            q_out4[at.q + h * head4 + h4] = qkv4[at.fused + h * head4 + h4];
        }
        for (var h = 0u; h < params.heads_k; h++) {
            k_out4[at.kv + h * head4] = qkv4[k_first + h * head4];
            k_out4[at.kv + h * head4 + h4] = qkv4[k_first + h * head4 + h4];
        }
    }
    for (var h = 0u; h < params.heads_k; h++) {
        v_out4[at.kv + h * head4] = qkv4[v_first + h * head4];
        v_out4[at.kv + h * head4 + h4] = qkv4[v_first + h * head4 + h4];
    }
}

// qkv_split_backward_vec4: qkv_split_backward on quads. D/2 % 4 == 0.
// Bindings: 0 params (uniform), 1 positions (read, i32, B*T or T), 2 inv_freq4 (read, vec4<f32>, D/8),
// 15 dq4 (read, vec4<elem>, B*T*H*D/4), 16 dk4, 17 dv4 (read, vec4<elem>, B*T*H_kv*D/4),
// 18 dqkv4 (read_write, vec4<elem>, B*T*(H + 2 H_kv)*D/4).
// Dispatch: the vec4 grid (see above); params as qkv_split_backward's (kv_t_cap = T, kv_column = 0).
@compute @workgroup_size(WG4)
fn qkv_split_backward_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let at = split_quad(flat_index(wg, nwg, lid, WG4));
    if (!at.valid) { return; }
    let h4 = at.half4;
    let head4 = 2u * h4;
    let k_first = at.fused + params.heads * head4;  // the token's first k head in dqkv4
    let v_first = k_first + params.heads_k * head4;
    if (params.rotate == 1u) {
        let turn = turn4(at.bt, at.jq);
        for (var h = 0u; h < params.heads; h++) {
            let src = at.q + h * head4;
            let dst = at.fused + h * head4;
            let g1 = vec4<f32>(dq4[src]);
            let g2 = vec4<f32>(dq4[src + h4]);
            dqkv4[dst] = vec4<elem>(g1 * turn.c + g2 * turn.s);
            dqkv4[dst + h4] = vec4<elem>(g2 * turn.c - g1 * turn.s);
        }
        for (var h = 0u; h < params.heads_k; h++) {
            let src = at.kv + h * head4;
            let dst = k_first + h * head4;
            let g1 = vec4<f32>(dk4[src]);
            let g2 = vec4<f32>(dk4[src + h4]);
            dqkv4[dst] = vec4<elem>(g1 * turn.c + g2 * turn.s);
            dqkv4[dst + h4] = vec4<elem>(g2 * turn.c - g1 * turn.s);
        }
    } else {
        for (var h = 0u; h < params.heads; h++) {
            dqkv4[at.fused + h * head4] = dq4[at.q + h * head4];
            dqkv4[at.fused + h * head4 + h4] = dq4[at.q + h * head4 + h4];
        }
        for (var h = 0u; h < params.heads_k; h++) {
            dqkv4[k_first + h * head4] = dk4[at.kv + h * head4];
            dqkv4[k_first + h * head4 + h4] = dk4[at.kv + h * head4 + h4];
        }
    }
    for (var h = 0u; h < params.heads_k; h++) {
        dqkv4[v_first + h * head4] = dv4[at.kv + h * head4];
        dqkv4[v_first + h * head4 + h4] = dv4[at.kv + h * head4 + h4];
    }
}
