// attention_sg.slots.wgsl -- attention_sg's per-lane registers: a lane's rows, accumulators and softmax
// state, read and written by slot numbers known only at run time without moving them to memory. A part of
// the attention_sg family, included by attention_sg.wgsl (`// use attention_sg.slots`) inside its subgroup
// block, where the registers, bindings and Params are declared.

// ------------------------------------------------------------------------------------------------ slots

// own[S][t] = x where s == S: one slot element chosen at run time (the loads run in a loop over all slot
// elements, and every slot element takes the loaded value or keeps its own by a select).
fn set_own(S: u32, s: u32, t: u32, x: vec4<f32>) {
    if (S >= SLOTS) { return; }
    own[S][0] = select(own[S][0], x, s == S && t == 0u);
    own[S][1] = select(own[S][1], x, s == S && t == 1u);
    own[S][2] = select(own[S][2], x, s == S && t == 2u);
    own[S][3] = select(own[S][3], x, s == S && t == 3u);
    own[S][4] = select(own[S][4], x, s == S && t == 4u);
    own[S][5] = select(own[S][5], x, s == S && t == 5u);
    own[S][6] = select(own[S][6], x, s == S && t == 6u);
    own[S][7] = select(own[S][7], x, s == S && t == 7u);
}

fn set_own2(S: u32, s: u32, t: u32, x: vec4<f32>) {
    if (S >= SLOTS) { return; }
    own2[S][0] = select(own2[S][0], x, s == S && t == 0u);
    own2[S][1] = select(own2[S][1], x, s == S && t == 1u);
    own2[S][2] = select(own2[S][2], x, s == S && t == 2u);
    own2[S][3] = select(own2[S][3], x, s == S && t == 3u);
    own2[S][4] = select(own2[S][4], x, s == S && t == 4u);
    own2[S][5] = select(own2[S][5], x, s == S && t == 5u);
    own2[S][6] = select(own2[S][6], x, s == S && t == 6u);
    own2[S][7] = select(own2[S][7], x, s == S && t == 7u);
}

fn set_own_any(s: u32, t: u32, x: vec4<f32>) {
    set_own(0u, s, t, x);
    set_own(1u, s, t, x);
    set_own(2u, s, t, x);
    set_own(3u, s, t, x);
    set_own(4u, s, t, x);
    set_own(5u, s, t, x);
    set_own(6u, s, t, x);
    set_own(7u, s, t, x);
}

fn set_own2_any(s: u32, t: u32, x: vec4<f32>) {
    set_own2(0u, s, t, x);
    set_own2(1u, s, t, x);
    set_own2(2u, s, t, x);
    set_own2(3u, s, t, x);
    set_own2(4u, s, t, x);
    set_own2(5u, s, t, x);
    set_own2(6u, s, t, x);
    set_own2(7u, s, t, x);
}

// acc[s][t] (acc2) for a slot element chosen at run time, by selects over slot S's (and `x` elsewhere).
fn pick_acc(S: u32, s: u32, t: u32, x: vec4<f32>) -> vec4<f32> {
    if (S >= SLOTS) { return x; }
    var y = x;
    y = select(y, acc[S][0], s == S && t == 0u);
    y = select(y, acc[S][1], s == S && t == 1u);
    y = select(y, acc[S][2], s == S && t == 2u);
    y = select(y, acc[S][3], s == S && t == 3u);
    y = select(y, acc[S][4], s == S && t == 4u);
    y = select(y, acc[S][5], s == S && t == 5u);
    y = select(y, acc[S][6], s == S && t == 6u);
    y = select(y, acc[S][7], s == S && t == 7u);
    return y;
}

fn pick_acc2(S: u32, s: u32, t: u32, x: vec4<f32>) -> vec4<f32> {
    if (S >= SLOTS) { return x; }
    var y = x;
    y = select(y, acc2[S][0], s == S && t == 0u);
    y = select(y, acc2[S][1], s == S && t == 1u);
    y = select(y, acc2[S][2], s == S && t == 2u);
    y = select(y, acc2[S][3], s == S && t == 3u);
    y = select(y, acc2[S][4], s == S && t == 4u);
    y = select(y, acc2[S][5], s == S && t == 5u);
    y = select(y, acc2[S][6], s == S && t == 6u);
    y = select(y, acc2[S][7], s == S && t == 7u);
    return y;
}

fn acc_any(s: u32, t: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    x = pick_acc(0u, s, t, x);
    x = pick_acc(1u, s, t, x);
    x = pick_acc(2u, s, t, x);
    x = pick_acc(3u, s, t, x);
    x = pick_acc(4u, s, t, x);
    x = pick_acc(5u, s, t, x);
    x = pick_acc(6u, s, t, x);
    x = pick_acc(7u, s, t, x);
    return x;
}

fn acc2_any(s: u32, t: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    x = pick_acc2(0u, s, t, x);
    x = pick_acc2(1u, s, t, x);
    x = pick_acc2(2u, s, t, x);
    x = pick_acc2(3u, s, t, x);
    x = pick_acc2(4u, s, t, x);
    x = pick_acc2(5u, s, t, x);
    x = pick_acc2(6u, s, t, x);
    x = pick_acc2(7u, s, t, x);
    return x;
}

// m[rg] = x (l), and m[rg] (l[rg]), for a group chosen at run time.
fn set_m_any(rg: u32, x: f32) {
    m[0] = select(m[0], x, rg == 0u);
    m[1] = select(m[1], x, rg == 1u);
    m[2] = select(m[2], x, rg == 2u);
    m[3] = select(m[3], x, rg == 3u);
    m[4] = select(m[4], x, rg == 4u);
    m[5] = select(m[5], x, rg == 5u);
    m[6] = select(m[6], x, rg == 6u);
    m[7] = select(m[7], x, rg == 7u);
}

fn set_l_any(rg: u32, x: f32) {
    l[0] = select(l[0], x, rg == 0u);
    l[1] = select(l[1], x, rg == 1u);
    l[2] = select(l[2], x, rg == 2u);
    l[3] = select(l[3], x, rg == 3u);
    l[4] = select(l[4], x, rg == 4u);
    l[5] = select(l[5], x, rg == 5u);
    l[6] = select(l[6], x, rg == 6u);
    l[7] = select(l[7], x, rg == 7u);
}

fn m_any(rg: u32) -> f32 {
    var x = m[0];
    x = select(x, m[0], rg == 0u);
    x = select(x, m[1], rg == 1u);
    x = select(x, m[2], rg == 2u);
    x = select(x, m[3], rg == 3u);
    x = select(x, m[4], rg == 4u);
    x = select(x, m[5], rg == 5u);
    x = select(x, m[6], rg == 6u);
    x = select(x, m[7], rg == 7u);
    return x;
}

fn l_any(rg: u32) -> f32 {
    var x = l[0];
    x = select(x, l[0], rg == 0u);
    x = select(x, l[1], rg == 1u);
    x = select(x, l[2], rg == 2u);
    x = select(x, l[3], rg == 3u);
    x = select(x, l[4], rg == 4u);
    x = select(x, l[5], rg == 5u);
    x = select(x, l[6], rg == 6u);
    x = select(x, l[7], rg == 7u);
    return x;
}

// sum_t own[s][t] . (lane t's x): slot s's chunk of the lane's row against a chunk spread over the lanes.
fn dot_own(s: u32, x: vec4<f32>) -> f32 {
    let a = dot(own[s][0], subgroupBroadcast(x, 0u)) + dot(own[s][1], subgroupBroadcast(x, 1u));
    let b = dot(own[s][2], subgroupBroadcast(x, 2u)) + dot(own[s][3], subgroupBroadcast(x, 3u));
    let c = dot(own[s][4], subgroupBroadcast(x, 4u)) + dot(own[s][5], subgroupBroadcast(x, 5u));
    let d = dot(own[s][6], subgroupBroadcast(x, 6u)) + dot(own[s][7], subgroupBroadcast(x, 7u));
    return (a + b) + (c + d);
}

fn dot_own2(s: u32, x: vec4<f32>) -> f32 {
    let a = dot(own2[s][0], subgroupBroadcast(x, 0u)) + dot(own2[s][1], subgroupBroadcast(x, 1u));
    let b = dot(own2[s][2], subgroupBroadcast(x, 2u)) + dot(own2[s][3], subgroupBroadcast(x, 3u));
    let c = dot(own2[s][4], subgroupBroadcast(x, 4u)) + dot(own2[s][5], subgroupBroadcast(x, 5u));
    let d = dot(own2[s][6], subgroupBroadcast(x, 6u)) + dot(own2[s][7], subgroupBroadcast(x, 7u));
    return (a + b) + (c + d);
}

// The lane's row of group rg (own; own2) . the spread row, over all chunks.
fn group_dot(rg: u32, r: Spread) -> f32 {
    let s = rg * CHUNKS;
    var t = dot_own(s, r.x[0]);
    if (CHUNKS > 1u) { t += dot_own(s + 1u, r.x[1]); }
    if (CHUNKS > 2u) { t += dot_own(s + 2u, r.x[2]); }
    if (CHUNKS > 3u) { t += dot_own(s + 3u, r.x[3]); }
    return t;
}

fn group_dot2(rg: u32, r: Spread) -> f32 {
    let s = rg * CHUNKS;
    var t = dot_own2(s, r.x[0]);
    if (CHUNKS > 1u) { t += dot_own2(s + 1u, r.x[1]); }
    if (CHUNKS > 2u) { t += dot_own2(s + 2u, r.x[2]); }
    if (CHUNKS > 3u) { t += dot_own2(s + 3u, r.x[3]); }
    return t;
}

// acc[s] = acc[s] * c + p x (acc2 += p x), x a chunk spread over the lanes.
fn axpy_acc(s: u32, c: f32, p: f32, x: vec4<f32>) {
    let cv = vec4<f32>(c);
    let pv = vec4<f32>(p);
    acc[s][0] = fma(pv, subgroupBroadcast(x, 0u), acc[s][0] * cv);
    acc[s][1] = fma(pv, subgroupBroadcast(x, 1u), acc[s][1] * cv);
    acc[s][2] = fma(pv, subgroupBroadcast(x, 2u), acc[s][2] * cv);
    acc[s][3] = fma(pv, subgroupBroadcast(x, 3u), acc[s][3] * cv);
    acc[s][4] = fma(pv, subgroupBroadcast(x, 4u), acc[s][4] * cv);
    acc[s][5] = fma(pv, subgroupBroadcast(x, 5u), acc[s][5] * cv);
    acc[s][6] = fma(pv, subgroupBroadcast(x, 6u), acc[s][6] * cv);
    acc[s][7] = fma(pv, subgroupBroadcast(x, 7u), acc[s][7] * cv);
}

fn axpy_acc2(s: u32, p: f32, x: vec4<f32>) {
    let pv = vec4<f32>(p);
    acc2[s][0] = fma(pv, subgroupBroadcast(x, 0u), acc2[s][0]);
    acc2[s][1] = fma(pv, subgroupBroadcast(x, 1u), acc2[s][1]);
    acc2[s][2] = fma(pv, subgroupBroadcast(x, 2u), acc2[s][2]);
    acc2[s][3] = fma(pv, subgroupBroadcast(x, 3u), acc2[s][3]);
    acc2[s][4] = fma(pv, subgroupBroadcast(x, 4u), acc2[s][4]);
    acc2[s][5] = fma(pv, subgroupBroadcast(x, 5u), acc2[s][5]);
    acc2[s][6] = fma(pv, subgroupBroadcast(x, 6u), acc2[s][6]);
    acc2[s][7] = fma(pv, subgroupBroadcast(x, 7u), acc2[s][7]);
}
