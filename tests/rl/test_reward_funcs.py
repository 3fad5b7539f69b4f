"""The built-in reward functions in TRL's convention, their names, and `load_reward_funcs` on real files."""

from __future__ import annotations

import functools
import sys

import pytest

from wgrpo.engine import InputError
from wgrpo.rl.reward_funcs import (BUILTIN_REWARDS, accuracy, code, countdown, format, load_reward_funcs,
                                   reward_func_name)
from tests.rl.test_code_rewards import _isolation_problem


def answered(text: str, answer: str) -> str:
    return f"{text}</think> <answer>{answer}</answer>"


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ----------------------------------------------------------------------------------------------- built-ins

def test_accuracy_reads_the_answer_column_and_none_is_not_applicable():
    completions = [answered("<think>2+2", "4"), answered("<think>no", "5"), "\\boxed{ Paris }", "<answer>7</answer>"]
    scores = accuracy(["q"] * 4, completions, None, answer=["4", 4, "paris", None], trainer_state=None)
    assert scores == [1.0, 0.0, 1.0, None]
    conversational = accuracy([[{"role": "user", "content": "q"}]] * 2, [chat("<answer>3/4</answer>"),
                                                                        chat("<answer>0.7</answer>")],
                              answer=["0.75", "0.75"])
    assert conversational == [1.0, 0.0]
    with pytest.raises(InputError, match="reward function accuracy: the answer of completion 1 is '  '"):
        accuracy(["q", "q"], ["<answer>x</answer>"] * 2, answer=["x", "  "])


def test_format_scores_after_a_prompt_that_opened_the_reasoning():
    good = "I add.</think> <answer>4</answer>"
    assert format(["What is 2+2?\n<think>", "What is 2+2?"], [good, good]) == [1.0, 0.0]
    assert format(["What is 2+2?"], ["<think>" + good]) == [1.0]
    assert format([[{"role": "user", "content": "q"}]], [chat("<think>" + good)]) == [1.0]
    assert format([[{"role": "user", "content": "q <think>"}]], [chat(good)]) == [0.0]  # a conversation's own text


def test_countdown_uses_the_numbers_and_target_columns():
    completions = ["<answer>(3 + 7) * 25</answer>", "<answer>3 * 7 + 25</answer>", "<answer>1</answer>"]
    scores = countdown(["q"] * 3, completions, numbers=[[3, 7, 25], [3, 7, 25], [1]], target=[250, 250, None])
    assert scores == [1.0, 0.0, None]


@pytest.mark.skipif(_isolation_problem() is not None, reason=f"{_isolation_problem()}")
def test_code_runs_the_tests_in_the_sandbox():
    add = "<answer>\n```python\ndef add(a, b):\n    return a + b\n```\n</answer>"
    wrong = "<answer>\n```python\ndef add(a, b):\n    return 3\n```\n</answer>"
    root = "<answer>\n```python\ndef root(x):\n    return sqrt(x)\n```\n</answer>"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    scores = code(["q"] * 5, [add, wrong, chat(add), root, "no code"],
                  tests=[tests, tests, "assert add(1, 2) == 3\n\nassert add(2, 2) == 4\n", ["assert root(9) == 3"],
                         None],
                  setup=[None, "", None, "from math import sqrt", None])
    assert scores == [1.0, 0.5, 1.0, 1.0, None]
    assert code(["q"], [add], tests=[tests]) == [1.0]  # setup is optional
    assert load_reward_funcs("code,format", log=print) == [code, format]  # the sandbox works here
    with pytest.raises(InputError, match="reward function code: the tests of completion 0 must be a non-empty list"):
        code(["q"], [add], tests=[[]])


def test_builtin_names():
    assert list(BUILTIN_REWARDS) == ["accuracy", "format", "countdown", "code"]
    assert all(reward_func_name(fn) == name for name, fn in BUILTIN_REWARDS.items())


class Judge:
    def __call__(self, prompts, completions, **kwargs):
        return [0.0] * len(completions)


def test_reward_func_name_as_trl_names_functions():
    def fmt(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    assert reward_func_name(fmt) == "fmt"
    assert reward_func_name(functools.partial(functools.partial(fmt), prompts=[])) == "fmt"
    assert reward_func_name(Judge()) == "Judge"
    assert reward_func_name(lambda prompts, completions, **kw: []) == "<lambda>"


# ----------------------------------------------------------------------------------------------- loading

REWARDS_PY = '''
from dataclasses import dataclass
from math import sqrt

LIMIT = 3


@dataclass
class Length:
    limit: int = 10

    def __call__(self, prompts, completions, **kwargs):
        return [float(len(c) <= self.limit) for c in completions]


def accuracy(prompts, completions, answer, **kwargs):
    return [float(a in c) for c, a in zip(completions, answer)]


def fmt(prompts, completions, **kwargs):
    return [float(c.endswith("</answer>")) for c in completions]


short = Length(5)
'''


@pytest.fixture
def rewards_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS_PY)
    return path


def test_functions_from_a_file_and_the_builtins(rewards_file):
    lines = []
    funcs = load_reward_funcs(f"format,countdown,{rewards_file}:accuracy,fmt,short", log=lines.append)
    assert [reward_func_name(fn) for fn in funcs] == ["format", "countdown", "accuracy", "fmt", "Length"]
    assert funcs[0] is BUILTIN_REWARDS["format"] and funcs[2] is not BUILTIN_REWARDS["accuracy"]
    assert funcs[2](["q"], ["it is 7"], answer=["7"]) == [1.0]
    assert funcs[4](["q"], ["abc", "abcdef"]) == [1.0, 0.0]
    assert lines == [f"wgrpo: reward functions accuracy, fmt, short from {rewards_file} (its code runs in this "
                     f"process)"]
    assert sys.modules[type(funcs[4]).__module__].LIMIT == 3  # registered: dataclasses and pickling work


def test_a_relative_path_is_logged_absolute_and_a_second_file_starts_its_own_names(rewards_file, tmp_path,
                                                                                    monkeypatch):
    other = tmp_path / "sub" / "other.py"
    other.parent.mkdir()
    other.write_text("def fmt(prompts, completions, **kwargs):\n    return [0.5] * len(completions)\n")
    monkeypatch.chdir(tmp_path)
    lines = []
    funcs = load_reward_funcs("my_rewards.py:accuracy, sub/other.py:fmt", log=lines.append)
    assert funcs[1](["q"], ["x</answer>"]) == [0.5]  # other.py's fmt, not my_rewards.py's
    assert lines == [f"wgrpo: reward functions accuracy from {rewards_file} (its code runs in this process)",
                     f"wgrpo: reward functions fmt from {other} (its code runs in this process)"]


def test_functions_from_a_module(tmp_path, monkeypatch):
    package = tmp_path / "team_rewards"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scores.py").write_text("def strict(prompts, completions, **kwargs):\n    return [1.0]\n"
                                       "def lenient(prompts, completions, **kwargs):\n    return [0.5]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lines = []
    funcs = load_reward_funcs("accuracy,team_rewards.scores:strict,lenient", log=lines.append)
    assert [reward_func_name(fn) for fn in funcs] == ["accuracy", "strict", "lenient"]
    assert lines == ["wgrpo: reward functions strict, lenient from module team_rewards.scores (its code runs in "
                     "this process)"]
    with pytest.raises(InputError, match=r"^reward functions module 'team_rewards\.nothing': no module "
                                         r"'team_rewards\.nothing' on the path"):
        load_reward_funcs("team_rewards.nothing:f")
    (package / "broken.py").write_text("import json\n\nraise KeyError('no config')\n")
    with pytest.raises(InputError, match=rf"^{package / 'broken.py'}:3: importing the reward functions of "
                                         rf"team_rewards\.broken raised KeyError: 'no config'$"):
        load_reward_funcs("team_rewards.broken:f")


@pytest.mark.parametrize("source,item,message", [
    (None, "nowhere.py:f", r"^reward functions file nowhere\.py does not exist$"),
    (REWARDS_PY, "{path}:missing",
     r"^{path} has no 'missing'; the callables it defines: Length, accuracy, fmt, short$"),
    (REWARDS_PY, "{path}:LIMIT", r"^{path}: LIMIT is not a callable reward function \(it is int 3\)$"),
    ("def f(prompts, completions):\n    return [\n", "{path}:f", r"^{path}:2: syntax error in the reward functions' "),
    ("import os\n\n\ndef helper():\n    return 1 / 0\n\n\nhelper()\n", "{path}:f",
     r"^{path}:5: importing the reward functions of {path} raised ZeroDivisionError: division by zero$"),
    (None, "acuracy", r"^unknown reward function 'acuracy'; built-ins: accuracy, format, countdown, code, or give "
                      r"path/to/file\.py:name or package\.module:name$"),
    (None, "accuracy,,format", r"^reward functions 'accuracy,,format': an empty item"),
    (None, "  ", r"^reward functions: expected a comma list of names"),
    (None, "my.py:not-a-name", r"^reward function 'my\.py:not-a-name': expected path/to/file\.py:name"),
])
def test_each_bad_item_is_one_line(tmp_path, monkeypatch, source, item, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "rewards.py"
    if source is not None:
        path.write_text(source)
    lines = []
    with pytest.raises(InputError, match=message.replace("{path}", str(path).replace(".", r"\."))) as error:
        load_reward_funcs(item.replace("{path}", str(path)), log=lines.append)
    assert "\n" not in str(error.value)
    # the file's code is announced before it runs; nothing is imported for an item refused before that
    assert lines == ([f"wgrpo: reward functions {item.rpartition(':')[2]} from {path} (its code runs in this "
                      f"process)"] if source is not None else [])
    if "raised" in message or "syntax" in message:  # a file that failed to import is not left half-made
        assert not [m for m in sys.modules.values() if getattr(m, "__file__", None) == str(path)]
