"""Reasoning traces for the warm-up: column-by-column arithmetic that is right only some of the time.

R1-Zero starts from a base model "good enough to sometimes generate a successful answer". A tiny model trained
here from scratch gets there through a short supervised warm-up on these traces: each shows the column sums of
an addition or subtraction (carries and borrows written out), or the partial products of a multiplication, in
`<think>`, then the result in `<answer>`. The traces carry a systematic bug: with probability `error_rate` a
trace forgets every carry (borrow), or for multiplication gets one partial product off by one, and the mistake
carries through to the answer. With an error rate above one half the bug is the warmed-up model's most likely
behaviour, so greedy decoding is wrong whenever a carry occurs, while sampling is sometimes right: reward alone
must teach it to carry. Pure Python; no engine import.
"""

from __future__ import annotations

import numpy as np

from wgrpo.rl.tasks.base import Problem


def _digits(n: int) -> list[int]:
    """Least significant first."""
    return [int(c) for c in reversed(str(n))]


def addition_trace(a: int, b: int, buggy: bool = False) -> tuple[str, int]:
    """Column addition, least significant column first; `buggy` forgets every carry."""
    da, db = _digits(a), _digits(b)
    steps, carry, out = [], 0, []
    for col in range(max(len(da), len(db))):
        x, y = (da[col] if col < len(da) else 0), (db[col] if col < len(db) else 0)
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total}")
        out.append(total % 10)
        carry = 0 if buggy else total // 10
    if carry:
        out.append(carry)
    result = int("".join(str(d) for d in reversed(out)))
    return ", ".join(steps), result


def subtraction_trace(a: int, b: int, buggy: bool = False) -> tuple[str, int]:
    """Column subtraction of the smaller from the larger, with borrows; a minus sign when a < b; `buggy`
    forgets every borrow."""
    sign = "-" if a < b else ""
    big, small = max(a, b), min(a, b)
    db, ds = _digits(big), _digits(small)
    steps, borrow, out = [], 0, []
    for col in range(len(db)):
        x, y = db[col], (ds[col] if col < len(ds) else 0)
        diff = x - y - borrow  # a negative difference means: add 10, borrow 1 from the next column
        steps.append(f"{x}-{y}-{borrow}={diff}")
        out.append(diff % 10)
        borrow = 1 if diff < 0 and not buggy else 0
    value = int("".join(str(d) for d in reversed(out)) or "0")
    return (("swap, " if sign else "") + ", ".join(steps)), (-value if sign else value)


def multiplication_trace(a: int, b: int, buggy: bool = False) -> tuple[str, int]:
    """a times each digit of b (shifted), then the sum; `buggy` makes the last partial product off by one."""
    partials, steps = [], []
    digits = _digits(b)
    for col, d in enumerate(digits):
        value = a * d * 10**col
        if buggy and col == len(digits) - 1:
            value += 10**col
        partials.append(value)
        steps.append(f"{a}*{d}0{'0' * (col - 1)}={value}" if col else f"{a}*{d}={value}")
    total = sum(partials)
    return ", ".join(steps) + f", sum={total}", total


TRACES = {"+": addition_trace, "-": subtraction_trace, "*": multiplication_trace}


def warmup_completion(problem: Problem, rng: np.random.Generator, error_rate: float) -> tuple[str, bool]:
    """A completion for an arithmetic problem (after the prompt's `<think>`), and whether it is right."""
    a, b, op = problem.meta["a"], problem.meta["b"], problem.meta["op"]
    steps, result = TRACES[op](a, b, buggy=bool(rng.random() < error_rate))
    body = f" {steps}</think> <answer>{result}</answer>"
    return (body if problem.think_in_prompt else f"<think>{body}"), str(result) == problem.answer


def warmup_records(task, count: int, error_rate: float, seed: int) -> list[dict]:
    """`count` prompt/completion records from the task's training split for `wgrpo sft`."""
    rng = np.random.default_rng([seed, 7])
    records = []
    for index in range(count):
        problem = task.sample(index, "train")
        completion, _ = warmup_completion(problem, rng, error_rate)
        records.append({"prompt": problem.prompt, "completion": completion})
    return records
