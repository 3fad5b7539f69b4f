"""Supervised fine-tuning (`wgrpo sft`): next-token cross-entropy on the completion tokens of prompt/completion
pairs, from a checkpoint or from a fresh model with a tokenizer trained on the data.

Owns: the SFT config, batching (prompt tokens masked out, end-of-text appended and learned), the learning-rate
schedule and the training loop. Every line is tokenized and checked against max_length before the first step;
a longer line is refused (file and line), not truncated as TRL's SFTTrainer does: a cut completion loses its
end-of-text. Checkpoints, metrics.jsonl, progress and the stop on SIGINT/SIGTERM come from `rl.train.checkpoint`,
`rl.train.metrics_log`, `rl.train.progress` and `rl.train.stop`.

`resume` continues the saved run: its trainer_config.json is the run's configuration, and only steps,
output_dir and save_every may change (`resume_config`). Paths are stored absolute, so that a checkpoint means
the same from any directory.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from wgrpo.engine import InputError
from wgrpo.rl.jsonl import field as record_field
from wgrpo.rl.jsonl import read_jsonl
from wgrpo.rl.train.checkpoint import (CONFIG_FILE, load_optimizer_state, load_training_state, read_state, recover,
                                       recover_beside, save_training_checkpoint)
from wgrpo.rl.train.config import (OptionError, check_field_types, continue_saved_run, read_saved_config,
                                   saved_config)
from wgrpo.rl.train.metrics_log import METRICS_FILE, MetricsLog
from wgrpo.rl.train.progress import Progress
from wgrpo.rl.train.schedule import cosine_lr, epoch_order
from wgrpo.rl.train.stop import StopOnSignal, changed_options, resume_command

RESUME_COMMAND = "wgrpo sft"
PATH_FIELDS = ("data", "model", "output_dir", "resume")
# what a resumed run may change: when it stops, where it writes, and how often it saves
RESUME_MAY_CHANGE = ("steps", "output_dir", "save_every")


@dataclass
class SFTConfig:
    data: str = field(default="", metadata={"help": 'JSONL file of {"prompt": ..., "completion": ...} lines'})
    model: str = field(default="", metadata={"help": "checkpoint directory to start from; empty: a fresh model "
                                                     "and a tokenizer trained on the data"})
    output_dir: str = field(default="runs/sft", metadata={"help": "where checkpoints and metrics.jsonl go"})
    resume: str = field(default="", metadata={"help": "training checkpoint to continue from (same data, config)"})
    steps: int = field(default=300, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "sequences per step"})
    max_length: int = field(default=256, metadata={"help": "longest prompt + completion + end-of-text in tokens; "
                                                          "longer lines are an error naming the line (never "
                                                          "truncated)"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW)"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine decay ends at lr * this"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "global gradient-norm clip; 0 disables"})
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps into output_dir/checkpoint-N "
                                                         "(0: only the final one, output_dir/final)"})
    seed: int = field(default=0, metadata={"help": "seed for the data order and a fresh model's weights"})
    vocab_size: int = field(default=512, metadata={"help": "fresh model: tokenizer vocabulary to train"})
    hidden_size: int = field(default=128, metadata={"help": "fresh model: width"})
    num_layers: int = field(default=4, metadata={"help": "fresh model: decoder blocks"})
    num_heads: int = field(default=4, metadata={"help": "fresh model: attention heads"})
    num_kv_heads: int = field(default=2, metadata={"help": "fresh model: key/value heads (GQA)"})
    intermediate_size: int = field(default=384, metadata={"help": "fresh model: MLP width"})

    def __post_init__(self):
        check_field_types(self)
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise OptionError(name, getattr(self, name), "must be at least 1")
        if not 0 <= self.min_lr_ratio <= 1:
            raise OptionError("min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")

    def absolute_paths(self) -> SFTConfig:
        """This config with `data`, `model`, `output_dir` and `resume` absolute (relative to the current
        directory): what a run records, so that its checkpoint means the same from anywhere."""
        return dataclasses.replace(self, **{name: os.path.abspath(getattr(self, name)) for name in PATH_FIELDS
                                            if getattr(self, name)})


def resume_config(config: SFTConfig, *, saved: Mapping[str, Any] | None = None) -> tuple[SFTConfig, list[str]]:
    """The config that continues the run saved in `config.resume`, and one `changed: ...` line per option
    changed.

    The checkpoint's trainer_config.json (or `saved`) is the run's configuration. `config` is every option of
    this run, those left at their defaults included (which ones a command line gave is not known here), so the
    rule is by value: a field in RESUME_MAY_CHANGE takes this run's value; any other field whose value differs
    from the saved one (paths compare absolute) is refused by name, before any work, since a resumed run that
    silently trained differently would not continue the run. `model` may be left empty: a resumed run starts
    from its checkpoint, and keeps the saved `model` as the record of where the run began.
    """
    checkpoint = os.path.abspath(config.resume)
    saved = read_saved_config(checkpoint) if saved is None else saved
    base = saved_config(SFTConfig, saved, Path(checkpoint) / CONFIG_FILE).absolute_paths()
    given = config.absolute_paths()
    compared = [f.name for f in dataclasses.fields(SFTConfig)
                if f.name != "resume" and not (f.name == "model" and not given.model)]
    return continue_saved_run(base, {name: getattr(given, name) for name in compared}, RESUME_MAY_CHANGE, checkpoint,
                              f"repeat the run's options, or start a new run from {checkpoint} with --model to "
                              f"change them")


@dataclass
class Example:
    prompt: list[int]
    completion: list[int]  # ends with the end-of-text token


def read_examples(path: str | Path) -> list[dict]:
    """The prompt/completion records of a JSONL file; a line without either field is an error naming it."""
    return [{"prompt": record_field(r, ["prompt"]), "completion": record_field(r, ["completion"]), "line": r.line}
            for r in read_jsonl(path)]


def tokenize(records: list[dict], tokenizer, eos_id: int, max_length: int, path,
             max_positions: int | None = None) -> list[Example]:
    """The examples of `records`, all checked before any training: a line whose prompt + completion +
    end-of-text exceed `max_length` tokens (or the model's `max_positions`) is an InputError naming the first
    such line of `path` and how many lines are over. Lines are never truncated: a cut completion would lose its
    end-of-text and teach the model not to stop."""
    prompts = tokenizer.encode_batch([r["prompt"] for r in records])
    completions = tokenizer.encode_batch([r["completion"] for r in records])
    examples, over = [], []
    for record, prompt, completion in zip(records, prompts, completions):
        example = Example(prompt.ids, completion.ids + [eos_id])
        length = len(example.prompt) + len(example.completion)
        if length > max_length or (max_positions is not None and length - 1 > max_positions):
            over.append((record["line"], length))
        examples.append(example)
    if over:
        line, length = over[0]
        limit = f"max_length={max_length}" if length > max_length else \
            f"what the model holds (max_position_embeddings={max_positions}, plus the last token, " \
            f"which is only predicted)"
        more = f"; {len(over) - 1} more lines are over it too" if len(over) > 1 else ""
        raise InputError(f"{path}:{line}: {length} tokens (prompt, completion and end-of-text) exceed {limit}"
                         f"{more}; lines are not truncated (raise --max-length or shorten them)")
    return examples


def make_batch(examples: list[Example], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, mask), each (B, T): the loss covers completion tokens (their end-of-text included)."""
    length = max(len(e.prompt) + len(e.completion) for e in examples) - 1
    inputs = np.full((len(examples), length), pad_id, np.int32)
    targets = np.full((len(examples), length), pad_id, np.int32)
    mask = np.zeros((len(examples), length), np.float32)
    for row, e in enumerate(examples):
        tokens = e.prompt + e.completion
        inputs[row, : len(tokens) - 1] = tokens[:-1]
        targets[row, : len(tokens) - 1] = tokens[1:]
        mask[row, len(e.prompt) - 1 : len(tokens) - 1] = 1.0  # positions whose next token is a completion token
    return inputs, targets, mask


def learning_rate(step: int, config: SFTConfig) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio."""
    return cosine_lr(step, config.steps, config.lr, config.warmup_steps, config.min_lr_ratio)


def _fresh_model(config: SFTConfig, records: list[dict], device):
    from wgrpo.engine import END_OF_TEXT, Model, ModelConfig, train_tokenizer

    tokenizer = train_tokenizer((r["prompt"] + r["completion"] for r in records), vocab_size=config.vocab_size)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    model_config = ModelConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=config.hidden_size, num_layers=config.num_layers,
        num_heads=config.num_heads, num_kv_heads=config.num_kv_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_length, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    return Model.random(model_config, seed=config.seed, device=device), tokenizer


def train_sft(config: SFTConfig, device=None, command: str = RESUME_COMMAND, resume_hint: str = "") -> dict:
    """Run SFT as configured; returns a summary (first and last loss, checkpoint path, tokens/s).

    SIGINT (Ctrl-C) or SIGTERM stops it after the step in progress (a step is one submit, never abandoned half
    way): it saves `output_dir/checkpoint-N`, prints the command that resumes (`command --resume ...`, or
    `resume_hint` when the caller resumes it its own way) on stderr and raises SystemExit(128 + the signal's
    number).

    With `config.resume`, the run continues the checkpoint's saved run (see `resume_config`: options that
    differ from it are refused, but steps, output_dir and save_every); `config.steps` must be above the
    checkpoint's step. Both are checked before the data and the weights are read."""
    from wgrpo.engine import AdamW, load_pretrained

    config = config.absolute_paths()
    first_step, optimizer_state = 0, None
    if config.resume:
        recover_beside(config.resume, always=True)  # a kill while replacing it may have left it aside
        first_step = read_state(config.resume)["step"]
        if first_step >= config.steps:
            raise InputError(f"--steps {config.steps}: {config.resume} is at step {first_step} already; give "
                             f"--steps above {first_step}")
        config, changes = resume_config(config)
        for line in changes:
            print(line, file=sys.stderr)
        _, optimizer_state, _ = load_training_state(config.resume)  # checked before the weights load
    records = read_examples(config.data)
    start_from = config.resume or config.model
    if start_from:
        model, tokenizer = load_pretrained(start_from, device)
        if tokenizer is None:
            raise InputError(f"{start_from}: no tokenizer.json; SFT needs the model's tokenizer")
        model = model.to("float32")  # trained as float32 master weights whatever the checkpoint stores
    else:
        model, tokenizer = _fresh_model(config, records, device)
    eos = model.config.eos_token_ids[0] if model.config.eos_token_ids else None
    if eos is None:
        raise InputError(f"{start_from}: config.json has no eos_token_id; SFT appends it to every completion")
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else eos
    examples = tokenize(records, tokenizer, eos, config.max_length, config.data,
                        max_positions=model.config.max_position_embeddings)

    model.requires_grad_()
    optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if optimizer_state is not None:
        load_optimizer_state(optimizer, optimizer_state, config.resume)

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    recover(output)
    losses, tokens_seen, started = [], 0, time.perf_counter()
    saved: tuple[int, Path] | None = None  # (step, path) of the last checkpoint written
    step = first_step

    def save(path: Path) -> Path:
        return save_training_checkpoint(path, model, tokenizer, optimizer, {"step": step}, config)

    with MetricsLog(output / METRICS_FILE, first_step + 1) as log, StopOnSignal(can_abandon=False) as stop:
        if log.note:
            print(f"wgrpo: {log.note}", file=sys.stderr)
        progress = Progress(config.steps, "sft", start=first_step)
        try:
            while step < config.steps and not stop.requested:
                value, grad_norm, tokens = _train_step(model, optimizer, examples, step, config, pad)
                step += 1
                tokens_seen += tokens
                losses.append(value)
                rate = tokens_seen / (time.perf_counter() - started)
                record = {"step": step, "loss": value, "lr": optimizer.lr, "tokens_per_s": rate}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                log.append(record)
                progress.update(step, loss=value, lr=optimizer.lr, **{"tok/s": round(rate)})
                done = step == config.steps
                if done or (config.save_every and step % config.save_every == 0):
                    saved = (step, save(output / ("final" if done else f"checkpoint-{step}")))
        finally:
            progress.close()
        if stop.requested:
            if saved is None or saved[0] != step:
                saved = (step, save(output / f"checkpoint-{step}"))
            _report_stop(stop, step, config, saved[1], command, resume_hint)
    if stop.requested:
        raise SystemExit(stop.exit_code)
    return {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "checkpoint": str(output / "final"), "steps": config.steps,
            "tokens_per_s": tokens_seen / max(1e-9, time.perf_counter() - started)}


def _train_step(model, optimizer, examples: list[Example], step: int, config: SFTConfig,
                pad: int) -> tuple[float, float | None, int]:
    """One optimizer step on `step`'s batch: (loss, gradient norm before clipping or None, completion tokens)."""
    from wgrpo.engine import Tensor, clip_coefficient, ops
    from wgrpo.engine import read_together

    batch = [examples[i] for i in epoch_order(step, config.batch_size, len(examples), config.seed)]
    inputs, targets, mask = make_batch(batch, pad)
    optimizer.lr = learning_rate(step, config)
    # the head and the log-softmax fused in row blocks: no (B, T, V) logits, which a real vocabulary makes
    # gigabytes; and only on the positions the loss counts (not a prompt's under completion-only loss, nor padding)
    counted = np.flatnonzero(mask)
    logp = model.token_logprobs(inputs, targets, positions=counted if 0 < counted.size < mask.size else None)
    loss = ops.nll_loss(logp, Tensor.from_numpy(targets, model.device), model.config.vocab_size,
                        Tensor.from_numpy(mask, model.device))
    loss.backward()
    grad_norm = coefficient = None
    if config.grad_clip > 0:  # clip_grad_norm_'s clip, applied as AdamW reads each gradient
        grad_norm, coefficient = clip_coefficient(model.parameters(), config.grad_clip)
    optimizer.step(grad_factor=coefficient)
    optimizer.zero_grad()
    # the step's one submit and one read-back
    values = read_together([loss.detach()] + ([grad_norm] if grad_norm is not None else []))
    return float(values[0]), (float(values[1]) if grad_norm is not None else None), int(mask.sum())


def _report_stop(stop: StopOnSignal, step: int, config: SFTConfig, checkpoint: Path, command: str,
                 resume_hint: str) -> None:
    if step >= config.steps:
        print(f"wgrpo: stopped by {stop.signal_name} after the last step; the run is complete: {checkpoint}",
              file=sys.stderr)
        return
    print(f"wgrpo: stopped by {stop.signal_name} after step {step} of {config.steps}; saved {checkpoint}",
          file=sys.stderr)
    if resume_hint:
        print(f"wgrpo: resume with: {resume_hint}", file=sys.stderr)
        return
    options = changed_options(config, skip=("resume", "model"))  # `wgrpo sft` takes its options from its flags
    print(f"wgrpo: resume with: {resume_command(command, checkpoint, options)}", file=sys.stderr)
