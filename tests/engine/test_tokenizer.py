"""The byte-level BPE: exact round trips, one token per digit, unsplit special tokens, transformers compatibility."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.engine.hf import load_tokenizer
from wgrpo.engine.tokenizer import (END_OF_TEXT, MAX_PIECE_CHARS, MAX_TEXT_CHARS, SPECIAL_TOKENS, PretrainedTokenizer,
                                    save_tokenizer, tokenizer_config_dict, train_tokenizer, training_pieces)

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
    with pytest.raises(InputError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(TypeError, match="iterable of strings"):
        train_tokenizer("just one string")
    with pytest.raises(TypeError, match="texts must be strings, got int"):  # raised in the worker, re-raised here
        train_tokenizer(["fine", 7])
    with pytest.raises(InputError, match="special_tokens"):
        train_tokenizer(CORPUS, special_tokens=["<a>", "<a>"])


def random_letters(count: int, seed: int = 0) -> str:
    """`count` lowercase letters without a space: one giant word for the byte-level pre-tokenizer."""
    return np.random.default_rng(seed).integers(97, 123, count, dtype=np.uint8).tobytes().decode("ascii")


def test_training_pieces_bound_the_work():
    line = random_letters(1_000_000)
    pieces = list(training_pieces([line, "short"]))
    assert pieces[-1] == "short"
    assert "".join(pieces[:-1]) == line[:MAX_TEXT_CHARS]  # only the first MAX_TEXT_CHARS characters are fed
    assert max(map(len, pieces)) == MAX_PIECE_CHARS

    words = " ".join(["alpha", "beta", "gamma"] * 1000) + "\n" + "x" * 2500
    pieces = list(training_pieces([words]))
    assert "".join(pieces) == words and max(map(len, pieces)) <= MAX_PIECE_CHARS
    assert all(piece[0] in " \nx" for piece in pieces[1:])  # cut before a space or newline while there is one
    assert list(training_pieces(["", "a b"])) == ["", "a b"]


def test_a_one_megabyte_line_trains(tmp_path):
    line = random_letters(1_000_000, seed=1)
    tokenizer = train_tokenizer([line, "hello world, hello 42"], vocab_size=300)
    assert tokenizer.get_vocab_size() == 300
    for text in (line[:5000], "hello world, hello 42", line[-100:]):
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_ctrl_c_stops_training_promptly():
    """A real SIGINT to a process deep in training on ~40 MB of giant words; the deadline only detects a hang
    (before the worker thread, the Rust trainer held the main thread for many minutes and ignored Ctrl-C)."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from wgrpo.engine.tokenizer import train_tokenizer
        rng = np.random.default_rng(0)
        texts = [rng.integers(97, 123, 100_000, dtype=np.uint8).tobytes().decode("ascii") for _ in range(400)]
        print("training", flush=True)
        try:
            train_tokenizer(texts, vocab_size=4096)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        print("finished", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "training", child.stderr.read()
        time.sleep(1.0)  # well inside train_tokenizer by now
        assert child.poll() is None, "training finished before the interrupt; give it more to do"
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("train_tokenizer ignored Ctrl-C for 20 s")
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 3 and out.strip() == "interrupted", err



def test_ctrl_c_inside_the_wait_for_the_worker_kills_it_and_raises_keyboard_interrupt(monkeypatch):
    """Ctrl-C while communicate() still flushes the pieces to the worker: a second communicate() would fail on state
    the first never set up (AttributeError) instead of raising KeyboardInterrupt."""
    import wgrpo.engine.tokenizer as tokenizer_module

    workers = []

    class InterruptedFlush(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            workers.append(self)
            flush, calls = self.stdin.flush, []

            def flush_once_interrupted():
                calls.append(1)
                if len(calls) == 1:
                    raise KeyboardInterrupt
                return flush()

            self.stdin.flush = flush_once_interrupted

    monkeypatch.setattr(tokenizer_module.subprocess, "Popen", InterruptedFlush)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(CORPUS, vocab_size=300)
    assert len(workers) == 1 and workers[0].returncode is not None  # killed and reaped
    assert workers[0].stdin.closed and workers[0].stdout.closed and workers[0].stderr.closed

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


def test_loaded_tokenizers_keep_their_config_when_saved(tokenizer, tmp_path):
    (tmp_path / "a").mkdir()
    save_tokenizer(tokenizer, tmp_path / "a")
    loaded = load_tokenizer(tmp_path / "a")
    assert isinstance(loaded, PretrainedTokenizer) and loaded.tokenizer.to_str() == tokenizer.to_str()
    assert loaded.init_config == tokenizer_config_dict(tokenizer) and loaded.chat_template is None
    config = {**loaded.init_config, "chat_template": "{{ messages[0].content }}", "model_max_length": 77,
              "tokenizer_class": "Qwen2Tokenizer"}
    pretrained = PretrainedTokenizer(loaded.tokenizer, config)
    (tmp_path / "b").mkdir()
    save_tokenizer(pretrained, tmp_path / "b", model_max_length=128)  # its own config wins over the keywords
    assert json.loads((tmp_path / "b" / "tokenizer_config.json").read_text()) == config
    assert load_tokenizer(tmp_path / "b").apply_chat_template([{"role": "user", "content": "hi"}]) == "hi"
    (tmp_path / "c").mkdir()
    save_tokenizer(PretrainedTokenizer(tokenizer), tmp_path / "c", model_max_length=128)  # no config: generated
    assert json.loads((tmp_path / "c" / "tokenizer_config.json").read_text()) == \
        tokenizer_config_dict(tokenizer, model_max_length=128)
    with pytest.raises(TypeError, match="expected a tokenizers.Tokenizer or a PretrainedTokenizer, got str"):
        save_tokenizer("tokenizer.json", tmp_path)
    with pytest.raises(TypeError, match="PretrainedTokenizer: expected a tokenizers.Tokenizer, got"):
        PretrainedTokenizer(loaded)
