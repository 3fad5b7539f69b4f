"""Line charts of training curves, written as PNG with numpy only.

Owns: `render_curves` (an RGB image of a line chart of named (steps, values) series: white background, framed
axes with round-number ticks and grid lines, a title, axis labels, one 2 px anti-aliased coloured line per
series, optional markers and a legend), `plot_curves` (the same written to a PNG file), `plot_training` (the
trainer's metrics.jsonl as one chart) and the built-in 5x9 bitmap font that draws all the text.
Must not import the engine, matplotlib or Pillow: numpy, the standard library and `rl.train.png` only.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from wgrpo.rl.train.png import write_png

__all__ = ["COLORS", "TRAINING_SERIES", "render_curves", "plot_curves", "plot_training", "text_width"]

# Series colours, in order (the "tab10" qualitative palette); more series than colours cycle.
COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))

# Metrics plotted by `plot_training`: legend name, then the accepted keys (the first present one is used).
TRAINING_SERIES = (
    ("train reward", ("reward/mean", "reward_mean", "train/reward")),
    ("train accuracy", ("accuracy", "train/accuracy", "reward/accuracy")),
    ("train format", ("format", "train/format", "reward/format")),
    ("eval accuracy", ("eval/accuracy", "eval_accuracy")),
    ("eval format", ("eval/format", "eval/format_rate", "eval_format")),
)

_BACKGROUND = (255, 255, 255)
_TEXT = (34, 34, 34)
_TICK_TEXT = (68, 68, 68)
_FRAME = (90, 90, 90)
_GRID = (232, 232, 232)
_LEGEND_BORDER = (200, 200, 200)
_NOTE = (150, 150, 150)

# The font: ASCII 32..126, one 12-hex-digit word per glyph, 9 rows of 5 bits from the top row down (bit 4 of a
# row is its leftmost pixel). Rows 0-6 hold capitals and digits, rows 2-6 the x-height, rows 7-8 descenders.
_FONT_HEX = (
    "000000000000 042108401000 0a5280000000 0a57d5f52800 047d1c5f1000 18c888898c00 0c9511593400 042200000000",
    "022210820800 082084222000 00255d520000 00213e420000 000000061100 00001c000000 000000063000 010888884000",
    "0e8c6318b800 046108423800 0e8844447c00 1f110418b800 0232a5f10800 1f878218b800 06443d18b800 1f0888842000",
    "0e8c5d18b800 0e8c5e113000 006300063000 006300061100 022220820800 0007c1f00000 082082222000 0e8844401000",
    "0e8deb783800 0e8c7f18c400 1e8c7d18f800 0e8c2108b800 1e8c6318f800 1f843d087c00 1f843d084000 0e8c2f18bc00",
    "118c7f18c400 0e2108423800 071084293000 119531494400 108421087c00 11dd6b18c400 118e6b38c400 0e8c6318b800",
    "1e8c7d084000 0e8c63593400 1e8c7d494400 0f841c10f800 1f2108421000 118c6318b800 118c63151000 118c6b5aa800",
    "118a88a8c400 118a88421000 1f0888887c00 0e4210843800 108208208400 0e1084213800 045440000000 0000000003e0",
    "082080000000 000382f8bc00 1085b318f800 0003a108b800 010b6718bc00 0003a3f83800 064a38842000 0003e318bc2e",
    "1085b318c400 040308423800 020184210a4c 1084a98a4800 0c2108423800 0006ab5ad400 0005b318c400 0003a318b800",
    "0007a318fa10 0003e318bc21 0005b3084000 0003e0e0f800 084710849800 00046319b400 000463151000 0004635aa800",
    "000454454400 00046318bc2e 0007c4447c00 022110420800 042108421000 082104422000 00022a200000",
)
_GLYPH_ROWS, _GLYPH_COLS = 9, 5
_CAP_HEIGHT = 7  # rows 0..6: the height that centring uses


@lru_cache(maxsize=None)
def _glyph(char: str) -> np.ndarray:
    """The (9, w) bool bitmap of one character: digits keep their full 5 columns (tabular figures), other
    glyphs are trimmed to their ink, the space is 2 columns; characters outside ASCII 32..126 draw as '?'."""
    code = ord(char)
    if not 32 <= code <= 126:
        code = ord("?")
    word = int(" ".join(_FONT_HEX).split()[code - 32], 16)
    bits = [(word >> (_GLYPH_ROWS * _GLYPH_COLS - 1 - i)) & 1 for i in range(_GLYPH_ROWS * _GLYPH_COLS)]
    bitmap = np.array(bits, dtype=bool).reshape(_GLYPH_ROWS, _GLYPH_COLS)
    if char == " ":
        return np.zeros((_GLYPH_ROWS, 2), dtype=bool)
    if char.isdigit():
        return bitmap
    used = np.flatnonzero(bitmap.any(axis=0))
    return bitmap[:, used[0]:used[-1] + 1]


def _text_mask(text: str, scale: int = 1) -> np.ndarray:
    """The (9 * scale, width) bool bitmap of `text`, one blank column between glyphs."""
    pieces = []
    for char in text:
        pieces += [_glyph(char), np.zeros((_GLYPH_ROWS, 1), dtype=bool)]
    mask = np.concatenate(pieces[:-1], axis=1) if pieces else np.zeros((_GLYPH_ROWS, 0), dtype=bool)
    return mask.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else mask


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of `text` drawn with the built-in font at `scale`."""
    return _text_mask(text, scale).shape[1]


class _Canvas:
    """A float RGB image (values 0..255) with the few drawing operations a chart needs."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.pixels = np.empty((height, width, 3), dtype=np.float32)  # (H, W, 3)
        self.pixels[:] = _BACKGROUND

    def rect(self, x0: int, y0: int, x1: int, y1: int, color) -> None:
        """Fill the pixels x0..x1, y0..y1 (inclusive), clipped to the image."""
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.width - 1), min(y1, self.height - 1)
        if x0 <= x1 and y0 <= y1:
            self.pixels[y0:y1 + 1, x0:x1 + 1] = color

    def mask(self, mask: np.ndarray, x: int, y: int, color) -> None:
        """Paint `color` where the bool `mask` is set, its top-left corner at (x, y); clipped to the image."""
        h, w = mask.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, self.width), min(y + h, self.height)
        if x0 < x1 and y0 < y1:
            region = self.pixels[y0:y1, x0:x1]
            region[mask[y0 - y:y1 - y, x0 - x:x1 - x]] = color

    def text(self, text: str, x: float, y: float, color, *, scale: int = 1, align: str = "left",
             valign: str = "top", rotate: bool = False) -> None:
        """Draw `text` with its anchor at (x, y): align left/center/right, valign top/middle (the middle of the
        capitals) ; `rotate` turns it a quarter counter-clockwise (reading upwards)."""
        mask = _text_mask(text, scale)
        if rotate:
            mask = np.rot90(mask)
            h, w = mask.shape
            left = {"left": x, "center": x - w / 2, "right": x - w}[align]
            top = y - h / 2 if valign == "middle" else y
        else:
            h, w = mask.shape
            left = {"left": x, "center": x - w / 2, "right": x - w}[align]
            top = y - (_CAP_HEIGHT * scale) / 2 + 0.5 if valign == "middle" else y
        self.mask(mask, int(round(left)), int(round(top)), color)

    def blend(self, coverage: np.ndarray, color) -> None:
        """Mix `color` in with the per-pixel opacity `coverage` ((H, W) in 0..1)."""
        alpha = coverage[..., None]  # (H, W, 1)
        self.pixels *= 1.0 - alpha
        self.pixels += alpha * np.asarray(color, dtype=np.float32)

    def image(self) -> np.ndarray:
        return np.clip(np.rint(self.pixels), 0, 255).astype(np.uint8)  # (H, W, 3)


def _stroke(coverage: np.ndarray, xs: np.ndarray, ys: np.ndarray, half_width: float, clip) -> None:
    """Add the polyline through (xs, ys) (pixel coordinates, pixel centres at integers) to `coverage`, an
    anti-aliased stroke `2 * half_width` wide; only pixels inside clip = (x0, y0, x1, y1) are touched."""
    cx0, cy0, cx1, cy1 = clip
    reach = half_width + 1.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:]):
        left, right = max(cx0, math.floor(min(x0, x1) - reach)), min(cx1, math.ceil(max(x0, x1) + reach))
        top, bottom = max(cy0, math.floor(min(y0, y1) - reach)), min(cy1, math.ceil(max(y0, y1) + reach))
        if left > right or top > bottom:
            continue
        px = np.arange(left, right + 1, dtype=np.float32)[None, :]  # (1, w)
        py = np.arange(top, bottom + 1, dtype=np.float32)[:, None]  # (h, 1)
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0  # (h, w)
        distance = np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))  # (h, w)
        ink = np.clip(half_width + 0.5 - distance, 0.0, 1.0)
        window = coverage[top:bottom + 1, left:right + 1]
        np.maximum(window, ink, out=window)


def _dots(coverage: np.ndarray, xs: np.ndarray, ys: np.ndarray, radius: float, clip) -> None:
    """Add an anti-aliased filled disc of `radius` at each point to `coverage`."""
    for x, y in zip(xs, ys):
        _stroke(coverage, np.array([x, x]), np.array([y, y]), radius, clip)


def _nice_step(span: float, target: int, integer: bool) -> float:
    """The 1, 2 or 5 times a power of ten that splits `span` into about `target` intervals."""
    raw = span / max(target, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return max(1.0, float(round(step))) if integer else step


def _ticks(low: float, high: float, step: float) -> list[float]:
    """Multiples of `step` within [low, high] (with a little tolerance), rounded to the step's precision."""
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(k * step, digits) for k in range(first, last + 1)]


def _tick_labels(ticks: Sequence[float], step: float) -> list[str]:
    """Labels with just enough decimals for `step`; k / M suffixes from a hundred thousand up."""
    largest = max((abs(t) for t in ticks), default=0.0)
    divisor, suffix = (1e6, "M") if largest >= 1e6 else (1e3, "k") if largest >= 1e5 else (1.0, "")
    decimals = max(0, -math.floor(math.log10(step / divisor) + 1e-9))
    labels = []
    for tick in ticks:
        value = 0.0 if abs(tick) < step * 1e-6 else tick / divisor
        labels.append(f"{value:.{decimals}f}{suffix}")
    return labels


def _padded_range(values: np.ndarray, default=(0.0, 1.0)) -> tuple[float, float]:
    """(min, max) of `values`, widened around a single value; `default` when there are none."""
    if values.size == 0:
        return default
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12 * max(1.0, abs(low)):
        pad = abs(low) * 0.1 if low != 0 else 1.0
        low, high = low - pad, high + pad
    return low, high


def _check_series(series) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Validate `series` and return (name, steps, values) with non-finite points dropped, sorted by step."""
    if not isinstance(series, Mapping):
        raise TypeError(f"series must be a dict of name -> (steps, values), got {type(series).__name__}")
    checked = []
    for name, pair in series.items():
        if not isinstance(name, str):
            raise TypeError(f"series names must be str, got {name!r}")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"series {name!r} must be a (steps, values) pair, got {type(pair).__name__}")
        try:
            steps, values = (np.asarray(part, dtype=np.float64).reshape(-1) if len(part) else np.zeros(0)
                             for part in pair)
        except (TypeError, ValueError) as error:
            raise ValueError(f"series {name!r}: steps and values must be sequences of numbers ({error})") from None
        if steps.shape != values.shape:
            raise ValueError(f"series {name!r}: {steps.size} steps but {values.size} values; expected equal")
        keep = np.isfinite(steps) & np.isfinite(values)
        steps, values = steps[keep], values[keep]
        order = np.argsort(steps, kind="stable")
        checked.append((name, steps[order], values[order]))
    return checked


def render_curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
                  y_label: str = "", x_label: str = "step", y_range: tuple[float, float] | None = None,
                  width: int = 800, height: int = 480, markers: bool | None = None) -> np.ndarray:
    """The line chart of `series` (name -> (steps, values)) as an (height, width, 3) uint8 RGB image.

    NaN and infinite points are skipped (the line joins their neighbours); points are drawn in step order.
    `y_range` fixes the value axis (lines are clipped to it), otherwise it is rounded out to whole ticks around
    the data, and a constant series gets a padded range. `markers`: discs at the points; None draws them for
    series of at most 30 points. A series with one point is always a disc. No points at all: empty axes
    with a "no data" note.
    """
    if not isinstance(width, int) or not isinstance(height, int) or width < 200 or height < 150:
        raise ValueError(f"width and height must be ints of at least 200 x 150 pixels, got {width} x {height}")
    if not isinstance(title, str) or not isinstance(y_label, str) or not isinstance(x_label, str):
        raise TypeError("title, y_label and x_label must be str")
    if y_range is not None:
        if len(y_range) != 2 or not all(math.isfinite(v) for v in y_range) or not y_range[0] < y_range[1]:
            raise ValueError(f"y_range must be (low, high) with finite low < high, got {y_range!r}")
    curves = _check_series(series)
    all_x = np.concatenate([c[1] for c in curves]) if curves else np.zeros(0)
    all_y = np.concatenate([c[2] for c in curves]) if curves else np.zeros(0)
    has_data = all_x.size > 0
    canvas = _Canvas(width, height)

    # Vertical layout: title, plot frame, tick labels, x label.
    pad, inset, tick = 12, 8, 5
    frame_top = pad + (_GLYPH_ROWS * 2 + 12 if title else 4)
    frame_bottom = height - 1 - (pad + tick + 5 + _GLYPH_ROWS + (_GLYPH_ROWS + 8 if x_label else 0))

    # The value axis: data range, tick step from the plot height, rounded out to whole ticks unless fixed.
    plot_h = frame_bottom - frame_top - 2 * inset
    y_target = max(2, round(plot_h / 60))
    if y_range is not None:
        y_low, y_high = float(y_range[0]), float(y_range[1])
        y_step = _nice_step(y_high - y_low, y_target, False)
    else:
        y_low, y_high = _padded_range(all_y)
        y_step = _nice_step(y_high - y_low, y_target, False)
        snapped = math.floor(y_low / y_step + 1e-9) * y_step, math.ceil(y_high / y_step - 1e-9) * y_step
        if snapped[1] - snapped[0] <= 1.2 * (y_high - y_low):  # whole ticks at both ends when that is cheap
            y_low, y_high = snapped
        else:  # otherwise a 3 % margin, ticks inside
            margin = 0.03 * (y_high - y_low)
            y_low, y_high = y_low - margin, y_high + margin
    y_pad = inset * (y_high - y_low) / plot_h
    y_ticks = _ticks(y_low - y_pad, y_high + y_pad, y_step)
    y_labels = _tick_labels(y_ticks, y_step)

    # Horizontal layout now that the widest value label is known.
    label_w = max((text_width(label) for label in y_labels), default=0)
    frame_left = pad + (_GLYPH_ROWS + 10 if y_label else 0) + label_w + 5 + tick
    x_low, x_high = _padded_range(all_x)
    integer_x = has_data and bool(np.all(all_x == np.round(all_x)))
    if integer_x and x_high - x_low < 2:  # a single integer step: a small integer range around it
        x_low, x_high = math.floor(x_low), math.ceil(x_high)
    x_step = 1.0
    for attempt in range(8):
        right_room = 16 + text_width(_tick_labels([x_high], 1.0)[0]) // 2
        frame_right = width - 1 - max(pad + 8, right_room)
        plot_w = frame_right - frame_left - 2 * inset
        x_step = _nice_step(x_high - x_low, max(1, round(plot_w / 100) - attempt), integer_x)
        x_pad = inset * (x_high - x_low) / plot_w
        x_ticks = _ticks(x_low - x_pad, x_high + x_pad, x_step)
        x_labels = _tick_labels(x_ticks, x_step)
        spacing = plot_w * x_step / (x_high - x_low)
        if max((text_width(label) for label in x_labels), default=0) + 14 <= spacing:
            break

    def to_x(values):
        return frame_left + inset + (np.asarray(values) - x_low) / (x_high - x_low) * plot_w

    def to_y(values):
        return frame_bottom - inset - (np.asarray(values) - y_low) / (y_high - y_low) * plot_h

    # Grid lines, ticks and tick labels.
    for value, label in zip(y_ticks, y_labels):
        y = int(round(float(to_y(value))))
        if frame_top <= y <= frame_bottom:
            canvas.rect(frame_left + 1, y, frame_right - 1, y, _GRID)
            canvas.rect(frame_left - tick, y, frame_left - 1, y, _FRAME)
            canvas.text(label, frame_left - tick - 5, y, _TICK_TEXT, align="right", valign="middle")
    for value, label in zip(x_ticks, x_labels):
        x = int(round(float(to_x(value))))
        if frame_left <= x <= frame_right:
            canvas.rect(x, frame_top + 1, x, frame_bottom - 1, _GRID)
            canvas.rect(x, frame_bottom + 1, x, frame_bottom + tick, _FRAME)
            canvas.text(label, x, frame_bottom + tick + 5, _TICK_TEXT, align="center")

    # The series, each blended in with its own anti-aliased coverage; `ink` remembers where lines went.
    clip = (frame_left + 1, frame_top + 1, frame_right - 1, frame_bottom - 1)
    ink = np.zeros((height, width), dtype=np.float32)  # (H, W)
    drew_markers = []
    for index, (name, steps, values) in enumerate(curves):
        coverage = np.zeros((height, width), dtype=np.float32)  # (H, W)
        xs, ys = to_x(steps), to_y(values)
        dots = steps.size == 1 or (markers if markers is not None else steps.size <= 30)
        drew_markers.append(bool(dots) and steps.size > 0)
        if steps.size > 1:
            _stroke(coverage, xs, ys, 1.0, clip)
        if dots and steps.size:
            _dots(coverage, xs, ys, 3.0, clip)
        canvas.blend(coverage, COLORS[index % len(COLORS)])
        np.maximum(ink, coverage, out=ink)

    # The frame on top of the lines, then the texts.
    canvas.rect(frame_left, frame_top, frame_right, frame_top, _FRAME)
    canvas.rect(frame_left, frame_bottom, frame_right, frame_bottom, _FRAME)
    canvas.rect(frame_left, frame_top, frame_left, frame_bottom, _FRAME)
    canvas.rect(frame_right, frame_top, frame_right, frame_bottom, _FRAME)
    if title:
        half = text_width(title, 2) / 2  # centred over the plot, moved inwards if it would leave the image
        centre = min(max((frame_left + frame_right) / 2, pad + half), width - pad - half)
        canvas.text(title, centre, pad, _TEXT, scale=2, align="center")
    if x_label:
        canvas.text(x_label, (frame_left + frame_right) / 2, height - pad - _GLYPH_ROWS, _TEXT, align="center")
    if y_label:
        canvas.text(y_label, pad, (frame_top + frame_bottom) / 2, _TEXT, valign="middle", rotate=True)
    if not has_data:
        canvas.text("no data", (frame_left + frame_right) / 2, (frame_top + frame_bottom) / 2, _NOTE, scale=2,
                    align="center", valign="middle")

    # The legend, in the inside corner the lines cross least.
    if curves:
        row_h, sample_w, box_pad = 15, 22, 8
        box_w = box_pad + sample_w + 7 + max(text_width(name) for name, _, _ in curves) + box_pad
        box_h = box_pad * 2 + row_h * (len(curves) - 1) + _CAP_HEIGHT
        margin = 10
        corners = [(frame_right - margin - box_w, frame_top + margin),
                   (frame_left + margin, frame_top + margin),
                   (frame_right - margin - box_w, frame_bottom - margin - box_h),
                   (frame_left + margin, frame_bottom - margin - box_h)]
        near = 6  # lines just outside the box count too, so it keeps clear of them
        scores = [float(ink[max(y - near, 0):y + box_h + near, max(x - near, 0):x + box_w + near].sum())
                  for x, y in corners]
        box_x, box_y = corners[int(np.argmin(scores))]
        canvas.rect(box_x, box_y, box_x + box_w, box_y + box_h, _LEGEND_BORDER)
        canvas.rect(box_x + 1, box_y + 1, box_x + box_w - 1, box_y + box_h - 1, _BACKGROUND)
        for index, (name, _, _) in enumerate(curves):
            color = COLORS[index % len(COLORS)]
            middle = box_y + box_pad + index * row_h + (_CAP_HEIGHT - 1) / 2
            coverage = np.zeros((height, width), dtype=np.float32)  # (H, W)
            line_x = np.array([box_x + box_pad, box_x + box_pad + sample_w], dtype=np.float64)
            _stroke(coverage, line_x, np.array([middle, middle]), 1.0, (0, 0, width - 1, height - 1))
            if drew_markers[index]:
                _dots(coverage, line_x.mean(keepdims=True), np.array([middle]), 3.0, (0, 0, width - 1, height - 1))
            canvas.blend(coverage, color)
            canvas.text(name, box_x + box_pad + sample_w + 7, box_y + box_pad + index * row_h, _TEXT)
    return canvas.image()


def plot_curves(path: str | os.PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                title: str, y_label: str = "", x_label: str = "step", y_range: tuple[float, float] | None = None,
                width: int = 800, height: int = 480, markers: bool | None = None) -> None:
    """Write the line chart of `series` (name -> (steps, values)) to `path` as a PNG; see `render_curves`."""
    image = render_curves(series, title=title, y_label=y_label, x_label=x_label, y_range=y_range, width=width,
                          height=height, markers=markers)
    write_png(path, image)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def plot_training(metrics_jsonl_path: str | os.PathLike, png_path: str | os.PathLike, *,
                  title: str | None = None) -> dict[str, int]:
    """Chart the trainer's metrics JSONL (one object a line, each with "step") into `png_path`.

    Plots whichever of `TRAINING_SERIES` are present (train reward mean, train accuracy and format rate, eval
    accuracy and format rate), on a 0..1 value axis when every value lies in [0, 1]. Lines without a numeric
    "step" are ignored; when a step appears twice (a resumed run appends), its last value wins. Returns the
    number of points plotted per series name.
    """
    path = os.fspath(metrics_jsonl_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file {path!r} does not exist")
    found: dict[str, dict[float, float]] = {name: {} for name, _ in TRAINING_SERIES}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            step = _number(record.get("step"))
            if step is None:
                continue
            for name, keys in TRAINING_SERIES:
                key = next((k for k in keys if k in record), None)
                value = _number(record.get(key)) if key is not None else None
                if value is not None:
                    found[name][step] = value
    series = {}
    for name, points in found.items():
        if points:
            steps = sorted(points)
            series[name] = (steps, [points[s] for s in steps])
    values = [v for _, vs in series.values() for v in vs if math.isfinite(v)]
    unit = bool(values) and all(0.0 <= v <= 1.0 for v in values)
    if title is None:
        run = os.path.basename(os.path.dirname(os.path.abspath(path)))
        title = f"Training curves: {run}" if run else "Training curves"
    plot_curves(png_path, series, title=title, y_label="rate" if unit and "train reward" not in series
                else "value", y_range=(0.0, 1.0) if unit else None)
    return {name: len(steps) for name, (steps, _) in series.items()}
