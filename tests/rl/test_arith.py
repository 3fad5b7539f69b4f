"""The safe arithmetic parser: exact values, numbers used, rejected syntax and limits."""

from __future__ import annotations

from fractions import Fraction

import pytest

from wgrpo.rl.arith import MAX_DEPTH, MAX_DIGITS, MAX_LENGTH, ExprError, evaluate, tokenize


@pytest.mark.parametrize("text, value, numbers", [
    ("1 + 2 * 3", 7, [1, 2, 3]),
    ("(1 + 2) * 3", 9, [1, 2, 3]),
    ("10 - 4 - 3", 3, [10, 4, 3]),  # left associative
    ("8 / 4 / 2", 1, [8, 4, 2]),
    ("1 / 3 + 1 / 6", Fraction(1, 2), [1, 3, 1, 6]),
    ("  ((7))  ", 7, [7]),
    ("2.5 * 4", 10, [Fraction(5, 2), 4]),
    (".5 + .5", 1, [Fraction(1, 2), Fraction(1, 2)]),
    ("-3 + 5", 2, [3, 5]),
    ("-(2 - 7)", 5, [2, 7]),
    ("4 * -2", -8, [4, 2]),
    # signs as Python reads them: tighter than * and /, stacked, on a number or a group; unary + too
    ("-2 - 15 + (52*41 + 84)/8", 260, [2, 15, 52, 41, 84, 8]),
    ("--2", 2, [2]),
    ("2 - -3", 5, [2, 3]),
    ("-(-(4))", 4, [4]),
    ("- 6 / -4", Fraction(3, 2), [6, 4]),
    ("+3", 3, [3]),
    ("1 + + 2", 3, [1, 2]),
    ("-+-1", 1, [1]),
])
def test_evaluates_exactly(text, value, numbers):
    result = evaluate(text)
    assert result.value == value and isinstance(result.value, Fraction)
    assert result.numbers == numbers


def test_float_rounding_does_not_leak():
    assert evaluate("0.1 + 0.2").value == Fraction(3, 10)
    assert evaluate("1 / 3 * 3").value == 1


@pytest.mark.parametrize("text", [
    "", "   ", "1 +", "(1 + 2", "1 + 2)", "1 2", "2 ** 3", "2 ^ 3", "x + 1", "__import__('os')", "abs(1)",
    "1e5", "3 % 2", "1 = 1", "()", "1_000", "１ + 2", "2 // 3", "-", "3 -", "(-)", "2 * * 3",
])
def test_rejects(text):
    with pytest.raises(ExprError):
        evaluate(text)


def test_division_by_zero():
    with pytest.raises(ExprError, match="division by zero"):
        evaluate("1 / (3 - 3)")


def test_unary_minus_can_be_disallowed():
    with pytest.raises(ExprError):
        evaluate("-3 + 5", allow_unary=False)
    for text in ("4 * (-2)", "+3", "1 + + 2", "2 - -3"):
        with pytest.raises(ExprError):
            evaluate(text, allow_unary=False)
    assert evaluate("5 - 3", allow_unary=False).value == 2


def test_integers_only():
    assert evaluate("12 + 3", integers_only=True).value == 15
    for text in ("2.5 + 1", "05 + 1", ".5"):
        with pytest.raises(ExprError, match="plain integer"):
            evaluate(text, integers_only=True)


def test_limits():
    with pytest.raises(ExprError, match="limit"):
        evaluate("1+" * MAX_LENGTH + "1")
    with pytest.raises(ExprError, match="digits"):
        evaluate("9" * (MAX_DIGITS + 1))
    assert evaluate("9" * MAX_DIGITS).value == 10 ** MAX_DIGITS - 1
    with pytest.raises(ExprError, match="deeper"):
        evaluate("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(ExprError, match="deeper"):
        evaluate("-" * (MAX_DEPTH + 1) + "1")
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH).value == 1


def test_biggest_products_stay_fast():
    text = "*".join(["9" * MAX_DIGITS] * 24)  # ~ 1000 characters: a 960-digit number, computed instantly
    assert len(text) <= MAX_LENGTH
    assert evaluate(text).value == (10 ** MAX_DIGITS - 1) ** 24


def test_non_str():
    with pytest.raises(ExprError):
        evaluate(None)  # type: ignore[arg-type]


def test_tokenize():
    assert tokenize(" (12+3.5)/ 7 ") == ["(", "12", "+", "3.5", ")", "/", "7"]
