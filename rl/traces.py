"""Reasoning traces for the warm-up: column-by-column arithmetic that is right only some of the time.

R1-Zero starts from a base model "good enough to sometimes generate a successful answer". A tiny model trained
here from scratch gets there through a short supervised warm-up on these traces: each shows the column sums of
an addition or subtraction, or the partial products of a multiplication, in `<think>`, then the result in
`<answer>`. With probability `error_rate` one step is off by one and the mistake carries through to the
answer, so the warmed-up model knows the procedure and the format but is often wrong: reward can then teach it
to be right. Pure Python; no engine import.
"""

from __future__ import annotations

import numpy as np

from rl.tasks.base import Problem


def _digits(n: int) -> list[int]:
    """Least significant first."""
    return [int(c) for c in reversed(str(n))]


def addition_trace(a: int, b: int, slip: int | None = None, delta: int = 1) -> tuple[str, int]:
    """Column addition; `slip` is the column whose sum is off by `delta` (None: all right)."""
    da, db = _digits(a), _digits(b)
    steps, carry, out = [], 0, []
    for col in range(max(len(da), len(db))):
        x, y = (da[col] if col < len(da) else 0), (db[col] if col < len(db) else 0)
        total = x + y + carry
        if col == slip:
            total = max(0, total + delta)
        steps.append(f"{x}+{y}+{carry}={total}")
        out.append(total % 10)
        carry = total // 10
    if carry:
        out.append(carry)
    result = int("".join(str(d) for d in reversed(out)))
    return ", ".join(steps), result


def subtraction_trace(a: int, b: int, slip: int | None = None, delta: int = 1) -> tuple[str, int]:
    """Column subtraction of the smaller from the larger, with borrows; a minus sign when a < b."""
    sign = "-" if a < b else ""
    big, small = max(a, b), min(a, b)
    db, ds = _digits(big), _digits(small)
    steps, borrow, out = [], 0, []
    for col in range(len(db)):
        x, y = db[col], (ds[col] if col < len(ds) else 0)
        diff = x - y - borrow  # a negative difference means: add 10, borrow 1 from the next column
        if col == slip:
            diff = min(9, max(-10, diff + delta))
        steps.append(f"{x}-{y}-{borrow}={diff}")
        borrow = 1 if diff < 0 else 0
        out.append(diff + 10 * borrow)
    value = int("".join(str(d) for d in reversed(out)) or "0")
    return (("swap, " if sign else "") + ", ".join(steps)), (-value if sign else value)


def multiplication_trace(a: int, b: int, slip: int | None = None, delta: int = 1) -> tuple[str, int]:
    """a times each digit of b (shifted), then the sum; `slip` makes one partial product off by `delta`."""
    partials, steps = [], []
    for col, d in enumerate(_digits(b)):
        value = a * d * 10**col
        if col == slip:
            value = max(0, value + delta * 10**col)
        partials.append(value)
        steps.append(f"{a}*{d}0{'0' * (col - 1)}={value}" if col else f"{a}*{d}={value}")
    total = sum(partials)
    return ", ".join(steps) + f", sum={total}", total


TRACES = {"+": addition_trace, "-": subtraction_trace, "*": multiplication_trace}


def warmup_completion(problem: Problem, rng: np.random.Generator, error_rate: float) -> tuple[str, bool]:
    """A completion for an arithmetic problem (after the prompt's `<think>`), and whether it is right."""
    a, b, op = problem.meta["a"], problem.meta["b"], problem.meta["op"]
    columns = len(str(max(abs(a), abs(b)))) if op != "*" else len(str(b))
    slip = int(rng.integers(columns)) if rng.random() < error_rate else None
    delta = int(rng.choice([-1, 1]))
    steps, result = TRACES[op](a, b, slip, delta)
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
