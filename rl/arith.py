"""A safe arithmetic expression parser: tokenizer + recursive descent, exact `Fraction` evaluation.

Owns the only way model text is ever evaluated: numbers, `+ - * /`, parentheses and (optionally) signs.
There is no `eval`, no names, no calls, no exponentiation, so nothing in the text can run code or blow up:
the input length, the digits of each literal and the parenthesis depth are capped, and without `**` the
largest value a capped input can reach is a few thousand digits.

Grammar (`allow_unary` adds the bracketed alternative):

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := NUMBER | '(' expr ')' [| ('-' | '+') factor]

With signs this is Python's grammar for these operators: a sign binds tighter than `*` and `/`, and signs stack
(`--2` is 2, `2 - -3` is 5, `2*-3` is -6).

`evaluate(text)` returns an `Evaluation(value, numbers)`: the exact value and the multiset (a list, in order
of appearance) of the number literals used. Any failure (a bad character, a syntax error, division by zero,
a limit) raises `ExprError`, a `ValueError`; reward functions turn it into a reward of 0.

Pure Python; imports nothing from the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["ExprError", "Evaluation", "evaluate", "tokenize", "MAX_LENGTH", "MAX_DIGITS", "MAX_DEPTH"]

MAX_LENGTH = 1000  # characters of expression text
MAX_DIGITS = 40  # digits in one number literal
MAX_DEPTH = 64  # nesting of parentheses and signs

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?|\.\d+)|(?P<op>[-+*/()]))", re.ASCII)


class ExprError(ValueError):
    """The text is not a valid, evaluable expression under the parser's rules."""


@dataclass(frozen=True)
class Evaluation:
    value: Fraction
    numbers: list[Fraction]


def tokenize(text: str, *, integers_only: bool = False) -> list[str]:
    """Split `text` into number and operator tokens; whitespace is skipped, anything else is an error."""
    if not isinstance(text, str):
        raise ExprError(f"expression must be a str, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is {len(text)} characters, over the limit of {MAX_LENGTH}")
    tokens: list[str] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            bad = text[pos:].lstrip()[:1]
            raise ExprError(f"unexpected character {bad!r} at position {len(text) - len(text[pos:].lstrip())}")
        num = match.group("num")
        if num is not None:
            if integers_only and ("." in num or (len(num) > 1 and num[0] == "0")):
                raise ExprError(f"number {num!r} is not a plain integer")
            if sum(c.isdigit() for c in num) > MAX_DIGITS:
                raise ExprError(f"number literal has more than {MAX_DIGITS} digits")
            tokens.append(num)
        else:
            tokens.append(match.group("op"))
        pos = match.end()
    if not tokens:
        raise ExprError("empty expression")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], allow_unary: bool):
        self.tokens, self.pos, self.depth = tokens, 0, 0
        self.allow_unary = allow_unary
        self.numbers: list[Fraction] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExprError("unexpected end of expression")
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.factor()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise ExprError("division by zero")
            else:
                value = value / rhs
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if token == "(":
            self.enter()
            value = self.expr()
            if self.take() != ")":
                raise ExprError(f"expected ')' at token {self.pos}")
            self.depth -= 1
            return value
        if token in ("-", "+") and self.allow_unary:
            self.enter()
            value = self.factor()
            self.depth -= 1
            return -value if token == "-" else value
        if token[0].isdigit() or token[0] == ".":
            number = Fraction(token)
            self.numbers.append(number)
            return number
        raise ExprError(f"unexpected token {token!r} at token {self.pos - 1}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nests deeper than {MAX_DEPTH}")


def evaluate(text: str, *, allow_unary: bool = True, integers_only: bool = False) -> Evaluation:
    """Parse and evaluate `text` exactly.

    allow_unary: accept a sign in front of a factor, as Python does (`-3`, `-(2+1)`, `--3`, `+3`); off, only
      binary operations.
    integers_only: number literals must be plain integers (no decimal point, no leading zeros).
    """
    parser = _Parser(tokenize(text, integers_only=integers_only), allow_unary)
    value = parser.expr()
    if parser.peek() is not None:
        raise ExprError(f"unexpected token {parser.peek()!r} at token {parser.pos}")
    return Evaluation(value=value, numbers=parser.numbers)
