"""Tokenizers for wgrpo's own small models: a byte-level BPE trained with the `tokenizers` library, and the files
that let transformers load it (`tokenizer.json` + `tokenizer_config.json`).

Owns: training a tokenizer (with bounded work, in a child process that Ctrl-C stops: `engine.bpe_worker`) and
saving it. Host-only: must not import wgpu, `engine.device`/`engine.runtime` or `rl`. Pretrained models bring their
own `tokenizer.json`; `engine.hf.load_tokenizer` reads those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from wgrpo.engine.errors import InputError

END_OF_TEXT = "<|endoftext|>"
REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
SPECIAL_TOKENS = (END_OF_TEXT, *REASONING_TAGS)  # ids 0..4 in this order

# The work bound of training. The BPE trainer's time grows with the square of a word's length (a 1 MB line
# without spaces took minutes), so no text reaches it in pieces longer than MAX_PIECE_CHARS; and one outsized
# text should not dominate the statistics (nor the time), so only its first MAX_TEXT_CHARS characters count.
MAX_TEXT_CHARS = 100_000
MAX_PIECE_CHARS = 1_000
_WORKER = Path(__file__).with_name("bpe_worker.py")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2,
                    special_tokens: Sequence[str] = SPECIAL_TOKENS) -> Tokenizer:
    """Train a byte-level BPE on `texts`; every string encodes (no unknown token) and decodes back exactly.

    Digits are split one per token (so numbers tokenize the same way wherever they appear); `special_tokens`
    (default `<|endoftext|>` (id 0, the end-of-text and padding token), `<think>`, `</think>`, `<answer>`,
    `</answer>`) get the first ids and are never split. `vocab_size` counts the 256 byte tokens and the special
    tokens; the result may be smaller when the texts hold fewer merges.

    The statistics come from `training_pieces(texts)`: at most MAX_TEXT_CHARS characters of each text, in pieces
    of at most MAX_PIECE_CHARS, so the work grows linearly with the data whatever its lines look like. Training
    runs in a child process (`engine.bpe_worker`) while this one feeds and waits, so Ctrl-C (KeyboardInterrupt)
    stops it promptly.
    """
    special_tokens = list(special_tokens)
    if len(set(special_tokens)) != len(special_tokens) or not all(isinstance(t, str) and t for t in special_tokens):
        raise InputError(f"train_tokenizer: special_tokens must be distinct non-empty strings, got {special_tokens!r}")
    smallest = 256 + len(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise InputError(f"train_tokenizer: vocab_size must be an integer >= {smallest} (256 byte tokens + "
                         f"{len(special_tokens)} special tokens), got {vocab_size!r}")
    if isinstance(texts, str):
        raise TypeError("train_tokenizer: texts must be an iterable of strings, not one string")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = dict(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens)
    return _train_in_worker(tokenizer, trainer, training_pieces(texts))


def training_pieces(texts: Iterable[str]) -> Iterator[str]:
    """What `train_tokenizer` feeds the BPE trainer: the first MAX_TEXT_CHARS characters of each text, cut into
    pieces of at most MAX_PIECE_CHARS characters, each cut before the last space or newline of the piece where
    there is one (the byte-level pre-tokenizer starts a word there anyway, so the words come out the same)."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"train_tokenizer: texts must be strings, got {type(text).__name__}")
        text = text[:MAX_TEXT_CHARS]
        start = 0
        while len(text) - start > MAX_PIECE_CHARS:
            end = start + MAX_PIECE_CHARS
            cut = max(text.rfind(" ", start + 1, end + 1), text.rfind("\n", start + 1, end + 1))
            cut = cut if cut > start else end
            yield text[start:cut]
            start = cut
        yield text[start:]


def _train_in_worker(tokenizer: Tokenizer, trainer_settings: dict, pieces: Iterator[str]) -> Tokenizer:
    """`tokenizer` trained on `pieces` by a BPE trainer with `trainer_settings`, in a `bpe_worker` process.

    The Rust trainer holds the thread that calls it until it is done, deaf to Ctrl-C; in a process of its own it
    leaves this one free to take KeyboardInterrupt (while sending the pieces or waiting for the result), and is
    killed then."""
    settings = {"sys_path": sys.path, "tokenizer": tokenizer.to_str(), "trainer": trainer_settings}
    worker = subprocess.Popen([sys.executable, "-I", str(_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        try:
            worker.stdin.write(json.dumps(settings).encode() + b"\n")
            for piece in pieces:
                worker.stdin.write(json.dumps(piece).encode() + b"\n")
        except BrokenPipeError:  # the worker died early; its stderr says why
            pass
        out, err = worker.communicate()
    except BaseException:
        worker.kill()
        worker.communicate()
        raise
    if worker.returncode:
        raise RuntimeError(f"train_tokenizer: the BPE training process failed (exit code {worker.returncode}): "
                           f"{err.decode(errors='replace').strip()[-2000:]}")
    return Tokenizer.from_str(out.decode())


def tokenizer_config_dict(tokenizer: Tokenizer, eos_token: str | None = None, pad_token: str | None = None,
                          bos_token: str | None = None, model_max_length: int | None = None) -> dict:
    """The `tokenizer_config.json` that makes transformers' AutoTokenizer load `tokenizer.json` as a fast
    tokenizer with these eos/pad/bos tokens. Defaults: `<|endoftext|>` for eos and pad when the vocabulary has it.
    """
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if eos_token is None and END_OF_TEXT in vocab:
        eos_token = END_OF_TEXT
    if pad_token is None:
        pad_token = eos_token
    for name, token in (("eos_token", eos_token), ("pad_token", pad_token), ("bos_token", bos_token)):
        if token is not None and token not in vocab:
            raise InputError(f"tokenizer_config: {name} {token!r} is not in the tokenizer's vocabulary")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos_token,
        "eos_token": eos_token,
        "pad_token": pad_token,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    return config


def save_tokenizer(tokenizer: Tokenizer, directory: str | os.PathLike, **config) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json` (keywords as in `tokenizer_config_dict`) into an
    existing `directory`."""
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"save_tokenizer: expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config_dict(tokenizer, **config), f, indent=2)
        f.write("\n")
