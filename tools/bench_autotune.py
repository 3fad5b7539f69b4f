"""`wgrpo bench --autotune`: tune this adapter's kernel variants on the shape classes a model uses, and print them.

Owns: the list of problems a model's training step and decoding pose (every linear layer's forward x @ W^T, its
input gradient dy @ W and weight gradient dy^T @ x at B x T rows, the forward at B rows for decoding, with the
weights in float32 and bfloat16; attention forward and backward at T), the tuning loop and the table. Each class
is tuned afresh (`engine.autotune.Autotuner.tune`: every eligible variant checked against numpy and timed) and
the winners are written to the user's cache, where every later run on this adapter finds them. The model's
sizes come from `tools.bench_model.ModelBenchConfig` (a checkpoint's config.json with --model-path, no weights
loaded); `--quick` keeps the first few problems, `--json` writes the table. Must not import `rl`'s trainers.
"""

from __future__ import annotations

import json

from wgrpo.tools.bench import BenchConfig, _progress, _progress_done
from wgrpo.tools.bench_model import ModelBenchConfig, _adapter

QUICK_PROBLEMS = 4


def _config(options: ModelBenchConfig):
    if options.model_path is not None:
        from wgrpo.engine.hf import read_config

        return read_config(options.model_path)
    return options.model_config()


def model_problems(cfg, batch: int, seq: int) -> list[tuple[str, dict]]:
    """(what, matmul Problem fields) for the matmuls of one training step and one decode step of `cfg`."""
    heads, kv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    linears = {"qkv": (cfg.hidden_size, (heads + 2 * kv) * d), "o_proj": (heads * d, cfg.hidden_size),
               "gate_up": (cfg.hidden_size, 2 * cfg.intermediate_size),
               "down": (cfg.intermediate_size, cfg.hidden_size), "lm_head": (cfg.hidden_size, cfg.vocab_size)}
    rows = batch * seq
    problems = []
    for name, (fan_in, fan_out) in linears.items():
        problems.append((f"{name} forward", dict(m=rows, n=fan_out, k=fan_in, transpose_b=True)))
        problems.append((f"{name} input gradient", dict(m=rows, n=fan_in, k=fan_out)))
        problems.append((f"{name} weight gradient", dict(m=fan_out, n=fan_in, k=rows, transpose_a=True)))
        problems.append((f"{name} decode", dict(m=batch, n=fan_out, k=fan_in, transpose_b=True)))
        problems.append((f"{name} decode, bf16 weights", dict(m=batch, n=fan_out, k=fan_in, transpose_b=True,
                                                             weights="bf16")))
    return problems


def run_autotune_bench(model_options: ModelBenchConfig, bench: BenchConfig, device_spec: str | None = None) -> int:
    from wgrpo.engine.autotune import autotuner
    from wgrpo.engine.device import get_device
    from wgrpo.engine.ops import attention_tuning, matmul_tuning
    from wgrpo.engine.ops.matmul import Problem, choose_variant

    device = get_device(device_spec)
    cfg = _config(model_options)
    tuner = autotuner(device)
    batch, seq = model_options.batch_size, model_options.seq_len
    problems = model_problems(cfg, batch, seq)
    if bench.quick:
        problems = problems[:QUICK_PROBLEMS]
    rows, seen = [], set()
    jobs = [("matmul", what, Problem(**fields)) for what, fields in problems]
    q_shape, k_shape = (1, seq, cfg.num_heads, cfg.head_dim), (1, seq, cfg.num_kv_heads, cfg.head_dim)
    jobs.append(("attention", f"attention forward+backward at T={seq}", (q_shape, k_shape)))
    for index, (op, what, problem) in enumerate(jobs, 1):
        if op == "matmul":
            shape_class = matmul_tuning.shape_class(problem)
            build = lambda p=problem: matmul_tuning.tuning_problem(device, p, choose_variant(device, p.m))
        else:
            shape_class = attention_tuning.shape_class(*problem, "f32", True)
            build = lambda p=problem: attention_tuning.tuning_problem(device, *p, "f32", True, "serial")
        if (op, shape_class) in seen:
            continue
        seen.add((op, shape_class))
        _progress(f"[{index}/{len(jobs)}] {op} {shape_class} ({what}) ...")
        result = tuner.tune(build())
        rows.append({"op": op, "class": shape_class, "what": what, "winner": result.winner,
                     "seconds": {t.name: t.seconds for t in result.trials},
                     "refused": {t.name: t.problem for t in result.trials if t.seconds is None}})
    _progress_done()
    report = {"adapter": _adapter(device), "key": tuner.key, "cache": str(tuner.path), "tuned": rows}
    print(format_autotune_report(report))
    if bench.json:
        with open(bench.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def format_autotune_report(report: dict) -> str:
    lines = [f"autotuned on {report['key']}", f"cache: {report['cache']}",
             f"{'op':<9} {'class':<34} {'winner':<14} {'us/call':>9}  others (us/call)"]
    for row in report["tuned"]:
        times = {name: s for name, s in row["seconds"].items() if s is not None}
        others = ", ".join(f"{name} {s * 1e6:.0f}" for name, s in sorted(times.items(), key=lambda kv: kv[1])
                           if name != row["winner"])
        lines.append(f"{row['op']:<9} {row['class']:<34} {row['winner']:<14} {times[row['winner']] * 1e6:>9.0f}  "
                     f"{others}")
    return "\n".join(lines)
