// AdamW with PyTorch's semantics (torch.optim.AdamW, single-tensor path, amsgrad off), one parameter tensor
// per dispatch, updated in place together with its two moments. For step t (counted per parameter from 1):
//   p   <- p * (1 - lr * wd)                                  (decoupled weight decay)
//   m   <- m + (1 - beta1) (g - m)                            (torch's lerp_ form of beta1 m + (1 - beta1) g)
//   v   <- beta2 v + (1 - beta2) g g
//   p   <- p - step_size * (m / (sqrt(v) / bc2_sqrt + eps)),  step_size = lr / (1 - beta1^t),
//                                                             bc2_sqrt = sqrt(1 - beta2^t)
// The host computes the per-step scalars (decay, step_size, bc2_sqrt) in float64. On a parameter's first step
// (`fresh` = 1) the moments are read as 0, so they need no zero-filled upload. Math and moments are f32; the
// parameter and its gradient are stored as `elem`. With `scaled` = 1 the gradient is read as g * grad_factor[0]
// and left unchanged in memory: clipping by global norm folded into the step, the clip coefficient read from the
// GPU, with no pass of its own over the gradients. adamw_step_naive is the spec; adamw_step4 computes the same
// formulas, in the same order, on quads of 4 elements (used when n is a multiple of 4).

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup

struct Params {
    n: u32,             // elements of the parameter
    fresh: u32,         // 1: first step, the moments' old values are taken as 0
    scaled: u32,        // 1: the gradient is multiplied by grad_factor[0] as it is read
    decay: f32,         // 1 - lr * weight_decay
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    step_size: f32,     // lr / (1 - beta1^t)
    bc2_sqrt: f32,      // sqrt(1 - beta2^t)
}

@group(0) @binding(0) var<uniform> params: Params;
// wide reads: grad4
@group(0) @binding(1) var<storage, read_write> param: array<elem>;
@group(0) @binding(2) var<storage, read> grad: array<elem>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(5) var<storage, read> grad_factor: array<f32>;  // read only when scaled = 1

fn gradient_scale() -> f32 {
    return select(1.0, grad_factor[0], params.scaled == 1u);
}

// adamw_step_naive: one element of the update above per invocation.
// Bindings: 0 params (uniform), 1 param (read_write, elem, n), 2 grad (read, elem, n),
// 3 exp_avg (read_write, f32, n), 4 exp_avg_sq (read_write, f32, n), 5 grad_factor (read, f32, >= 1; any
// buffer not written by the dispatch when scaled = 0).
// Dispatch: workgroups of 256 over n, 2-D grid (x = min(ceil(n / 256), 65535), y = ceil(ceil(n / 256) / x)),
// element (wg.y * nwg.x + wg.x) * 256 + lid.
@compute @workgroup_size(WG)
fn adamw_step_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    let g = f32(grad[i]) * gradient_scale();
    var m = 0.0;
    var v = 0.0;
    if (params.fresh == 0u) {
        m = exp_avg[i];
        v = exp_avg_sq[i];
    }
    m = m + params.one_minus_beta1 * (g - m);
    v = v * params.beta2 + params.one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    let p = f32(param[i]) * params.decay;
    let denom = sqrt(v) / params.bc2_sqrt + params.eps;
    param[i] = elem(p - params.step_size * (m / denom));
}

// ---- vec4 entry: the update above on aligned quads (array<vec4<...>> views at the binding numbers of the scalar
// arrays, so both entries take the same buffers in the same order). lavapipe pays per load/store instruction and
// a vec4 one costs about what a scalar one does; GPUs coalesce them too.

override QUADS: u32 = 1u;  // quads per invocation of adamw_step4

@group(0) @binding(1) var<storage, read_write> param4: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read_write> exp_avg4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq4: array<vec4<f32>>;

// adamw_step4: adamw_step_naive on quads q < n / 4 (elements 4q .. 4q + 3). n % 4 == 0.
// Bindings: 0 params (uniform), 1 param4 (read_write, vec4<elem>, n / 4), 2 grad4 (read, vec4<elem>, n / 4),
// 3 exp_avg4 (read_write, vec4<f32>, n / 4), 4 exp_avg_sq4 (read_write, vec4<f32>, n / 4), 5 grad_factor as in
// adamw_step_naive.
// Dispatch: workgroups of 256 over ceil(n / (4 * QUADS)) invocations, 2-D grid (x = min(groups, 65535),
// y = ceil(groups / x)); invocation lid of workgroup w = wg.y * nwg.x + wg.x handles quads
// w * 256 * QUADS + k * 256 + lid for k < QUADS (strided: neighbouring invocations touch neighbouring quads).
@compute @workgroup_size(WG)
fn adamw_step4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let quads = params.n / 4u;
    let first = workgroup_index(wg, nwg) * WG * QUADS + lid;
    let scale = gradient_scale();
    for (var k = 0u; k < QUADS; k++) {
        let q = first + k * WG;
        if (q >= quads) { return; }
        let g = vec4<f32>(grad4[q]) * scale;
        var m = vec4<f32>(0.0);
        var v = vec4<f32>(0.0);
        if (params.fresh == 0u) {
            m = exp_avg4[q];
            v = exp_avg_sq4[q];
        }
        m = m + params.one_minus_beta1 * (g - m);
        v = v * params.beta2 + params.one_minus_beta2 * g * g;
        exp_avg4[q] = m;
        exp_avg_sq4[q] = v;
        let p = vec4<f32>(param4[q]) * params.decay;
        let denom = sqrt(v) / params.bc2_sqrt + params.eps;
        param4[q] = vec4<elem>(p - params.step_size * (m / denom));
    }
}
