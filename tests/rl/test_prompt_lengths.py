"""Prompts too long for the model are found when training starts, named by file and line, not when sampled."""

from __future__ import annotations

import json
import re

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from wgrpo.engine import InputError, train_tokenizer
from wgrpo.rl.tasks import get_task
from wgrpo.rl.tasks.lengths import check_prompt_lengths

REASON = "the model's max_position_embeddings minus max_new_tokens"
MiB = 1 << 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["What is 12 + 30? Show your reasoning in <think> </think> tags."] * 20, vocab_size=300)


def write_gsm(path, questions) -> str:
    path.write_text("".join(json.dumps({"question": q, "answer": "#### 1"}) + "\n" for q in questions))
    return str(path)


def test_a_long_prompt_is_named_by_file_and_line(tmp_path, tokenizer):
    path = write_gsm(tmp_path / "gsm.jsonl", ["What is 1 + 1?", "ab " * 150, "x" * MiB, "What is 2 + 2?"])
    task = get_task("gsm8k", path=path, eval_fraction=0.0, template="plain")
    with pytest.raises(InputError) as error:
        task.check_prompts(tokenizer, 100, reason=REASON)
    message = str(error.value)
    # line 2 is over by a little, so it was encoded (an exact count); line 3 is too long by its characters alone
    pattern = (rf"{re.escape(path)}:2: prompt is {len(task.sample(1).prompt)} characters \((\d+) tokens\), over "
               rf"the limit of 100 tokens \({re.escape(REASON)}\); 1 more prompt\(s\) are over it too")
    match = re.fullmatch(pattern, message)
    assert match and int(match.group(1)) == len(tokenizer.encode(task.sample(1).prompt).ids) > 100
    task = get_task("gsm8k", path=write_gsm(tmp_path / "one.jsonl", ["What is 1 + 1?", "x" * MiB]),
                    eval_fraction=0.0, template="plain")
    chars = len(task.sample(1).prompt)
    with pytest.raises(InputError, match=rf"one\.jsonl:2: prompt is {chars} characters \(~(\d+) tokens\), "
                                         rf"over the limit of 100 tokens \({re.escape(REASON)}\)$") as error:
        task.check_prompts(tokenizer, 100, reason=REASON)
    assert int(re.search(r"~(\d+)", str(error.value)).group(1)) > MiB // 2  # the estimate is in the right range


def test_eval_problems_are_checked_too(tmp_path, tokenizer):
    train = write_gsm(tmp_path / "train.jsonl", ["What is 1 + 1?"] * 3)
    held = write_gsm(tmp_path / "held.jsonl", ["What is 2 + 2?", "y" * 5000])
    task = get_task("gsm8k", path=train, eval_path=held)
    task.check_prompts(tokenizer, 8000)
    with pytest.raises(InputError, match=r"held\.jsonl:2: prompt is \d+ characters"):
        task.check_prompts(tokenizer, 1000)
    # the hash split: every problem of the file is checked, whichever side it fell on, first line first
    path = write_gsm(tmp_path / "all.jsonl", [f"Question {i}: " + "z" * 3000 for i in range(40)])
    task = get_task("gsm8k", path=path, eval_fraction=0.5)
    assert task.size("train") and task.size("eval")
    with pytest.raises(InputError, match=r"all\.jsonl:1: prompt .*; 39 more prompt\(s\) are over it too$"):
        task.check_prompts(tokenizer, 1000)


def test_generated_tasks_check_a_sample(tokenizer):
    for name in ("arithmetic", "countdown"):
        task = get_task(name)
        task.check_prompts(tokenizer, 4096)
        with pytest.raises(InputError, match=rf"^{name} train problem 0: prompt is \d+ characters \(~?\d+ tokens\), "
                                             rf"over the limit of 20 tokens; 31 more prompt\(s\) are over it too$"):
            task.check_prompts(tokenizer, 20)  # 16 problems of each split


def test_no_room_at_all(tokenizer):
    with pytest.raises(InputError, match=rf"no room for a prompt: the prompt limit is -8 tokens \({REASON}\)"):
        get_task("arithmetic").check_prompts(tokenizer, -8, reason=REASON)


def _trained(model, pre_tokenizer, trainer) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.train_from_iterator(["hello world the cat sat on the mat"] * 10, trainer)
    return tokenizer


def test_length_in_characters_never_refuses_a_prompt_that_fits():
    """Tokenizers where a long text can be few tokens: an unknown-word token, a pre-tokenizer dropping spaces."""
    wordpiece = _trained(models.WordPiece(unk_token="[UNK]"), pre_tokenizers.Whitespace(),
                         trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"], show_progress=False))
    long_word = "q" * 50_000  # one [UNK]
    assert len(wordpiece.encode(long_word).ids) == 1
    check_prompt_lengths([("word", long_word)], wordpiece, 10)
    bpe = _trained(models.BPE(), pre_tokenizers.Whitespace(), trainers.BpeTrainer(vocab_size=60, show_progress=False))
    spaced = "hello" + " " * 50_000 + "world"
    assert len(bpe.encode(spaced).ids) == 2
    check_prompt_lengths([("spaces", spaced)], bpe, 10)
    with pytest.raises(InputError, match=r"^words: prompt is 300000 characters \(~\d+ tokens\)"):
        check_prompt_lengths([("spaces", spaced), ("words", "hello " * 50_000)], bpe, 10)


def test_prompts_that_fit_give_the_longest_length(tmp_path, tokenizer):
    texts = ["What is 1 + 1?", "What is 12 + 30? Show your reasoning.", "2 + 2"]
    lengths = [len(tokenizer.encode(text).ids) for text in texts]
    assert check_prompt_lengths([(f"p{i}", t) for i, t in enumerate(texts)], tokenizer, 100) == max(lengths)
    assert check_prompt_lengths([], tokenizer, 100) == 0
    task = get_task("gsm8k", path=write_gsm(tmp_path / "gsm.jsonl", texts), eval_fraction=0.0, template="plain")
    task.use_tokenizer(tokenizer)
    prompts = [task.sample(i).prompt for i in range(task.size("train"))]
    assert task.check_prompts(tokenizer, 100) == max(len(tokenizer.encode(p).ids) for p in prompts)
