"""Code generation from JSONL: a problem and assert-line tests; the reward is the fraction of tests passing.

Line format: `{"prompt"|"question"|"problem"|"text": str, "tests"|"test_list": [str, ...] or one str of
assert lines, optional "setup"|"test_setup_code": str}` (MBPP's field names work). The first `show_tests`
tests are shown in the prompt (so the function name and signature are known); the rest stay hidden, which
makes hard-coding the shown cases pay little. Tests run in `rl.sandbox` (imported lazily by `code_reward`);
this module never executes model code. Pure Python + numpy; no engine import.
"""

from __future__ import annotations

from typing import Callable

from wgrpo.rl.rewards import code_reward
from wgrpo.rl.tasks.base import JsonlTask, Problem, Record, record_field

__all__ = ["CodeTask", "PROBLEM_FIELDS", "TEST_FIELDS", "SETUP_FIELDS"]

PROBLEM_FIELDS = ("prompt", "question", "problem", "text")
TEST_FIELDS = ("tests", "test_list")
SETUP_FIELDS = ("setup", "test_setup_code")


class CodeTask(JsonlTask):
    """options: path, eval_path, eval_fraction, think_prefix, template, show_tests, timeout_s, runner (a
    `run_tests(code, tests, timeout_s=...)` stand-in, for tests)."""

    name = "code"

    def __init__(self, *, path: str, eval_path: str | None = None, think_prefix: bool = True,
                 eval_fraction: float = 0.1, show_tests: int = 1, timeout_s: float = 5.0,
                 runner: Callable | None = None, template: str = "r1"):
        if not isinstance(show_tests, int) or show_tests < 0:
            raise ValueError(f"code: show_tests must be a non-negative int, got {show_tests!r}")
        if not timeout_s > 0:
            raise ValueError(f"code: timeout_s must be positive, got {timeout_s!r}")
        self.show_tests, self.timeout_s, self.runner = show_tests, float(timeout_s), runner
        super().__init__(path=path, eval_path=eval_path, think_prefix=think_prefix, eval_fraction=eval_fraction,
                         template=template)

    def _parse(self, record: Record) -> tuple[str, str, dict]:
        problem = record_field(record, PROBLEM_FIELDS, kind="problem")
        tests = record_field(record, TEST_FIELDS, kind="tests", types=(list, str))
        if isinstance(tests, str):
            tests = [line for line in tests.splitlines() if line.strip()]
        if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
            raise ValueError(f"{record.where()}: field 'tests' must be a non-empty list of non-empty strings")
        setup = ""
        for name in SETUP_FIELDS:
            if record.data.get(name):
                setup = record_field(record, (name,))
                break
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
