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
//   matmul_cpu_{nn,nt,tn}64x4      ROWS = 64, COLS = 4: a 64 x 32 tile per subgroup (M > 64)
//   matmul_cpu_nn128x4             ROWS = 128, COLS = 4: two 64 x 32 tiles sharing B, K in chunks (M > 32)
//   matmul_cpu_{nn,nt,tn,tt}32x4   ROWS = 32, COLS = 4: a 32 x 32 tile per subgroup (M > 16)
//   matmul_cpu_{nn,nt}16x4         ROWS = 16, COLS = 4 (9 <= M <= 16)
//   matmul_cpu_{nn,nt}8x8          ROWS = 8,  COLS = 8 (M <= 8: decode rows)
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
// ---------------------------------------------------------------------------------------------------
// Register tiles.  Rows8: 8 rows m .. m+7 of one 4-column group, row m + l read by lane l (k-contiguous A).
// Rows4: 4 rows m .. m+3 of one 4-column group, all read by one lane (m-contiguous A, the tn/tt entries).

// acc[l] += A(m + l, k..k+3) . B(k..k+3, n..n+3); av: lane l's A(m + l, k..k+3).
fn fma_rows8(acc: ptr<function, array<vec4<f32>, 8>>, av: vec4<f32>,
             b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) {
    (*acc)[0] = fma_k4((*acc)[0], subgroupBroadcast(av, 0u), b0, b1, b2, b3);
    (*acc)[1] = fma_k4((*acc)[1], subgroupBroadcast(av, 1u), b0, b1, b2, b3);
    (*acc)[2] = fma_k4((*acc)[2], subgroupBroadcast(av, 2u), b0, b1, b2, b3);
    (*acc)[3] = fma_k4((*acc)[3], subgroupBroadcast(av, 3u), b0, b1, b2, b3);
    (*acc)[4] = fma_k4((*acc)[4], subgroupBroadcast(av, 4u), b0, b1, b2, b3);
    (*acc)[5] = fma_k4((*acc)[5], subgroupBroadcast(av, 5u), b0, b1, b2, b3);
    (*acc)[6] = fma_k4((*acc)[6], subgroupBroadcast(av, 6u), b0, b1, b2, b3);
    (*acc)[7] = fma_k4((*acc)[7], subgroupBroadcast(av, 7u), b0, b1, b2, b3);
}

// acc[l] += A(m + l, k) * B(k, n..n+3); a: lane l's A(m + l, k).
fn fma_rows8_k1(acc: ptr<function, array<vec4<f32>, 8>>, a: f32, bk: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(subgroupBroadcast(a, 0u)), bk, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(subgroupBroadcast(a, 1u)), bk, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(subgroupBroadcast(a, 2u)), bk, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(subgroupBroadcast(a, 3u)), bk, (*acc)[3]);
    (*acc)[4] = fma(vec4<f32>(subgroupBroadcast(a, 4u)), bk, (*acc)[4]);
    (*acc)[5] = fma(vec4<f32>(subgroupBroadcast(a, 5u)), bk, (*acc)[5]);
    (*acc)[6] = fma(vec4<f32>(subgroupBroadcast(a, 6u)), bk, (*acc)[6]);
    (*acc)[7] = fma(vec4<f32>(subgroupBroadcast(a, 7u)), bk, (*acc)[7]);
}

// acc[i] += A(m + i, k..k+3) . B(k..k+3, n..n+3); aj: A(m .. m+3, k+j), already broadcast from its lane.
fn fma_rows4(acc: ptr<function, array<vec4<f32>, 4>>, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>,
             a3: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) {
    (*acc)[0] = fma_k4((*acc)[0], vec4<f32>(a0.x, a1.x, a2.x, a3.x), b0, b1, b2, b3);
    (*acc)[1] = fma_k4((*acc)[1], vec4<f32>(a0.y, a1.y, a2.y, a3.y), b0, b1, b2, b3);
    (*acc)[2] = fma_k4((*acc)[2], vec4<f32>(a0.z, a1.z, a2.z, a3.z), b0, b1, b2, b3);
    (*acc)[3] = fma_k4((*acc)[3], vec4<f32>(a0.w, a1.w, a2.w, a3.w), b0, b1, b2, b3);
}

// acc[i] += A(m + i, k) * B(k, n..n+3); a: A(m .. m+3, k), already broadcast from its lane.
fn fma_rows4_k1(acc: ptr<function, array<vec4<f32>, 4>>, a: vec4<f32>, bk: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(a.x), bk, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a.y), bk, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a.z), bk, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a.w), bk, (*acc)[3]);
}

// C(m + l, n..n+3) = acc[l] + bias for l < 8.
fn store_rows8(acc: ptr<function, array<vec4<f32>, 8>>, c_off: u32, m: u32, n: u32, bias: vec4<f32>) {
    store_quad(c_off, m, n, (*acc)[0] + bias);
    store_quad(c_off, m + 1u, n, (*acc)[1] + bias);
    store_quad(c_off, m + 2u, n, (*acc)[2] + bias);
    store_quad(c_off, m + 3u, n, (*acc)[3] + bias);
    store_quad(c_off, m + 4u, n, (*acc)[4] + bias);
    store_quad(c_off, m + 5u, n, (*acc)[5] + bias);
    store_quad(c_off, m + 6u, n, (*acc)[6] + bias);
    store_quad(c_off, m + 7u, n, (*acc)[7] + bias);
}

// C(m + l, n..n+3) += acc[l] + bias for l < 8.
fn add_rows8(acc: ptr<function, array<vec4<f32>, 8>>, c_off: u32, m: u32, n: u32, bias: vec4<f32>) {
    if (m < params.M) { add_quad(c_off, m, n, (*acc)[0] + bias); }
    if (m + 1u < params.M) { add_quad(c_off, m + 1u, n, (*acc)[1] + bias); }
    if (m + 2u < params.M) { add_quad(c_off, m + 2u, n, (*acc)[2] + bias); }
    if (m + 3u < params.M) { add_quad(c_off, m + 3u, n, (*acc)[3] + bias); }
    if (m + 4u < params.M) { add_quad(c_off, m + 4u, n, (*acc)[4] + bias); }
    if (m + 5u < params.M) { add_quad(c_off, m + 5u, n, (*acc)[5] + bias); }
    if (m + 6u < params.M) { add_quad(c_off, m + 6u, n, (*acc)[6] + bias); }
    if (m + 7u < params.M) { add_quad(c_off, m + 7u, n, (*acc)[7] + bias); }
}

// C(m + i, n..n+3) += acc[i] + bias for i < 4.
fn add_rows4(acc: ptr<function, array<vec4<f32>, 4>>, c_off: u32, m: u32, n: u32, bias: vec4<f32>) {
    if (m < params.M) { add_quad(c_off, m, n, (*acc)[0] + bias); }
    if (m + 1u < params.M) { add_quad(c_off, m + 1u, n, (*acc)[1] + bias); }
    if (m + 2u < params.M) { add_quad(c_off, m + 2u, n, (*acc)[2] + bias); }
    if (m + 3u < params.M) { add_quad(c_off, m + 3u, n, (*acc)[3] + bias); }
}

// C(m + i, n..n+3) = acc[i] + bias for i < 4.
fn store_rows4(acc: ptr<function, array<vec4<f32>, 4>>, c_off: u32, m: u32, n: u32, bias: vec4<f32>) {
    store_quad(c_off, m, n, (*acc)[0] + bias);
    store_quad(c_off, m + 1u, n, (*acc)[1] + bias);
    store_quad(c_off, m + 2u, n, (*acc)[2] + bias);
    store_quad(c_off, m + 3u, n, (*acc)[3] + bias);
}

// ---------------------------------------------------------------------------------------------------
// The NN 32 x 32 tile: lane l holds rows m0 + l, m0 + 8 + l, m0 + 16 + l, m0 + 24 + l of A (ra0 .. ra3 point at
// their element k = 0), each invocation 4 columns of B (cb0 points at B(0, n0)).

// acc0 .. acc3 += A(m0 .. m0+31, k) B(k, n0 .. n0+3) for k in [k_begin, k_end): in quads below q_end (a multiple
// of 4 where quads are aligned, k_begin too), one k at a time from there.
fn nn_tile32(acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>,
             acc2: ptr<function, array<vec4<f32>, 8>>, acc3: ptr<function, array<vec4<f32>, 8>>,
             ra0: u32, ra1: u32, ra2: u32, ra3: u32, cb0: u32, k_begin: u32, q_end: u32, k_end: u32) {
    let ldb = params.ldb;
    for (var k = k_begin; k < q_end; k += 4u) {
        let b0 = b_quad(cb0 + (k) * ldb);
        let b1 = b_quad(cb0 + (k + 1u) * ldb);
        let b2 = b_quad(cb0 + (k + 2u) * ldb);
        let b3 = b_quad(cb0 + (k + 3u) * ldb);
        let av0 = a_quad(ra0 + k);
        let av1 = a_quad(ra1 + k);
        let av2 = a_quad(ra2 + k);
        let av3 = a_quad(ra3 + k);
        fma_rows8(acc0, av0, b0, b1, b2, b3);
        fma_rows8(acc1, av1, b0, b1, b2, b3);
        fma_rows8(acc2, av2, b0, b1, b2, b3);
        fma_rows8(acc3, av3, b0, b1, b2, b3);
    }
    for (var k = max(k_begin, q_end); k < k_end; k++) {
        let bt = cb0 + k * ldb;
        let bk = vec4<f32>(b_at(bt), b_at(bt + 1u), b_at(bt + 2u), b_at(bt + 3u));
        let ak0 = a_at(ra0 + k);
        let ak1 = a_at(ra1 + k);
        let ak2 = a_at(ra2 + k);
        let ak3 = a_at(ra3 + k);
        fma_rows8_k1(acc0, ak0, bk);
        fma_rows8_k1(acc1, ak1, bk);
        fma_rows8_k1(acc2, ak2, bk);
        fma_rows8_k1(acc3, ak3, bk);
    }
}

// C(m0 .. m0+31, n0 .. n0+3) = (add: +=) acc0 .. acc3 + bias, rows >= M skipped; the accumulators are consumed.
fn write_tile32(acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>,
                acc2: ptr<function, array<vec4<f32>, 8>>, acc3: ptr<function, array<vec4<f32>, 8>>,
                c_off: u32, m0: u32, n0: u32, bias: vec4<f32>, add: bool) {
    if (!add) {
        for (var t = 0u; t < 4u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            store_rows8(acc0, c_off, m, n0, bias);
            *acc0 = *acc1; *acc1 = *acc2; *acc2 = *acc3;
        }
    } else {
        for (var t = 0u; t < 4u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            add_rows8(acc0, c_off, m, n0, bias);
            *acc0 = *acc1; *acc1 = *acc2; *acc2 = *acc3;
        }
    }
}

// acc_g += A(m0 + 8g + l, k..k+3) . B(k..k+3, n0..n0+3) for g < 8: lane l reads A(m0 + 8g + l, k..k+3) at
// ra + g * ga (ra: its row m0 + l at k, ga: 8 rows of A) and broadcasts it.  Every read comes before the first
// FMA: on lavapipe a read is a loop over the lanes, and reads between the FMAs halved the speed (measured).
fn fma_rows64(acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>,
              acc2: ptr<function, array<vec4<f32>, 8>>, acc3: ptr<function, array<vec4<f32>, 8>>,
              acc4: ptr<function, array<vec4<f32>, 8>>, acc5: ptr<function, array<vec4<f32>, 8>>,
              acc6: ptr<function, array<vec4<f32>, 8>>, acc7: ptr<function, array<vec4<f32>, 8>>,
              ra: u32, ga: u32, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) {
    let av0 = a_quad(ra);
    let av1 = a_quad(ra + ga);
    let av2 = a_quad(ra + 2u * ga);
    let av3 = a_quad(ra + 3u * ga);
    let av4 = a_quad(ra + 4u * ga);
    let av5 = a_quad(ra + 5u * ga);
    let av6 = a_quad(ra + 6u * ga);
    let av7 = a_quad(ra + 7u * ga);
    fma_rows8(acc0, av0, b0, b1, b2, b3);
    fma_rows8(acc1, av1, b0, b1, b2, b3);
    fma_rows8(acc2, av2, b0, b1, b2, b3);
    fma_rows8(acc3, av3, b0, b1, b2, b3);
    fma_rows8(acc4, av4, b0, b1, b2, b3);
    fma_rows8(acc5, av5, b0, b1, b2, b3);
    fma_rows8(acc6, av6, b0, b1, b2, b3);
    fma_rows8(acc7, av7, b0, b1, b2, b3);
}

// acc_g += A(m0 + 8g + l, k) * B(k, n0..n0+3) for g < 8; ra and ga as in fma_rows64.
fn fma_rows64_k1(acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>,
                 acc2: ptr<function, array<vec4<f32>, 8>>, acc3: ptr<function, array<vec4<f32>, 8>>,
                 acc4: ptr<function, array<vec4<f32>, 8>>, acc5: ptr<function, array<vec4<f32>, 8>>,
                 acc6: ptr<function, array<vec4<f32>, 8>>, acc7: ptr<function, array<vec4<f32>, 8>>,
                 ra: u32, ga: u32, bk: vec4<f32>) {
    let a0 = a_at(ra);
    let a1 = a_at(ra + ga);
    let a2 = a_at(ra + 2u * ga);
    let a3 = a_at(ra + 3u * ga);
    let a4 = a_at(ra + 4u * ga);
    let a5 = a_at(ra + 5u * ga);
    let a6 = a_at(ra + 6u * ga);
    let a7 = a_at(ra + 7u * ga);
    fma_rows8_k1(acc0, a0, bk);
    fma_rows8_k1(acc1, a1, bk);
    fma_rows8_k1(acc2, a2, bk);
    fma_rows8_k1(acc3, a3, bk);
    fma_rows8_k1(acc4, a4, bk);
    fma_rows8_k1(acc5, a5, bk);
    fma_rows8_k1(acc6, a6, bk);
    fma_rows8_k1(acc7, a7, bk);
}

// The NN 64 x 32 tile: nn_tile32's with 8 groups of 8 rows, lane l reading rows m0 + 8g + l of A (ra: A(m0 + l, 0),
// ga: 8 rows of A), each invocation 4 columns of B (cb0: B(0, n0)); the same k ranges as nn_tile32.
fn nn_tile64(acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>,
             acc2: ptr<function, array<vec4<f32>, 8>>, acc3: ptr<function, array<vec4<f32>, 8>>,
             acc4: ptr<function, array<vec4<f32>, 8>>, acc5: ptr<function, array<vec4<f32>, 8>>,
             acc6: ptr<function, array<vec4<f32>, 8>>, acc7: ptr<function, array<vec4<f32>, 8>>,
             ra: u32, ga: u32, cb0: u32, k_begin: u32, q_end: u32, k_end: u32) {
    let ldb = params.ldb;
    for (var k = k_begin; k < q_end; k += 4u) {
        let b0 = b_quad(cb0 + (k) * ldb);
        let b1 = b_quad(cb0 + (k + 1u) * ldb);
        let b2 = b_quad(cb0 + (k + 2u) * ldb);
        let b3 = b_quad(cb0 + (k + 3u) * ldb);
        fma_rows64(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, ra + k, ga, b0, b1, b2, b3);
    }
    for (var k = max(k_begin, q_end); k < k_end; k++) {
        let bt = cb0 + k * ldb;
        let bk = vec4<f32>(b_at(bt), b_at(bt + 1u), b_at(bt + 2u), b_at(bt + 3u));
        fma_rows64_k1(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, ra + k, ga, bk);
    }
}

// C(m0 .. m0+63, n0 .. n0+3) = (add: +=) acc0 .. acc7 + bias, rows >= M skipped; the accumulators are consumed.
fn write_tile64(acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>,
                acc2: ptr<function, array<vec4<f32>, 8>>, acc3: ptr<function, array<vec4<f32>, 8>>,
                acc4: ptr<function, array<vec4<f32>, 8>>, acc5: ptr<function, array<vec4<f32>, 8>>,
                acc6: ptr<function, array<vec4<f32>, 8>>, acc7: ptr<function, array<vec4<f32>, 8>>,
                c_off: u32, m0: u32, n0: u32, bias: vec4<f32>, add: bool) {
    write_tile32(acc0, acc1, acc2, acc3, c_off, m0, n0, bias, add);
    write_tile32(acc4, acc5, acc6, acc7, c_off, m0 + 32u, n0, bias, add);
}

// Whether C's element type is f32: 1 + 2^-13 rounds to 1 in f16.
fn c_holds_f32() -> bool { return elem(1.0) + elem(0.0001220703125) != elem(1.0); }

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
// matmul_cpu_nn128x4: layout NN only (A stored M x K, B stored K x N), for M > 32.
// Up to 128 rows x 4 columns per invocation: the 64-row tiles of matmul_cpu_nn64x4 that share one strip of 32
// columns of B, computed K_CHUNK values of k at a time, each tile in turn.  A chunk's partial sums go to C: the
// first chunk stores (or adds, with accumulate) them with the bias, the later ones add theirs.  Where C is f16
// (whose rounding the partial sums would take) the whole of K is one chunk.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 128), batch)
// Tiles are shared out evenly: of the T = ceil(M / 64) tiles of a strip, workgroup row y of Y computes tiles
// y T / Y .. (y + 1) T / Y - 1 (at most 2 with the grid above; any Y >= 1 computes every row once), so no row of
// workgroups is left idle while another has two (M = 300: 1, 2 and 2 of the 5 tiles).
// Why: a k row of the strip is 128 bytes of a long row of B (2304 bytes at N = 576), and such rows come slowly
// from memory (measured on lavapipe, 2 cores, M = 32, K = 3072: 16 GFLOP/s with B cold, 27 with B in cache);
// matmul_cpu_nn64x4's workgroups each read their strip from memory (or L3) once per 64 rows.  Here a chunk of
// it is read from memory once and once more from the L2 cache (measured with B cold, ms, nn64x4 -> nn128x4: the
// head of a 49k vocabulary, M 128, N 576, K 49152, 255 -> 224; 128x576x3072 15.0 -> 13.7; but 160x576x3072
// 19.8 -> 24.3, a third tile of 64 rows for 32).  Not for f16 C: one chunk, no gain.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nn128x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let c_off = params.offset_c + bz * params.stride_c;
    let tiles = (params.M + 63u) / 64u;
    let tile_begin = wid.y * tiles / groups.y;
    let tile_end = (wid.y + 1u) * tiles / groups.y;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let chunk = max(select(K, K_CHUNK & ~3u, c_holds_f32()), 4u);
    let bias = bias_quad(n0);
    // kc == 0u: K = 0 still writes C (bias, or C itself with accumulate)
    for (var kc = 0u; kc == 0u || kc < K; kc += chunk) {
        let k_end = min(kc + chunk, K);
        for (var tile = tile_begin; tile < tile_end; tile++) {
            let m0 = tile * 64u;
            // assigned, not declared with zeros: a declaration's zeros are given once, not once per trip
            var acc0: array<vec4<f32>, 8>;
            var acc1: array<vec4<f32>, 8>;
            var acc2: array<vec4<f32>, 8>;
            var acc3: array<vec4<f32>, 8>;
            var acc4: array<vec4<f32>, 8>;
            var acc5: array<vec4<f32>, 8>;
            var acc6: array<vec4<f32>, 8>;
            var acc7: array<vec4<f32>, 8>;
            acc0 = array<vec4<f32>, 8>(); acc1 = acc0; acc2 = acc0; acc3 = acc0;
            acc4 = acc0; acc5 = acc0; acc6 = acc0; acc7 = acc0;
            nn_tile64(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, a_off + (m0 + lane) * lda, 8u * lda,
                      b_off + n0, kc, min(k_end, K4), k_end);
            let first = kc == 0u;
            write_tile64(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, c_off, m0, n0,
                         select(vec4<f32>(0.0), bias, first), !first || params.accumulate != 0u);
        }
    }
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
// The 32 x 32 tile of the T* entries (A stored K x M): lane l reads rows m0 + 4l .. m0 + 4l + 3 of A as one quad
// along m per k and broadcasts it; acc0 .. acc7 hold rows m0 + 4t .. m0 + 4t + 3, broadcast from lane t.

// acc_t += A(m0 + 4t .. + 3, k..k+3) . B(k..k+3, n0..n0+3) for t < 8; avj: this lane's quad of A at k + j.
fn fma_trows32(acc0: ptr<function, array<vec4<f32>, 4>>, acc1: ptr<function, array<vec4<f32>, 4>>,
               acc2: ptr<function, array<vec4<f32>, 4>>, acc3: ptr<function, array<vec4<f32>, 4>>,
               acc4: ptr<function, array<vec4<f32>, 4>>, acc5: ptr<function, array<vec4<f32>, 4>>,
               acc6: ptr<function, array<vec4<f32>, 4>>, acc7: ptr<function, array<vec4<f32>, 4>>,
               av0: vec4<f32>, av1: vec4<f32>, av2: vec4<f32>, av3: vec4<f32>,
               b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) {
    fma_rows4(acc0, subgroupBroadcast(av0, 0u), subgroupBroadcast(av1, 0u),
              subgroupBroadcast(av2, 0u), subgroupBroadcast(av3, 0u), b0, b1, b2, b3);
    fma_rows4(acc1, subgroupBroadcast(av0, 1u), subgroupBroadcast(av1, 1u),
              subgroupBroadcast(av2, 1u), subgroupBroadcast(av3, 1u), b0, b1, b2, b3);
    fma_rows4(acc2, subgroupBroadcast(av0, 2u), subgroupBroadcast(av1, 2u),
              subgroupBroadcast(av2, 2u), subgroupBroadcast(av3, 2u), b0, b1, b2, b3);
    fma_rows4(acc3, subgroupBroadcast(av0, 3u), subgroupBroadcast(av1, 3u),
              subgroupBroadcast(av2, 3u), subgroupBroadcast(av3, 3u), b0, b1, b2, b3);
    fma_rows4(acc4, subgroupBroadcast(av0, 4u), subgroupBroadcast(av1, 4u),
              subgroupBroadcast(av2, 4u), subgroupBroadcast(av3, 4u), b0, b1, b2, b3);
    fma_rows4(acc5, subgroupBroadcast(av0, 5u), subgroupBroadcast(av1, 5u),
              subgroupBroadcast(av2, 5u), subgroupBroadcast(av3, 5u), b0, b1, b2, b3);
    fma_rows4(acc6, subgroupBroadcast(av0, 6u), subgroupBroadcast(av1, 6u),
              subgroupBroadcast(av2, 6u), subgroupBroadcast(av3, 6u), b0, b1, b2, b3);
    fma_rows4(acc7, subgroupBroadcast(av0, 7u), subgroupBroadcast(av1, 7u),
              subgroupBroadcast(av2, 7u), subgroupBroadcast(av3, 7u), b0, b1, b2, b3);
}

// acc_t += A(m0 + 4t .. + 3, k) * B(k, n0..n0+3) for t < 8; ak: this lane's quad of A at k.
fn fma_trows32_k1(acc0: ptr<function, array<vec4<f32>, 4>>, acc1: ptr<function, array<vec4<f32>, 4>>,
                  acc2: ptr<function, array<vec4<f32>, 4>>, acc3: ptr<function, array<vec4<f32>, 4>>,
                  acc4: ptr<function, array<vec4<f32>, 4>>, acc5: ptr<function, array<vec4<f32>, 4>>,
                  acc6: ptr<function, array<vec4<f32>, 4>>, acc7: ptr<function, array<vec4<f32>, 4>>,
                  ak: vec4<f32>, bk: vec4<f32>) {
    fma_rows4_k1(acc0, subgroupBroadcast(ak, 0u), bk);
    fma_rows4_k1(acc1, subgroupBroadcast(ak, 1u), bk);
    fma_rows4_k1(acc2, subgroupBroadcast(ak, 2u), bk);
    fma_rows4_k1(acc3, subgroupBroadcast(ak, 3u), bk);
    fma_rows4_k1(acc4, subgroupBroadcast(ak, 4u), bk);
    fma_rows4_k1(acc5, subgroupBroadcast(ak, 5u), bk);
    fma_rows4_k1(acc6, subgroupBroadcast(ak, 6u), bk);
    fma_rows4_k1(acc7, subgroupBroadcast(ak, 7u), bk);
}

// C(m0 .. m0+31, n0 .. n0+3) = (add: +=) acc0 .. acc7 + bias, rows >= M skipped; the accumulators are consumed.
fn write_trows32(acc0: ptr<function, array<vec4<f32>, 4>>, acc1: ptr<function, array<vec4<f32>, 4>>,
                 acc2: ptr<function, array<vec4<f32>, 4>>, acc3: ptr<function, array<vec4<f32>, 4>>,
                 acc4: ptr<function, array<vec4<f32>, 4>>, acc5: ptr<function, array<vec4<f32>, 4>>,
                 acc6: ptr<function, array<vec4<f32>, 4>>, acc7: ptr<function, array<vec4<f32>, 4>>,
                 c_off: u32, m0: u32, n0: u32, bias: vec4<f32>, add: bool) {
    for (var t = 0u; t < 8u; t++) {
        let m = m0 + 4u * t;
        if (m >= params.M) { break; }
        if (add) { add_rows4(acc0, c_off, m, n0, bias); } else { store_rows4(acc0, c_off, m, n0, bias); }
        *acc0 = *acc1; *acc1 = *acc2; *acc2 = *acc3; *acc3 = *acc4;
        *acc4 = *acc5; *acc5 = *acc6; *acc6 = *acc7;
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

// ---------------------------------------------------------------------------------------------------
// The 64-row entries: matmul_cpu_nn32x4, _nt32x4 and _tn32x4 with twice the rows per invocation.  A trip's 4 quads
// of B serve 64 rows instead of 32, so it makes 12 loads for 256 FMAs where the 32-row tile makes 8 for 128.
// Measured on lavapipe (2 cores, wide reads), GFLOP/s, 32 -> 64 rows: 512^3 NN 34.6 -> 37.6, NT 33.6 -> 37.6, TN
// 34.7 -> 37.3; the benchmark model's update, NT 1344x768x128 30.6 -> 35.0, NT 1344x128x384 30.4 -> 37.0, TN
// 384x128x1344 30.8 -> 38.0.  128 rows measured no faster than 64, and at M <= 32 half of a 64-row tile is wasted
// work, so the 32-row entries stay.  The cost: lavapipe compiles one in ~9 s where a 32-row entry takes ~3 s (once
// per adapter and build; Mesa's shader cache keeps the result).

// matmul_cpu_nn64x4: layout NN only (A stored M x K, B stored K x N), 64 rows x 4 columns per invocation.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 64), batch)
// Lane l reads rows m0 + 8g + l of A (g < 8) as quads along k; each invocation its own 4 columns of B.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nn64x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 64u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra = a_off + (m0 + (sg_id & 7u)) * params.lda;  // A(m0 + lane, 0)
    let ga = 8u * params.lda;
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
    var acc2: array<vec4<f32>, 8>;
    var acc3: array<vec4<f32>, 8>;
    var acc4: array<vec4<f32>, 8>;
    var acc5: array<vec4<f32>, 8>;
    var acc6: array<vec4<f32>, 8>;
    var acc7: array<vec4<f32>, 8>;
    nn_tile64(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, ra, ga, b_off + n0, 0u, K4, K);
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    write_tile64(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, c_off, m0, n0, bias,
                 params.accumulate != 0u);
}

// matmul_cpu_nt64x4: layout NT only (A stored M x K, B stored N x K: trans_b = 1), 64 rows x 4 columns per
// invocation.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 64), batch)
// Lane l reads rows m0 + 8g + l of A (g < 8) as quads along k; each invocation its own 4 columns of B as quads
// along k (rows of B), transposed in registers.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nt64x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 64u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra = a_off + (m0 + (sg_id & 7u)) * params.lda;  // A(m0 + lane, 0)
    let ga = 8u * params.lda;
    let cb0 = b_off + n0 * ldb;  // B(0, n0)
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
    var acc2: array<vec4<f32>, 8>;
    var acc3: array<vec4<f32>, 8>;
    var acc4: array<vec4<f32>, 8>;
    var acc5: array<vec4<f32>, 8>;
    var acc6: array<vec4<f32>, 8>;
    var acc7: array<vec4<f32>, 8>;
    for (var k = 0u; k < K4; k += 4u) {
        let bc0 = b_quad(cb0 + k);  // B(k..k+3, n0)
        let bc1 = b_quad(cb0 + ldb + k);  // B(k..k+3, n0 + 1)
        let bc2 = b_quad(cb0 + 2u * ldb + k);  // B(k..k+3, n0 + 2)
        let bc3 = b_quad(cb0 + 3u * ldb + k);  // B(k..k+3, n0 + 3)
        let b0 = vec4<f32>(bc0.x, bc1.x, bc2.x, bc3.x);
        let b1 = vec4<f32>(bc0.y, bc1.y, bc2.y, bc3.y);
        let b2 = vec4<f32>(bc0.z, bc1.z, bc2.z, bc3.z);
        let b3 = vec4<f32>(bc0.w, bc1.w, bc2.w, bc3.w);
        fma_rows64(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, ra + k, ga, b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let bk = vec4<f32>(b_at(cb0 + k), b_at(cb0 + ldb + k), b_at(cb0 + 2u * ldb + k),
                            b_at(cb0 + 3u * ldb + k));
        fma_rows64_k1(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, ra + k, ga, bk);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    write_tile64(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, c_off, m0, n0, bias,
                 params.accumulate != 0u);
}

// matmul_cpu_tn64x4: layout TN only (A stored K x M: trans_a = 1, B stored K x N), 64 rows x 4 columns per
// invocation: two of matmul_cpu_tn32x4's tiles over the same quads of B.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 64), batch)
// Lane l reads rows m0 + 4l .. + 3 and m0 + 32 + 4l .. + 3 of A as two quads along m per k and broadcasts
// them; each invocation reads its own 4 columns of B as quads along n.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_tn64x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 64u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra = a_off + m0 + 4u * (sg_id & 7u);  // A(m0 + 4 lane, 0); the second tile's rows are 32 further
    let cb0 = b_off + n0;  // B(0, n0)
    var acc0: array<vec4<f32>, 4>;
    var acc1: array<vec4<f32>, 4>;
    var acc2: array<vec4<f32>, 4>;
    var acc3: array<vec4<f32>, 4>;
    var acc4: array<vec4<f32>, 4>;
    var acc5: array<vec4<f32>, 4>;
    var acc6: array<vec4<f32>, 4>;
    var acc7: array<vec4<f32>, 4>;
    var acc8: array<vec4<f32>, 4>;
    var acc9: array<vec4<f32>, 4>;
    var acc10: array<vec4<f32>, 4>;
    var acc11: array<vec4<f32>, 4>;
    var acc12: array<vec4<f32>, 4>;
    var acc13: array<vec4<f32>, 4>;
    var acc14: array<vec4<f32>, 4>;
    var acc15: array<vec4<f32>, 4>;
    for (var k = 0u; k < K4; k += 4u) {
        let b0 = b_quad(cb0 + (k) * ldb);
        let b1 = b_quad(cb0 + (k + 1u) * ldb);
        let b2 = b_quad(cb0 + (k + 2u) * ldb);
        let b3 = b_quad(cb0 + (k + 3u) * ldb);
        let at = ra + k * lda;  // A(m0 + 4 lane, k); every read before the first FMA (see fma_rows64)
        let av0 = a_quad(at);
        let av1 = a_quad(at + lda);
        let av2 = a_quad(at + 2u * lda);
        let av3 = a_quad(at + 3u * lda);
        let av4 = a_quad(at + 32u);
        let av5 = a_quad(at + lda + 32u);
        let av6 = a_quad(at + 2u * lda + 32u);
        let av7 = a_quad(at + 3u * lda + 32u);
        fma_trows32(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, av0, av1, av2, av3, b0, b1, b2, b3);
        fma_trows32(&acc8, &acc9, &acc10, &acc11, &acc12, &acc13, &acc14, &acc15, av4, av5, av6, av7,
                    b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let bt = cb0 + k * ldb;
        let bk = vec4<f32>(b_at(bt), b_at(bt + 1u), b_at(bt + 2u), b_at(bt + 3u));
        let at = ra + k * lda;
        let ak0 = vec4<f32>(a_at(at), a_at(at + 1u), a_at(at + 2u), a_at(at + 3u));
        let ak1 = vec4<f32>(a_at(at + 32u), a_at(at + 33u), a_at(at + 34u), a_at(at + 35u));
        fma_trows32_k1(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, ak0, bk);
        fma_trows32_k1(&acc8, &acc9, &acc10, &acc11, &acc12, &acc13, &acc14, &acc15, ak1, bk);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    let add = params.accumulate != 0u;
    write_trows32(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, c_off, m0, n0, bias, add);
    write_trows32(&acc8, &acc9, &acc10, &acc11, &acc12, &acc13, &acc14, &acc15, c_off, m0 + 32u, n0, bias, add);
}

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_nn16x4: layout NN only (A stored M x K, B stored K x N).
// 16 rows x 4 columns per invocation, a 16 x 32 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 16), batch)
// Lane l reads rows m0 + 8g + l of A (g < 2) as quads along k and broadcasts them to the others;
// each invocation reads its own 4 columns of B as quads along n.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nn16x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 16u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra0 = a_off + (m0 + lane) * lda;  // A(m0 + lane, 0)
    let ra1 = a_off + (m0 + 8u + lane) * lda;  // A(m0 + 8 + lane, 0)
    let cb0 = b_off + n0;  // B(0, n0)
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
    for (var k = 0u; k < K4; k += 4u) {
        let b0 = b_quad(cb0 + (k) * ldb);
        let b1 = b_quad(cb0 + (k + 1u) * ldb);
        let b2 = b_quad(cb0 + (k + 2u) * ldb);
        let b3 = b_quad(cb0 + (k + 3u) * ldb);
        let av0 = a_quad(ra0 + k);
        let av1 = a_quad(ra1 + k);
        fma_rows8(&acc0, av0, b0, b1, b2, b3);
        fma_rows8(&acc1, av1, b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let bt = cb0 + k * ldb;
        let bk = vec4<f32>(b_at(bt), b_at(bt + 1u), b_at(bt + 2u), b_at(bt + 3u));
        let ak0 = a_at(ra0 + k);
        let ak1 = a_at(ra1 + k);
        fma_rows8_k1(&acc0, ak0, bk);
        fma_rows8_k1(&acc1, ak1, bk);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    if (params.accumulate == 0u) {
        for (var t = 0u; t < 2u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            store_rows8(&acc0, c_off, m, n0, bias);
            acc0 = acc1;
        }
    } else {
        for (var t = 0u; t < 2u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            add_rows8(&acc0, c_off, m, n0, bias);
            acc0 = acc1;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_nt16x4: layout NT only (A stored M x K, B stored N x K: trans_b = 1).
// 16 rows x 4 columns per invocation, a 16 x 32 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (4 * CPU_X)), ceil(M / 16), batch)
// Lane l reads rows m0 + 8g + l of A (g < 2) as quads along k and broadcasts them to the others;
// each invocation reads its own 4 columns of B as quads along k (rows of B), transposed in registers.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nt16x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 16u;
    let n0 = (wid.x * CPU_X + lid.x) * 4u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra0 = a_off + (m0 + lane) * lda;  // A(m0 + lane, 0)
    let ra1 = a_off + (m0 + 8u + lane) * lda;  // A(m0 + 8 + lane, 0)
    let cb0 = b_off + n0 * ldb;  // B(0, n0)
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
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
        fma_rows8(&acc0, av0, b0, b1, b2, b3);
        fma_rows8(&acc1, av1, b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let bk = vec4<f32>(b_at(cb0 + k), b_at(cb0 + ldb + k), b_at(cb0 + 2u * ldb + k),
                            b_at(cb0 + 3u * ldb + k));
        let ak0 = a_at(ra0 + k);
        let ak1 = a_at(ra1 + k);
        fma_rows8_k1(&acc0, ak0, bk);
        fma_rows8_k1(&acc1, ak1, bk);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias = bias_quad(n0);
    if (params.accumulate == 0u) {
        for (var t = 0u; t < 2u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            store_rows8(&acc0, c_off, m, n0, bias);
            acc0 = acc1;
        }
    } else {
        for (var t = 0u; t < 2u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            add_rows8(&acc0, c_off, m, n0, bias);
            acc0 = acc1;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_nn8x8: layout NN only (A stored M x K, B stored K x N).
// 8 rows x 8 columns per invocation, a 8 x 64 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (8 * CPU_X)), ceil(M / 8), batch)
// Lane l reads rows m0 + 8g + l of A (g < 1) as quads along k and broadcasts them to the others;
// each invocation reads its own 8 columns of B as quads along n.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nn8x8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 8u;
    let n0 = (wid.x * CPU_X + lid.x) * 8u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra0 = a_off + (m0 + lane) * lda;  // A(m0 + lane, 0)
    let cb0 = b_off + n0;  // B(0, n0)
    let cb1 = b_off + n0 + 4u;  // B(0, n0 + 4)
    var acc0_0: array<vec4<f32>, 8>;
    var acc0_1: array<vec4<f32>, 8>;
    for (var k = 0u; k < K4; k += 4u) {
        let b0_0 = b_quad(cb0 + (k) * ldb);
        let b1_0 = b_quad(cb0 + (k + 1u) * ldb);
        let b2_0 = b_quad(cb0 + (k + 2u) * ldb);
        let b3_0 = b_quad(cb0 + (k + 3u) * ldb);
        let b0_1 = b_quad(cb1 + (k) * ldb);
        let b1_1 = b_quad(cb1 + (k + 1u) * ldb);
        let b2_1 = b_quad(cb1 + (k + 2u) * ldb);
        let b3_1 = b_quad(cb1 + (k + 3u) * ldb);
        let av0 = a_quad(ra0 + k);
        fma_rows8(&acc0_0, av0, b0_0, b1_0, b2_0, b3_0);
        fma_rows8(&acc0_1, av0, b0_1, b1_1, b2_1, b3_1);
    }
    for (var k = K4; k < K; k++) {
        let bt_0 = cb0 + k * ldb;
        let bk_0 = vec4<f32>(b_at(bt_0), b_at(bt_0 + 1u), b_at(bt_0 + 2u), b_at(bt_0 + 3u));
        let bt_1 = cb1 + k * ldb;
        let bk_1 = vec4<f32>(b_at(bt_1), b_at(bt_1 + 1u), b_at(bt_1 + 2u), b_at(bt_1 + 3u));
        let ak0 = a_at(ra0 + k);
        fma_rows8_k1(&acc0_0, ak0, bk_0);
        fma_rows8_k1(&acc0_1, ak0, bk_1);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias_0 = bias_quad(n0);
    let bias_1 = bias_quad(n0 + 4u);
    if (params.accumulate == 0u) {
        store_rows8(&acc0_0, c_off, m0, n0, bias_0);
        store_rows8(&acc0_1, c_off, m0, n0 + 4u, bias_1);
    } else {
        add_rows8(&acc0_0, c_off, m0, n0, bias_0);
        add_rows8(&acc0_1, c_off, m0, n0 + 4u, bias_1);
    }
}

// ---------------------------------------------------------------------------------------------------
// matmul_cpu_nt8x8: layout NT only (A stored M x K, B stored N x K: trans_b = 1).
// 8 rows x 8 columns per invocation, a 8 x 64 tile per subgroup of 8.
//   workgroup (CPU_X, 1, 1); grid = (ceil(N / (8 * CPU_X)), ceil(M / 8), batch)
// Lane l reads rows m0 + 8g + l of A (g < 1) as quads along k and broadcasts them to the others;
// each invocation reads its own 8 columns of B as quads along k (rows of B), transposed in registers.
@compute @workgroup_size(CPU_X, 1, 1)
fn matmul_cpu_nt8x8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_id: u32) {
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let lda = params.lda;
    let ldb = params.ldb;
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 8u;
    let n0 = (wid.x * CPU_X + lid.x) * 8u;
    let lane = sg_id & 7u;
    // k < K4 in quads; the rest of K (all of it when a quad would straddle) one k at a time.
    let K4 = select(0u, K & ~3u, quads_aligned(a_off, b_off));
    let ra0 = a_off + (m0 + lane) * lda;  // A(m0 + lane, 0)
    let cb0 = b_off + n0 * ldb;  // B(0, n0)
    let cb1 = b_off + (n0 + 4u) * ldb;  // B(0, n0 + 4)
    var acc0_0: array<vec4<f32>, 8>;
    var acc0_1: array<vec4<f32>, 8>;
    for (var k = 0u; k < K4; k += 4u) {
        let bc0_0 = b_quad(cb0 + k);  // B(k..k+3, n0)
        let bc1_0 = b_quad(cb0 + ldb + k);  // B(k..k+3, n0 + 1)
        let bc2_0 = b_quad(cb0 + 2u * ldb + k);  // B(k..k+3, n0 + 2)
        let bc3_0 = b_quad(cb0 + 3u * ldb + k);  // B(k..k+3, n0 + 3)
        let b0_0 = vec4<f32>(bc0_0.x, bc1_0.x, bc2_0.x, bc3_0.x);
        let b1_0 = vec4<f32>(bc0_0.y, bc1_0.y, bc2_0.y, bc3_0.y);
        let b2_0 = vec4<f32>(bc0_0.z, bc1_0.z, bc2_0.z, bc3_0.z);
        let b3_0 = vec4<f32>(bc0_0.w, bc1_0.w, bc2_0.w, bc3_0.w);
        let bc0_1 = b_quad(cb1 + k);  // B(k..k+3, n0 + 4)
        let bc1_1 = b_quad(cb1 + ldb + k);  // B(k..k+3, n0 + 5)
        let bc2_1 = b_quad(cb1 + 2u * ldb + k);  // B(k..k+3, n0 + 6)
        let bc3_1 = b_quad(cb1 + 3u * ldb + k);  // B(k..k+3, n0 + 7)
        let b0_1 = vec4<f32>(bc0_1.x, bc1_1.x, bc2_1.x, bc3_1.x);
        let b1_1 = vec4<f32>(bc0_1.y, bc1_1.y, bc2_1.y, bc3_1.y);
        let b2_1 = vec4<f32>(bc0_1.z, bc1_1.z, bc2_1.z, bc3_1.z);
        let b3_1 = vec4<f32>(bc0_1.w, bc1_1.w, bc2_1.w, bc3_1.w);
        let av0 = a_quad(ra0 + k);
        fma_rows8(&acc0_0, av0, b0_0, b1_0, b2_0, b3_0);
        fma_rows8(&acc0_1, av0, b0_1, b1_1, b2_1, b3_1);
    }
    for (var k = K4; k < K; k++) {
        let bk_0 = vec4<f32>(b_at(cb0 + k), b_at(cb0 + ldb + k), b_at(cb0 + 2u * ldb + k),
                            b_at(cb0 + 3u * ldb + k));
        let bk_1 = vec4<f32>(b_at(cb1 + k), b_at(cb1 + ldb + k), b_at(cb1 + 2u * ldb + k),
                            b_at(cb1 + 3u * ldb + k));
        let ak0 = a_at(ra0 + k);
        fma_rows8_k1(&acc0_0, ak0, bk_0);
        fma_rows8_k1(&acc0_1, ak0, bk_1);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    let bias_0 = bias_quad(n0);
    let bias_1 = bias_quad(n0 + 4u);
    if (params.accumulate == 0u) {
        store_rows8(&acc0_0, c_off, m0, n0, bias_0);
        store_rows8(&acc0_1, c_off, m0, n0 + 4u, bias_1);
    } else {
        add_rows8(&acc0_0, c_off, m0, n0, bias_0);
        add_rows8(&acc0_1, c_off, m0, n0 + 4u, bias_1);
    }
}
// END subgroup
