"""benchmarks/long_runs.py: recipes from the command line, the `facegan train` commands it runs, its resumable
results file, and one real tiny sitting (a few CPU seconds per run, fid8) that prints its table and plot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import facegan
from facegan.cli import build_parser
from facegan.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def long_runs():
    spec = importlib.util.spec_from_file_location("long_runs_benchmark", ROOT / "benchmarks" / "long_runs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_recipes_are_presets_with_settings_of_their_own_as_facegan_train_options(long_runs):
    dcgan, best = long_runs.parse_recipes(["dcgan", "best=facegan"], ["best.augment=color,translation", "best.ema_kimg=10",
                                                                      "best.flip=off", "best.checkpoint_every_epochs=0"])
    assert (dcgan.name, dcgan.preset, dcgan.flags()) == ("dcgan", "dcgan", [])
    assert best.preset == "facegan"
    assert best.flags() == ["--augment", "color,translation", "--ema-kimg", "10", "--no-flip", "--checkpoint-every", "0"]
    config = long_runs.check(best)
    assert (config.augment, config.ema_kimg, config.flip, config.lr_schedule) == ("color,translation", 10.0, False, "linear")


@pytest.mark.parametrize("recipes, sets, message", [
    (["dcgan", "dcgan"], [], "each name once"),
    (["dcgan"], ["fast.ema_kimg=10"], "for a NAME of --recipe"),
    (["dcgan"], ["dcgan.betas=0.5"], "not a `facegan train` option"),
    (["dcgan"], ["dcgan.flip=maybe"], "a switch is on or off"),
    (["dcgan"], ["dcgan.loss=square"], "refuses its settings"),
    (["x=nopreset"], [], "unknown preset 'nopreset'"),
    (["dcgan"], ["dcgan.ema_kimg=-1"], "ema-kimg must be 0"),
])
def test_a_recipe_mistake_ends_the_benchmark_before_any_run(long_runs, recipes, sets, message):
    with pytest.raises(SystemExit, match=message):
        long_runs.parse_recipes(recipes, sets)


def test_runs_start_then_resume_with_the_budget_and_finished_ones_are_skipped(long_runs, tmp_path):
    (recipe,) = long_runs.parse_recipes(["best=facegan"], ["best.ema_kimg=5"])
    settings = {"data": "/d/train", "eval_data": "/d/held", "evaluate": "fid1k", "eval_every": 5, "epochs": 10_000,
                "device": "cpu", "threads": 1}
    entry = {"runs_dir": "/w/runs/best"}
    start = long_runs.train_command(recipe, entry, settings, 120.0)
    assert start[1:4] == ["-m", "facegan", "train"]
    args = build_parser().parse_args(start[3:])  # what `facegan train` makes of it
    assert (args.preset, args.data, args.runs_dir, args.epochs, args.eval_every, args.evaluate, args.eval_data,
            args.max_cpu_minutes, args.ema_kimg) == ("facegan", "/d/train", "/w/runs/best", 10_000, 5, "fid1k",
                                                     "/d/held", 120.0, 5.0)
    resume = build_parser().parse_args(long_runs.train_command(recipe, {**entry, "run_dir": "/w/runs/best/00001-facegan"},
                                                               settings, 180.0)[3:])
    assert (resume.resume, resume.max_cpu_minutes, resume.eval_data, resume.preset) == (
        Path("/w/runs/best/00001-facegan"), 180.0, "/d/held", None)
    assert long_runs.next_action(entry, 120) == "start"
    assert long_runs.next_action({"run_dir": "r", "state": "stopped", "budget_minutes": 120}, 120) == "resume"
    assert long_runs.next_action({"run_dir": "r", "state": "failed", "budget_minutes": 120}, 120) == "resume"
    assert long_runs.next_action({"run_dir": "r", "state": "done", "budget_minutes": 120}, 120) == "skip"
    assert long_runs.next_action({"run_dir": "r", "state": "done", "budget_minutes": 120}, 180) == "resume"  # more hours
    # A results file continues only with its own data, reference and metric, and its recipes as they were.
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"settings": settings, "runs": {"best": {"preset": "facegan", "settings": {"ema_kimg": "5"}}}}))
    assert long_runs.load_results(path, {**settings, "threads": 2}, [recipe])["runs"]["best"]["preset"] == "facegan"
    with pytest.raises(SystemExit, match=r"made with other settings \(eval_data="):
        long_runs.load_results(path, {**settings, "eval_data": "/d/other"}, [recipe])
    (other,) = long_runs.parse_recipes(["best=facegan"], ["best.ema_kimg=10"])
    with pytest.raises(SystemExit, match="ran best as facegan with"):
        long_runs.load_results(path, settings, [other])


def test_a_run_without_a_checkpoint_starts_again(long_runs, tmp_path):
    runs = tmp_path / "runs"
    for name, checkpoint in (("00001-dcgan", True), ("00002-dcgan", False)):  # the second was stopped before its first
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "config.json").write_text("{}")
        if checkpoint:
            (runs / name / "checkpoints" / "latest.pt").write_bytes(b"")
    assert long_runs.found_run_dir(runs) == runs / "00002-dcgan"
    assert long_runs.found_run_dir(runs, resumable=True) == runs / "00001-dcgan"
    assert long_runs.found_run_dir(tmp_path / "none") is None


def test_a_tiny_sitting_trains_measures_prints_and_a_second_skips(long_runs, tmp_path, capsys):
    train = prepare("synthetic", tmp_path / "train", count=96, size=32, progress=False)
    held = prepare("synthetic", tmp_path / "held", count=16, size=32, seed=3, progress=False)
    work = tmp_path / "work"
    command = ["--work", str(work), "--data", str(train), "--eval-data", str(held), "--recipe", "tiny=dcgan",
               *(f"--set=tiny.{k}" for k in ("batch_size=16", "g_width=4", "d_width=4")),
               "--hours", "0.0005", "--eval-every", "2", "--evaluate", "fid8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(Path(facegan.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "long_runs.py"), *command], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:] + (work / "logs" / "tiny.log").read_text()[-3000:]
    results = json.loads((work / "long-runs.json").read_text())
    entry = results["runs"]["tiny"]
    assert (entry["state"], entry["budget_minutes"], entry["sittings"]) == ("done", 0.03, 1)
    run = Path(entry["run_dir"])
    assert run.parent == work / "runs" / "tiny"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["dataset"] == str(held) and r["cpu_s"] > 0 for r in records)
    # The budget (1.8 CPU s) ends the run at an epoch end, measured there: the last record is the last checkpoint's.
    latest = run / "checkpoints" / "latest.pt"
    from facegan.train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(latest)
    assert checkpoint["cpu_s"] >= 1.8 and records[-1]["epoch"] == checkpoint["epoch"]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("recipe"))
    row = lines[header + 2].split()
    assert row[:3] == ["tiny", "dcgan", "done"] and float(row[5].replace(",", "")) == checkpoint["step"]
    assert float(row[-1]) == pytest.approx(records[-1]["fid8"], abs=0.01) and float(row[-3]) == pytest.approx(records[0]["fid8"], abs=0.01)
    assert (work / "long-runs-fid8.png").is_file()
    # The same command again: the finished run is skipped (nothing trained, nothing started).
    long_runs.main(command)
    printed = capsys.readouterr()
    assert "tiny: finished, skipped" in printed.err
    assert json.loads((work / "long-runs.json").read_text())["runs"]["tiny"]["sittings"] == 1
    assert load_checkpoint(latest)["step"] == checkpoint["step"]
    sheet = tmp_path / "sheet.png"
    long_runs.main(["--work", str(work), "--report", "--sheet", str(sheet)])
    from PIL import Image

    assert Image.open(sheet).width > Image.open(max((run / "samples").glob("epoch-*.png"))).width  # label + grid
    capsys.readouterr()
    # The results file keeps what was measured: with the run's folder gone, --report prints the same row.
    import shutil

    shutil.rmtree(work / "runs")
    long_runs.main(["--work", str(work), "--report"])
    again = capsys.readouterr().out.splitlines()
    assert next(line for line in again if line.startswith("tiny")).split() == row
    assert (work / "long-runs-fid8.png").is_file()
    with pytest.raises(SystemExit, match="no run of --results has a grid"):
        long_runs.main(["--work", str(work), "--report", "--sheet", str(sheet)])
