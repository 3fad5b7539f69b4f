"""`wgrpo bench --memory`: device bytes of one GRPO step at real model shapes, by configuration: full fine-tuning with
and without micro-batches and activation checkpointing, and LoRA; estimated for every row and measured for the rows
asked for.

Owns: `MemoryBenchConfig`, the shapes (`SHAPES`: Qwen2.5-0.5B and -1.5B as their config.json give them), the
configurations (`SETUPS`), one measured step and the table. A row's estimate is the trainer's own
(`rl.train.memory_check.grpo_step_options` for `engine.estimate_grpo_step`, the engine's ledger replay of the step's
allocations), so what the table says is what `wgrpo train` prints and checks before it starts. A measured row builds
a random model of the shape with its matrices in `--memory-dtype` (never an f32 host copy of a bf16 model), samples
B x G completions of `--memory-new-tokens` from random prompts of `--memory-prompt-tokens` (no end-of-text id, so
every completion runs the full length), gives them random rewards and runs the update as the trainer does
(`rl.train.update`); it reports the device counters' peak over the step by kind, the estimate, and the process's
peak resident memory (on a CPU adapter the device buffers live in host memory, so that is the whole cost). Imports
the engine lazily.
"""

from __future__ import annotations

import gc
import json
import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.tools.bench import BenchConfig, _progress, _progress_done
from wgrpo.tools.bench_checkpoints import PRESETS, Preset
from wgrpo.tools.bench_model import _adapter

SHAPES = {
    "qwen2.5-0.5b": PRESETS["qwen2.5-0.5b"],
    "qwen2.5-1.5b": Preset("Qwen2ForCausalLM", dict(
        vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=32768, initializer_range=0.02)),
}
# name -> the TrainConfig fields that make the configuration (micro-batch sizes are completions per backward)
SETUPS = {
    "full": {},
    "full, micro-batch 8": {"per_device_train_batch_size": 8},
    "full, micro-batch 8, checkpointing": {"per_device_train_batch_size": 8, "gradient_checkpointing": True},
    "full, micro-batch 1, checkpointing": {"per_device_train_batch_size": 1, "gradient_checkpointing": True},
    "LoRA r=16": {"use_peft": True},
    "LoRA r=16, micro-batch 8, checkpointing": {"use_peft": True, "per_device_train_batch_size": 8,
                                                "gradient_checkpointing": True},
    "LoRA r=16, micro-batch 8, checkpointing, generation batch 16": {
        "use_peft": True, "per_device_train_batch_size": 8, "gradient_checkpointing": True,
        "generation_chunk_size": 16},
    "LoRA r=16, micro-batch 2": {"use_peft": True, "per_device_train_batch_size": 2},
}
GiB = 1024**3


@dataclass
class MemoryBenchConfig:
    """Options `wgrpo bench --memory` adds."""

    memory_shapes: str = field(default=",".join(SHAPES), metadata={
        "help": f"comma-separated shapes, of {', '.join(SHAPES)} (random weights)", "metavar": "LIST"})
    memory_setups: str = field(default=";".join(name for name in SETUPS if name != "LoRA r=16, micro-batch 2"),
                               metadata={"help": f"semicolon-separated configurations, of: {'; '.join(SETUPS)}",
                                         "metavar": "LIST"})
    memory_prompts: int = field(default=8, metadata={"help": "prompts per step (B)"})
    memory_group_size: int = field(default=8, metadata={"help": "completions per prompt (G)"})
    memory_prompt_tokens: int = field(default=128, metadata={"help": "tokens of every prompt"})
    memory_new_tokens: int = field(default=256, metadata={"help": "new tokens of every completion"})
    memory_dtype: str = field(default="bfloat16", metadata={
        "help": "the base checkpoint's dtype: the frozen reference (full fine-tuning) or the LoRA base",
        "choices": ("float32", "bfloat16", "float16")})
    memory_beta: float = field(default=0.04, metadata={"help": "KL weight (> 0: reference log-probs)"})
    memory_measure: bool = field(default=False, metadata={
        "help": "also run each row's step on the device and report the measured peak beside the estimate (a "
                "real step: minutes on a CPU adapter at these shapes; choose small sizes)"})

    def __post_init__(self):
        for name in ("memory_prompts", "memory_prompt_tokens", "memory_new_tokens"):
            if getattr(self, name) < 1:
                raise input_error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.memory_group_size < 2:
            raise input_error(f"--memory-group-size must be at least 2, got {self.memory_group_size}")
        self.shape_names()
        self.setup_names()

    def shape_names(self) -> list[str]:
        names = [n.strip() for n in self.memory_shapes.split(",") if n.strip()]
        unknown = [n for n in names if n not in SHAPES]
        if unknown or not names:
            raise input_error(f"--memory-shapes {self.memory_shapes!r}: choose from {', '.join(SHAPES)}")
        return names

    def setup_names(self) -> list[str]:
        names = [n.strip() for n in self.memory_setups.split(";") if n.strip()]
        unknown = [n for n in names if n not in SETUPS]
        if unknown or not names:
            raise input_error(f"--memory-setups: {unknown or 'none given'}: choose from {'; '.join(SETUPS)}")
        return names


def model_config(shape: str):
    from wgrpo.engine import ModelConfig

    preset = SHAPES[shape]
    fields = {k: v for k, v in preset.fields.items() if k != "initializer_range"}
    return ModelConfig.from_hf_dict({"architectures": [preset.hf_class], "model_type": preset.model_type, **fields},
                                    source=f"preset {shape}")


def train_config(options: MemoryBenchConfig, setup: str):
    """The TrainConfig of a row: the step's sizes and the setup's memory options."""
    from wgrpo.rl.train.config import TrainConfig

    return TrainConfig(prompts_per_step=options.memory_prompts, group_size=options.memory_group_size,
                       max_new_tokens=options.memory_new_tokens, beta=options.memory_beta,
                       dtype=options.memory_dtype, **SETUPS[setup])


def estimate(options: MemoryBenchConfig, shape: str, setup: str, max_binding_bytes: int | None,
             early_stops: bool = True):
    """The trainer's estimate of the row's step (`MemoryEstimate`), as `wgrpo train` prints it; with
    `early_stops=False`, of the step `measure` runs (completions that never stop early, so no cache is gathered
    into fewer rows)."""
    from wgrpo.engine import estimate_grpo_step
    from wgrpo.rl.train.memory_check import grpo_step_options

    sizes = grpo_step_options(train_config(options, setup), model_config(shape), options.memory_dtype,
                              options.memory_prompt_tokens, max_binding_bytes=max_binding_bytes, eval_batch=0)
    return estimate_grpo_step(**sizes, early_stops=early_stops)


def measure(options: MemoryBenchConfig, shape: str, setup: str, device, seed: int) -> dict:
    """One real step of the row on `device`: {peak: {kind: bytes}, peak_total, seconds, max_rss}."""
    from wgrpo.engine import AdamW, Model
    from wgrpo.rl.train.pipeline import policy_and_reference
    from wgrpo.rl.train.update import grpo_update

    config = train_config(options, setup)
    cfg = model_config(shape)
    started = time.perf_counter()
    base = Model.random(cfg, seed=seed, device=device, dtype=options.memory_dtype)
    policy, reference = policy_and_reference(base, config)
    del base
    gc.collect()
    for p in policy.trainable_parameters():
        p.requires_grad_()
    policy.gradient_checkpointing = config.gradient_checkpointing
    optimizer = AdamW(policy.trainable_parameters(), lr=1e-5)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, cfg.vocab_size, options.memory_prompt_tokens).tolist()
               for _ in range(options.memory_prompts)]
    group = options.memory_group_size
    # a first step of one group of one-token completions: AdamW's moments exist from then on, as in every step
    # of a run after its first (the steady state the estimate describes)
    grpo_update(policy, reference, optimizer, _rollout(policy, prompts[:1], group, 1, config, rng, seed), config,
                pad_id=0, seed=seed)
    memory = device.runtime.memory
    memory.reset_peak()
    step_started = time.perf_counter()
    rollout = _rollout(policy, prompts, group, options.memory_new_tokens, config, rng, seed)
    grpo_update(policy, reference, optimizer, rollout, config, pad_id=0, seed=seed)
    return {"peak": dict(memory.peak), "peak_total": memory.peak_total,
            "step_seconds": time.perf_counter() - step_started, "seconds": time.perf_counter() - started,
            "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _rollout(policy, prompts, group: int, new_tokens: int, config, rng, seed: int):
    """G full-length completions of each prompt, sampled in --generation-chunk-size chunks as the trainer does,
    with random 0/1 rewards."""
    from wgrpo.rl.rollout import Completion, Rollout, sample_groups

    sequences = sample_groups(policy, prompts, group, config.generation_chunk_size, max_new_tokens=new_tokens,
                              temperature=1.0, seed=seed, eos_token_ids=())
    completions = [Completion(index // group, list(s.prompt_ids), list(s.token_ids), s.logprobs, "", s.finish_reason,
                              reward=float(rng.integers(0, 2))) for index, s in enumerate(sequences)]
    return Rollout(completions, group, 0.0, 0.0)


def run_memory_bench(options: MemoryBenchConfig, bench: BenchConfig, device_spec: str | None = None) -> int:
    from wgrpo.engine.device import get_device

    device = get_device(device_spec)
    report = {"adapter": _adapter(device), "config": {**asdict(options), "seed": bench.seed}, "rows": []}
    for shape in options.shape_names():
        for setup in options.setup_names():
            _progress(f"{shape}, {setup} ...")
            guess = estimate(options, shape, setup, device.max_binding_bytes)
            row = {"shape": shape, "setup": setup, "estimate": dict(guess.peak), "estimate_total": guess.total,
                   "split_activation": guess.split_activation}
            if options.memory_measure:
                row["measured"] = measure(options, shape, setup, device, bench.seed)
                row["estimate_of_run"] = estimate(options, shape, setup, device.max_binding_bytes, False).total
                gc.collect()
            report["rows"].append(row)
    _progress_done()
    print(format_memory_report(report))
    if bench.json:
        with open(bench.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


def format_memory_report(report: dict) -> str:
    """The rows as a markdown table; the measured columns only when some row was measured."""
    from wgrpo.engine.memory_estimate import format_bytes

    c = report["config"]
    measured = any("measured" in row for row in report["rows"])
    kinds = ("weights", "gradients", "optimizer", "activations", "kv_cache")
    head = ["shape", "setup", *kinds, "estimated peak"] + (["estimate of the run", "measured peak", "process peak"]
                                                            if measured else [])
    lines = [f"GRPO step memory on {report['adapter']['name']}: B={c['memory_prompts']} x G={c['memory_group_size']}, "
             f"{c['memory_prompt_tokens']} prompt + {c['memory_new_tokens']} new tokens, {c['memory_dtype']} base, "
             f"beta {c['memory_beta']:g}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        note = " (an activation over the binding limit)" if row["split_activation"] else ""
        cells = [row["shape"], row["setup"] + note, *(format_bytes(row["estimate"][k]) for k in kinds),
                 format_bytes(row["estimate_total"])]
        if measured:
            got = row.get("measured")
            cells += ([format_bytes(row["estimate_of_run"]), format_bytes(got["peak_total"]),
                       format_bytes(got["max_rss"])] if got else ["-"] * 3)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
