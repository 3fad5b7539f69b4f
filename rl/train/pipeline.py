"""`wgrpo train` end to end: start from a checkpoint, or warm up a fresh tiny model on reasoning traces that are
only sometimes right; then GRPO; then a table of base vs trained held-out accuracy and format rate.

Owns: choosing the starting point and the reference model, the warm-up data, and the final report.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from wgrpo.rl.train.sft import SFTConfig, train_sft
from wgrpo.rl.tasks import get_task
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.trainer import GRPOTrainer
from wgrpo.rl.train.traces import warmup_records


def warm_up(config: TrainConfig, task, device) -> Path:
    """Train a tokenizer and a fresh model on `warmup_examples` traces; returns the checkpoint directory."""
    if task.name != "arithmetic":
        raise ValueError(f"the warm-up writes arithmetic reasoning traces; task {task.name!r} needs --model DIR "
                         f"(a checkpoint that can sometimes solve it)")
    folder = Path(config.output_dir) / "warmup"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "traces.jsonl"
    with open(data, "w") as f:
        for record in warmup_records(task, config.warmup_examples, config.warmup_error_rate, config.seed):
            f.write(json.dumps(record) + "\n")
    sft = SFTConfig(data=str(data), output_dir=str(folder), steps=config.warmup_steps, batch_size=32,
                    max_length=256, lr=config.warmup_lr, warmup_steps=min(20, config.warmup_steps),
                    seed=config.seed, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                    num_layers=config.num_layers, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                    intermediate_size=config.intermediate_size)
    print(f"warm-up: {config.warmup_examples} reasoning traces ({config.warmup_error_rate:.0%} with the bug: "
          f"carries forgotten), {config.warmup_steps} supervised steps", file=sys.stderr)
    summary = train_sft(sft, device)
    return Path(summary["checkpoint"])


def _reference(model, config: TrainConfig):
    """A frozen copy of the starting policy for the KL penalty (none when beta is 0)."""
    if config.beta <= 0:
        return None
    from wgrpo.engine import Model

    return Model.from_numpy(model.config, model.state_dict(), model.device, source="reference")


def run_train(config: TrainConfig, device=None) -> dict:
    """Train as configured and print the before/after table; returns the evaluations."""
    from wgrpo.engine import load_pretrained

    task = get_task(config.task, **config.task_kwargs())
    if config.resume:
        state_file = Path(config.resume) / "trainer_state" / "state.json"
        start = json.loads(state_file.read_text()).get("start_model") if state_file.is_file() else None
        if start is None:
            raise ValueError(f"{config.resume}: not a GRPO training checkpoint (no start_model in {state_file})")
        reference = load_pretrained(start, device)[0] if config.beta > 0 else None  # the frozen starting policy
        trainer = GRPOTrainer.resume_from(config, config.resume, device, reference)
    else:
        start = config.model or str(warm_up(config, task, device))
        model, tokenizer = load_pretrained(start, device)
        if tokenizer is None:
            raise ValueError(f"{start}: no tokenizer.json next to the model")
        trainer = GRPOTrainer(config, model, tokenizer, task, _reference(model, config), start_model=str(start))
    history = trainer.run()
    report(history, trainer)
    return {"history": history, "output_dir": config.output_dir}


def report(history: list[dict], trainer: GRPOTrainer) -> None:
    """The table the demo ends with: held-out accuracy and format rate before and after GRPO.

    A resumed run evaluates only at its end; the starting evaluation then comes from the run's metrics.jsonl
    when the run continues in the same output directory."""
    records = [r for r in _evaluations(Path(trainer.config.output_dir) / "metrics.jsonl") if r["step"] == 0]
    history = records[:1] + [r for r in history if r["step"] != 0] if records else history
    if not history:
        return
    print(f"\nheld-out pass@1, greedy, {trainer.config.eval_problems} {trainer.task.name} problems:")
    print(f"{'model':<18} {'accuracy':>9} {'format':>9}")
    first, last = history[0], history[-1]
    rows = [("base (step 0)", first)] if first["step"] == 0 else []
    rows.append((f"GRPO (step {last['step']})", last))
    for name, record in rows:
        print(f"{name:<18} {record['eval/accuracy']:>9.1%} {record['eval/format']:>9.1%}")
    if len(rows) == 2:
        gain = last["eval/accuracy"] - first["eval/accuracy"]
        print(f"accuracy change: {gain * 100:+.1f} points; curves: {Path(trainer.config.output_dir) / 'curves.png'}")


def _evaluations(metrics: Path) -> list[dict]:
    if not metrics.is_file():
        return []
    records = (json.loads(line) for line in metrics.read_text().splitlines() if line.strip())
    return [r for r in records if "eval/accuracy" in r]


def config_summary(config: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2)
