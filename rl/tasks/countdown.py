"""Countdown (TinyZero's task): combine the given numbers with + - * / into the target.

Problems are generated solvable: draw `num_numbers` numbers in [1, max_number], build a random binary
expression tree over a random permutation of them, each operation drawn among those keeping every
intermediate value a non-negative integer (exact division only) and, at the root, the value in
[min_target, max_target]; that value is the target. The generating
expression is kept as `Problem.answer` (`meta['solution']`) and always scores 1.0.

Scoring (`rl.rewards.countdown_reward`, through our own parser `rl.arith`, never `eval`) agrees with TinyZero's
and reasoning-gym's scorers, which check that the numbers written are the given ones (each used exactly once)
and then evaluate the text with Python's arithmetic: binary + - * /, parentheses, and signs as Python reads
them, on a number or a parenthesised group, stacked or not (`-2 - 15 + (52*41 + 84)/8`, `-(5 - 8) * 2`,
`4 - -3`, `+7`); the value must equal the target. Deliberate differences from TinyZero's `eval`:
- exact `Fraction` arithmetic: TinyZero takes any value within 1e-5 of the target, so a near miss such as
  `3 + 1/(97*98*99)` for target 3 scores 1 there and 0 here;
- no `**` or `//`: TinyZero's character filter lets them through to Python, but they are not the game's
  operations;
- plain integer literals: TinyZero finds numbers with `\\d+`, so `2.5` passes as the numbers 2 and 5 there;
- a trailing `= target` is accepted here (`(3 + 7) * 25 = 250`), where Python's arithmetic has no `=`.
Difficulty: `num_numbers` (2..6). Pure Python + numpy; imports the engine only to raise its InputError.
"""

from __future__ import annotations

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.rl.rewards import countdown_reward
from wgrpo.rl.tasks.base import GeneratedTask, Problem

__all__ = ["CountdownTask", "random_expression"]

_OPS = ("+", "-", "*", "/")


def _apply(op: str, a: int, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    return a // b if b and a % b == 0 else None


def random_expression(rng: np.random.Generator, numbers: list[int],
                      target_range: tuple[int, int] | None = None) -> tuple[str, int] | None:
    """A random expression using each of `numbers` once (in a random order) and its value, every step a
    non-negative integer; each operation is drawn among those that keep it so (and, at the root, among those
    landing in `target_range`). None when no operation fits."""
    order = [int(numbers[i]) for i in rng.permutation(len(numbers))]
    draws = iter(rng.random(2 * len(order)).tolist())  # numpy calls cost microseconds each: draw up front

    def build(items: list[int], root: bool) -> tuple[str, int, bool] | None:
        if len(items) == 1:
            return str(items[0]), items[0], True
        cut = 1 + int(next(draws) * (len(items) - 1))
        left = build(items[:cut], False)
        right = build(items[cut:], False) if left is not None else None
        if right is None:
            return None
        choices = [(op, v) for op in _OPS if (v := _apply(op, left[1], right[1])) is not None]
        if root and target_range is not None:
            choices = [(op, v) for op, v in choices if target_range[0] <= v <= target_range[1]]
        if not choices:
            return None
        op, value = choices[int(next(draws) * len(choices))]
        wrap = lambda part: part[0] if part[2] else f"({part[0]})"  # noqa: E731
        return f"{wrap(left)} {op} {wrap(right)}", value, False

    built = build(order, True)
    return None if built is None else (built[0], built[1])


class CountdownTask(GeneratedTask):
    """options: num_numbers (difficulty), max_number, min_target, max_target, seed, think_prefix, eval_fraction,
    template."""

    name = "countdown"

    def __init__(self, *, num_numbers: int = 3, max_number: int = 99, min_target: int = 1, max_target: int = 100,
                 seed: int = 0, think_prefix: bool = True, eval_fraction: float = 0.1, template: str = "r1"):
        super().__init__(seed=seed, think_prefix=think_prefix, eval_fraction=eval_fraction, template=template)
        values = {"num_numbers": num_numbers, "max_number": max_number, "min_target": min_target,
                  "max_target": max_target}
        for option, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise input_error(f"countdown: task option {option!r} must be an int, got {value!r}")
        if not 2 <= num_numbers <= 6:
            raise input_error(f"countdown: task option 'num_numbers' must be in 2..6, got {num_numbers!r}")
        if max_number < 1 or not 0 <= min_target <= max_target:
            raise input_error(f"countdown: task options need max_number >= 1 and 0 <= min_target <= max_target, "
                              f"got max_number={max_number}, min_target={min_target}, max_target={max_target}")
        self.num_numbers, self.max_number = int(num_numbers), int(max_number)
        self.min_target, self.max_target = int(min_target), int(max_target)

    def _generate(self, rng: np.random.Generator) -> tuple[str, str, str, dict]:
        for _ in range(10_000):
            numbers = [int(x) for x in rng.integers(1, self.max_number + 1, size=self.num_numbers)]
            built = random_expression(rng, numbers, (self.min_target, self.max_target))
            if built is not None and self.min_target <= built[1] <= self.max_target:
                solution, target = built[0], int(built[1])
                break
        else:
            raise input_error(f"countdown: no solvable problem found for max_number={self.max_number}, "
                             f"target range [{self.min_target}, {self.max_target}]")
        question = (f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
                    f"arithmetic operations (+, -, *, /) and each number must be used exactly once. Show your "
                    f"reasoning in <think> </think> tags and give the final equation in <answer> </answer> tags, "
                    f"for example <answer> (1 + 2) / 3 </answer>.")
        key = f"{sorted(numbers)}->{target}"
        return key, question, solution, {"numbers": numbers, "target": target, "solution": solution}

    def _accuracy(self, text: str, problem: Problem) -> float:
        return countdown_reward(text, problem.meta["numbers"], problem.meta["target"])
