"""The `facegan` command as a user types it: exit codes, one-sentence errors, no tracebacks."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import STEPS_PER_EPOCH, TINY_ARGS, make_zip, run_cli
from PIL import Image

from facegan.data import download, open_prepared
from facegan.train.checkpoint import load_checkpoint


def test_prepare_synthetic_then_info(tmp_path, capsys):
    code, _, err = run_cli(["prepare", "synthetic", "--count", "200", "--out", str(tmp_path / "s"), "--quiet"], capsys)
    assert code == 0, err
    dataset = open_prepared(tmp_path / "s")
    assert len(dataset) == 200 and dataset.attributes.shape[0] == 200
    assert dataset.manifest["renderer"] == "facegan.data.synthetic" and dataset.manifest["crop"] is None
    code, out, _ = run_cli(["info", str(tmp_path / "s"), "--verify"], capsys)
    assert code == 0 and json.loads(out[: out.rindex("}") + 1])["count"] == 200
    assert "content hash verified" in out


def test_prepare_a_celeba_folder(tmp_path, capsys, official_subset):
    code, _, err = run_cli(["prepare", str(official_subset), "--out", str(tmp_path / "c"), "--size", "32"], capsys)
    assert code == 0, err
    assert "prepared 120 images of 32x32" in err
    assert open_prepared(tmp_path / "c").images.shape == (120, 32, 32, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prepare", "{tmp}/nowhere", "--out", "{tmp}/o"], "does not exist"),
        (["prepare", "celeba", "--out", "{tmp}/o"], "CelebA is not on disk: pass --download DIR"),
        (["prepare", "{tmp}", "--out", "{tmp}/o", "--download", "{tmp}/d"], "--download works with the source `celeba` only"),
        (["info", "{tmp}"], "is not a prepared dataset"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, capsys, argv, message):
    code, _, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 1
    assert err.startswith("facegan: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["prepare", "synthetic", "--out", "o", "--count", "-3"], "argument --count: expected a positive number, got -3"),
    (["prepare", "synthetic", "--out", "o", "--size", "big"], "argument --size: expected a whole number, got 'big'"),
    (["prepare", "synthetic", "--out", "o", "--split", "holdout"], "argument --split: invalid choice: 'holdout'"),
    (["prepare", "synthetic"], "the following arguments are required: --out"),
], ids=["count", "size", "split", "no-out"])
def test_bad_arguments_are_usage_errors(capsys, argv, message):
    code, _, err = run_cli(argv, capsys)
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[0].startswith("usage: facegan prepare ")
    assert lines[-1].startswith(f"facegan prepare: error: {message}"), err


def test_the_console_script_is_installed(tmp_path):
    # The script installed beside this interpreter (its environment need not be activated, so on PATH).
    script = Path(sys.executable).with_name("facegan")
    result = subprocess.run([str(script), "prepare", "synthetic", "--count", "64", "--out", str(tmp_path / "s"), "--quiet"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert len(open_prepared(tmp_path / "s")) == 64


@pytest.fixture
def celeba_server(tmp_path, celeba_dir, subset_names):
    """A 127.0.0.1 HTTP server serving a zip built from the sample plus the annotation files."""
    served = make_zip(tmp_path / "served", celeba_dir, subset_names[:40])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    files = tuple(
        download.RemoteFile(path.name, hashlib.md5(path.read_bytes()).hexdigest(), path.stat().st_size)
        for path in sorted(served.iterdir())
    )
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


def test_prepare_celeba_download_end_to_end(tmp_path, capsys, monkeypatch, celeba_server):
    mirror, files = celeba_server
    # The real checksums are the official release's; this server serves a 40-image zip.
    monkeypatch.setattr(download, "download_celeba", functools.partial(download.download_celeba, files=files, backoff=0))
    argv = ["prepare", "celeba", "--download", str(tmp_path / "dl"), "--mirror", mirror, "--out", str(tmp_path / "c"), "--quiet"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    dataset = open_prepared(tmp_path / "c")
    assert len(dataset) == 40 and dataset.manifest["layout"] == "official-zip"
    assert len(dataset.attribute_names) == 40


def test_prepare_celeba_download_offline_says_where_to_put_files(tmp_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["prepare", "celeba", "--download", str(tmp_path / "dl"), "--mirror", f"http://127.0.0.1:{port}",
            "--out", str(tmp_path / "c"), "--quiet"]
    env_backup = os.environ.pop(download.MIRROR_ENV, None)
    try:
        code, _, err = run_cli(argv, capsys)
    finally:
        if env_backup is not None:
            os.environ[download.MIRROR_ENV] = env_backup
    assert code == 1 and "Traceback" not in err
    assert str(tmp_path / "dl") in err and "img_align_celeba.zip" in err and "facegan prepare" in err


def test_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "facegan.cli", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("facegan ")


def test_train_resume_and_sample(tmp_path, capsys, data32):
    runs = str(tmp_path / "runs")
    code, _, err = run_cli(["train", "--data", str(data32), "--epochs", "1", "--runs-dir", runs, *TINY_ARGS], capsys)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "00001-dcgan"
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == STEPS_PER_EPOCH
    code, _, err = run_cli(["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"], capsys)
    assert code == 0, err
    for name in ("epoch-0002.pt", "latest.pt"):  # one more epoch, continued
        checkpoint = load_checkpoint(run_dir / "checkpoints" / name)
        assert (checkpoint["epoch"], checkpoint["step"]) == (2, 2 * STEPS_PER_EPOCH), name
    assert load_checkpoint(run_dir / "checkpoints" / "epoch-0001.pt")["step"] == STEPS_PER_EPOCH

    def sample(seed: int, name: str) -> bytes:
        out = tmp_path / name
        code, _, err = run_cli(["sample", str(run_dir), "-n", "4", "--seed", str(seed), "--out", str(out), "--quiet"], capsys)
        assert code == 0, err
        return out.read_bytes()

    faces = sample(7, "faces.png")
    picture = Image.open(tmp_path / "faces.png")
    assert picture.format == "PNG" and picture.size == (2 * (32 + 2) + 2, 2 * (32 + 2) + 2)  # 2x2 faces, 2 px apart
    assert np.asarray(picture.convert("RGB")).std() > 0  # faces, not only the padding
    assert sample(7, "again.png") == faces and sample(8, "other.png") != faces


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--lr", "-0.001"], "lr-g must be a positive number"),
        (["train", "--preset", "stylegan9"], "unknown preset 'stylegan9'"),
        (["train", "--data", "{tmp}/photos"], "is not a prepared dataset"),
        (["train", "--device", "tpu"], "device must be auto"),
        (["train", "--beta1", "1.5"], "betas must be two numbers in [0, 1)"),
        (["train", "--resume", "{tmp}"], "is not a facegan run directory"),
        (["sample", "{tmp}/runs/nothing", "--out", "{tmp}/x.png"], "does not exist"),
    ],
)
def test_train_and_sample_errors_are_one_line(tmp_path, capsys, argv, message):
    code, _, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 1, err
    assert err.startswith("facegan: error: ") and message in err and err.count("\n") == 1


def test_batch_size_zero_is_a_usage_error(capsys):
    code, _, err = run_cli(["train", "--batch-size", "0"], capsys)
    assert code == 2 and "expected a positive number" in err


def test_resume_with_an_incompatible_configuration(tmp_path, capsys, data32):
    runs = str(tmp_path / "runs")
    assert run_cli(["train", "--data", str(data32), "--epochs", "1", "--runs-dir", runs, *TINY_ARGS], capsys)[0] == 0
    code, _, err = run_cli(["train", "--resume", f"{runs}/00001-dcgan", "--latent-dim", "128", "--quiet"], capsys)
    assert code == 1 and "cannot resume" in err and "latent_dim" in err


def test_a_relative_data_path_resumes_from_another_directory(tmp_path, capsys, data32, monkeypatch):
    import shutil

    shutil.copytree(data32, tmp_path / "work" / "data" / "s32")
    monkeypatch.chdir(tmp_path / "work")
    assert run_cli(["train", "--data", "data/s32", "--epochs", "1", *TINY_ARGS], capsys)[0] == 0
    run_dir = tmp_path / "work" / "runs" / "00001-dcgan"
    assert json.loads((run_dir / "config.json").read_text())["data"] == str(tmp_path / "work" / "data" / "s32")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--resume", str(run_dir), "--epochs", "2", "--data", "work/data/s32", "--quiet"], capsys)
    assert code == 0, err
