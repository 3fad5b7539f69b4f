// matmul_cpu.tall.wgsl -- matmul_cpu's entries for tall C (M > 64; matmul_cpu_nn128x4 from M > 32): 64-row
// tiles, and two of them sharing B. A part of the matmul_cpu family, included by matmul_cpu.wgsl
// (`// use matmul_cpu.tall`) inside its subgroup block; the register tiles are in matmul_cpu.tiles.wgsl.

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
