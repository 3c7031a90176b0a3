"""Training pictures: stats.jsonl reading, loss / probability / metric curves, real-vs-fake sheets,
atomic writes, and that nothing (figures, temporary files, memory) is left behind."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from PIL import Image

from facegan import plots

RED, BLUE = (255, 0, 0), (0, 0, 255)
LOWEST = "#ff7f0e"  # plot_metric's star on the lowest value


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def load_png(path: Path, min_size: tuple[int, int] = (200, 150)) -> np.ndarray:
    """The picture as RGB uint8, after checking it is a real, non-blank PNG of plausible size."""
    assert path.is_file()
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert picture.width >= min_size[0] and picture.height >= min_size[1]
        assert picture.width <= 5000 and picture.height <= 5000
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.std() > 0, "blank picture"
    return pixels


def share_near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> float:
    """Fraction of pixels within `tolerance` of `colour` in every channel."""
    return float((np.abs(pixels.astype(int) - colour) <= tolerance).all(axis=-1).mean())


def in_the_middle(pixels: np.ndarray, colour: tuple[int, int, int], rows: slice = slice(None)) -> int:
    """Pixels near `colour` in the middle fifth of the width (of `rows`): the data, never a legend.

    Legends sit in a corner, and their handles carry the data's colours; a plot whose data went
    missing (clipped by wrong limits, never drawn) would still show them there.
    """
    width = pixels.shape[1]
    return int((np.abs(pixels[rows, int(0.4 * width) : int(0.6 * width)].astype(int) - colour) <= 12).all(axis=-1).sum())


def widest_run(pixels: np.ndarray, colour: tuple[int, int, int], columns: slice) -> int:
    """The most pixels near `colour` in one row of `columns`, above the x axis: a histogram bar's top is a
    bin wide (~18 px), an upright line only its width."""
    above_axis = pixels[: int(0.88 * pixels.shape[0]), columns]
    return int((np.abs(above_axis.astype(int) - colour) <= 12).all(axis=-1).sum(axis=1).max())


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or "tmp" in p.name]


def training_stats(n: int, steps_per_epoch: int, every: int = 10, seed: int = 0) -> list[dict]:
    """Losses that start high and settle, D's probabilities that separate, as a loop would log them."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / max(n, 1)
    loss_d = 0.9 + 1.4 * np.exp(-8 * t) + 0.2 * rng.standard_normal(n)
    loss_g = 1.5 + 3.0 * np.exp(-6 * t) + 0.4 * rng.standard_normal(n)
    d_real = np.clip(0.7 - 0.2 * np.exp(-5 * t) + 0.05 * rng.standard_normal(n), 0, 1)
    d_fake = np.clip(0.3 + 0.2 * np.exp(-5 * t) + 0.05 * rng.standard_normal(n), 0, 1)
    return [
        {
            "step": i * every,
            "epoch": i * every // steps_per_epoch + 1,
            "kimg": i * every * 128 / 1000,
            "loss_d": float(loss_d[i]),
            "loss_g": float(loss_g[i]),
            "d_real": float(d_real[i]),
            "d_fake": float(d_fake[i]),
            "lr_g": 2e-4,
            "lr_d": 2e-4,
            "images_per_s": 80.5,
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, records: list[dict], tail: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)
    return path


# ------------------------------------------------------------------ read_stats


def test_read_stats_round_trips_records_in_order(tmp_path: Path) -> None:
    records = training_stats(50, 100)
    records[3]["note"] = "extra keys survive"
    assert plots.read_stats(write_jsonl(tmp_path / "stats.jsonl", records)) == records


def test_read_stats_skips_blank_lines_and_reads_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    assert plots.read_stats(tmp_path / "empty.jsonl") == []
    (tmp_path / "gaps.jsonl").write_text('{"step": 1}\n\n   \n{"step": 2}\n\n')
    assert plots.read_stats(str(tmp_path / "gaps.jsonl")) == [{"step": 1}, {"step": 2}]


@pytest.mark.parametrize(
    "tail",
    [b'{"step": 30, "loss_d": 1.', b'{"step": 30, "note": "caf\xc3', b"{", b'{"step": 30}garbage\n'],
    ids=["cut-number", "cut-utf8", "one-brace", "junk-with-newline"],
)
def test_read_stats_skips_an_unparsable_last_line(tmp_path: Path, tail: bytes) -> None:
    records = training_stats(3, 100)
    assert plots.read_stats(write_jsonl(tmp_path / "stats.jsonl", records, tail)) == records


@pytest.mark.parametrize("bad", ['{"step": 1, "loss', "[1, 2, 3]", "not json"])
def test_read_stats_raises_on_a_bad_middle_line_naming_it(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "stats.jsonl"
    path.write_text('{"step": 0}\n' + bad + '\n{"step": 20}\n')
    with pytest.raises(ValueError, match="line 2"):
        plots.read_stats(path)


def test_read_stats_sees_lines_appended_later(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "stats.jsonl", [{"step": 0}], b'{"step": 1')
    assert plots.read_stats(path) == [{"step": 0}]
    with path.open("ab") as file:
        file.write(b', "loss_d": 0.5}\n')
    assert plots.read_stats(path) == [{"step": 0}, {"step": 1, "loss_d": 0.5}]


# ------------------------------------------------------------------ plot_losses


def test_plot_losses_draws_both_losses_and_the_probability_panel(tmp_path: Path) -> None:
    out = plots.plot_losses(training_stats(600, 1000), tmp_path / "a" / "b" / "losses.png")
    assert out == tmp_path / "a" / "b" / "losses.png"
    pixels = load_png(out, min_size=(700, 450))
    assert pixels.shape[:2] == (600, 800)  # 8 x 6 inches at 100 dpi with the D panel
    for key in ("loss_d", "loss_g"):
        assert share_near(pixels, hex_rgb(plots.COLOURS[key])) > 0.001, key
    height = pixels.shape[0]
    # D(x) and D(G(z)) live in the bottom panel only.
    for key in ("real", "fake"):
        colour = hex_rgb(plots.COLOURS[key])
        assert share_near(pixels[int(height * 0.72) :], colour) > 0.002, key
        assert share_near(pixels[: int(height * 0.6)], colour) == 0.0, key
    assert no_temporary_files(out.parent)


def test_plot_losses_without_probabilities_is_one_panel(tmp_path: Path) -> None:
    stats = [{k: v for k, v in r.items() if k not in ("d_real", "d_fake")} for r in training_stats(80, 200)]
    pixels = load_png(plots.plot_losses(stats, tmp_path / "losses.png", epoch_steps=[200, 400, 600]))
    assert pixels.shape[:2] == (500, 800)
    assert share_near(pixels, hex_rgb(plots.COLOURS["real"])) == 0.0


@pytest.mark.parametrize("n", [1, 2, 20])  # one point, a line, the first smoothed size
def test_plot_losses_handles_a_handful_of_records(tmp_path: Path, n: int) -> None:
    pixels = load_png(plots.plot_losses(training_stats(n, 30), tmp_path / "losses.png"))
    height = pixels.shape[0]
    # One point sits mid-width (x from step - 1 to step + 1), so even a lone marker shows there.
    losses, probabilities = slice(0, int(0.68 * height)), slice(int(0.7 * height), None)
    for key, panel in (("loss_d", losses), ("loss_g", losses), ("real", probabilities), ("fake", probabilities)):
        drawn = in_the_middle(pixels, hex_rgb(plots.COLOURS[key]), panel)
        assert drawn >= 5, key


def test_plot_losses_with_gaps_nans_and_only_one_loss(tmp_path: Path) -> None:
    stats = [{"step": i, "loss_g": float("nan") if i % 7 == 0 else 2.0 + np.sin(i / 5)} for i in range(100)]
    stats[50]["loss_g"] = float("inf")  # a diverged step
    stats[60]["loss_g"] = None
    stats.append({"kimg": 3.0, "swd": 1.2})  # a record that is not a training step
    pixels = load_png(plots.plot_losses(stats, tmp_path / "losses.png"))
    assert share_near(pixels, hex_rgb(plots.COLOURS["loss_g"])) > 0.001
    assert share_near(pixels, hex_rgb(plots.COLOURS["loss_d"])) == 0.0


def test_plot_losses_of_100k_records_read_from_disk_is_quick(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "stats.jsonl", training_stats(100_000, 10_000), b'{"step": 10000')
    stats = plots.read_stats(path)
    assert len(stats) == 100_000
    # Drawn as per-bucket bands and a strided average (how it stays quick); its speed is not timed
    # here, where other work shares the cores.
    pixels = load_png(plots.plot_losses(stats, tmp_path / "losses.png"), min_size=(700, 450))
    height = pixels.shape[0]
    losses, probabilities = slice(0, int(0.68 * height)), slice(int(0.7 * height), None)
    for key, panel in (("loss_d", losses), ("loss_g", losses), ("real", probabilities), ("fake", probabilities)):
        drawn = in_the_middle(pixels, hex_rgb(plots.COLOURS[key]), panel)
        assert drawn > 50, key


def test_plot_losses_rejects_what_it_cannot_plot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one record"):
        plots.plot_losses([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="loss_d or loss_g"):
        plots.plot_losses([{"step": 1, "lr_g": 1e-4}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="dicts"):
        plots.plot_losses([1, 2, 3], tmp_path / "x.png")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="epoch_steps"):
        plots.plot_losses(training_stats(5, 2), tmp_path / "x.png", epoch_steps="100")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch_steps"):
        plots.plot_losses(training_stats(5, 2), tmp_path / "x.png", epoch_steps=[None])  # type: ignore[list-item]
    assert not (tmp_path / "x.png").exists() and no_temporary_files(tmp_path)


def test_epoch_boundaries_from_records_and_from_the_caller() -> None:
    x = np.arange(0.0, 100.0, 10.0)
    epochs = np.array([1, 1, 1, 2, 2, 2, 3, 3, np.nan, 4], float)
    where, numbers = plots._epoch_boundaries(x, epochs, None)
    assert where.tolist() == [30.0, 60.0] and numbers.tolist() == [2.0, 3.0]  # NaN breaks no boundary
    fractional = np.array([0.1, 0.5, 0.9, 1.3, 1.7, 2.1, 2.5, 2.9, 3.3, 3.7])
    where, numbers = plots._epoch_boundaries(x, fractional, None)
    assert where.tolist() == [30.0, 50.0, 80.0] and numbers.tolist() == [1.0, 2.0, 3.0]
    where, numbers = plots._epoch_boundaries(x, epochs, [0, 25, 25, 50, 500])
    assert where.tolist() == [25.0, 50.0] and numbers is None  # outside the plotted range: dropped


def test_a_resumed_run_keeps_only_the_later_records() -> None:
    steps = np.array([0, 10, 20, 30, 40, 20, 30, 40, 50], float)  # resumed from step 20
    assert plots._latest_only(steps).tolist() == [True, True, False, False, False, True, True, True, True]


def test_moving_average_skips_nans_and_keeps_levels() -> None:
    y = np.array([1.0, np.nan, 1.0, 1.0, 5.0, 5.0, 5.0, np.nan, np.nan, np.nan])
    smooth = plots._moving_average(y, 3)
    assert smooth[0] == 1.0 and smooth[2] == 1.0 and smooth[5] == 5.0
    assert smooth[3] == pytest.approx(7 / 3)
    assert np.isnan(smooth[8])  # no finite value in its window
    assert np.allclose(plots._moving_average(np.full(1000, 2.5), 51), 2.5)


# ------------------------------------------------------------------ plot_probabilities


def test_plot_probabilities_overlays_both_histograms(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    real, fake = rng.beta(5, 2, 256), rng.beta(2, 5, 200).astype(np.float32)
    out = plots.plot_probabilities(real, fake, tmp_path / "probs" / "epoch3.png", title="epoch 3")
    pixels = load_png(out, min_size=(700, 450))
    assert pixels.shape[:2] == (500, 800)
    width = pixels.shape[1]
    # Filled at 40% opacity on white: look for the outlines' full colours, left and right of 0.5.
    real_colour, fake_colour = hex_rgb(plots.COLOURS["real"]), hex_rgb(plots.COLOURS["fake"])
    assert share_near(pixels[:, width // 2 :], real_colour) > share_near(pixels[:, : width // 2], real_colour)
    assert share_near(pixels[:, : width // 2], fake_colour) > share_near(pixels[:, width // 2 :], fake_colour)


def test_plot_probabilities_accepts_the_edges_and_single_values(tmp_path: Path) -> None:
    real_colour, fake_colour = hex_rgb(plots.COLOURS["real"]), hex_rgb(plots.COLOURS["fake"])
    pixels = load_png(plots.plot_probabilities(np.array([1.0, 1.0, 0.0]), np.array([0.0]), tmp_path / "p.png"))
    width = pixels.shape[1]
    left, middle, right = slice(0, width // 10), slice(int(0.4 * width), int(0.6 * width)), slice(9 * width // 10, None)
    # Exactly 1 falls in the last bin and exactly 0 in the first: bars at both ends, none between.
    assert widest_run(pixels, real_colour, right) >= 10 and widest_run(pixels, fake_colour, left) >= 10
    assert widest_run(pixels, real_colour, middle) == 0 and widest_run(pixels, fake_colour, middle) == 0
    pixels = load_png(plots.plot_probabilities(np.array([1, 0, 1]), np.array([0.5]), tmp_path / "q.png"))
    assert widest_run(pixels, real_colour, right) >= 10 and widest_run(pixels, real_colour, left) >= 10
    assert widest_run(pixels, fake_colour, middle) >= 10 and widest_run(pixels, fake_colour, left) == 0


@pytest.mark.parametrize(
    "real, match",
    [
        (np.array([0.2, 1.5]), r"\[0, 1\]"),
        (np.array([-0.1, 0.5]), r"\[0, 1\]"),
        (np.array([0.5, np.nan]), "NaN"),
        (np.zeros(0), "empty"),
        (np.full((4, 1), 0.5), "1-D"),
        (np.array(["0.5"]), "dtype"),
        (np.array([True, False]), "dtype"),
    ],
    ids=["above-1", "below-0", "nan", "empty", "2-d", "text", "bool"],
)
def test_plot_probabilities_rejects_bad_arrays(tmp_path: Path, real: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plots.plot_probabilities(real, np.array([0.5]), tmp_path / "p.png")
    with pytest.raises(ValueError, match=match):
        plots.plot_probabilities(np.array([0.5]), real, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


# ------------------------------------------------------------------ real_vs_fake


def solid(colour: tuple[int, int, int], n: int = 16, size: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (n, size, size, 3)).copy()


def test_real_vs_fake_puts_real_left_and_generated_right(tmp_path: Path) -> None:
    pixels = load_png(plots.real_vs_fake(solid(RED), solid(BLUE), tmp_path / "sheet.png"))
    width = pixels.shape[1]
    left, right = pixels[:, : width // 2], pixels[:, width // 2 :]
    assert share_near(left, RED, 0) > 0.5 and share_near(left, BLUE, 0) == 0
    assert share_near(right, BLUE, 0) > 0.5 and share_near(right, RED, 0) == 0
    # 8 columns of 64 px at scale 2, twice: wider than the images alone, not absurdly so.
    assert 2 * 8 * 64 * 2 < width < 2 * 8 * 64 * 2 * 1.15
    assert 2 * 64 * 2 < pixels.shape[0] < 2 * 64 * 2 + 120  # two rows plus the labels


def find_block(sheet: np.ndarray, block: np.ndarray) -> list[tuple[int, int]]:
    """Every (row, col) where `block` appears exactly in `sheet`."""
    h, w = block.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(sheet, (w, 3), axis=(1, 2))[:, :, 0]
    hits = []
    for row in range(sheet.shape[0] - h + 1):
        for col in np.flatnonzero((windows[row] == block[0]).all(axis=(1, 2))):
            if np.array_equal(sheet[row : row + h, col : col + w], block):
                hits.append((row, int(col)))
    return hits


@pytest.mark.parametrize("scale", [1, 3])
def test_real_vs_fake_holds_every_image_pixel_for_pixel(tmp_path: Path, scale: int) -> None:
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    sheet = load_png(plots.real_vs_fake(real, fake, tmp_path / "sheet.png", columns=2, scale=scale), (50, 40))
    middle = sheet.shape[1] // 2
    for images, side in ((real, "left"), (fake, "right")):
        for image in images:
            enlarged = np.repeat(np.repeat(image, scale, 0), scale, 1)
            (hit,) = find_block(sheet, enlarged)
            assert (hit[1] < middle) == (side == "left")


def test_real_vs_fake_grayscale_and_uneven_counts(tmp_path: Path) -> None:
    gray = np.full((5, 32, 32, 1), 90, np.uint8)
    pixels = load_png(plots.real_vs_fake(gray, solid(BLUE, n=2, size=48), tmp_path / "s.png", columns=4, scale=1), (50, 40))
    assert share_near(pixels, (90, 90, 90), 0) > 0.05 and share_near(pixels, BLUE, 0) > 0.05


@pytest.mark.parametrize(
    "real, kwargs, match",
    [
        (solid(RED).astype(np.float32), {}, "uint8"),
        (solid(RED)[0], {}, "shape"),
        (solid(RED).transpose(0, 3, 1, 2).copy(), {}, "shape"),
        (solid(RED, n=0), {}, "empty"),
        (solid(RED), {"columns": 0}, "columns"),
        (solid(RED), {"scale": 0}, "scale"),
        (solid(RED), {"scale": 1.5}, "scale"),
        (solid(RED), {"scale": True}, "scale"),
    ],
    ids=["float", "3-d", "channels-first", "empty", "columns-0", "scale-0", "scale-float", "scale-bool"],
)
def test_real_vs_fake_rejects_bad_inputs(tmp_path: Path, real: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plots.real_vs_fake(real, solid(BLUE), tmp_path / "s.png", **kwargs)
    assert not (tmp_path / "s.png").exists()


# ------------------------------------------------------------------ plot_metric


def test_plot_metric_scalar_series_skips_records_without_it(tmp_path: Path) -> None:
    records = training_stats(30, 100)
    for i, k in enumerate(range(0, 2001, 200)):
        records.append({"kimg": float(k), "fid": 200 * np.exp(-k / 300) + 25 + i % 3})
    out = plots.plot_metric(records, "fid", tmp_path / "fid.png", ylabel="FID")
    pixels = load_png(out, min_size=(700, 450))
    assert pixels.shape[:2] == (500, 800)
    assert share_near(pixels, hex_rgb(plots.COLOURS["metric"])) > 0.002


def test_plot_metric_per_level_lists_numpy_scalars_and_single_points(tmp_path: Path) -> None:
    records = [{"epoch": e, "swd": [10.0 / e, 8.0 / e, 6.0 / e, 4.0 / e]} for e in range(1, 11)]
    pixels = load_png(plots.plot_metric(records, "swd", tmp_path / "swd.png"))
    for level in range(4):  # one line per level, in matplotlib's C0..C3
        drawn = in_the_middle(pixels, hex_rgb(to_hex(f"C{level}")))
        assert drawn > 100, level
    metric = hex_rgb(plots.COLOURS["metric"])
    records = [{"kimg": np.float32(k), "fid": np.float32(90 - k)} for k in range(0, 80, 10)]
    drawn = in_the_middle(load_png(plots.plot_metric(records, "fid", tmp_path / "np.png")), metric)
    assert drawn > 100
    # A lone point sits mid-width and mid-height, under the star that marks the lowest value.
    one = load_png(plots.plot_metric([{"step": 5, "fid": 40.0}], "fid", tmp_path / "one.png"))
    drawn = in_the_middle(one, hex_rgb(LOWEST), slice(int(0.35 * one.shape[0]), int(0.65 * one.shape[0])))
    assert drawn > 20
    drawn = in_the_middle(load_png(plots.plot_metric([{"fid": 40.0}, {"fid": 30.0}], "fid", tmp_path / "no-x.png")), metric)
    assert drawn > 100


def test_plot_metric_rejects_missing_or_malformed_series(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no record"):
        plots.plot_metric(training_stats(5, 100), "fid", tmp_path / "m.png")
    with pytest.raises(ValueError, match="same"):
        plots.plot_metric([{"epoch": 1, "swd": [1.0, 2.0]}, {"epoch": 2, "swd": [1.0]}], "swd", tmp_path / "m.png")
    with pytest.raises(ValueError, match="mixes"):
        plots.plot_metric([{"epoch": 1, "swd": [1.0, 2.0]}, {"epoch": 2, "swd": 1.0}], "swd", tmp_path / "m.png")
    with pytest.raises(ValueError, match="numeric"):
        plots.plot_metric([{"epoch": 1, "fid": "high"}], "fid", tmp_path / "m.png")
    with pytest.raises(ValueError, match="finite"):
        plots.plot_metric([{"epoch": 1, "fid": float("nan")}], "fid", tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists() and no_temporary_files(tmp_path)


# ------------------------------------------------------------------ writing and resources


def test_writes_replace_old_pictures_atomically_and_leave_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "p.png"
    plots.plot_probabilities(np.array([0.9]), np.array([0.1]), out)
    before = out.read_bytes()
    plots.plot_probabilities(np.array([0.6, 0.7]), np.array([0.1, 0.3]), out)  # overwrite works
    assert out.read_bytes() != before
    before = out.read_bytes()

    def broken_savefig(self, target, **kwargs):
        Path(target).write_bytes(b"\x89PNG half a picture")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_probabilities(np.array([0.5]), np.array([0.5]), out)
    assert out.read_bytes() == before  # the old picture is untouched, never half-replaced
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_pictures_get_ordinary_file_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    out = plots.real_vs_fake(solid(RED, n=1), solid(BLUE, n=1), tmp_path / "s.png")
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_figures() -> int:
    gc.collect()
    return sum(isinstance(o, Figure) for o in gc.get_objects())


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read memory use")
def test_repeated_plotting_leaks_no_figures_or_memory(tmp_path: Path) -> None:
    stats = training_stats(300, 100)
    probabilities = np.linspace(0, 1, 64)
    real, fake = solid(RED, n=4), solid(BLUE, n=4)

    def one_round(i: int) -> None:
        plots.plot_losses(stats, tmp_path / "losses.png")
        plots.plot_probabilities(probabilities, probabilities[::-1] ** 2, tmp_path / "p.png", title=f"epoch {i}")
        plots.plot_metric([{"epoch": e, "fid": 50.0 / e} for e in range(1, 9)], "fid", tmp_path / "m.png")

    one_round(0)  # warm caches (fonts, tick machinery) before measuring
    figures, memory = live_figures(), rss_bytes()
    for i in range(3):  # 9 figures (a draw takes ~0.15 s; a leaked one would hold ~2 MB of canvas)
        one_round(i)
    for _ in range(100):
        plots.real_vs_fake(real, fake, tmp_path / "s.png", scale=1)
    assert live_figures() == figures  # the exact check: every figure became garbage and was freed
    # The rough one: matplotlib's artist graphs are cycles, so up to ~15 MiB of garbage waits for
    # the cyclic collector and the allocator keeps the pages; a leak grows without bound.
    growth = rss_bytes() - memory
    assert growth < 32 * 2**20, f"memory grew by {growth / 2**20:.1f} MiB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.png", "m.png", "p.png", "s.png"]


def test_plotting_from_two_threads_at_once(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            plots.plot_losses(training_stats(200, 50, seed=i), tmp_path / f"losses{i}.png")
            plots.plot_probabilities(np.linspace(0, 1, 50), np.linspace(0, 0.5, 50), tmp_path / f"p{i}.png")
        except BaseException as error:  # noqa: BLE001  # surfaced below; a thread's exception would be lost
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(2):
        losses, probabilities = load_png(tmp_path / f"losses{i}.png"), load_png(tmp_path / f"p{i}.png")
        for pixels, key in ((losses, "loss_d"), (losses, "loss_g"), (probabilities, "real"), (probabilities, "fake")):
            assert share_near(pixels, hex_rgb(plots.COLOURS[key])) > 0.001, (i, key)


def test_importing_plots_touches_no_pyplot_or_display() -> None:
    code = "import sys, facegan.plots; sys.exit('matplotlib.pyplot' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False).returncode == 0
