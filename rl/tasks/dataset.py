"""A task over a TRL-style prompt dataset scored by reward functions (TRL's `reward_funcs=`, `train_dataset=`).

`DatasetTask(rows, reward_functions, eval_rows=None)`: its problems are the rows (`rl.datasets.load_rows`), in
order; `sample(i, split)` is row i (mod size) of the split. There is no hash split: eval is `eval_rows`, and
without them `size("eval")` is 0. As in TRL, a text prompt is the model's input exactly as written (no template,
no `<think>` added) and a conversational prompt is rendered with the model's chat template (`use_tokenizer`,
`rl.tasks.base.ChatTemplate`), ending with the assistant's turn opened. Generation stops at the end-of-text
token only (`stop_strings` is empty).

`rewards` calls every reward function once per batch in TRL's convention (`rl.reward_scoring`): prompts and
completions as text, or for a conversation the prompt's messages and `[{"role": "assistant", "content": text}]`;
the rows' other columns by name; `trainer_state=` the attribute `trainer_state` (None until a trainer sets it).
Its reward parts are the functions' names, with NaN where a function returned None. The synchronous functions run
in the calling thread, the async ones on the functions' event loop; `rewards_pending` returns once the
synchronous ones have run (`PendingRewards`), so a rollout generates its next chunk while the async ones run.
Pure Python + numpy.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from wgrpo.rl.datasets import PROMPT, Row, columns
from wgrpo.rl.errors import input_error
from wgrpo.rl.reward_scoring import PendingScores, RewardFunctions
from wgrpo.rl.tasks.base import Problem, StoredTask

__all__ = ["DatasetTask", "PendingRewards"]


class DatasetTask(StoredTask):
    """Rows with prompts, scored by reward functions; see the module docstring. `reward_functions` is a
    `RewardFunctions` (or a list of callables, weighted 1.0 each). The functions' signatures are checked
    against the rows' columns here, before any work (`RewardFunctions.check_columns`); `source` names the
    dataset in that check's messages (default: taken from the first row's name)."""

    name = "dataset"
    stop_strings: tuple[str, ...] = ()

    def __init__(self, rows: Sequence[Row], reward_functions: RewardFunctions | Sequence,
                 eval_rows: Sequence[Row] | None = None, *, source: str | None = None):
        super().__init__(think_prefix=False, eval_fraction=0.0, template="plain")
        rows, eval_rows = list(rows), list(eval_rows or ())
        if not rows:
            raise input_error("dataset: no training rows; the train dataset needs at least one row with a 'prompt'")
        for row in rows + eval_rows:
            if not isinstance(row, Row):
                raise TypeError(f"DatasetTask: rows must be rl.datasets.Row (see load_rows), got {type(row).__name__}")
        if not isinstance(reward_functions, RewardFunctions):
            reward_functions = RewardFunctions(reward_functions)
        self.reward_functions = reward_functions
        self.reward_names = reward_functions.names
        self.primary_reward = reward_functions.names[0]
        self.default_weights = dict(reward_functions.weights)
        self.columns = columns(rows + eval_rows)
        self.source = source or _dataset_of(rows[0].where)
        reward_functions.check_columns(self.columns, self.source)
        self.trainer_state: Any = None  # what reward functions get as trainer_state=; the trainer sets it
        self._rows_order = {row.where: index for index, row in enumerate(rows + eval_rows)}
        self._store([self._problem(row, "train") for row in rows], [self._problem(row, "eval") for row in eval_rows])

    def _problem(self, row: Row, split: str) -> Problem:
        prompt = row.data[PROMPT]
        row_columns = {column: row.data.get(column) for column in self.columns}
        answer = row_columns.get("answer")
        answer = str(answer) if isinstance(answer, (str, int, float)) and not isinstance(answer, bool) else ""
        if isinstance(prompt, str):
            return Problem(task=self.name, id=row.where, split=split, question=prompt, prompt=prompt, answer=answer,
                           think_in_prompt=prompt.rstrip().endswith("<think>"),
                           meta={"source": row.where, "columns": row_columns})
        messages = tuple(dict(message) for message in prompt)
        question = "\n".join(f"{m['role']}: {m['content'].strip()}" for m in messages)
        return Problem(task=self.name, id=row.where, split=split, question=question, prompt="", answer=answer,
                       think_in_prompt=False, meta={"source": row.where, "columns": row_columns}, messages=messages)

    # StoredTask's hooks --------------------------------------------------------------------------------
    def _source_name(self) -> str:
        return self.source

    def _order(self, problem: Problem) -> int:
        return self._rows_order[problem.meta["source"]]

    def _empty_split(self, split: str) -> str:
        return f"dataset: {self.source} has no {split} rows (give an eval dataset to evaluate)"

    # rewards -------------------------------------------------------------------------------------------
    def rewards(self, completions: Sequence[str], problems: Sequence[Problem],
                weights: Mapping[str, float] | None = None,
                completion_ids: Sequence[Sequence[int]] | None = None) -> list[tuple[float, dict[str, float]]]:
        """(combined reward, {function name: value, NaN for None}) of each pair, in order: each reward function
        is called once for the whole batch. `weights` by function name (default: `default_weights`)."""
        return self.rewards_pending(completions, problems, weights, completion_ids).result()

    def rewards_pending(self, completions: Sequence[str], problems: Sequence[Problem],
                        weights: Mapping[str, float] | None = None,
                        completion_ids: Sequence[Sequence[int]] | None = None) -> PendingRewards:
        """`rewards`, started (`RewardFunctions.submit`): the synchronous functions have run, in this thread,
        when it returns; the async ones may still be running. Its `result()` is what `rewards` returns."""
        if len(completions) != len(problems):
            raise ValueError(f"dataset.rewards: {len(completions)} completions but {len(problems)} problems")
        for problem in problems:
            if problem.task != self.name:
                raise ValueError(f"dataset.rewards: problem comes from task {problem.task!r}")
        prompts = [[dict(m) for m in p.messages] if p.messages else p.prompt for p in problems]
        texts = [[{"role": "assistant", "content": text}] if p.messages else text
                 for text, p in zip(completions, problems)]
        values = {column: [p.meta["columns"].get(column) for p in problems] for column in self.columns}
        scores = self.reward_functions.submit(prompts, texts, completion_ids, values,
                                              trainer_state=self.trainer_state, weights=weights)
        return PendingRewards(scores, self.reward_names)

    def reward_parts(self, completion: str, problem: Problem) -> dict[str, float]:
        return self.rewards([completion], [problem])[0][1]

    def reward(self, completion: str, problem: Problem,
               weights: Mapping[str, float] | None = None) -> tuple[float, dict[str, float]]:
        return self.rewards([completion], [problem], weights)[0]


class PendingRewards:
    """A batch's rewards being scored (`DatasetTask.rewards_pending`): `result()` waits for the async reward
    functions and returns each completion's (combined reward, {function name: value}); `done()`, `cancel()`."""

    def __init__(self, scores: PendingScores, names: Sequence[str]):
        self._scores, self._names = scores, tuple(names)

    def done(self) -> bool:
        return self._scores.done()

    def cancel(self) -> None:
        self._scores.cancel()

    def result(self) -> list[tuple[float, dict[str, float]]]:
        scores = self._scores.result()
        return [(float(total), dict(zip(self._names, map(float, row))))
                for total, row in zip(scores.total, scores.per_function)]


def _dataset_of(where: str) -> str:
    """The dataset a row's name points into: "train_dataset[3]" -> "train_dataset", "data.jsonl:4" -> "data.jsonl"."""
    if where.endswith("]") and "[" in where:
        return where[:where.rindex("[")]
    head, _, line = where.rpartition(":")
    return head if head and line.isdigit() else where
