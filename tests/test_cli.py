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

import pytest
from conftest import make_zip

from facegan.cli import main
from facegan.data import download, open_prepared


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prepare_synthetic_then_info(tmp_path, capsys):
    code, _, err = run(["prepare", "synthetic", "--count", "200", "--out", str(tmp_path / "s"), "--quiet"], capsys)
    assert code == 0, err
    dataset = open_prepared(tmp_path / "s")
    assert len(dataset) == 200 and dataset.attributes.shape[0] == 200
    assert dataset.manifest["renderer"] == "facegan.data.synthetic" and dataset.manifest["crop"] is None
    code, out, _ = run(["info", str(tmp_path / "s"), "--verify"], capsys)
    assert code == 0 and json.loads(out[: out.rindex("}") + 1])["count"] == 200
    assert "content hash verified" in out


def test_prepare_a_celeba_folder(tmp_path, capsys, official_subset):
    code, _, err = run(["prepare", str(official_subset), "--out", str(tmp_path / "c"), "--size", "32"], capsys)
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
    code, _, err = run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 1
    assert err.startswith("facegan: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["prepare", "synthetic", "--out", "o", "--count", "-3"],
                                  ["prepare", "synthetic", "--out", "o", "--size", "big"],
                                  ["prepare", "synthetic", "--out", "o", "--split", "holdout"],
                                  ["prepare", "synthetic"]])
def test_bad_arguments_are_usage_errors(capsys, argv):
    code, _, err = run(argv, capsys)
    assert code == 2 and "error:" in err and "Traceback" not in err


def test_the_console_script_is_installed(tmp_path):
    result = subprocess.run(["facegan", "prepare", "synthetic", "--count", "64", "--out", str(tmp_path / "s"), "--quiet"],
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
    code, _, err = run(argv, capsys)
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
        code, _, err = run(argv, capsys)
    finally:
        if env_backup is not None:
            os.environ[download.MIRROR_ENV] = env_backup
    assert code == 1 and "Traceback" not in err
    assert str(tmp_path / "dl") in err and "img_align_celeba.zip" in err and "facegan prepare" in err


def test_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "facegan.cli", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("facegan ")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from facegan.data.prepare import prepare

    return prepare("synthetic", tmp_path_factory.mktemp("d") / "s32", count=64, size=32, progress=False)


TINY_TRAIN = ["--batch-size", "16", "--g-width", "8", "--d-width", "8", "--device", "cpu", "--quiet"]


def test_train_resume_and_sample(tmp_path, capsys, tiny_data):
    runs = str(tmp_path / "runs")
    code, _, err = run(["train", "--data", str(tiny_data), "--epochs", "1", "--runs-dir", runs, *TINY_TRAIN], capsys)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "00001-dcgan"
    code, _, err = run(["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"], capsys)
    assert code == 0, err
    assert (run_dir / "checkpoints" / "epoch-0002.pt").exists()
    code, _, err = run(["sample", str(run_dir), "-n", "4", "--seed", "7", "--out", str(tmp_path / "faces.png"), "--quiet"], capsys)
    assert code == 0 and (tmp_path / "faces.png").exists(), err


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
    code, _, err = run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 1, err
    assert err.startswith("facegan: error: ") and message in err and err.count("\n") == 1


def test_batch_size_zero_is_a_usage_error(capsys):
    code, _, err = run(["train", "--batch-size", "0"], capsys)
    assert code == 2 and "expected a positive number" in err


def test_resume_with_an_incompatible_configuration(tmp_path, capsys, tiny_data):
    runs = str(tmp_path / "runs")
    assert run(["train", "--data", str(tiny_data), "--epochs", "1", "--runs-dir", runs, *TINY_TRAIN], capsys)[0] == 0
    code, _, err = run(["train", "--resume", f"{runs}/00001-dcgan", "--latent-dim", "128", "--quiet"], capsys)
    assert code == 1 and "cannot resume" in err and "latent_dim" in err


def test_a_relative_data_path_resumes_from_another_directory(tmp_path, capsys, tiny_data, monkeypatch):
    import shutil

    shutil.copytree(tiny_data, tmp_path / "work" / "data" / "s32")
    monkeypatch.chdir(tmp_path / "work")
    assert run(["train", "--data", "data/s32", "--epochs", "1", *TINY_TRAIN], capsys)[0] == 0
    run_dir = tmp_path / "work" / "runs" / "00001-dcgan"
    assert json.loads((run_dir / "config.json").read_text())["data"] == str(tmp_path / "work" / "data" / "s32")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", "--resume", str(run_dir), "--epochs", "2", "--data", "work/data/s32", "--quiet"], capsys)
    assert code == 0, err
