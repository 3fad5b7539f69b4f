"""wgrpo.rl.train.plot: the panels built for the metrics given, the PNG read back by matplotlib, metrics.jsonl
read robustly, and the path without matplotlib (a subprocess where its import fails)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wgrpo.rl.train.plot import build_figure, plot_training, read_metrics

STEPS = range(1, 7)


def grpo_record(step: int) -> dict:
    """One row as GRPOLoop.train_step logs it (with a reference model, so with a KL)."""
    return {"step": step, "learning_rate": 1e-5, "reward": 0.1 * step, "reward_std": 0.05,
            "rewards/accuracy/mean": 0.08 * step, "rewards/accuracy/std": 0.3,
            "rewards/format/mean": 0.02 * step, "rewards/format/std": 0.1,
            "completions/mean_length": 60.0 - step, "completions/clipped_ratio": 0.5 / step,
            "entropy": 2.0 - 0.1 * step, "frac_reward_zero_std": 0.25, "loss": 0.01, "kl": 0.001 * step,
            "clip_ratio/low_mean": 0.01, "clip_ratio/high_mean": 0.02, "ratio_mean": 1.0, "tokens": 512}


def evaluation(step: int, accuracy: float, format_rate: float, length: float) -> dict:
    return {"step": step, "eval_reward": accuracy + 0.1 * format_rate, "eval_pass@1": accuracy,
            "eval_rewards/accuracy/mean": accuracy, "eval_rewards/format/mean": format_rate,
            "eval_completions/mean_length": length}


def grpo_run() -> list[dict]:
    """Evaluation at step 0 and at the end, training rows between, as GRPOLoop.run writes metrics.jsonl."""
    records = [evaluation(0, 0.05, 0.0, 64.0)]
    records += [grpo_record(s) for s in STEPS]
    records[-1].update(evaluation(6, 0.5, 0.75, 40.0))
    return records


def write_metrics(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def panels(figure) -> dict:
    """Panel title -> its Axes (twin axes have no title)."""
    return {ax.get_title(): ax for ax in figure.axes if ax.get_title()}


def lines(ax) -> dict[str, tuple[list, list]]:
    """Legend label -> (x, y) of every line on `ax`."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def twin_of(figure, ax):
    (twin,) = [other for other in figure.axes if other is not ax and other.get_shared_x_axes().joined(ax, other)]
    return twin


# --- the figure ----------------------------------------------------------------------------------------------

def test_every_panel_of_a_grpo_run_with_its_line_data():
    records = grpo_run()
    figure = build_figure(records, title="Training curves: demo")
    assert figure.get_suptitle() == "Training curves: demo"
    found = panels(figure)
    assert list(found) == ["reward", "held-out (greedy)", "accuracy", "format", "KL to the reference", "entropy",
                           "completion length", "clip ratio"]
    steps = list(map(float, STEPS))

    reward = lines(found["reward"])
    assert list(reward) == ["mean", "accuracy", "format"]  # the mean, then each rewards/<f>/mean; std is the band
    assert reward["mean"] == (steps, [0.1 * s for s in STEPS])
    assert reward["format"] == (steps, [0.02 * s for s in STEPS])
    assert len(found["reward"].collections) == 1  # the mean +- std band

    accuracy = lines(found["accuracy"])
    assert accuracy["train"] == (steps, [0.08 * s for s in STEPS])
    assert accuracy["eval"] == ([0.0, 6.0], [0.05, 0.5])
    assert found["accuracy"].get_legend() is not None
    held_out = lines(found["held-out (greedy)"])
    assert list(held_out) == ["reward", "pass@1", "accuracy", "format"]
    assert held_out["pass@1"] == ([0.0, 6.0], [0.05, 0.5]) and held_out["format"] == ([0.0, 6.0], [0.0, 0.75])
    assert lines(found["KL to the reference"]) == {"kl": (steps, [0.001 * s for s in STEPS])}
    assert lines(found["entropy"])["entropy"][1] == [2.0 - 0.1 * s for s in STEPS]
    assert set(lines(found["clip ratio"])) == {"low", "high"}

    length = found["completion length"]
    assert lines(length)["train mean"] == (steps, [60.0 - s for s in STEPS])
    assert lines(length)["eval mean"] == ([0.0, 6.0], [64.0, 40.0])
    twin = twin_of(figure, length)
    assert twin.get_ylabel() == "clipped (truncated) fraction"
    assert lines(twin) == {"clipped": (steps, [0.5 / s for s in STEPS])}
    assert {text.get_text() for text in length.get_legend().get_texts()} == {"train mean", "eval mean", "clipped"}


def test_panels_whose_metrics_are_absent_are_skipped():
    # no reference model (no kl), no clipping metrics, no length: reward and accuracy only
    records = [{"step": s, "reward": 0.5, "rewards/accuracy/mean": float("nan")} for s in (1, 2)]
    records.append({"step": 2, "eval_rewards/accuracy/mean": 0.25})
    figure = build_figure(records)
    assert list(panels(figure)) == ["reward", "held-out (greedy)", "accuracy"]
    assert lines(panels(figure)["accuracy"]) == {"eval": ([2.0], [0.25])}  # all-NaN train accuracy: no line
    assert tuple(figure.get_size_inches() * figure.dpi) == (1100, 640)  # two rows of two panels


def test_nan_points_are_dropped_and_repeated_steps_keep_the_last_value():
    records = [{"step": 1, "kl": 0.1}, {"step": 2, "kl": float("nan")}, {"step": 3, "kl": math.inf},
               {"step": 4, "kl": 0.4}, {"step": 4, "kl": 0.5}, {"step": 5, "kl": "n/a"}, {"kl": 9.0}]
    (ax,) = panels(build_figure(records)).values()
    assert lines(ax) == {"kl": ([1.0, 4.0], [0.1, 0.5])}


def test_a_single_row_is_one_marked_point():
    figure = build_figure([grpo_record(1)])
    (line,) = panels(figure)["entropy"].get_lines()
    assert line.get_marker() == "o" and list(line.get_ydata()) == [1.9]


def test_no_metrics_gives_a_note_and_no_panels():
    figure = build_figure([{"step": 1, "grad_norm": 0.3}])
    assert figure.axes == []
    assert "no training metrics to plot yet" in [text.get_text() for text in figure.texts]


# --- metrics.jsonl -------------------------------------------------------------------------------------------

def test_read_metrics_skips_blank_torn_and_non_object_lines(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl", [{"step": 1, "kl": 0.1}], '\n  \n[1, 2]\n{"step": 2, "kl": 0.2}\n'
                         '{"step": 3, "k')  # the last line torn: the trainer is writing it, or crashed in it
    assert read_metrics(path) == [{"step": 1, "kl": 0.1}, {"step": 2, "kl": 0.2}]
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_metrics(tmp_path / "missing.jsonl")


# --- the PNG -------------------------------------------------------------------------------------------------

def test_plot_training_writes_a_png_matplotlib_reads_back(tmp_path):
    from matplotlib.image import imread

    run = tmp_path / "demo"
    run.mkdir()
    metrics = write_metrics(run / "metrics.jsonl", grpo_run(), '{"step": 7, "rew')
    out = run / "curves.png"
    out.write_bytes(b"an older image")
    assert plot_training(metrics, out) == out
    image = imread(out)
    expected = build_figure(read_metrics(metrics))
    width, height = expected.get_size_inches() * expected.dpi
    assert image.shape[:2] == (round(height), round(width)) == (1280, 1100)  # 4 rows of 2 panels at 100 dpi
    assert image.std() > 0.05  # drawn on, not a blank canvas
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "metrics.jsonl"]  # no temporary file left


def test_plot_training_draws_an_empty_log(tmp_path):
    from matplotlib.image import imread

    metrics = write_metrics(tmp_path / "metrics.jsonl", [])
    image = imread(plot_training(metrics, tmp_path / "curves.png"))
    assert image.shape[:2] == (320, 550)
    assert not np.isnan(image).any()


def test_plot_training_without_the_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        plot_training(tmp_path / "missing.jsonl", tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


# --- matplotlib: optional, lazy, backend untouched -----------------------------------------------------------

def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def test_without_matplotlib_nothing_is_drawn_and_the_fix_is_named_once(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", grpo_run())
    result = run_python("""
        import sys
        sys.modules["matplotlib"] = None  # `import matplotlib` now fails, as when the extra is not installed
        from wgrpo.rl.train.plot import plot_training
        assert plot_training("metrics.jsonl", "curves.png") is None
        assert plot_training("metrics.jsonl", "curves.png") is None
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1  # one line, once
    assert "matplotlib is not installed" in result.stderr and "pip install 'wgrpo[plot]'" in result.stderr
    assert not (tmp_path / "curves.png").exists()


def test_matplotlib_is_imported_only_to_draw_and_pyplot_never(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", grpo_run())
    result = run_python("""
        import sys
        import wgrpo.rl.train.plot as plot
        assert "matplotlib" not in sys.modules, "importing rl.train.plot must stay cheap"
        plot.plot_training("metrics.jsonl", "curves.png")
        assert "matplotlib" in sys.modules
        assert "matplotlib.pyplot" not in sys.modules, "the Agg canvas is used directly, no pyplot backend"
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").stat().st_size > 0
