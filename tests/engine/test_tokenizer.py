"""The byte-level BPE: exact round trips, one token per digit, unsplit special tokens, transformers compatibility."""

from __future__ import annotations

import json

import pytest

from wgrpo.engine.hf import load_tokenizer
from wgrpo.engine.tokenizer import END_OF_TEXT, SPECIAL_TOKENS, save_tokenizer, tokenizer_config_dict, train_tokenizer

CORPUS = [
    "Question: what is 123 + 4567?\n<think>123 + 4567 = 4690</think>\n<answer>4690</answer>",
    "The quick brown fox jumps over the lazy dog.  Twice:\tthe quick brown fox!",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 40))\n",
    "<think>Let me think step by step. 7 * 8 = 56, then 56 - 6 = 50.</think> <answer>50</answer>",
] * 8

SAMPLES = [
    "",
    "12345678901234567890",
    "  two leading spaces, trailing spaces   ",
    "line one\nline two\r\n\n\ttabbed\n",
    "<think> reasoning with 3.14159 </think><answer>-42</answer>",
    "<|endoftext|>after end<|endoftext|>",
    "unseen: héllo wörld ∑ 数学 😀",
    "<think></think><answer></answer>",
    "not a tag: <thinking> </answer",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_exact(tokenizer, text):
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_special_tokens_first_ids_and_never_split(tokenizer):
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected_id
    assert SPECIAL_TOKENS[0] == END_OF_TEXT
    ids = tokenizer.encode("x<think>y</think><answer>z</answer>").ids
    for token in SPECIAL_TOKENS[1:]:
        assert tokenizer.token_to_id(token) in ids


def test_digits_one_token_each(tokenizer):
    encoding = tokenizer.encode("4690 and 123456")
    digits = [t for t in encoding.tokens if any(ch.isdigit() for ch in t)]
    assert digits == list("4690123456")  # even "4690", frequent in the corpus, is not merged


def test_trained_merges_and_vocab_size(tokenizer):
    assert 256 + len(SPECIAL_TOKENS) < tokenizer.get_vocab_size() <= 400
    assert len(tokenizer.encode("the quick brown fox").ids) < len("the quick brown fox")  # merges were learned


def test_argument_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(TypeError, match="iterable of strings"):
        train_tokenizer("just one string")
    with pytest.raises(ValueError, match="special_tokens"):
        train_tokenizer(CORPUS, special_tokens=["<a>", "<a>"])


def test_save_and_load(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path, model_max_length=128)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["eos_token"] == config["pad_token"] == END_OF_TEXT and config["model_max_length"] == 128
    loaded = load_tokenizer(tmp_path)
    for text in SAMPLES:
        assert loaded.encode(text).ids == tokenizer.encode(text).ids
    with pytest.raises(ValueError, match="eos_token"):
        tokenizer_config_dict(tokenizer, eos_token="<|im_end|>")


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path)


def test_transformers_encodes_the_same_ids(tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    save_tokenizer(tokenizer, tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert auto.eos_token == auto.pad_token == END_OF_TEXT
    assert auto.eos_token_id == auto.pad_token_id == tokenizer.token_to_id(END_OF_TEXT)
    for text in SAMPLES:
        ids = tokenizer.encode(text).ids
        assert auto(text)["input_ids"] == ids
        assert fast(text)["input_ids"] == ids
        assert auto.decode(ids) == text
