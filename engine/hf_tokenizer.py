"""The tokenizer files of a Hugging Face checkpoint: reading them into a `PretrainedTokenizer` (tokenizer.json,
and tokenizer_config.json, chat_template.jinja, additional_chat_templates/*.jinja, special_tokens_map.json where
present), checking it fits the model's vocabulary, and writing the tokenizer files of a checkpoint.

Host-only: must not import wgpu, torch, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.errors import InputError
from wgrpo.engine.json_file import read_json
from wgrpo.engine.tokenizer import (CHAT_TEMPLATE_DIR, CHAT_TEMPLATE_FILE, SPECIAL_TOKENS_MAP_FILE,
                                    TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, PretrainedTokenizer, save_tokenizer)

CONFIG_FILE = "config.json"


def load_tokenizer(directory: str | os.PathLike, config: ModelConfig | None = None) -> PretrainedTokenizer:
    """The `PretrainedTokenizer` of the checkpoint directory: its `tokenizer.json`, with the tokenizer_config.json,
    chat templates and special_tokens_map.json beside it where present; with the model's `config` (read from
    the same directory's config.json), checked to fit its vocabulary (`check_tokenizer_fits`)."""
    directory = Path(directory)
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise InputError(f"{path}: no tokenizer file (a checkpoint directory needs tokenizer.json; slow-tokenizer "
                         f"files such as vocab.json/merges.txt or tokenizer.model alone are not read)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{path}: not a valid tokenizer.json: {error}") from None
    if config is not None:
        check_tokenizer_fits(tokenizer, config, tokenizer_source=str(path),
                             config_source=str(directory / CONFIG_FILE))
    init_config = None
    if (directory / TOKENIZER_CONFIG_FILE).is_file():
        init_config = read_json(directory / TOKENIZER_CONFIG_FILE)
        if not isinstance(init_config, dict):
            raise InputError(f"{directory / TOKENIZER_CONFIG_FILE}: expected a JSON object, got "
                             f"{type(init_config).__name__}")
    return PretrainedTokenizer(tokenizer, init_config, _tokenizer_files(directory), source=str(directory))


def _tokenizer_files(directory: Path) -> dict[str, str]:
    """The chat templates and special_tokens_map.json of the checkpoint, as text, by their relative names."""
    names = [CHAT_TEMPLATE_FILE, SPECIAL_TOKENS_MAP_FILE]
    if (directory / CHAT_TEMPLATE_DIR).is_dir():
        names += sorted(f"{CHAT_TEMPLATE_DIR}/{path.name}" for path in (directory / CHAT_TEMPLATE_DIR).glob("*.jinja")
                        if path.is_file())
    files = {}
    for name in names:
        path = directory / name
        if not path.is_file():
            continue
        try:
            files[name] = path.read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(f"{path}: cannot read ({error.strerror})") from None
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: not UTF-8 text ({error})") from None
    if SPECIAL_TOKENS_MAP_FILE in files:
        read_json(directory / SPECIAL_TOKENS_MAP_FILE)  # refused here, naming the file, when it is not JSON
    return files


def check_tokenizer_fits(tokenizer: Tokenizer | PretrainedTokenizer, config: ModelConfig,
                         tokenizer_source: str = "tokenizer", config_source: str = "config") -> None:
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


def _token_of(tokenizer: Tokenizer | PretrainedTokenizer, ids: tuple, field_name: str) -> str | None:
    if not ids or ids[0] is None:
        return None
    token = tokenizer.id_to_token(ids[0])
    if token is None:
        raise InputError(f"write_checkpoint: config.{field_name} = {ids[0]} is not in the tokenizer's vocabulary "
                         f"(size {tokenizer.get_vocab_size()})")
    return token


def write_tokenizer_files(tokenizer: Tokenizer | PretrainedTokenizer, config: ModelConfig, directory: Path) -> None:
    """Write the tokenizer files into `directory` for a model with `config`; refuses a tokenizer with ids
    outside the model's vocabulary.

    A `tokenizers.Tokenizer` (our own) gets tokenizer.json and a generated tokenizer_config.json (the config's
    eos, pad and bos ids named as tokens, model_max_length its max_position_embeddings). A `PretrainedTokenizer`
    writes back the tokenizer_config.json it was loaded with, unchanged (chat template, tokenizer class, special
    tokens, added_tokens_decoder, ...), and its chat_template.jinja / additional_chat_templates /
    special_tokens_map.json files, so transformers loads the same template and renders the same text; one loaded
    without a tokenizer_config.json gets the generated one."""
    check_tokenizer_fits(tokenizer, config, "write_checkpoint: tokenizer", "write_checkpoint: config")
    special = dict(eos_token=_token_of(tokenizer, config.eos_token_ids[:1], "eos_token_id"),
                   pad_token=_token_of(tokenizer, (config.pad_token_id,), "pad_token_id"),
                   bos_token=_token_of(tokenizer, (config.bos_token_id,), "bos_token_id"),
                   model_max_length=config.max_position_embeddings)
    save_tokenizer(tokenizer, directory, **special)


def check_tokenizer_type(tokenizer, op: str) -> None:
    """TypeError unless `tokenizer` is a tokenizer this module can write (or None)."""
    if tokenizer is not None and not isinstance(tokenizer, (Tokenizer, PretrainedTokenizer)):
        raise TypeError(f"{op}: tokenizer must be a tokenizers.Tokenizer or a PretrainedTokenizer (load_pretrained's), "
                        f"got {type(tokenizer).__name__}")
