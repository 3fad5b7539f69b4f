"""Where a GRPO run's metrics go: metrics.jsonl, the reporters, the callbacks and the completions table.

Owns: `RunLog`. Every step's row is appended to output_dir/metrics.jsonl (the run's record, which resume, the
plot and the final report read). Every `logging_steps` steps, and at the last, the training rows since the last
report are reduced over that window as transformers and TRL do (the last `learning_rate`, `epoch` and
`grad_norm`, the largest `memory/...`, the mean of everything else) and go to the reporters of `report_to`
(tensorboard, wandb), to the callbacks' `on_log` and to `state.log_history`. An evaluation's metrics are reported
at once, at their own step (`on_log`, then `on_evaluate`, as transformers' evaluate does). With
`log_completions` the logging step's prompts, completions, rewards and advantages are appended to
output_dir/completions.jsonl, a sample is printed on stderr, and wandb gets a table.

The callbacks are reached through `event(name, **kwargs)`, the step loop's dispatcher, which owns the
TrainerControl the callbacks may replace.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from wgrpo.rl.train.metrics_log import METRICS_FILE, MetricsLog

COMPLETIONS_FILE = "completions.jsonl"
_LAST_OF_WINDOW = ("learning_rate", "epoch", "grad_norm")  # a state at the logging step, not a rate over the window


def window_logs(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The logged values of a window of step rows (see the module docstring), in first-seen key order; a value
    that is not a finite number anywhere in the window is NaN."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                values.setdefault(key, []).append(float(value))
    logs = {}
    for key, seen in values.items():
        finite = [v for v in seen if math.isfinite(v)]
        if not finite:
            logs[key] = float("nan")
        elif key in _LAST_OF_WINDOW:
            logs[key] = finite[-1]
        elif key.startswith("memory/"):
            logs[key] = max(finite)
        else:
            logs[key] = sum(finite) / len(finite)
    return logs


class RunLog:
    """A run's logging, open as a context manager for the rows from `first_row` on (see the module docstring).
    `state` is the run's TrainerState (its log_history grows here); `logging_dir` is TensorBoard's directory."""

    def __init__(self, output: Path, config, *, first_row: int, state, event: Callable[..., None],
                 reported_config: Mapping[str, Any] | None = None, logging_dir: str = ""):
        self.output, self.config, self.first_row = Path(output), config, first_row
        self.state, self.event, self.logging_dir = state, event, logging_dir
        self.reported_config = dict(reported_config or {})
        self.window: list[dict] = []
        self.metrics: MetricsLog | None = None
        self.completions: MetricsLog | None = None
        self.reporters: list = []

    def __enter__(self) -> RunLog:
        from wgrpo.rl.train.reporting import open_reporters

        self.metrics = MetricsLog(self.output / METRICS_FILE, self.first_row).__enter__()
        if self.metrics.note:
            print(f"wgrpo: {self.metrics.note}", file=sys.stderr)
        if self.config.log_completions:
            self.completions = MetricsLog(self.output / COMPLETIONS_FILE, self.first_row).__enter__()
        self.reporters = open_reporters(self.config.report_to, self.output, run_name=self.config.run_name,
                                        logging_dir=self.logging_dir, config=self.reported_config,
                                        resume_step=self.first_row - 1 if self.first_row else None)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.window:  # a stop between logging steps: report what was trained
                self._report(window_logs(self.window), int(self.window[-1]["step"]))
        finally:
            for reporter in self.reporters:
                reporter.close()
            for log in (self.completions, self.metrics):
                if log is not None:
                    log.__exit__(*exc_info)

    # ------------------------------------------------------------------ rows

    def write(self, row: Mapping[str, Any]) -> None:
        """Append a row (its "step" included) to metrics.jsonl."""
        self.metrics.append(dict(row))

    def train(self, row: Mapping[str, Any], completions: Sequence[Mapping[str, Any]] = (), *,
              report: bool) -> None:
        """A step's training metrics join the window; with `report` (a logging step, the last, or a callback's
        control.should_log) the window is reported and, with log_completions, `completions` written."""
        self.window.append(dict(row))
        if not report:
            return
        step = int(row["step"])
        logs, self.window = window_logs(self.window), []
        self._report(logs, step)
        if self.completions is not None and completions:
            self._log_completions(step, completions)

    def evaluation(self, step: int, metrics: Mapping[str, float]) -> None:
        """An evaluation's metrics, reported at once (the step's row in metrics.jsonl carries them too)."""
        if metrics:
            self._report(dict(metrics), step)
            self.event("on_evaluate", metrics=dict(metrics))

    def _report(self, logs: dict[str, float], step: int) -> None:
        for reporter in self.reporters:
            reporter.log(logs, step)
        self.state.log_history.append({**logs, "step": step})
        self.event("on_log", logs=logs)

    def _log_completions(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        from wgrpo.rl.train.reporting import format_completions

        for row in rows:  # `reporting.completion_rows`: each carries its step
            self.completions.append(dict(row))
        for reporter in self.reporters:
            reporter.log_completions([dict(row) for row in rows], step)
        print(format_completions(list(rows), self.config.num_completions_to_print or None), file=sys.stderr)
