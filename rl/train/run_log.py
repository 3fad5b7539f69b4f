"""Where a GRPO run's metrics go: metrics.jsonl, the reporters, the callbacks and the completions table.

Owns: `RunLog`. Every step's row is appended to output_dir/metrics.jsonl (the run's record, which resume, the
plot and the final report read). Every `logging_steps` steps, and at the last, the training rows since the last
report are averaged (TRL's way: a logged value is the mean over its window) and go to the reporters of
`report_to` (tensorboard, wandb), to the callbacks' `on_log` and to `state.log_history`. Evaluation metrics are
reported at once, at their own step (`on_evaluate`, then `on_log`, as transformers does). With `log_completions`
the logging step's prompts, completions, rewards and advantages are appended to output_dir/completions.jsonl and
a sample is printed on stderr (and logged to wandb as a table).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from wgrpo.rl.train.metrics_log import METRICS_FILE, MetricsLog

COMPLETIONS_FILE = "completions.jsonl"


def _mean_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The mean of every numeric value over the rows that have it, in first-seen key order."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                sums.setdefault(key, []).append(float(value))
    return {key: _finite_mean(values) for key, values in sums.items()}


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


class RunLog:
    """A run's logging, open as a context manager for the steps from `first_row` on (see the module docstring).

    `callbacks` is a `CallbackHandler` and `state`/`control` its TrainerState/TrainerControl; `args` is what the
    callbacks receive as their `args` (the run's config)."""

    def __init__(self, output: Path, config, *, first_row: int, callbacks, state, control, args,
                 reported_config: Mapping[str, Any] | None = None):
        self.output, self.config, self.first_row = Path(output), config, first_row
        self.callbacks, self.state, self.control, self.args = callbacks, state, control, args
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
                                        logging_dir=getattr(self.args, "logging_dir", None) or "",
                                        config=self.reported_config,
                                        resume_step=self.first_row - 1 if self.first_row else None)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.window:  # a stop between logging steps: report what was trained
                self._report_window()
        finally:
            for reporter in self.reporters:
                reporter.close()
            for log in (self.completions, self.metrics):
                if log is not None:
                    log.__exit__(*exc_info)

    # ------------------------------------------------------------------ rows

    def evaluation(self, step: int, metrics: Mapping[str, float]) -> None:
        """An evaluation's metrics, reported at once (the step's row in metrics.jsonl carries them too)."""
        if not metrics:
            return
        self.control = self.callbacks.call("on_evaluate", self.args, self.state, self.control, metrics=dict(metrics))
        self._report(dict(metrics), step)

    def step(self, row: Mapping[str, Any], completions: Sequence[Mapping[str, Any]] = (), *,
             last: bool = False) -> None:
        """Append a step's row (its "step" included) to metrics.jsonl; at a logging step (or the `last`, or when
        a callback set control.should_log) report the window's means and, with log_completions, `completions`."""
        self.metrics.append(dict(row))
        self.window.append({k: v for k, v in row.items() if not k.startswith("eval/")})
        step = int(row["step"])
        if last or step % self.config.logging_steps == 0 or self.control.should_log:
            self._report_window()
            if self.completions is not None and completions:
                self._log_completions(step, completions)

    def row_zero(self, row: Mapping[str, Any]) -> None:
        """The row before training (step 0: the first evaluation and the memory estimate)."""
        self.metrics.append(dict(row))

    def _report_window(self) -> None:
        step = int(self.window[-1]["step"])
        logs = _mean_rows(self.window)
        self.window = []
        self._report(logs, step)

    def _report(self, logs: dict[str, float], step: int) -> None:
        for reporter in self.reporters:
            reporter.log(logs, step)
        self.state.log_history.append({**logs, "step": step})
        self.control.should_log = False
        self.control = self.callbacks.call("on_log", self.args, self.state, self.control, logs=logs)

    def _log_completions(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        from wgrpo.rl.train.reporting import format_completions

        for row in rows:  # `reporting.completion_rows`: each carries its step
            self.completions.append(dict(row))
        for reporter in self.reporters:
            reporter.log_completions([dict(row) for row in rows], step)
        print(format_completions(list(rows), self.config.num_completions_to_print or None), file=sys.stderr)
