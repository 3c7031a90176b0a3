"""benchmarks/confirm.py: recipes and seeds, the search trials it reuses, its results file and its report."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUDGET = {"cpu_minutes": 20.0, "held_out": 1000, "threads": 1}
SHARED = {"precision": "bf16", "device": "cpu", "compile": "off", "checkpoint_every_epochs": 0, "log_every": 50}


@pytest.fixture(scope="module")
def confirm():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("confirm_benchmark", ROOT / "benchmarks" / "confirm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_recipe_s_own_seeds_are_taken_out_of_the_training_settings(confirm):
    rest, seeds = confirm.seeds_of(["a.condition=Smiling,Male", "a.seeds=1", "b.seeds=5"], 3)
    assert rest == ["a.condition=Smiling,Male"] and seeds == {"a": 1, "b": 5}
    with pytest.raises(SystemExit, match="seeds is a whole number"):
        confirm.seeds_of(["a.seeds=0"], 3)


def test_the_committed_search_trials_of_dcgan_and_fast_are_their_seed_0(confirm, tmp_path):
    search = json.loads((ROOT / "benchmarks" / "results" / "search-celeba-89.json").read_text())
    recipes = confirm.parse_recipes(["dcgan", "fast", "facegan", "cond=fast"], ["facegan.epochs=7", "cond.condition=Smiling,Male"])
    found = {r.name: confirm.reused_rows(search, r, 3, tmp_path / "d", tmp_path / "w", SHARED, BUDGET) for r in recipes}
    assert {name: {seed: row["source"] for seed, row in rows.items()} for name, rows in found.items()} == {
        "dcgan": {0: "search trial 0"}, "fast": {0: "search trial 2"}, "facegan": {}, "cond": {}}
    assert found["fast"][0]["fid1k"] == pytest.approx(106.4, abs=0.05)
    # Another number format is another configuration, and another budget another protocol: nothing is reused.
    assert confirm.reused_rows(search, recipes[1], 3, tmp_path, tmp_path, {**SHARED, "precision": "fp32"}, BUDGET) == {}
    assert confirm.reused_rows(search, recipes[1], 3, tmp_path, tmp_path, SHARED, {**BUDGET, "cpu_minutes": 10.0}) == {}


def test_a_recipe_runs_until_the_budget_unless_it_names_its_epochs(confirm, tmp_path):
    facegan, fast = confirm.parse_recipes(["facegan", "fast"], ["facegan.epochs=7"])
    assert confirm.run_config_of(facegan, 1, tmp_path, tmp_path, SHARED).epochs == 7
    config = confirm.run_config_of(fast, 2, tmp_path, tmp_path, SHARED)
    assert (config.epochs, config.seed, config.runs_dir) == (confirm.UNTIL_BUDGET, 2, str(tmp_path / "fast-seed2" / "runs"))


def test_spectral_norm_left_to_the_family_is_the_family_s_choice(confirm, tmp_path):
    from facegan.config import from_preset

    dcgan = from_preset("dcgan", data=str(tmp_path))
    assert confirm.same_recipe(dcgan, from_preset("dcgan", data=str(tmp_path), spectral_norm=False))
    assert not confirm.same_recipe(dcgan, from_preset("dcgan", data=str(tmp_path), spectral_norm=True))
    resnet = from_preset("dcgan", data=str(tmp_path), model="resnet")
    assert confirm.same_recipe(resnet, from_preset("dcgan", data=str(tmp_path), model="resnet", spectral_norm=True))


def row(name: str, seed: int, fid: float, preset: str | None = None, **extra) -> dict:
    return {"name": name, "preset": preset or name, "settings": {}, "seed": seed, "fid1k": fid, "kid1k": fid / 1000,
            "pr1k_precision": 0.2, "pr1k_recall": 0.01, "steps": 100, "images_per_cpu_s": 50.0, "cpu_minutes": 20.0,
            "source": "this benchmark", **extra}


def test_the_report_compares_with_dcgan_beyond_the_seeds_spread(confirm, tmp_path):
    settings = {"data": "celeba-89", "train_images": 7000, "held_out": 1000, "cpu_minutes": 20.0, "threads": 1,
                "precision": "bf16"}
    results = {"settings": settings, "rows": [row("dcgan", 0, 310.0), row("dcgan", 1, 320.0), row("fast", 0, 100.0),
                                              row("fast", 1, 110.0), row("near", 0, 300.0, "fast"), row("near", 1, 322.0, "fast"),
                                              {**row("fast", 2, 0.0), "error": "it diverged"}]}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        summary = confirm.print_report(results)
    assert summary["fast"]["fid"] == pytest.approx((105.0, 7.0710678))
    assert summary["fast"]["seeds"] == [0, 1]  # the failed run is not averaged
    text = out.getvalue()
    assert "fast vs dcgan: fid1k 105.0 ± 7.1 against 315.0 ± 7.1, 0.33x: better, beyond the seeds" in text
    assert "near vs dcgan: fid1k 311.0 ± 15.6 against 315.0 ± 7.1, 0.99x: not better beyond the seeds" in text
    assert "failed: fast seed 2: it diverged" in text
    path = tmp_path / "r.json"
    confirm.save(path, results)
    assert [r["seed"] for r in confirm.load_results(path, settings)["rows"]] == [0, 1, 0, 1, 0, 1]  # failed: run again
    with pytest.raises(SystemExit, match="other settings"):
        confirm.load_results(path, {**settings, "cpu_minutes": 10.0})


def test_a_run_is_made_from_scratch_and_an_error_is_its_row(confirm, tmp_path, monkeypatch):
    (recipe,) = confirm.parse_recipes(["fast"], [])
    args = argparse.Namespace(threads=1, work=tmp_path, samples=1000, cpu_minutes=20.0, precision="bf16")
    stale = tmp_path / "fast-seed1" / "runs" / "00001-fast"
    stale.mkdir(parents=True)
    seen = {}

    def budgeted_run(config, held_out, samples, minutes):
        seen.update(config=config, held_out=held_out, minutes=minutes)
        return {"fid1k": 99.0, "steps": 10}

    monkeypatch.setattr(confirm, "split_dataset", lambda name, work, held_out: (work / "train", work / "held-out"))
    monkeypatch.setattr(confirm, "budgeted_run", budgeted_run)
    made = confirm.one_run((recipe, 1, args))
    assert made == {"name": "fast", "preset": "fast", "settings": {}, "seed": 1, "fid1k": 99.0, "steps": 10,
                    "source": "this benchmark"}
    assert not stale.exists() and seen["config"].seed == 1 and seen["config"].precision == "bf16"
    assert (seen["held_out"], seen["minutes"]) == (tmp_path / "held-out", 20.0)

    def diverges(*_):
        from facegan.errors import FaceganError

        raise FaceganError("the run diverged 3 times.")

    monkeypatch.setattr(confirm, "budgeted_run", diverges)
    assert confirm.one_run((recipe, 0, args))["error"] == "the run diverged 3 times."


def test_the_sheet_shows_each_unconditional_recipe_s_grid_at_one_seed(confirm, tmp_path):
    from PIL import Image

    rows = []
    for name, seed, colour, settings in (("dcgan", 0, "red", {}), ("fast", 0, "blue", {}), ("fast", 1, "green", {}),
                                         ("cond", 0, "black", {"condition": "Smiling"})):
        samples = tmp_path / f"{name}{seed}" / "samples"
        samples.mkdir(parents=True)
        Image.new("RGB", (8 * 10 + 2, 8 * 10 + 2), colour).save(samples / "epoch-0003.png")
        rows.append({**row(name, seed, 100.0), "settings": settings, "run_dir": str(samples.parent)})
    out = tmp_path / "sheet.png"
    confirm.write_sheet({"rows": rows}, 0, out)
    sheet = Image.open(out).convert("RGB")
    assert sheet.height == 2 * (2 * 10 + 2)  # two recipes of seed 0, two rows of each; not the conditional one
    assert sheet.getpixel((100, 5)) == (255, 0, 0) and sheet.getpixel((100, 30)) == (0, 0, 255)
    with pytest.raises(SystemExit, match="no unconditional run of seed 2"):
        confirm.write_sheet({"rows": rows}, 2, out)
