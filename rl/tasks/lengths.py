"""Prompt lengths checked against the model's room for a prompt, before training starts, not when sampled.

Owns `check_prompt_lengths(prompts, tokenizer, max_tokens)`: the first prompt over `max_tokens` tokens, named by
where it comes from (`<file>:<line>` for a JSONL problem), is an `InputError`. Prompts are encoded as generation
encodes them (`tokenizer.encode(prompt)`, special tokens added), in batches (`encode_batch`). A prompt that is
certainly too long is refused by its length in characters first, without encoding it all: with a BPE model
that has no unknown-word token (every byte-level tokenizer: GPT-2, Llama 3, Qwen, SmolLM, ours), each token
covers at most as many characters of the normalized text as the longest vocabulary entry has, and whitespace
is the only text a pre-tokenizer may drop. Other tokenizers (WordPiece, Unigram, a BPE with an unknown token,
which maps a whole unknown word to one token) always go through the encoder.

Takes a `tokenizers.Tokenizer`; imports neither it nor the engine (except the engine's InputError, to raise it).
"""

from __future__ import annotations

from typing import Sequence

from wgrpo.rl.errors import input_error

__all__ = ["check_prompt_lengths"]

_BATCH = 256  # prompts per encode_batch call: bounds the memory of the encodings held at once
_SAMPLE_CHARS = 16384  # characters encoded to estimate the tokens of a prompt refused by its length alone


def _longest_token_chars(tokenizer) -> int | None:
    """The most characters of text one token can stand for, or None where no such bound holds."""
    model = tokenizer.model
    if type(model).__name__ != "BPE" or getattr(model, "unk_token", None):
        return None
    return max(map(len, tokenizer.get_vocab(with_added_tokens=True)), default=1)


def _certainly_over(tokenizer, text: str, max_chars: int) -> bool:
    """True when `text` has more than `max_chars` characters that some token has to cover."""
    if len(text) <= max_chars:
        return False
    normalizer = tokenizer.normalizer  # NFC and accent stripping can shorten the text the model sees
    normalized = normalizer.normalize_str(text) if normalizer is not None else text
    return sum(map(len, normalized.split())) > max_chars


def _estimated_tokens(tokenizer, text: str, at_least: int) -> int:
    """Tokens of `text` extrapolated from its first characters; `at_least` is the bound already proven."""
    sample = text[:_SAMPLE_CHARS]
    return max(at_least, round(len(tokenizer.encode(sample).ids) * len(text) / max(1, len(sample))))


def check_prompt_lengths(prompts: Sequence[tuple[str, str]], tokenizer, max_tokens: int, *,
                         reason: str = "") -> int:
    """InputError for the first of `prompts`, (where, text) pairs, that is over `max_tokens` tokens; else the
    tokens of the longest (0 for none), each prompt encoded once.

    `reason` says where the limit comes from, for the message (e.g. "the model's max_position_embeddings minus
    max_new_tokens"). The message names the prompt (`where`), its length in characters and tokens (`~N` when
    estimated from a prefix), the limit, and how many other prompts are over it too.
    """
    why = f" ({reason})" if reason else ""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise input_error(f"no room for a prompt: the prompt limit is {max_tokens} tokens{why}")
    longest = _longest_token_chars(tokenizer)
    over: list[tuple[int, int, str]] = []  # (index in prompts, tokens, how the count reads)
    pending: list[int] = []
    longest_tokens = 0
    for index, (_, text) in enumerate(prompts):
        if longest is not None and _certainly_over(tokenizer, text, max_tokens * longest):
            estimate = _estimated_tokens(tokenizer, text, max_tokens + 1)
            over.append((index, estimate, f"~{estimate} tokens"))
        else:
            pending.append(index)
    for start in range(0, len(pending), _BATCH):
        chunk = pending[start:start + _BATCH]
        for index, encoding in zip(chunk, tokenizer.encode_batch([prompts[i][1] for i in chunk])):
            longest_tokens = max(longest_tokens, len(encoding.ids))
            if len(encoding.ids) > max_tokens:
                over.append((index, len(encoding.ids), f"{len(encoding.ids)} tokens"))
    if not over:
        return longest_tokens
    index, _, tokens = min(over)
    where, text = prompts[index]
    more = f"; {len(over) - 1} more prompt(s) are over it too" if len(over) > 1 else ""
    raise input_error(f"{where}: prompt is {len(text)} characters ({tokens}), over the limit of {max_tokens} "
                      f"tokens{why}{more}")
