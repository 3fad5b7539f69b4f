"""Multi-digit arithmetic: `a op b` with op in + - * and both operands of `digits` digits (the difficulty).

Answers are exact integers (subtraction may be negative); scored with `rl.rewards.accuracy_reward`.
Pure Python + numpy; imports the engine only to raise its InputError.
"""

from __future__ import annotations

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.rl.rewards import accuracy_reward
from wgrpo.rl.tasks.base import GeneratedTask, Problem

__all__ = ["ArithmeticTask"]


class ArithmeticTask(GeneratedTask):
    """options: digits (difficulty, 1..30), ops (a string or list from '+', '-', '*'), instructions (say how to
    format the answer in the question; off, the question is just "Compute a + b."), template, seed, think_prefix,
    eval_fraction."""

    name = "arithmetic"

    def __init__(self, *, digits: int = 3, ops: str | list[str] = "+-*", seed: int = 0, think_prefix: bool = True,
                 eval_fraction: float = 0.1, template: str = "r1", instructions: bool = True):
        super().__init__(seed=seed, think_prefix=think_prefix, eval_fraction=eval_fraction, template=template)
        self.instructions = bool(instructions)
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 30:
            raise input_error(f"arithmetic: task option 'digits' must be an int in 1..30, got {digits!r}")
        ops = list(ops) if isinstance(ops, (str, list, tuple)) else [ops]
        if not ops or any(op not in ("+", "-", "*") for op in ops):
            raise input_error(f"arithmetic: task option 'ops' must be a non-empty selection of '+', '-', '*', "
                              f"got {ops!r}")
        self.digits, self.ops = digits, sorted(set(ops), key=ops.index)

    def _operand(self, rng: np.random.Generator) -> int:
        low = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        # digit by digit, so operands beyond int64 stay uniform
        while True:
            value = int("".join(str(d) for d in rng.integers(0, 10, size=self.digits)))
            if value >= low:
                return value

    def _generate(self, rng: np.random.Generator) -> tuple[str, str, str, dict]:
        a, b = self._operand(rng), self._operand(rng)
        op = self.ops[int(rng.integers(len(self.ops)))]
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        question = f"Compute {a} {op} {b}."
        if self.instructions:
            question += (" Show your reasoning in <think> </think> tags and give the final answer as a plain "
                         "integer in <answer> </answer> tags.")
        return f"{a}{op}{b}", question, str(value), {"a": a, "b": b, "op": op}

    def _accuracy(self, text: str, problem: Problem) -> float:
        return accuracy_reward(text, problem.answer)
