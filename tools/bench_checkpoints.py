"""`wgrpo bench --checkpoints`: the shapes of the checkpoints people train with GRPO, with random weights, checked
against transformers: load, logits, greedy decoding, save round trip and device bytes, in float32 and bfloat16.

Owns: `CheckpointBenchConfig`, the preset table (`PRESETS`: sizes from each release's config.json; `QUICK`: tiny
shapes of the same architectures), one row per (shape, dtype), the checks, the table and the JSON report.
`--quick`, `--json` and `--seed` come from `tools.bench.BenchConfig`. Imports the engine, torch and transformers
lazily (torch and transformers are the `oracle` extra; without them the command says how to install them).

A row: transformers builds the model from the preset's config (its own random init, seeded) and saves it in the
row's dtype; its float32 logits on a fixed prompt of `PROMPT_TOKENS` ids (for bfloat16: the saved bf16 weights
widened to float32) and its greedy continuation of `NEW_TOKENS` are the reference. The torch model is freed, then
`engine.load_pretrained(dtype="auto")` loads the checkpoint (timed), our logits and greedy tokens are compared,
the device bytes read (`runtime.memory`: weights after the load, the peak over load and forward), and our
`save_pretrained` is read back by transformers in float32 for the round-trip logits. A row passes when both
logits errors (max |ours - theirs| / max |theirs|) are within `LOGITS_RTOL`, every greedy token agrees, the saved
config.json names the dtype the saved tensors have (the row's), and the weights take parameters x the dtype's
bytes on the device (up to the buffer pool's size classes).
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.tools.bench import BenchConfig, _fmt, _progress, _progress_done
from wgrpo.tools.bench_model import _adapter

PROMPT_TOKENS = 16
NEW_TOKENS = 8
LOGITS_RTOL = 1e-3  # largest logits error, relative to max |transformers' logits|
# the buffer pool rounds every block up to one of 8 sizes per power of two: at most 1/8 more than the tensors hold
WEIGHT_BYTES_SLACK = 1.125
DTYPES = ("float32", "bfloat16")
ITEMSIZE = {"float32": 4, "bfloat16": 2}
ORACLE_HINT = "pip install 'wgrpo[oracle]'"

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


@dataclass(frozen=True)
class Preset:
    """A checkpoint's shape: its transformers class and the config.json fields that size it."""

    hf_class: str  # architectures[0] of config.json
    fields: dict  # config.json fields (initializer_range: the std transformers' random init draws from)

    @property
    def model_type(self) -> str:
        return {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama"}[self.hf_class]


# Sizes as each release's config.json gives them (head_dim only where it is written there).
PRESETS = {
    "qwen2.5-0.5b": Preset("Qwen2ForCausalLM", dict(
        vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=32768, initializer_range=0.02)),
    "qwen3-0.6b": Preset("Qwen3ForCausalLM", dict(
        vocab_size=151936, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=40960, initializer_range=0.02)),
    "llama-3.2-1b": Preset("LlamaForCausalLM", dict(
        vocab_size=128256, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        head_dim=64, intermediate_size=8192, tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5,
        max_position_embeddings=131072, rope_scaling=LLAMA3_ROPE, initializer_range=0.02)),
    "smollm2-135m": Preset("LlamaForCausalLM", dict(
        vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        intermediate_size=1536, tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5,
        max_position_embeddings=8192, initializer_range=0.041666666666666664)),
}

# --quick: the same architectures and head layouts (GQA ratio, head_dim != hidden / heads for Qwen3, llama3 RoPE
# scaling) at a few layers and a 1024-token vocabulary; the llama3 pretraining context is cut to 16 so that the
# prompt and its continuation run past it. The embedding is the largest tensor by far (a forced small binding
# limit splits it alone). At these widths the releases' init (std 0.02) leaves a tied model echoing a prompt token:
# std 0.2 makes the blocks outweigh the embedding, so the greedy tokens depend on the whole computation while the
# top-2 gaps stay above 1e-3 x max |logit|, far above the logits error. The full shapes keep the releases' std
# (their greedy tokens vary, with gaps of a few 1e-3 x max |logit|).
QUICK_INIT_STD = 0.2
QUICK_FIELDS = {
    "qwen2.5-0.5b": dict(vocab_size=1024, hidden_size=56, num_hidden_layers=2, num_attention_heads=7,
                         num_key_value_heads=1, intermediate_size=96),
    "qwen3-0.6b": dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=32, intermediate_size=96),
    "llama-3.2-1b": dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                         num_key_value_heads=2, head_dim=8, intermediate_size=128,
                         rope_scaling={**LLAMA3_ROPE, "original_max_position_embeddings": 16}),
    "smollm2-135m": dict(vocab_size=1024, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                         num_key_value_heads=1, intermediate_size=128),
}
QUICK = {name: Preset(p.hf_class, {**p.fields, **QUICK_FIELDS[name], "max_position_embeddings": 64,
                                    "initializer_range": QUICK_INIT_STD})
         for name, p in PRESETS.items()}


def _names(text: str, option: str, allowed) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if not names or unknown:
        raise input_error(f"{option}: expected a comma-separated list of {', '.join(allowed)}, got {text!r}")
    return list(dict.fromkeys(names))


@dataclass
class CheckpointBenchConfig:
    """Options `wgrpo bench --checkpoints` adds: which shapes, in which dtypes."""

    shapes: str = field(default=",".join(PRESETS), metadata={
        "help": f"comma-separated presets, of {', '.join(PRESETS)} (sizes from each release's config.json, random "
                f"weights); --quick runs tiny shapes of the same architectures", "metavar": "LIST"})
    dtypes: str = field(default=",".join(DTYPES), metadata={
        "help": f"comma-separated dtypes the checkpoints are saved and loaded in, of {', '.join(DTYPES)}",
        "metavar": "LIST"})

    def __post_init__(self):
        self.shape_names()
        self.dtype_names()

    def shape_names(self) -> list[str]:
        return _names(self.shapes, "--shapes", PRESETS)

    def dtype_names(self) -> list[str]:
        return _names(self.dtypes, "--dtypes", DTYPES)


# ---------------------------------------------------------------------------------------------- transformers


def oracle_modules():
    """(torch, transformers), or an InputError saying how to install them."""
    try:
        import torch
        import transformers
    except ImportError as error:
        raise input_error(f"--checkpoints checks against transformers, which is not importable ({error}); "
                          f"{ORACLE_HINT}") from None
    return torch, transformers


@contextlib.contextmanager
def _no_progress_bars(transformers):
    """transformers' own bars (loading, writing shards) off: stderr carries this benchmark's progress."""
    bars = transformers.utils.logging
    was_enabled = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            bars.enable_progress_bar()


def hf_config(preset: Preset, transformers):
    # no special token ids: transformers' generate must not stop early, our generate runs with no end-of-text
    return transformers.AutoConfig.for_model(preset.model_type, architectures=[preset.hf_class], bos_token_id=None,
                                             eos_token_id=None, pad_token_id=None, **preset.fields)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(ours.astype(np.float64) - reference)) / np.max(np.abs(reference)))


def _free() -> None:
    gc.collect()


def build_checkpoint(preset: Preset, dtype: str, seed: int, directory: Path, torch, transformers) -> int:
    """transformers' random model of `preset`, saved in `dtype` to `directory`; returns its parameter count."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(preset, transformers)).float()
    if dtype == "bfloat16":
        model.to(torch.bfloat16)
    model.save_pretrained(directory)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    _free()
    return parameters


def reference_run(directory: Path, prompt: list[int], torch, transformers, generate: bool = True) -> dict:
    """transformers in float32 on a checkpoint: prompt logits (T, V), greedy tokens and each step's top-2 gap."""
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    out = {"class": type(model).__name__}
    with torch.no_grad():
        out["logits"] = model(ids).logits[0].numpy()  # (T, V)
        if generate:
            result = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                    do_sample=False, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
            out["tokens"] = result.sequences[0, len(prompt):].tolist()
            out["gaps"] = [float(g[0] - g[1]) for g in (s[0].topk(2).values for s in result.scores)]
    del model
    _free()
    return out


# ---------------------------------------------------------------------------------------------- ours


def our_run(directory: Path, saved: Path, prompt: list[int], device) -> dict:
    """engine.load_pretrained on the checkpoint (timed), logits, device bytes, greedy tokens, save to `saved`."""
    from wgrpo.engine import generate, load_pretrained, no_grad
    from wgrpo.engine.dtypes import dtype_name

    runtime = device.runtime
    runtime.synchronize()
    runtime.memory.reset_peak()
    buffers_before = runtime.stats.buffers_created
    start = time.perf_counter()
    model, _ = load_pretrained(directory, device, dtype="auto")
    runtime.synchronize()
    # a load that creates its buffers (the first of its sizes in this process) costs more than one reusing them
    out = {"load_s": time.perf_counter() - start, "weights_bytes": runtime.memory.current["weights"],
           "load_buffers_created": runtime.stats.buffers_created - buffers_before}
    embedding = model.params["model.embed_tokens.weight"]
    out["device_dtype"] = dtype_name(embedding.dtype)
    out["embedding_row_blocks"] = len(embedding.parts)
    start = time.perf_counter()
    with no_grad():
        out["logits"] = model(np.asarray([prompt], np.int32)).numpy()[0]  # (T, V)
    out["forward_s"] = time.perf_counter() - start
    snapshot = runtime.memory.snapshot()
    out["peak_bytes"], out["peak_by_kind"] = snapshot["peak_total"], snapshot["peak"]
    start = time.perf_counter()
    result = generate(model, [prompt], max_new_tokens=NEW_TOKENS, temperature=0, eos_token_ids=())
    out["generate_s"] = time.perf_counter() - start
    out["tokens"] = result.sequences[0].token_ids.tolist()
    model.save_pretrained(saved)
    del model, embedding, result
    _free()
    out["pool_bytes_held"] = runtime.pool.bytes_held
    return out


def saved_dtypes(directory: Path) -> dict:
    """What config.json says the weights are, and the dtypes model.safetensors holds."""
    from wgrpo.engine.safetensors_io import read_header

    config = json.loads((directory / "config.json").read_text())
    header = read_header(directory / "model.safetensors")
    tensors = sorted({v["dtype"] for k, v in header.items() if not k.startswith("__")})
    return {"config_torch_dtype": config.get("torch_dtype"), "config_dtype": config.get("dtype"), "tensors": tensors}


# ---------------------------------------------------------------------------------------------- a row


def row_failures(row: dict) -> list[str]:
    """Why `row` fails its checks (empty when it passes)."""
    from wgrpo.engine.dtypes import float_dtype
    from wgrpo.engine.safetensors_io import HEADER_NAMES

    if "error" in row:
        return [row["error"]]
    failures = []
    for key, what in (("logits_error", "logits"), ("round_trip_error", "saved-checkpoint logits")):
        if not row[key] <= LOGITS_RTOL:
            failures.append(f"{what} differ by {row[key]:.2g} x max |transformers| (> {LOGITS_RTOL:g})")
    g = row["greedy"]
    if g["matching"] != NEW_TOKENS or len(g["ours"]) != NEW_TOKENS:
        failures.append(f"greedy tokens {g['ours']} != transformers' {g['transformers']} (first {g['matching']} "
                        f"agree; smallest top-2 gap {g['min_gap']:.2g} x max |logit|)")
    s, dtype, stored = row["saved"], row["dtype"], HEADER_NAMES[float_dtype(row["dtype"])]
    if not (s["config_torch_dtype"] == s["config_dtype"] == dtype and s["tensors"] == [stored]):
        failures.append(f"saved config.json says torch_dtype {s['config_torch_dtype']!r} / dtype "
                        f"{s['config_dtype']!r} for tensors {s['tensors']}; expected {dtype!r} ({stored})")
    expected = row["parameters"] * ITEMSIZE[dtype]
    if not expected <= row["weights_bytes"] <= expected * WEIGHT_BYTES_SLACK:
        failures.append(f"weights take {row['weights_bytes']} device bytes; expected {expected} ({row['parameters']} "
                        f"parameters x {ITEMSIZE[dtype]} bytes) to {WEIGHT_BYTES_SLACK:g}x that")
    return failures


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def run_row(name: str, preset: Preset, dtype: str, seed: int, device, workdir: Path, label: str) -> dict:
    """Build, reference, load, compare and save one (shape, dtype); never raises for a failed check."""
    torch, transformers = oracle_modules()
    row = {"shape": name, "architecture": preset.hf_class, "dtype": dtype}
    source, saved = workdir / f"{name}-{dtype}", workdir / f"{name}-{dtype}-saved"
    prompt = np.random.default_rng(seed).integers(0, preset.fields["vocab_size"], PROMPT_TOKENS).tolist()
    try:
        _progress(f"{label}: transformers builds and saves the model ...")
        row["parameters"] = build_checkpoint(preset, dtype, seed, source, torch, transformers)
        _progress(f"{label}: transformers' logits and greedy tokens ...")
        theirs = reference_run(source, prompt, torch, transformers)
        _progress(f"{label}: load_pretrained, logits, greedy tokens, save_pretrained ...")
        ours = our_run(source, saved, prompt, device)
        _progress(f"{label}: transformers reads our checkpoint back ...")
        again = reference_run(saved, prompt, torch, transformers, generate=False)
        scale = float(np.max(np.abs(theirs["logits"])))
        row.update({key: ours[key] for key in ("load_s", "forward_s", "generate_s", "weights_bytes", "peak_bytes",
                                               "peak_by_kind", "device_dtype", "embedding_row_blocks",
                                               "load_buffers_created", "pool_bytes_held")})
        row["logits_error"] = relative_error(ours["logits"], theirs["logits"])
        row["round_trip_error"] = relative_error(again["logits"], theirs["logits"])
        row["greedy"] = {"ours": ours["tokens"], "transformers": theirs["tokens"],
                         "matching": _common_prefix(ours["tokens"], theirs["tokens"]), "of": NEW_TOKENS,
                         "min_gap": min(theirs["gaps"]) / scale}
        row["saved"] = {**saved_dtypes(saved), "class": again["class"]}
    except Exception as error:  # a crash is this row's failure, reported with its error; the other rows still run
        row["error"] = f"{type(error).__name__}: {error}"
    finally:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(saved, ignore_errors=True)
        _free()
    row["failures"] = row_failures(row)
    row["ok"] = not row["failures"]
    return row


# ---------------------------------------------------------------------------------------------- the benchmark


def run_checkpoint_bench(options: CheckpointBenchConfig, bench: BenchConfig, device_spec: str | None = None) -> int:
    """Every (shape, dtype) row; the table to stdout, progress to stderr. Exit code 1 when a check fails."""
    from wgrpo.engine.device import get_device

    torch, transformers = oracle_modules()
    device = get_device(device_spec)
    presets = QUICK if bench.quick else PRESETS
    cases = [(name, dtype) for name in options.shape_names() for dtype in options.dtype_names()]
    report = {"adapter": _adapter(device), "config": {**asdict(options), "quick": bench.quick, "seed": bench.seed},
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
              "setup": {"prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "logits_rtol": LOGITS_RTOL,
                        "max_binding_bytes": device.max_binding_bytes},
              "shapes": {name: {"class": presets[name].hf_class, **presets[name].fields}
                         for name in options.shape_names()},
              "rows": []}
    with tempfile.TemporaryDirectory(prefix="wgrpo-bench-checkpoints-") as workdir, _no_progress_bars(transformers):
        for i, (name, dtype) in enumerate(cases, 1):
            start = time.perf_counter()
            row = run_row(name, presets[name], dtype, bench.seed, device, Path(workdir),
                          f"[{i}/{len(cases)}] {name} {dtype}")
            row["wall_s"] = time.perf_counter() - start
            report["rows"].append(row)
            gc.collect()
            device.runtime.trim()  # the next row's model gets the memory back (on a CPU adapter, the host's)
            if not row["ok"]:
                _progress_done()
                print(f"FAIL {name} {dtype}: {'; '.join(row['failures'])}", file=sys.stderr)
    _progress_done()
    print(format_checkpoint_report(report))
    if bench.json:
        with open(bench.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    failed = [f"{r['shape']} {r['dtype']}" for r in report["rows"] if not r["ok"]]
    if failed:
        print(f"wgrpo bench: {len(failed)} checkpoint row(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _bytes(n) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return f"{n} B"


def _millions(n) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M"


def format_checkpoint_report(report: dict) -> str:
    a, s, v = report["adapter"], report["setup"], report["versions"]
    lines = [f"adapter: [{a['index']}] {a['name']} ({a['backend']}, {a['type']}, {a['driver']}); binding limit "
             f"{_bytes(s['max_binding_bytes'])}",
             f"against transformers {v['transformers']} (torch {v['torch']}, float32): logits on {s['prompt_tokens']} "
             f"prompt tokens within {s['logits_rtol']:g} x max |logit|, {s['new_tokens']} greedy tokens"
             + ("; --quick shapes" if report["config"]["quick"] else "")]
    rows = [("shape", "dtype", "params", "load s", "logits err", "saved err", "greedy", "weights", "peak", "embed",
             "check")]
    for r in report["rows"]:
        g = r.get("greedy")
        rows.append((r["shape"], r["dtype"], _millions(r.get("parameters")),
                     _fmt(r.get("load_s"), ".3g"), _fmt(r.get("logits_error"), ".1e"),
                     _fmt(r.get("round_trip_error"), ".1e"), f"{g['matching']}/{g['of']}" if g else "-",
                     _bytes(r.get("weights_bytes")), _bytes(r.get("peak_bytes")),
                     _fmt(r.get("embedding_row_blocks"), "d"), "ok" if r["ok"] else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        lines.append("  ".join(row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(len(row))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("weights: device bytes of the parameters after the load; peak: over the load and the forward; "
                 "embed: row blocks the embedding is held in (over the binding limit it is split)")
    for r in report["rows"]:
        for failure in r["failures"]:
            lines.append(f"FAIL {r['shape']} {r['dtype']}: {failure}")
    return "\n".join(lines)
