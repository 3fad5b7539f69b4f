"""Code generation from JSONL: a problem and assert-line tests; the reward is the fraction of tests passing.

Line format: `{"prompt"|"question"|"problem"|"text": str, "tests"|"test_list": [str, ...] or one str of
assert lines, optional "setup"|"test_setup_code": str}` (MBPP's field names work). The first `show_tests`
tests are shown in the prompt (so the function name and signature are known); the rest stay hidden, which
makes hard-coding the shown cases pay little. Tests run in `rl.sandbox`; this module never executes model
code. The sandbox's isolation (`sandbox=`) is probed when the task is built, so a machine that cannot isolate
model code is refused before any training work. Completions are scored in parallel, one sandbox run per
thread (each run is a subprocess), at most `workers` at once and never more than the usable cores. Pure
Python + numpy; imports the engine only to raise its InputError.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, Sequence

from wgrpo.rl.errors import input_error
from wgrpo.rl.rewards import code_reward
from wgrpo.rl.sandbox import ISOLATIONS, SandboxConfig, check_sandbox, run_tests
from wgrpo.rl.tasks.base import JsonlTask, Problem, Record, record_field

__all__ = ["CodeTask", "PROBLEM_FIELDS", "TEST_FIELDS", "SETUP_FIELDS", "usable_cores"]

PROBLEM_FIELDS = ("prompt", "question", "problem", "text")
TEST_FIELDS = ("tests", "test_list")
SETUP_FIELDS = ("setup", "test_setup_code")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class CodeTask(JsonlTask):
    """options: path, eval_path, eval_fraction, think_prefix, template, show_tests, timeout_s, sandbox (the
    isolation: auto, bwrap, unshare, or limits to accept resource limits alone), workers (sandbox runs at once;
    0 = the usable cores; a larger value is clipped to them, so that options saved on a bigger machine still run
    here), runner (a `run_tests(code, tests, timeout_s=...)` stand-in for tests: then no sandbox
    is probed or used)."""

    name = "code"
    records = 'problems with tests, one {"prompt": ..., "tests": ["assert ...", ...]} object per line'

    def __init__(self, *, path: str | None = None, eval_path: str | None = None, think_prefix: bool = True,
                 eval_fraction: float = 0.1, show_tests: int = 1, timeout_s: float = 5.0, sandbox: str = "auto",
                 workers: int = 0, runner: Callable | None = None, template: str = "r1"):
        if isinstance(show_tests, bool) or not isinstance(show_tests, int) or show_tests < 0:
            raise input_error(f"code: task option 'show_tests' must be a non-negative int, got {show_tests!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < 1e6:
            raise input_error(f"code: task option 'timeout_s' must be a positive number of seconds, "
                              f"got {timeout_s!r}")
        if sandbox not in ISOLATIONS:
            raise input_error(f"code: task option 'sandbox' must be one of {', '.join(ISOLATIONS)}, got {sandbox!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise input_error(f"code: task option 'workers' must be a non-negative int (0 = the usable cores), "
                              f"got {workers!r}")
        if runner is not None and not callable(runner):
            raise input_error(f"code: task option 'runner' must be a callable, got {runner!r}")
        self.show_tests, self.timeout_s, self.sandbox = show_tests, float(timeout_s), sandbox
        # each run is a Python subprocess: more at once than cores only makes every one of them slower
        self.workers = min(workers or usable_cores(), usable_cores())
        self.isolation = None  # the isolation the sandbox found here; None with a stand-in runner
        if runner is None:
            config = SandboxConfig(isolation=sandbox, timeout_s=self.timeout_s)
            self.isolation = check_sandbox(config)  # refuses here, before the data is read or a model loaded
            runner = functools.partial(run_tests, config=config)
        self.runner = runner
        super().__init__(path=path, eval_path=eval_path, think_prefix=think_prefix, eval_fraction=eval_fraction,
                         template=template)

    def rewards(self, completions: Sequence[str], problems: Sequence[Problem],
                weights: Mapping[str, float] | None = None,
                completion_ids: Sequence[Sequence[int]] | None = None) -> list[tuple[float, dict[str, float]]]:
        """`reward` of each pair, in order, scored by up to `workers` threads at once (each waits on its
        sandbox subprocess); the same values as scoring them one at a time."""
        if len(completions) != len(problems):
            raise ValueError(f"code.rewards: {len(completions)} completions but {len(problems)} problems")
        workers = min(self.workers, len(completions))
        if workers <= 1:
            return super().rewards(completions, problems, weights)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-reward") as pool:
            return list(pool.map(lambda pair: self.reward(pair[0], pair[1], weights), zip(completions, problems)))

    def _parse(self, record: Record) -> tuple[str, str, dict]:
        problem = record_field(record, PROBLEM_FIELDS, kind="problem")
        tests = record_field(record, TEST_FIELDS, kind="tests", types=(list, str))
        if isinstance(tests, str):
            tests = [line for line in tests.splitlines() if line.strip()]
        if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
            raise input_error(f"{record.where()}: field 'tests' must be a non-empty list of non-empty strings")
        setup = ""
        for name in SETUP_FIELDS:
            if record.data.get(name):
                setup = record_field(record, (name,))
                break
        for label, source in [("setup", setup)] + [(f"tests[{i}]", test) for i, test in enumerate(tests)]:
            try:
                compile(source, label, "exec")
            except (SyntaxError, ValueError) as error:  # ValueError: a null byte
                raise input_error(f"{record.where()}: {label} is not valid Python: {error}") from None
        question = problem.strip()
        if self.show_tests:
            shown = "\n".join(tests[:self.show_tests])
            question += f"\nYour code should pass tests like these:\n{shown}"
        question += ("\nShow your reasoning in <think> </think> tags and give the complete Python code in "
                     "<answer> </answer> tags.")
        return question, "", {"tests": list(tests), "setup": setup}

    def _accuracy(self, text: str, problem: Problem) -> float:
        return code_reward(text, problem.meta["tests"], setup=problem.meta["setup"], timeout_s=self.timeout_s,
                           runner=self.runner)
