"""Quality tracked while training: --eval-every measures, logs, plots, and keeps the best checkpoint."""

from __future__ import annotations

import json

import pytest
from conftest import FID_REL, features_of, fid_of, run_cli, tiny
from PIL import Image

from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.errors import FaceganError
from facegan.metrics.evaluate import real_features
from facegan.metrics.fid import kernel_inception_distance
from facegan.sample import sample_array
from facegan.train.checkpoint import load_checkpoint
from facegan.train.loop import train


def test_eval_every_epoch_logs_metrics_and_keeps_the_best(tmp_path, data32, network, inception_calls):
    run = train(tiny(tmp_path, data32, epochs=2, eval_every=1, evaluate="fid32,kid32"), progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [6, 12]
    assert [r["checkpoint"] for r in records] == [str(run / "checkpoints" / f"epoch-000{e}.pt") for e in (1, 2)]
    # Each epoch's values are those of 32 real images and of the 32 images of seed 0 that G, as
    # saved in that epoch's checkpoint, makes.
    real = real_features(open_prepared(data32), 32, network)
    for record in records:
        fake = features_of(inception_calls, sample_array(record["checkpoint"], 32, seed=0, device="cpu", precision="fp32"))
        assert record["fid32"] == pytest.approx(fid_of(real, fake), rel=FID_REL)
        assert (record["kid32"], record["kid32_std"]) == pytest.approx(kernel_inception_distance(real, fake, seed=0))
    # The first measurement is the best so far; the second only if lower. best.pt is the best one's.
    assert [r.get("best", False) for r in records] == [True, records[1]["fid32"] < records[0]["fid32"]]
    best = min(records, key=lambda r: r["fid32"])
    assert load_checkpoint(run / "checkpoints" / "best.pt")["step"] == best["step"]
    picture = Image.open(run / "plots" / "metrics.png")
    assert picture.format == "PNG" and picture.height == 2 * 500  # fid32 and kid32 panels


def test_a_bad_eval_metric_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(FaceganError, match="unknown metric 'fad2k'"):
        from_preset("dcgan", eval_every=1, evaluate="fad2k")
    code, _, err = run_cli(["train", "--eval-every", "1", "--eval", "fid", "--runs-dir", str(tmp_path)], capsys)
    assert code == 1 and "unknown metric 'fid'" in err
    assert not list(tmp_path.iterdir())  # before any run directory was made
