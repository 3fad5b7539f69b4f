"""`wgrpo bench --generate`: decode tokens/s of `engine.generate` at several batch sizes and lengths, against
transformers' `generate` on the same machine.

Owns: `GenerateBenchConfig`, the timed calls, the greedy check against transformers' logits, the table and the
JSON report. The model comes from `tools.bench_model.ModelBenchConfig` (a checkpoint or random sizes, `--torch`,
`--torch-device`, `--torch-threads`); `--quick`, `--trials`, `--json` and `--seed` from `tools.bench.BenchConfig`.
Must not import `rl`; imports torch and transformers lazily, only when importable.

A case is (batch B, new tokens n): B random prompts of `--gen-prompt-len` tokens, greedy decoding of exactly n
tokens (no end-of-text), one `generate` call. decode tokens/s = B (n - 1) / (t(n) - t(1)), where t(1) is a call
that only prefills and samples the first token, so prefill is not counted; each t is the median over the trials.
transformers runs `model.generate(do_sample=False, min_new_tokens=n)` with its KV cache on our weights, on
`--torch-device` (prompts and attention mask created there; on CUDA each call ends in `torch.cuda.synchronize`),
timed the same way right after ours. The dispatches of one decode step are counted and split into those of each
decoder layer and the rest (embedding, positions, head, sampler) with random 1- and 2-layer twins of the model's
config. Before timing, our greedy tokens of the first prompt are checked to be the argmax of transformers' logits
on that sequence (within 1e-4, so near-ties pass), and the ratio is reported only then.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.rl.train.fields import option_flag
from wgrpo.tools import bench_profile
from wgrpo.tools.bench import BenchConfig, _fmt, _progress, _progress_done
from wgrpo.tools.bench_model import ModelBenchConfig, _adapter, _load_model, torch_available
from wgrpo.tools.torch_twin import synchronize, torch_device_label, torch_device_report

CHECK_TOKENS = 16
TIE_TOLERANCE = 1e-4


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise input_error(f"{option_flag(name)} must be a comma-separated list of positive integers, got {text!r}")
    return values


@dataclass
class GenerateBenchConfig:
    """Options `wgrpo bench --generate` adds (the model comes from the ModelBenchConfig options)."""

    gen_batch_sizes: str = field(default="1,8,64", metadata={
        "help": "comma-separated batch sizes (sequences decoded together); --quick uses 1,8", "metavar": "LIST"})
    gen_tokens: str = field(default="32,256", metadata={
        "help": "comma-separated numbers of new tokens per sequence; --quick uses 8,32", "metavar": "LIST"})
    gen_prompt_len: int = field(default=16, metadata={"help": "prompt tokens per sequence"})

    def __post_init__(self):
        _int_list(self.gen_batch_sizes, "gen_batch_sizes")
        _int_list(self.gen_tokens, "gen_tokens")
        if self.gen_prompt_len < 1:
            raise input_error(f"--gen-prompt-len must be at least 1, got {self.gen_prompt_len}")

    def cases(self, quick: bool) -> tuple[list[int], list[int]]:
        if quick:
            return [1, 8], [8, 32]
        return _int_list(self.gen_batch_sizes, "gen_batch_sizes"), _int_list(self.gen_tokens, "gen_tokens")


# ---------------------------------------------------------------------------------------------- the two sides


def _ours(model, prompts: np.ndarray, n: int) -> tuple[float, dict]:
    from wgrpo.engine.generate import generate

    start = time.perf_counter()
    result = generate(model, prompts.tolist(), max_new_tokens=n, temperature=0, eos_token_ids=())
    return time.perf_counter() - start, result


class _Torch:
    def __init__(self, config, state: dict, threads: int, device: str):
        from wgrpo.tools.torch_twin import torch_twin

        self.torch, self.model = torch_twin(config, state, threads, device)
        self.device = device

    def generate(self, prompts: np.ndarray, n: int) -> float:
        torch = self.torch
        ids = torch.from_numpy(prompts.astype(np.int64)).to(self.device)
        mask = torch.ones_like(ids)
        synchronize(torch, self.device)  # the copies are not the call's time
        start = time.perf_counter()
        with torch.no_grad():
            self.model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, eos_token_id=None, pad_token_id=0)
        synchronize(torch, self.device)
        return time.perf_counter() - start

    def check_greedy(self, prompt: list[int], tokens: list[int]) -> str:
        """'' when each of our tokens is the argmax of transformers' logits (within TIE_TOLERANCE), else why not."""
        torch = self.torch
        sequence = torch.tensor([prompt + tokens], device=self.device)
        with torch.no_grad():
            logits = self.model(sequence).logits[0, len(prompt) - 1:-1].cpu().numpy()  # (n, V)
        for i, (row, token) in enumerate(zip(logits, tokens)):
            if row[token] < row.max() - TIE_TOLERANCE * max(1.0, abs(row.max())):
                return f"token {i}: ours {token} (logit {row[token]:.5f}), transformers' argmax {row.argmax()} " \
                       f"(logit {row.max():.5f})"
        return ""


def _step_dispatches(model) -> int:
    """Dispatches of one decode step (batch 2): a call of 3 new tokens minus one of 2 (the prefill cancels)."""
    from wgrpo.engine.generate import generate

    prompts = [[1, 2, 3], [4, 5, 6]]
    counts = [generate(model, prompts, max_new_tokens=n, temperature=0, eos_token_ids=()).stats["dispatches"]
              for n in (2, 3)]
    return counts[1] - counts[0]


def decode_dispatches(model) -> dict:
    """{per_step, per_layer, outside_layers}: the dispatches of one decode step of `model`, and how they split,
    from random twins of its config with 1 and 2 layers (the count does not depend on the weights)."""
    from dataclasses import replace

    from wgrpo.engine.model import Model

    twins = [Model.random(replace(model.config, num_layers=n), device=model.device, dtype=model.dtype) for n in (1, 2)]
    one, two = (_step_dispatches(twin) for twin in twins)
    return {"per_step": _step_dispatches(model), "per_layer": two - one, "outside_layers": 2 * one - two}


def _median(times: list[float]) -> float:
    return statistics.median(times)


def _decode_rate(batch: int, n: int, t_n: float, t_1: float) -> float | None:
    if n <= 1 or t_n <= t_1:
        return None
    return batch * (n - 1) / (t_n - t_1)


# ---------------------------------------------------------------------------------------------- the benchmark


def run_generate_bench(options: GenerateBenchConfig, model_options: ModelBenchConfig, bench: BenchConfig,
                       device_spec: str | None = None) -> int:
    from wgrpo.engine.device import get_device
    from wgrpo.engine.generate import default_steps_per_submit

    device = get_device(device_spec)
    if bench.profile:
        bench_profile.require_timestamps(device)
    use_torch, why_not = model_options.torch, ""
    if use_torch:
        use_torch, why_not = torch_available()
    torch_device = model_options.resolved_torch_device(device) if use_torch else None  # a bad one stops here
    model = _load_model(model_options, bench.seed, device)
    cfg = model.config
    batches, lengths = options.cases(bench.quick)
    trials = bench.trials or (1 if bench.quick else 3)
    rng = np.random.default_rng(bench.seed)
    prompts = rng.integers(0, cfg.vocab_size, (max(batches), options.gen_prompt_len))
    if options.gen_prompt_len + max(lengths) > cfg.max_position_embeddings:
        raise input_error(f"--gen-prompt-len {options.gen_prompt_len} + {max(lengths)} new tokens exceed the model's "
                         f"max_position_embeddings={cfg.max_position_embeddings}")

    torch_side, torch_info = None, {}
    if use_torch:
        torch_side = _Torch(cfg, model.state_dict(), model_options.resolved_threads(), torch_device)
        torch_info = torch_device_report(torch_device, model_options.resolved_threads())

    _progress("warm-up (pipelines compile) ...")
    _ours(model, prompts[:2], 3)
    check = ""
    _, first = _ours(model, prompts[:1], CHECK_TOKENS)
    if torch_side is not None:
        check = torch_side.check_greedy(prompts[0].tolist(), first.sequences[0].token_ids.tolist())
        torch_side.generate(prompts[:2], 3)

    dispatches = decode_dispatches(model)
    rows = []
    for batch in batches:
        ids = prompts[:batch]
        ours_t, torch_t, stats = {}, {}, {}
        for n in [1] + lengths:
            times = []
            for trial in range(trials):
                _progress(f"ours: batch {batch}, {n} tokens, trial {trial + 1}/{trials} ...")
                seconds, result = _ours(model, ids, n)
                times.append(seconds)
            ours_t[n], stats[n] = _median(times), result.stats
            if torch_side is not None:
                times = []
                for trial in range(trials):
                    _progress(f"transformers: batch {batch}, {n} tokens, trial {trial + 1}/{trials} ...")
                    times.append(torch_side.generate(ids, n))
                torch_t[n] = _median(times)
        for n in lengths:
            ours_rate = _decode_rate(batch, n, ours_t[n], ours_t[1])
            torch_rate = _decode_rate(batch, n, torch_t[n], torch_t[1]) if torch_t else None
            rows.append({
                "batch": batch, "new_tokens": n, "call_s": ours_t[n], "prefill_s": ours_t[1],
                "decode_tokens_per_s": ours_rate, "submits": stats[n]["submits"],
                "readbacks": stats[n]["readbacks"], "dispatches_per_step": stats[n]["dispatches"] / n,
                "replayed_steps": stats[n].get("replayed_steps", 0),
                "torch_call_s": torch_t.get(n), "torch_decode_tokens_per_s": torch_rate,
                "x_torch": (ours_rate / torch_rate) if (ours_rate and torch_rate and not check) else None})
    profile = None
    if bench.profile:
        _progress(f"profile: batch {max(batches)}, {max(lengths)} tokens, every dispatch timed ...")
        profile = bench_profile.profiled(device, lambda: _ours(model, prompts[:max(batches)], max(lengths)))[1]
    _progress_done()
    report = {"adapter": _adapter(device), "model": {"architecture": cfg.architecture, "vocab_size": cfg.vocab_size,
              "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
              "num_kv_heads": cfg.num_kv_heads, "intermediate_size": cfg.intermediate_size,
              "path": model_options.model_path},
              "prompt_len": options.gen_prompt_len, "trials": trials, "steps_per_submit": default_steps_per_submit(device),
              "decode_dispatches": dispatches,
              "torch": {"used": torch_side is not None, "why_not": why_not,
                        "greedy_check": "ok" if torch_side is not None and not check else check,
                        **torch_info},
              "cases": rows}
    if profile is not None:
        report["profile"] = profile
    print(format_generate_report(report))
    if profile is not None:
        print(bench_profile.format_profile(f"generate, batch {max(batches)} x {max(lengths)} tokens", profile))
    if bench.json:
        with open(bench.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def format_generate_report(report: dict) -> str:
    m, d = report["model"], report["decode_dispatches"]
    lines = [f"generation on {report['adapter']['name']} ({report['adapter']['type']}), K = "
             f"{report['steps_per_submit']} decode steps per submit",
             f"model {m['path'] or 'random'} {m['architecture']}: V {m['vocab_size']}, C {m['hidden_size']}, "
             f"{m['num_layers']} layers, {m['num_heads']}/{m['num_kv_heads']} heads; prompts of "
             f"{report['prompt_len']} tokens, greedy, median of {report['trials']}",
             f"dispatches per decode step: {d['per_step']} = {d['per_layer']} per layer x {m['num_layers']} + "
             f"{d['outside_layers']} outside the layers; steps after the first few replay their recorded commands",
             f"{'batch':>5} {'tokens':>6} {'call s':>8} {'decode tok/s':>13} {'submits':>7} {'torch tok/s':>12} "
             f"{'x torch':>8}"]
    for r in report["cases"]:
        lines.append(f"{r['batch']:>5} {r['new_tokens']:>6} {r['call_s']:>8.3f} {_fmt(r['decode_tokens_per_s'], '.0f'):>13} "
                     f"{r['submits']:>7} {_fmt(r['torch_decode_tokens_per_s'], '.0f'):>12} {_fmt(r['x_torch'], '.2f'):>8}")
    t = report["torch"]
    if not t["used"]:
        lines.append(f"transformers: not run ({t['why_not'] or '--no-torch'})")
    elif t["greedy_check"] != "ok":
        lines.append(f"transformers on {torch_device_label(t)}: greedy check FAILED, no ratio: {t['greedy_check']}")
    else:
        lines.append(f"transformers on {torch_device_label(t)}: greedy tokens checked against its logits: ok")
    by = {(r["batch"], r["new_tokens"]): r["decode_tokens_per_s"] for r in report["cases"]}
    batches = sorted({b for b, _ in by})
    for n in sorted({n for _, n in by}):
        if len(batches) > 1 and by.get((batches[0], n)) and by.get((batches[-1], n)):
            lines.append(f"{n} tokens: batch {batches[-1]} decodes {by[(batches[-1], n)] / by[(batches[0], n)]:.1f}x the "
                         f"tokens/s of batch {batches[0]}")
    return "\n".join(lines)
