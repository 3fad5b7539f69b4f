"""Tasks: registry, solvable generated problems, determinism, disjoint held-out splits, JSONL readers."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.arith import evaluate
from wgrpo.rl.tasks import TASKS, Problem, get_task
from wgrpo.rl.tasks.gsm8k import final_answer


def solved(problem: Problem, answer: str) -> str:
    """A well-formed completion for `problem` (the prompt may already hold the `<think>` opener)."""
    body = f"let me work it out</think>\n<answer>{answer}</answer>"
    return body if problem.think_in_prompt else "<think>" + body


def write_jsonl(path, rows) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


# ----------------------------------------------------------------------------------------------- registry

def test_registry_names_and_unknown_task():
    assert sorted(TASKS) == ["arithmetic", "code", "countdown", "gsm8k"]
    with pytest.raises(InputError, match=r"unknown task 'countdwn'.*arithmetic, code, countdown, gsm8k"):
        get_task("countdwn")
    with pytest.raises(InputError, match=r"^task 'countdown' has no option\(s\) 'digits'; options: num_numbers, "):
        get_task("countdown", digits=3)


@pytest.mark.parametrize("name, what", [("gsm8k", r"word problems, one \{\"question\": \.\.\., \"answer\""),
                                        ("code", r"problems with tests, one \{\"prompt\": \.\.\., \"tests\"")])
def test_a_file_task_without_path_names_the_option(name, what):
    for build in (lambda: get_task(name), lambda: TASKS[name](), lambda: get_task(name, path="")):
        with pytest.raises(InputError, match=rf"^{name}: task option 'path' is required: a JSONL file of {what}"):
            build()


@pytest.mark.parametrize("name, options, option", [
    ("countdown", {"num_numbers": "four"}, "num_numbers"),
    ("countdown", {"max_target": 2.5}, "max_target"),
    ("arithmetic", {"digits": True}, "digits"),
    ("arithmetic", {"ops": 3}, "ops"),
    ("arithmetic", {"seed": -1}, "seed"),
    ("arithmetic", {"eval_fraction": "half"}, "eval_fraction"),
    ("arithmetic", {"template": "chatml"}, "template"),
    ("gsm8k", {"path": 17}, "path"),
    ("code", {"path": "x.jsonl", "sandbox": "docker"}, "sandbox"),
    ("code", {"path": "x.jsonl", "workers": -1}, "workers"),
    ("code", {"path": "x.jsonl", "timeout_s": "long"}, "timeout_s"),
    ("code", {"path": "x.jsonl", "show_tests": 1.5}, "show_tests"),
    ("code", {"path": "x.jsonl", "runner": "fake"}, "runner"),
])
def test_bad_option_values_name_the_option(name, options, option):
    """As `--task-options` parses them: numbers, booleans and strings."""
    with pytest.raises(InputError, match=rf"^{name}: task option '{option}' must be "):
        get_task(name, **options)


def test_bad_arguments():
    task = get_task("arithmetic")
    with pytest.raises(ValueError, match="split"):
        task.sample(0, "test")
    with pytest.raises(TypeError, match="key"):
        task.sample(-1)
    with pytest.raises(InputError, match="num_numbers"):
        get_task("countdown", num_numbers=1)
    with pytest.raises(InputError, match="digits"):
        get_task("arithmetic", digits=0)
    with pytest.raises(InputError, match="ops"):
        get_task("arithmetic", ops="/")
    with pytest.raises(InputError, match="eval_fraction"):
        get_task("arithmetic", eval_fraction=1.0)
    with pytest.raises(InputError, match="no eval split"):
        get_task("arithmetic", eval_fraction=0.0).sample(0, "eval")


# ----------------------------------------------------------------------------------------------- countdown

@pytest.mark.parametrize("num_numbers", [2, 3, 4, 5, 6])
def test_countdown_problems_are_solvable(num_numbers):
    task = get_task("countdown", num_numbers=num_numbers, seed=1)
    for split in ("train", "eval"):
        for i in range(40):
            problem = task.sample(i, split)
            numbers, target = problem.meta["numbers"], problem.meta["target"]
            assert len(numbers) == num_numbers and all(1 <= n <= 99 for n in numbers)
            assert 1 <= target <= 100
            result = evaluate(problem.answer, allow_unary=False, integers_only=True)
            assert result.value == target and sorted(result.numbers) == sorted(numbers)
            assert str(numbers) in problem.prompt and f"equals {target}" in problem.prompt
            assert task.reward_parts(solved(problem, problem.answer), problem) == {"format": 1.0, "accuracy": 1.0}
            assert task.reward_parts(solved(problem, problem.answer + " + 1"), problem)["accuracy"] == 0.0


def test_countdown_prompt_template():
    problem = get_task("countdown").sample(0)
    assert problem.prompt.startswith("A conversation between User and Assistant.")
    assert problem.prompt.endswith("Assistant: Let me solve this step by step.\n<think>")
    assert problem.think_in_prompt and problem.question in problem.prompt
    assert "<think> </think>" in problem.question and "<answer> </answer>" in problem.question
    plain = get_task("countdown", think_prefix=False).sample(0)
    assert plain.prompt.endswith("Assistant:") and not plain.think_in_prompt
    assert plain.question == problem.question  # the option changes the template only
    task = get_task("countdown", think_prefix=False)
    assert task.reward_parts(solved(plain, plain.answer), plain) == {"format": 1.0, "accuracy": 1.0}


def test_countdown_reward_traps_through_the_task():
    task = get_task("countdown", num_numbers=4)
    problem = task.sample(3)
    assert task.reward_parts("x</think><answer></answer>", problem) == {"format": 0.0, "accuracy": 0.0}
    hedged = f"x</think><answer>{problem.answer}</answer><answer>{problem.answer}</answer>"
    assert task.reward_parts(hedged, problem) == {"format": 0.0, "accuracy": 0.0}
    inside = f"x <answer>{problem.answer}</answer> </think>"
    assert task.reward_parts(inside, problem) == {"format": 0.0, "accuracy": 0.0}
    # right answer, broken format: the parts are scored separately
    loose = f"x</think> <answer>{problem.answer}</answer> bye"
    assert task.reward_parts(loose, problem) == {"format": 0.0, "accuracy": 1.0}


# ----------------------------------------------------------------------------------------------- arithmetic

@pytest.mark.parametrize("digits", [1, 2, 5, 25])
def test_arithmetic_answers(digits):
    task = get_task("arithmetic", digits=digits, seed=3)
    ops = set()
    for i in range(60):
        problem = task.sample(i)
        a, b, op = problem.meta["a"], problem.meta["b"], problem.meta["op"]
        ops.add(op)
        for x in (a, b):
            assert len(str(x)) == digits
        assert int(problem.answer) == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert f"Compute {a} {op} {b}." in problem.prompt
        assert task.reward_parts(solved(problem, problem.answer), problem) == {"format": 1.0, "accuracy": 1.0}
        assert task.reward_parts(solved(problem, str(int(problem.answer) + 1)), problem)["accuracy"] == 0.0
    assert ops == {"+", "-", "*"}


def test_arithmetic_ops_option_and_reward():
    task = get_task("arithmetic", digits=3, ops="*")
    problem = task.sample(0)
    assert problem.meta["op"] == "*"
    total, parts = task.reward(solved(problem, f"{int(problem.answer):,}"), problem)  # thousands commas
    assert parts == {"format": 1.0, "accuracy": 1.0} and total == pytest.approx(1.1)
    assert task.reward(solved(problem, problem.answer), problem, {"accuracy": 1.0})[0] == 1.0
    with pytest.raises(ValueError, match="'length'"):
        task.reward(solved(problem, problem.answer), problem, {"length": 1.0})


# ----------------------------------------------------------------------------------------------- determinism, splits

@pytest.mark.parametrize("name, options", [("countdown", {"num_numbers": 4}), ("arithmetic", {"digits": 2})])
def test_generated_determinism(name, options):
    a, b = get_task(name, seed=7, **options), get_task(name, seed=7, **options)
    assert [a.sample(i).prompt for i in range(20)] == [b.sample(i).prompt for i in range(20)]
    assert [a.sample(i).id for i in (5, 2, 9)] == [b.sample(i).id for i in (5, 2, 9)]  # order-free
    r1, r2 = np.random.default_rng(11), np.random.default_rng(11)
    assert [a.sample(r1).id for _ in range(20)] == [b.sample(r2).id for _ in range(20)]
    other = get_task(name, seed=8, **options)
    assert [a.sample(i).id for i in range(20)] != [other.sample(i).id for i in range(20)]
    assert [p.id for p in a.eval_problems(10)] == [p.id for p in b.eval_problems(10)]


@pytest.mark.parametrize("name, options", [("countdown", {"num_numbers": 2, "max_number": 12, "max_target": 30}),
                                           ("arithmetic", {"digits": 1})])
def test_generated_split_is_disjoint(name, options):
    """Small problem spaces, so train and eval would collide without the split."""
    task = get_task(name, eval_fraction=0.2, **options)
    rng = np.random.default_rng(0)
    train = {task.sample(i).id for i in range(400)} | {task.sample(rng).id for _ in range(400)}
    held = {p.id for p in task.eval_problems(100)} | {task.sample(rng, "eval").id for _ in range(100)}
    assert train and held and not train & held
    assert all(task.sample(i, "eval").split == "eval" for i in range(5))
    # a different seed draws other problems, but the split of each problem is the same
    other = get_task(name, eval_fraction=0.2, seed=99, **options)
    assert not {other.sample(i).id for i in range(400)} & held


# ----------------------------------------------------------------------------------------------- gsm8k

GSM_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
    {"prompt": "A car costs $1,200 more than 3,000. Price?", "solution": "Add.\n#### 4,200"},
    {"question": "Half of one?", "answer": "\\frac{1}{2}"},
    {"question": "How many legs?", "answer": 8},
    {"question": "Debt?", "answer": "#### -35"},
]


def test_final_answer():
    assert final_answer("work\n#### 1,234") == "1,234"
    assert final_answer("a #### 1 #### 2") == "2"
    assert final_answer(" 17 ") == "17"
    assert final_answer(8) == "8" and final_answer(0.5) == "0.5"


def test_gsm8k_reads_and_scores(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", GSM_ROWS)
    task = get_task("gsm8k", path=path, eval_fraction=0.0)
    assert task.size("train") == 5 and task.size("eval") == 0
    problems = [task.sample(i) for i in range(5)]
    assert [p.answer for p in problems] == ["7", "4,200", "\\frac{1}{2}", "8", "-35"]
    assert problems[1].question.startswith("A car costs $1,200")  # the 'prompt' field is the question
    assert problems[0].meta["source"] == f"{path}:1"
    for problem, good, bad in zip(problems, ["7", "4200", "0.5", "8.0", "-35"], ["8", "420", "0.4", "9", "35"]):
        assert task.reward_parts(solved(problem, good), problem) == {"format": 1.0, "accuracy": 1.0}
        assert task.reward_parts(solved(problem, bad), problem)["accuracy"] == 0.0
        assert task.reward_parts(solved(problem, ""), problem)["accuracy"] == 0.0
    assert task.sample(7) is task.sample(2)  # index wraps
    with pytest.raises(InputError, match="eval split .* is empty"):
        task.sample(0, "eval")


def test_gsm8k_hash_split_and_eval_path(tmp_path):
    rows = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(200)]
    path = write_jsonl(tmp_path / "many.jsonl", rows + rows[:20])  # duplicates land on the same side
    task = get_task("gsm8k", path=path)
    train = {task.sample(i).question for i in range(task.size("train"))}
    held = {p.question for p in task.eval_problems()}
    assert task.size("train") + task.size("eval") == 220
    assert 5 < len(held) < 50 and not train & held
    eval_path = write_jsonl(tmp_path / "eval.jsonl", rows[:10])
    task = get_task("gsm8k", path=path, eval_path=eval_path)
    assert task.size("eval") == 10 and task.size("train") == 200  # rows 0..9 (twice) dropped
    assert not {p.id for p in task.eval_problems()} & {task.sample(i).id for i in range(200)}
    assert get_task("gsm8k", path=path).sample(np.random.default_rng(0)).split == "train"


@pytest.mark.parametrize("rows, message", [
    ([GSM_ROWS[0], {"question": "no answer here"}],
     r"bad\.jsonl:2: missing field 'answer' \(accepted names: 'answer', 'solution'\)"),
    ([GSM_ROWS[0], {"answer": "#### 3"}],
     r"bad\.jsonl:2: missing field 'question' \(accepted names: 'prompt', 'question'\)"),
    ([GSM_ROWS[0], {"question": "q", "answer": "   "}], r"bad\.jsonl:2: missing field 'answer'"),
    ([GSM_ROWS[0], "", '{"question": "q", "answer": '], r"bad\.jsonl:3: invalid JSON"),
    (["[1, 2]"], r"bad\.jsonl:1: expected a JSON object"),
    ([{"question": "q", "answer": "#### seven"}], r"bad\.jsonl:1: answer 'seven' is not a number"),
    ([{"question": "q", "answer": ["7"]}], r"bad\.jsonl:1: field 'answer' must be str or int or float"),
    ([""], r"has no records"),
    ([{"prompt": [], "answer": "1"}], r"bad\.jsonl:1: field 'prompt' must be text or a non-empty list of \{\"role\""),
    ([GSM_ROWS[0], {"prompt": [{"role": "user", "content": "q"}, "a"], "answer": "1"}],
     r"bad\.jsonl:2: prompt\[1\]: expected a \{\"role\": \.\.\., \"content\": \.\.\.\} message, got str"),
    ([{"prompt": [{"role": "user"}], "answer": "1"}], r"bad\.jsonl:1: prompt\[0\]: no 'content'"),
    ([{"prompt": [{"role": "user", "content": ["a"]}], "answer": "1"}],
     r"bad\.jsonl:1: prompt\[0\]: 'content' must be a string, got \['a'\]"),
    ([{"prompt": [{"role": " ", "content": "q"}], "answer": "1"}],
     r"bad\.jsonl:1: prompt\[0\]: 'role' must be a non-empty string"),
    ([{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "1"}],
     r"bad\.jsonl:1: the conversation in field 'prompt' ends with an assistant message"),
    ([{"prompt": [{"role": "user", "content": "q"}], "answer": "#### x"}], r"bad\.jsonl:1: answer 'x' is not a number"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match=message):
        get_task("gsm8k", path=path)


def test_jsonl_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match=r"dataset file '.*nope\.jsonl' does not exist"):
        get_task("gsm8k", path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(InputError, match="is not a file"):
        get_task("gsm8k", path=str(tmp_path))
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "1"}\n\xff\xfe\n')
    with pytest.raises(InputError, match=r"bin\.jsonl:2: not UTF-8"):
        get_task("gsm8k", path=str(path))


# ----------------------------------------------------------------------------------------------- conversations

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
HEADERS = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}"
           "{% endif %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>"
           "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eot_id|>", "<think>"]


def chat_tokenizer(template: str | None, bos: bool = False):
    """A real tokenizer with `template` as its chat template; with `bos`, one whose encoding adds
    <|begin_of_text|> in front (as Llama 3's does) and whose template writes it too."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from wgrpo.engine.tokenizer import PretrainedTokenizer

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(["Tom has 3 apples. How many? user system assistant"] * 10, trainer=trainers.BpeTrainer(
        vocab_size=320, special_tokens=CHAT_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    config = {"eos_token": "<|im_end|>"}
    if bos:
        raw.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", raw.token_to_id("<|begin_of_text|>"))])
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    if template is not None:
        config["chat_template"] = template
    return PretrainedTokenizer(raw, config)


CHAT_ROWS = [
    {"prompt": [{"role": "system", "content": "Think in <think> tags, answer in <answer> tags."},
                {"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"}], "answer": "#### 7"},
    GSM_ROWS[1],
    {"prompt": [{"role": "user", "content": " How many legs has a spider? "}], "answer": 8},
]


def test_gsm8k_conversational_prompts_use_the_chat_template(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    task = get_task("gsm8k", path=path, eval_fraction=0.0)
    assert task.size("train") == 3
    with pytest.raises(RuntimeError, match=r"chat\.jsonl has conversational prompts; call task\.use_tokenizer"):
        task.sample(0)
    tokenizer = chat_tokenizer(CHATML)
    with pytest.raises(RuntimeError, match="use_tokenizer"):
        task.check_prompts(tokenizer, 1000)
    task.use_tokenizer(tokenizer)
    first, text, legs = (task.sample(i) for i in range(3))
    assert first.prompt == ("<|im_start|>system\nThink in <think> tags, answer in <answer> tags.<|im_end|>\n"
                            "<|im_start|>user\nTom has 3 apples and buys 4 more. How many?<|im_end|>\n"
                            "<|im_start|>assistant\n<think>")
    assert first.prompt == tokenizer.apply_chat_template(list(first.messages), add_generation_prompt=True) + "<think>"
    assert first.messages == tuple(CHAT_ROWS[0]["prompt"]) and first.think_in_prompt
    assert first.question == ("system: Think in <think> tags, answer in <answer> tags.\n"
                              "user: Tom has 3 apples and buys 4 more. How many?")
    assert text.messages == () and text.prompt.startswith("A conversation between User and Assistant")
    assert legs.answer == "8" and legs.meta["source"] == f"{path}:3"
    assert task.reward_parts(solved(first, "7"), first) == {"format": 1.0, "accuracy": 1.0}
    task.check_prompts(tokenizer, 400)
    with pytest.raises(InputError, match=rf"^{path}:1: prompt is \d+ characters"):
        task.check_prompts(tokenizer, 20)
    # again with another tokenizer: rendered anew; without the think prefix: the assistant's turn is left open
    plain = get_task("gsm8k", path=path, eval_fraction=0.0, think_prefix=False)
    plain.use_tokenizer(chat_tokenizer(HEADERS, bos=True))
    plain.use_tokenizer(tokenizer)
    assert plain.sample(0).prompt == first.prompt.removesuffix("<think>") and not plain.sample(0).think_in_prompt


def test_a_leading_bos_that_the_tokenizer_adds_is_not_doubled(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    task = get_task("gsm8k", path=path, eval_fraction=0.0)
    tokenizer = chat_tokenizer(HEADERS, bos=True)
    task.use_tokenizer(tokenizer)
    problem = task.sample(0)
    rendered = tokenizer.apply_chat_template(list(problem.messages), add_generation_prompt=True)
    assert rendered.startswith("<|begin_of_text|><|start_header_id|>system") and rendered + "<think>" == \
        "<|begin_of_text|>" + problem.prompt
    ids = tokenizer.encode(problem.prompt).ids  # as generation encodes a prompt
    assert ids == tokenizer.encode(rendered + "<think>", add_special_tokens=False).ids
    assert ids.count(tokenizer.token_to_id("<|begin_of_text|>")) == 1


def test_conversations_without_a_chat_template(tmp_path):
    from tokenizers import Tokenizer

    path = write_jsonl(tmp_path / "chat.jsonl", [GSM_ROWS[0]] + CHAT_ROWS[::-1])
    message = (rf"^{path}:2: the prompt is a conversation \(a list of role/content messages\), but the model's "
               rf"tokenizer has no chat_template to render it with")
    for tokenizer in (chat_tokenizer(None), chat_tokenizer(None).tokenizer):
        with pytest.raises(InputError, match=message):
            get_task("gsm8k", path=path, eval_fraction=0.0).use_tokenizer(tokenizer)
    assert isinstance(chat_tokenizer(None).tokenizer, Tokenizer)
    text_only = get_task("gsm8k", path=write_jsonl(tmp_path / "text.jsonl", GSM_ROWS), eval_fraction=0.0)
    text_only.use_tokenizer(chat_tokenizer(None))  # text prompts need no template
    assert text_only.sample(0).prompt.startswith("A conversation between User and Assistant")
    get_task("arithmetic").use_tokenizer(chat_tokenizer(None))


def test_a_template_that_refuses_a_conversation_names_the_line(tmp_path):
    rows = CHAT_ROWS + [{"prompt": [{"role": "tool", "content": "5"}, {"role": "user", "content": "q"}],
                         "answer": "5"}]
    task = get_task("gsm8k", path=write_jsonl(tmp_path / "chat.jsonl", rows), eval_fraction=0.0)
    with pytest.raises(InputError, match=rf"^{tmp_path / 'chat.jsonl'}:4: tokenizer/tokenizer_config.json: the chat "
                                         rf"template refused the conversation: no tools here$"):
        task.use_tokenizer(chat_tokenizer(HEADERS, bos=True))


def test_the_split_of_a_conversation_is_its_messages_text(tmp_path):
    from wgrpo.rl.tasks.base import in_eval_split

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": i + 1} for i in range(200)]
    path = write_jsonl(tmp_path / "many.jsonl", rows + rows[:20])
    splits = []
    for tokenizer in (chat_tokenizer(CHATML), chat_tokenizer(HEADERS, bos=True)):
        task = get_task("gsm8k", path=path)
        task.use_tokenizer(tokenizer)
        held = {p.question for p in task.eval_problems()}
        train = {task.sample(i).question for i in range(task.size("train"))}
        assert 5 < len(held) < 50 and not held & train and task.size("train") + task.size("eval") == 220
        assert all(in_eval_split("gsm8k", p.id, 0.1) for p in task.eval_problems())
        splits.append((held, [p.id for p in task.eval_problems()]))
    assert splits[0] == splits[1]  # the chat template does not move a problem between the splits
    eval_path = write_jsonl(tmp_path / "eval.jsonl", rows[:10])
    task = get_task("gsm8k", path=path, eval_path=eval_path)
    task.use_tokenizer(chat_tokenizer(CHATML))
    assert task.size("eval") == 10 and task.size("train") == 200


# ----------------------------------------------------------------------------------------------- code

@dataclass
class FakeResult:
    passed: int
    total: int


def fake_runner(code, tests, timeout_s=5.0):
    """Never runs anything: a test 'passes' when the code mentions its expected value after 'return '."""
    return FakeResult(sum(f"return {t.rsplit('==', 1)[1].strip()}" in code for t in tests), len(tests))


CODE_ROWS = [
    {"text": "Write a function answer() returning 42.", "test_list": ["assert answer() == 42", "assert answer() == 42"],
     "test_setup_code": "import math"},
    {"prompt": "Write f() returning 1.", "tests": "assert f() == 1\n\nassert f() == 2\nassert f() == 3\n"},
]


def test_code_task(tmp_path):
    path = write_jsonl(tmp_path / "code.jsonl", CODE_ROWS)
    task = get_task("code", path=path, eval_fraction=0.0, runner=fake_runner, show_tests=1, timeout_s=2.0)
    first, second = task.sample(0), task.sample(1)
    assert first.meta["tests"] == CODE_ROWS[0]["test_list"] and first.meta["setup"] == "import math"
    assert second.meta["tests"] == ["assert f() == 1", "assert f() == 2", "assert f() == 3"]
    assert "assert f() == 1" in second.prompt and "assert f() == 2" not in second.prompt  # hidden tests
    assert first.answer == ""
    code = "```python\ndef f():\n    return 1\n```"
    assert task.reward_parts(solved(second, code), second) == {"format": 1.0, "accuracy": pytest.approx(1 / 3)}
    assert task.reward_parts(solved(second, ""), second) == {"format": 0.0, "accuracy": 0.0}
    assert task.reward_parts(solved(first, "def answer():\n    return 42"), first)["accuracy"] == 1.0
    hidden = get_task("code", path=path, eval_fraction=0.0, runner=fake_runner, show_tests=0).sample(1)
    assert "assert" not in hidden.question


def test_code_task_errors(tmp_path):
    path = write_jsonl(tmp_path / "code.jsonl", [CODE_ROWS[0], {"text": "no tests"}])
    message = r"code\.jsonl:2: missing field 'tests' \(accepted names: 'tests', 'test_list'\)"
    with pytest.raises(InputError, match=message):
        get_task("code", path=path, runner=fake_runner)
    path = write_jsonl(tmp_path / "code2.jsonl", [{"text": "t", "tests": ["assert 1", ""]}])
    with pytest.raises(InputError, match=r"code2\.jsonl:1: field 'tests' must be a non-empty list"):
        get_task("code", path=path, runner=fake_runner)
    # found when the file is read, not when a reward first runs the test
    path = write_jsonl(tmp_path / "code3.jsonl", [CODE_ROWS[0], {"text": "t", "tests": ["assert f(1", "assert 1"]}])
    with pytest.raises(InputError, match=r"code3\.jsonl:2: tests\[0\] is not valid Python"):
        get_task("code", path=path, runner=fake_runner)
    path = write_jsonl(tmp_path / "code4.jsonl", [{"text": "t", "tests": ["assert 1"], "setup": "import"}])
    with pytest.raises(InputError, match=r"code4\.jsonl:1: setup is not valid Python"):
        get_task("code", path=path, runner=fake_runner)


def test_problem_from_another_task_is_refused():
    problem = get_task("arithmetic").sample(0)
    with pytest.raises(ValueError, match="arithmetic"):
        get_task("countdown").reward_parts("x", problem)


def test_no_engine_or_wgpu_import():
    code = ("import sys, wgrpo.rl.tasks, wgrpo.rl.rewards, wgrpo.rl.arith, wgrpo.rl.jsonl, wgrpo.rl.sandbox\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'wgpu' or m.startswith(('wgrpo.engine', 'wgrpo.kernels'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
