"""Reward functions in TRL's convention, built-in and loaded from the user's code.

A reward function is called `fn(prompts=..., completions=..., completion_ids=..., **columns, trainer_state=...)`
and returns one float (or None: not applicable) per completion, as TRL's GRPOTrainer calls it. `prompts` and
`completions` hold one entry per completion: text, or for a conversational dataset the prompt's messages and
`[{"role": "assistant", "content": text}]`. The dataset's other columns come as keyword lists.

Owns the built-ins over `rl.rewards` (`accuracy`, `format`, `countdown`, `code`; `BUILTIN_REWARDS`),
`load_reward_funcs` (a `--reward-funcs` spec: built-in names, `path/to/file.py:name` and `package.module:name`;
user code is imported in this process and said so, one line per file or module) and `reward_func_name`. Bad
specs raise `wgrpo.engine.InputError` in one line naming the item, file and line. Never imports wgpu.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from wgrpo.rl.errors import input_error
from wgrpo.rl.rewards import accuracy_reward, code_reward, countdown_reward, format_reward

__all__ = ["accuracy", "format", "countdown", "code", "BUILTIN_REWARDS", "load_reward_funcs", "reward_func_name",
           "completion_text", "print_to_stderr", "CODE_TIMEOUT_S"]

CODE_TIMEOUT_S = 5.0  # wall-clock limit of one sandboxed test run


def completion_text(completion) -> str:
    """The text of a completion: itself, or the content of a conversational completion's last message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"a completion must be text or a list of messages, got {type(completion).__name__}")


def _think_in_prompt(prompt) -> bool:
    """Whether the model's text starts inside `<think>`: a text prompt that ends with it (a conversation's
    rendered prompt ends with the assistant's header)."""
    return isinstance(prompt, str) and prompt.rstrip().endswith("<think>")


# ----------------------------------------------------------------------------------------------- built-ins

def accuracy(prompts, completions, completion_ids=None, *, answer, **kwargs) -> list[float | None]:
    """1.0 when the completion's final answer (`<answer>` tags, else `\\boxed{}`) equals the `answer` column
    (numerically when it is a number, else as normalized text); None where the answer is None."""
    scores = []
    for index, (completion, gold) in enumerate(zip(completions, answer, strict=True)):
        if gold is None:
            scores.append(None)
            continue
        try:
            scores.append(accuracy_reward(completion_text(completion), gold))
        except ValueError:  # the gold answer is unusable, not the model's text
            raise input_error(f"reward function accuracy: the answer of completion {index} is {gold!r}; it must "
                              f"be a number or non-blank text") from None
    return scores


def format(prompts, completions, completion_ids=None, **kwargs) -> list[float]:  # noqa: A001 (TRL's name)
    """1.0 for `<think>...</think> <answer>...</answer>` and nothing else; scored as `"<think>" + completion`
    when the prompt ends with `<think>`."""
    return [format_reward(completion_text(completion), think_in_prompt=_think_in_prompt(prompt))
            for prompt, completion in zip(prompts, completions, strict=True)]


def countdown(prompts, completions, completion_ids=None, *, numbers, target, **kwargs) -> list[float | None]:
    """1.0 when the answer is an expression using every one of `numbers` once that equals `target`; None where
    either column is None."""
    return [None if nums is None or goal is None else countdown_reward(completion_text(completion), nums, goal)
            for completion, nums, goal in zip(completions, numbers, target, strict=True)]


def code(prompts, completions, completion_ids=None, *, tests, setup=None, **kwargs) -> list[float | None]:
    """The fraction of `tests` (assert lines: a list, or one text of lines) that the completion's code passes
    in the sandbox (`rl.sandbox`), several completions at once; `setup` (imports the tests need) runs first.
    None where tests is None. InputError when no sandbox isolation works here, before any model code runs."""
    from wgrpo.rl.sandbox import SandboxConfig, check_sandbox, run_tests
    from wgrpo.rl.tasks.code import usable_cores

    config = SandboxConfig(timeout_s=CODE_TIMEOUT_S)
    check_sandbox(config)  # probed once per config, so a cheap check after the first
    setups = [None] * len(completions) if setup is None else setup
    jobs = []
    for index, (completion, test_list, prefix) in enumerate(zip(completions, tests, setups, strict=True)):
        if test_list is None:
            jobs.append(None)
            continue
        if isinstance(test_list, str):
            test_list = [line for line in test_list.splitlines() if line.strip()]
        if not isinstance(test_list, (list, tuple)) or not test_list \
                or not all(isinstance(test, str) and test.strip() for test in test_list):
            raise input_error(f"reward function code: the tests of completion {index} must be a non-empty list of "
                              f"assert lines, got {test_list!r:.80}")
        jobs.append((completion_text(completion), list(test_list), prefix or ""))
    runner = functools.partial(run_tests, config=config)

    def score(job):
        if job is None:
            return None
        text, test_list, prefix = job
        return code_reward(text, test_list, setup=prefix, timeout_s=CODE_TIMEOUT_S, runner=runner)

    workers = min(usable_cores(), sum(job is not None for job in jobs))
    if workers <= 1:
        return [score(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-reward") as pool:
        return list(pool.map(score, jobs))


BUILTIN_REWARDS: dict[str, Callable] = {"accuracy": accuracy, "format": format, "countdown": countdown,
                                        "code": code}


def reward_func_name(fn) -> str:
    """The name TRL gives a reward function: its `__name__` (a functools.partial: the wrapped function's; a
    callable object: its class name)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


# ----------------------------------------------------------------------------------------------- loading

def print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_reward_funcs(spec: str, *, log: Callable[[str], None] = print_to_stderr) -> list[Callable]:
    """The functions named by `spec`, a comma list of items, in order:
    - a built-in name (`accuracy`, `format`, `countdown`, `code`);
    - `path/to/file.py:name`: `name` from that file, imported as a module (its code runs in this process);
    - `package.module:name`: `name` from an importable module.
    After a `file.py:name` or `module:name` item, bare names come from that same file or module until the next
    such item (`my_rewards.py:accuracy,fmt` loads both from the file; put built-ins first to mix them). One line
    per file or module is logged before it is imported, saying whose code runs. InputError naming the item for
    a missing file or module, a syntax error or an exception while importing (file and line), a missing name
    (and the callables the file defines), something not callable, or an unknown built-in (and the built-ins);
    with `code`, when no sandbox isolation works here."""
    if not isinstance(spec, str) or not spec.strip():
        raise input_error(f"reward functions: expected a comma list of names, got {spec!r}; built-ins: "
                          f"{', '.join(BUILTIN_REWARDS)}, or path/to/file.py:name or package.module:name")
    items, source = [], None  # (source, name); source None for a built-in
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise input_error(f"reward functions {spec!r}: an empty item (two commas, or a trailing one)")
        if ":" in item:
            where, _, name = item.rpartition(":")
            if not where or not name.isidentifier():
                raise input_error(f"reward function {item!r}: expected path/to/file.py:name or package.module:name")
            source = _source(where)
        elif source is None and item not in BUILTIN_REWARDS:
            raise input_error(f"unknown reward function {item!r}; built-ins: {', '.join(BUILTIN_REWARDS)}, or give "
                              f"path/to/file.py:name or package.module:name")
        else:
            name = item
        items.append((source, name))
    modules = {}
    for where in dict.fromkeys(where for where, _ in items if where is not None):
        names = ", ".join(name for source, name in items if source == where)
        kind = "" if where.endswith(".py") else "module "
        log(f"wgrpo: reward functions {names} from {kind}{where} (its code runs in this process)")
        modules[where] = _import(where)
    funcs = [BUILTIN_REWARDS[name] if where is None else _take(modules[where], name, where) for where, name in items]
    if code in funcs:  # no isolation here: refused now, before a model loads, not at the first rollout
        from wgrpo.rl.sandbox import SandboxConfig, check_sandbox

        check_sandbox(SandboxConfig(timeout_s=CODE_TIMEOUT_S))
    return funcs


def _is_file(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where


def absolute_reward_spec(spec: str) -> str:
    """`spec` with every file item's path absolute (relative to the current directory), built-ins and modules as
    they are: what a run records, so that its checkpoint loads the same functions from any directory."""
    items = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        where, colon, name = item.rpartition(":")
        if colon and _is_file(where):
            item = f"{os.path.abspath(os.path.expanduser(where))}:{name}"
        items.append(item)
    return ",".join(items)


def _source(where: str) -> str:
    """A file's absolute path (an item ending in .py or holding a path separator), else a module name."""
    if _is_file(where):
        path = os.path.abspath(os.path.expanduser(where))
        if not os.path.isfile(path):
            raise input_error(f"reward functions file {where} does not exist" if not os.path.exists(path)
                              else f"reward functions file {where} is not a file")
        return path
    if not all(part.isidentifier() for part in where.split(".")):
        raise input_error(f"reward functions {where!r}: not a file.py path or a package.module name")
    return where


def _import(source: str):
    """Import a file (as a module of its own, registered in sys.modules so that dataclasses and pickling work)
    or a module; one-line InputErrors naming the file and line of a failure."""
    if not source.endswith(".py"):
        try:
            return importlib.import_module(source)
        except ModuleNotFoundError as error:
            if error.name and (source == error.name or source.startswith(error.name + ".")):
                raise input_error(f"reward functions module {source!r}: no module {error.name!r} on the path "
                                  f"(sys.path)") from None
            raise input_error(_import_failure(source, _module_file(source), error)) from None
        except SyntaxError as error:
            raise input_error(_syntax(error)) from None
        except Exception as error:
            raise input_error(_import_failure(source, _module_file(source), error)) from None
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    name = f"wgrpo_reward_funcs_{os.path.splitext(os.path.basename(source))[0]}_{digest}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, source))
    sys.modules[name] = module
    try:
        module.__spec__.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        if isinstance(error, SyntaxError):
            raise input_error(_syntax(error)) from None
        if isinstance(error, Exception):
            raise input_error(_import_failure(source, source, error)) from None
        raise
    return module


def _module_file(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # its package itself fails to import
        return None
    return spec.origin if spec else None


def _syntax(error: SyntaxError) -> str:
    return f"{error.filename}:{error.lineno}: syntax error in the reward functions' code: {' '.join(error.msg.split())}"


def _import_failure(source: str, path: str | None, error: BaseException) -> str:
    """Where importing `source` failed: the file and line of the last frame in its own file (else the last)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith("<frozen") and "importlib" not in frame.filename]
    own = [frame for frame in frames if path and os.path.abspath(frame.filename) == os.path.abspath(path)]
    frame = (own or frames or [None])[-1]
    at = f"{frame.filename}:{frame.lineno}" if frame else source
    message = " ".join(str(error).split())  # one line, whatever the exception says
    return f"{at}: importing the reward functions of {source} raised {type(error).__name__}: {message}"


def _take(module, name: str, source: str) -> Callable:
    if not hasattr(module, name):
        defined = [key for key, value in vars(module).items() if not key.startswith("_") and callable(value)
                   and getattr(value, "__module__", None) == module.__name__]
        raise input_error(f"{source} has no {name!r}; the callables it defines: {', '.join(defined) or 'none'}")
    fn: Any = getattr(module, name)
    if not callable(fn):
        raise input_error(f"{source}: {name} is not a callable reward function (it is {type(fn).__name__} "
                          f"{fn!r:.40})")
    return fn
