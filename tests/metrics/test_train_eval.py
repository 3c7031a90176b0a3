"""Quality tracked while training: --eval-every measures, logs, plots, and keeps the best checkpoint."""

from __future__ import annotations

import json

import pytest

from facegan.cli import main
from facegan.config import from_preset
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.train.checkpoint import load_checkpoint
from facegan.train.loop import train


def test_eval_every_epoch_logs_metrics_and_keeps_the_best(tmp_path, network):
    data = prepare("synthetic", tmp_path / "s32", count=64, size=32, progress=False)
    config = from_preset("dcgan", data=str(data), runs_dir=str(tmp_path / "runs"), batch_size=16, g_width=8, d_width=8,
                         grid_size=16, device="cpu", epochs=2, eval_every=1, evaluate="fid32,kid32")
    run = train(config, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [4, 8]
    assert all(r["fid32"] > 0 and "kid32" in r and "kid32_std" in r for r in records)
    assert records[0]["checkpoint"].endswith("epoch-0001.pt")
    best = min(records, key=lambda r: r["fid32"])
    assert best.get("best") and load_checkpoint(run / "checkpoints" / "best.pt")["step"] == best["step"]
    assert (run / "plots" / "metrics.png").stat().st_size > 0


def test_a_bad_eval_metric_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(FaceganError, match="unknown metric 'fad2k'"):
        from_preset("dcgan", eval_every=1, evaluate="fad2k")
    assert main(["train", "--eval-every", "1", "--eval", "fid", "--runs-dir", str(tmp_path)]) == 1
    assert "unknown metric 'fid'" in capsys.readouterr().err
