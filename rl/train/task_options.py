"""The options that name a run's task and rewards, as strings: `key=value,...` task options and reward weights
parsed (with errors naming the option and the item), and the task they describe built: a built-in task
(`build_task`) or, with --dataset, the dataset with its reward functions (`task_of`).
"""

from __future__ import annotations

import math
import os
from typing import Any

from wgrpo.engine import InputError
from wgrpo.rl.train.fields import Mismatch, options_text

PATH_OPTIONS = ("path", "eval_path")  # task options that name files


def parse_options(text: str, name: str = "--task-options") -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'}: ints, floats and true/false become numbers and booleans. InputError
    `"{name}: ... in '{text}'"` for an item that is no key=value pair, or a key given twice."""
    try:
        return options_of(text)
    except Mismatch as mismatch:
        raise InputError(f"{name}: {mismatch} in {text!r}") from None


def parse_weights(text: str, name: str = "--reward-weights") -> dict[str, float] | list[float]:
    """'accuracy=1,format=0.1' -> {'accuracy': 1.0, 'format': 0.1}; '1,0.1' (TRL's one weight per reward
    function, in order) -> [1.0, 0.1]. InputError `"{name}: ... in '{text}'"` for an item that is no name=weight
    pair in a list of pairs, a name given twice, or a weight that is not a finite number."""
    try:
        return weights_of(text)
    except Mismatch as mismatch:
        raise InputError(f"{name}: {mismatch} in {text!r}") from None


def _pairs(text: str, form: str) -> dict[str, str]:
    """'a=1, b=x' -> {'a': '1', 'b': 'x'}. Mismatch for an item that is no pair, or a key given twice (the
    last value would otherwise win, silently)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise Mismatch(f"expected {form} pairs separated by commas, got {item!r}")
        if key in pairs:
            raise Mismatch(f"{key!r} is given twice")
        pairs[key] = value
    return pairs


def options_of(text: str) -> dict:
    options: dict[str, Any] = {}
    for key, value in _pairs(text, "key=value").items():
        for convert in (int, float):
            try:
                options[key] = convert(value)
                break
            except ValueError:
                pass
        else:
            options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def weights_of(text: str) -> dict[str, float] | list[float]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items and not any("=" in item for item in items) and all(_is_number(item) for item in items):
        return [_weight(f"#{index + 1}", item) for index, item in enumerate(items)]  # one per reward, in order
    return {key: _weight(repr(key), value) for key, value in _pairs(text, "name=weight").items()}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _weight(label: str, value: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        raise Mismatch(f"the weight of {label} is {value!r}, not a number") from None
    if not math.isfinite(weight):
        raise Mismatch(f"the weight of {label} is {value!r}, not a finite number")
    return weight


def absolute_task_paths(text: str) -> str:
    options = parse_options(text, "--task-options")
    relative = {k: os.path.abspath(v) for k, v in options.items()
                if k in PATH_OPTIONS and isinstance(v, str) and v and not os.path.isabs(v)}
    if not relative:
        return text  # as the user wrote it
    try:
        return options_text({**options, **relative})
    except Mismatch as mismatch:
        raise InputError(f"--task-options {text}: {mismatch}") from None


def task_kwargs(task: str, task_options: str, sandbox: str = "auto") -> dict:
    """The keyword options of `get_task(task, ...)`: the parsed --task-options, and --sandbox for `code`."""
    options = parse_options(task_options, "--task-options")
    if task == "code":
        if "sandbox" in options:
            raise InputError(f"--task-options {task_options}: choose the sandbox with --sandbox, not a task option")
        options["sandbox"] = sandbox
    return options


def task_of(config):
    """The task `config` trains on: its --dataset with its --reward-funcs (and --eval-dataset), else the built-in
    task that --task, --task-options and --sandbox describe. Reward functions from a file are loaded (and named on
    stderr) here."""
    if not config.dataset:
        return build_task(config.task, config.task_options, config.sandbox)
    from wgrpo.rl.datasets import load_rows
    from wgrpo.rl.reward_funcs import load_reward_funcs
    from wgrpo.rl.reward_scoring import RewardFunctions
    from wgrpo.rl.tasks.dataset import DatasetTask

    functions = RewardFunctions(load_reward_funcs(config.reward_funcs))
    held_out = load_rows(config.eval_dataset, "--eval-dataset") if config.eval_dataset else None
    return DatasetTask(load_rows(config.dataset, "--dataset"), functions, held_out, source=config.dataset)


def build_task(task: str, task_options: str, sandbox: str = "auto"):
    """The task that --task, --task-options and --sandbox describe. The tasks refuse an unknown task or option,
    a missing or malformed data file, or missing isolation for code, with an InputError naming it."""
    from wgrpo.rl.tasks import get_task

    return get_task(task, **task_kwargs(task, task_options, sandbox))
