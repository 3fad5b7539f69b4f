"""The tokenizer files of a Hugging Face checkpoint: reading `tokenizer.json`, checking it fits the model's
vocabulary, and writing the tokenizer files of a checkpoint.

Host-only: must not import wgpu, torch, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.errors import InputError
from wgrpo.engine.tokenizer import save_tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"


def load_tokenizer(directory: str | os.PathLike, config: ModelConfig | None = None) -> Tokenizer:
    """The `tokenizers.Tokenizer` of the checkpoint directory's `tokenizer.json`; with the model's `config`
    (read from the same directory's config.json), checked to fit its vocabulary (`check_tokenizer_fits`)."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise InputError(f"{path}: no tokenizer file (a checkpoint directory needs tokenizer.json; slow-tokenizer "
                         f"files such as vocab.json/merges.txt or tokenizer.model alone are not read)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{path}: not a valid tokenizer.json: {error}") from None
    if config is not None:
        check_tokenizer_fits(tokenizer, config, tokenizer_source=str(path),
                             config_source=str(Path(directory) / CONFIG_FILE))
    return tokenizer


def check_tokenizer_fits(tokenizer: Tokenizer, config: ModelConfig, tokenizer_source: str = "tokenizer",
                         config_source: str = "config") -> None:
    """Raise InputError when a token id of `tokenizer` (added and special tokens included) has no row in the
    model's embedding, i.e. is >= `config.vocab_size`. A larger model vocabulary is fine: Qwen pads its
    embedding beyond the tokenizer's ids."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if not vocab:
        return
    token, top = max(vocab.items(), key=lambda item: item[1])
    if top >= config.vocab_size:
        raise InputError(f"{tokenizer_source}: the tokenizer has {len(vocab)} tokens with ids up to {top} ({token!r}), "
                         f"but {config_source} has vocab_size {config.vocab_size}: ids >= {config.vocab_size} have "
                         f"no embedding row (is this the tokenizer of another model?)")




def _token_of(tokenizer: Tokenizer, ids: tuple, field_name: str) -> str | None:
    if not ids or ids[0] is None:
        return None
    token = tokenizer.id_to_token(ids[0])
    if token is None:
        raise InputError(f"write_checkpoint: config.{field_name} = {ids[0]} is not in the tokenizer's vocabulary "
                         f"(size {tokenizer.get_vocab_size()})")
    return token


def write_tokenizer_files(tokenizer: Tokenizer, config: ModelConfig, directory: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json into `directory` for a model with `config` (its eos, pad and
    bos ids named as tokens); refuses a tokenizer with ids outside the model's vocabulary."""
    check_tokenizer_fits(tokenizer, config, "write_checkpoint: tokenizer", "write_checkpoint: config")
    special = dict(eos_token=_token_of(tokenizer, config.eos_token_ids[:1], "eos_token_id"),
                   pad_token=_token_of(tokenizer, (config.pad_token_id,), "pad_token_id"),
                   bos_token=_token_of(tokenizer, (config.bos_token_id,), "bos_token_id"),
                   model_max_length=config.max_position_embeddings)
    save_tokenizer(tokenizer, directory, **special)


def check_tokenizer_type(tokenizer, op: str) -> None:
    """TypeError unless `tokenizer` is a tokenizer this module can write."""
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"{op}: tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
