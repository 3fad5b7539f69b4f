// matmul_tiled.wgsl -- batched matrix multiply  C[b] = op(A[b]) @ op(B[b]), tiled over workgroup memory
//
// The same operation, Params struct and bindings as matmul.wgsl (one params dict serves every variant; read its
// header for the transposes, the lda / ldb / ldc + offset windows, batch strides with 0 = broadcast, accumulate
// and bias):
//   A(m,k) = a[offset_a + stride_a*b + m*lda + k]   (trans_a = 0)   or  a[... + k*lda + m]   (trans_a = 1)
//   B(k,n) = b[offset_b + stride_b*b + k*ldb + n]   (trans_b = 0)   or  b[... + n*ldb + k]   (trans_b = 1)
//   C(m,n) = c[offset_c + stride_c*b + m*ldc + n]  (+)=  sum_k A(m,k) * B(k,n)  (+ bias[offset_bias + n])
//
// Bindings (group 0):
//   @binding(0) uniform        params: Params
//   @binding(1) storage, read  a: array<elem>   (matmul_tiled_vec4: a4, the same buffer as array<vec4<elem>>)
//   @binding(2) storage, read  b: array<elem>   (matmul_tiled_vec4: b4 / b_at4); packed bf16 or f16 pairs in
//                              u32 words when the pipeline asks (weights = bf16/f16), read through b_at / b_at4
//   @binding(3) storage, rw    c: array<elem>
//   @binding(4) storage, read  bias: array<elem>  N elements when has_bias = 1, never read otherwise
// Loads are converted to f32 and accumulated in f32; stores convert back to elem.
//
// Tiling (the override constants; engine.ops.matmul derives WG_X and WG_Y and checks every limit):
//   A workgroup computes the BM x BN block C(m0 .. m0+BM-1, n0 .. n0+BN-1) of batch z, m0 = BM * wid.y,
//   n0 = BN * wid.x.  K runs in tiles of BK: each invocation copies its share of the BM x BK tile of op(A) and
//   the BK x BN tile of op(B) into workgroup memory (converted to f32, zero beyond M, N and K, so no size needs
//   to be a multiple of a tile), then every invocation multiplies out of it.  Invocation (tx, ty) holds a
//   TM x TN register block (TM, TN = 4 or 8) made of 4x4 quads: row quads ty, ty + WG_Y (rows 4*q .. 4*q+3 of
//   the block), column quads tx, tx + WG_X, so neighbouring invocations read neighbouring vec4s of the tiles
//   (no bank conflicts) and store neighbouring columns of C.
//   With STAGES = 2 the tiles are double-buffered: tile t+1 is loaded into registers before tile t is
//   multiplied and written to the other buffer after, one barrier per tile; STAGES = 1 needs two barriers.
//   Both tiles are stored k-major, one vec4 of padding per k row, so a transposed copy (an operand stored
//   along k) spreads over the banks.
//   Workgroup memory: STAGES * BK * (BM/4 + 1 + BN/4 + 1) * 16 bytes.
//   Requirements (checked on the host): BM = TM * WG_Y, BN = TN * WG_X, BK a multiple of 4, and at most
//   MAX_STAGED elements of each tile per invocation (ceil(BM*BK / (WG_X*WG_Y)) <= 16, same for BN).
//
// Entries (both: workgroup_size (WG_X, WG_Y, 1), grid = (ceil(N / BN), ceil(M / BM), batch)):
//   matmul_tiled        scalar loads: any layout, any weights.
//   matmul_tiled_vec4   loads 4 consecutive elements of A and of B at once along each operand's stored rows.
//                       Needs lda, ldb, offset_a, offset_b, stride_a, stride_b all multiples of 4 and both
//                       buffers bound at 16-byte boundaries (engine.ops.matmul checks; it never dispatches this
//                       entry otherwise).  Elements past K in a loaded vec4 are zeroed; C is stored per element.
// f16: the runtime replaces the `alias elem` line with `alias elem = f16;` and prepends `enable f16;`.

alias elem = f32;

struct Params {
    M: u32,
    N: u32,
    K: u32,
    batch: u32,
    trans_a: u32,     // 0: A stored M x K, 1: A stored K x M
    trans_b: u32,     // 0: B stored K x N, 1: B stored N x K
    accumulate: u32,  // 0: C = A@B, 1: C += A@B
    has_bias: u32,    // 1: C(m,n) += bias[n] (after accumulate)
    stride_a: u32,    // batch strides in elements (0 = broadcast)
    stride_b: u32,
    stride_c: u32,
    lda: u32,         // stored row lengths in elements
    ldb: u32,
    ldc: u32,
    offset_a: u32,    // first element of the matrices (batch 0) in their buffers
    offset_b: u32,
    offset_c: u32,
    offset_bias: u32, // bias of column n is bias[offset_bias + n]
}

@group(0) @binding(0) var<uniform> params: Params;
// Two views of one binding: matmul_tiled reads `a`, matmul_tiled_vec4 reads `a4` (an entry uses one of them).
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<elem>>;
// BEGIN weights
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<elem>>;
fn b_at(i: u32) -> f32 { return f32(b[i]); }
// B elements i .. i+3, i a multiple of 4.
fn b_at4(i: u32) -> vec4<f32> { return vec4<f32>(b4[i >> 2u]); }
// END weights
@group(0) @binding(3) var<storage, read_write> c: array<elem>;
@group(0) @binding(4) var<storage, read> bias: array<elem>;

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;
override WG_X: u32 = 16u;  // BN / TN
override WG_Y: u32 = 16u;  // BM / TM
override STAGES: u32 = 2u;

// Tile elements one invocation stages in registers per operand (vec4 entry: MAX_STAGED / 4 vec4s).
const MAX_STAGED: u32 = 16u;

// vec4s per k row of a tile (one of padding), and per buffer.
override A_ROW: u32 = BM / 4u + 1u;
override B_ROW: u32 = BN / 4u + 1u;
override A_STAGE: u32 = BK * A_ROW;
override B_STAGE: u32 = BK * B_ROW;

// tile_a[s * A_STAGE + k * A_ROW + q] = op(A)(m0 + 4q .. 4q+3, k0 + k) of buffer s; tile_b likewise along n.
var<workgroup> tile_a: array<vec4<f32>, STAGES * BK * (BM / 4u + 1u)>;
var<workgroup> tile_b: array<vec4<f32>, STAGES * BK * (BN / 4u + 1u)>;

// Element strides of op(A): A(m,k) = a[off + m*s.x + k*s.y]
fn a_strides() -> vec2<u32> {
    if (params.trans_a == 0u) { return vec2<u32>(params.lda, 1u); }
    return vec2<u32>(1u, params.lda);
}

// Element strides of op(B): B(k,n) = b[off + k*s.x + n*s.y]
fn b_strides() -> vec2<u32> {
    if (params.trans_b == 0u) { return vec2<u32>(params.ldb, 1u); }
    return vec2<u32>(1u, params.ldb);
}

fn invocations() -> u32 { return WG_X * WG_Y; }

// ---------------------------------------------------------------------------------------------------
// Scalar copies.  Element i of a tile is taken along the operand's stored rows (consecutive invocations read
// consecutive addresses): (row, k) = (i / BK, i % BK) when the operand is stored along k, else (i % rows, i / rows).

fn tile_a_at(i: u32) -> vec2<u32> {  // (m, k) of element i of the A tile
    if (params.trans_a == 0u) { return vec2<u32>(i / BK, i % BK); }
    return vec2<u32>(i % BM, i / BM);
}

fn tile_b_at(i: u32) -> vec2<u32> {  // (n, k) of element i of the B tile
    if (params.trans_b == 1u) { return vec2<u32>(i / BK, i % BK); }
    return vec2<u32>(i % BN, i / BN);
}

// This invocation's elements of the A tile at k0 (zero outside op(A)).
fn stage_a(staged: ptr<function, array<f32, MAX_STAGED>>, li: u32, a_off: u32, m0: u32, k0: u32) {
    let s = a_strides();
    let count = BM * BK;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        let mk = tile_a_at(i);
        let m = m0 + mk.x;
        let k = k0 + mk.y;
        var v = 0.0;
        if (i < count && m < params.M && k < params.K) { v = f32(a[a_off + m * s.x + k * s.y]); }
        (*staged)[r] = v;
    }
}

fn stage_b(staged: ptr<function, array<f32, MAX_STAGED>>, li: u32, b_off: u32, n0: u32, k0: u32) {
    let s = b_strides();
    let count = BN * BK;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        let nk = tile_b_at(i);
        let n = n0 + nk.x;
        let k = k0 + nk.y;
        var v = 0.0;
        if (i < count && n < params.N && k < params.K) { v = b_at(b_off + k * s.x + n * s.y); }
        (*staged)[r] = v;
    }
}

fn commit_a(staged: ptr<function, array<f32, MAX_STAGED>>, li: u32, stage: u32) {
    let count = BM * BK;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        if (i < count) {
            let mk = tile_a_at(i);
            tile_a[stage * A_STAGE + mk.y * A_ROW + mk.x / 4u][mk.x % 4u] = (*staged)[r];
        }
    }
}

fn commit_b(staged: ptr<function, array<f32, MAX_STAGED>>, li: u32, stage: u32) {
    let count = BN * BK;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        if (i < count) {
            let nk = tile_b_at(i);
            tile_b[stage * B_STAGE + nk.y * B_ROW + nk.x / 4u][nk.x % 4u] = (*staged)[r];
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// vec4 copies: quad i of a tile is 4 consecutive elements along the operand's stored rows.
// Stored along k: (row, 4 * kq) = (i / (BK/4), 4 * (i % (BK/4))); else (4 * rq, k) = (4 * (i % (rows/4)), i / (rows/4)).

fn quad_a_at(i: u32) -> vec2<u32> {  // (m, k) of the first element of quad i of the A tile
    if (params.trans_a == 0u) { return vec2<u32>(i / (BK / 4u), 4u * (i % (BK / 4u))); }
    return vec2<u32>(4u * (i % (BM / 4u)), i / (BM / 4u));
}

fn quad_b_at(i: u32) -> vec2<u32> {  // (n, k) of the first element of quad i of the B tile
    if (params.trans_b == 1u) { return vec2<u32>(i / (BK / 4u), 4u * (i % (BK / 4u))); }
    return vec2<u32>(4u * (i % (BN / 4u)), i / (BN / 4u));
}

// v with the elements at k, k+1, k+2, k+3 >= K zeroed when the quad runs along k.
fn mask_k(v: vec4<f32>, k: u32, along_k: bool) -> vec4<f32> {
    if (!along_k) { return v; }
    return select(vec4<f32>(0.0), v, vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.K));
}

fn stage_a4(staged: ptr<function, array<vec4<f32>, 4>>, li: u32, a_off: u32, m0: u32, k0: u32) {
    let s = a_strides();
    let count = BM * BK / 4u;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        let mk = quad_a_at(i);
        let m = m0 + mk.x;
        let k = k0 + mk.y;
        var v = vec4<f32>(0.0);
        if (i < count && m < params.M && k < params.K) {
            v = mask_k(vec4<f32>(a4[(a_off + m * s.x + k * s.y) >> 2u]), k, params.trans_a == 0u);
        }
        (*staged)[r] = v;
    }
}

fn stage_b4(staged: ptr<function, array<vec4<f32>, 4>>, li: u32, b_off: u32, n0: u32, k0: u32) {
    let s = b_strides();
    let count = BN * BK / 4u;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        let nk = quad_b_at(i);
        let n = n0 + nk.x;
        let k = k0 + nk.y;
        var v = vec4<f32>(0.0);
        if (i < count && n < params.N && k < params.K) {
            v = mask_k(b_at4(b_off + k * s.x + n * s.y), k, params.trans_b == 1u);
        }
        (*staged)[r] = v;
    }
}

fn commit_a4(staged: ptr<function, array<vec4<f32>, 4>>, li: u32, stage: u32) {
    let count = BM * BK / 4u;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        if (i < count) {
            let mk = quad_a_at(i);
            let v = (*staged)[r];
            let base = stage * A_STAGE + mk.y * A_ROW + mk.x / 4u;
            if (params.trans_a == 1u) {
                tile_a[base] = v;  // 4 rows of one k: one vec4 of the tile
            } else {               // 4 k of one row: one element in each of 4 k rows
                let e = mk.x % 4u;
                tile_a[base][e] = v.x;
                tile_a[base + A_ROW][e] = v.y;
                tile_a[base + 2u * A_ROW][e] = v.z;
                tile_a[base + 3u * A_ROW][e] = v.w;
            }
        }
    }
}

fn commit_b4(staged: ptr<function, array<vec4<f32>, 4>>, li: u32, stage: u32) {
    let count = BN * BK / 4u;
    let nt = invocations();
    for (var r = 0u; r < (count + nt - 1u) / nt; r++) {
        let i = r * nt + li;
        if (i < count) {
            let nk = quad_b_at(i);
            let v = (*staged)[r];
            let base = stage * B_STAGE + nk.y * B_ROW + nk.x / 4u;
            if (params.trans_b == 0u) {
                tile_b[base] = v;
            } else {
                let e = nk.x % 4u;
                tile_b[base][e] = v.x;
                tile_b[base + B_ROW][e] = v.y;
                tile_b[base + 2u * B_ROW][e] = v.z;
                tile_b[base + 3u * B_ROW][e] = v.w;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The register block: acc[4 * (2 * rq + cq) + i] = C(row 4 * (rq * WG_Y + ty) + i, columns 4 * (cq * WG_X + tx)
// .. +3) of the workgroup's block, for row quad rq < TM / 4 and column quad cq < TN / 4.

// One 4x4 quad += av (4 rows of one k) x bv (4 columns of one k).
fn fma_quad(acc: ptr<function, array<vec4<f32>, 16>>, q: u32, av: vec4<f32>, bv: vec4<f32>) {
    (*acc)[q] = fma(vec4<f32>(av.x), bv, (*acc)[q]);
    (*acc)[q + 1u] = fma(vec4<f32>(av.y), bv, (*acc)[q + 1u]);
    (*acc)[q + 2u] = fma(vec4<f32>(av.z), bv, (*acc)[q + 2u]);
    (*acc)[q + 3u] = fma(vec4<f32>(av.w), bv, (*acc)[q + 3u]);
}

// acc += the A tile of buffer `stage` (this invocation's rows) x the B tile (its columns), over BK.
// TM and TN are pipeline constants: the branches fold away and the block stays in registers.
fn multiply_tiles(acc: ptr<function, array<vec4<f32>, 16>>, stage: u32, tx: u32, ty: u32) {
    let a_base = stage * A_STAGE + ty;
    let b_base = stage * B_STAGE + tx;
    for (var k = 0u; k < BK; k++) {
        let a0 = tile_a[a_base + k * A_ROW];
        let b0 = tile_b[b_base + k * B_ROW];
        fma_quad(acc, 0u, a0, b0);
        var b1 = vec4<f32>(0.0);
        if (TN == 8u) {
            b1 = tile_b[b_base + k * B_ROW + WG_X];
            fma_quad(acc, 4u, a0, b1);
        }
        if (TM == 8u) {
            let a1 = tile_a[a_base + k * A_ROW + WG_Y];
            fma_quad(acc, 8u, a1, b0);
            if (TN == 8u) { fma_quad(acc, 12u, a1, b1); }
        }
    }
}

fn store_c(idx: u32, n: u32, value: f32) {
    var v = value;
    if (params.has_bias != 0u) { v += f32(bias[params.offset_bias + n]); }
    if (params.accumulate != 0u) {
        c[idx] = elem(f32(c[idx]) + v);
    } else {
        c[idx] = elem(v);
    }
}

// Store C(row, n0 .. n0+3) = v, skipping rows >= M and columns >= N.
fn store_row4(c_off: u32, row: u32, n0: u32, v: vec4<f32>) {
    let N = params.N;
    if (row >= params.M) { return; }
    let base = c_off + row * params.ldc;
    if (n0 < N) { store_c(base + n0, n0, v.x); }
    if (n0 + 1u < N) { store_c(base + n0 + 1u, n0 + 1u, v.y); }
    if (n0 + 2u < N) { store_c(base + n0 + 2u, n0 + 2u, v.z); }
    if (n0 + 3u < N) { store_c(base + n0 + 3u, n0 + 3u, v.w); }
}

fn store_block(acc: ptr<function, array<vec4<f32>, 16>>, c_off: u32, m0: u32, n0: u32, tx: u32, ty: u32) {
    for (var rq = 0u; rq < TM / 4u; rq++) {
        for (var cq = 0u; cq < TN / 4u; cq++) {
            let row = m0 + 4u * (rq * WG_Y + ty);
            let col = n0 + 4u * (cq * WG_X + tx);
            let q = 4u * (2u * rq + cq);
            store_row4(c_off, row, col, (*acc)[q]);
            store_row4(c_off, row + 1u, col, (*acc)[q + 1u]);
            store_row4(c_off, row + 2u, col, (*acc)[q + 2u]);
            store_row4(c_off, row + 3u, col, (*acc)[q + 3u]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// matmul_tiled: scalar loads.
//   workgroup_size (WG_X, WG_Y, 1) = (BN / TN, BM / TM, 1);  grid = (ceil(N / BN), ceil(M / BM), batch)
//   C(m,n) (+)= sum_k A(m,k) * B(k,n) (+ bias[n])
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let bz = wid.z;
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    var acc: array<vec4<f32>, 16>;
    var staged_a: array<f32, MAX_STAGED>;
    var staged_b: array<f32, MAX_STAGED>;
    let tiles = (params.K + BK - 1u) / BK;
    if (tiles > 0u) {
        stage_a(&staged_a, li, a_off, m0, 0u);
        stage_b(&staged_b, li, b_off, n0, 0u);
        commit_a(&staged_a, li, 0u);
        commit_b(&staged_b, li, 0u);
    }
    workgroupBarrier();
    for (var t = 0u; t < tiles; t++) {
        let next = t + 1u < tiles;
        if (next) {  // global loads of the next tile overlap this tile's FMAs
            stage_a(&staged_a, li, a_off, m0, (t + 1u) * BK);
            stage_b(&staged_b, li, b_off, n0, (t + 1u) * BK);
        }
        multiply_tiles(&acc, t % STAGES, lid.x, lid.y);
        if (next) {
            if (STAGES == 1u) { workgroupBarrier(); }  // one buffer: everyone must be done reading it
            commit_a(&staged_a, li, (t + 1u) % STAGES);
            commit_b(&staged_b, li, (t + 1u) % STAGES);
        }
        workgroupBarrier();
    }
    store_block(&acc, params.offset_c + bz * params.stride_c, m0, n0, lid.x, lid.y);
}

// ---------------------------------------------------------------------------------------------------
// matmul_tiled_vec4: the same with vec4 loads of A and B (see the requirements in the file header).
//   workgroup_size (WG_X, WG_Y, 1) = (BN / TN, BM / TM, 1);  grid = (ceil(N / BN), ceil(M / BM), batch)
//   C(m,n) (+)= sum_k A(m,k) * B(k,n) (+ bias[n])
@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_tiled_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let bz = wid.z;
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    var acc: array<vec4<f32>, 16>;
    var staged_a: array<vec4<f32>, 4>;
    var staged_b: array<vec4<f32>, 4>;
    let tiles = (params.K + BK - 1u) / BK;
    if (tiles > 0u) {
        stage_a4(&staged_a, li, a_off, m0, 0u);
        stage_b4(&staged_b, li, b_off, n0, 0u);
        commit_a4(&staged_a, li, 0u);
        commit_b4(&staged_b, li, 0u);
    }
    workgroupBarrier();
    for (var t = 0u; t < tiles; t++) {
        let next = t + 1u < tiles;
        if (next) {
            stage_a4(&staged_a, li, a_off, m0, (t + 1u) * BK);
            stage_b4(&staged_b, li, b_off, n0, (t + 1u) * BK);
        }
        multiply_tiles(&acc, t % STAGES, lid.x, lid.y);
        if (next) {
            if (STAGES == 1u) { workgroupBarrier(); }
            commit_a4(&staged_a, li, (t + 1u) % STAGES);
            commit_b4(&staged_b, li, (t + 1u) % STAGES);
        }
        workgroupBarrier();
    }
    store_block(&acc, params.offset_c + bz * params.stride_c, m0, n0, lid.x, lid.y);
}
