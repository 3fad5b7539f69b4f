// matmul_cpu.small.wgsl -- matmul_cpu's entries for short C (M <= 16: decode rows and small batches):
// 16 rows x 4 columns and 8 x 8 per invocation. A part of the matmul_cpu family, included by
// matmul_cpu.wgsl (`// use matmul_cpu.small`) inside its subgroup block.

// C(m0 .. m0+15, n0 .. n0+3) = (add: +=) acc0, acc1 + bias, rows >= M skipped; the accumulators are consumed.
fn write_tile16(acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>,
                c_off: u32, m0: u32, n0: u32, bias: vec4<f32>, add: bool) {
    if (!add) {
        for (var t = 0u; t < 2u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            store_rows8(acc0, c_off, m, n0, bias);
            *acc0 = *acc1;
        }
    } else {
        for (var t = 0u; t < 2u; t++) {
            let m = m0 + 8u * t;
            if (m >= params.M) { break; }
            add_rows8(acc0, c_off, m, n0, bias);
            *acc0 = *acc1;
        }
    }
}

// C(m0 .. m0+7, n0 .. n0+7) = (add: +=) acc_0 (columns n0 ..) and acc_1 (n0 + 4 ..) + bias.
fn write_tile8x8(acc_0: ptr<function, array<vec4<f32>, 8>>, acc_1: ptr<function, array<vec4<f32>, 8>>,
                 c_off: u32, m0: u32, n0: u32, add: bool) {
    let bias_0 = bias_quad(n0);
    let bias_1 = bias_quad(n0 + 4u);
    if (add) {
        add_rows8(acc_0, c_off, m0, n0, bias_0);
        add_rows8(acc_1, c_off, m0, n0 + 4u, bias_1);
    } else {
        store_rows8(acc_0, c_off, m0, n0, bias_0);
        store_rows8(acc_1, c_off, m0, n0 + 4u, bias_1);
    }
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
    write_tile16(&acc0, &acc1, params.offset_c + bz * params.stride_c, m0, n0, bias_quad(n0),
                 params.accumulate != 0u);
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
    write_tile16(&acc0, &acc1, params.offset_c + bz * params.stride_c, m0, n0, bias_quad(n0),
                 params.accumulate != 0u);
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
    write_tile8x8(&acc0_0, &acc0_1, params.offset_c + bz * params.stride_c, m0, n0, params.accumulate != 0u);
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
    write_tile8x8(&acc0_0, &acc0_1, params.offset_c + bz * params.stride_c, m0, n0, params.accumulate != 0u);
}
