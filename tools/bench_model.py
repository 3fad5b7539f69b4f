"""`wgrpo bench --model`: tokens/s of a whole model step, forward and forward+backward, against PyTorch.

Owns: `ModelBenchConfig` (the model's sizes or a checkpoint, batch, sequence length, optimizer on/off), the timed
steps, the loss check against transformers, the table and the JSON report. `--quick`, `--trials`, `--json` and
`--seed` come from `tools.bench.BenchConfig`. Must not import `rl`; imports the engine, torch and transformers
lazily (torch and transformers only when importable: the `oracle` extra).

A step is what training does: upload ids and targets, record the forward (and the backward, and with
`--optimizer` an AdamW step), read the loss back. On our side that is one submit and one read-back per step,
counted from `runtime.stats` and reported. Each figure is the median wall time over `trials` steps after
`warmup` steps, tokens/s = batch x seq_len / that time. PyTorch runs the same architecture built by
`AutoModelForCausalLM.from_config`, holding our weights, in float32 on `--torch-device` (all host threads on the
CPU; on CUDA with TF32 off, each timed step ending in `torch.cuda.synchronize`), timed the same way right after
ours (its own warm-up first: steps that alternate with ours would find caches holding our data).
`x torch` = our tokens/s / torch's, reported only when both losses
agree to 1e-4 relative.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.rl.train.fields import option_flag
from wgrpo.tools import bench_profile
from wgrpo.tools.bench import BenchConfig, _progress, _progress_done
from wgrpo.tools.torch_twin import TORCH_DEVICE_HELP, parse_torch_device, synchronize, torch_device_label, \
    torch_device_report

LOSS_RTOL = 1e-4  # relative agreement of our loss and torch's before a ratio is reported
PHASES = ("forward", "forward_backward")
PHASE_LABEL = {"forward": "forward", "forward_backward": "forward+backward"}


@dataclass
class ModelBenchConfig:
    """Options `wgrpo bench --model` adds: what model to time, and on what batch."""

    model_path: str | None = field(default=None, metadata={
        "help": "time this Hugging Face checkpoint directory (loaded with engine.load_pretrained) instead of a "
                "random model; the size options below are then ignored", "metavar": "DIR"})
    architecture: str = field(default="qwen2", metadata={
        "help": "family of the random model (qwen2: q/k/v biases; llama: none)", "choices": ("qwen2", "llama")})
    vocab_size: int = field(default=512, metadata={"help": "vocabulary of the random model"})
    hidden_size: int = field(default=128, metadata={"help": "width of the random model"})
    num_layers: int = field(default=4, metadata={"help": "decoder blocks of the random model"})
    num_heads: int = field(default=4, metadata={"help": "query heads of the random model"})
    num_kv_heads: int = field(default=2, metadata={"help": "key/value heads of the random model (divides "
                                                           "--num-heads)"})
    intermediate_size: int = field(default=384, metadata={"help": "SwiGLU width of the random model"})
    tie_word_embeddings: bool = field(default=False, metadata={
        "help": "the random model's lm_head shares the embedding matrix"})
    batch_size: int = field(default=8, metadata={"help": "sequences per step (B)"})
    seq_len: int = field(default=64, metadata={"help": "tokens per sequence (T); a step holds B x T tokens"})
    warmup: int = field(default=0, metadata={"help": "untimed steps before the timed ones (pipelines compile in "
                                                     "the first); 0 means 2 (1 with --quick)"})
    optimizer: bool = field(default=False, metadata={
        "help": "end each forward+backward step with an AdamW step (torch.optim.AdamW on the torch side)"})
    torch: bool = field(default=True, metadata={
        "help": "also time the same step in PyTorch (needs the oracle extra: torch and transformers) and report "
                "the ratio"})
    torch_threads: int = field(default=0, metadata={"help": "torch.set_num_threads for the comparison on the CPU; "
                                                            "0 means os.cpu_count()"})
    torch_device: str = field(default="auto", metadata={"help": TORCH_DEVICE_HELP, "metavar": "DEVICE"})

    def __post_init__(self):
        for name in ("batch_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise input_error(f"{option_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ("warmup", "torch_threads"):
            if getattr(self, name) < 0:
                raise input_error(f"{option_flag(name)} must be at least 0, got {getattr(self, name)}")
        parse_torch_device(self.torch_device)
        if self.model_path is None:
            self.model_config()  # a bad size is a usage error now, not a crash later

    def model_config(self):
        """The `ModelConfig` of the random model (ValueError naming the option when the sizes disagree)."""
        from wgrpo.engine.config import ModelConfig

        try:
            return ModelConfig(architecture=self.architecture, vocab_size=self.vocab_size,
                               hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
                               num_kv_heads=self.num_kv_heads, intermediate_size=self.intermediate_size,
                               tie_word_embeddings=self.tie_word_embeddings,
                               max_position_embeddings=max(2048, self.seq_len))
        except ValueError as error:
            raise input_error(f"model sizes: {error}") from None

    def resolved_warmup(self, quick: bool) -> int:
        return self.warmup or (1 if quick else 2)

    def resolved_torch_device(self, device) -> str:
        """"cpu" or "cuda:N" for --torch-device on wgrpo's adapter `device` (InputError for CUDA torch cannot use)."""
        from wgrpo.tools.torch_twin import resolve_torch_device

        return resolve_torch_device(self.torch_device, device.is_software)

    def resolved_threads(self) -> int:
        return self.torch_threads or os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------- our step


class OurStep:
    """One training-shaped step on the engine; `run` returns the loss and the runtime counters it moved."""

    def __init__(self, model, ids: np.ndarray, targets: np.ndarray, optimizer: bool):
        from wgrpo.engine.optim import AdamW

        self.model, self.ids, self.targets = model, ids, targets
        self.runtime = model.device.runtime
        self.optimizer = AdamW(model.parameters(), lr=1e-4) if optimizer else None
        self.phase_dispatches: dict[str, int] = {}

    def run(self, backward: bool) -> dict:
        from wgrpo.engine import no_grad, ops

        stats, model = self.runtime.stats, self.model
        before = (stats.submits, stats.dispatches, stats.readbacks)
        start = time.perf_counter()
        counts = {}
        if backward:
            for p in model.parameters():
                p.grad = None  # zero_grad(set_to_none=True), as a trainer does
            logits = model(self.ids)  # (B, T, V)
            counts["model"] = stats.dispatches - before[1]
            loss = ops.cross_entropy(logits, self.targets)
            counts["cross_entropy"] = stats.dispatches - before[1] - counts["model"]
            mark = stats.dispatches
            loss.backward()
            counts["backward"] = stats.dispatches - mark
            if self.optimizer is not None:
                mark = stats.dispatches
                self.optimizer.step()
                counts["optimizer"] = stats.dispatches - mark
        else:
            with no_grad():
                logits = model(self.ids)  # (B, T, V)
                counts["model"] = stats.dispatches - before[1]
                loss = ops.cross_entropy(logits, self.targets)
                counts["cross_entropy"] = stats.dispatches - before[1] - counts["model"]
        recorded = time.perf_counter()
        value = float(loss.numpy())  # the step's only read-back: flushes the one submit and waits for it
        done = time.perf_counter()
        self.phase_dispatches = counts
        return {"loss": value, "seconds": done - start, "record_seconds": recorded - start,
                "submits": stats.submits - before[0], "dispatches": stats.dispatches - before[1],
                "readbacks": stats.readbacks - before[2]}


# ---------------------------------------------------------------------------------------------- torch's step


def torch_available() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        return False, f"torch/transformers not importable ({error}); install the oracle extra: pip install -e .[oracle]"
    return True, ""


class TorchStep:
    """The same architecture in transformers, float32 on `device` ("cpu" or "cuda:N"), holding our weights."""

    def __init__(self, config, state: dict[str, np.ndarray], ids: np.ndarray, targets: np.ndarray,
                 optimizer: bool, threads: int, device: str = "cpu"):
        from wgrpo.tools.torch_twin import torch_twin

        torch, self.model = torch_twin(config, state, threads, device)
        self.torch, self.device = torch, device
        self.attention = getattr(self.model.config, "_attn_implementation", None)
        self.ids = torch.from_numpy(ids.astype(np.int64)).to(device)
        self.targets = torch.from_numpy(targets.astype(np.int64)).reshape(-1).to(device)
        self.vocab = config.vocab_size
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4) if optimizer else None

    def _loss(self):
        logits = self.model(input_ids=self.ids, use_cache=False).logits  # (B, T, V)
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, self.vocab), self.targets)

    def run(self, backward: bool) -> dict:
        start = time.perf_counter()
        if backward:
            self.model.zero_grad(set_to_none=True)
            loss = self._loss()
            loss.backward()
            if self.optimizer is not None:
                self.optimizer.step()
        else:
            with self.torch.no_grad():
                loss = self._loss()
        synchronize(self.torch, self.device)  # the optimizer's kernels too, not only the loss's
        value = loss.item()
        return {"loss": value, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------- the benchmark


def _summary(runs: list[dict], tokens: int) -> dict:
    seconds = [r["seconds"] for r in runs]
    median = statistics.median(seconds)
    out = {"time_ms": median * 1e3, "best_ms": min(seconds) * 1e3, "tokens_per_s": tokens / median,
           "trials": len(runs), "losses": [r["loss"] for r in runs]}
    if "submits" in runs[0]:
        out["record_ms"] = statistics.median(r["record_seconds"] for r in runs) * 1e3
        for key in ("submits", "dispatches", "readbacks"):
            values = {r[key] for r in runs}
            out[f"{key}_per_step"] = values.pop() if len(values) == 1 else sorted(values)
    return out


def _timed(step, backward: bool, warmup: int, trials: int, phase: str, who: str = "") -> list[dict]:
    """`warmup` untimed steps, then `trials` timed ones, back to back (each side runs in its own steady state)."""
    runs = []
    for i in range(warmup + trials):
        what = f"{i - warmup + 1}/{trials}" if i >= warmup else f"warm-up {i + 1}/{warmup}"
        _progress(f"{who}{PHASE_LABEL[phase]} {what} ...")
        run = step.run(backward)
        if i >= warmup:
            runs.append(run)
    return runs


def _adapter(device) -> dict:
    s = device.summary
    return {"index": s.index, "name": s.name, "backend": s.backend, "type": s.adapter_type, "driver": s.driver,
            "host": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}


def _load_model(options: ModelBenchConfig, seed: int, device):
    from wgrpo.engine.model import Model, load_pretrained

    if options.model_path is not None:
        model, _ = load_pretrained(options.model_path, device)
        return model
    return Model.random(options.model_config(), seed=seed, device=device)


def run_model_bench(options: ModelBenchConfig, bench: BenchConfig, device_spec: str | None = None) -> int:
    """Time our step (and torch's); print the table to stdout, progress to stderr. Exit code 1 when the losses
    disagree with torch's, 2 for a batch the model cannot take."""
    from wgrpo.engine.device import get_device

    device = get_device(device_spec)
    if bench.profile:
        bench_profile.require_timestamps(device)
    trials, warmup = bench.resolved_trials(), options.resolved_warmup(bench.quick)
    use_torch, why_not = options.torch, "--no-torch"
    if use_torch:
        use_torch, why_not = torch_available()
    torch_device = options.resolved_torch_device(device) if use_torch else None  # a bad one stops here
    _progress("model: building ...")
    model = _load_model(options, bench.seed, device)
    config = model.config
    if options.seq_len > config.max_position_embeddings:
        _progress_done()
        print(f"wgrpo bench: --seq-len {options.seq_len} exceeds the model's max_position_embeddings "
              f"{config.max_position_embeddings}", file=sys.stderr)
        return 2
    model.requires_grad_()
    rng = np.random.default_rng(bench.seed)
    shape = (options.batch_size, options.seq_len)
    ids = rng.integers(0, config.vocab_size, size=shape).astype(np.int32)  # (B, T)
    targets = rng.integers(0, config.vocab_size, size=shape).astype(np.int32)  # (B, T)
    tokens = options.batch_size * options.seq_len
    report = {"adapter": _adapter(device), "config": {**asdict(options), "quick": bench.quick, "trials": trials,
                                                      "warmup": warmup, "seed": bench.seed},
              "model": {**asdict(config), "num_parameters": config.num_parameters()},
              "batch": {"batch_size": options.batch_size, "seq_len": options.seq_len, "tokens_per_step": tokens},
              "phases": {}, "torch": None, "check": None, "dispatches_per_phase": {}, "notes": []}

    ours = OurStep(model, ids, targets, options.optimizer)
    theirs = None
    if use_torch:
        _progress(f"torch: building the same model on {torch_device} ...")
        threads = options.resolved_threads()
        theirs = TorchStep(config, model.state_dict(), ids, targets, options.optimizer, threads, torch_device)
        report["torch"] = {**torch_device_report(torch_device, threads), "attention": theirs.attention,
                           "dtype": "float32", "phases": {}}
        import torch
        import transformers

        report["torch"]["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    else:
        report["notes"].append(f"torch comparison skipped: {why_not}")

    # The check: both sides' forward loss on the same weights, before any optimizer step moves them.
    if theirs is not None:
        _progress("check: loss against torch ...")
        ours_loss, torch_loss = ours.run(backward=False)["loss"], theirs.run(backward=False)["loss"]
        rel = abs(ours_loss - torch_loss) / max(abs(torch_loss), 1e-30)
        report["check"] = {"loss": ours_loss, "torch_loss": torch_loss, "relative_difference": rel,
                           "tolerance": LOSS_RTOL, "ok": bool(rel <= LOSS_RTOL)}

    for phase in PHASES:
        backward = phase == "forward_backward"
        entry = report["phases"][phase] = _summary(_timed(ours, backward, warmup, trials, phase), tokens)
        report["dispatches_per_phase"].update(ours.phase_dispatches)
        if theirs is not None:
            runs = _timed(theirs, backward, warmup, trials, phase, "torch ")
            report["torch"]["phases"][phase] = _summary(runs, tokens)
            check_ok = report["check"]["ok"]
            entry["ratio_to_torch"] = (entry["tokens_per_s"] / report["torch"]["phases"][phase]["tokens_per_s"]
                                       if check_ok else None)
        if entry["submits_per_step"] != 1:
            report["notes"].append(f"{PHASE_LABEL[phase]}: {entry['submits_per_step']} submits per step, not 1 "
                                   f"(the runtime flushes when a step records over 4096 dispatches)")
    if bench.profile:
        _progress("profile: one more forward + backward, every dispatch timed ...")
        report["profile"] = bench_profile.profiled(device, lambda: ours.run(backward=True))[1]
    _progress_done()
    print(format_model_report(report))
    if bench.profile:
        print(bench_profile.format_profile("forward + backward" + (" + AdamW" if options.optimizer else ""),
                                           report["profile"]))
    if bench.json:
        with open(bench.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    check = report["check"]
    if check is not None and not check["ok"]:
        print(f"wgrpo bench: our loss {check['loss']:.7g} and torch's {check['torch_loss']:.7g} differ by "
              f"{check['relative_difference']:.2g} relative (> {LOSS_RTOL:g}); no ratio reported", file=sys.stderr)
        return 1
    return 0


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def format_model_report(report: dict) -> str:
    a, m, b = report["adapter"], report["model"], report["batch"]
    head = "tied" if m["tie_word_embeddings"] else "untied"
    lines = [f"adapter: [{a['index']}] {a['name']} ({a['backend']}, {a['type']}, {a['driver']})",
             f"model: {m['architecture']}, vocab {m['vocab_size']}, hidden {m['hidden_size']}, {m['num_layers']} "
             f"layers, {m['num_heads']} heads ({m['num_kv_heads']} kv), intermediate {m['intermediate_size']}, "
             f"{head} head: {m['num_parameters'] / 1e6:.3g} M parameters, float32",
             f"batch: B={b['batch_size']} x T={b['seq_len']} = {b['tokens_per_step']} tokens per step; "
             f"{report['config']['trials']} timed steps after {report['config']['warmup']} warm-up, median"
             + ("; forward+backward includes an AdamW step" if report["config"]["optimizer"] else "")]
    t = report["torch"]
    rows = [("phase", "ms/step", "tokens/s", "record ms", "submits", "read-backs", "dispatches",
             "torch ms/step", "torch tokens/s", "x torch")]
    for phase, e in report["phases"].items():
        tp = t["phases"].get(phase) if t else None
        rows.append((PHASE_LABEL[phase], f"{e['time_ms']:.1f}", f"{e['tokens_per_s']:.0f}", f"{e['record_ms']:.1f}",
                     str(e["submits_per_step"]), str(e["readbacks_per_step"]), str(e["dispatches_per_step"]),
                     _fmt(tp and tp["time_ms"], ".1f"), _fmt(tp and tp["tokens_per_s"], ".0f"),
                     _fmt(e.get("ratio_to_torch"), ".3g")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    d = report["dispatches_per_phase"]
    if d:
        parts = [f"forward {d['model']} (model) + {d['cross_entropy']} (cross-entropy)",
                 f"backward {d.get('backward', 0)}"]
        if "optimizer" in d:
            parts.append(f"AdamW {d['optimizer']}")
        one_submit = all(e["submits_per_step"] == 1 for e in report["phases"].values())
        lines.append("dispatches recorded per step: " + ", ".join(parts)
                     + ("; each step is one submit with one read-back (the loss)" if one_submit else ""))
    if t:
        v = t["versions"]
        lines.append(f"torch: {v['torch']}, transformers {v['transformers']}, float32 on {torch_device_label(t)}, "
                     f"attention {t['attention']}")
    c = report["check"]
    if c:
        lines.append(f"check: loss {c['loss']:.7g}, torch {c['torch_loss']:.7g}, relative difference "
                     f"{c['relative_difference']:.2g} ({'ok' if c['ok'] else 'FAIL'}, tolerance {c['tolerance']:g})")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
