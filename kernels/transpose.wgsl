// Transpose: swap two axes of a contiguous tensor. Any swap of axes dim0 < dim1 of a rank-r tensor is the swap
// of the two middle axes of x viewed as (a, d0, b, d1, c), with a = prod(shape[:dim0]), d0 = shape[dim0],
// b = prod(shape[dim0+1:dim1]), d1 = shape[dim1], c = prod(shape[dim1+1:]):
//   out[p, j1, q, j0, s] = x[p, j0, q, j1, s],   out is (a, d1, b, d0, c), contiguous.
// Data is moved, not converted: elem in, elem out.
// Bindings: 0 params (uniform), 1 x (read, elem, n), 2 out (read_write, elem, n).

// use prelude

alias elem = f32;

const WG: u32 = 256u;  // invocations per workgroup

struct Params {
    n: u32,   // elements
    a: u32,
    d0: u32,
    b: u32,
    d1: u32,
    c: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> out: array<elem>;

// transpose_naive: invocation i writes output element i (contiguous writes); when c > 1 neighbouring invocations
// also read contiguous runs of c.
// Dispatch: workgroups of 256 over n, 2-D grid (x = min(ceil(n / 256), 65535), y = ceil(ceil(n / 256) / x)),
// element index (wg.y * nwg.x + wg.x) * 256 + lid.
@compute @workgroup_size(WG)
fn transpose_naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, WG);
    if (i >= params.n) { return; }
    // Output coordinates (p, j1, q, j0, s), innermost first.
    let s = i % params.c;
    var rest = i / params.c;
    let j0 = rest % params.d0;
    rest = rest / params.d0;
    let q = rest % params.b;
    rest = rest / params.b;
    let j1 = rest % params.d1;
    let p = rest / params.d1;
    let src = (((p * params.d0 + j0) * params.b + q) * params.d1 + j1) * params.c + s;
    out[i] = x[src];
}
