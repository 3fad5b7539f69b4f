"""GRPO tasks: problem generators / JSONL readers with prompts, held-out splits and rule rewards.

`get_task(name, **options)` builds a task from the registry (`TASKS`); every task implements `Task`
(`rl/tasks/base.py`): `sample(index_or_rng, split) -> Problem`, `eval_problems(n)`, `size(split)`,
`reward_parts(completion, problem) -> {'format', 'accuracy'}`, `reward(completion, problem, weights)`,
`rewards(completions, problems, weights, completion_ids)` (a batch, in order) and `check_prompts(tokenizer,
max_prompt_tokens)`. `DatasetTask` (rows of a TRL-style dataset scored by reward functions) is exported but not
in `TASKS`: it is built from rows and functions, not from options. Unknown, missing or bad options raise
`wgrpo.engine.InputError` naming them. Pure Python + numpy; imports the engine only to raise that error, never
wgpu.
"""

from __future__ import annotations

import inspect

from wgrpo.rl.errors import input_error

from wgrpo.rl.tasks.arithmetic import ArithmeticTask
from wgrpo.rl.tasks.base import DEFAULT_WEIGHTS, SPLITS, GeneratedTask, JsonlTask, Problem, Task, render_prompt
from wgrpo.rl.tasks.code import CodeTask
from wgrpo.rl.tasks.countdown import CountdownTask
from wgrpo.rl.tasks.dataset import DatasetTask
from wgrpo.rl.tasks.gsm8k import Gsm8kTask

__all__ = ["TASKS", "get_task", "available_tasks", "Task", "Problem", "GeneratedTask", "JsonlTask",
           "CountdownTask", "ArithmeticTask", "Gsm8kTask", "CodeTask", "DatasetTask", "render_prompt", "SPLITS",
           "DEFAULT_WEIGHTS"]

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (CountdownTask, ArithmeticTask, Gsm8kTask, CodeTask)}


def available_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(name: str, **options) -> Task:
    """Build task `name` with keyword `options`; InputError naming an unknown task (and the known ones), an
    unknown option (and the accepted ones) or a missing required option."""
    cls = TASKS.get(name)
    if cls is None:
        raise input_error(f"unknown task {name!r}; known tasks: {', '.join(available_tasks())}")
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self"]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise input_error(f"task {name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                          f"options: {', '.join(accepted)}")
    missing = [p for p in accepted if params[p].default is inspect.Parameter.empty and p not in options]
    if missing:
        raise input_error(f"task {name!r} needs option(s) {', '.join(map(repr, missing))}")
    return cls(**options)
