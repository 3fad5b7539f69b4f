"""The code task with the real sandbox: isolation checked when it is built, batches scored in parallel, in order."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import pytest

from wgrpo.engine import InputError
from wgrpo.rl.sandbox import SandboxConfig, check_sandbox
from wgrpo.rl.tasks import get_task
from wgrpo.rl.tasks.code import usable_cores

ROWS = [
    {"prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]},
    {"prompt": "Write neg(x).", "tests": ["assert neg(1) == -1", "assert neg(-2) == 2", "assert neg(0) == 0"]},
]


def _isolation_problem() -> str | None:
    try:
        check_sandbox(SandboxConfig())
    except InputError as error:
        return str(error)
    return None


needs_isolation = pytest.mark.skipif(_isolation_problem() is not None, reason=f"{_isolation_problem()}")


def write_rows(tmp_path) -> str:
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return str(path)


def answer(code: str) -> str:
    """A well-formed completion after the prompt's `<think>`."""
    return f"I will write it.</think>\n<answer>\n```python\n{code}\n```\n</answer>"


def batch(task):
    add, neg = task.sample(0), task.sample(1)
    if "add" not in add.question:
        add, neg = neg, add
    cases = [  # (completion, problem, accuracy)
        (answer("def add(a, b):\n    return a + b"), add, 1.0),
        (answer("def add(a, b):\n    return 3"), add, 0.5),  # fails one test
        (answer("def add(a, b):\n    return a + b\nwhile True:\n    pass"), add, 0.0),  # times out
        (answer("import os\nos.abort()"), add, 0.0),  # crashes the interpreter
        (answer("def neg(x) return -x"), neg, 0.0),  # syntax error
        ("I give up.</think><answer></answer>", neg, 0.0),  # no code: nothing runs
        (answer("def neg(x):\n    return -x"), neg, 1.0),
        (answer("def neg(x):\n    return abs(x) * -1"), neg, 2 / 3),
    ]
    return [c for c, _, _ in cases], [p for _, p, _ in cases], [a for _, _, a in cases]


@needs_isolation
@pytest.mark.parametrize("workers", [0, 3])
def test_parallel_rewards_equal_the_serial_ones(tmp_path, workers):
    task = get_task("code", path=write_rows(tmp_path), eval_fraction=0.0, timeout_s=1.0, workers=workers)
    assert task.isolation in ("bwrap", "unshare")
    assert task.workers == min(workers or usable_cores(), usable_cores())
    completions, problems, accuracy = batch(task)
    parallel = task.rewards(completions, problems)
    serial = [task.reward(completion, problem) for completion, problem in zip(completions, problems)]
    assert parallel == serial
    assert [parts["accuracy"] for _, parts in parallel] == pytest.approx(accuracy)
    assert task.rewards([], []) == []
    with pytest.raises(ValueError, match="2 completions but 1 problems"):
        task.rewards(completions[:2], problems[:1])


@dataclass
class Result:
    passed: int
    total: int


class MeetingRunner:
    """Passes every test, but only once `parties` runs are in flight together (a serial scorer never gets
    there: the barrier times out); records the most runs ever in flight."""

    def __init__(self, parties: int):
        self.barrier = threading.Barrier(parties, timeout=20)
        self.lock = threading.Lock()
        self.active = self.most = 0

    def __call__(self, code, tests, timeout_s):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            self.barrier.wait()
        finally:
            with self.lock:
                self.active -= 1
        return Result(len(tests), len(tests))


@pytest.mark.skipif(usable_cores() < 2, reason="one usable core: the task scores one completion at a time")
def test_runs_at_most_workers_at_once(tmp_path):
    workers = min(3, usable_cores())
    runner = MeetingRunner(parties=workers)
    task = get_task("code", path=write_rows(tmp_path), eval_fraction=0.0, workers=workers, runner=runner)
    problem = task.sample(0)
    n = 3 * workers  # the barrier lets runs through `workers` at a time
    scores = task.rewards([answer("x = 1")] * n, [problem] * n)
    assert [parts["accuracy"] for _, parts in scores] == [1.0] * n
    assert runner.most == workers


def test_more_workers_than_usable_cores_are_clipped_to_them(tmp_path):
    task = get_task("code", path=write_rows(tmp_path), eval_fraction=0.0, workers=usable_cores() + 7,
                    runner=MeetingRunner(parties=1))
    assert task.workers == usable_cores()


def test_no_isolation_is_refused_when_the_task_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: neither bwrap nor unshare
    for options in ({}, {"sandbox": "auto"}, {"sandbox": "bwrap"}, {"sandbox": "unshare"}):
        # refused before the data is read (the file does not even exist)
        with pytest.raises(InputError, match=r"apt-get install bubblewrap.*--sandbox limits") as refused:
            get_task("code", path=str(tmp_path / "missing.jsonl"), **options)
        assert "not found on PATH" in str(refused.value) and "\n" not in str(refused.value)


def test_limits_is_accepted_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = write_rows(tmp_path)
    task = get_task("code", path=path, eval_fraction=0.0, sandbox="limits")
    assert task.isolation == "limits"
    problem = task.sample(0) if "add" in task.sample(0).question else task.sample(1)
    assert task.reward_parts(answer("def add(a, b):\n    return a + b"), problem)["accuracy"] == 1.0


def test_usable_cores_is_the_affinity():
    assert usable_cores() == len(os.sched_getaffinity(0))
