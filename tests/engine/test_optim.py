"""wgrpo.engine.optim: AdamW against a numpy port of torch.optim.AdamW (and torch itself when installed), its state
dict, and clip_grad_norm_ against numpy, each with the vec4 kernels (where a size is a multiple of 4) and with the
scalar ones only (`vec4=False`), and the two bit for bit against each other. Shapes include 1, primes, multiples
of 4, gradients spanning several clip chunks and parameters held in row blocks."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, ops
from wgrpo.engine.optim import AdamW, clip_chunk, clip_coefficient, clip_grad_norm_
from tests.dispatch_spy import entries_dispatched
from tests.tolerances import assert_close

SHAPES = [(1,), (7,), (13, 17), (5003,), (4,), (16, 12), (3, 4100)]  # the last three take the vec4 kernels
VEC4 = pytest.mark.parametrize("vec4", [True, False], ids=["vec4", "scalar"])


class NumpyAdamW:
    """torch.optim.AdamW's single-tensor algorithm, in float64, one state per parameter (a port, for reference)."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        self.params = [p.astype(np.float64) for p in params]
        self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
        self.state = [None] * len(params)

    def step(self, grads):
        b1, b2 = self.betas
        for i, g in enumerate(grads):
            if g is None:
                continue
            if self.state[i] is None:
                self.state[i] = {"step": 0, "m": np.zeros_like(self.params[i]), "v": np.zeros_like(self.params[i])}
            s = self.state[i]
            s["step"] += 1
            t = s["step"]
            p = self.params[i] * (1 - self.lr * self.wd)
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            denom = np.sqrt(s["v"]) / np.sqrt(1 - b2**t) + self.eps
            self.params[i] = p - self.lr / (1 - b1**t) * s["m"] / denom


def make_run(device, seed=0, shapes=SHAPES, steps=5, dtype=np.float32):
    """Initial parameters and per-step gradients; parameter 1 has no gradient at step 2 (it is skipped)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) * (0.1 + k) for s in shapes] for k in range(steps)]
    grads[2][1] = None
    return init, grads


def run_engine(device, init, grads, lrs, vec4=True, **hyper):
    params = [Tensor.from_numpy(p, device) for p in init]
    opt = AdamW(params, lr=lrs[0], vec4=vec4, **hyper)
    for lr, step_grads in zip(lrs, grads):
        opt.lr = lr
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else Tensor.from_numpy(g, device)
        opt.step()
    return params, opt


HYPER = dict(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
LRS = [1e-2, 1e-2, 5e-3, 2e-2, 1e-3]  # a schedule changes lr between steps


@VEC4
def test_adamw_matches_numpy_port(device, vec4):
    init, grads = make_run(device)
    params, opt = run_engine(device, init, grads, LRS, vec4, **HYPER)
    ref = NumpyAdamW(init, LRS[0], **HYPER)
    for lr, step_grads in zip(LRS, grads):
        ref.lr = lr
        ref.step([None if g is None else g.astype(np.float64) for g in step_grads])
    state = opt.state_dict()
    assert state["step"] == 5
    assert [s["step"] for s in state["state"]] == [5, 4, 5, 5, 5, 5, 5]
    for i, p in enumerate(params):
        assert_close(p.numpy(), ref.params[i])
        assert_close(state["state"][i]["exp_avg"], ref.state[i]["m"])
        assert_close(state["state"][i]["exp_avg_sq"], ref.state[i]["v"])
        assert not np.allclose(p.numpy(), init[i])  # the test would notice an optimizer doing nothing


@VEC4
def test_adamw_matches_torch(device, vec4):
    torch = pytest.importorskip("torch")
    init, grads = make_run(device, seed=1)
    params, _ = run_engine(device, init, grads, LRS, vec4, **HYPER)
    tparams = [torch.tensor(p, requires_grad=True) for p in init]
    topt = torch.optim.AdamW(tparams, lr=LRS[0], **HYPER)
    for lr, step_grads in zip(LRS, grads):
        topt.param_groups[0]["lr"] = lr
        for p, g in zip(tparams, step_grads):
            p.grad = None if g is None else torch.tensor(g)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_state_dict_round_trip_resumes_exactly(device):
    init, grads = make_run(device, seed=2, steps=5)
    straight, _ = run_engine(device, init, grads, LRS, **HYPER)
    first, opt = run_engine(device, init, grads[:3], LRS[:3], **HYPER)
    saved = opt.state_dict()
    assert isinstance(saved["state"][0]["exp_avg"], np.ndarray)
    resumed = [Tensor.from_numpy(p.numpy(), device) for p in first]
    opt2 = AdamW(resumed, lr=123.0)  # hyperparameters come from the state dict
    opt2.load_state_dict(saved)
    assert (opt2.lr, opt2.betas, opt2.weight_decay) == (LRS[2], HYPER["betas"], HYPER["weight_decay"])
    for lr, step_grads in zip(LRS[3:], grads[3:]):
        opt2.lr = lr
        for p, g in zip(resumed, step_grads):
            p.grad = Tensor.from_numpy(g, device)
        opt2.step()
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_zero_grad_and_skipping(device):
    p = Tensor.from_numpy(np.ones(3, np.float32), device)
    opt = AdamW([p])
    p.grad = Tensor.from_numpy(np.ones(3, np.float32), device)
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradient: nothing changes, no state
    np.testing.assert_array_equal(p.numpy(), 1.0)
    assert opt.state_dict()["state"] == [None]


@VEC4
def test_adamw_f16_parameters(device, vec4):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    init, grads = make_run(device, seed=3, shapes=[(7,), (13, 17), (8,), (16, 12)], steps=3, dtype=np.float16)
    params, opt = run_engine(device, init, grads, LRS[:3], vec4, **HYPER)
    ref = NumpyAdamW(init, LRS[0], **HYPER)
    for lr, step_grads in zip(LRS[:3], grads):
        ref.lr = lr
        ref.step([None if g is None else g.astype(np.float64) for g in step_grads])
    for p, expected in zip(params, ref.params):
        assert p.dtype == np.float16
        assert_close(p.numpy(), expected, "f16")
    assert opt.state_dict()["state"][0]["exp_avg"].dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_adamw_vec4_equals_scalar_to_the_bit(device, monkeypatch, dtype):
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    init, grads = make_run(device, seed=8, dtype=dtype)
    updates = sum(g is not None for step in grads for g in step)
    aligned = sum(g is not None and g.size % 4 == 0 for step in grads for g in step)
    seen = entries_dispatched(device, monkeypatch)
    fast, fast_opt = run_engine(device, init, grads, LRS, True, **HYPER)
    assert seen.count("adamw_step4") == aligned and seen.count("adamw_step_naive") == updates - aligned
    slow, slow_opt = run_engine(device, init, grads, LRS, False, **HYPER)
    assert seen[updates:] == ["adamw_step_naive"] * updates
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(fast_opt.state_dict()["state"], slow_opt.state_dict()["state"]):
        np.testing.assert_array_equal(a["exp_avg"], b["exp_avg"])
        np.testing.assert_array_equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_adamw_on_row_blocks_equals_one_buffer(device, monkeypatch):
    """Parameters over the binding limit are updated block by block, each block taking the vec4 kernel when its
    size allows: (37, 61) in blocks of 16, 16 and 5 rows runs the scalar kernel on the last block only."""
    shapes = [(40, 64), (37, 61)]
    init, grads = make_run(device, seed=9, shapes=shapes, steps=3)
    whole, _ = run_engine(device, init, grads, LRS[:3], **HYPER)
    monkeypatch.setattr(device, "_binding_bytes", 4096)
    seen = entries_dispatched(device, monkeypatch)
    split, _ = run_engine(device, init, grads, LRS[:3], **HYPER)
    assert all(p.is_split for p in split)
    assert [p.row_ranges for p in split] == [[(0, 16), (16, 32), (32, 40)], [(0, 16), (16, 32), (32, 37)]]
    both = ["adamw_step4"] * 3 + ["adamw_step4", "adamw_step4", "adamw_step_naive"]
    assert seen == both + both + ["adamw_step4"] * 3  # the second parameter has no gradient at the third step
    for a, b in zip(split, whole):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_adamw_errors(device):
    p = Tensor.from_numpy(np.ones((2, 3), np.float32), device)
    with pytest.raises(ValueError, match="params is empty"):
        AdamW([])
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1"):
        AdamW([p], lr=-1)
    with pytest.raises(ValueError, match=r"betas must be two numbers in \[0, 1\), got \(0.9, 1.0\)"):
        AdamW([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"params\[1\] is the same tensor as params\[0\]"):
        AdamW([p, p])
    with pytest.raises(TypeError, match=r"params\[0\] must be an engine.Tensor, got ndarray"):
        AdamW([np.ones(3)])
    opt = AdamW([p])
    p.grad = Tensor.from_numpy(np.ones(6, np.float32), device)
    with pytest.raises(ValueError, match=r"params\[0\] has shape \(2, 3\) but its grad has shape \(6,\)"):
        opt.step()
    bad = opt.state_dict()
    bad["state"] = [None, None]
    with pytest.raises(ValueError, match="holds 2 parameters, this optimizer has 1"):
        opt.load_state_dict(bad)


# ---------------------------------------------------------------------------------------------- clipping


def clip_case(device, seed, shapes):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    params = [Tensor.from_numpy(np.zeros(s, np.float32), device) for s in shapes]
    for p, g in zip(params, grads):
        p.grad = Tensor.from_numpy(g, device)
    return params, grads


@VEC4
@pytest.mark.parametrize("max_norm_ratio", [0.3, 2.0])  # clipping active, and a no-op
def test_clip_grad_norm_matches_numpy(device, max_norm_ratio, vec4):
    # several chunks, chunk edges; the aligned ones take the vec4 kernels
    shapes = [(1,), (13, 17), (3, 5003), (clip_chunk(),), (clip_chunk() + 1,), (16, 12), (3, 4100), (4,)]
    params, grads = clip_case(device, 4, shapes)
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    max_norm = max_norm_ratio * norm
    readbacks = device.runtime.stats.readbacks
    total = clip_grad_norm_(params, max_norm, vec4=vec4)
    assert device.runtime.stats.readbacks == readbacks  # clipping itself never waits for the GPU
    assert total.shape == () and total.dtype == np.float32
    assert_close(total.numpy(), norm)
    factor = min(1.0, max_norm / (norm + 1e-6))
    for p, g in zip(params, grads):
        assert_close(p.grad.numpy(), g * factor)


@VEC4
def test_clip_grad_norm_matches_torch(device, vec4):
    torch = pytest.importorskip("torch")
    params, grads = clip_case(device, 5, [(7,), (3, 5003), (3, 4100)])
    tparams = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(tparams, 1.5)
    assert_close(clip_grad_norm_(params, 1.5, vec4=vec4).numpy(), expected.item())
    for p, tp in zip(params, tparams):
        assert_close(p.grad.numpy(), tp.grad.numpy())


def test_clip_scales_a_shared_gradient_once(device):
    # c = a + b hands the same gradient tensor to a and b; an in-place clip would scale it twice.
    a = Tensor.from_numpy(np.ones(4, np.float32), device).requires_grad_()
    b = Tensor.from_numpy(np.ones(4, np.float32), device).requires_grad_()
    ops.add(a, b).backward(Tensor.from_numpy(np.full(4, 3.0, np.float32), device))
    total = clip_grad_norm_([a, b], 1.0)
    assert_close(total.numpy(), np.sqrt(8 * 9.0))
    factor = 1.0 / (np.sqrt(72.0) + 1e-6)
    assert_close(a.grad.numpy(), np.full(4, 3.0 * factor))
    assert_close(b.grad.numpy(), np.full(4, 3.0 * factor))


@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipped, and a factor of 1
def test_clipping_inside_the_step_equals_clipping_then_stepping(device, max_norm):
    """clip_coefficient + AdamW.step(grad_factor=...) gives clip_grad_norm_ + step's parameters and moments to the
    bit (f32), leaves the gradients as they were, and reports the same norm; a shared gradient is scaled once."""
    rng = np.random.default_rng(4)
    shapes = [(7,), (3, 5003), (64, 36)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def fresh_gradients(params):
        for p, g in zip(params, grads):
            p.grad = Tensor.from_numpy(g, device)
        a, b = params[-2:]
        a.grad = b.grad = None
        ops.add(a, b).backward(Tensor.from_numpy(np.full(4, 3.0, np.float32), device))  # one shared gradient

    def setup():
        params = [Tensor.from_numpy(v, device) for v in values]
        return [*params, *(Tensor.from_numpy(np.ones(4, np.float32), device).requires_grad_() for _ in range(2))]

    first, second = setup(), setup()
    optimizers = [AdamW(ps, lr=0.1) for ps in (first, second)]
    for _ in range(2):
        fresh_gradients(first)
        norm = clip_grad_norm_(first, max_norm)
        optimizers[0].step()
        fresh_gradients(second)
        fused_norm, coefficient = clip_coefficient(second, max_norm)
        optimizers[1].step(grad_factor=coefficient)
        np.testing.assert_array_equal(fused_norm.numpy(), norm.numpy())
    for p, q in zip(first, second):
        np.testing.assert_array_equal(q.numpy(), p.numpy())
    for s, t in zip(optimizers[0].state, optimizers[1].state):
        np.testing.assert_array_equal(t["exp_avg"].numpy(), s["exp_avg"].numpy())
    for q, g in zip(second, grads):
        np.testing.assert_array_equal(q.grad.numpy(), g)  # untouched
    np.testing.assert_array_equal(second[-1].grad.numpy(), np.full(4, 3.0, np.float32))
    assert clip_coefficient([Tensor.from_numpy(np.ones(3, np.float32), device)], 1.0)[1] is None  # no grads


def test_a_bad_grad_factor_is_named(device):
    p = Tensor.from_numpy(np.ones(4, np.float32), device)
    p.grad = Tensor.from_numpy(np.ones(4, np.float32), device)
    with pytest.raises(TypeError, match="grad_factor must be a float32 engine.Tensor of shape \\(1,\\)"):
        AdamW([p]).step(grad_factor=Tensor.from_numpy(np.ones(2, np.float32), device))


def scaled_exactly(g: np.ndarray, scale: np.float32) -> np.ndarray:
    """g * scale as the clip kernels compute it: an f32 product (correctly rounded), stored in g's dtype."""
    return (g.astype(np.float32) * scale).astype(g.dtype)


@VEC4
@pytest.mark.parametrize("limit", [None, 32 << 10])  # one buffer each, and gradients held in row blocks
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_clip_in_place_equals_the_scaled_copy(device, monkeypatch, limit, dtype, vec4):
    """Unshared gradients are scaled in place (the same tensors, no new gradient bytes), a gradient two
    parameters share into a copy: both are g * scale to the bit. A float32 gradient of one 1.0 reads the scale
    back."""
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
    shapes = [(1,), (13, 17), (197, 61), (clip_chunk() + 1,), (197, 64), (8,), (1,)]
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes[:-1]] + [np.ones(1, np.float32)]
    memory = device.runtime.memory
    for share in (False, True):
        params = [Tensor.from_numpy(np.zeros_like(g), device) for g in grads]
        for p, g in zip(params, grads):
            p.grad = Tensor.from_numpy(g, device)
        assert limit is None or (params[2].grad.is_split and params[4].grad.is_split)
        twins = [Tensor.from_numpy(np.zeros_like(g), device) for g in grads] if share else []
        for twin, p in zip(twins, params):
            twin.grad = p.grad
        before = [p.grad for p in params]
        held = memory.current["gradients"]
        clip_grad_norm_(params + twins, 0.5, vec4=vec4)
        assert all((p.grad is g) != share for p, g in zip(params, before))
        assert (memory.current["gradients"] > held) == share  # only the copies are new gradient bytes
        scale = np.float32(params[-1].grad.numpy()[0])
        assert 0 < scale < 1
        for p, g in zip(params + twins, grads + grads * share):
            np.testing.assert_array_equal(p.grad.numpy(), scaled_exactly(g, scale))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_clip_vec4_entries_run_where_sizes_allow(device, monkeypatch, dtype):
    """Aligned gradients take the vec4 entries (sum of squares, in-place and copying scale), the others the scalar
    ones; the norm agrees with the scalar kernels' and each path scales by its own factor."""
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    shapes = [(7,), (16, 12), (3, 4100), (clip_chunk() + 1,)]
    rng = np.random.default_rng(10)
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    results = {}
    for vec4 in (True, False):
        params = [Tensor.from_numpy(np.zeros_like(g), device) for g in grads]
        for p, g in zip(params, grads):
            p.grad = Tensor.from_numpy(g, device)
        twin = Tensor.from_numpy(np.zeros_like(grads[1]), device)
        twin.grad = params[1].grad  # shared: copied, not scaled in place
        seen = entries_dispatched(device, monkeypatch)
        total = clip_grad_norm_(params + [twin], 1.0, vec4=vec4)
        monkeypatch.undo()
        results[vec4] = float(total.numpy()), [p.grad.numpy() for p in params]
        scalar = ["sum_squares_workgroup", "clip_coef_workgroup", "clip_scale_naive", "clip_scale_inplace_naive"]
        if vec4:
            assert seen == ["sum_squares_workgroup", "sum_squares4", "sum_squares4", "sum_squares_workgroup",
                            "sum_squares4", "clip_coef_workgroup", "clip_scale_inplace_naive", "clip_scale4",
                            "clip_scale_inplace4", "clip_scale_inplace_naive", "clip_scale4"]
        else:
            assert set(seen) == set(scalar)
    assert_close(results[True][0], results[False][0])
    for vec4, (norm, scaled) in results.items():
        factor = np.float32(1.0 / (np.float32(norm) + 1e-6))
        for got, g in zip(scaled, grads):
            assert_close(got, g.astype(np.float64) * factor, "f16" if dtype == np.float16 else "f32")


def test_clip_copies_a_gradient_sharing_a_buffer_through_a_view(device, monkeypatch):
    # one parameter's gradient is rows of another's (a view of its buffer): both are scaled once
    monkeypatch.setattr(device, "_binding_bytes", 4096)
    g = np.arange(1, 1 + 16 * 128, dtype=np.float32).reshape(16, 128)  # row blocks of 8 rows
    big = Tensor.from_numpy(np.zeros(g.shape, np.float32), device)
    small = Tensor.from_numpy(np.zeros((4, 128), np.float32), device)
    lone = Tensor.from_numpy(np.zeros(3, np.float32), device)
    big.grad = Tensor.from_numpy(g, device)
    assert big.grad.is_split
    small.grad = big.grad.rows(8, 12)
    lone.grad = Tensor.from_numpy(np.full(3, 2.0, np.float32), device)
    lone_grad = lone.grad
    norm = np.sqrt((g.astype(np.float64) ** 2).sum() + (g[8:12].astype(np.float64) ** 2).sum() + 12.0)
    clip_grad_norm_([big, small, lone], 1.0)
    factor = 1.0 / (norm + 1e-6)
    assert_close(big.grad.numpy(), g * factor)
    assert_close(small.grad.numpy(), g[8:12] * factor)
    assert lone.grad is lone_grad
    assert_close(lone.grad.numpy(), np.full(3, 2.0 * factor))


def test_clip_skips_missing_grads_and_checks_arguments(device):
    params, grads = clip_case(device, 6, [(5,), (3,)])
    params[1].grad = None
    assert_close(clip_grad_norm_(params, 100.0).numpy(), np.linalg.norm(grads[0]))
    assert params[1].grad is None
    assert float(clip_grad_norm_([params[1]], 1.0).numpy()) == 0.0
    with pytest.raises(ValueError, match="max_norm must be finite and >= 0, got -1"):
        clip_grad_norm_(params, -1)
    with pytest.raises(TypeError, match="max_norm must be a number, got str"):
        clip_grad_norm_(params, "1")
