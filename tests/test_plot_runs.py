"""`facegan plot`: a metric of metrics.jsonl against CPU minutes (or G steps), for one run or several on one axes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from facegan import plots
from facegan.errors import FaceganError
from facegan.metrics.evaluate import plot_runs


def _run(root, name: str, records: list[dict]):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def _records(fids, cpu_step=120.0, steps=50, dataset="/data/held-out"):
    return [{"step": steps * (i + 1), "epoch": i + 1, "kimg": 6.4 * (i + 1), "cpu_s": cpu_step * (i + 1), "fid1k": fid,
             "kid1k": fid / 1000, "dataset": dataset} for i, fid in enumerate(fids)]


def test_metric_curve_reads_cpu_minutes_and_lets_a_later_measurement_supersede():
    records = [*_records([300.0, 250.0, 240.0]), {"step": 100, "cpu_s": 500.0, "fid1k": 260.0},  # step 100 measured again
               {"step": 200, "fid1k": 1.0}]  # no cpu_s: `facegan evaluate` of an old checkpoint
    x, y = plots.metric_curve(records, "fid1k", "cpu-minutes")
    assert x.tolist() == [2.0, 4.0, 6.0, 500 / 60] and y.tolist() == [300.0, 250.0, 240.0, 260.0]
    x, y = plots.metric_curve(records, "fid1k", "steps")
    # Measured again at step 100 (a resume from that checkpoint): that record supersedes steps 100 and 150 before it.
    assert x.tolist() == [50, 100, 200] and y.tolist() == [300.0, 260.0, 1.0]


def test_plot_compares_runs_on_one_axes_and_draws_one_run_beside_its_steps(tmp_path, capsys):
    a = _run(tmp_path, "00001-dcgan", _records([300.0, 250.0, 240.0]))
    b = _run(tmp_path, "00002-fast", _records([280.0, 200.0, 150.0, 120.0], cpu_step=90.0, steps=200))
    out = tmp_path / "fid.png"
    code, _, err = run_cli(["plot", str(a), str(b), "--metric", "fid1k", "--x", "cpu-minutes", "--out", str(out)], capsys)
    assert code == 0 and err.strip() == f"wrote {out}"
    assert Image.open(out).size == (800, 500)
    # One run: its first metric against CPU minutes, G steps along the top, in its own plots folder.
    code, _, err = run_cli(["plot", str(a)], capsys)
    assert code == 0 and (a / "plots" / "fid1k-cpu-minutes.png").is_file()
    assert plot_runs([a], "kid1k", x="steps", out=tmp_path / "kid.png") == tmp_path / "kid.png"


def test_a_run_measured_against_two_references_draws_a_line_for_each(tmp_path, monkeypatch):
    run = _run(tmp_path, "00001-dcgan", [*_records([300.0, 250.0]), *_records([310.0, 260.0], dataset="/data/train")])
    drawn = {}
    real = plots.plot_runs
    monkeypatch.setattr(plots, "plot_runs", lambda curves, *a, **k: (drawn.update(curves), real(curves, *a, **k))[1])
    plot_runs([run], "fid1k", out=tmp_path / "fid.png")
    assert sorted(drawn) == ["00001-dcgan (held-out)", "00001-dcgan (train)"]
    assert np.array_equal(drawn["00001-dcgan (train)"][1], [310.0, 260.0])


def test_plot_refuses_in_one_sentence(tmp_path, capsys):
    old = _run(tmp_path, "00001-old", [{"step": 10, "fid1k": 300.0, "dataset": "/d"}])  # before cpu_s was recorded
    new = _run(tmp_path, "00002-new", _records([300.0]))
    with pytest.raises(FaceganError, match=r"has no fid1k value with its cpu_s .*plot it with --x steps"):
        plot_runs([old])
    with pytest.raises(FaceganError, match=r"has no fid2k value; it records fid1k, kid1k"):
        plot_runs([new], "fid2k")
    with pytest.raises(FaceganError, match="name it with --out"):
        plot_runs([old, new])
    with pytest.raises(FaceganError, match=r"has no metrics.jsonl; train it with --eval-every N"):
        plot_runs([tmp_path / "nothing"])
    code, _, err = run_cli(["plot", str(old), "--x", "minutes"], capsys)
    assert code == 2 and "invalid choice: 'minutes'" in err  # argparse's own
