// matmul.wgsl -- batched matrix multiply  C[b] = op(A[b]) @ op(B[b])   (C[b]: M x N, row-major)
//
// op(A) is M x K, op(B) is K x N.  Transposes are flags in Params:
//   trans_a = 0: A[b] stored M x K row-major  -> A(m,k) = a[offset_a + stride_a*b + m*lda + k]
//   trans_a = 1: A[b] stored K x M row-major  -> A(m,k) = a[offset_a + stride_a*b + k*lda + m]     ("TN")
//   trans_b = 0: B[b] stored K x N row-major  -> B(k,n) = b[offset_b + stride_b*b + k*ldb + n]
//   trans_b = 1: B[b] stored N x K row-major  -> B(k,n) = b[offset_b + stride_b*b + n*ldb + k]     ("NT")
//   C(m,n) = c[offset_c + stride_c*b + m*ldc + n]
// stride_a / stride_b / stride_c are batch strides in ELEMENTS; 0 broadcasts one matrix over the batch
// (stride_c must not be 0 when batch > 1).  accumulate = 1 computes C += op(A) @ op(B) instead of C = ...
// lda / ldb / ldc are the stored row lengths (K or M, N or K, N for whole matrices) and offset_* the first
// element: together they select a window of columns of a wider matrix (a row block of a weight split over
// several buffers multiplies against, or writes, its columns of the activations without a copy).
// Any M, N, K >= 1 (the dispatch grid is empty when M or N is 0; K = 0 writes zeros / leaves C unchanged).
//
// Bindings (all entries, group 0):
//   @binding(0) uniform        params: Params
//   @binding(1) storage, read  a: array<elem>   batch * (M*K) elements (or M*K with stride_a = 0)
//   @binding(2) storage, read  b: array<elem>   batch * (K*N) elements (or K*N with stride_b = 0); stored as
//                              packed bf16 or f16 pairs in u32 words when the pipeline asks (weights = bf16/f16),
//                              read through b_at, so f32 activations multiply 16-bit weights
//   @binding(3) storage, rw    c: array<elem>   batch * (M*N) elements
//   @binding(4) storage, read  bias: array<elem> N elements, added to every row when has_bias = 1 (a linear
//                              layer's bias); any buffer otherwise (never read)
// Loads are converted to f32 and accumulated in f32; stores convert back to elem.
// f16: the runtime replaces the `alias elem` line with `alias elem = f16;` and prepends `enable f16;`.
//
// Entries (see each header for its dispatch grid):
//   matmul_naive    readable spec, one invocation per C element; works everywhere.
//   matmul_reg8x4   register-blocked 8 rows x 4 columns per invocation, no subgroups.
//   matmul_sg16x4   16 rows x 4 columns per invocation, A rows shared through subgroupBroadcast.
//   matmul_sg32x4   32 rows x 4 columns per invocation, same scheme (fastest on lavapipe for M >= 32).
//                   Both need the `subgroup` feature and a subgroup size >= 8.
//                   They sit between the `// BEGIN subgroup` / `// END subgroup` lines so a runtime on an
//                   adapter without subgroups can cut it out before compiling (naga rejects the whole
//                   module otherwise).

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
@group(0) @binding(1) var<storage, read> a: array<elem>;
// BEGIN weights
@group(0) @binding(2) var<storage, read> b: array<elem>;
fn b_at(i: u32) -> f32 { return f32(b[i]); }
// END weights
@group(0) @binding(3) var<storage, read_write> c: array<elem>;
@group(0) @binding(4) var<storage, read> bias: array<elem>;

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

fn load_a(off: u32, m: u32, k: u32, s: vec2<u32>) -> f32 { return f32(a[off + m * s.x + k * s.y]); }
fn load_b(off: u32, k: u32, n: u32, s: vec2<u32>) -> f32 { return b_at(off + k * s.x + n * s.y); }

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
    let M = params.M;
    let N = params.N;
    if (row >= M) { return; }
    let base = c_off + row * params.ldc;
    if (n0 < N) { store_c(base + n0, n0, v.x); }
    if (n0 + 1u < N) { store_c(base + n0 + 1u, n0 + 1u, v.y); }
    if (n0 + 2u < N) { store_c(base + n0 + 2u, n0 + 2u, v.z); }
    if (n0 + 3u < N) { store_c(base + n0 + 3u, n0 + 3u, v.w); }
}

// ---------------------------------------------------------------------------------------------------
// matmul_naive: the readable spec.  One invocation computes one C(m, n) of batch z.
//   workgroup_size (NAIVE_X, NAIVE_Y, 1) = (8, 8, 1) by default
//   grid = (ceil(N / NAIVE_X), ceil(M / NAIVE_Y), batch)
//   C(m,n) = sum_k A(m,k) * B(k,n)
override NAIVE_X: u32 = 8u;
override NAIVE_Y: u32 = 8u;

@compute @workgroup_size(NAIVE_X, NAIVE_Y, 1)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    let bz = gid.z;
    if (m >= params.M || n >= params.N || bz >= params.batch) { return; }
    let sa = a_strides();
    let sb = b_strides();
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    var acc = 0.0;
    for (var k = 0u; k < params.K; k++) {
        acc = fma(load_a(a_off, m, k, sa), load_b(b_off, k, n, sb), acc);
    }
    store_c(params.offset_c + bz * params.stride_c + m * params.ldc + n, n, acc);
}

// ---------------------------------------------------------------------------------------------------
// matmul_reg8x4: register blocking without subgroups.  Invocation (x, y) of batch z computes the
// 8 x 4 block C(m0 .. m0+7, n0 .. n0+3) with m0 = 8 * workgroup_id.y, n0 = 4 * global_invocation_id.x.
// A(m,k) is the same address for every invocation of a workgroup (a broadcast on GPUs); each invocation
// reads its own 4 columns of B.  Out-of-range rows / columns are clamped on load and skipped on store.
//   workgroup_size (REG_X, 1, 1) = (64, 1, 1) by default
//   grid = (ceil(N / (4 * REG_X)), ceil(M / 8), batch)
override REG_X: u32 = 64u;

@compute @workgroup_size(REG_X, 1, 1)
fn matmul_reg8x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(global_invocation_id) gid: vec3<u32>) {
    let M = params.M;
    let N = params.N;
    let K = params.K;
    let bz = wid.z;
    if (bz >= params.batch) { return; }
    let sa = a_strides();
    let sb = b_strides();
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 8u;
    let n0 = gid.x * 4u;
    let ar0 = min(m0 + 0u, M - 1u);
    let ar1 = min(m0 + 1u, M - 1u);
    let ar2 = min(m0 + 2u, M - 1u);
    let ar3 = min(m0 + 3u, M - 1u);
    let ar4 = min(m0 + 4u, M - 1u);
    let ar5 = min(m0 + 5u, M - 1u);
    let ar6 = min(m0 + 6u, M - 1u);
    let ar7 = min(m0 + 7u, M - 1u);
    // Clamped column indices of this invocation's 4 columns (loads stay in bounds for any N).
    let bc = vec4<u32>(min(n0, N - 1u), min(n0 + 1u, N - 1u), min(n0 + 2u, N - 1u), min(n0 + 3u, N - 1u));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    for (var k = 0u; k < K; k++) {
        let bv = vec4<f32>(load_b(b_off, k, bc.x, sb), load_b(b_off, k, bc.y, sb),
                           load_b(b_off, k, bc.z, sb), load_b(b_off, k, bc.w, sb));
        acc0 = fma(vec4<f32>(load_a(a_off, ar0, k, sa)), bv, acc0);
        acc1 = fma(vec4<f32>(load_a(a_off, ar1, k, sa)), bv, acc1);
        acc2 = fma(vec4<f32>(load_a(a_off, ar2, k, sa)), bv, acc2);
        acc3 = fma(vec4<f32>(load_a(a_off, ar3, k, sa)), bv, acc3);
        acc4 = fma(vec4<f32>(load_a(a_off, ar4, k, sa)), bv, acc4);
        acc5 = fma(vec4<f32>(load_a(a_off, ar5, k, sa)), bv, acc5);
        acc6 = fma(vec4<f32>(load_a(a_off, ar6, k, sa)), bv, acc6);
        acc7 = fma(vec4<f32>(load_a(a_off, ar7, k, sa)), bv, acc7);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    store_row4(c_off, m0 + 0u, n0, acc0);
    store_row4(c_off, m0 + 1u, n0, acc1);
    store_row4(c_off, m0 + 2u, n0, acc2);
    store_row4(c_off, m0 + 3u, n0, acc3);
    store_row4(c_off, m0 + 4u, n0, acc4);
    store_row4(c_off, m0 + 5u, n0, acc5);
    store_row4(c_off, m0 + 6u, n0, acc6);
    store_row4(c_off, m0 + 7u, n0, acc7);
}

// BEGIN subgroup
// ---------------------------------------------------------------------------------------------------
// matmul_sg16x4 / matmul_sg32x4: TM x 4 register block per invocation (TM = 16 or 32), A shared
// through subgroups.  Invocation x of workgroup (wx, wy, z) computes C(m0 .. m0+TM-1, n0 .. n0+3) of batch z:
//   m0 = TM * wy,  n0 = 4 * (wx * SG_X + x).
// Every invocation of a workgroup needs the same TM rows of A.  Instead of each invocation loading all
// TM rows (per-invocation loads are the expensive part on CPU adapters: lavapipe turns each one into a
// loop over the 8 SIMD lanes), subgroup lane l (l = 0..7) loads A(m0 + 8g + l, k..k+3) for g < TM/8, and
// subgroupBroadcast(., l) hands row 8g + l to every lane.  Each invocation loads its own 4 columns of B for
// 4 values of k and does TM x 4 x 4 FMAs.  K runs in steps of 4 with a scalar tail for K % 4.
// Requirements: the `subgroup` feature and a subgroup size >= 8 (lane l must exist for l < 8; lavapipe: 8,
// NVIDIA/AMD/Apple: 32 or 64).  SG_X must be a multiple of 8 so every subgroup has lanes 0..7 active
// (16 is best on lavapipe: enough workgroups for its threads, and a B panel that stays in cache).
// The whole workgroup must stay alive through the K loop (only uniform early exits), so out-of-range rows
// and columns are clamped on load and skipped on store.

// acc + A(r, k..k+3) . B(k..k+3, n0..n0+3): four FMAs, one per k.
fn fma_k4(acc: vec4<f32>, ar: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    var r = fma(vec4<f32>(ar.x), b0, acc);
    r = fma(vec4<f32>(ar.y), b1, r);
    r = fma(vec4<f32>(ar.z), b2, r);
    return fma(vec4<f32>(ar.w), b3, r);
}

override SG_X: u32 = 16u;

// ---------------------------------------------------------------------------------------------------
// matmul_sg16x4: TM = 16 (2 rows of A per lane): half the registers of sg32x4; for M <= 16, or GPUs
// with fewer registers per invocation.
//   workgroup_size (SG_X, 1, 1) = (16, 1, 1) by default
//   grid = (ceil(N / (4 * SG_X)), ceil(M / 16), batch)
@compute @workgroup_size(SG_X, 1, 1)
fn matmul_sg16x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(subgroup_invocation_id) sg_id: u32) {
    let M = params.M;
    let N = params.N;
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let sa = a_strides();
    let sb = b_strides();
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 16u;
    let n0 = gid.x * 4u;
    let lane = sg_id & 7u;
    // This lane's 2 rows of A, m0 + 8*g + lane (clamped; rows >= M are computed but never stored).
    let ra0 = a_off + min(m0 + 0u + lane, M - 1u) * sa.x;
    let ra1 = a_off + min(m0 + 8u + lane, M - 1u) * sa.x;
    // This invocation's 4 columns of B (clamped; columns >= N are never stored).
    let cb = b_off + vec4<u32>(min(n0, N - 1u), min(n0 + 1u, N - 1u), min(n0 + 2u, N - 1u), min(n0 + 3u, N - 1u)) * sb.y;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0);
    var acc9 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0);
    var acc13 = vec4<f32>(0.0);
    var acc14 = vec4<f32>(0.0);
    var acc15 = vec4<f32>(0.0);
    let K4 = K & ~3u;
    for (var k = 0u; k < K4; k += 4u) {
        let ka = k * sa.y;
        let av0 = vec4<f32>(f32(a[ra0 + ka]), f32(a[ra0 + ka + sa.y]), f32(a[ra0 + ka + 2u * sa.y]), f32(a[ra0 + ka + 3u * sa.y]));
        let av1 = vec4<f32>(f32(a[ra1 + ka]), f32(a[ra1 + ka + sa.y]), f32(a[ra1 + ka + 2u * sa.y]), f32(a[ra1 + ka + 3u * sa.y]));
        let kb0 = k * sb.x;
        let kb1 = kb0 + sb.x;
        let kb2 = kb1 + sb.x;
        let kb3 = kb2 + sb.x;
        let b0 = vec4<f32>(b_at(kb0 + cb.x), b_at(kb0 + cb.y), b_at(kb0 + cb.z), b_at(kb0 + cb.w));
        let b1 = vec4<f32>(b_at(kb1 + cb.x), b_at(kb1 + cb.y), b_at(kb1 + cb.z), b_at(kb1 + cb.w));
        let b2 = vec4<f32>(b_at(kb2 + cb.x), b_at(kb2 + cb.y), b_at(kb2 + cb.z), b_at(kb2 + cb.w));
        let b3 = vec4<f32>(b_at(kb3 + cb.x), b_at(kb3 + cb.y), b_at(kb3 + cb.z), b_at(kb3 + cb.w));
        acc0 = fma_k4(acc0, subgroupBroadcast(av0, 0u), b0, b1, b2, b3);
        acc1 = fma_k4(acc1, subgroupBroadcast(av0, 1u), b0, b1, b2, b3);
        acc2 = fma_k4(acc2, subgroupBroadcast(av0, 2u), b0, b1, b2, b3);
        acc3 = fma_k4(acc3, subgroupBroadcast(av0, 3u), b0, b1, b2, b3);
        acc4 = fma_k4(acc4, subgroupBroadcast(av0, 4u), b0, b1, b2, b3);
        acc5 = fma_k4(acc5, subgroupBroadcast(av0, 5u), b0, b1, b2, b3);
        acc6 = fma_k4(acc6, subgroupBroadcast(av0, 6u), b0, b1, b2, b3);
        acc7 = fma_k4(acc7, subgroupBroadcast(av0, 7u), b0, b1, b2, b3);
        acc8 = fma_k4(acc8, subgroupBroadcast(av1, 0u), b0, b1, b2, b3);
        acc9 = fma_k4(acc9, subgroupBroadcast(av1, 1u), b0, b1, b2, b3);
        acc10 = fma_k4(acc10, subgroupBroadcast(av1, 2u), b0, b1, b2, b3);
        acc11 = fma_k4(acc11, subgroupBroadcast(av1, 3u), b0, b1, b2, b3);
        acc12 = fma_k4(acc12, subgroupBroadcast(av1, 4u), b0, b1, b2, b3);
        acc13 = fma_k4(acc13, subgroupBroadcast(av1, 5u), b0, b1, b2, b3);
        acc14 = fma_k4(acc14, subgroupBroadcast(av1, 6u), b0, b1, b2, b3);
        acc15 = fma_k4(acc15, subgroupBroadcast(av1, 7u), b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let as0 = f32(a[ra0 + k * sa.y]);
        let as1 = f32(a[ra1 + k * sa.y]);
        let kb = k * sb.x;
        let bt = vec4<f32>(b_at(kb + cb.x), b_at(kb + cb.y), b_at(kb + cb.z), b_at(kb + cb.w));
        acc0 = fma(vec4<f32>(subgroupBroadcast(as0, 0u)), bt, acc0);
        acc1 = fma(vec4<f32>(subgroupBroadcast(as0, 1u)), bt, acc1);
        acc2 = fma(vec4<f32>(subgroupBroadcast(as0, 2u)), bt, acc2);
        acc3 = fma(vec4<f32>(subgroupBroadcast(as0, 3u)), bt, acc3);
        acc4 = fma(vec4<f32>(subgroupBroadcast(as0, 4u)), bt, acc4);
        acc5 = fma(vec4<f32>(subgroupBroadcast(as0, 5u)), bt, acc5);
        acc6 = fma(vec4<f32>(subgroupBroadcast(as0, 6u)), bt, acc6);
        acc7 = fma(vec4<f32>(subgroupBroadcast(as0, 7u)), bt, acc7);
        acc8 = fma(vec4<f32>(subgroupBroadcast(as1, 0u)), bt, acc8);
        acc9 = fma(vec4<f32>(subgroupBroadcast(as1, 1u)), bt, acc9);
        acc10 = fma(vec4<f32>(subgroupBroadcast(as1, 2u)), bt, acc10);
        acc11 = fma(vec4<f32>(subgroupBroadcast(as1, 3u)), bt, acc11);
        acc12 = fma(vec4<f32>(subgroupBroadcast(as1, 4u)), bt, acc12);
        acc13 = fma(vec4<f32>(subgroupBroadcast(as1, 5u)), bt, acc13);
        acc14 = fma(vec4<f32>(subgroupBroadcast(as1, 6u)), bt, acc14);
        acc15 = fma(vec4<f32>(subgroupBroadcast(as1, 7u)), bt, acc15);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    store_row4(c_off, m0 + 0u, n0, acc0);
    store_row4(c_off, m0 + 1u, n0, acc1);
    store_row4(c_off, m0 + 2u, n0, acc2);
    store_row4(c_off, m0 + 3u, n0, acc3);
    store_row4(c_off, m0 + 4u, n0, acc4);
    store_row4(c_off, m0 + 5u, n0, acc5);
    store_row4(c_off, m0 + 6u, n0, acc6);
    store_row4(c_off, m0 + 7u, n0, acc7);
    store_row4(c_off, m0 + 8u, n0, acc8);
    store_row4(c_off, m0 + 9u, n0, acc9);
    store_row4(c_off, m0 + 10u, n0, acc10);
    store_row4(c_off, m0 + 11u, n0, acc11);
    store_row4(c_off, m0 + 12u, n0, acc12);
    store_row4(c_off, m0 + 13u, n0, acc13);
    store_row4(c_off, m0 + 14u, n0, acc14);
    store_row4(c_off, m0 + 15u, n0, acc15);
}

// ---------------------------------------------------------------------------------------------------
// matmul_sg32x4: TM = 32 (4 rows of A per lane).  Fastest on lavapipe for M >= 32.
//   workgroup_size (SG_X, 1, 1) = (16, 1, 1) by default
//   grid = (ceil(N / (4 * SG_X)), ceil(M / 32), batch)
@compute @workgroup_size(SG_X, 1, 1)
fn matmul_sg32x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(subgroup_invocation_id) sg_id: u32) {
    let M = params.M;
    let N = params.N;
    let K = params.K;
    let bz = wid.z;
    // Uniform per workgroup: keeps every lane alive for the broadcasts.
    if (bz >= params.batch) { return; }
    let sa = a_strides();
    let sb = b_strides();
    let a_off = params.offset_a + bz * params.stride_a;
    let b_off = params.offset_b + bz * params.stride_b;
    let m0 = wid.y * 32u;
    let n0 = gid.x * 4u;
    let lane = sg_id & 7u;
    // This lane's 4 rows of A, m0 + 8*g + lane (clamped; rows >= M are computed but never stored).
    let ra0 = a_off + min(m0 + 0u + lane, M - 1u) * sa.x;
    let ra1 = a_off + min(m0 + 8u + lane, M - 1u) * sa.x;
    let ra2 = a_off + min(m0 + 16u + lane, M - 1u) * sa.x;
    let ra3 = a_off + min(m0 + 24u + lane, M - 1u) * sa.x;
    // This invocation's 4 columns of B (clamped; columns >= N are never stored).
    let cb = b_off + vec4<u32>(min(n0, N - 1u), min(n0 + 1u, N - 1u), min(n0 + 2u, N - 1u), min(n0 + 3u, N - 1u)) * sb.y;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0);
    var acc9 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0);
    var acc13 = vec4<f32>(0.0);
    var acc14 = vec4<f32>(0.0);
    var acc15 = vec4<f32>(0.0);
    var acc16 = vec4<f32>(0.0);
    var acc17 = vec4<f32>(0.0);
    var acc18 = vec4<f32>(0.0);
    var acc19 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0);
    var acc21 = vec4<f32>(0.0);
    var acc22 = vec4<f32>(0.0);
    var acc23 = vec4<f32>(0.0);
    var acc24 = vec4<f32>(0.0);
    var acc25 = vec4<f32>(0.0);
    var acc26 = vec4<f32>(0.0);
    var acc27 = vec4<f32>(0.0);
    var acc28 = vec4<f32>(0.0);
    var acc29 = vec4<f32>(0.0);
    var acc30 = vec4<f32>(0.0);
    var acc31 = vec4<f32>(0.0);
    let K4 = K & ~3u;
    for (var k = 0u; k < K4; k += 4u) {
        let ka = k * sa.y;
        let av0 = vec4<f32>(f32(a[ra0 + ka]), f32(a[ra0 + ka + sa.y]), f32(a[ra0 + ka + 2u * sa.y]), f32(a[ra0 + ka + 3u * sa.y]));
        let av1 = vec4<f32>(f32(a[ra1 + ka]), f32(a[ra1 + ka + sa.y]), f32(a[ra1 + ka + 2u * sa.y]), f32(a[ra1 + ka + 3u * sa.y]));
        let av2 = vec4<f32>(f32(a[ra2 + ka]), f32(a[ra2 + ka + sa.y]), f32(a[ra2 + ka + 2u * sa.y]), f32(a[ra2 + ka + 3u * sa.y]));
        let av3 = vec4<f32>(f32(a[ra3 + ka]), f32(a[ra3 + ka + sa.y]), f32(a[ra3 + ka + 2u * sa.y]), f32(a[ra3 + ka + 3u * sa.y]));
        let kb0 = k * sb.x;
        let kb1 = kb0 + sb.x;
        let kb2 = kb1 + sb.x;
        let kb3 = kb2 + sb.x;
        let b0 = vec4<f32>(b_at(kb0 + cb.x), b_at(kb0 + cb.y), b_at(kb0 + cb.z), b_at(kb0 + cb.w));
        let b1 = vec4<f32>(b_at(kb1 + cb.x), b_at(kb1 + cb.y), b_at(kb1 + cb.z), b_at(kb1 + cb.w));
        let b2 = vec4<f32>(b_at(kb2 + cb.x), b_at(kb2 + cb.y), b_at(kb2 + cb.z), b_at(kb2 + cb.w));
        let b3 = vec4<f32>(b_at(kb3 + cb.x), b_at(kb3 + cb.y), b_at(kb3 + cb.z), b_at(kb3 + cb.w));
        acc0 = fma_k4(acc0, subgroupBroadcast(av0, 0u), b0, b1, b2, b3);
        acc1 = fma_k4(acc1, subgroupBroadcast(av0, 1u), b0, b1, b2, b3);
        acc2 = fma_k4(acc2, subgroupBroadcast(av0, 2u), b0, b1, b2, b3);
        acc3 = fma_k4(acc3, subgroupBroadcast(av0, 3u), b0, b1, b2, b3);
        acc4 = fma_k4(acc4, subgroupBroadcast(av0, 4u), b0, b1, b2, b3);
        acc5 = fma_k4(acc5, subgroupBroadcast(av0, 5u), b0, b1, b2, b3);
        acc6 = fma_k4(acc6, subgroupBroadcast(av0, 6u), b0, b1, b2, b3);
        acc7 = fma_k4(acc7, subgroupBroadcast(av0, 7u), b0, b1, b2, b3);
        acc8 = fma_k4(acc8, subgroupBroadcast(av1, 0u), b0, b1, b2, b3);
        acc9 = fma_k4(acc9, subgroupBroadcast(av1, 1u), b0, b1, b2, b3);
        acc10 = fma_k4(acc10, subgroupBroadcast(av1, 2u), b0, b1, b2, b3);
        acc11 = fma_k4(acc11, subgroupBroadcast(av1, 3u), b0, b1, b2, b3);
        acc12 = fma_k4(acc12, subgroupBroadcast(av1, 4u), b0, b1, b2, b3);
        acc13 = fma_k4(acc13, subgroupBroadcast(av1, 5u), b0, b1, b2, b3);
        acc14 = fma_k4(acc14, subgroupBroadcast(av1, 6u), b0, b1, b2, b3);
        acc15 = fma_k4(acc15, subgroupBroadcast(av1, 7u), b0, b1, b2, b3);
        acc16 = fma_k4(acc16, subgroupBroadcast(av2, 0u), b0, b1, b2, b3);
        acc17 = fma_k4(acc17, subgroupBroadcast(av2, 1u), b0, b1, b2, b3);
        acc18 = fma_k4(acc18, subgroupBroadcast(av2, 2u), b0, b1, b2, b3);
        acc19 = fma_k4(acc19, subgroupBroadcast(av2, 3u), b0, b1, b2, b3);
        acc20 = fma_k4(acc20, subgroupBroadcast(av2, 4u), b0, b1, b2, b3);
        acc21 = fma_k4(acc21, subgroupBroadcast(av2, 5u), b0, b1, b2, b3);
        acc22 = fma_k4(acc22, subgroupBroadcast(av2, 6u), b0, b1, b2, b3);
        acc23 = fma_k4(acc23, subgroupBroadcast(av2, 7u), b0, b1, b2, b3);
        acc24 = fma_k4(acc24, subgroupBroadcast(av3, 0u), b0, b1, b2, b3);
        acc25 = fma_k4(acc25, subgroupBroadcast(av3, 1u), b0, b1, b2, b3);
        acc26 = fma_k4(acc26, subgroupBroadcast(av3, 2u), b0, b1, b2, b3);
        acc27 = fma_k4(acc27, subgroupBroadcast(av3, 3u), b0, b1, b2, b3);
        acc28 = fma_k4(acc28, subgroupBroadcast(av3, 4u), b0, b1, b2, b3);
        acc29 = fma_k4(acc29, subgroupBroadcast(av3, 5u), b0, b1, b2, b3);
        acc30 = fma_k4(acc30, subgroupBroadcast(av3, 6u), b0, b1, b2, b3);
        acc31 = fma_k4(acc31, subgroupBroadcast(av3, 7u), b0, b1, b2, b3);
    }
    for (var k = K4; k < K; k++) {
        let as0 = f32(a[ra0 + k * sa.y]);
        let as1 = f32(a[ra1 + k * sa.y]);
        let as2 = f32(a[ra2 + k * sa.y]);
        let as3 = f32(a[ra3 + k * sa.y]);
        let kb = k * sb.x;
        let bt = vec4<f32>(b_at(kb + cb.x), b_at(kb + cb.y), b_at(kb + cb.z), b_at(kb + cb.w));
        acc0 = fma(vec4<f32>(subgroupBroadcast(as0, 0u)), bt, acc0);
        acc1 = fma(vec4<f32>(subgroupBroadcast(as0, 1u)), bt, acc1);
        acc2 = fma(vec4<f32>(subgroupBroadcast(as0, 2u)), bt, acc2);
        acc3 = fma(vec4<f32>(subgroupBroadcast(as0, 3u)), bt, acc3);
        acc4 = fma(vec4<f32>(subgroupBroadcast(as0, 4u)), bt, acc4);
        acc5 = fma(vec4<f32>(subgroupBroadcast(as0, 5u)), bt, acc5);
        acc6 = fma(vec4<f32>(subgroupBroadcast(as0, 6u)), bt, acc6);
        acc7 = fma(vec4<f32>(subgroupBroadcast(as0, 7u)), bt, acc7);
        acc8 = fma(vec4<f32>(subgroupBroadcast(as1, 0u)), bt, acc8);
        acc9 = fma(vec4<f32>(subgroupBroadcast(as1, 1u)), bt, acc9);
        acc10 = fma(vec4<f32>(subgroupBroadcast(as1, 2u)), bt, acc10);
        acc11 = fma(vec4<f32>(subgroupBroadcast(as1, 3u)), bt, acc11);
        acc12 = fma(vec4<f32>(subgroupBroadcast(as1, 4u)), bt, acc12);
        acc13 = fma(vec4<f32>(subgroupBroadcast(as1, 5u)), bt, acc13);
        acc14 = fma(vec4<f32>(subgroupBroadcast(as1, 6u)), bt, acc14);
        acc15 = fma(vec4<f32>(subgroupBroadcast(as1, 7u)), bt, acc15);
        acc16 = fma(vec4<f32>(subgroupBroadcast(as2, 0u)), bt, acc16);
        acc17 = fma(vec4<f32>(subgroupBroadcast(as2, 1u)), bt, acc17);
        acc18 = fma(vec4<f32>(subgroupBroadcast(as2, 2u)), bt, acc18);
        acc19 = fma(vec4<f32>(subgroupBroadcast(as2, 3u)), bt, acc19);
        acc20 = fma(vec4<f32>(subgroupBroadcast(as2, 4u)), bt, acc20);
        acc21 = fma(vec4<f32>(subgroupBroadcast(as2, 5u)), bt, acc21);
        acc22 = fma(vec4<f32>(subgroupBroadcast(as2, 6u)), bt, acc22);
        acc23 = fma(vec4<f32>(subgroupBroadcast(as2, 7u)), bt, acc23);
        acc24 = fma(vec4<f32>(subgroupBroadcast(as3, 0u)), bt, acc24);
        acc25 = fma(vec4<f32>(subgroupBroadcast(as3, 1u)), bt, acc25);
        acc26 = fma(vec4<f32>(subgroupBroadcast(as3, 2u)), bt, acc26);
        acc27 = fma(vec4<f32>(subgroupBroadcast(as3, 3u)), bt, acc27);
        acc28 = fma(vec4<f32>(subgroupBroadcast(as3, 4u)), bt, acc28);
        acc29 = fma(vec4<f32>(subgroupBroadcast(as3, 5u)), bt, acc29);
        acc30 = fma(vec4<f32>(subgroupBroadcast(as3, 6u)), bt, acc30);
        acc31 = fma(vec4<f32>(subgroupBroadcast(as3, 7u)), bt, acc31);
    }
    let c_off = params.offset_c + bz * params.stride_c;
    store_row4(c_off, m0 + 0u, n0, acc0);
    store_row4(c_off, m0 + 1u, n0, acc1);
    store_row4(c_off, m0 + 2u, n0, acc2);
    store_row4(c_off, m0 + 3u, n0, acc3);
    store_row4(c_off, m0 + 4u, n0, acc4);
    store_row4(c_off, m0 + 5u, n0, acc5);
    store_row4(c_off, m0 + 6u, n0, acc6);
    store_row4(c_off, m0 + 7u, n0, acc7);
    store_row4(c_off, m0 + 8u, n0, acc8);
    store_row4(c_off, m0 + 9u, n0, acc9);
    store_row4(c_off, m0 + 10u, n0, acc10);
    store_row4(c_off, m0 + 11u, n0, acc11);
    store_row4(c_off, m0 + 12u, n0, acc12);
    store_row4(c_off, m0 + 13u, n0, acc13);
    store_row4(c_off, m0 + 14u, n0, acc14);
    store_row4(c_off, m0 + 15u, n0, acc15);
    store_row4(c_off, m0 + 16u, n0, acc16);
    store_row4(c_off, m0 + 17u, n0, acc17);
    store_row4(c_off, m0 + 18u, n0, acc18);
    store_row4(c_off, m0 + 19u, n0, acc19);
    store_row4(c_off, m0 + 20u, n0, acc20);
    store_row4(c_off, m0 + 21u, n0, acc21);
    store_row4(c_off, m0 + 22u, n0, acc22);
    store_row4(c_off, m0 + 23u, n0, acc23);
    store_row4(c_off, m0 + 24u, n0, acc24);
    store_row4(c_off, m0 + 25u, n0, acc25);
    store_row4(c_off, m0 + 26u, n0, acc26);
    store_row4(c_off, m0 + 27u, n0, acc27);
    store_row4(c_off, m0 + 28u, n0, acc28);
    store_row4(c_off, m0 + 29u, n0, acc29);
    store_row4(c_off, m0 + 30u, n0, acc30);
    store_row4(c_off, m0 + 31u, n0, acc31);
}
// END subgroup
