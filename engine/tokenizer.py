"""Tokenizers: a byte-level BPE for wgrpo's own small models, and `PretrainedTokenizer`, a checkpoint's tokenizer
with the files beside it that transformers reads (tokenizer_config.json, the chat templates).

Owns: training a tokenizer (with bounded work, in a child process that Ctrl-C stops: `engine.bpe_worker`);
`PretrainedTokenizer` (a `tokenizers.Tokenizer` that cannot be subclassed, wrapped: everything of the wrapped
tokenizer, plus `chat_template`, `init_config`, `special_tokens` and `apply_chat_template`, rendered by
`engine.chat_template`); and saving either (`save_tokenizer`): our own tokenizers with a generated
tokenizer_config.json, a pretrained one with its own files as it came. Reading a checkpoint's files is
`engine.hf_tokenizer`'s. Host-only: must not import wgpu, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from wgrpo.engine.chat_template import render_chat, select_template
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
        # not communicate() again: after one interrupted early (Ctrl-C while it flushed stdin) a second fails on
        # state the first never set up; the killed worker's pipes are closed by hand and it is reaped
        for pipe in (worker.stdin, worker.stdout, worker.stderr):
            with contextlib.suppress(OSError):  # the unsent rest of stdin meets a closed pipe
                pipe.close()
        worker.wait()
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


def save_tokenizer(tokenizer: "Tokenizer | PretrainedTokenizer", directory: str | os.PathLike, **config) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json` into an existing `directory`.

    A `tokenizers.Tokenizer` gets the config of `tokenizer_config_dict` (keywords as there). A
    `PretrainedTokenizer` writes its own tokenizer_config.json and chat-template files as they came
    (`PretrainedTokenizer.save_pretrained`); the keywords count only when it has no tokenizer_config.json."""
    if isinstance(tokenizer, PretrainedTokenizer):
        tokenizer.save_pretrained(directory, **config)
        return
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"save_tokenizer: expected a tokenizers.Tokenizer or a PretrainedTokenizer, got "
                        f"{type(tokenizer).__name__}")
    tokenizer.save(os.path.join(directory, TOKENIZER_FILE))
    _write_json(Path(directory) / TOKENIZER_CONFIG_FILE, tokenizer_config_dict(tokenizer, **config))


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---- pretrained tokenizers ---------------------------------------------------------------------------------

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # the default template, in newer checkpoints
CHAT_TEMPLATE_DIR = "additional_chat_templates"  # <name>.jinja: the other named templates
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"  # older checkpoints' special tokens
# the named special tokens transformers passes to a chat template (its SPECIAL_TOKENS_ATTRIBUTES)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _is_tokenizer_file_name(name: str) -> bool:
    """Whether `name` (relative to the checkpoint) is one of the files a `PretrainedTokenizer` keeps beside
    tokenizer_config.json: chat_template.jinja, additional_chat_templates/<name>.jinja, special_tokens_map.json."""
    if name in (CHAT_TEMPLATE_FILE, SPECIAL_TOKENS_MAP_FILE):
        return True
    folder, _, file = name.partition("/")
    return folder == CHAT_TEMPLATE_DIR and file.endswith(".jinja") and "/" not in file and len(file) > 6


class PretrainedTokenizer:
    """A checkpoint's tokenizer: the `tokenizers.Tokenizer` of its tokenizer.json, and the files that transformers
    reads beside it.

    It stands in for the wrapped tokenizer: every attribute and method not defined here is the wrapped one's
    (encode, encode_batch, decode, get_vocab, token_to_id, to_str, save, model, normalizer, ...; setting one sets
    it there). Its own: `tokenizer` (the wrapped one), `init_config` (the tokenizer_config.json it was loaded
    with, {} when there was none), `files` (chat_template.jinja, additional_chat_templates/<name>.jinja and
    special_tokens_map.json, as text, when they were there), `chat_template` (None, a template, or a dict of
    named templates: the .jinja files when there are any, else tokenizer_config.json's `chat_template`, as
    transformers picks them), `special_tokens` (bos_token, eos_token, ... as the template sees them) and
    `apply_chat_template`. `source` names the files' directory in messages.
    """

    _OWN = frozenset({"_tokenizer", "_init_config", "_files", "_source", "_chat_template", "_template_source",
                      "_special_tokens"})

    def __init__(self, tokenizer: Tokenizer, init_config: Mapping[str, Any] | None = None,
                 files: Mapping[str, str] | None = None, source: str = "tokenizer"):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"PretrainedTokenizer: expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if init_config is not None and not isinstance(init_config, Mapping):
            raise InputError(f"{source}/{TOKENIZER_CONFIG_FILE}: expected a JSON object, got "
                             f"{type(init_config).__name__}")
        files = dict(files or {})
        for name, text in files.items():
            if not _is_tokenizer_file_name(name) or not isinstance(text, str):
                raise ValueError(f"PretrainedTokenizer: files[{name!r}] is not a chat template or "
                                 f"special_tokens_map.json text")
        set_own = object.__setattr__
        set_own(self, "_tokenizer", tokenizer)
        set_own(self, "_init_config", copy.deepcopy(dict(init_config or {})))
        set_own(self, "_files", files)
        set_own(self, "_source", str(source))
        template, template_source = self._read_chat_template()
        set_own(self, "_chat_template", template)
        set_own(self, "_template_source", template_source)
        set_own(self, "_special_tokens", self._read_special_tokens())

    # ---- what it holds ------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def init_config(self) -> dict:
        return copy.deepcopy(self._init_config)

    @property
    def files(self) -> dict[str, str]:
        return dict(self._files)

    @property
    def chat_template(self) -> str | dict[str, str] | None:
        template = self._chat_template
        return dict(template) if isinstance(template, dict) else template

    @property
    def special_tokens(self) -> dict[str, str]:
        return dict(self._special_tokens)

    def with_chat_template(self, template: str) -> PretrainedTokenizer:
        """This tokenizer with `template` as its chat template (in its tokenizer_config.json, so checkpoints keep
        it; the .jinja template files it had are left out, as they would win over it)."""
        files = {name: text for name, text in self._files.items()
                 if name != CHAT_TEMPLATE_FILE and not name.startswith(CHAT_TEMPLATE_DIR + "/")}
        return PretrainedTokenizer(Tokenizer.from_str(self._tokenizer.to_str()),
                                   {**self._init_config, "chat_template": template}, files, self._source)

    def _read_chat_template(self) -> tuple[str | dict[str, str] | None, str]:
        """(the template(s), the file they come from): the .jinja files win over tokenizer_config.json's entry."""
        templates = {}
        if CHAT_TEMPLATE_FILE in self._files:
            templates["default"] = self._files[CHAT_TEMPLATE_FILE]
        for name in sorted(self._files):
            if name.startswith(CHAT_TEMPLATE_DIR + "/"):
                templates[name[len(CHAT_TEMPLATE_DIR) + 1:-len(".jinja")]] = self._files[name]
        if templates:
            where = CHAT_TEMPLATE_FILE if CHAT_TEMPLATE_FILE in self._files else CHAT_TEMPLATE_DIR
            return (templates["default"] if list(templates) == ["default"] else templates), f"{self._source}/{where}"
        where = f"{self._source}/{TOKENIZER_CONFIG_FILE}"
        value = self._init_config.get("chat_template")
        if value is None or isinstance(value, str):
            return value, where
        if isinstance(value, list) and value and all(
                isinstance(entry, Mapping) and isinstance(entry.get("name"), str)
                and isinstance(entry.get("template"), str) for entry in value):
            return {entry["name"]: entry["template"] for entry in value}, where
        raise InputError(f"{where}: field 'chat_template' must be a template string or a list of "
                         f"{{'name': ..., 'template': ...}} objects, got {type(value).__name__}")

    def _read_special_tokens(self) -> dict[str, str]:
        """The named special tokens as transformers reads them: tokenizer_config.json's; then, in a checkpoint
        whose config has no added_tokens_decoder, special_tokens_map.json's over them; a pad token from the
        tokenizer's padding when neither names one."""
        where = f"{self._source}/{TOKENIZER_CONFIG_FILE}"
        named = {name: self._init_config[name] for name in SPECIAL_TOKEN_NAMES if name in self._init_config}
        if "added_tokens_decoder" not in self._init_config and SPECIAL_TOKENS_MAP_FILE in self._files:
            where = f"{self._source}/{SPECIAL_TOKENS_MAP_FILE}"
            try:
                legacy = json.loads(self._files[SPECIAL_TOKENS_MAP_FILE])
            except json.JSONDecodeError as error:
                raise InputError(f"{where}: not valid JSON ({error})") from None
            if not isinstance(legacy, dict):
                raise InputError(f"{where}: expected a JSON object, got {type(legacy).__name__}")
            named.update({name: legacy[name] for name in SPECIAL_TOKEN_NAMES if name in legacy})
        padding = self._tokenizer.padding
        if "pad_token" not in named and padding:
            named["pad_token"] = padding["pad_token"]
        tokens = {}
        for name, value in named.items():
            if isinstance(value, Mapping) and isinstance(value.get("content"), str):  # a serialized AddedToken
                value = value["content"]
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}: field {name!r} must be a token string or an AddedToken object, got "
                                 f"{type(value).__name__}")
            if value is not None:
                tokens[name] = value
        return tokens

    # ---- chat templates -----------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = False, *, chat_template: str | None = None,
                            tools: Sequence[Mapping] | None = None, documents: Sequence[Mapping] | None = None,
                            continue_final_message: bool | str = False, **kwargs) -> str | list[int]:
        """One conversation rendered with this tokenizer's chat template, exactly as transformers'
        `apply_chat_template` renders it: the text, or with `tokenize` its token ids (encoded without the
        special tokens a post-processor adds, as transformers does: the template writes its own).

        `messages`: a list of {"role", "content"} dicts. `add_generation_prompt` opens the assistant's turn;
        `continue_final_message` leaves the last message open instead. `chat_template`: the name of one of
        the tokenizer's named templates, or a template text. `tools` (JSON schema dicts), `documents` and
        `kwargs` (e.g. `date_string`, `enable_thinking`) are variables of the template; the tokenizer's
        `special_tokens` (bos_token, eos_token, ...) are too, unless a keyword gives the same name.
        InputError when the tokenizer has no chat template, when `messages` are not such dicts, or when the
        template fails (its `raise_exception`, a syntax error), naming the template's file."""
        template = select_template(self._chat_template, chat_template, tools, source=self._source)
        source = self._template_source if template is not chat_template else "chat_template argument"
        text = render_chat(template, messages, add_generation_prompt=add_generation_prompt,
                           special_tokens=self._special_tokens, tools=tools, documents=documents,
                           continue_final_message=continue_final_message, source=source, **kwargs)
        if tokenize:
            return self._tokenizer.encode(text, add_special_tokens=False).ids
        return text

    # ---- writing ----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, **config) -> None:
        """Write tokenizer.json, tokenizer_config.json and the chat-template / special-tokens files into the
        existing `directory`, so that transformers (and `load_tokenizer`) read back the same tokenizer, chat
        template and special tokens. tokenizer_config.json is the one it was loaded with, unchanged; without
        one, the config `tokenizer_config_dict(**config)` generates."""
        directory = Path(directory)
        self._tokenizer.save(str(directory / TOKENIZER_FILE))
        tokenizer_config = self._init_config or tokenizer_config_dict(self._tokenizer, **config)
        _write_json(directory / TOKENIZER_CONFIG_FILE, tokenizer_config)
        for name, text in self._files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text, encoding="utf-8")

    # ---- standing in for the wrapped tokenizer -------------------------------------------------------------
    def __getattr__(self, name: str):
        # own attributes not set yet (while unpickling) and protocol hooks (__deepcopy__, ...) are never the
        # wrapped tokenizer's: a copy of the wrapper must be a wrapper
        if name in PretrainedTokenizer._OWN or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self._tokenizer, name)

    def __setattr__(self, name: str, value) -> None:
        if name in PretrainedTokenizer._OWN or isinstance(getattr(type(self), name, None), property):
            raise AttributeError(f"PretrainedTokenizer.{name} cannot be set")
        setattr(self._tokenizer, name, value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(dir(self._tokenizer)))

    def __reduce__(self):
        return _rebuild, (self._tokenizer.to_str(), self._init_config, self._files, self._source)

    def __repr__(self) -> str:
        template = "none" if self._chat_template is None else (
            f"{len(self._chat_template)} named" if isinstance(self._chat_template, dict) else "one")
        return (f"PretrainedTokenizer({self._source!r}, vocab_size={self._tokenizer.get_vocab_size()}, "
                f"chat templates: {template})")


def _rebuild(tokenizer_json: str, init_config: dict, files: dict, source: str) -> PretrainedTokenizer:
    return PretrainedTokenizer(Tokenizer.from_str(tokenizer_json), init_config, files, source)
