"""`wgrpo bench --quick`: checked, positive figures in well-formed JSON; a wrong kernel fails loudly."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from wgrpo.tools import bench, bench_probes, cli
from wgrpo.tools.bench_cases import Catalog, build_catalog, matmul_case
from wgrpo.tools.bench_timing import INCLUSIVE_TIMER, Timer


def _run(tmp_path, capsys, *args):
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--quick", "--json", str(path), *args])
    captured = capsys.readouterr()
    return code, json.loads(path.read_text()), captured


def test_quick_bench_json(device, tmp_path, capsys):
    code, report, captured = _run(tmp_path, capsys, "--filter", "add 16384 f32")
    assert code == 0, captured.err
    assert report["adapter"]["name"] == device.name
    assert report["adapter"]["timer"] in ("gpu-timestamps", "wall-clock")
    [case] = report["cases"]
    assert case["checked"] is True and case["kernel"] == "add" and case["dtype"] == "f32"
    assert case["time_us"] > 0 and case["gbps"] > 0 and case["ratio_to_numpy"] > 0
    assert case["shape"] == {"n": 16384} and case["bytes"] == 3 * 16384 * 4
    if bench_probes.probe_available()[0]:
        assert report["probes"]["fma"]["gflops"] > 0 and report["probes"]["copy"]["gbps"] > 0
        assert case["ratio_to_peak"] > 0
    else:
        assert case["ratio_to_peak"] is None and any("probe" in n for n in report["notes"])
    assert "add 16384 f32" in captured.out and "x numpy" in captured.out  # the table
    assert "[1/1] add 16384 f32" in captured.err  # the progress line
    assert "dispatch_overhead" not in report  # filtered out


def test_dispatch_overhead_is_one_submit(device, tmp_path, capsys):
    code, report, captured = _run(tmp_path, capsys, "--filter", "dispatch", "--trials", "2")
    assert code == 0, captured.err
    assert report["cases"] == []
    overhead = report["dispatch_overhead"]
    assert overhead["dispatches"] == 200 and overhead["submits"] == 1
    assert overhead["per_dispatch_us"] > 0 and overhead["one_dispatch_per_submit_us"] > 0
    assert "dispatch overhead: 200 small dispatches in 1 submit" in captured.out


def test_wrong_kernel_fails_loudly_and_is_not_timed(device, tmp_path, capsys, monkeypatch):
    def catalog(quick, device):
        good = build_catalog(quick, device).cases
        add = next(c for c in good if c.name == "add 16384 f32")
        broken = bench.Case(**{**add.__dict__, "label": "broken", "reference": np.subtract})
        return Catalog(cases=[broken, add])

    monkeypatch.setattr(bench, "build_catalog", catalog)
    code, report, captured = _run(tmp_path, capsys, "--filter", "add", "--timer", "wall")
    assert code == 1
    broken, add = report["cases"]
    assert broken["checked"] is False and "max abs error" in broken["error"] and "time_us" not in broken
    assert broken["max_error"] > 0.1
    assert add["checked"] is True and add["timer"] == "wall-clock"
    assert "FAIL add broken f32: max abs error" in captured.err


def test_catalog_skips_missing_ops(monkeypatch):
    from wgrpo.engine import ops

    monkeypatch.delattr(ops, "softmax", raising=False)
    no_extras = types.SimpleNamespace(name="a test adapter", has_f16=False, has_subgroups=False, is_software=True)
    catalog = build_catalog(quick=True, device=no_extras)
    assert not any(c.kernel == "softmax" for c in catalog.cases)
    assert any(m.startswith("softmax:") for m in catalog.missing)
    assert all(c.dtype == "f32" for c in catalog.cases)


def test_matmul_case_shapes_and_flops():
    case = matmul_case(4, 8, 16, 32, "TN", "f32")
    assert case.flops == 2 * 4 * 8 * 16 * 32
    a, b = case.arrays(np.random.default_rng(0))
    assert a.shape == (4, 32, 8) and b.shape == (4, 32, 16)
    assert case.reference(a, b).shape == (4, 8, 16)
    assert case.name == "matmul 4x8x16x32 TN f32"


def test_timer_gpu_and_wall_agree_roughly(device):
    from wgrpo.engine import ops
    from wgrpo.engine.tensor import Tensor

    x = Tensor.from_numpy(np.ones(4096, np.float32), device)
    wall = Timer(device, use_timestamps=False).time(lambda: ops.silu(x), 20, 2)
    assert wall.timer == "wall-clock" and wall.median > 0 and wall.repeat == 20
    if device.has_timestamps:
        gpu = Timer(device).time(lambda: ops.silu(x), 20, 2)
        assert gpu.timer == "gpu-timestamps" and 0 < gpu.median < 50 * gpu.wall_median
    with pytest.raises(ValueError, match="trials"):
        Timer(device, max_trials=2).time(lambda: ops.silu(x), 1, 3)


def test_timer_notices_an_op_that_reads_back(device):
    from wgrpo.engine import ops
    from wgrpo.engine.tensor import Tensor

    x = Tensor.from_numpy(np.ones(256, np.float32), device)
    timing = Timer(device).time(lambda: ops.silu(x).numpy(), 3, 2)
    assert timing.timer == INCLUSIVE_TIMER and timing.median > 0


def test_probe_constants_match_the_kernel_header():
    """The FLOP and byte formulas the bench uses are the ones `kernels/probe.wgsl` documents; the workgroup size
    is the kernel's own."""
    import re

    from wgrpo.kernels import registry

    code = (registry.KERNEL_DIR / "probe.wgsl").read_text()
    workgroup = int(re.search(r"override PROBE_X: u32 = (\d+)u", code).group(1))
    assert bench_probes.probe_workgroup(bench_probes.FMA_ENTRY) == workgroup
    assert bench_probes.probe_workgroup(bench_probes.COPY_ENTRY) == workgroup
    assert int(re.search(r"trips of (\d+) vec4 FMAs", code).group(1)) == bench_probes.FMA_VEC4_PER_ITER
    flops_per = int(re.search(r"FLOPs per dispatch = .*= (\d+) \* n \* iters", code).group(1))
    assert bench_probes.fma_flops(1, 1) == flops_per
    assert bench_probes.copy_bytes(1) == int(re.search(r"bytes moved per dispatch = (\d+) \* n", code).group(1))
    assert bench_probes.probe_available() == (True, "")


def test_attention_cases_check_every_output(device, tmp_path, capsys):
    """Forward and backward of each attention variant the adapter runs, checked against the numpy references
    (dq, dk and dv each) before they are timed."""
    code, report, captured = _run(tmp_path, capsys, "--filter", "attention", "--trials", "2")
    assert code == 0, captured.err
    cases = report["cases"]
    kernels = {(c["kernel"], c["shape"]["variant"]) for c in cases}
    assert ("attention", "auto") in kernels and ("attention backward", "auto") in kernels
    assert ("attention backward", "serial") in kernels
    assert all(c["checked"] and c["gflops"] > 0 for c in cases)
    backward = next(c for c in cases if c["kernel"] == "attention backward")
    forward = next(c for c in cases if c["kernel"] == "attention")
    assert backward["flops"] == forward["flops"] * 5 // 2 == 5 * 64 * 64 * 4 * 32


def test_a_wrong_gradient_fails_the_attention_check(device):
    from wgrpo.tools.bench_cases import attention_cases

    _, case = attention_cases(1, 9, 2, 1, 8)
    wrong = bench.Case(**{**case.__dict__, "reference": lambda q, k, v, d: (*case.reference(q, k, v, d)[:2], 0 * v)})
    for candidate, expect_ok in ((case, True), (wrong, False)):
        _, error, message = bench.check_case(candidate, device, np.random.default_rng(0))
        assert (message == "") is expect_ok, message
