"""benchmarks/recipes.py: its timing in turns, its results files, and the tables the README quotes."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest

from facegan.config import from_preset
from facegan.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("recipes-*.json"))


@pytest.fixture(scope="module")
def recipes():
    spec = importlib.util.spec_from_file_location("recipes_benchmark", ROOT / "benchmarks" / "recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_presets_are_timed_in_turns_each_for_its_own_cycles(recipes, tmp_path, monkeypatch):
    data = prepare("synthetic", tmp_path / "s32", count=160, size=32, progress=False)
    tiny = {"batch_size": 4, "g_width": 8, "d_width": 8, "device": "cpu", "data": str(data)}
    configs = {"dcgan": from_preset("dcgan", **tiny), "wgan-gp": from_preset("wgan-gp", **tiny)}  # 1 and 5 D steps
    drawn = []

    def step(state, batch, config, update_g):
        drawn.append((config.preset, update_g))

    monkeypatch.setattr(recipes, "train_step", step)
    rates = recipes.images_per_second(configs, data, cycles=12)
    assert set(rates) == {"dcgan", "wgan-gp"} and all(rate > 0 for rate in rates.values())
    # dcgan: 2 untimed + 12 cycles of one batch; wgan-gp: 2 + max(4, 12 // 5) cycles of five.
    assert drawn.count(("dcgan", True)) == 14 and [d for d in drawn if d[0] == "dcgan"] == [("dcgan", True)] * 14
    assert drawn.count(("wgan-gp", True)) == 6 and drawn.count(("wgan-gp", False)) == 24
    # In turns: one dcgan cycle, then one wgan-gp cycle (4 D batches, then the one with the G update), ...
    wgan_cycle = [("wgan-gp", False)] * 4 + [("wgan-gp", True)]
    assert drawn[:13] == [("dcgan", True)] + wgan_cycle + [("dcgan", True)] + wgan_cycle + [("dcgan", True)]
    assert drawn[-8:] == [("dcgan", True)] * 8  # wgan-gp had its 6 cycles; dcgan goes on alone


def test_a_results_file_continues_only_with_its_own_settings(recipes, tmp_path):
    settings = {"minutes": 15.0, "same_epochs": None, "samples": 1000, "sngan_width": 16, "device": "cpu",
                "precision": "fp32", "threads": 1}
    old = {"settings": {k: v for k, v in settings.items() if k not in ("device", "same_epochs")}, "datasets": {}}
    assert recipes.load_results(tmp_path / "r.json", old, settings)["settings"]["device"] == "cpu"  # older files: CPU, timed
    assert recipes.load_results(None, None, settings) == {"settings": settings, "datasets": {}}
    other = {**settings, "threads": 2}  # the threads may differ between sittings
    assert recipes.load_results(tmp_path / "r.json", {"settings": dict(settings), "datasets": {}}, other)
    for key, value in (("minutes", 10.0), ("same_epochs", 12), ("samples", 2000), ("precision", "bf16")):
        with pytest.raises(SystemExit, match=rf"r\.json was made with other settings \({key}="):
            recipes.load_results(tmp_path / "r.json", {"settings": dict(settings), "datasets": {}}, {**settings, key: value})


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_the_committed_results_print_the_tables_the_readme_quotes(recipes, path, capsys, monkeypatch):
    results = json.loads(path.read_text())
    monkeypatch.setattr(sys, "argv", ["recipes.py", "--report", "--results", str(path)])
    recipes.main()
    printed = capsys.readouterr().out
    for entry in results["datasets"].values():
        fid = recipes.metric_names(results["settings"]["samples"])[0]
        for preset in entry["epochs"]:
            rows = [r for r in entry["rows"] if r["preset"] == preset]
            assert rows and all(math.isfinite(r[fid]) and not r["nan"] for r in rows)
            line = re.search(rf"^{re.escape(preset)}\s+{len(rows)}\s+{entry['epochs'][preset]}\s+(\d+).*$", printed, re.MULTILINE)
            assert line, f"no row for {preset} in\n{printed}"
            assert int(line.group(1)) == rows[0]["steps"]  # the G steps column
            mean = f"{statistics.mean(r[fid] for r in rows):.3f}"
            assert mean in line.group(0)
        if "dcgan" in entry["epochs"] and "facegan" in entry["epochs"]:
            assert "facegan vs dcgan: " + fid in printed
    budget = f"{results['settings']['same_epochs']} epochs" if results["settings"].get("same_epochs") else \
        f"{results['settings']['minutes']:g} min"
    assert f"{budget} of CPU training per run" in printed

