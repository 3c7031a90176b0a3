"""Smoke tests of the benchmark scripts: each runs as a script on a tiny setting and prints its tables, all figures finite.

recipes.py has its own tests (test_recipes_benchmark.py). A tiny run's figures mean nothing; what is checked is
that each script still runs against the package as it is, prints the columns its docstring and the README
quote, and computes no NaN or infinity. Nothing is timed for real.

All scripts run in one subprocess that imports torch once and forks a fresh child per script (as
`__main__`, with its own argv, stdout and stderr): a subprocess per script would import torch six times,
about 4 s each on a loaded 2-core machine, more than all the scripts' tiny work together.

Three scripts cannot be made tiny enough and run with --help only (their imports and arguments):
fid_agreement.py and fid_floor.py print 5 to 7 FIDs, each ~4 s on one core whatever the image count
(eigendecompositions of 2048 x 2048 covariances); metrics.py's network table is Inception-v3 forward
passes at 299x299, ~6 s even at batch 1. Their cheap parts are checked in this process instead:
metrics.py's statistics table on small features, fid_floor's spoiled images and its EMA with G's statistics.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CELEBA, TEXT_FILES

import facegan
from facegan.models import build_models

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

# Imports torch and the package's heavy modules once, then runs each job's script in a forked child of its own.
_RUNNER = r"""
import json, os, runpy, sys, time, traceback
jobs = json.loads(sys.argv[1])
try:  # best effort: a module that fails to import fails in each script that needs it, with its traceback
    import torch, facegan.train.loop, facegan.sample, facegan.metrics.evaluate  # noqa: F401
except Exception:
    pass
results = {}
for job in jobs:
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, name in ((1, job["stdout"]), (2, job["stderr"])):
                os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            sys.argv = [job["script"], *job["args"]]
            runpy.run_path(job["script"], run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    results[job["name"]] = {"code": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - started}
print(json.dumps(results))
"""


def small_celeba(root: Path, count: int) -> Path:
    """A shared-data folder whose celeba/ has `count` of the real sample's images and the first `count` rows of each
    annotation file: prepare.py names its images 000001.jpg ... as those rows do, and skips parsing 202,599 rows."""
    images = root / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    for jpeg in sorted((CELEBA / "img_align_celeba").iterdir())[:count]:
        (images / jpeg.name).symlink_to(jpeg)
    for name in TEXT_FILES:
        with open(CELEBA / name) as full:
            lines = [next(full) for _ in range(count + 2 if name == "list_attr_celeba.txt" else count)]
        if name == "list_attr_celeba.txt":  # counted: the number of rows, then the attribute names
            lines[0] = f"{count}\n"
        (root / "celeba" / name).write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> dict[str, dict]:
    """Each script's exit code, stdout and stderr, by name; a script whose inputs are missing is absent."""
    if not hasattr(os, "fork"):
        pytest.skip("the runner forks a child per script (POSIX only)")
    work = tmp_path_factory.mktemp("benchmarks")
    jobs = {"throughput": ["--tiny", "--device", "cpu", "--rounds", "1", "--steps", "1"],
            "learn": ["--minutes", "0", "--datasets", "synthetic", "--faces", "32", "--width", "8", "--batch", "16",
                      "--samples", "16"],
            "scaling": ["--tiny", "--cpu-only"],
            "fid_agreement": ["--help"], "fid_floor": ["--help"], "metrics": ["--help"]}
    shared = work / "shared"
    if CELEBA.exists():
        small_celeba(shared, 128)
        jobs["prepare"] = ["--images", "128", "--faces", "16", "--baseline", "16", "--batches", "1"]
    spec = [{"name": name, "script": str(BENCHMARKS / f"{name}.py"), "args": args,
             "stdout": str(work / f"{name}.out"), "stderr": str(work / f"{name}.err")} for name, args in jobs.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(work), "FACEGAN_CACHE": str(work / "cache"),
           "FACEGAN_SHARED_DATA": str(shared), "MPLBACKEND": "Agg",
           # The facegan these tests import (a worktree's src/, or an installed one), for the scripts' own children too.
           "PYTHONPATH": os.pathsep.join([str(Path(facegan.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(spec)], capture_output=True, text=True, env=env,
                            timeout=300, cwd=work, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    codes = json.loads(result.stdout.splitlines()[-1])
    return {job["name"]: {**codes[job["name"]], "out": Path(job["stdout"]).read_text(), "err": Path(job["stderr"]).read_text()}
            for job in spec}


def output(printed: dict, name: str) -> str:
    """What the script printed on stdout, once it has exited 0."""
    if name not in printed:
        pytest.skip(f"{name}.py needs the real CelebA sample, which is not at {CELEBA}")
    run = printed[name]
    assert run["code"] == 0, f"{name}.py exited {run['code']}:\n{run['err'][-3000:]}"
    print(f"{name}.py: {run['seconds']:.1f} s")
    return run["out"]


def table(text: str, first: str, dashed: bool = True) -> tuple[list[str], list[str]]:
    """The columns of the header line that starts with `first`, and the rows under it (and its dashed line), up to a
    blank line or a note in brackets."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(first)), None)
    assert at is not None, f"no table headed {first!r} in\n{text}"
    if dashed:
        assert set(lines[at + 1]) == {"-"}, f"no dashed line under {lines[at]!r}"
    rows = []
    for line in lines[at + 1 + dashed :]:
        if not line.strip() or line.startswith("("):
            break
        rows.append(line)
    return re.split(r"\s{2,}", lines[at].strip()), rows


def numbers(row: str) -> list[float]:
    """Every number in a table row, as printed: 1,234.5, 1.32x, 13%, 3.1e-05, and nan or inf if there are any."""
    found = []
    for token in row.split():
        try:
            found.append(float(token.rstrip("x%").replace(",", "")))
        except ValueError:
            pass
    return found


def assert_finite(rows: list[str]) -> None:
    for row in rows:
        assert numbers(row) and all(math.isfinite(v) for v in numbers(row)), f"a figure that is not finite in {row!r}"


def test_prepare_prints_speed_against_the_plain_loop_for_each_stage(printed):
    text = output(printed, "prepare")
    columns, rows = table(text, "what")
    assert columns == ["what", "images", "seconds", "images/s", "baseline/s", "ratio", "target/s", "met", "peak RSS MiB"]
    assert [row[:26].strip() for row in rows] == ["CelebA JPEGs -> 64x64", "synthetic faces 64x64", "shuffled batches of 128"]
    assert_finite(rows)
    for row, images in zip(rows, (128, 16, 128)):
        count, _, rate, baseline, ratio = numbers(row[26:])[:5]
        assert count == images and rate > 0 and baseline > 0
        assert ratio == pytest.approx(rate / baseline, abs=0.06, rel=0.02)  # printed to one decimal
        assert ("yes" in row.split()) != ("NO" in row.split())


def test_scaling_prints_images_per_second_and_efficiency_for_one_and_two_processes(printed):
    text = output(printed, "scaling")
    columns, rows = table(text, "setting")
    assert columns == ["setting", "processes", "threads", "images/s", "efficiency", "vs 1 x 2 threads"]
    assert [numbers(row)[1:3] for row in rows] == [[1, 1], [1, 2], [2, 1]]  # after the global batch's 16
    assert_finite(rows)
    assert rows[0].split()[-2] == "100%" and rows[1].split()[-1] == "1.00x"  # the two baselines
    assert all(numbers(row)[3] > 0 for row in rows)


def test_throughput_prints_facegan_against_plain_and_the_sweep(printed):
    text = output(printed, "throughput")
    gflop = re.search(r"costs ([\d.]+) GFLOP per image .* executes ([\d.]+)\); \w+ matrix product: ([\d,]+) GFLOP/s "
                      r"-> ceiling ([\d,]+) images/s", text)
    assert gflop, text
    assert all(float(v.replace(",", "")) > 0 for v in gflop.groups())
    columns, rows = table(text, "loop")
    assert columns == ["loop", "images/s", "vs plain", "of ceiling"]
    assert [row[:44].strip() for row in rows] == ["plain eager fp32 NCHW (tensors in memory)", "facegan train_step"]
    assert_finite(rows)
    assert rows[0].split()[-2] == "1.00x"
    rate, ratio, share = numbers(rows[1][44:])
    assert rate > 0 and ratio > 0 and share >= 0 and rows[1].endswith("%")
    columns, rows = table(text, "resolution")
    assert columns == ["resolution", "16"]  # --tiny sweeps batch 16 only
    assert [row.split()[0] for row in rows] == ["32", "64", "128"]
    assert_finite(rows)
    assert all(numbers(row)[1] > 0 for row in rows)
    assert "peak resident memory" not in text  # --tiny skips the memory table


def test_learn_prints_swd_for_each_epoch(printed):
    text = output(printed, "learn")
    columns, rows = table(text, "dataset")
    rows, summary = rows[:-1], rows[-1]  # the summary line follows the rows
    assert columns == ["dataset", "epoch", "step", "minutes", "swd64", "swd32", "swd16", "swd_avg"]
    assert_finite(rows)
    # --minutes 0 trains exactly one epoch: 32 faces in batches of 16 are two steps.
    assert [numbers(row)[:2] for row in rows] == [[0, 0], [1, 2]]
    for row in rows:
        *levels, average = numbers(row)[3:]
        assert all(v > 0 for v in levels) and average == pytest.approx(sum(levels) / len(levels), abs=0.02)
    found = re.fullmatch(r"synthetic: swd_avg ([\d.]+) -> ([\d.]+) \(([\d.]+)x of the untrained generator's\)", summary)
    assert found, summary
    first, last, ratio = (float(v) for v in found.groups())
    assert [first, last] == [numbers(rows[0])[-1], numbers(rows[1])[-1]]
    assert ratio == pytest.approx(last / first, abs=0.006)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_statistics_table_on_small_features():
    rows = load_script("metrics").math_rows(False, count=100, dim=64)
    assert [name for name, _, _ in rows] == [
        "mean and covariance, 2 x 100 x 64", "FID from statistics (Cholesky + eigvalsh)",
        "FID, 20 samples: singular (eigh path)", "KID, 100 subsets of 100", "precision/recall, k=3, 100 each"]
    assert all(math.isfinite(seconds) and seconds >= 0 for _, seconds, _ in rows) and rows[0][2] == ""
    values = [numbers(value) for _, _, value in rows[1:]]
    assert all(math.isfinite(v) for found in values for v in found)
    (full,), (singular,), (_, kid_sd), (precision, recall) = values
    assert full > 0 and singular > full  # 20 samples: a worse fit of the same distributions
    assert kid_sd >= 0 and 0 <= precision <= 1 and 0 <= recall <= 1


@pytest.mark.parametrize("name, options", [("fid_agreement", ["--count", "--jpeg-count", "--skip-agreement", "--keep"]),
                                           ("fid_floor", ["--train", "--held-out", "--run", "--count", "--threads"]),
                                           ("metrics", ["--quick"])])
def test_the_inception_benchmarks_start_and_list_their_options(printed, name, options):
    text = output(printed, name)
    assert text.startswith("usage: ") and all(f"{option} " in text for option in options)


@pytest.fixture(scope="module")
def fid_floor():
    return load_script("fid_floor")


def test_fid_floor_spoils_real_faces_as_its_rows_say(fid_floor):
    grey = np.full((6, 32, 32, 3), 128, np.uint8)
    noisy = fid_floor.noisy(grey)
    assert noisy.dtype == np.uint8 and noisy.shape == grey.shape
    assert np.array_equal(noisy, fid_floor.noisy(grey)) and not np.array_equal(noisy, fid_floor.noisy(grey, seed=1))
    assert (noisy.astype(float) - 128).std() == pytest.approx(25, rel=0.05)  # sd 25 grey levels
    stripes = np.zeros((2, 32, 32, 3), np.uint8)
    stripes[:, :, ::2] = 255
    blurred = fid_floor.blurred(stripes)
    assert blurred.shape == stripes.shape and blurred.dtype == np.uint8
    assert blurred.std() < stripes.std() / 4 and abs(blurred.mean() - stripes.mean()) < 8  # detail gone, brightness kept
    assert np.array_equal(fid_floor.blurred(grey), grey)


def test_fid_floor_gives_the_moving_average_the_batchnorm_statistics_of_g(fid_floor):
    """The "EMA (G's BN statistics)" row: what checkpoints held before standing statistics (tests/train/test_ema.py)."""
    generator, _ = build_models("dcgan", 100, 8, 8, 32)
    ema, _ = build_models("dcgan", 100, 8, 8, 32)
    generator.train()
    with torch.no_grad():
        generator(torch.randn(8, 100))  # G's running statistics move; the EMA's stay at their start
    weights = {name: p.clone() for name, p in ema.named_parameters()}
    assert not all(torch.equal(a, b) for a, b in zip(ema.buffers(), generator.buffers()))
    assert fid_floor.with_statistics_of(ema, generator) is ema
    for (name, mine), (_, theirs) in zip(ema.named_buffers(), generator.named_buffers()):
        assert torch.equal(mine, theirs), name
    assert all(torch.equal(p, weights[name]) for name, p in ema.named_parameters())


def test_gpu_script_trains_measures_and_times_on_a_tiny_cpu_setting(tmp_path, monkeypatch, capsys, network, one_thread):
    """benchmarks/gpu.py's three phases with --tiny on the CPU (in this process, whose Inception network is loaded
    already): the training table of each preset against the held-out split, the grids, the throughput table with its
    plain baseline, fid's time, and a results file that a second sitting continues without measuring again.

    FID's one costly step, the eigenvalues of 2048 x 2048 matrices (tens of seconds each on this busy machine, and
    tested in tests/metrics), is taken here on the features' first 64 dimensions: the script's path is the same."""
    from facegan.data.prepare import prepare
    from facegan.metrics import fid

    trace = fid.trace_sqrt_product
    monkeypatch.setattr(fid, "trace_sqrt_product", lambda a, b: trace(a[:64, :64], b[:64, :64]))
    data = prepare("synthetic", tmp_path / "s64", count=56, size=64, progress=False)  # 52 to train: 6 batches of 8
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "cache"))  # the script sets its own; restored after the test
    results, grids = tmp_path / "gpu.json", tmp_path / "grids"
    argv = ["gpu.py", "--tiny", "--device", "cpu", "--data", str(data), "--name", "tiny", "--samples", "4",
            "--minutes", "0.001", "--batch-sizes", "8,16,4096", "--steps", "1", "--fid-count", "4",
            "--results", str(results), "--grids", str(grids), "--work", str(tmp_path / "work")]
    monkeypatch.setattr(sys, "argv", argv)
    gpu = load_script("gpu")
    gpu.main()
    text = capsys.readouterr().out

    columns, rows = table(text, "preset ")  # recipes.py's table (its first columns one space apart)
    assert columns[0] == "preset" and {"img/s", "fid4", "kid4", "pr4_precision", "pr4_recall"} <= set(columns)
    assert_finite(rows)
    assert [row.split()[0] for row in rows] == ["dcgan", "fast"]
    assert "fast vs dcgan: fid4" in text
    columns, rows = table(text.split("the same runs")[1], "preset")
    assert columns == ["preset", "epochs planned", "epochs", "wall s", "images/s timed", "images/s run", "cut"]
    assert_finite(rows)
    assert [numbers(row)[:2] for row in rows] == [[1, 1], [1, 1]] and all(row.endswith("no") for row in rows)
    assert {p.name for p in grids.iterdir()} == {"recipes-tiny-dcgan.png", "recipes-tiny-fast.png", "gpu-tiny.png"}

    columns, rows = table(text, "batch")
    assert columns == ["batch", "steps", "plain images/s", "facegan images/s", "vs plain", "of ceiling"]
    assert [numbers(row)[:2] for row in rows] == [[8, 1], [16, 1]]
    assert_finite(rows)
    for row in rows:
        _, _, plain, facegan, ratio, _ = numbers(row)
        assert plain > 0 and facegan > 0 and ratio == pytest.approx(facegan / plain, abs=0.006)
    assert "batch 4096: not timed, more than the 52 training images" in text
    timed = re.search(r"fid4 of the fast run's generator against its 4 training images: ([\d.]+) s", text)
    assert timed and float(timed.group(1)) > 0
    assert re.search(r"^in all: [\d.]+ min \(split", text, re.MULTILINE)

    saved = json.loads(results.read_text())
    assert [r["preset"] for r in saved["datasets"]["tiny"]["rows"]] == ["dcgan", "fast"]
    assert {"throughput", "fid_time"} <= saved.keys()
    # A second sitting continues the file: nothing is trained or timed again, and the tables are the same.
    gpu.main()
    again = capsys.readouterr().out
    assert again.split("\nin all")[0] == text.split("\nin all")[0]
    assert json.loads(results.read_text())["datasets"]["tiny"]["rows"] == saved["datasets"]["tiny"]["rows"]
    monkeypatch.setattr(sys, "argv", [*argv[:-6], "--results", str(results), "--minutes", "5"])
    with pytest.raises(SystemExit, match="other settings"):
        gpu.main()
