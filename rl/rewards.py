"""Rule rewards for GRPO: pure functions of the completion text and the problem's data.

Owns: answer extraction, number parsing, `format_reward`, `accuracy_reward`, `countdown_reward`,
`code_reward`, and `combine`. Must not import `wgpu` or the engine; model text is never `eval`-ed (arithmetic
goes through `rl.arith`, code through the sandbox). Every reward is a float in [0, 1] and never raises on model
text: malformed text scores 0. Errors in *our* inputs (weights, test lists, the sandbox itself) do raise.

Answer extraction (`extract_answer`), shared by the accuracy-type rewards:
- exactly one `<answer>` and one `</answer>`, opener first, and no `</think>` after the opener (an answer
  inside the reasoning is not final); a second answer block (hedging) gives no answer at all;
- without answer tags, the content of `\\boxed{...}` (all boxed contents must agree);
- an empty (all-whitespace) answer is no answer: `<answer></answer>` never matches anything.

The completion is the text the model generated. When the prompt ends with `<think>` (the default of every
task, as TinyZero does), pass `think_in_prompt=True` to `format_reward`: the completion is scored as
`"<think>" + completion`. Completions must be decoded with the reasoning tags kept (they are special tokens
of our tokenizer) and with the end-of-text token / stop string removed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction
from typing import Callable, Mapping, Sequence

from wgrpo.rl.arith import ExprError, evaluate

__all__ = ["extract_answer", "extract_boxed", "extract_code", "parse_number", "numbers_equal",
           "format_reward", "accuracy_reward", "countdown_reward", "code_reward", "combine", "REL_TOL"]

REL_TOL = 1e-6
_MAX_NUMBER_TEXT = 200  # characters of a candidate number; longer text is not a number we compare
_MAX_EXPONENT = 100  # |e| allowed in scientific notation (1e999 is not a number we accept)

_FORMAT = re.compile(r"\s*<think>(?P<think>.*)</think>\s*<answer>(?P<answer>.*)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


# ----------------------------------------------------------------------------------------------- format

def format_reward(completion: str, *, think_in_prompt: bool = False) -> float:
    """1.0 iff the text is `<think>R</think> <answer>A</answer>` with R and A not blank, exactly one of each tag,
    and only whitespace before `<think>`, between the blocks and after `</answer>`; else 0.0.

    think_in_prompt: the prompt ended with `<think>`, so the completion is scored as `"<think>" + completion`.
    """
    if not isinstance(completion, str):
        return 0.0
    text = "<think>" + completion if think_in_prompt else completion
    if any(text.count(tag) != 1 for tag in _TAGS):
        return 0.0
    match = _FORMAT.fullmatch(text)
    if match is None or not match.group("think").strip() or not match.group("answer").strip():
        return 0.0
    return 1.0


# ----------------------------------------------------------------------------------------------- extraction

def extract_boxed(text: str) -> str | None:
    """The content of `\\boxed{...}` (braces balanced); None if there is none, if one is unbalanced, or if
    several disagree."""
    contents = []
    start = 0
    while True:
        i = text.find("\\boxed{", start)
        if i < 0:
            break
        j = i + len("\\boxed{")
        depth = 1
        k = j
        while k < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            k += 1
        if depth:
            return None
        contents.append(text[j:k - 1].strip())
        start = k
    if not contents or len(set(contents)) != 1 or not contents[0]:
        return None
    return contents[0]


def extract_answer(completion: str) -> str | None:
    """The final answer text (stripped, `\\boxed{}` unwrapped) or None; see the module docstring."""
    if not isinstance(completion, str):
        return None
    opens, closes = completion.count("<answer>"), completion.count("</answer>")
    if opens or closes:
        if opens != 1 or closes != 1:
            return None
        i, j = completion.find("<answer>"), completion.find("</answer>")
        if j < i or "</think>" in completion[i:]:
            return None
        answer = completion[i + len("<answer>"):j].strip()
        if "\\boxed{" in answer:
            answer = extract_boxed(answer) or ""
    else:
        after = completion.rsplit("</think>", 1)[-1] if "</think>" in completion else completion
        answer = extract_boxed(after) or ""
    return answer or None


_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(?P<code>.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str) -> str | None:
    """Code from the answer tag (unwrapping a fenced block inside it), else the last ```python fenced block
    after the reasoning; None if there is no non-blank code."""
    if not isinstance(completion, str):
        return None
    answer = None
    if "<answer>" in completion or "</answer>" in completion:
        opens, closes = completion.count("<answer>"), completion.count("</answer>")
        if opens != 1 or closes != 1:
            return None
        i, j = completion.find("<answer>"), completion.find("</answer>")
        if j < i or "</think>" in completion[i:]:
            return None
        answer = completion[i + len("<answer>"):j]
        fences = _FENCE.findall(answer)
        code = fences[-1] if fences else answer
    else:
        after = completion.rsplit("</think>", 1)[-1] if "</think>" in completion else completion
        fences = _FENCE.findall(after)
        if not fences:
            return None
        code = fences[-1]
    return code if code.strip() else None


# ----------------------------------------------------------------------------------------------- numbers

_INT = r"\d+"
_THOUSANDS = r"\d{1,3}(?:,\d{3})+"
_DECIMAL = rf"(?:{_THOUSANDS}|{_INT})(?:\.\d*)?|\.\d+"
_PLAIN = re.compile(rf"(?P<sign>[-+]?)(?P<mant>{_DECIMAL})(?:[eE](?P<exp>[-+]?\d+))?", re.ASCII)
_RATIO = re.compile(r"(?P<sign>[-+]?)(?P<num>\d+)\s*/\s*(?P<den>\d+)", re.ASCII)
_FRAC = re.compile(r"(?P<sign>[-+]?)\\[dt]?frac\s*\{\s*(?P<num>[-+]?\d+(?:\.\d+)?)\s*\}\s*"
                   r"\{\s*(?P<den>[-+]?\d+(?:\.\d+)?)\s*\}", re.ASCII)
_FRAC_SHORT = re.compile(r"(?P<sign>[-+]?)\\[dt]?frac(?P<num>\d)(?P<den>\d)", re.ASCII)


def _unwrap(text: str) -> str:
    """Strip the decorations around a number: math delimiters, \\boxed, \\text{...}, currency, %, a period."""
    text = text.strip().replace("\u2212", "-")  # a typographic minus sign
    for _ in range(4):
        before = text
        if text.startswith("$$") and text.endswith("$$") and len(text) > 4:
            text = text[2:-2].strip()
        elif text.startswith("$") and text.endswith("$") and len(text) > 2:
            text = text[1:-1].strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(left) and text.endswith(right):
                text = text[2:-2].strip()
        if text.startswith("\\boxed{") and text.endswith("}"):
            text = text[len("\\boxed{"):-1].strip()
        text = re.sub(r"\\(?:text|mathrm)\{\s*([^{}]*?)\s*\}", r"\1", text).strip()
        text = text.rstrip(".").strip()
        text = re.sub(r"^(?:\\\$|\$)\s*", "", text)  # currency: $18, \$18
        text = re.sub(r"\s*\\?%$", "", text)  # 18% -> 18
        text = text.replace("\\!", "").replace("\\,", "")
        if text == before:
            break
    return text


def parse_number(text) -> Fraction | None:
    """Parse a number exactly, or None. Accepts ints, decimals, thousands commas (1,234), a/b, \\frac{a}{b}
    (also \\dfrac, \\tfrac, \\frac12), $...$ and \\boxed{} wrappers, currency, % and a trailing period, and
    scientific notation with |exponent| <= 100. Never raises; non-finite or oversized input is None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(text) if math.isfinite(text) else None
    if isinstance(text, Fraction):
        return text
    if not isinstance(text, str) or len(text) > _MAX_NUMBER_TEXT:
        return None
    text = _unwrap(text)
    if not text or len(text) > _MAX_NUMBER_TEXT:
        return None
    try:
        match = _PLAIN.fullmatch(text)
        if match:
            exp = int(match.group("exp") or 0)
            if abs(exp) > _MAX_EXPONENT:
                return None
            value = Fraction(match.group("mant").replace(",", "")) * Fraction(10) ** exp
            return -value if match.group("sign") == "-" else value
        match = _RATIO.fullmatch(text) or _FRAC.fullmatch(text) or _FRAC_SHORT.fullmatch(text)
        if match:
            den = Fraction(match.group("den"))
            if den == 0:
                return None
            value = Fraction(match.group("num")) / den
            return -value if match.group("sign") == "-" else value
    except (ValueError, ZeroDivisionError, OverflowError):  # e.g. Python's int digit limit
        return None
    return None


def numbers_equal(predicted: Fraction, gold: Fraction, *, rel_tol: float = REL_TOL) -> bool:
    """Exact when the gold value is an integer; otherwise |p - g| <= rel_tol * max(|p|, |g|)."""
    if gold.denominator == 1:
        return predicted == gold
    return abs(predicted - gold) <= Fraction(rel_tol) * max(abs(predicted), abs(gold))


def _normalize_text(text: str) -> str:
    return re.sub(r"\s+", "", _unwrap(text)).lower()


# ----------------------------------------------------------------------------------------------- rewards

def accuracy_reward(completion: str, answer, *, rel_tol: float = REL_TOL) -> float:
    """1.0 iff the extracted answer equals `answer` (a number or its text): numerically when the gold parses
    as a number (see `parse_number`, `numbers_equal`), else as normalized text (whitespace, `$`, `\\boxed`
    and a trailing period ignored). An empty or missing answer is 0.0."""
    predicted = extract_answer(completion)
    if predicted is None:
        return 0.0
    gold = parse_number(answer)
    if gold is not None:
        value = parse_number(predicted)
        return 1.0 if value is not None and numbers_equal(value, gold, rel_tol=rel_tol) else 0.0
    if not isinstance(answer, str) or not _normalize_text(answer):
        raise ValueError(f"accuracy_reward: gold answer {answer!r} is empty or not a str/number")
    if len(predicted) > max(_MAX_NUMBER_TEXT, 4 * len(answer)):  # bounded regex work on model text
        return 0.0
    return 1.0 if _normalize_text(predicted) == _normalize_text(answer) else 0.0


def countdown_reward(completion: str, numbers: Sequence[int], target: int) -> float:
    """1.0 iff the answer is an expression over `+ - * /` and parentheses that uses every number of `numbers`
    exactly once (as a multiset; plain integer literals, with or without a sign: `-2 - 15 + (52*41 + 84)/8`)
    and evaluates exactly to `target`. A trailing `= target` is allowed (`(3 + 7) * 25 = 250`). Anything
    else, division by zero included, is 0.0. `rl/tasks/countdown.py` compares this with TinyZero's scorer."""
    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    if answer.count("=") == 1:
        answer, rhs = answer.split("=")
        rhs_value = parse_number(rhs)
        if rhs_value is None or rhs_value != target:
            return 0.0
    try:
        result = evaluate(answer, allow_unary=True, integers_only=True)
    except ExprError:
        return 0.0
    if Counter(result.numbers) != Counter(Fraction(n) for n in numbers):
        return 0.0
    return 1.0 if result.value == target else 0.0


def code_reward(completion: str, tests: Sequence[str], *, setup: str = "", timeout_s: float = 5.0,
                runner: Callable | None = None) -> float:
    """Fraction of `tests` (assert lines) that pass on the code extracted by `extract_code`, run in the
    sandbox. No code -> 0.0. `setup` (imports the tests need) is prepended to the code. `runner` defaults to
    `rl.sandbox.run_tests(code, tests, timeout_s=...) -> result with .passed and .total`, imported here so this
    module imports without it. Sandbox failures raise: they are infrastructure errors, not a score."""
    tests = list(tests)
    if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise ValueError(f"code_reward: tests must be a non-empty list of non-empty str, got {tests!r}")
    code = extract_code(completion)
    if code is None:
        return 0.0
    if runner is None:
        from wgrpo.rl.sandbox import run_tests as runner  # lazy: the sandbox is optional for other tasks
    result = runner(setup + "\n" + code if setup else code, tests, timeout_s=timeout_s)
    passed, total = int(result.passed), int(result.total)
    if total != len(tests) or not 0 <= passed <= total:
        raise ValueError(f"code_reward: sandbox reported {passed}/{total} for {len(tests)} tests")
    return passed / total


def combine(parts: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted sum of reward parts by name. A weight whose name is not a part raises ValueError naming it;
    parts without a weight count 0 (they are still logged)."""
    unknown = [name for name in weights if name not in parts]
    if unknown:
        raise ValueError(f"reward weight(s) {', '.join(map(repr, unknown))} name no reward this task produces; "
                         f"its rewards are: {', '.join(map(repr, parts)) or '(none)'}")
    total = 0.0
    for name, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
            raise ValueError(f"reward weight {name!r} must be a finite number, got {weight!r}")
        total += float(weight) * float(parts[name])
    return total
