"""Rule rewards: hand-written cases, reward-hacking traps, and malformed text scoring 0 without raising."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from fractions import Fraction

import pytest

from wgrpo.rl.rewards import (accuracy_reward, code_reward, combine, countdown_reward, extract_answer, extract_code,
                        format_reward, parse_number)


def wrap(answer: str, think: str = "some reasoning") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


# ----------------------------------------------------------------------------------------------- format

@pytest.mark.parametrize("text", [
    "<think>a</think><answer>b</answer>",
    "  <think>\nstep 1\nstep 2\n</think>\n\n<answer> 42 </answer>\n  ",
])
def test_format_good(text):
    assert format_reward(text) == 1.0


@pytest.mark.parametrize("text", [
    "",
    "<think>a</think>",  # no answer
    "<answer>b</answer>",  # no think
    "<think></think><answer>b</answer>",  # empty think
    "<think>a</think><answer> </answer>",  # empty answer
    "<answer>b</answer><think>a</think>",  # wrong order
    "<think>a <answer>b</answer></think>",  # answer inside think
    "<think>a</think><answer>b</answer><answer>b</answer>",  # answer repeated
    "<think>a</think><think>a</think><answer>b</answer>",  # think repeated
    "<think>a</think><answer>b</answer> trailing text",
    "preamble <think>a</think><answer>b</answer>",
    "<think>a</think> between <answer>b</answer>",
    "<think>a</think><answer>b",  # unclosed
    "<think>a<answer>b</answer>",
    "<THINK>a</THINK><ANSWER>b</ANSWER>",
])
def test_format_bad(text):
    assert format_reward(text) == 0.0


def test_format_think_in_prompt():
    completion = "reasoning here</think>\n<answer>7</answer>"
    assert format_reward(completion, think_in_prompt=True) == 1.0
    assert format_reward(completion) == 0.0  # no opener without the prompt's
    # a completion that opens <think> again has two openers once the prompt's is counted
    assert format_reward("<think>" + completion, think_in_prompt=True) == 0.0
    assert format_reward("</think><answer>7</answer>", think_in_prompt=True) == 0.0  # empty reasoning


def test_non_str_scores_zero():
    for reward in (format_reward, extract_answer, extract_code):
        assert not reward(None)  # type: ignore[arg-type]
    assert accuracy_reward(None, "1") == 0.0  # type: ignore[arg-type]
    assert countdown_reward(None, [1, 2], 3) == 0.0  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- extraction

def test_extract_answer():
    assert extract_answer(wrap(" 12 ")) == "12"
    assert extract_answer("<think>x</think> so \\boxed{3/4}.") == "3/4"
    assert extract_answer(wrap("\\boxed{\\frac{1}{2}}")) == "\\frac{1}{2}"
    assert extract_answer("<think>x</think><answer></answer>") is None  # the reward-hacking trap
    assert extract_answer(wrap("1") + "<answer>2</answer>") is None  # hedging
    assert extract_answer("<think><answer>5</answer> hmm </think>") is None  # inside the reasoning
    assert extract_answer("</answer>5<answer>") is None
    assert extract_answer("\\boxed{1} or \\boxed{2}") is None
    assert extract_answer("\\boxed{2} so \\boxed{2}") == "2"
    assert extract_answer("\\boxed{unbalanced") is None
    assert extract_answer("\\boxed{}") is None
    assert extract_answer("no answer at all 42") is None
    assert extract_answer("<think>\\boxed{1}</think> then nothing") is None  # boxed only inside reasoning


# ----------------------------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("text, value", [
    ("42", 42), ("-7", -7), ("+3", 3), ("3.25", Fraction(13, 4)), (".5", Fraction(1, 2)), ("5.", 5),
    ("1,234", 1234), ("1,234,567.5", Fraction(2469135, 2)), ("42.", 42), ("$42$", 42), ("\\$42", 42),
    ("$1,000", 1000), ("\\boxed{42}", 42), ("1/2", Fraction(1, 2)), ("-3/4", Fraction(-3, 4)),
    ("\\frac{1}{2}", Fraction(1, 2)), ("\\dfrac{3}{4}", Fraction(3, 4)), ("-\\tfrac{1}{3}", Fraction(-1, 3)),
    ("\\frac12", Fraction(1, 2)), ("$\\frac{1}{2}$", Fraction(1, 2)), ("\\(7\\)", 7), ("50%", 50), ("\u22125", -5),
    ("1e3", 1000), ("2.5E-2", Fraction(1, 40)), ("12 \\text{}", 12), (7, 7), (0.5, Fraction(1, 2)),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", [
    "", "abc", "1,2", "12,34", "1 2", "5 apples", "1e999", "1e-999", "inf", "nan", "1/0", "\\frac{1}{0}",
    "9" * 500, "x=3", "3+4", float("inf"), float("nan"), True, None, "１２",
])
def test_parse_number_rejects(text):
    assert parse_number(text) is None


# ----------------------------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("answer, gold", [
    ("72", "72"), ("72.0", 72), ("1,000", "1000"), ("$18", "18"), ("18.", "18"), ("0.5", "1/2"),
    ("\\frac{1}{2}", "0.5"), ("\\boxed{12}", 12), ("0.3333333", "1/3"), ("-4", "-4"), ("7", "$7$"),
])
def test_accuracy_correct(answer, gold):
    assert accuracy_reward(wrap(answer), gold) == 1.0


@pytest.mark.parametrize("completion, gold", [
    (wrap(""), "0"),  # empty answer is never correct, not even for gold 0
    ("<think>x</think><answer></answer>", "5"),
    (wrap("5") + "<answer>6</answer>", "5"),  # two answers
    ("<answer>5</answer><answer>5</answer>", "5"),  # repeated identical answer: still not one answer
    ("<think><answer>5</answer></think>", "5"),  # answer inside think
    (wrap("72.0000001"), "72"),  # integers compare exactly
    (wrap("100000000000000000001"), "100000000000000000000"),
    (wrap("0.333"), "1/3"),  # outside 1e-6 relative
    (wrap("1e999"), "1000"),  # not a number we accept (no inf, no 10**999)
    (wrap("inf"), "1000"),
    (wrap("5 apples"), "5"),
    (wrap("the answer is 5"), "5"),
    (wrap("1,2"), "12"),
    (wrap("-5"), "5"),
    ("5", "5"),  # no tags at all
])
def test_accuracy_wrong(completion, gold):
    assert accuracy_reward(completion, gold) == 0.0


def test_accuracy_text_fallback_and_bad_gold():
    assert accuracy_reward(wrap("x + 1"), "x+1") == 1.0
    assert accuracy_reward(wrap("x + 2"), "x+1") == 0.0
    with pytest.raises(ValueError, match="gold answer"):
        accuracy_reward(wrap("1"), "")


def test_accuracy_huge_numbers_are_fast_and_safe():
    assert accuracy_reward(wrap("9" * 100000), "9") == 0.0  # over the size limit: not a number
    assert accuracy_reward(wrap("1e99999999"), "1") == 0.0  # no 10**99999999 is ever built
    assert accuracy_reward(wrap("1" + "0" * 150), 10 ** 150) == 1.0
    assert accuracy_reward(wrap(" " * 100000 + "x"), "x+1") == 0.0  # long text: no quadratic regex work


# ----------------------------------------------------------------------------------------------- countdown

@pytest.mark.parametrize("answer", [
    "(25 - 7) * 3 - 8", "3 * (25 - 7) - 8", " ( 25-7 )*3-8 ", "(25 - 7) * 3 - 8 = 46", "\\boxed{(25 - 7) * 3 - 8}",
    "-8 + (25 - 7) * 3",  # a sign on a number
])
def test_countdown_correct(answer):
    assert countdown_reward(wrap(answer), [3, 7, 25, 8], 46) == 1.0


@pytest.mark.parametrize("answer", [
    "",  # empty
    "(25 - 7) * 3",  # 8 not used
    "(25 - 7) * 3 - 8 + 8 - 8",  # 8 reused
    "(25 - 7) * 3 - 8 + 0",  # a number not in the list
    "(25 - 7) * 3 - 4 - 4",  # 4 not in the list, even though 4 + 4 = 8
    "(25 - 7) * 3 - 8 = 47",  # wrong right-hand side
    "(25 - 7) * 3 - 8 = 46 = 46",
    "(25 - 7) * 3 + 8",  # wrong value
    "-8 + (25 - 7) * -3",  # a sign that changes the value
    "-(25 - 7) * 3 - 8",
    "(25 - 7) * 3.0 - 8",  # decimals not allowed
    "(25 - 7) * 03 - 8",
    "(25 - 7) ** 3 - 8",
    "(25 - 7) x 3 - 8",
    "25 / (7 - 7) * 3 - 8",  # division by zero (and 7 reused)
    "__import__('os').system('true')",
    "46",
])
def test_countdown_wrong(answer):
    assert countdown_reward(wrap(answer), [3, 7, 25, 8], 46) == 0.0


def test_countdown_exact_fractions_and_duplicates():
    assert countdown_reward(wrap("(1 + 1 / 3) * 3"), [1, 1, 3, 3], 4) == 1.0  # needs exact 4/3 * 3
    assert countdown_reward(wrap("(1 + 1 / 3) * 3"), [1, 3, 3], 4) == 0.0  # 1 reused
    assert countdown_reward(wrap("8 / (3 - 8 / 3)"), [8, 3, 8, 3], 24) == 1.0  # needs exact 1/3
    assert countdown_reward(wrap("6 / (3 - 3)"), [6, 3, 3], 0) == 0.0
    assert countdown_reward(wrap("2 + 2"), [2, 2], 4) == 1.0
    assert countdown_reward(wrap("2 + 2"), [2], 4) == 0.0
    assert countdown_reward(wrap("9" * 30 + " * " + "9" * 30), [10 ** 30 - 1] * 2, (10 ** 30 - 1) ** 2) == 1.0
    assert countdown_reward(wrap("1 +" * 2000 + "1"), [1], 1) == 0.0  # over the length limit


def tinyzero_score(equation: str, numbers: list[int], target: int) -> float:
    """TinyZero's countdown scorer (verl/utils/reward_score/countdown.py, `validate_equation` and
    `evaluate_equation`) on an extracted equation: the numbers found by `\\d+` are the given ones, only digits,
    `+ - * / ( ) .` and whitespace appear, and Python's value is within 1e-5 of the target. It is the reference
    for "Python's arithmetic", and evaluates nothing but the fixed strings of this file."""
    if sorted(int(n) for n in re.findall(r"\d+", equation)) != sorted(numbers):
        return 0.0
    if not re.match(r"^[\d+\-*/().\s]+$", equation):
        return 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "(25 - 7)(3)": Python warns, then fails
            value = eval(equation, {"__builtins__": None}, {})  # noqa: S307 - a fixed test string
    except Exception:  # noqa: BLE001 - TinyZero scores any failure 0
        return 0.0
    return 1.0 if abs(value - target) < 1e-5 else 0.0


@pytest.mark.parametrize("equation, numbers, target, score", [
    ("-2 - 15 + (52*41 + 84)/8", [52, 84, 2, 15, 41, 8], 260, 1.0),  # reasoning-gym style: signs in front
    ("-8 + (25 - 7) * 3", [3, 7, 25, 8], 46, 1.0),
    ("- 8 + (25 - 7) * 3", [3, 7, 25, 8], 46, 1.0),
    ("-(8 - (25 - 7) * 3)", [3, 7, 25, 8], 46, 1.0),  # a sign on a group
    ("3 * -(7 - 25) - 8", [3, 7, 25, 8], 46, 1.0),
    ("-8 - (25 - 7) * -3", [3, 7, 25, 8], 46, 1.0),
    ("(25 - 7) * 3 - --8", [3, 7, 25, 8], 46, 1.0),  # stacked signs
    ("+(25 - 7) * 3 - 8", [3, 7, 25, 8], 46, 1.0),
    ("--8 + (25 - 7) * 3", [3, 7, 25, 8], 46, 0.0),  # --8 is 8
    ("-8 + (25 - 7) * -3", [3, 7, 25, 8], 46, 0.0),
    ("-(25 - 7) * 3 - 8", [3, 7, 25, 8], 46, 0.0),
    ("(25 - 7) * 3 - 08", [3, 7, 25, 8], 46, 0.0),  # Python refuses a leading zero
    ("(25 - 7)(3) - 8", [3, 7, 25, 8], 46, 0.0),  # no implicit product
    ("(25 - 7) * 3 - 8 -", [3, 7, 25, 8], 46, 0.0),
    ("-8 + (25 - 7) * 3", [3, 7, 25], 46, 0.0),  # 8 not given
    ("8 / (3 - 8 / 3)", [8, 3, 8, 3], 24, 1.0),
])
def test_countdown_agrees_with_tinyzero(equation, numbers, target, score):
    assert tinyzero_score(equation, numbers, target) == score
    assert countdown_reward(wrap(equation), numbers, target) == score


@pytest.mark.parametrize("equation, numbers, target, ours, theirs", [
    ("3 + 1/(97*98*99)", [3, 1, 97, 98, 99], 3, 0.0, 1.0),  # exact here, within 1e-5 there
    ("2 ** 3", [2, 3], 8, 0.0, 1.0),  # not the game's operations
    ("7 // 2 * 3", [7, 2, 3], 9, 0.0, 1.0),
    ("2.5 * 4", [2, 5, 4], 10, 0.0, 1.0),  # integer literals only; \d+ reads 2.5 as 2 and 5
    ("(25 - 7) * 3 - 8 = 46", [3, 7, 25, 8], 46, 1.0, 0.0),  # a trailing '= target' is accepted here
])
def test_countdown_deliberate_differences_from_tinyzero(equation, numbers, target, ours, theirs):
    """The differences rl/tasks/countdown.py documents."""
    assert tinyzero_score(equation, numbers, target) == theirs
    assert countdown_reward(wrap(equation), numbers, target) == ours


def test_countdown_answer_in_wrong_place():
    assert countdown_reward("<think><answer>(25 - 7) * 3 - 8</answer></think>", [3, 7, 25, 8], 46) == 0.0
    assert countdown_reward(wrap("(25 - 7) * 3 - 8") * 2, [3, 7, 25, 8], 46) == 0.0


# ----------------------------------------------------------------------------------------------- code

@dataclass
class FakeResult:
    passed: int
    total: int


class FakeRunner:
    """Records calls; 'passes' a test iff the test's text appears in a `# pass:` comment of the code."""

    def __init__(self):
        self.calls = []

    def __call__(self, code, tests, timeout_s=5.0):
        self.calls.append((code, list(tests), timeout_s))
        return FakeResult(passed=sum(f"# pass: {t}" in code for t in tests), total=len(tests))


TESTS = ["assert f(1) == 2", "assert f(2) == 3", "assert f(0) == 1", "assert f(-1) == 0"]


def test_code_reward_fraction_and_extraction():
    runner = FakeRunner()
    code = "def f(x):\n    return x + 1\n# pass: assert f(1) == 2\n# pass: assert f(0) == 1\n"
    assert code_reward(wrap(code), TESTS, runner=runner) == 0.5
    assert runner.calls[-1][0] == code and runner.calls[-1][1] == TESTS
    fenced = f"<think>x</think>\n<answer>\n```python\n{code}```\n</answer>"
    assert code_reward(fenced, TESTS, runner=runner, timeout_s=2.0) == 0.5
    assert runner.calls[-1][0] == code and runner.calls[-1][2] == 2.0
    bare = f"<think>x</think> Here it is:\n```python\n{code}```\n"
    assert code_reward(bare, TESTS, runner=runner) == 0.5
    assert code_reward(bare, TESTS, setup="import math", runner=runner) == 0.5
    assert runner.calls[-1][0] == "import math\n" + code


def test_code_reward_no_code_runs_nothing():
    runner = FakeRunner()
    for text in ("", wrap(""), "<think>```python\nx=1\n```</think>", "just words", wrap("a") + wrap("b")):
        assert code_reward(text, TESTS, runner=runner) == 0.0
    assert runner.calls == []


def test_code_reward_checks_inputs_and_sandbox():
    with pytest.raises(ValueError, match="tests"):
        code_reward(wrap("x = 1"), [], runner=FakeRunner())
    with pytest.raises(ValueError, match="sandbox"):
        code_reward(wrap("x = 1"), TESTS, runner=lambda code, tests, timeout_s: FakeResult(5, 4))


def test_code_reward_imports_sandbox_lazily(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("wgrpo.rl.sandbox")
    fake.run_tests = lambda code, tests, timeout_s=5.0: FakeResult(len(tests), len(tests))
    monkeypatch.setitem(sys.modules, "wgrpo.rl.sandbox", fake)
    assert code_reward(wrap("x = 1"), TESTS) == 1.0


# ----------------------------------------------------------------------------------------------- combine

def test_combine():
    parts = {"format": 1.0, "accuracy": 0.5}
    assert combine(parts, {"accuracy": 1.0, "format": 0.1}) == pytest.approx(0.6)
    assert combine(parts, {"accuracy": 2.0}) == 1.0  # unweighted parts count 0
    assert combine(parts, {}) == 0.0
    with pytest.raises(ValueError, match="'length'"):
        combine(parts, {"accuracy": 1.0, "length": 0.5})
    with pytest.raises(ValueError, match="'format'"):
        combine(parts, {"format": float("nan")})
