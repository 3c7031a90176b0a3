"""The pictures a user watches while a GAN trains: loss curves, D's probabilities, real beside fake.

Curves are drawn on `matplotlib.figure.Figure` objects with the Agg canvas and never through
pyplot, so no global figure registry grows, no display is needed, and plotting from a training
thread or a worker process cannot disturb anything else. Every picture is written to a temporary
file in its destination folder and then renamed, so a reader (or a killed process) never sees
a half-written PNG under the final name.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter
from PIL import Image, ImageDraw, ImageFont

from facegan.errors import FaceganWarning
from facegan.files import write_atomically
from facegan.viz import make_grid, save_png

DPI = 100
CURVE_SIZE = (8.0, 5.0)  # inches; 800x500 pixels at DPI
CURVE_SIZE_WITH_D = (8.0, 6.0)  # the D(x) / D(G(z)) panel needs a little extra height
MAX_DRAWN = 2000  # above this many points a raw series is drawn as a per-bucket min/max band
BUCKETS = 1000
HIST_BINS = 40

# One colour per quantity in every figure, so the loss plot and the histograms read alike.
COLOURS = {
    "loss_d": "#1f77b4",
    "loss_g": "#d62728",
    "real": "#2ca02c",
    "fake": "#9467bd",
    "metric": "#1f77b4",
    "epoch": "#7f7f7f",
}
LABELS = {
    "loss_d": "D loss",
    "loss_g": "G loss",
    "d_real": "D(x), real",
    "d_fake": "D(G(z)), generated",
}
X_LABELS = {"kimg": "thousands of images shown (kimg)", "epoch": "epoch", "step": "step"}
# What a metric can be drawn against (plot_runs): the axis's name, the record key it reads, the factor
# from that key's unit to the axis's, and the axis label.
X_AXES = {
    "cpu-minutes": ("cpu_s", 1 / 60, "CPU minutes of the training process (user + system, over all resumes)"),
    "steps": ("step", 1.0, "G steps"),
    "kimg": ("kimg", 1.0, X_LABELS["kimg"]),
    "epoch": ("epoch", 1.0, "epoch"),
}


# ------------------------------------------------------------------ reading


DAMAGED_SUFFIX = ".damaged"  # stats.jsonl.damaged: lines set aside from stats.jsonl, as they were


def read_records(path: str | os.PathLike, valid: Callable[[dict], bool] | None = None
                 ) -> tuple[list[dict], list[tuple[int, bytes]]]:
    """The records of a JSON-lines file, in order, and its damaged lines: (line number, bytes as they were).

    A line that is not a JSON object (or that `valid` refuses) is damaged, the last one too: a
    process killed mid-append leaves half of one. Blank lines are neither.
    """
    records, damaged, _ = _parse(Path(path), valid)
    return records, damaged


def read_stats(path: str | os.PathLike) -> list[dict]:
    """Records of a stats.jsonl file, in order; a ValueError names a damaged line, but for the last.

    The last line may be the one being appended right now, or cut short by a kill: it is left out.
    (Writers that must go on despite damage use `read_records` and `set_aside_damaged`.)
    """
    records, damaged, last = _parse(Path(path), None)
    middle = [number for number, _ in damaged if number != last]
    if middle:
        raise ValueError(f"{path}: line {middle[0]} is not a JSON object")
    return records


def _parse(path: Path, valid: Callable[[dict], bool] | None) -> tuple[list[dict], list[tuple[int, bytes]], int]:
    """Records, damaged lines and the number of the last non-blank line."""
    # Bytes, not text: half a UTF-8 character, or random bytes, must cost only their own line.
    records: list[dict] = []
    damaged: list[tuple[int, bytes]] = []
    last = 0
    for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line.strip():
            continue
        last = number
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            record = None
        if isinstance(record, dict) and (valid is None or valid(record)):
            records.append(record)
        else:
            damaged.append((number, line))
    return records, damaged, last


def set_aside_damaged(path: str | os.PathLike, damaged: Sequence[tuple[int, bytes]], kept: int) -> Path:
    """Append damaged lines, as they were, to PATH.damaged, and warn once naming them; return that file.

    The one way a damaged JSON-lines file is repaired: its writer then rewrites it with the `kept`
    intact records, so nothing that was in it is lost.
    """
    path = Path(path)
    aside = path.with_name(path.name + DAMAGED_SUFFIX)
    with open(aside, "ab") as stream:
        stream.write(b"".join(line + b"\n" for _, line in damaged))
        stream.flush()
        os.fsync(stream.fileno())  # on disk before the lines leave the original
    numbers = [str(number) for number, _ in damaged]
    shown = ", ".join(numbers[:5]) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    warnings.warn(f"{path} had {len(damaged)} damaged line{'s' if len(damaged) != 1 else ''} (line {shown}), "
                  f"not records it can be read as; they are set aside in {aside} as they were, and its {kept:,} "
                  f"intact record{'s' if kept != 1 else ''} kept.", FaceganWarning, stacklevel=2)
    return aside


# ------------------------------------------------------------------ writing


def new_figure(size: tuple[float, float]) -> Figure:
    """A white, constrained-layout figure with its own Agg canvas: no pyplot, so no global state."""
    figure = Figure(figsize=size, dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write a figure as PNG atomically and free what it holds."""
    try:
        return write_atomically(path, lambda target: figure.savefig(target, format="png", dpi=DPI))
    finally:
        # No pyplot registry holds these figures, so once dropped they are garbage. Artists and
        # figure refer to each other, so the cyclic collector frees them (bounded, not a leak);
        # clearing first detaches the axes, so what one figure keeps alive meanwhile is smaller.
        figure.clear()


def style_axes(ax: Axes) -> None:
    """The house style of every plot: a light grid behind the data and no top or right spine."""
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# ------------------------------------------------------------------ series helpers


def _number(value: object) -> float:
    """A JSON value as a float; NaN for anything that is not a number (missing, null, text)."""
    # numbers.Real also admits numpy scalars, which in-memory records (not yet JSON) may hold.
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # a JSON integer beyond float range
            return math.nan
    return math.nan


def _column(records: Sequence[dict], key: str) -> np.ndarray:
    values = np.array([_number(record.get(key)) for record in records], dtype=np.float64)
    values[np.isinf(values)] = np.nan  # a diverged loss becomes a gap, not an unplottable point
    return values


def _latest_only(x: np.ndarray) -> np.ndarray:
    """Mask keeping, where x goes backwards, only the later records.

    A run resumed from an older checkpoint appends steps it has already logged; the new records
    supersede the old ones, so a record is kept only if every later record lies beyond it.
    """
    if x.size == 0:
        return np.ones(0, bool)
    later_min = np.minimum.accumulate(x[::-1])[::-1]
    return x < np.append(later_min[1:], np.inf)


def _smoothing_window(n: int) -> int:
    """Points in the moving average: none for a handful, then about 2% of the run."""
    return 1 if n < 20 else max(5, n // 50)


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average that skips NaNs; the window is cut short (not shifted) at the ends."""
    n = y.size
    if window <= 1 or n == 0:
        return y.copy()
    finite = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])  # O(n) for any window
    counts = np.concatenate([[0], np.cumsum(finite)])
    first = np.arange(n) - window // 2
    start, stop = np.clip(first, 0, n), np.clip(first + window, 0, n)
    count = counts[stop] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[stop] - sums[start]) / count, np.nan)


def _envelope(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bucket centre x, min y and max y: what a dense noisy line looks like, in few points."""
    edges = np.linspace(0, x.size, BUCKETS + 1).astype(np.intp)[:-1]
    counts = np.diff(np.append(edges, x.size))
    centre = np.add.reduceat(x, edges) / counts
    low = np.minimum.reduceat(np.where(np.isfinite(y), y, np.inf), edges)
    high = np.maximum.reduceat(np.where(np.isfinite(y), y, -np.inf), edges)
    empty = ~np.isfinite(low)
    low[empty], high[empty] = np.nan, np.nan
    return centre, low, high


def _draw_series(
    ax: Axes, x: np.ndarray, y: np.ndarray, colour: str, label: str
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Raw values faint and their moving average bold; raw alone, with markers, when few.

    Returns the moving average (all points) and the bold line as drawn (for legend placement).
    """
    window = _smoothing_window(int(np.isfinite(y).sum()))
    if window == 1:
        ax.plot(x, y, color=colour, linewidth=1.6, marker="o", markersize=3.5, label=label)
        return y, (x, y)
    if x.size > MAX_DRAWN:
        centre, low, high = _envelope(x, y)
        ax.fill_between(centre, low, high, color=colour, alpha=0.14, linewidth=0)
    else:
        ax.plot(x, y, color=colour, linewidth=0.7, alpha=0.3)
    smooth = _moving_average(y, window)
    drawn_x, drawn = x, smooth
    if x.size > MAX_DRAWN:  # smooth already, so a stride loses nothing visible
        keep = np.unique(np.linspace(0, x.size - 1, MAX_DRAWN).astype(np.intp))
        drawn_x, drawn = x[keep], smooth[keep]
    ax.plot(drawn_x, drawn, color=colour, linewidth=2.0, label=f"{label} (mean of {window})")
    return smooth, (drawn_x, drawn)


def _robust_limits(raw: list[np.ndarray], smooth: list[np.ndarray]) -> tuple[float, float] | None:
    """Y limits that hold the averages and nearly all raw points, so one spike cannot flatten all."""
    values = np.concatenate([r[np.isfinite(r)] for r in raw]) if raw else np.zeros(0)
    if values.size == 0:
        return None
    if values.size >= 200:
        low, high = np.percentile(values, [0.5, 99.5])
    else:
        low, high = values.min(), values.max()
    for s in smooth:
        s = s[np.isfinite(s)]
        if s.size:
            low, high = min(low, s.min()), max(high, s.max())
    span = high - low
    pad = 0.06 * span if span > 0 else max(0.5, 0.1 * abs(high))
    return float(low - pad), float(high + pad)


def _quiet_corner(ax: Axes, curves: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """The legend corner covering the fewest points; matplotlib's "best" is ~0.1 s per legend."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    fx = np.concatenate([(x - x0) / ((x1 - x0) or 1.0) for x, _ in curves])
    fy = np.concatenate([(y - y0) / ((y1 - y0) or 1.0) for _, y in curves])
    corners = {"upper right": (fx > 0.6) & (fy > 0.7), "upper left": (fx < 0.4) & (fy > 0.7),
               "lower right": (fx > 0.6) & (fy < 0.3), "lower left": (fx < 0.4) & (fy < 0.3)}
    return min(corners, key=lambda corner: int(corners[corner].sum()))  # ties: the order above


def _x_axis(ax: Axes, x: np.ndarray, whole: bool) -> None:
    """A little room at both ends (markers stay whole); whole counts get whole, comma-grouped ticks."""
    low, high = float(x.min()), float(x.max())
    pad = 0.015 * (high - low) if high > low else 1.0
    ax.set_xlim(low - pad, high + pad)
    if whole:
        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


# ------------------------------------------------------------------ curves


def plot_losses(stats: list[dict], path: str | os.PathLike, epoch_steps: list[int] | None = None) -> Path:
    """G and D losses over steps (raw, faint; plus a moving average, bold) -> PNG."""
    if not stats:
        raise ValueError("plot_losses needs at least one record")
    if not all(isinstance(record, dict) for record in stats):
        raise ValueError("plot_losses needs a list of dicts (records of stats.jsonl)")
    steps = _column(stats, "step")
    if np.isfinite(steps).any():  # records without a step (if any) cannot be placed: leave them out
        x, x_label = steps[np.isfinite(steps)], "step"
        records = [record for record, step in zip(stats, steps) if math.isfinite(step)]
    else:  # no steps at all: the records' order is all we know
        x, x_label, records = np.arange(len(stats), dtype=np.float64), "record", list(stats)
    keep = _latest_only(x)
    x = x[keep]
    records = [record for record, kept in zip(records, keep) if kept]
    losses = {key: _column(records, key) for key in ("loss_d", "loss_g")}
    losses = {key: y for key, y in losses.items() if np.isfinite(y).any()}
    if not losses:
        raise ValueError("no record has a numeric loss_d or loss_g to plot")
    probabilities = {key: _column(records, key) for key in ("d_real", "d_fake")}
    probabilities = {key: y for key, y in probabilities.items() if np.isfinite(y).any()}

    boundaries, epochs = _epoch_boundaries(x, _column(records, "epoch"), epoch_steps)

    figure = new_figure(CURVE_SIZE_WITH_D if probabilities else CURVE_SIZE)
    if probabilities:
        ax, ax_d = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ax_d = figure.subplots(1, 1), None
    drawn = [_draw_series(ax, x, y, COLOURS[key], LABELS[key]) for key, y in losses.items()]
    limits = _robust_limits(list(losses.values()), [smooth for smooth, _ in drawn])
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_ylabel("loss")
    ax.set_title(_progress_title(records[-1], x_label, x[-1]), fontsize=11, loc="left")
    for axes in (ax, ax_d):
        if axes is not None:
            style_axes(axes)
            _draw_epochs(axes, boundaries)
            _x_axis(axes, x, whole=True)
    _number_epochs(ax, boundaries, epochs)
    ax.legend(loc=_quiet_corner(ax, [line for _, line in drawn]), fontsize=9, framealpha=0.9)

    if ax_d is not None:
        ax_d.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
        drawn = [_draw_series(ax_d, x, y, COLOURS["real" if key == "d_real" else "fake"], LABELS[key])
                 for key, y in probabilities.items()]
        ax_d.set_ylim(-0.03, 1.03)
        ax_d.set_yticks([0, 0.5, 1])
        ax_d.set_ylabel("D's probability")
        ax_d.legend(loc=_quiet_corner(ax_d, [line for _, line in drawn]), fontsize=8, framealpha=0.9)
    (ax_d or ax).set_xlabel(x_label)
    return save_figure(figure, path)


def _epoch_boundaries(
    x: np.ndarray, epoch: np.ndarray, epoch_steps: list[int] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Steps where an epoch starts (inside the plotted range), with the epoch numbers if known."""
    if epoch_steps is not None:
        if isinstance(epoch_steps, (str, bytes)):
            raise ValueError(f"epoch_steps must be a list of step numbers, got {epoch_steps!r}")
        try:
            given = np.array([float(s) for s in epoch_steps], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"epoch_steps must be a list of step numbers, got {epoch_steps!r}") from None
        inside = (given > x.min()) & (given <= x.max()) & np.isfinite(given)
        return np.unique(given[inside]), None
    # floor: a loop that logs fractional progress (epoch 2.37) still starts epochs at whole numbers
    epoch = np.floor(epoch)
    change = np.flatnonzero(np.isfinite(epoch[1:]) & np.isfinite(epoch[:-1]) & (epoch[1:] != epoch[:-1])) + 1
    return x[change], epoch[change]


def _draw_epochs(ax: Axes, boundaries: np.ndarray) -> None:
    """Faint vertical lines where epochs start, thinned to at most ~100 so they stay faint."""
    stride = max(1, math.ceil(boundaries.size / 100))
    for step in boundaries[stride - 1 :: stride]:
        ax.axvline(step, color=COLOURS["epoch"], linewidth=0.7, alpha=0.35, zorder=0)


def _number_epochs(ax: Axes, boundaries: np.ndarray, epochs: np.ndarray | None) -> None:
    """Epoch numbers as ticks along the top edge, outside the data (at most ~12 labelled)."""
    if epochs is None or boundaries.size == 0:
        return
    stride = max(1, math.ceil(boundaries.size / 12))
    top = ax.secondary_xaxis("top")
    top.set_xticks(boundaries[stride - 1 :: stride], labels=[f"ep {e:g}" for e in epochs[stride - 1 :: stride]])
    top.tick_params(labelsize=7, labelcolor="#666666", color="#bbbbbb", length=3, pad=1)
    top.spines["top"].set_visible(False)


def _progress_title(last: dict, x_label: str, last_x: float) -> str:
    parts = [f"{x_label} {last_x:,.0f}"]
    for key, form in (("epoch", "epoch {:g}"), ("kimg", "{:,.1f} kimg")):
        value = _number(last.get(key))
        if math.isfinite(value):
            parts.append(form.format(value))
    return "losses  —  " + ", ".join(parts)


def plot_metric(records: list[dict], key: str, path: str | os.PathLike, ylabel: str | None = None) -> Path:
    """One metric (e.g. an SWD or FID series keyed by "kimg" or "epoch") over training -> PNG."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    rows = [record for record in records if isinstance(record, dict) and record.get(key) is not None]
    if not rows:
        raise ValueError(f"no record has a value for {key!r}")
    values = _metric_values(rows, key)
    x_key = next((k for k in ("kimg", "epoch", "step") if np.isfinite(_column(rows, k)).all()), None)
    if x_key is None:
        x, x_label = np.arange(1, len(rows) + 1, dtype=np.float64), "evaluation"
    else:
        x, x_label = _column(rows, x_key), X_LABELS[x_key]
    keep = _latest_only(x)
    x, values = x[keep], values[keep]
    if not np.isfinite(values).any():
        raise ValueError(f"{key!r} has no finite numeric value to plot")

    figure = new_figure(CURVE_SIZE)
    ax = figure.subplots()
    style_axes(ax)
    marker = "o" if x.size <= 60 else None
    _x_axis(ax, x, whole=x_key in ("step", "epoch", None))
    if values.shape[1] == 1:
        y = values[:, 0]
        ax.plot(x, y, color=COLOURS["metric"], linewidth=1.8, marker=marker, markersize=4)
        ax.set_title(_metric_title(key, x, y, x_key or "evaluation"), fontsize=11, loc="left")
        best = int(np.nanargmin(y))
        ax.plot(x[best], y[best], marker="*", markersize=13, color="#ff7f0e", linestyle="none",
                label=f"lowest {y[best]:.4g}", zorder=3)
        ax.legend(loc=_quiet_corner(ax, [(x, y)]), fontsize=9)
    else:  # e.g. SWD per resolution level, or per-class scores: one line each
        colours = [f"C{i % 10}" for i in range(values.shape[1])]
        for i in range(values.shape[1]):
            ax.plot(x, values[:, i], color=colours[i], linewidth=1.5, marker=marker, markersize=3.5,
                    label=f"{key}[{i}]")
        ax.set_title(key, fontsize=11, loc="left")
        corner = _quiet_corner(ax, [(x, v) for v in values.T])
        ax.legend(loc=corner, fontsize=9, ncols=2 if values.shape[1] > 6 else 1)
    ax.set_xlabel(x_label)
    ax.set_ylabel(ylabel if ylabel is not None else key)
    return save_figure(figure, path)


def metric_curve(records: Sequence[dict], key: str, x: str = "cpu-minutes") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one scalar metric over training from metrics.jsonl records: those with both values, in the
    axis's unit, each x once (a resume from an older checkpoint measures its steps again: the later value counts)."""
    x_key, scale, _ = X_AXES[x]
    rows = [r for r in records if isinstance(r, dict) and math.isfinite(_number(r.get(key)))
            and math.isfinite(_number(r.get(x_key)))]
    xs, ys = _column(rows, x_key) * scale, _column(rows, key)
    keep = _latest_only(xs)
    order = np.argsort(xs[keep], kind="stable")
    return xs[keep][order], ys[keep][order]


def plot_runs(curves: dict[str, tuple[np.ndarray, np.ndarray]], key: str, path: str | os.PathLike, x: str = "cpu-minutes",
              steps: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """One metric over training for several runs on one axes (or one run), each line named, its lowest marked -> PNG.

    `curves` maps a label to (x, y) from `metric_curve`. `steps`, for a single run against CPU minutes,
    is (cpu minutes, G steps) at the same points: G steps then run along the top edge.
    """
    curves = {label: (cx, cy) for label, (cx, cy) in curves.items() if np.isfinite(cy).any()}
    if not curves:
        raise ValueError(f"no run has a finite value of {key!r} to plot")
    figure = new_figure(CURVE_SIZE)
    ax = figure.subplots()
    style_axes(ax)
    lower_is_better = not key.endswith(("_precision", "_recall"))
    pick = np.nanargmin if lower_is_better else np.nanargmax
    for i, (label, (cx, cy)) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        best = int(pick(cy))
        ax.plot(cx, cy, color=colour, linewidth=1.8, marker="o" if cx.size <= 60 else None, markersize=3.5,
                label=f"{label}: last {cy[np.isfinite(cy)][-1]:.4g}, {'lowest' if lower_is_better else 'highest'} {cy[best]:.4g}")
        ax.plot(cx[best], cy[best], marker="*", markersize=12, color=colour, linestyle="none", zorder=3)
    _x_axis(ax, np.concatenate([cx for cx, _ in curves.values()]), whole=x in ("steps", "epoch"))
    title = f"{key} over training"
    if steps is not None and len(curves) == 1 and np.all(np.diff(steps[0]) > 0) and np.all(np.diff(steps[1]) > 0):
        minutes, counts = steps  # both increase together, so either axis maps onto the other
        top = ax.secondary_xaxis("top", functions=(lambda m: np.interp(m, minutes, counts),
                                                   lambda n: np.interp(n, counts, minutes)))
        top.tick_params(labelsize=8, labelcolor="#666666")
        title += "  —  G steps along the top"
    ax.set_xlabel(X_AXES[x][2])
    ax.set_ylabel(key)
    ax.set_title(title, fontsize=11, loc="left")
    ax.legend(loc=_quiet_corner(ax, list(curves.values())), fontsize=9, framealpha=0.9)
    return save_figure(figure, path)


def _metric_values(rows: list[dict], key: str) -> np.ndarray:
    """(n, k) floats: k = 1 for a scalar metric, k = list length for a per-level metric."""
    raw = [row[key] for row in rows]
    if all(isinstance(v, (list, tuple)) for v in raw):
        lengths = {len(v) for v in raw}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                f"{key!r} lists must all have the same, non-zero length; got lengths {sorted(lengths)}"
            )
        values = np.array([[_number(item) for item in v] for v in raw], dtype=np.float64)
    elif any(isinstance(v, (list, tuple)) for v in raw):
        raise ValueError(f"{key!r} mixes single numbers and lists across records")
    else:
        values = np.array([_number(v) for v in raw], dtype=np.float64)[:, None]
        bad = next((v for v, y in zip(raw, values[:, 0]) if math.isnan(y) and not isinstance(v, numbers.Real)), None)
        if bad is not None:  # a NaN stored as NaN is a gap; text or a dict here is a caller's mistake
            raise ValueError(f"{key!r} must be numeric, got {bad!r}")
    values[np.isinf(values)] = np.nan
    return values


def _metric_title(key: str, x: np.ndarray, y: np.ndarray, x_key: str) -> str:
    last = int(np.flatnonzero(np.isfinite(y))[-1])
    best = int(np.nanargmin(y))
    title = f"{key}  —  last {y[last]:.4g} at {x_key} {x[last]:g}"
    if y[best] < y[last]:
        return f"{title},  lowest {y[best]:.4g} at {x_key} {x[best]:g}"
    return f"{title} (the lowest so far)"


# ------------------------------------------------------------------ discriminator outputs


def _probabilities(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{name} must be a float array of probabilities, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one probability per image), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one probability")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if array.min() < 0 or array.max() > 1:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values from {array.min():.4g} to {array.max():.4g}"
            " (apply a sigmoid to logits first)"
        )
    return array


def plot_probabilities(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """Histograms of D's probability on real and on generated images (0..1, same bins, overlaid) -> PNG."""
    real = _probabilities(real, "real")
    fake = _probabilities(fake, "fake")
    bins = np.linspace(0.0, 1.0, HIST_BINS + 1)
    figure = new_figure(CURVE_SIZE)
    ax = figure.subplots()
    style_axes(ax)
    # Fractions, not counts, so a batch of 64 real and 256 generated images compare directly.
    for values, colour, name in ((real, COLOURS["real"], "real"), (fake, COLOURS["fake"], "generated")):
        fractions = np.histogram(values, bins=bins)[0] / values.size
        label = f"{name}: mean {values.mean():.3f} (n={values.size:,})"
        # Stairs rather than ax.hist: one artist per outline instead of one patch per bar.
        ax.stairs(fractions, bins, fill=True, color=colour, alpha=0.4, label=label)
        ax.stairs(fractions, bins, color=colour, linewidth=1.4)
        ax.axvline(values.mean(), color=colour, linestyle="--", linewidth=1.4)
    ax.axvline(0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # headroom: the legend sits above the tallest bar
    ax.set_xlabel("D's probability that the image is real")
    ax.set_ylabel("fraction of images")
    ax.legend(loc="upper center", fontsize=9, framealpha=0.9)
    heading = "discriminator on real and generated images"
    ax.set_title(f"{title}  —  {heading}" if title else heading, fontsize=11, loc="left")
    return save_figure(figure, path)


# ------------------------------------------------------------------ image sheets


def _images(images: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 images (N, H, W, 3), got dtype {array.dtype}")
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, H, W, 3) (channels last), got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"{name} is empty: got shape {array.shape}")
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable built-in font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def real_vs_fake(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike, columns: int = 8, scale: int = 2) -> Path:
    """A sheet: a grid of real images beside a grid of generated ones, labelled -> PNG."""
    real = _images(real, "real")
    fake = _images(fake, "fake")
    for name, value in (("columns", columns), ("scale", scale)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    # Both grids get the same number of columns so they line up; never more columns than images.
    columns = int(min(columns, max(len(real), len(fake))))
    scale = int(scale)
    # Composed with numpy and Pillow rather than matplotlib: every image pixel lands unresampled,
    # enlarged by exact nearest-neighbour repetition.
    grids = [np.repeat(np.repeat(make_grid(a, nrow=columns), scale, 0), scale, 1) for a in (real, fake)]

    font_size = 12 + 4 * scale
    font = _font(font_size)
    margin, gap, label_h = 6 * scale, 12 * scale, int(font_size * 1.8)
    width = margin + grids[0].shape[1] + gap + grids[1].shape[1] + margin
    height = label_h + max(g.shape[0] for g in grids) + margin
    canvas = np.full((height, width, 3), 255, np.uint8)
    lefts = [margin, margin + grids[0].shape[1] + gap]
    for grid, left in zip(grids, lefts):
        canvas[label_h : label_h + grid.shape[0], left : left + grid.shape[1]] = grid
    divider = lefts[1] - gap // 2
    canvas[label_h : label_h + max(g.shape[0] for g in grids), divider - max(1, scale // 2) : divider + 1] = 200

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for grid, left, text in zip(grids, lefts, ("real", "generated")):
        # Anchored at the middle of the label strip, centred over its grid.
        draw.text((left + grid.shape[1] / 2, label_h / 2 + scale), text, fill=(40, 40, 40), font=font, anchor="mm")
    return save_png(np.asarray(picture), path)  # itself atomic
