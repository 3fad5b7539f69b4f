"""The common task interface: `Problem`, `Task`, the prompt template and the held-out split.

A task turns a key into a `Problem` (`sample`), keeps train and eval problems disjoint, scores a completion
into named reward parts (`reward_parts`: `format` and `accuracy` for the rule tasks, its `reward_names`;
`rewards` scores a whole batch), and checks before training that its prompts fit the model (`check_prompts`).
Two families (and `rl.tasks.dataset.DatasetTask`, rows scored by reward functions):
- `GeneratedTask`: problems drawn from a seeded numpy generator; `sample(i, split)` is problem i of the split.
- `JsonlTask`: problems read from a JSONL file; `sample(i, split)` is record i (mod size) of the split. A
  record's prompt may be a conversation (TRL's conversational format: a list of {"role", "content"} messages);
  such prompts are rendered with the model's chat template (`ChatTemplate`, which every task with
  conversations shares) once the task has the model's tokenizer (`use_tokenizer`, before sampling or
  `check_prompts`), ending with the assistant's turn opened.

Held-out split: every problem has a content key (countdown: sorted numbers and target; arithmetic: the
operation; JSONL: the question text, or a conversation's messages' text, whatever the chat template); a problem
is in `eval` iff sha256(task name + key) falls in the lowest `eval_fraction` of the hash range. So an eval
problem never appears in training, whatever the seeds or the file order (duplicates land on the same side).
Generated splits also use disjoint seed streams.

Bad options and bad data raise `wgrpo.engine.InputError` naming the option, or the file and line. Pure Python +
numpy; imports the engine only to raise that error (`rl.errors`); a chat template is rendered by the tokenizer
given to `use_tokenizer` (its `chat_template` and `apply_chat_template`), never here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.rl.jsonl import Record, field as record_field, is_conversation, messages_field, read_jsonl
from wgrpo.rl.rewards import combine, format_reward
from wgrpo.rl.tasks.lengths import check_prompt_lengths

__all__ = ["Problem", "Task", "GeneratedTask", "JsonlTask", "ChatTemplate", "render_prompt", "in_eval_split",
           "TEMPLATES", "SPLITS", "DEFAULT_WEIGHTS"]

SPLITS = ("train", "eval")
DEFAULT_WEIGHTS = {"accuracy": 1.0, "format": 0.1}
_MAX_TRIES = 10_000
_PROMPTS_CHECKED = 16  # per split, of a generated task: its prompts differ only in a few numbers

PREAMBLE = ("A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
            "The Assistant first thinks about the reasoning process in the mind and then provides the User "
            "with the answer.")


TEMPLATES = ("r1", "plain")


def render_prompt(question: str, *, think_prefix: bool, template: str = "r1") -> str:
    """`r1`: the R1-Zero / TinyZero base-model template (a preamble, then User/Assistant turns); `plain`: the
    question alone, for small models trained from scratch where the preamble only costs tokens. With
    `think_prefix` the prompt ends with `<think>`, so the model's completion starts inside the reasoning and is
    scored as `"<think>" + completion`."""
    if template == "plain":
        return f"{question}\n<think>" if think_prefix else f"{question}\n"
    head = f"{PREAMBLE}\nUser: {question}\nAssistant:"
    return head + " Let me solve this step by step.\n<think>" if think_prefix else head


def in_eval_split(task: str, key: str, eval_fraction: float) -> bool:
    digest = hashlib.sha256(f"{task}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < eval_fraction * 2.0 ** 64


@dataclass(frozen=True, eq=False)
class Problem:
    """One problem. `prompt` is the full text the model continues; `question` the instruction alone (for a
    conversation: its messages' text, a `role: content` line each); `answer` the reference answer text (a
    number, or a solution expression for countdown; empty for code); `meta` the data the reward needs
    (countdown: numbers, target; code: tests, setup); `messages` the conversation of a conversational prompt
    (empty for a text prompt), which the model's chat template renders into `prompt`."""
    task: str
    id: str
    split: str
    question: str
    prompt: str
    answer: str
    think_in_prompt: bool
    meta: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, str], ...] = ()


class Task:
    """Base of all tasks. Subclasses set `name` and implement `_accuracy` and the sampling hooks.

    `reward_names`: the reward parts `rewards` returns, in order; `primary_reward`: the one that says whether a
    completion is correct (full marks: 1.0), for pass@1; `stop_strings`: where generation ends a completion
    besides the end-of-text token (the rule tasks stop after the answer)."""

    name = "task"
    reward_names: tuple[str, ...] = ("format", "accuracy")
    primary_reward = "accuracy"
    stop_strings: tuple[str, ...] = ("</answer>",)

    def __init__(self, *, think_prefix: bool = True, eval_fraction: float = 0.1, template: str = "r1"):
        if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) \
                or not 0.0 <= eval_fraction < 1.0:
            raise input_error(f"{self.name}: task option 'eval_fraction' must be a number in [0, 1), "
                              f"got {eval_fraction!r}")
        if template not in TEMPLATES:
            raise input_error(f"{self.name}: task option 'template' must be one of {', '.join(TEMPLATES)}, "
                              f"got {template!r}")
        self.template = template
        self.think_prefix = bool(think_prefix)
        self.eval_fraction = float(eval_fraction)
        self.default_weights = dict(DEFAULT_WEIGHTS)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # sampling ------------------------------------------------------------------------------------------
    def sample(self, key: int | np.random.Generator, split: str = "train") -> Problem:
        """Problem number `key` of `split` (deterministic), or a random one drawn from the generator `key`."""
        _check_split(split)
        if isinstance(key, np.random.Generator):
            return self._sample_rng(key, split)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
            return self._sample_index(int(key), split)
        raise TypeError(f"{self.name}.sample: key must be a non-negative int or numpy Generator, got {key!r}")

    def eval_problems(self, n: int | None = None) -> list[Problem]:
        """The first `n` eval problems (all of them for a JSONL task when n is None)."""
        if n is None:
            n = self.size("eval")
            if n is None:
                raise ValueError(f"{self.name}: a generated task needs an explicit number of eval problems")
        return [self.sample(i, "eval") for i in range(n)]

    def size(self, split: str = "train") -> int | None:
        """Number of problems in `split`; None for an unbounded generator."""
        _check_split(split)
        return None

    def _sample_index(self, index: int, split: str) -> Problem:
        raise NotImplementedError

    def _sample_rng(self, rng: np.random.Generator, split: str) -> Problem:
        raise NotImplementedError

    # the model's tokenizer ------------------------------------------------------------------------------
    def use_tokenizer(self, tokenizer) -> None:
        """Take the model's tokenizer, before sampling: a task with conversational prompts renders them with its
        chat template. Generated tasks build their prompts as text and need nothing from it."""

    # prompt lengths ------------------------------------------------------------------------------------
    def check_prompts(self, tokenizer, max_prompt_tokens: int, *, reason: str = "") -> int:
        """InputError naming the first prompt of this task longer than `max_prompt_tokens` tokens of
        `tokenizer` (a `tokenizers.Tokenizer`), with its length and the limit; `reason` says where the limit
        comes from. Returns the tokens of the longest prompt checked. A JSONL task checks every train and eval
        problem, named `<file>:<line>` (a dataset task: every row, by its name); a generated task checks its
        first 16 problems of each split (its prompts are short by construction and differ only in a few
        numbers, so this catches a model whose positions cannot hold the template, not a rare long draw)."""
        return check_prompt_lengths(self._prompts_to_check(), tokenizer, max_prompt_tokens, reason=reason)

    def _prompts_to_check(self) -> list[tuple[str, str]]:
        """(where, prompt) of the problems `check_prompts` checks, in the order they are reported."""
        raise NotImplementedError

    def _prompt(self, question: str) -> str:
        return render_prompt(question, think_prefix=self.think_prefix, template=self.template)

    # rewards -------------------------------------------------------------------------------------------
    def scored_text(self, completion: str, problem: Problem) -> str:
        return "<think>" + completion if problem.think_in_prompt else completion

    def reward_parts(self, completion: str, problem: Problem) -> dict[str, float]:
        """{'format': format_reward, 'accuracy': the task's correctness reward}, each in [0, 1]."""
        if problem.task != self.name:
            raise ValueError(f"{self.name}.reward_parts: problem comes from task {problem.task!r}")
        return {"format": format_reward(completion, think_in_prompt=problem.think_in_prompt),
                "accuracy": self._accuracy(self.scored_text(completion, problem), problem)}

    def reward(self, completion: str, problem: Problem,
               weights: Mapping[str, float] | None = None) -> tuple[float, dict[str, float]]:
        """(combined reward, parts) with `weights` by part name (default: accuracy 1.0, format 0.1)."""
        parts = self.reward_parts(completion, problem)
        return combine(parts, self.default_weights if weights is None else weights), parts

    def rewards(self, completions: Sequence[str], problems: Sequence[Problem],
                weights: Mapping[str, float] | None = None,
                completion_ids: Sequence[Sequence[int]] | None = None) -> list[tuple[float, dict[str, float]]]:
        """`reward` of each (completion, problem) pair, in order: one at a time here; a task whose rewards
        wait on something (the code task's sandbox runs) overrides it to score several at once. The
        completions' token ids (`completion_ids`) are for reward functions that want them; rule rewards read
        the text alone."""
        if len(completions) != len(problems):
            raise ValueError(f"{self.name}.rewards: {len(completions)} completions but {len(problems)} problems")
        return [self.reward(completion, problem, weights) for completion, problem in zip(completions, problems)]

    def _accuracy(self, text: str, problem: Problem) -> float:
        raise NotImplementedError


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class GeneratedTask(Task):
    """Problems generated from a seed. Subclasses implement `_generate(rng) -> (key, question, answer, meta)`."""

    def __init__(self, *, seed: int = 0, think_prefix: bool = True, eval_fraction: float = 0.1,
                 template: str = "r1"):
        super().__init__(think_prefix=think_prefix, eval_fraction=eval_fraction, template=template)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise input_error(f"{self.name}: task option 'seed' must be a non-negative int, got {seed!r}")
        self.seed = int(seed)

    def _prompts_to_check(self) -> list[tuple[str, str]]:
        splits = ("train", "eval") if self.eval_fraction > 0 else ("train",)
        return [(f"{self.name} {split} problem {i}", self.sample(i, split).prompt)
                for split in splits for i in range(_PROMPTS_CHECKED)]

    def _generate(self, rng: np.random.Generator) -> tuple[str, str, str, dict]:
        raise NotImplementedError

    def _sample_index(self, index: int, split: str) -> Problem:
        stream = SPLITS.index(split)
        return self._sample_rng(np.random.default_rng([self.seed, stream, index]), split)

    def _sample_rng(self, rng: np.random.Generator, split: str) -> Problem:
        want_eval = split == "eval"
        if want_eval and self.eval_fraction == 0.0:
            raise input_error(f"{self.name}: eval_fraction is 0, so there is no eval split")
        for _ in range(_MAX_TRIES):
            key, question, answer, meta = self._generate(rng)
            if in_eval_split(self.name, key, self.eval_fraction) == want_eval:
                return Problem(task=self.name, id=key, split=split, question=question,
                               prompt=self._prompt(question), answer=answer, think_in_prompt=self.think_prefix,
                               meta=meta)
        raise input_error(f"{self.name}: no {split} problem in {_MAX_TRIES} draws; the problem space is too small "
                          f"for eval_fraction={self.eval_fraction}")


class StoredTask(Task):
    """Problems held in memory, split into train and eval (`_store`): `sample(i, split)` is problem i (mod size) of
    the split. A conversational problem's prompt is rendered by `use_tokenizer` with the model's chat template,
    the assistant's turn opened, then `_prompt_suffix`; sampling or checking prompts before that is a
    RuntimeError. Subclasses say where the problems come from (`_source_name`), which conversation comes first
    in the data (`_order`) and what an empty split means (`_empty_split`)."""

    _prompt_suffix = ""

    def _store(self, train: list[Problem], held: list[Problem]) -> None:
        self._problems = {"train": [replace(p, split="train") for p in train],
                          "eval": [replace(p, split="eval") for p in held]}
        self._awaiting_template = any(p.messages for split in SPLITS for p in self._problems[split])

    def _source_name(self) -> str:
        raise NotImplementedError

    def _order(self, problem: Problem):
        """A sort key putting the problems in the order of the data they were read from."""
        raise NotImplementedError

    def _empty_split(self, split: str) -> str:
        raise NotImplementedError

    def use_tokenizer(self, tokenizer) -> None:
        """Render every conversational prompt with `tokenizer`'s chat template (`ChatTemplate`); text prompts stay
        as they are. The model's tokenizer, before sampling or `check_prompts`; called again with another
        tokenizer, the prompts are rendered anew. InputError naming the first conversation in the data when the
        tokenizer has no chat template, or the conversation that the template refuses."""
        conversations = [p for split in SPLITS for p in self._problems[split] if p.messages]
        if not conversations:
            return
        template = ChatTemplate(tokenizer, min(conversations, key=self._order).meta["source"])
        for split in SPLITS:
            self._problems[split] = [
                replace(p, prompt=template.render(p.messages, p.meta["source"]) + self._prompt_suffix)
                if p.messages else p for p in self._problems[split]]
        self._awaiting_template = False

    def _check_rendered(self) -> None:
        if self._awaiting_template:
            raise RuntimeError(f"{self.name}: {self._source_name()} has conversational prompts; call "
                               f"task.use_tokenizer(tokenizer) with the model's tokenizer before sampling")

    def size(self, split: str = "train") -> int:
        _check_split(split)
        return len(self._problems[split])

    def _prompts_to_check(self) -> list[tuple[str, str]]:
        self._check_rendered()
        problems = sorted(self._problems["train"] + self._problems["eval"], key=self._order)
        return [(problem.meta["source"], problem.prompt) for problem in problems]

    def _pool(self, split: str) -> list[Problem]:
        self._check_rendered()
        pool = self._problems[split]
        if not pool:
            raise input_error(self._empty_split(split))
        return pool

    def _sample_index(self, index: int, split: str) -> Problem:
        pool = self._pool(split)
        return pool[index % len(pool)]

    def _sample_rng(self, rng: np.random.Generator, split: str) -> Problem:
        pool = self._pool(split)
        return pool[int(rng.integers(len(pool)))]


class JsonlTask(StoredTask):
    """Problems read from JSONL. Subclasses implement `_parse(record) -> (question, answer, meta)`, where the
    question is text or, for a conversational prompt, the record's messages (`conversation(record, name)`).

    path: the dataset (required); eval_path: an optional held-out file. With eval_path, eval is that whole file
    and train is `path` minus any question that also appears in it; without, the hash split with `eval_fraction`.
    Subclasses set `records`, what one line of the file holds, for the message when `path` is missing.

    A conversational prompt is the model's chat template applied to its messages with the assistant's turn
    opened (`add_generation_prompt`), then `<think>` when `think_prefix` is on; `template` does not apply to it.
    It is rendered by `use_tokenizer(tokenizer)`, which must come before sampling and `check_prompts`. Its
    content key is its messages' text, so its split does not depend on the model.
    """

    records = "records, one JSON object per line"

    def __init__(self, *, path: str | None = None, eval_path: str | None = None, think_prefix: bool = True,
                 eval_fraction: float = 0.1, template: str = "r1"):
        if path is None or path == "":
            raise input_error(f"{self.name}: task option 'path' is required: a JSONL file of {self.records}")
        for option, value in (("path", path), ("eval_path", eval_path)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise input_error(f"{self.name}: task option {option!r} must be a file path, got {value!r}")
        super().__init__(think_prefix=think_prefix, eval_fraction=eval_fraction, template=template)
        self.path, self.eval_path = os.fspath(path), None if eval_path is None else os.fspath(eval_path)
        train = [self._problem(record) for record in read_jsonl(self.path)]
        if self.eval_path is not None:
            held = [self._problem(record) for record in read_jsonl(self.eval_path)]
            held_ids = {p.id for p in held}
            train = [p for p in train if p.id not in held_ids]
        else:
            held = [p for p in train if in_eval_split(self.name, p.id, self.eval_fraction)]
            train = [p for p in train if not in_eval_split(self.name, p.id, self.eval_fraction)]
        self._prompt_suffix = "<think>" if self.think_prefix else ""
        self._store(train, held)

    def _parse(self, record: Record) -> tuple[str | tuple[dict, ...], str, dict]:
        raise NotImplementedError

    @staticmethod
    def conversation(record: Record, name: str) -> tuple[dict, ...]:
        """The conversational prompt in field `name` of `record`, for `_parse` to return as its question:
        InputError naming the file and line unless it is a list of {"role", "content"} string messages that
        does not end with the assistant's (the model writes that turn)."""
        messages = messages_field(record, name)
        if messages[-1]["role"] == "assistant":
            raise input_error(f"{record.where()}: the conversation in field {name!r} ends with an assistant message; "
                              f"a prompt ends before the assistant's turn, which the model writes")
        return messages

    def _problem(self, record: Record) -> Problem:
        question, answer, meta = self._parse(record)
        messages = ()
        if isinstance(question, tuple):  # a conversation, rendered once the model's tokenizer is known
            messages = question
            question = "\n".join(f"{m['role']}: {m['content'].strip()}" for m in messages)
        key = hashlib.sha256(question.strip().encode()).hexdigest()[:16]
        return Problem(task=self.name, id=key, split="", question=question,
                       prompt="" if messages else self._prompt(question), answer=answer,
                       think_in_prompt=self.think_prefix, meta={"source": record.where(), **meta}, messages=messages)

    def _source_name(self) -> str:
        return self.path

    def _order(self, problem: Problem) -> tuple[bool, int]:
        path, _, line = problem.meta["source"].rpartition(":")
        return path != self.path, int(line)

    def _empty_split(self, split: str) -> str:
        return (f"{self.name}: the {split} split of {self.path!r} is empty (eval_fraction={self.eval_fraction}, "
                f"eval_path={self.eval_path!r})")


class ChatTemplate:
    """The model's chat template, for rendering conversational prompts (shared by every task that has them).

    `ChatTemplate(tokenizer, first)` raises InputError naming `first` (where the first conversation is) when the
    tokenizer has no chat template. `render(messages, where)` is `apply_chat_template(messages,
    add_generation_prompt=True)`, with the assistant's turn opened; a template that refuses the conversation is
    an InputError naming `where`. Prompts are encoded with the special tokens the tokenizer adds
    (`tokenizer.encode(prompt)`), so a leading token that its post-processor adds and the template writes too
    (Llama 3's `<|begin_of_text|>`) is left out of the text: the model sees it once, as in transformers'
    `apply_chat_template(..., tokenize=True)`."""

    def __init__(self, tokenizer, first: str):
        if getattr(tokenizer, "chat_template", None) is None:
            raise input_error(f"{first}: the prompt is a conversation (a list of role/content messages), but the "
                              f"model's tokenizer has no chat_template to render it with; give a chat model (its "
                              f"tokenizer_config.json or chat_template.jinja holds the template) or write the "
                              f"prompt as text")
        self.tokenizer = tokenizer
        self.prefix = _added_prefix(tokenizer)

    def render(self, messages: Sequence[Mapping[str, str]], where: str) -> str:
        try:
            text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        except ValueError as error:  # the engine's InputError: no template, or the template refused the messages
            raise input_error(f"{where}: {error}") from None
        return text[len(self.prefix):] if self.prefix and text.startswith(self.prefix) else text


def _added_prefix(tokenizer) -> str:
    """The text of the special tokens that `tokenizer`'s post-processor puts before every encoded text: '' for
    most tokenizers, '<|begin_of_text|>' for Llama 3's."""
    plain = tokenizer.encode("x", add_special_tokens=False).ids
    full = tokenizer.encode("x").ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return tokenizer.decode(full[:start], skip_special_tokens=False) if start else ""
    return ""


# re-exported for task modules
__all__ += ["Record", "record_field", "is_conversation"]
