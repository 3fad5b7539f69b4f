// matmul_cpu.wgsl -- batched matrix multiply for CPU adapters (Mesa lavapipe):  C[b] = op(A[b]) @ op(B[b])
//
// Same formula, Params, bindings and epilogues as matmul.wgsl (one params dict serves both families):
//   A(m,k) = a[offset_a + stride_a*b + m*lda + k]  (trans_a = 0)  or  a[... + k*lda + m]  (trans_a = 1)
//   B(k,n) = b[offset_b + stride_b*b + k*ldb + n]  (trans_b = 0)  or  b[... + n*ldb + k]  (trans_b = 1)
//   C(m,n) = c[offset_c + stride_c*b + m*ldc + n]  (= , or += with accumulate = 1), + bias[offset_bias + n]
// Batch strides in elements, 0 broadcasts; any M, N, K >= 1; loads are widened to f32 and accumulated in f32.
//
// Bindings (all entries, group 0):
//   @binding(0) uniform        params: Params
//   @binding(1) storage, read  a: array<vec4<elem>>  A, read as aligned quads of 4 elements (a_quad) or one
//                              element at a time (a_at); the binding must hold >= 4 elements (WebGPU's
//                              minimum binding size of a vec4 array)
//   @binding(2) storage, read  b: array<vec4<elem>>  B through b_at (b_quad reads 4); >= 4 elements; or packed
//                              bf16/f16 pairs in u32 words when the pipeline asks (weights = bf16/f16)
//   f32 builds on adapters with shader-int64 read a and b as array<vec2<u64>>, the same 16 bytes per quad as two
//   64-bit words (`// wide reads` below): each lavapipe read loops over the lanes per word, so half the words is
//   half that work (measured 1.1-1.5x on these entries, 512^3 0.32 -> 0.40 of the FMA probe).
//   @binding(3) storage, rw    c: array<vec4<elem>>  C, written as quads where its rows start on quads, else
//                              one component at a time; >= 4 elements
//   @binding(4) storage, read  bias: array<elem>     N elements when has_bias = 1; any buffer otherwise
// f16: the runtime replaces the `alias elem` line with `alias elem = f16;` and prepends `enable f16;`.
//
// Why it is shaped this way (lavapipe, Mesa 25): an invocation is one lane of an 8-wide SIMD register and a
// subgroup is all 8.  Every storage-buffer load whose address is not a constant is compiled to a loop over the
// 8 lanes with a bounds check per 32-bit component (about 8 instructions per element, contiguous or not), so
// loads, not FMAs, set the speed.  Each entry therefore
//   - reads every element of A and B once per subgroup and k: lane l reads its share of the tile's rows of A
//     and its own columns of B; subgroupBroadcast (one instruction) hands each A value to the other lanes;
//   - reads them as vec4 quads where the layout allows (a 4-component load shares the per-lane work): the
//     main loop needs lda, ldb, offset_a, offset_b and the batch strides to be multiples of 4 (quads_aligned),
//     else it is skipped and the k-by-k loop after it runs the whole K with single-element reads;
//   - keeps the register tile at 32 or 64 rows x 32 columns per subgroup and 4 values of k per trip: 64 rows
//     make fewer loads per FMA (1.1x, see the 64-row entries), 128 rows or 8 k per trip measured no faster;
//   - makes every read of a trip before its first FMA (a read between FMAs, a loop, measured 2x slower);
//   - reads B before A in each trip (measured ~8% faster: fewer spills while the quads are assembled);
//   - writes C one group of 8 (or 4) rows per trip of a small loop: the 32 rows' stores written out (read-add-
//     write with accumulate) made a 25 s shader compile; the loop costs ~1% at K = 576.
// Requirements: the `subgroup` feature with subgroups of >= 8 invocations, CPU_X a multiple of 8 (verified on
// lavapipe, whose subgroups are 8 wide; GPUs keep matmul.wgsl).  Each entry serves one layout (its name says
// which: nn = no transposes, nt = trans_b, tn = trans_a, tt = both); other flags give wrong results.
//
// Entries (grid = (ceil(N / (COLS * CPU_X)), ceil(M / ROWS), batch), workgroup (CPU_X, 1, 1) = (8, 1, 1)):
//   matmul_cpu_{nn,nt,tn}64x4      ROWS = 64, COLS = 4: a 64 x 32 tile per subgroup (M > 64)       .tall
//   matmul_cpu_nn128x4             ROWS = 128, COLS = 4: two 64 x 32 tiles sharing B, K in chunks
//                                  (M > 32)                                                        .tall
//   matmul_cpu_{nn,nt,tn,tt}32x4   ROWS = 32, COLS = 4: a 32 x 32 tile per subgroup (M > 16)       here
//   matmul_cpu_{nn,nt}16x4         ROWS = 16, COLS = 4 (9 <= M <= 16)                              .small
//   matmul_cpu_{nn,nt}8x8          ROWS = 8,  COLS = 8 (M <= 8: decode rows)                       .small
// (the last column: this file, or the part matmul_cpu.<part>.wgsl holding the entry)
// Invocation x of workgroup (wx, wy, z) computes C(m0 .. m0+ROWS-1, n0 .. n0+COLS-1) of batch z with
// m0 = ROWS * wy and n0 = COLS * (CPU_X * wx + x) (matmul_cpu_nn128x4 shares its rows out evenly: see there).
// Rows >= M and columns >= N are computed from whatever the reads return (robust reads return 0 past the end
// of a binding) and never stored; a k >= K is never read.

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
// wide reads: a, b
@group(0) @binding(1) var<storage, read> a: array<vec4<elem>>;
// BEGIN weights
@group(0) @binding(2) var<storage, read> b: array<vec4<elem>>;
// Element i of b.  `(i | 3) >> 2` is the same expression for the 4 elements of a quad, so the compiler
// merges the 4 reads of b_quad into one 4-wide read.
fn b_at(i: u32) -> f32 { let v = b[(i | 3u) >> 2u]; return f32(v[i & 3u]); }
// END weights
@group(0) @binding(3) var<storage, read_write> c: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read> bias: array<elem>;

override CPU_X: u32 = 8u;
// k per pass of matmul_cpu_nn128x4 (rounded down to a multiple of 4): its strip of B, K_CHUNK rows of 128 bytes,
// stays in the L2 cache between the passes of its 32-row tiles (1024 to 4096 measured the same on lavapipe)
override K_CHUNK: u32 = 2048u;

// Element i of a: a single-component read.
fn a_at(i: u32) -> f32 { return f32(a[i >> 2u][i & 3u]); }

// Elements i .. i+3 of a, i a multiple of 4: one 4-wide read.
fn a_quad(i: u32) -> vec4<f32> { return vec4<f32>(a[i >> 2u]); }

// Elements i .. i+3 of b, i a multiple of 4, through b_at (one 4-wide read for `elem` weights).
fn b_quad(i: u32) -> vec4<f32> {
    let q = i & ~3u;
    return vec4<f32>(b_at(q), b_at(q | 1u), b_at(q | 2u), b_at(q | 3u));
}

// Whether every quad the main loop reads starts on a multiple of 4 elements (a_off, b_off: this batch's).
fn quads_aligned(a_off: u32, b_off: u32) -> bool {
    return ((a_off | b_off | params.lda | params.ldb) & 3u) == 0u;
}

// acc + A(r, k..k+3) . B(k..k+3, n..n+3): four FMAs, one per k.
fn fma_k4(acc: vec4<f32>, ar: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    var r = fma(vec4<f32>(ar.x), b0, acc);
    r = fma(vec4<f32>(ar.y), b1, r);
    r = fma(vec4<f32>(ar.z), b2, r);
    return fma(vec4<f32>(ar.w), b3, r);
}

// bias(n .. n+3) with the bias epilogue, else 0 (columns >= N read a clamped column and are never stored).
fn bias_quad(n: u32) -> vec4<f32> {
    if (params.has_bias == 0u) { return vec4<f32>(0.0); }
    let o = params.offset_bias;
    let l = params.N - 1u;
    return vec4<f32>(f32(bias[o + min(n, l)]), f32(bias[o + min(n + 1u, l)]), f32(bias[o + min(n + 2u, l)]),
                     f32(bias[o + min(n + 3u, l)]));
}

// C(row, n .. n+3) = v, skipping rows >= M and columns >= N.  n is a multiple of 4, so the quad is one
// 4-wide store whenever C's rows start on quads (c_off and ldc multiples of 4) and it lies inside N: a store,
// like a load, costs one per-lane loop on lavapipe whatever its width.
fn store_quad(c_off: u32, row: u32, n: u32, v: vec4<f32>) {
    if (row >= params.M) { return; }
    let base = c_off + row * params.ldc + n;
    let N = params.N;
    if (((c_off | params.ldc) & 3u) == 0u && n + 3u < N) {
        c[base >> 2u] = vec4<elem>(v);
        return;
    }
    if (n < N) { c[base >> 2u][base & 3u] = elem(v.x); }
    if (n + 1u < N) { c[(base + 1u) >> 2u][(base + 1u) & 3u] = elem(v.y); }
    if (n + 2u < N) { c[(base + 2u) >> 2u][(base + 2u) & 3u] = elem(v.z); }
    if (n + 3u < N) { c[(base + 3u) >> 2u][(base + 3u) & 3u] = elem(v.w); }
}

// C(row, n .. n+3) += v, skipping columns >= N (row < M); one 4-wide read and store as in store_quad.
fn add_quad(c_off: u32, row: u32, n: u32, v: vec4<f32>) {
    let base = c_off + row * params.ldc + n;
    let N = params.N;
    if (((c_off | params.ldc) & 3u) == 0u && n + 3u < N) {
        c[base >> 2u] = vec4<elem>(vec4<f32>(c[base >> 2u]) + v);
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let i = base + j;
        if (n + j < N) { c[i >> 2u][i & 3u] = elem(f32(c[i >> 2u][i & 3u]) + v[j]); }
    }
}

// BEGIN subgroup
// The family's other files, parts included here: the register tiles, the entries for tall C (M > 64) and those
// for short C (M <= 16). The 32-row entries follow.
// use matmul_cpu.tiles
// use matmul_cpu.tall
// use matmul_cpu.small

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_nn32x4: layout NN only (A stored M x K, B stored K x N).
// 32 rows x 4 columns per invocation, a 32 x 32 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 32), batch)
// Lane l reads rows m0 + 8g + l of A (g < 4) as quads along k and broadcasts them to the others;
// each invocation reads its own 4 columns of B as quads along n.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nn32x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 32u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, params.K & ~3u, quads_aligned(a_off, b_off));
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
    var acc2: array<vec4<f32>, 8>;
    var acc3: array<vec4<f32>, 8>;
    nn_tile32(&acc0, &acc1, &acc2, &acc3, a_off + (m0 + lane) * lda, a_off + (m0 + 8u + lane) * lda,
              a_off + (m0 + 16u + lane) * lda, a_off + (m0 + 24u + lane) * lda, b_off + n0, 0u, K4, params.K);
    write_tile32(&acc0, &acc1, &acc2, &acc3, params.offset_c + bz * params.stride_c, m0, n0, bias_quad(n0),
                 params.accumulate != 0u);
}

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_nt32x4: layout NT only (A stored M x K, B stored N x K: trans_b = 1).
// 32 rows x 4 columns per invocation, a 32 x 32 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 32), batch)
// Lane l reads rows m0 + 8g + l of A (g < 4) as quads along k and broadcasts them to the others;
// each invocation reads its own 4 columns of B as quads along k (rows of B), transposed in registers.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nt32x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 32u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra0 = a_off + (m0 + lane) * lda;  // A(m0 + lane, 0)
    let ra1 = a_off + (m0 + 8u + lane) * lda;  // A(m0 + 8 + lane, 0)
    let ra2 = a_off + (m0 + 16u + lane) * lda;  // A(m0 + 16 + lane, 0)
    let ra3 = a_off + (m0 + 24u + lane) * lda;  // A(m0 + 24 + lane, 0)
    let cb0 = b_off + n0 * ldb;  // B(0, n0)
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
    var acc2: array<vec4<f32>, 8>;
    var acc3: array<vec4<f32>, 8>;
    for (var k = 0u; k < K4; k += 4u) {
        let bc0 = b_quad(cb0 + k);  // B(k..k+3, n0)
        let bc1 = b_quad(cb0 + ldb + k);  // B(k..k+3, n0 + 1)
        let bc2 = b_quad(cb0 + 2u * ldb + k);  // B(k..k+3, n0 + 2)
        let bc3 = b_quad(cb0 + 3u * ldb + k);  // B(k..k+3, n0 + 3)
        let b0 = vec4<f32>(bc0.x, bc1.x, bc2.x, bc3.x);
        let b1 = vec4<f32>(bc0.y, bc1.y, bc2.y, bc3.y);
        let b2 = vec4<f32>(bc0.z, bc1.z, bc2.z, bc3.z);
        let b3 = vec4<f32>(bc0.w, bc1.w, bc2.w, bc3.w);
        let av0 = a_quad(ra0 + k);
        let av1 = a_quad(ra1 + k);
        let av2 = a_quad(ra2 + k);
        let av3 = a_quad(ra3 + k);
        fma_rows8(&acc0, av0, b0, b1, b2, b3);
        fma_rows8(&acc1, av1, b0, b1, b2, b3);
        fma_rows8(&acc2, av2, b0, b1, b2, b3);
        fma_rows8(&acc3, av3, b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let bk = vec4<f32>(b_at(cb0 + k), b_at(cb0 + ldb + k), b_at(cb0 + 2u * ldb + k),
                            b_at(cb0 + 3u * ldb + k));
        let ak0 = a_at(ra0 + k);
        let ak1 = a_at(ra1 + k);
        let ak2 = a_at(ra2 + k);
        let ak3 = a_at(ra3 + k);
        fma_rows8_k1(&acc0, ak0, bk);
        fma_rows8_k1(&acc1, ak1, bk);
        fma_rows8_k1(&acc2, ak2, bk);
        fma_rows8_k1(&acc3, ak3, bk);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    if (params.accumulate == 0u) {
        for (var t = 0u; t < 4u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            store_rows8(&acc0, c_off, m, n0, bias);
            acc0 = acc1; acc1 = acc2; acc2 = acc3;
        }
    } else {
        for (var t = 0u; t < 4u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            add_rows8(&acc0, c_off, m, n0, bias);
            acc0 = acc1; acc1 = acc2; acc2 = acc3;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_tn32x4: layout TN only (A stored K x M: trans_a = 1, B stored K x N).
// 32 rows x 4 columns per invocation, a 32 x 32 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 32), batch)
// Lane l reads rows m0 + 4l .. m0 + 4l + 3 of A as one quad along m per k and broadcasts them;
// each invocation reads its own 4 columns of B as quads along n.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_tn32x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 32u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra = a_off + m0 + 4u * lane;  // A(m0 + 4 lane, 0)
    let cb0 = b_off + n0;  // B(0, n0)
    var acc0: array<vec4<f32>, 4>;
    var acc1: array<vec4<f32>, 4>;
    var acc2: array<vec4<f32>, 4>;
    var acc3: array<vec4<f32>, 4>;
    var acc4: array<vec4<f32>, 4>;
    var acc5: array<vec4<f32>, 4>;
    var acc6: array<vec4<f32>, 4>;
    var acc7: array<vec4<f32>, 4>;
    for (var k = 0u; k < K4; k += 4u) {
        let b0 = b_quad(cb0 + (k) * ldb);
        let b1 = b_quad(cb0 + (k + 1u) * ldb);
        let b2 = b_quad(cb0 + (k + 2u) * ldb);
        let b3 = b_quad(cb0 + (k + 3u) * ldb);
        let av0 = a_quad(ra + (k) * lda);  // A(m0 + 4 lane .. + 3, k + 0)
        let av1 = a_quad(ra + (k + 1u) * lda);  // A(m0 + 4 lane .. + 3, k + 1)
        let av2 = a_quad(ra + (k + 2u) * lda);  // A(m0 + 4 lane .. + 3, k + 2)
        let av3 = a_quad(ra + (k + 3u) * lda);  // A(m0 + 4 lane .. + 3, k + 3)
        fma_trows32(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, av0, av1, av2, av3, b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let bt = cb0 + k * ldb;
        let bk = vec4<f32>(b_at(bt), b_at(bt + 1u), b_at(bt + 2u), b_at(bt + 3u));
        let at = ra + k * lda;
        let ak = vec4<f32>(a_at(at), a_at(at + 1u), a_at(at + 2u), a_at(at + 3u));
        fma_trows32_k1(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, ak, bk);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    write_trows32(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, c_off, m0, n0, bias,
                  params.accumulate != 0u);
}

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_tt32x4: layout TT only (A stored K x M, B stored N x K: both).
// 32 rows x 4 columns per invocation, a 32 x 32 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 32), batch)
// Lane l reads rows m0 + 4l .. m0 + 4l + 3 of A as one quad along m per k and broadcasts them;
// each invocation reads its own 4 columns of B as quads along k (rows of B), transposed in registers.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_tt32x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 32u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra = a_off + m0 + 4u * lane;  // A(m0 + 4 lane, 0)
    let cb0 = b_off + n0 * ldb;  // B(0, n0)
    var acc0: array<vec4<f32>, 4>;
    var acc1: array<vec4<f32>, 4>;
    var acc2: array<vec4<f32>, 4>;
    var acc3: array<vec4<f32>, 4>;
    var acc4: array<vec4<f32>, 4>;
    var acc5: array<vec4<f32>, 4>;
    var acc6: array<vec4<f32>, 4>;
    var acc7: array<vec4<f32>, 4>;
    for (var k = 0u; k < K4; k += 4u) {
        let bc0 = b_quad(cb0 + k);  // B(k..k+3, n0)
        let bc1 = b_quad(cb0 + ldb + k);  // B(k..k+3, n0 + 1)
        let bc2 = b_quad(cb0 + 2u * ldb + k);  // B(k..k+3, n0 + 2)
        let bc3 = b_quad(cb0 + 3u * ldb + k);  // B(k..k+3, n0 + 3)
        let b0 = vec4<f32>(bc0.x, bc1.x, bc2.x, bc3.x);
        let b1 = vec4<f32>(bc0.y, bc1.y, bc2.y, bc3.y);
        let b2 = vec4<f32>(bc0.z, bc1.z, bc2.z, bc3.z);
        let b3 = vec4<f32>(bc0.w, bc1.w, bc2.w, bc3.w);
        let av0 = a_quad(ra + (k) * lda);  // A(m0 + 4 lane .. + 3, k + 0)
        let av1 = a_quad(ra + (k + 1u) * lda);  // A(m0 + 4 lane .. + 3, k + 1)
        let av2 = a_quad(ra + (k + 2u) * lda);  // A(m0 + 4 lane .. + 3, k + 2)
        let av3 = a_quad(ra + (k + 3u) * lda);  // A(m0 + 4 lane .. + 3, k + 3)
        fma_trows32(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, av0, av1, av2, av3, b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let bk = vec4<f32>(b_at(cb0 + k), b_at(cb0 + ldb + k), b_at(cb0 + 2u * ldb + k),
                            b_at(cb0 + 3u * ldb + k));
        let at = ra + k * lda;
        let ak = vec4<f32>(a_at(at), a_at(at + 1u), a_at(at + 2u), a_at(at + 3u));
        fma_trows32_k1(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, ak, bk);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    write_trows32(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, c_off, m0, n0, bias,
                  params.accumulate != 0u);
}
// END subgroup
