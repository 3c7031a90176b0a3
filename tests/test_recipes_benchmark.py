"""benchmarks/recipes.py: its timing in turns, its results files, and the tables the README quotes."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path

import pytest

from facegan.config import from_preset
from facegan.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("recipes-*.json"))
# The first line of each table --report prints: "celeba-89: 15 min of CPU training per run (...), ..."
TABLE_HEADER = re.compile(r"^\S+: .+ training per run \(")


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

    def step(state, batch, config, update_g, labels=None):
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


def _report(recipes, path: Path) -> str:
    """What `benchmarks/recipes.py --report --results PATH` prints."""
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        patch.setattr(sys, "argv", ["recipes.py", "--report", "--results", str(path)])
        recipes.main()
    return out.getvalue()


def _tables(text: str) -> dict[str, str]:
    """The tables in a report (or a README block), by their first line, each as its lines with trailing blanks cut."""
    lines = [line.rstrip() for line in text.splitlines()]
    starts = [i for i, line in enumerate(lines) if TABLE_HEADER.match(line)]
    return {lines[i]: "\n".join(lines[i:end]).strip() for i, end in zip(starts, starts[1:] + [len(lines)])}


def _readme_recipes_tables() -> dict[str, str]:
    """The tables in the fenced blocks of the README's section on benchmarks/recipes.py."""
    sections: list[list[str]] = [[]]
    fenced = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            sections.append([])
        sections[-1].append(line)
    recipes_sections = [s for s in sections if any("`benchmarks/recipes.py`" in line for line in s)]
    assert len(recipes_sections) == 1, "README.md should have one section that presents `benchmarks/recipes.py`"
    blocks, block, fenced = [], [], False
    for line in recipes_sections[0]:
        if line.startswith("```"):
            if fenced:
                blocks.append("\n".join(block))
            block, fenced = [], not fenced
        elif fenced:
            block.append(line)
    quoted = {header: table for text in blocks for header, table in _tables(text).items()}
    assert quoted, "README.md's recipes section quotes no table of `benchmarks/recipes.py --report`"
    return quoted


@pytest.fixture(scope="module")
def reports(recipes) -> dict[Path, str]:
    return {path: _report(recipes, path) for path in RESULTS}


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_the_committed_results_print_the_tables_the_readme_quotes(reports, path):
    quoted = _readme_recipes_tables()
    printed = _tables(reports[path])
    assert printed, f"--report printed no table for {path.name}:\n{reports[path]}"
    for header, table in printed.items():
        assert header in quoted, f"README.md's recipes section quotes no table for {path.name}'s\n{header}"
        assert table == quoted[header], f"README.md's table differs from what --report prints for {path.name}"
    # ... and the README quotes no table that no committed results file prints (a stale or hand-edited one).
    committed = {header for text in reports.values() for header in _tables(text)}
    assert set(quoted) <= committed, f"README.md quotes tables no file in benchmarks/results/ prints: {set(quoted) - committed}"
