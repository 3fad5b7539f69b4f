// matmul_cpu.tiles.wgsl -- the register tiles of matmul_cpu.wgsl's entries: the FMAs of a trip and the
// stores of a finished tile. A part of the matmul_cpu family, not a family: matmul_cpu.wgsl includes it
// (`// use matmul_cpu.tiles`) inside its subgroup block, and its bindings, Params and accessors are there.

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
