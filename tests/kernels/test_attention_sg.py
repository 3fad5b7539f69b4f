"""kernels/attention_sg.wgsl through engine.ops.attention (variant="subgroup"): the subgroup attention forward and
backward for CPU adapters.

Checked against the float64 numpy references of tests/kernels/test_attention.py (explicit softmax and analytic
gradients) on awkward shapes (T = 1, primes, T_q < T_k causal, no mask, GQA groups of 1 to 3, D from 1 to 128,
several row groups and workgroups), in f16 storage, against the serial variant (either backward accepting the
other's forward), against central finite differences of the kernels themselves, and for bitwise determinism.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from wgrpo.engine import InputError, ops
from wgrpo.engine.ops.attention import (attention_backward, attention_forward, eligible_variants, max_head_dim,
                                        refusal, subgroup_groups)
from wgrpo.engine.tensor import Tensor
from tests.gradcheck import check_gradients
from tests.kernels.test_attention import backward_reference, random_qkv, reference
from tests.tolerances import assert_close

attention_module = sys.modules["wgrpo.engine.ops.attention"]


@pytest.fixture(autouse=True)
def needs_subgroups(device):
    if refusal("subgroup", device) is not None:
        pytest.skip(f"the subgroup variant cannot run on {device.name}: {refusal('subgroup', device)}")


# (B, T_q, T_k, H, H_kv, D, causal)
SHAPES = [
    (1, 1, 1, 1, 1, 1, True),       # the smallest case
    (1, 7, 7, 6, 2, 7, True),       # prime T and D, GQA 3:1
    (2, 13, 13, 6, 3, 8, True),     # B = 2, GQA 2:1, D = 8
    (2, 13, 13, 6, 6, 32, False),   # no mask, H = H_kv
    (1, 1, 9, 4, 2, 32, True),      # one query over 9 keys
    (2, 5, 9, 6, 2, 64, True),      # T_q < T_k causal: a prefix, then 5 new queries
    (1, 37, 37, 2, 1, 1, True),     # D = 1, several workgroups of query and key groups
    (1, 23, 31, 3, 1, 7, True),     # GQA 3:1, a cached prefix not a multiple of 8
    (1, 70, 70, 4, 2, 32, True),    # past 64 positions: 8 row groups per forward workgroup, 4 in the backward
    (1, 261, 261, 2, 1, 40, True),  # past 256: 4 row groups of 2 chunks everywhere, the last chunk partial
    (1, 9, 9, 2, 2, max_head_dim(), True),   # the largest head dimension
    (1, 29, 67, 2, 1, 64, False),   # T_q < T_k unmasked, 2 chunks of 32
]


def gpu(x: np.ndarray, device) -> Tensor:
    return Tensor.from_numpy(x, device)


def run(device, q, k, v, d_out, causal, forward="subgroup", backward="subgroup"):
    """(out, lse, dq, dk, dv) as numpy arrays, the forward and the backward of the given variants."""
    scale = 1 / np.sqrt(q.shape[-1])
    tq, tk, tv = gpu(q, device), gpu(k, device), gpu(v, device)
    out, lse = attention_forward(tq, tk, tv, causal, scale, forward)
    grads = attention_backward(tq, tk, tv, out, lse, gpu(d_out, device), causal, scale, variant=backward)
    return (out.numpy(), lse.numpy(), *(g.numpy() for g in grads))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_numpy(device, shape):
    q, k, v = random_qkv(shape, seed=1)
    causal = shape[-1]
    d_out = np.random.default_rng(2).standard_normal(q.shape).astype(np.float32)
    out, lse, dq, dk, dv = run(device, q, k, v, d_out, causal)
    expected, expected_lse = reference(q, k, v, causal)
    assert_close(out, expected, scale=3)
    assert_close(lse, expected_lse, scale=3)
    for grad, expected in zip((dq, dk, dv), backward_reference(q, k, v, d_out, causal)):
        assert_close(grad, expected, scale=10)


def test_other_row_group_counts(device, monkeypatch):
    """Workgroups of 3 row groups (the chooser gives 1, 2 or 4): partial last workgroups, position blocks split
    between the query heads of a kv group, key groups past T_k."""
    monkeypatch.setattr(attention_module, "subgroup_groups", lambda *args, **kwargs: 3)
    shape = (2, 45, 45, 4, 2, 32, True)
    q, k, v = random_qkv(shape, seed=3)
    d_out = np.random.default_rng(4).standard_normal(q.shape).astype(np.float32)
    out, lse, dq, dk, dv = run(device, q, k, v, d_out, True)
    assert_close(out, reference(q, k, v, True)[0], scale=3)
    for grad, expected in zip((dq, dk, dv), backward_reference(q, k, v, d_out, True)):
        assert_close(grad, expected, scale=10)


def test_row_groups_fit_the_registers():
    for d in (1, 32, 33, 64, 65, 128):
        for t in (1, 42, 64, 65, 4096):
            for op in ("forward", "dq", "dkv"):
                groups = subgroup_groups(op, d, t, t, 2)
                assert 1 <= groups and groups * -(-d // 32) <= 8
    assert subgroup_groups("forward", 32, 42, 42, 2) == 2 and subgroup_groups("dkv", 64, 512, 512) == 4
    assert subgroup_groups("forward", 64, 128, 128) == 4 and subgroup_groups("dq", 64, 128, 128) == 2


@pytest.mark.parametrize("shape", [(2, 29, 29, 6, 2, 16, True), (1, 11, 30, 4, 4, 64, False)], ids=str)
def test_subgroup_and_serial_agree(device, shape):
    """Same results up to rounding through autograd, and either backward accepts the other's forward."""
    q, k, v = random_qkv(shape, seed=5)
    causal = shape[-1]
    d_out = np.random.default_rng(6).standard_normal(q.shape).astype(np.float32)
    results = {}
    for variant in ("serial", "subgroup"):
        tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
        out = ops.attention(tq, tk, tv, causal=causal, variant=variant)
        out.backward(gpu(d_out, device))
        results[variant] = [out.numpy()] + [t.grad.numpy() for t in (tq, tk, tv)]
    for serial, subgroup in zip(results["serial"], results["subgroup"]):
        assert_close(subgroup, serial, scale=10)
    for forward, backward in (("serial", "subgroup"), ("subgroup", "serial")):
        mixed = run(device, q, k, v, d_out, causal, forward, backward)
        for grad, serial in zip(mixed[2:], results["serial"][1:]):
            assert_close(grad, serial, scale=10)


@pytest.mark.parametrize("shape", [(1, 5, 5, 4, 2, 3, True), (1, 2, 6, 2, 1, 4, True), (2, 3, 4, 2, 2, 2, False)],
                         ids=str)
def test_backward_matches_finite_differences(device, shape):
    q, k, v = random_qkv(shape, seed=10)
    check_gradients(lambda a, b, c: ops.attention(a, b, c, causal=shape[-1], variant="subgroup"), [q, k, v], device)


def test_backward_is_deterministic_and_respects_requires_grad(device):
    shape = (1, 19, 19, 6, 2, 8, True)
    q, k, v = random_qkv(shape, seed=8)
    d_out = gpu(np.random.default_rng(9).standard_normal(q.shape).astype(np.float32), device)
    grads = []
    for _ in range(2):
        tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
        ops.attention(tq, tk, tv, variant="subgroup").backward(d_out)
        grads.append([t.grad.numpy() for t in (tq, tk, tv)])
    for first, second in zip(*grads):
        assert np.array_equal(first, second)
    tq, tk, tv = gpu(q, device).requires_grad_(), gpu(k, device), gpu(v, device).requires_grad_()
    ops.attention(tq, tk, tv, variant="subgroup").backward(d_out)
    assert tk.grad is None
    assert_close(tq.grad.numpy(), grads[0][0])
    assert_close(tv.grad.numpy(), grads[0][2])


@pytest.mark.parametrize("magnitude", [300.0, -300.0])
def test_large_scores_are_stable(device, magnitude):
    """Scores of several hundred (exp would overflow in f32): the online softmax stays finite and exact."""
    shape = (1, 11, 11, 2, 1, 16, True)
    q, k, v = random_qkv(shape, seed=3, magnitude=magnitude)
    out, lse = attention_forward(gpu(q, device), gpu(k, device), gpu(v, device), True, 1 / np.sqrt(16), "subgroup")
    expected, expected_lse = reference(q, k, v, True)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(lse.numpy()))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(lse.numpy(), expected_lse, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 13, 13, 6, 2, 16, True), (1, 9, 20, 2, 1, 32, False)], ids=str)
def test_f16(device, shape):
    if not device.has_f16:
        pytest.skip(f"{device.name} lacks shader-f16")
    q, k, v = random_qkv(shape, np.float16, seed=4)
    causal = shape[-1]
    d_out = np.random.default_rng(5).standard_normal(q.shape).astype(np.float16)
    tq, tk, tv = (gpu(x, device).requires_grad_() for x in (q, k, v))
    out = ops.attention(tq, tk, tv, causal=causal, variant="subgroup")
    assert out.dtype == np.float16
    assert_close(out.numpy(), reference(q, k, v, causal)[0], "f16")
    out.backward(gpu(d_out, device))
    for grad, expected in zip((tq.grad, tk.grad, tv.grad), backward_reference(q, k, v, d_out, causal)):
        assert grad.dtype == np.float16
        assert_close(grad.numpy(), expected, "f16", scale=2)


def test_the_tuner_times_the_variants_this_adapter_can_run(device):
    from wgrpo.engine.ops.attention import tile_choices, tiled_name
    from wgrpo.engine.ops.attention_tuning import tuning_problem

    assert "subgroup" in eligible_variants(device)
    problem = tuning_problem(device, (1, 20, 4, 32), (1, 20, 2, 32), "f32", True, "serial")
    tiled = [tiled_name(t) for t in tile_choices(device, 32)]  # "tiled" once per tile size
    assert [c.name for c in problem.candidates] == ["serial", *tiled, "subgroup"] and len(tiled) >= 2
    for candidate in problem.candidates:
        assert_close(candidate.run().numpy(), problem.reference(), scale=10)


def test_unknown_variants_are_refused_in_one_line(device):
    q, k, v = (gpu(x, device) for x in random_qkv((1, 4, 4, 2, 1, 8, True)))
    with pytest.raises(InputError, match=r"variant must be one of \('serial', 'tiled', 'subgroup'\) or None, got 'sg'"):
        ops.attention(q, k, v, variant="sg")


def test_subgroups_narrower_than_8_lanes_are_refused_and_the_default_stays_correct(tmp_path):
    """lavapipe built for 128-bit vectors has 4-lane subgroups: the variant is refused there (a probe dispatch), and
    attention without a variant runs serial although the shipped table names subgroup."""
    import os
    import subprocess

    script = tmp_path / "narrow.py"
    script.write_text(
        "import numpy as np\n"
        "from wgrpo.engine import InputError, ops\n"
        "from wgrpo.engine.device import get_device\n"
        "from wgrpo.engine.ops.attention import eligible_variants, refusal\n"
        "from wgrpo.engine.tensor import Tensor\n"
        "from tests.kernels.test_attention import random_qkv, reference\n"
        "device = get_device()\n"
        "if 'llvmpipe' not in device.name or not device.has_subgroups:\n"
        "    print('skip'); raise SystemExit\n"
        "assert 'subgroup' not in eligible_variants(device), eligible_variants(device)\n"
        "assert 'not 8 lanes of one subgroup' in refusal('subgroup', device)\n"
        "q, k, v = random_qkv((1, 9, 9, 4, 2, 16, True), seed=1)\n"
        "out = ops.attention(*(Tensor.from_numpy(x, device) for x in (q, k, v))).numpy()\n"
        "np.testing.assert_allclose(out, reference(q, k, v)[0], rtol=3e-4, atol=3e-5)\n"
        "try:\n"
        "    ops.attention(*(Tensor.from_numpy(x, device) for x in (q, k, v)), variant='subgroup')\n"
        "except InputError as error:\n"
        "    print('refused:', error)\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, LP_NATIVE_VECTOR_WIDTH="128",
               PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if result.stdout.strip() == "skip":
        pytest.skip("needs lavapipe")
    assert "refused: attention: variant 'subgroup' cannot run here" in result.stdout
