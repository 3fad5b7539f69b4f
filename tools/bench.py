"""`wgrpo bench`: check every kernel against numpy, then time it against the adapter's peak and numpy.

Owns: `BenchConfig`, the check-then-time loop, the table and the JSON report. The cases live in
`tools.bench_cases`, the peak probes in `tools.bench_probes`, the timers in `tools.bench_timing`.
Must not import `rl`.

`--model` hands over to `tools.bench_model` (whole-model tokens/s against PyTorch) and runs nothing else.
`--generate` hands over to `tools.bench_generate` (decode tokens/s against transformers' generate).
`--grpo` hands over to `tools.bench_grpo` (seconds per GRPO step: rollout, reward, update, and their FLOPs).
`--checkpoints` hands over to `tools.bench_checkpoints` (real model shapes, random weights, against transformers).
`--memory` hands over to `tools.bench_memory` (device bytes of a GRPO step at real shapes, by configuration).
`--autotune` hands over to `tools.bench_autotune` (this adapter's kernel variants tuned on a model's shape classes).

Figures: time per call is the median over trials of (one submit holding `repeat` calls) / repeat, timed by GPU
timestamp queries around the compute pass when the adapter has them, else by the wall clock over the submit and
its completion. `x peak` divides GFLOP/s by the FMA probe's and GB/s by the copy probe's; `x numpy` is numpy's
best time on the host (float32, all its threads) divided by ours, so above 1 means faster than numpy.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.tools.bench_cases import Case, build_catalog
from wgrpo.tools.bench_timing import INCLUSIVE_TIMER, MAX_DISPATCHES_PER_TRIAL, Timer, time_host

# Largest error allowed, relative to the largest |reference| value, per storage dtype.
CHECK_TOLERANCE = {"f32": 1e-3, "f16": 2e-2}
MAX_TRIALS = 64


@dataclass
class BenchConfig:
    """Options of `wgrpo bench`."""

    quick: bool = field(default=False, metadata={
        "help": "small shapes and few trials: a smoke test that finishes in seconds, even on a CPU adapter"})
    filter: str = field(default="", metadata={
        "help": "run only the cases whose name contains this substring, e.g. 'matmul', 'f16', '512x512x512 NT', "
                "'dispatch' (the names are printed in the table)", "metavar": "SUBSTR"})
    repeat: int = field(default=0, metadata={
        "help": "calls recorded into one submit per trial; 0 picks it so a trial takes about 0.1 s "
                "(0.02 s with --quick)"})
    trials: int = field(default=0, metadata={"help": "timed trials per case, the median is reported; 0 means 7 "
                                                     "(3 with --quick)"})
    json: str | None = field(default=None, metadata={
        "help": "also write the results as JSON to this path", "metavar": "PATH"})
    timer: str = field(default="auto", metadata={
        "help": "auto: GPU timestamp queries when the adapter has them, else the wall clock; wall: always the "
                "wall clock over the submit", "choices": ("auto", "wall")})
    seed: int = field(default=0, metadata={"help": "seed of the random inputs"})
    model: bool = field(default=False, metadata={
        "help": "instead of the kernels, time a whole model step: forward and forward+backward tokens/s of the "
                "model the ModelBenchConfig options describe, and the same step in PyTorch when installed "
                "(--quick, --trials, --json and --seed apply; --filter, --repeat and --timer do not)"})
    generate: bool = field(default=False, metadata={
        "help": "instead of the kernels, time generation: decode tokens/s at the GenerateBenchConfig batch sizes "
                "and lengths on the model the ModelBenchConfig options describe, and transformers' generate when "
                "installed (--quick, --json, --seed, --torch and --torch-threads apply)"})
    profile: bool = field(default=False, metadata={
        "help": "with --model, --generate or --grpo: after the timed runs, run one more with every dispatch timed "
                "by GPU timestamps and print GPU time per kernel (the profiled run is slower: read the shares)"})
    grpo: bool = field(default=False, metadata={
        "help": "instead of the kernels, time GRPO steps (GRPOBenchConfig options): seconds per step split into "
                "rollout, reward and update, with each phase's FLOPs and GFLOP/s, on a random model of the "
                "ModelBenchConfig sizes (--quick, --trials, --json and --seed apply)"})

    checkpoints: bool = field(default=False, metadata={
        "help": "instead of the kernels, check the CheckpointBenchConfig shapes (Qwen2.5-0.5B, Qwen3-0.6B, Llama "
                "3.2 1B, SmolLM2-135M; random weights) in float32 and bfloat16 against transformers: load time, "
                "logits, greedy tokens, save round trip, device bytes (--quick, --json and --seed apply)"})
    autotune: bool = field(default=False, metadata={
        "help": "instead of the kernels, tune this adapter's matmul and attention variants on the shape classes "
                "of the model the ModelBenchConfig options describe (training step at B x T rows, decoding at B), "
                "print the winners and keep them in the user cache directory for every later run (--quick and "
                "--json apply)"})
    memory: bool = field(default=False, metadata={
        "help": "instead of the kernels, the device bytes of one GRPO step at Qwen2.5-0.5B and -1.5B shapes by "
                "configuration (MemoryBenchConfig options): full fine-tuning with and without micro-batches and "
                "activation checkpointing, and LoRA; estimated, and measured with --memory-measure (--json and "
                "--seed apply)"})

    def __post_init__(self):
        if not 0 <= self.trials <= MAX_TRIALS:
            raise input_error(f"--trials must be in 0..{MAX_TRIALS} (0 = default), got {self.trials}")
        if self.repeat < 0:
            raise input_error(f"--repeat must be at least 0 (0 = automatic), got {self.repeat}")

    def resolved_trials(self) -> int:
        return self.trials or (3 if self.quick else 7)

    def target_seconds(self) -> float:
        return 0.02 if self.quick else 0.1


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text)
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _progress_done() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def check_case(case: Case, device, rng) -> tuple[list, float, str]:
    """Run once and compare with numpy: (host arrays, max error, "" or the failure message)."""
    from wgrpo.engine.tensor import Tensor

    arrays = case.arrays(rng)
    tensors = [Tensor.from_numpy(a, device) for a in arrays]
    outputs = case.gpu(*tensors)
    outputs = [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    expected_all = case.reference(*[a.astype(np.float64) for a in arrays])
    expected_all = expected_all if isinstance(expected_all, tuple) else (expected_all,)
    if len(outputs) != len(expected_all):
        return arrays, math.inf, f"{len(outputs)} outputs, expected {len(expected_all)}"
    worst = 0.0
    for out, expected in zip(outputs, expected_all):  # an op of several outputs is checked on each
        if out.shape != expected.shape:
            return arrays, math.inf, f"shape {out.shape}, expected {expected.shape}"
        finite = np.isfinite(expected)
        if not np.all(np.isfinite(out)[finite]):
            return arrays, math.inf, "non-finite values where numpy has finite ones"
        error = float(np.max(np.abs(out.astype(np.float64) - expected)[finite], initial=0.0))
        scale = float(np.max(np.abs(expected[finite]), initial=0.0))
        bound = CHECK_TOLERANCE[case.dtype] * max(scale, 1e-6)
        if not error <= bound:
            return arrays, error, (f"max abs error {error:.3g} > {bound:.3g} "
                                   f"({CHECK_TOLERANCE[case.dtype]:g} x max |ref| {scale:.3g})")
        worst = max(worst, error)
    return arrays, worst, ""


def _contiguous(result):
    """numpy's result as written arrays (a transpose is a view; the kernel writes its data, so numpy must as well)."""
    return [np.ascontiguousarray(x) for x in result] if isinstance(result, tuple) else np.ascontiguousarray(result)


def time_case(case: Case, device, timer: Timer, arrays: list, config: BenchConfig, peaks: dict) -> dict:
    from wgrpo.engine.tensor import Tensor

    tensors = [Tensor.from_numpy(a, device) for a in arrays]
    repeat = min(config.repeat, MAX_DISPATCHES_PER_TRIAL // case.dispatches)  # 0 stays 0: automatic
    timing = timer.time(lambda: case.gpu(*tensors), repeat, config.resolved_trials(), case.dispatches)
    host = [a.astype(np.float32) for a in arrays]
    numpy_s = time_host(lambda: _contiguous(case.reference(*host)), min_seconds=0.02 if config.quick else 0.1)
    result = {"time_us": timing.median * 1e6, "best_us": timing.best * 1e6, "wall_us": timing.wall_median * 1e6,
              "timer": timing.timer, "repeat": timing.repeat, "trials": len(timing.trials),
              "numpy_time_us": numpy_s * 1e6, "numpy_dtype": "f32", "ratio_to_numpy": numpy_s / timing.median}
    if case.flops:
        result["gflops"] = case.flops / timing.median * 1e-9
        peak = peaks.get("gflops")
        result["ratio_to_peak"] = result["gflops"] / peak if peak else None
    else:
        result["gbps"] = case.nbytes / timing.median * 1e-9
        peak = peaks.get("gbps")
        result["ratio_to_peak"] = result["gbps"] / peak if peak else None
    if timing.timer == INCLUSIVE_TIMER:
        result["warning"] = ("the op submits or reads back while it is recorded: "
                             "timed by the wall clock, recording included")
    return result


def dispatch_overhead(device, timer: Timer, count: int, trials: int) -> dict:
    """`count` small dispatches recorded into one submit: time per dispatch, and the submit count it took."""
    from wgrpo.engine import ops
    from wgrpo.engine.tensor import Tensor

    runtime = device.runtime
    x = Tensor.from_numpy(np.ones(256, np.float32), device)
    ops.add(x, x)
    runtime.synchronize()
    submits_before = runtime.stats.submits
    start = time.perf_counter()
    outs = [ops.add(x, x) for _ in range(count)]
    recorded = time.perf_counter()
    runtime.synchronize()
    done = time.perf_counter()
    submits = runtime.stats.submits - submits_before
    del outs
    timing = timer.time(lambda: ops.add(x, x), count, trials)
    single = []
    for _ in range(max(3, trials)):
        t0 = time.perf_counter()
        ops.add(x, x)
        runtime.synchronize()
        single.append(time.perf_counter() - t0)
    return {"dispatches": count, "submits": submits, "total_us": (done - start) * 1e6,
            "record_us_per_dispatch": (recorded - start) / count * 1e6,
            "per_dispatch_us": timing.median * 1e6, "timer": timing.timer,
            "one_dispatch_per_submit_us": float(np.median(single)) * 1e6}


def adapter_info(device, timer: Timer) -> dict:
    s = device.summary
    info = {"index": s.index, "name": s.name, "backend": s.backend, "type": s.adapter_type, "driver": s.driver,
            "features": sorted(device.features), "timer": timer.name,
            "host": platform.processor() or platform.machine(), "numpy": np.__version__}
    if timer.use_timestamps:
        info["timestamp_period_ns"] = timer.period_ns
        info["timestamp_period_source"] = timer.period_source
    return info


def _run_probes(device, timer: Timer, config: BenchConfig, report: dict) -> dict:
    from wgrpo.tools import bench_probes

    ok, why = bench_probes.probe_available()
    if not ok:
        report["notes"].append(f"peak probes skipped ({why}); ratio_to_peak is null")
        return {}
    trials, repeat = config.resolved_trials(), min(config.repeat, MAX_DISPATCHES_PER_TRIAL)
    _progress("probe: fma ...")
    fma = bench_probes.run_fma_probe(device, timer, workgroups=64 if config.quick else 4096,
                                     iterations=256, repeat=repeat, trials=trials)
    _progress("probe: copy ...")
    copy = bench_probes.run_copy_probe(device, timer, n_vec4=(1 << 16) if config.quick else (1 << 22),
                                       repeat=repeat, trials=trials)
    report["probes"] = {"fma": fma, "copy": copy}
    return {"gflops": fma["gflops"], "gbps": copy["gbps"]}


def run_bench(config: BenchConfig, device_spec: str | None = None) -> int:
    """Run the benchmark; print the table to stdout, progress to stderr. Exit code 1 if any check failed."""
    from wgrpo.engine.device import get_device

    device = get_device(device_spec)
    trials = config.resolved_trials()
    timer = Timer(device, max_trials=max(trials, 1), use_timestamps=config.timer == "auto",
                  target_seconds=config.target_seconds())
    report = {"adapter": adapter_info(device, timer), "config": asdict(config), "probes": {}, "cases": [],
              "skipped": [], "notes": []}
    if timer.use_timestamps and "assumed" in timer.period_source:
        report["notes"].append("timestamp ticks " + timer.period_source)
    peaks = _run_probes(device, timer, config, report)

    catalog = build_catalog(config.quick, device)
    report["skipped"] += catalog.missing
    cases = [c for c in catalog.cases if config.filter in c.name]
    rng = np.random.default_rng(config.seed)
    for i, case in enumerate(cases, 1):
        _progress(f"[{i}/{len(cases)}] {case.name} ...")
        entry = {"kernel": case.kernel, "name": case.name, "label": case.label, "shape": case.shape,
                 "dtype": case.dtype, "flops": case.flops or None, "bytes": case.nbytes or None, "checked": False}
        if case.kernel == "matmul" and case.shape.get("variant") == "auto":
            from wgrpo.tools.bench_cases import auto_variant

            case.note = f"variant {auto_variant(device, case.shape, case.dtype)} (auto)"
        if case.note:
            entry["note"] = case.note
        try:
            arrays, error, failure = check_case(case, device, rng)
        except Exception as exc:  # a crashing op is a failed case, reported with its error; the others still run
            arrays, error, failure = None, math.inf, f"{type(exc).__name__}: {exc}"
        entry["max_error"] = error if math.isfinite(error) else None
        if failure:
            entry["error"] = failure
            _progress_done()
            print(f"FAIL {case.name}: {failure}", file=sys.stderr)
        else:
            entry["checked"] = True
            entry.update(time_case(case, device, timer, arrays, config, peaks))
            if "warning" in entry:
                report["notes"].append(f"{case.name}: {entry['warning']}")
        report["cases"].append(entry)

    if not config.filter or config.filter in "dispatch overhead":
        _progress("dispatch overhead ...")
        report["dispatch_overhead"] = dispatch_overhead(device, timer, 200, trials)
    _progress_done()
    print(format_report(report))
    if config.json:
        with open(config.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    failed = [c["name"] for c in report["cases"] if not c["checked"]]
    if failed:
        print(f"wgrpo bench: {len(failed)} case(s) failed the numpy check: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_report(report: dict) -> str:
    a = report["adapter"]
    lines = [f"adapter: [{a['index']}] {a['name']} ({a['backend']}, {a['type']}, {a['driver']}); timer: {a['timer']}"]
    probes = report.get("probes") or {}
    if probes:
        fma, copy = probes["fma"], probes["copy"]
        lines.append(f"peak: FMA probe {fma['gflops']:.1f} GFLOP/s, copy probe {copy['gbps']:.1f} GB/s")
    rows = [("case", "time/call us", "GFLOP/s", "GB/s", "x peak", "x numpy", "check")]
    for c in report["cases"]:
        if not c["checked"]:
            rows.append((c["name"], "-", "-", "-", "-", "-", "FAIL"))
            continue
        rows.append((c["name"], f"{c['time_us']:.1f}", _fmt(c.get("gflops"), ".2f"), _fmt(c.get("gbps"), ".2f"),
                     _fmt(c["ratio_to_peak"], ".3g"), f"{c['ratio_to_numpy']:.3g}", f"ok {c['max_error']:.1e}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    d = report.get("dispatch_overhead")
    if d:
        lines.append(f"dispatch overhead: {d['dispatches']} small dispatches in {d['submits']} submit(s): "
                     f"{d['per_dispatch_us']:.1f} us/dispatch ({d['timer']}), {d['record_us_per_dispatch']:.1f} us "
                     f"to record each, {d['total_us'] / 1e3:.1f} ms recorded+submitted+waited; one dispatch per "
                     f"submit with a read-back: {d['one_dispatch_per_submit_us']:.0f} us")
    for note in report["skipped"] + report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
