"""The training curves (curves.png), drawn by matplotlib from the trainer's metrics.jsonl.

Owns: `read_metrics` (the log's rows, `metrics_log.read_rows` skipping bad lines), `PANELS` (which metrics share a
chart), `build_figure` (the records as a matplotlib Figure, one panel per group of metrics present) and
`plot_training` (that figure written as a PNG, atomically). matplotlib is the optional `plot` extra: it is
imported only inside the functions that draw, so importing this module stays cheap, and without it
`plot_training` warns once and draws nothing. Figures go straight to the Agg canvas; pyplot and its global
backend are never touched. Must not import the engine.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from wgrpo.rl.train.metrics_log import read_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Panel", "PANELS", "read_metrics", "build_figure", "plot_training"]

log = logging.getLogger(__name__)

MISSING_MATPLOTLIB = "training curves not drawn: matplotlib is not installed (pip install 'wgrpo[plot]')"


@dataclass(frozen=True)
class Panel:
    """One chart: lines of (legend label, metric key); `twin` lines use a right-hand axis of their own."""

    title: str
    y_label: str
    lines: tuple[tuple[str, str], ...]
    twin: tuple[tuple[str, str], ...] = ()
    twin_label: str = ""
    # also a line for every "<parts_prefix><name><parts_suffix>" metric not named above (the reward parts)
    parts_prefix: str = ""
    parts_suffix: str = ""
    # (line key, spread key): a band of line +- spread around that line (the rewards' spread in a step)
    band: tuple[str, str] | None = None


# The metric keys are those of rl.train.step_metrics, the update's (rl.grpo.METRIC_NAMES) and EvalResult.as_metrics.
PANELS = (
    Panel("reward", "reward", (("mean", "reward"),), parts_prefix="rewards/", parts_suffix="/mean",
          band=("reward", "reward_std")),
    Panel("held-out (greedy)", "reward", (("reward", "eval_reward"), ("pass@1", "eval_pass@1")),
          parts_prefix="eval_rewards/", parts_suffix="/mean"),
    Panel("accuracy", "accuracy", (("train", "rewards/accuracy/mean"), ("eval", "eval_rewards/accuracy/mean"))),
    Panel("format", "format rate", (("train", "rewards/format/mean"), ("eval", "eval_rewards/format/mean"))),
    Panel("KL to the reference", "KL per token", (("kl", "kl"),)),
    Panel("entropy", "nats per token", (("entropy", "entropy"),)),
    Panel("completion length", "tokens", (("train mean", "completions/mean_length"),
                                          ("eval mean", "eval_completions/mean_length")),
          twin=(("clipped", "completions/clipped_ratio"),), twin_label="clipped (truncated) fraction"),
    Panel("clip ratio", "fraction of tokens", (("low", "clip_ratio/low_mean"), ("high", "clip_ratio/high_mean"))),
)

_COLUMNS = 2
_PANEL_SIZE = (5.5, 3.2)  # inches per panel; the PNG is 100 dpi
_DPI = 100
_MARKERS_UP_TO = 30  # points; sparser curves get a marker on each point (eval curves always do)

_warned_missing_matplotlib = False


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of metrics.jsonl, in file order (`metrics_log.read_rows`, lenient). Blank lines, a torn last line
    (still being written, or cut short by a crash) and any line that is not a row are skipped: the curves are a
    view of the log, never its judge. FileNotFoundError when there is no log."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file {os.fspath(path)!r} does not exist")
    return read_rows(path, strict=False)


def _number(value) -> float | None:
    """`value` as a finite float; None for NaN, infinities, bools, text and anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _series(records: Iterable[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key`, sorted by step, finite points only; a repeated step (a resumed run appends to
    the same file) keeps its last value."""
    points: dict[float, float] = {}
    for record in records:
        step, value = _number(record.get("step")), _number(record.get(key))
        if step is not None and value is not None:
            points[step] = value
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _panel_lines(panel: Panel, keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The panel's named lines, then one per `parts_prefix` metric in the order the log first shows them."""
    named = {key for _, key in panel.lines + panel.twin} | ({panel.band[1]} if panel.band else set())
    prefix, suffix = panel.parts_prefix, panel.parts_suffix
    parts = tuple((key[len(prefix):len(key) - len(suffix)], key) for key in keys
                  if prefix and key.startswith(prefix) and key.endswith(suffix) and key not in named)
    return panel.lines + parts


def _draw(ax: Axes, records: Sequence[Mapping], lines: Sequence[tuple[str, str]], colors: Iterable[str],
          band: tuple[str, str] | None) -> list:
    """Draw the `lines` present on `ax`; returns their handles (for the legend)."""
    handles = []
    for (label, key), color in zip(lines, colors):
        steps, values = _series(records, key)
        if not steps:
            continue
        marker = "o" if key.startswith("eval_") or len(steps) <= _MARKERS_UP_TO else None
        (line,) = ax.plot(steps, values, label=label, color=color, marker=marker, markersize=3.5, linewidth=1.5)
        handles.append(line)
        if band is not None and key == band[0]:
            spread = dict(zip(*_series(records, band[1])))
            shown = [s for s in steps if s in spread]
            if shown:
                centre = dict(zip(steps, values))
                ax.fill_between(shown, [centre[s] - spread[s] for s in shown],
                                [centre[s] + spread[s] for s in shown], color=color, alpha=0.15, linewidth=0)
    return handles


def _has_any(records: Sequence[Mapping], lines: Iterable[tuple[str, str]]) -> bool:
    return any(_series(records, key)[0] for _, key in lines)


def build_figure(records: Sequence[Mapping], *, title: str = "Training curves") -> Figure:
    """The training curves of `records` (metrics.jsonl's objects, each with a "step") as a matplotlib Figure on
    the Agg canvas: one panel of `PANELS` per group with at least one finite value, in that order, two a row.
    No panel at all gives a figure with a note saying so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = list(dict.fromkeys(key for record in records for key in record))
    shown = [(panel, _panel_lines(panel, keys)) for panel in PANELS]
    shown = [(panel, lines) for panel, lines in shown if _has_any(records, lines + panel.twin)]
    columns = min(_COLUMNS, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure = Figure(figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    if not shown:
        figure.text(0.5, 0.5, "no training metrics to plot yet", ha="center", va="center", color="0.5")
        return figure
    for index, (panel, lines) in enumerate(shown):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.set_title(panel.title)
        ax.set_ylabel(panel.y_label)
        if index + columns >= len(shown):  # the lowest panel of its column
            ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        colors = (f"C{i}" for i in range(len(lines) + len(panel.twin)))  # one cycle across both axes
        handles = _draw(ax, records, lines, colors, panel.band)
        if _has_any(records, panel.twin):
            twin = ax.twinx()
            twin.set_ylabel(panel.twin_label)
            handles += _draw(twin, records, panel.twin, colors, None)
        if len(handles) > 1:
            ax.legend(handles=handles, loc="best", fontsize="small")
    return figure


def _warn_missing_matplotlib() -> None:
    global _warned_missing_matplotlib
    if not _warned_missing_matplotlib:
        _warned_missing_matplotlib = True
        log.warning(MISSING_MATPLOTLIB)


def plot_training(metrics_path: str | os.PathLike, out_path: str | os.PathLike, *,
                  title: str | None = None) -> Path | None:
    """Draw the curves of the trainer's metrics.jsonl at `metrics_path` into the PNG `out_path` and return it.

    The PNG is written to a temporary file beside it, then renamed over it, so a reader never sees half an
    image. `title` defaults to "Training curves: <the metrics file's folder>". Without matplotlib nothing is
    drawn, a warning naming the fix is logged once per process, and None is returned.
    """
    try:
        import matplotlib  # noqa: F401 (the optional `plot` extra)
    except ImportError:
        _warn_missing_matplotlib()
        return None
    records = read_metrics(metrics_path)
    if title is None:
        run = Path(metrics_path).resolve().parent.name
        title = f"Training curves: {run}" if run else "Training curves"
    figure = build_figure(records, title=title)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(temporary, format="png")
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out
