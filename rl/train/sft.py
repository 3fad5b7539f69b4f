"""Supervised fine-tuning (`wgrpo sft`): next-token cross-entropy on the completion tokens of prompt/completion
pairs, from a checkpoint or from a fresh model with a tokenizer trained on the data.

Owns: the SFT config, batching (prompt tokens masked out, end-of-text appended and learned), the learning-rate
schedule and the training loop. Checkpoints and progress come from `rl.train.checkpoint` and `rl.train.progress`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wgrpo.rl.train.checkpoint import load_training_state, save_training_checkpoint
from wgrpo.rl.jsonl import field as record_field
from wgrpo.rl.jsonl import read_jsonl
from wgrpo.rl.train.progress import Progress
from wgrpo.rl.train.schedule import cosine_lr, epoch_order


@dataclass
class SFTConfig:
    data: str = field(default="", metadata={"help": 'JSONL file of {"prompt": ..., "completion": ...} lines'})
    model: str = field(default="", metadata={"help": "checkpoint directory to start from; empty: a fresh model "
                                                     "and a tokenizer trained on the data"})
    output_dir: str = field(default="runs/sft", metadata={"help": "where checkpoints and metrics.jsonl go"})
    resume: str = field(default="", metadata={"help": "training checkpoint to continue from (same data, config)"})
    steps: int = field(default=300, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "sequences per step"})
    max_length: int = field(default=256, metadata={"help": "longest prompt + completion in tokens; longer lines "
                                                          "are an error naming the line"})
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
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"SFTConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class Example:
    prompt: list[int]
    completion: list[int]  # ends with the end-of-text token


def read_examples(path: str | Path) -> list[dict]:
    """The prompt/completion records of a JSONL file; a line without either field is an error naming it."""
    return [{"prompt": record_field(r, ["prompt"]), "completion": record_field(r, ["completion"]), "line": r.line}
            for r in read_jsonl(path)]


def tokenize(records: list[dict], tokenizer, eos_id: int, max_length: int, path) -> list[Example]:
    examples = []
    for record in records:
        prompt = tokenizer.encode(record["prompt"]).ids
        completion = tokenizer.encode(record["completion"]).ids + [eos_id]
        if len(prompt) + len(completion) > max_length:
            raise ValueError(f"{path}:{record['line']}: {len(prompt) + len(completion)} tokens exceed "
                             f"max_length={max_length}")
        examples.append(Example(prompt, completion))
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


def train_sft(config: SFTConfig, device=None) -> dict:
    """Run SFT as configured; returns a summary (first and last loss, checkpoint path, tokens/s)."""
    from wgrpo.engine import AdamW, Tensor, clip_grad_norm_, load_pretrained, ops

    records = read_examples(config.data)
    start_from = config.resume or config.model
    if start_from:
        model, tokenizer = load_pretrained(start_from, device)
        if tokenizer is None:
            raise ValueError(f"{start_from}: no tokenizer.json; SFT needs the model's tokenizer")
    else:
        model, tokenizer = _fresh_model(config, records, device)
    eos = model.config.eos_token_ids[0] if model.config.eos_token_ids else None
    if eos is None:
        raise ValueError(f"{start_from}: config.json has no eos_token_id; SFT appends it to every completion")
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else eos
    examples = tokenize(records, tokenizer, eos, config.max_length, config.data)

    model.requires_grad_()
    optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    first_step = 0
    if config.resume:
        state, optimizer_state, _ = load_training_state(config.resume)
        optimizer.load_state_dict(optimizer_state)
        first_step = int(state["step"])

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    progress = Progress(config.steps, "sft", start=first_step)
    losses, tokens_seen, started = [], 0, time.perf_counter()
    with open(output / "metrics.jsonl", "a") as metrics_file:
        for step in range(first_step, config.steps):
            batch = [examples[i] for i in epoch_order(step, config.batch_size, len(examples), config.seed)]
            inputs, targets, mask = make_batch(batch, pad)
            optimizer.lr = learning_rate(step, config)
            logits = model(inputs)  # (B, T, V)
            loss = ops.cross_entropy(logits, Tensor.from_numpy(targets, model.device),
                                     Tensor.from_numpy(mask, model.device))
            loss.backward()
            grad_norm = clip_grad_norm_(model.parameters(), config.grad_clip) if config.grad_clip > 0 else None
            optimizer.step()
            optimizer.zero_grad()
            value = float(loss.numpy())  # the step's one submit happens here
            tokens_seen += int(mask.sum())
            losses.append(value)
            rate = tokens_seen / (time.perf_counter() - started)
            record = {"step": step + 1, "loss": value, "lr": optimizer.lr, "tokens_per_s": rate}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm.numpy())
            metrics_file.write(json.dumps(record) + "\n")
            progress.update(step + 1, loss=value, lr=optimizer.lr, **{"tok/s": round(rate)})
            done = step + 1 == config.steps
            if done or (config.save_every and (step + 1) % config.save_every == 0):
                path = output / ("final" if done else f"checkpoint-{step + 1}")
                save_training_checkpoint(path, model, tokenizer, optimizer, {"step": step + 1}, config)
    progress.close()
    return {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "checkpoint": str(output / "final"), "steps": config.steps,
            "tokens_per_s": tokens_seen / max(1e-9, time.perf_counter() - started)}
