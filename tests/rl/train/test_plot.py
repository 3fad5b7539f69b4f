"""wgrpo.rl.train.plot and rl.train.png: PNG structure checked by an independent reader, pixels of the chart, plot_training."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import pytest

from wgrpo.rl.train.plot import COLORS, plot_curves, plot_training, render_curves, text_width
from wgrpo.rl.train.png import PNG_SIGNATURE, encode_png, write_png

WHITE = (255, 255, 255)


def read_png(path) -> np.ndarray:
    """A strict reader for what rl.train.png writes: signature, chunk CRCs, IHDR, filter 0 rows; (H, W, 3) uint8."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC on {kind!r}"
        chunks.append((kind, body))
        position += 12 + length
    assert position == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color_type, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any(), "every row must use filter 0"
    return rows[:, 1:].reshape(height, width, 3)


def has_color(image: np.ndarray, color, region=(slice(None), slice(None))) -> int:
    return int(np.all(image[region] == np.array(color, dtype=np.uint8), axis=-1).sum())


def not_background(image: np.ndarray, region) -> int:
    return int(np.any(image[region] != np.array(WHITE, dtype=np.uint8), axis=-1).sum())


def curves(n=50, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1)
    return {"reward": (steps.tolist(), (0.2 + 0.5 * steps / n + rng.normal(0, 0.02, n)).tolist()),
            "accuracy": (steps.tolist(), (0.1 + 0.3 * steps / n).tolist()),
            "eval": ([10, 20, 30, 40, 50], [0.8, 0.85, 0.9, 0.92, 0.95])}


# --- PNG encoding --------------------------------------------------------------------------------------------

def test_png_round_trip_and_structure(tmp_path, rng):
    image = rng.integers(0, 256, size=(7, 13, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "x.png"), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no temporary file left behind


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_png_rejects_bad_images(bad):
    with pytest.raises(ValueError, match="image"):
        encode_png(bad)


# --- the chart ---------------------------------------------------------------------------------------------

def test_plot_curves_writes_valid_png_of_requested_size(tmp_path):
    path = tmp_path / "chart.png"
    plot_curves(path, curves(), title="Training", y_label="value", width=640, height=360)
    image = read_png(path)
    assert image.shape == (360, 640, 3)
    np.testing.assert_array_equal(image[0, 0], WHITE)  # white background
    np.testing.assert_array_equal(image, render_curves(curves(), title="Training", y_label="value", width=640,
                                                       height=360))


def test_every_series_color_appears_inside_the_plot():
    image = render_curves(curves(), title="t")
    plot_area = (slice(40, 420), slice(60, 780))
    for color in COLORS[:3]:
        assert has_color(image, color, plot_area) > 50, color
    assert has_color(image, COLORS[3]) == 0  # no fourth series, no fourth colour


def test_series_are_distinct_colors_and_cycle():
    assert len(set(COLORS)) == len(COLORS) >= 8
    many = {f"s{i}": ([0, 1], [i, i + 1]) for i in range(12)}
    image = render_curves(many, title="many")
    for color in COLORS:
        assert has_color(image, color) > 0


def test_lines_are_about_two_pixels_thick():
    image = render_curves({"flat": ([0, 100], [0.5, 0.5])}, title="", y_range=(0.0, 1.0), width=400, height=300)
    column = image[:, 200].astype(int)  # crosses the line once, away from the legend and the grid lines
    full = np.flatnonzero(np.all(column == COLORS[0], axis=-1))
    bluish = np.flatnonzero(column[:, 2] - column[:, 0] > 20)  # the line's pixels, anti-aliased edges included
    assert 1 <= full.size <= 2 and 2 <= bluish.size <= 4
    assert bluish.max() - bluish.min() == bluish.size - 1  # one contiguous stroke


def test_title_axis_labels_and_tick_labels_render():
    image = render_curves(curves(), title="GRPO run", y_label="reward", x_label="step")
    blank = render_curves(curves(), title=" ", y_label=" ", x_label=" ")  # the same layout, without the texts
    changed = np.any(image != blank, axis=-1)  # (H, W)
    assert changed[0:36, 300:500].sum() > 100  # the 2x title, centred at the top
    assert changed[455:480, 350:450].sum() > 20  # the x label at the bottom
    assert changed[150:330, 0:24].sum() > 20  # the rotated y label at the left
    assert changed.sum() == changed[0:36].sum() + changed[455:480, 350:450].sum() + changed[150:330, 0:24].sum()
    assert not_background(image, (slice(430, 450), slice(60, 790))) > 50  # x tick labels under the frame
    assert not_background(image, (slice(40, 430), slice(24, 50))) > 50  # y tick labels left of the frame


def test_text_width_and_font_cover_printable_ascii():
    printable = "".join(chr(c) for c in range(33, 127))
    image = render_curves({}, title=printable[:45], y_label=printable[45:], x_label="", width=900)
    assert not_background(image, (slice(0, 36), slice(None))) > 500
    assert text_width("1") == text_width("8") == 5  # tabular digits
    assert text_width("ab", 2) == 2 * text_width("ab")
    assert text_width("") == 0
    assert text_width("\u00e9") == text_width("?")  # outside ASCII draws as '?'


# --- edge cases ----------------------------------------------------------------------------------------------

def test_empty_series_draws_axes_and_no_data_note():
    for series in ({}, {"reward": ([], [])}, {"reward": ([1, 2], [math.nan, math.nan])}):
        image = render_curves(series, title="empty")
        middle = (slice(200, 280), slice(300, 520))
        gray = image[middle]
        assert np.any(np.all(gray == np.array((150, 150, 150), np.uint8), axis=-1))  # the note
        assert has_color(image, COLORS[0], (slice(40, 420), slice(60, 780))) <= 60  # legend sample only


def test_single_point_is_a_marker():
    image = render_curves({"one": ([5], [0.3])}, title="one point", width=400, height=300)
    assert has_color(image, COLORS[0]) >= 9


def test_nan_values_are_skipped_and_line_joins_neighbours():
    with_nan = render_curves({"r": ([1, 2, 3, 4], [0.1, math.nan, 0.3, math.inf])}, title="nan", markers=False)
    without = render_curves({"r": ([1, 3], [0.1, 0.3])}, title="nan", markers=False)
    np.testing.assert_array_equal(with_nan, without)


def test_constant_values_get_a_padded_range():
    image = render_curves({"c": (list(range(10)), [0.5] * 10)}, title="constant", markers=False)
    rows = np.flatnonzero(np.all(image == np.array(COLORS[0], np.uint8), axis=-1).any(axis=1))
    line_rows = rows[(rows > 45) & (rows < 420)]
    assert line_rows.size and 150 < line_rows.mean() < 330  # drawn in the middle, not on the frame


def test_points_outside_y_range_are_clipped_to_the_frame():
    image = render_curves({"r": ([0, 1, 2], [0.5, 5.0, 0.5])}, title="", x_label="", y_range=(0.0, 1.0),
                          markers=False)
    assert has_color(image, COLORS[0], (slice(0, 12), slice(None))) == 0


def test_unsorted_steps_are_drawn_in_step_order():
    a = render_curves({"r": ([3, 1, 2], [0.3, 0.1, 0.2])}, title="")
    b = render_curves({"r": ([1, 2, 3], [0.1, 0.2, 0.3])}, title="")
    np.testing.assert_array_equal(a, b)


def test_bad_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="'r'.*2 steps but 3 values"):
        render_curves({"r": ([1, 2], [1, 2, 3])}, title="")
    with pytest.raises(ValueError, match="y_range"):
        render_curves({"r": ([1], [1])}, title="", y_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="width and height"):
        render_curves({}, title="", width=10)
    with pytest.raises(TypeError, match="series"):
        render_curves([1, 2], title="")
    with pytest.raises(ValueError, match="'r'"):
        render_curves({"r": (["a"], [1])}, title="")


# --- plot_training -------------------------------------------------------------------------------------------

def write_metrics(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_plot_training_plots_the_metrics_present(tmp_path):
    records = [{"step": s, "reward/mean": 0.1 + 0.02 * s, "accuracy": 0.05 * s, "loss": 3.0} for s in range(1, 11)]
    records += [{"step": s, "eval/accuracy": 0.1 * s, "eval/format": 0.9} for s in (5, 10)]
    records.append({"event": "checkpoint"})  # no step: ignored
    write_metrics(tmp_path / "metrics.jsonl", records)
    counts = plot_training(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert counts == {"train reward": 10, "train accuracy": 10, "eval accuracy": 2, "eval format": 2}
    image = read_png(tmp_path / "curves.png")
    assert image.shape == (480, 800, 3)
    for color in COLORS[:4]:
        assert has_color(image, color) > 0
    assert has_color(image, COLORS[4]) == 0


def test_plot_training_last_value_wins_for_repeated_steps(tmp_path):
    records = [{"step": 1, "accuracy": 0.0}, {"step": 2, "accuracy": 1.0}, {"step": 2, "accuracy": 0.5}]
    write_metrics(tmp_path / "m.jsonl", records)
    assert plot_training(tmp_path / "m.jsonl", tmp_path / "a.png") == {"train accuracy": 2}
    write_metrics(tmp_path / "n.jsonl", [{"step": 1, "accuracy": 0.0}, {"step": 2, "accuracy": 0.5}])
    plot_training(tmp_path / "n.jsonl", tmp_path / "b.png", title=plot_title(tmp_path))
    plot_training(tmp_path / "m.jsonl", tmp_path / "a.png", title=plot_title(tmp_path))
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), read_png(tmp_path / "b.png"))


def plot_title(tmp_path):
    return "same title"


def test_plot_training_with_no_known_metrics_draws_empty_chart(tmp_path):
    write_metrics(tmp_path / "m.jsonl", [{"step": 1, "loss": 2.0}])
    assert plot_training(tmp_path / "m.jsonl", tmp_path / "a.png") == {}
    assert read_png(tmp_path / "a.png").shape == (480, 800, 3)


def test_plot_training_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        plot_training(tmp_path / "missing.jsonl", tmp_path / "a.png")
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        plot_training(tmp_path / "bad.jsonl", tmp_path / "a.png")
