"""`wgrpo eval`: greedy pass@1 of a checkpoint on a task's held-out problems.

Owns: `EvalConfig` and `run_eval`, which check every option, the task, and that the task's prompts fit the
model with --max-new-tokens after them, before the evaluation starts. The task comes from the options given;
those not given come from the checkpoint's trainer_config.json (read only then) when it was trained on that
task, else they are the task's own defaults. The evaluation itself is `rl.train.evaluate`'s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

from wgrpo.engine import InputError
from wgrpo.rl.train.config import SANDBOXES, OptionError, check_field_types


@dataclass
class EvalConfig:
    """Options of `wgrpo eval`."""

    model: str = field(default="", metadata={"help": "checkpoint directory or Hugging Face Hub id to evaluate",
                                             "metavar": "DIR|ID"})
    dtype: str = field(default="auto", metadata={
        "help": "how the weights are held on the device: auto (as the checkpoint stores them), float32, bfloat16 or "
                "float16", "choices": ("auto", "float32", "bfloat16", "float16")})
    task: str | None = field(default=None, metadata={
        "help": "countdown, arithmetic, gsm8k or code (default: the task the checkpoint was trained on, else "
                "arithmetic)", "metavar": "NAME"})
    task_options: str | None = field(default=None, metadata={
        "help": "key=value pairs, e.g. 'path=test.jsonl' (default: the checkpoint's training options when it was "
                "trained on this task, else the task's own defaults)", "metavar": "KEY=VALUE,...",
        "key_value": True})
    sandbox: str | None = field(default=None, metadata={
        "help": "how the code task runs tests (default: the checkpoint's training option, else auto; see `wgrpo "
                "train --help`)", "choices": SANDBOXES})
    problems: int = field(default=200, metadata={"help": "held-out problems to evaluate (all of them when the "
                                                         "task has fewer)"})
    max_new_tokens: int = field(default=48, metadata={"help": "completion length limit in tokens"})
    json: bool = field(default=False, metadata={"help": "print the result as JSON"})

    def __post_init__(self):
        check_field_types(self)
        for name in ("problems", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise OptionError(name, getattr(self, name), "must be at least 1")


def eval_task(config: EvalConfig) -> tuple[str, str, str]:
    """(task, task options, sandbox) of the evaluation. Each not given comes from the checkpoint's
    trainer_config.json (read only then, and checked: a corrupt one is named), the task options only when the
    checkpoint was trained on the same task; else the defaults: task arithmetic, the task's own options,
    sandbox auto. The sandbox matters only to the code task."""
    from wgrpo.rl.train.checkpoint import CONFIG_FILE
    from wgrpo.rl.train.config import TrainConfig, checked_field_value, read_saved_config

    task, options, sandbox = config.task, config.task_options, config.sandbox
    if task is not None and options is not None and (sandbox is not None or task != "code"):
        return task, options, sandbox or "auto"
    saved = read_saved_config(config.model, required=False)
    where = os.path.join(config.model, CONFIG_FILE)

    def saved_option(name: str):
        return checked_field_value(TrainConfig, name, saved[name], where) if name in saved else None

    trained_on = saved_option("task")
    task = task if task is not None else (trained_on or "arithmetic")
    if options is None:
        options = (saved_option("task_options") or "") if task == trained_on else ""
    if sandbox is None:
        sandbox = saved_option("sandbox") or "auto"
    return task, options, sandbox


def run_eval(config: EvalConfig, device_spec: str | None = None) -> int:
    """Evaluate as configured (see the module docstring) and print the result; returns the exit code."""
    from wgrpo.engine import load_pretrained
    from wgrpo.engine.device import get_device
    from wgrpo.rl.train.task_options import build_task
    from wgrpo.rl.train.evaluate import check_prompts_fit, evaluate
    from wgrpo.rl.train.pipeline import model_directory

    if not config.model:
        raise InputError("--model DIR is required: the checkpoint directory to evaluate")
    config = replace(config, model=model_directory(config.model))  # a killed save may have left it aside
    task = build_task(*eval_task(config))  # before the model loads: a bad option costs nothing
    model, tokenizer = load_pretrained(config.model, get_device(device_spec), config.dtype)
    if tokenizer is None:
        raise InputError(f"--model {config.model}: no tokenizer.json next to the model")
    task.use_tokenizer(tokenizer)  # conversational prompts are rendered with the model's chat template
    check_prompts_fit(task, tokenizer, model.config, config.max_new_tokens)
    result = evaluate(model, tokenizer, task, problems=config.problems, max_new_tokens=config.max_new_tokens)
    if config.json:
        print(json.dumps({"task": task.name, "problems": result.problems, "accuracy": _number(result.accuracy),
                          "format": _number(result.format), "mean_length": result.mean_length,
                          "reward": _number(result.reward), "pass@1": _number(result.pass_at_1),
                          "rewards": {name: _number(value) for name, value in result.rewards.items()}}, indent=2))
    else:
        parts = ", ".join(f"{name} {value:.3g}" for name, value in result.rewards.items())
        print(f"{task.name}: pass@1 (greedy) {result.pass_at_1:.1%}, reward {result.reward:.3g} ({parts}) on "
              f"{result.problems} held-out problems ({result.seconds:.1f} s)")
        for prompt, completion in result.examples:
            print(f"  ...{prompt!r} -> {completion!r}")
    return 0


def _number(value: float) -> float | None:
    """JSON has no NaN: a part the task does not have is null."""
    return None if value != value else value
