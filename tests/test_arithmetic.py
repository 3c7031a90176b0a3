"""Latent arithmetic: the direction as a difference of means, its saved file and reuse, the grid, the rates, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny
from PIL import Image

from facegan.arithmetic import (
    arithmetic,
    difference_of_means,
    directions_dir,
    format_rates,
    load_direction,
    multiples,
    weights_hash,
)
from facegan.classifier import (
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError, FaceganWarning
from facegan.generation import latents, load_generator
from facegan.sample import sample_array
from facegan.train.loop import train

# The tiny runs fit over a few dozen faces, fewer a side than MIN_SIDE: warned (tested once, below), not refused.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:only .* faces are on the")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    """A one-epoch tiny run on 64 synthetic 32px faces, a classifier of Male and Smiling trained on them (recentred), and
    one that calls every face Male and none Smiling (its head made constant), both through the real files."""
    root = tmp_path_factory.mktemp("arithmetic")
    data = prepare("synthetic", root / "s32", count=64, size=32, progress=False)
    run = train(tiny(root, data, epochs=1, grid_size=4), progress=False)
    classifier = train_classifier(open_prepared(data), ["Male", "Smiling"], epochs=1, width=8, batch_size=16,
                                  precision="fp32")
    # A classifier trained for one epoch calls nearly every face of a one-epoch G alike; centred on the median logit of
    # the fit's faces it splits them in half, as a good classifier splits a good G's faces.
    faces = sample_array(run, 64, seed=0, device="cpu", precision="fp32")
    with torch.no_grad():
        classifier.net.head.bias -= torch.logit(torch.from_numpy(predict(classifier, faces)).double(), eps=1e-7).median(0).values.float()
    path = save_classifier(classifier, root / "c.safetensors")
    with torch.no_grad():
        classifier.net.head.weight.zero_()
        classifier.net.head.bias.copy_(torch.tensor([9.0, -9.0]))
    constant = save_classifier(classifier, root / "constant.safetensors")
    return run, path, constant, data


def test_difference_of_means_on_known_numbers():
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    p = np.array([0.9, 0.6, 0.1, 0.4])
    direction, high, low = difference_of_means(z, p)
    assert high.tolist() == [True, True, False, False] and low.tolist() == [False, False, True, True]
    assert direction.tolist() == pytest.approx([2.0, -3.0])  # (2, 0) - (0, 3)
    direction, high, low = difference_of_means(z, p, quantile=0.25)  # the top and the bottom one
    assert high.tolist() == [True, False, False, False] and low.tolist() == [False, False, True, False]
    assert direction.tolist() == pytest.approx([1.0, -2.0])
    assert difference_of_means(z, np.array([0.5, 0.7, 0.8, 1.0]))[0].isnan().all()  # no low side: nothing to fit


def test_multiples_are_centred_on_the_seed():
    assert multiples(5, 2.0) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert multiples(3, 0.5)[1] == 0.0
    with pytest.raises(FaceganError, match="--steps must be odd"):
        multiples(4, 2.0)
    with pytest.raises(FaceganError, match="--scale must be a positive"):
        multiples(5, 0.0)


def test_direction_grid_and_rates(setup, tmp_path):
    run, path, _, _ = setup
    out = tmp_path / "male.png"
    report = arithmetic(run, "Male", path, out, seeds=(0, 3), steps=3, scale=1.5, count=64, measure=16, device="cpu")
    generator, config = load_generator(run)
    classifier = load_classifier(path)

    # The direction: mean latent of the faces scored Male minus that of the others, computed here another way.
    faces = sample_array(run, 64, seed=0, device="cpu", precision="fp32")
    male = predict(classifier, faces)[:, 0] >= 0.5
    z = latents(64, config.latent_dim, 0)
    expected = z[torch.from_numpy(male)].mean(0) - z[torch.from_numpy(~male)].mean(0)
    saved = run / "directions" / "Male.safetensors"
    direction, fit = load_direction(saved)
    assert torch.allclose(direction, expected, atol=1e-5)
    assert (fit["attribute"], fit["count"], fit["latent_dim"], fit["high"], fit["low"]) == ("Male", 64, config.latent_dim,
                                                                                           int(male.sum()), int((~male).sum()))
    assert fit["classifier"] == str(path) and len(fit["classifier_sha256"]) == 64
    assert fit["generator_hash"] == weights_hash(generator)

    # The grid: a row per seed, a column per multiple (a strip of captions on the left, of multiples on top);
    # the middle column is each seed's own face, as `sample -n 1 --seed S` draws it.
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] == 14 + 2 + 2 * 34 and (grid.shape[1] - (2 + 3 * 34)) > 0
    left = grid.shape[1] - (2 + 3 * 34)
    for row, seed in enumerate((0, 3)):
        top = 14 + 2 + row * 34
        face = sample_array(run, 1, seed=seed, device="cpu", precision="fp32")[0]
        assert np.array_equal(grid[top : top + 32, left + 36 : left + 68], face)
        assert not np.array_equal(grid[top : top + 32, left + 2 : left + 34], face)  # moved: another face

    # The rates: at multiple 0 they are the classifier's rate on the fresh faces of seed 1 (never the fit's).
    saved_report = json.loads(out.with_suffix(".json").read_text())
    assert saved_report == json.loads(json.dumps(report))
    rows = saved_report["rates"]["steps"]
    assert [r["multiple"] for r in rows] == [-1.5, 0.0, 1.5] == saved_report["grid"]["multiples"]
    for r in rows:
        assert 0 <= r["low"] <= r["rate"] <= r["high"] <= 1 and r["count"] == 16 and 0 <= r["mean_probability"] <= 1
    fresh = predict(classifier, sample_array(run, 16, seed=1, device="cpu", precision="fp32"))[:, 0] >= 0.5
    assert rows[1]["rate"] == pytest.approx(fresh.mean())
    assert saved_report["rates"]["seed"] == 1 and saved_report["direction"]["reused"] is False
    text = format_rates(report)
    assert "multiple" in text and "+1.50" in text and "Male" in text


def test_a_saved_direction_is_reused_unless_asked_otherwise(setup, tmp_path):
    run, path, _, _ = setup
    with pytest.warns(FaceganWarning, match=r"only \d+ of 32 faces are on the (high|low) side \(probability 0.5\) of Smiling"):
        first = arithmetic(run, "Smiling", path, tmp_path / "a.png", steps=3, count=32, measure=0, device="cpu")
    saved = Path(first["direction"]["file"])
    assert saved == directions_dir(run) / "Smiling.safetensors" and saved.is_file()
    stamp = saved.stat().st_mtime_ns
    again = arithmetic(run, "Smiling", path, tmp_path / "b.png", seeds=(5,), steps=5, count=32, measure=0, device="cpu")
    assert again["direction"]["reused"] is True and saved.stat().st_mtime_ns == stamp
    assert again["rates"]["steps"] == [] and "no rates measured" in format_rates(again)
    other = arithmetic(run, "Smiling", path, tmp_path / "c.png", steps=3, count=48, measure=0, device="cpu")
    assert other["direction"]["reused"] is False and "count" in other["direction"]["refit_because"]
    assert load_direction(saved)[1]["count"] == 48
    forced = arithmetic(run, "Smiling", path, tmp_path / "d.png", steps=3, count=48, measure=0, refit=True, device="cpu")
    assert forced["direction"]["reused"] is False and forced["direction"]["refit_because"] == "--refit"


def test_an_exported_file_keeps_its_directions_beside_it(setup, tmp_path):
    from facegan.export import export_generator

    run, path, _, _ = setup
    exported = export_generator(run, tmp_path / "g.safetensors")
    report = arithmetic(exported, "Male", path, tmp_path / "g.png", steps=3, count=32, measure=8, device="cpu")
    assert Path(report["direction"]["file"]) == tmp_path / "g-directions" / "Male.safetensors"
    assert report["direction"]["generator_hash"] == weights_hash(load_generator(run)[0])  # the same G as the run's


def test_a_conditional_run_holds_its_attrs(setup, tmp_path):
    _, path, _, data = setup
    run = train(tiny(tmp_path, data, epochs=1, grid_size=4, condition=("Male",)), progress=False)
    report = arithmetic(run, "Smiling", path, tmp_path / "c.png", steps=3, count=32, measure=8, attrs="Male=1",
                        quantile=0.25, device="cpu")
    assert report["attrs"] == "Male=1" and report["condition"] == ["Male"]
    grid = np.asarray(Image.open(tmp_path / "c.png"))
    left = grid.shape[1] - (2 + 3 * 34)
    for row, seed in enumerate((0, 1, 2, 3)):  # the middle column: each seed's face as `sample --attrs Male=1` draws it
        top = 14 + 2 + row * 34
        face = sample_array(run, 1, seed=seed, device="cpu", precision="fp32", attrs="Male=1")[0]
        assert np.array_equal(grid[top : top + 32, left + 36 : left + 68], face)
    assert load_direction(report["direction"]["file"])[1]["attrs"] == "Male=1"
    assert (report["direction"]["high"], report["direction"]["low"]) == (8, 8)  # a quarter of 32 on each side
    with pytest.raises(FaceganError, match="not conditioned on 'Smiling'"):
        arithmetic(run, "Smiling", path, tmp_path / "c.png", steps=3, count=32, attrs="Smiling=1", device="cpu")
    with pytest.raises(FaceganError, match="--analogy works on unconditional runs"):
        arithmetic(run, "Smiling", path, tmp_path / "c.png", steps=3, count=32, analogy_with="Male", device="cpu")


def test_the_command_and_its_refusals(setup, tmp_path, capsys):
    run, path, constant, _ = setup
    base = ["arithmetic", str(run), "--classifier", str(path), "-n", "32", "--measure", "8", "--steps", "3", "--device", "cpu"]
    result = run_cli([*base, "--vector", "Male", "--out", str(tmp_path / "m.png")], capsys)
    assert result.code == 0, result.err
    assert "rate of Male" in result.out and "multiple" in result.out and (tmp_path / "m.json").is_file()

    refusals = [
        (["--vector", "Bald"], "does not know 'Bald'; it knows Male, Smiling"),
        (["--vector", "Male", "--steps", "4"], "--steps must be odd"),
        (["--vector", "Male", "--seeds", "3,x"], "--seeds must be whole numbers"),
        (["--vector", "Male", "--quantile", "0.7"], "--quantile must be above 0 and at most 0.5"),
        (["--vector", "Male", "--attrs", "Male=1"], "not conditioned on 'Male'"),
    ]
    for extra, message in refusals:
        result = run_cli([*base, *extra, "--out", str(tmp_path / "x.png")], capsys)
        assert result.code == 1 and message in result.err, (extra, result.err)
        assert result.err.count("\n") == 1  # one sentence, no traceback
    result = run_cli([*base, "--vector", "Male", "--out", str(tmp_path / "x.gif")], capsys)
    assert result.code == 1 and "must be a file name ending in .png" in result.err
    for vector, side in (("Male", "low"), ("Smiling", "high")):  # the constant classifier: every face Male, none Smiling
        result = run_cli([*base, "--classifier", str(constant), "--vector", vector, "--out", str(tmp_path / "x.png")], capsys)
        assert result.code == 1 and f"the {side} side is empty" in result.err and result.err.count("\n") == 1
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"not really")
    result = run_cli(["arithmetic", str(onnx), "--classifier", str(path), "--vector", "Male", "--out", str(tmp_path / "x.png")], capsys)
    assert result.code == 1 and "is an ONNX file" in result.err


def test_a_classifier_of_another_resolution_is_refused(setup, tmp_path):
    run, _, _, _ = setup
    other = prepare("synthetic", tmp_path / "s64", count=32, size=64, progress=False)
    wrong = save_classifier(train_classifier(open_prepared(other), ["Male"], epochs=1, width=8, batch_size=16,
                                             precision="fp32"), tmp_path / "c64.safetensors")
    with pytest.raises(FaceganError, match="reads 64px images but .* makes 32px ones"):
        arithmetic(run, "Male", wrong, tmp_path / "x.png", steps=3, count=8, device="cpu")


def test_the_analogy_of_the_dcgan_paper(setup, tmp_path, capsys):
    run, path, constant, _ = setup
    out = tmp_path / "male.png"
    report = arithmetic(run, "Male", path, out, steps=3, count=64, measure=0, analogy_with="Smiling", trials=20,
                        refit=True, device="cpu")  # a fresh fit: the analogy takes the fit's scores
    a = report["analogy"]
    assert Path(a["file"]) == tmp_path / "male-analogy.png"
    picture = np.asarray(Image.open(a["file"]))
    # 3 exemplars and their means, 4 columns, under two lines of captions; 32px faces enlarged 4x
    assert picture.shape[0] == 26 + 2 + 4 * 130 and picture.shape[1] > 2 + 4 * 130
    # The terms' pools, counted here from the classifier's own scores of the fit's faces.
    scores = predict(load_classifier(path), sample_array(run, 64, seed=0, device="cpu", precision="fp32")) >= 0.5
    male, smiling = scores[:, 0], scores[:, 1]
    assert [t["faces"] for t in a["terms"]] == [int((male & ~smiling).sum()), int((~male & ~smiling).sum()),
                                                int((~male & smiling).sum())]
    assert [t["kind"] for t in a["terms"]] == ["Male=1,Smiling=0", "Male=0,Smiling=0", "Male=0,Smiling=1"]
    assert [t["sign"] for t in a["terms"]] == [1, -1, 1]
    assert a["random_face_rate_both"] == pytest.approx((male & smiling).mean())
    # Each exemplar row begins with three of the fit's own faces, one of each kind (enlarged 4x: every 4th pixel).
    fit_faces = sample_array(run, 64, seed=0, device="cpu", precision="fp32")
    left = picture.shape[1] - (2 + 4 * 130)
    for column, kind in enumerate([male & ~smiling, ~male & ~smiling, ~male & smiling]):
        top, at = 26 + 2, left + 2 + column * 130
        face = picture[top : top + 128 : 4, at : at + 128 : 4]
        same = [i for i in range(64) if np.array_equal(fit_faces[i], face)]
        assert same and kind[same[0]], column
    for key in ("Male", "Smiling", "both"):
        assert a["result_rates"][key]["count"] == 20 and 0 <= a["result_rates"][key]["rate"] <= 1
    assert 0 <= a["mean_result"]["Male"] <= 1
    assert json.loads(out.with_suffix(".json").read_text())["analogy"]["trials"] == 20
    assert "analogy (Male=1,Smiling=0) - (Male=0,Smiling=0) + (Male=0,Smiling=1)" in format_rates(report)
    # With the direction reused, the faces are scored afresh, not taken from the fit: the same figures and picture.
    again = arithmetic(run, "Male", path, tmp_path / "again.png", steps=3, count=64, measure=0, analogy_with="Smiling",
                       trials=20, device="cpu")
    assert not report["direction"]["reused"] and again["direction"]["reused"]
    assert {**again["analogy"], "file": ""} == {**a, "file": ""}
    assert np.array_equal(np.asarray(Image.open(again["analogy"]["file"])), picture)

    base = ["arithmetic", str(run), "-n", "32", "--measure", "0", "--steps", "3", "--device", "cpu", "--out", str(tmp_path / "x.png")]
    for extra, message in [(["--classifier", str(path), "--vector", "Male", "--analogy", "Male"], "needs an attribute other than"),
                           (["--classifier", str(path), "--vector", "Male", "--analogy", "Bald"], "does not know 'Bald'"),
                           (["--classifier", str(constant), "--vector", "Male", "--quantile", "0.25", "--analogy", "Smiling"],
                            "the analogy needs 3 faces of each kind among the 32 scored, but Male=0,Smiling=0 has 0")]:
        result = run_cli([*base, *extra], capsys)
        assert result.code == 1 and message in result.err, (extra, result.err)
        assert result.err.count("facegan: error:") == 1 and "Traceback" not in result.err  # warned of small sides, if so


def test_an_attribute_that_cannot_name_a_file_is_refused(setup, tmp_path):
    run, path, _, _ = setup
    odd = load_classifier(path)
    odd.attributes = ["../Male", "Smiling"]
    with pytest.raises(FaceganError, match="cannot name a file"):
        arithmetic(run, "../Male", odd, tmp_path / "x.png", steps=3, count=8, device="cpu")
    assert not (run / "Male.safetensors").exists()
