"""Where a run's metrics go besides metrics.jsonl: TRL's `report_to` (TensorBoard, Weights & Biases), and the
completions table of TRL's `log_completions`.

Owns: checking a `report_to` value (`check_report_to`, before long work starts), opening the reporters it names
(`open_reporters`), and the rows and console text of the completions table (`completion_rows`,
`format_completions`). metrics.jsonl is always written: it is the run's record, and the trainer writes it (and
completions.jsonl) itself through `MetricsLog`, so "jsonl" opens no reporter here. TensorBoard and wandb are
optional packages, imported only when a reporter is opened or checked for.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from wgrpo.rl.errors import input_error

__all__ = ["REPORT_TO_CHOICES", "Reporter", "check_report_to", "completion_rows", "format_completions",
           "open_reporters"]

INTEGRATIONS = ("tensorboard", "wandb")
REPORT_TO_CHOICES = ("jsonl", *INTEGRATIONS, "all", "none")
# transformers' other `report_to` integrations: named so that a TRL user's choice is told apart from a typo
OTHER_INTEGRATIONS = ("azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "mlflow",
                      "neptune", "swanlab", "trackio")


def _installed(name: str) -> bool:
    if name == "tensorboard":  # either writer will do
        return any(importlib.util.find_spec(module) is not None for module in ("tensorboardX", "tensorboard"))
    return importlib.util.find_spec(name) is not None


def check_report_to(report_to: str | Sequence[str]) -> list[str]:
    """`report_to` (a comma-separated string or a list of names) as the list of places to report to, "jsonl"
    first. "all" is jsonl and every installed integration; "none" (or nothing) is jsonl alone. An unknown name,
    or an integration whose package is missing, is an InputError saying what to do."""
    if isinstance(report_to, str):
        names = report_to.split(",")
    elif isinstance(report_to, Sequence) and all(isinstance(name, str) for name in report_to):
        names = list(report_to)
    else:
        raise input_error(f"report_to: expected a comma-separated string or a list of names, got {report_to!r}")
    names = [name.strip().lower() for name in names if name.strip()]
    if "none" in names and len(names) > 1:
        raise input_error(f"report_to: 'none' cannot be combined with other names ({','.join(names)}); "
                          f"give 'none' alone (metrics.jsonl only) or the names to report to")
    chosen = ["jsonl"]
    for name in names:
        if name in OTHER_INTEGRATIONS:
            raise input_error(f"report_to: {name} is not supported; wgrpo reports to jsonl, tensorboard, wandb")
        if name not in REPORT_TO_CHOICES:
            close = difflib.get_close_matches(name, REPORT_TO_CHOICES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise input_error(f"report_to: unknown name {name!r}{hint}; choose from "
                              f"{', '.join(REPORT_TO_CHOICES)}")
        if name == "all":
            expanded = [integration for integration in INTEGRATIONS if _installed(integration)]
        elif name in INTEGRATIONS:
            if not _installed(name):
                raise input_error(f"report_to: {name} needs the {name} package, which is not installed; "
                                  f"pip install 'wgrpo[{name}]'")
            expanded = [name]
        else:
            expanded = []  # jsonl and none: metrics.jsonl, which is always written
        chosen += [place for place in expanded if place not in chosen]
    return chosen


class Reporter(Protocol):
    """One place a run reports to, besides metrics.jsonl."""

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_completions(self, rows: list[dict], step: int) -> None: ...

    def close(self) -> None: ...


def chart_names(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics under the names transformers' integrations chart them by: `eval_x` as `eval/x`, every other
    as `train/x` ("step" left out: it is the x axis)."""
    return {(f"eval/{key[len('eval_'):]}" if key.startswith("eval_") else f"train/{key}"): value
            for key, value in metrics.items() if key != "step"}


def _scalar(value) -> float | None:
    """`value` as a float for a scalar chart, or None when it is not a finite number."""
    if not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TensorBoardReporter:
    """Scalars to TensorBoard event files in `logging_dir`: through tensorboardX when installed, else through
    the `tensorboard` package's own event writer (no torch, no TensorFlow). The step a run first writes starts a
    new session there, so TensorBoard drops the events of steps from it on that a killed or earlier run left
    (tensorboardX's `purge_step`), as metrics.jsonl drops its rows."""

    def __init__(self, logging_dir: str | Path, first_step: int = 0):
        self.logging_dir = Path(logging_dir)
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            self._writer, self._events = None, _EventWriter(self.logging_dir, first_step)
        else:
            self._writer, self._events = SummaryWriter(str(self.logging_dir), purge_step=first_step), None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        scalars = {tag: _scalar(value) for tag, value in chart_names(metrics).items()}
        scalars = {tag: value for tag, value in scalars.items() if value is not None}  # finite numbers only
        if self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, step)
            self._writer.flush()
        else:
            self._events.add_scalars(scalars, step)

    def log_completions(self, rows: list[dict], step: int) -> None:
        """Nothing: TensorBoard gets scalars only (the completions are in completions.jsonl)."""

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            self._events.close()


class _EventWriter:
    """Scalar summaries through `tensorboard.summary.writer.event_file_writer.EventFileWriter`."""

    def __init__(self, logging_dir: Path, first_step: int):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = Event, Summary
        self._file = EventFileWriter(str(logging_dir))
        # TensorBoard purges the events of steps >= a session's start step when it reads a START
        self._file.add_event(Event(wall_time=time.time(), step=first_step,
                                   session_log=SessionLog(status=SessionLog.START)))
        self._file.flush()

    def add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        if scalars:
            values = [self._summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
            self._file.add_event(self._event(wall_time=time.time(), step=step,
                                             summary=self._summary(value=values)))
        self._file.flush()  # a killed run keeps every step it logged

    def close(self) -> None:
        self._file.close()


class WandbReporter:
    """A Weights & Biases run in output_dir/wandb: the project is $WANDB_PROJECT (default "wgrpo"); wandb's own
    environment variables (WANDB_MODE, WANDB_RUN_ID, WANDB_ENTITY...) apply. Completions go to a table under
    "completions"."""

    def __init__(self, output_dir: str | Path, run_name: str = "", config: Mapping | None = None):
        import wandb

        self._wandb = wandb
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "wgrpo"), name=run_name or None,
                               dir=str(output_dir), config=dict(config) if config is not None else None,
                               resume="allow")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._run.log(chart_names(metrics), step=step)

    def log_completions(self, rows: list[dict], step: int) -> None:
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            table = self._wandb.Table(columns=columns, data=[[row.get(key) for key in columns] for row in rows])
            self._run.log({"completions": table}, step=step)

    def close(self) -> None:
        self._run.finish()


def open_reporters(report_to: str | Sequence[str], output_dir: str | Path, *, run_name: str = "",
                   logging_dir: str | Path = "", config: Mapping | None = None,
                   resume_step: int | None = None) -> list[Reporter]:
    """The reporters `report_to` names, opened; none for "jsonl" (the trainer writes metrics.jsonl itself).

    TensorBoard writes to `logging_dir`, or output_dir/runs (transformers' place). `resume_step`: the step of the
    checkpoint the run resumes from (it writes the steps after it); None or 0 for a fresh run."""
    names = check_report_to(report_to)
    first_step = resume_step + 1 if resume_step else 0
    reporters: list[Reporter] = []
    try:
        for name in names:
            if name == "tensorboard":
                reporters.append(TensorBoardReporter(logging_dir or Path(output_dir) / "runs", first_step))
            elif name == "wandb":
                reporters.append(WandbReporter(output_dir, run_name, config))
    except BaseException:
        for reporter in reporters:
            reporter.close()
        raise
    return reporters


def completion_rows(step: int, prompts: Sequence[str], completions: Sequence[str],
                    rewards: Mapping[str, Sequence[float]], advantages: Sequence[float], *,
                    reward: Sequence[float] | None = None) -> list[dict]:
    """The rows of TRL's completions table: step, prompt, completion, reward, advantage and `rewards/<name>` for
    each reward function. `prompts` holds one prompt per completion, or one per group (repeated for its
    completions, which come group by group). `reward`: the total (weighted) reward of each completion; None:
    the sum of the parts."""
    count = len(completions)
    if len(prompts) == 0 or count % len(prompts):
        raise ValueError(f"completion_rows: {len(prompts)} prompts for {count} completions; give one per "
                         f"completion or one per group")
    group_size = count // len(prompts)
    columns = {"advantages": advantages, **({"reward": reward} if reward is not None else {}),
               **{f"rewards[{name!r}]": values for name, values in rewards.items()}}
    for what, values in columns.items():
        if len(values) != count:
            raise ValueError(f"completion_rows: {what} has {len(values)} values for {count} completions")
    rows = []
    for index, completion in enumerate(completions):
        parts = {f"rewards/{name}": _number(values[index]) for name, values in rewards.items()}
        total = _number(reward[index]) if reward is not None else _sum(parts.values())
        rows.append({"step": step, "prompt": prompts[index // group_size], "completion": completion,
                     "reward": total, "advantage": _number(advantages[index]), **parts})
    return rows


def _number(value) -> float | None:
    return None if value is None else float(value)


def _sum(values) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _tail(text: str, width: int) -> str:
    """The end of `text` on one line, at most `width` characters ("…" marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else "…" + text[len(text) - width + 1:].lstrip()


def _cell(value, width: int) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.3f}"
    return _tail(value if isinstance(value, str) else json.dumps(value), width)


def format_completions(rows: list[dict], limit: int | None = None, *, width: int = 40) -> str:
    """The first `limit` rows (None: all) as a plain-text table, one line per completion: prompt and completion
    cut to their last `width` characters, numbers to 3 decimals."""
    if not rows:
        return "(no completions)"
    shown = rows if limit is None else rows[:max(0, limit)]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(key), width) for key in columns] for row in shown]
    widths = [max([len(key)] + [len(line[i]) for line in cells]) for i, key in enumerate(columns)]
    text_columns = {i for i, key in enumerate(columns)
                    if any(isinstance(row.get(key), str) for row in shown)}

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i in text_columns else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    lines = [line(columns)] + [line(values) for values in cells]
    if len(shown) < len(rows):
        lines.append(f"… {len(rows) - len(shown)} more rows")
    return "\n".join(lines)
