"""The writer: nothing half-written ever looks complete, and bad options end in one sentence."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facegan.data.prepare as prepare_module
from facegan.data import open_prepared
from facegan.data.prepare import npy_header, prepare
from facegan.errors import FaceganError


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """300 small distinct images: enough for several worker chunks."""
    root = tmp_path / "faces"
    root.mkdir()
    rng = np.random.default_rng(2)
    for i in range(300):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")
    return root


def test_npy_header_is_fixed_length_and_readable(tmp_path):
    assert len(npy_header((202_599, 128, 128, 3))) == len(npy_header((1, 8, 8, 3))) == 128
    rows = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    (tmp_path / "a.npy").write_bytes(npy_header(rows.shape) + rows.tobytes())
    assert np.array_equal(np.load(tmp_path / "a.npy"), rows)


def test_one_and_two_workers_give_identical_datasets(tmp_path, faces):
    one = open_prepared(prepare(str(faces), tmp_path / "one", size=32, workers=1, progress=False))
    two = open_prepared(prepare(str(faces), tmp_path / "two", size=32, workers=2, progress=False))
    assert np.array_equal(one.images, two.images)
    assert one.manifest["content_hash"] == two.manifest["content_hash"]


def test_an_existing_output_is_refused_unless_forced(tmp_path, faces):
    out = prepare(str(faces), tmp_path / "out", size=16, progress=False)
    with pytest.raises(FaceganError, match="already holds a prepared dataset; pass --force"):
        prepare(str(faces), out, size=16, progress=False)
    prepare(str(faces), out, size=32, force=True, progress=False)
    assert open_prepared(out).resolution == 32
    assert sorted(p.name for p in out.parent.iterdir()) == ["faces", "out"]  # no leftovers


def test_an_interrupted_prepare_leaves_nothing_and_can_be_run_again(tmp_path, faces, monkeypatch):
    original = prepare_module._decode_chunk
    calls = []

    def interrupted(task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(task)

    monkeypatch.setattr(prepare_module, "_decode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(faces), tmp_path / "out", size=16, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]
    monkeypatch.setattr(prepare_module, "_decode_chunk", original)
    assert len(open_prepared(prepare(str(faces), tmp_path / "out", size=16, progress=False))) == 300


def test_a_killed_prepare_is_cleaned_up_by_the_next_run(tmp_path, faces):
    # What `kill -9` leaves: a hidden partial directory of a process that no longer exists.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=False)
    stale = tmp_path / f".out.partial-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"half")
    out = prepare(str(faces), tmp_path / "out", size=16, progress=False)
    assert not stale.exists() and len(open_prepared(out)) == 300


def test_a_running_prepare_into_the_same_output_is_refused(tmp_path, faces):
    (tmp_path / f".out.partial-{os.getppid()}").mkdir()  # a live process is writing it
    with pytest.raises(FaceganError, match="another `facegan prepare`"):
        prepare(str(faces), tmp_path / "out", size=16, progress=False)


def test_not_enough_space_is_refused_before_writing(tmp_path, faces, monkeypatch):
    monkeypatch.setattr(prepare_module.shutil, "disk_usage", lambda path: _Usage(free=1000))
    with pytest.raises(FaceganError, match="not enough disk space .* needs"):
        prepare(str(faces), tmp_path / "out", size=64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free


class _FillingFile(io.FileIO):
    """A file on a disk that fills after `room` bytes."""

    room = 20_000

    def write(self, data) -> int:
        _FillingFile.room -= len(data)
        if _FillingFile.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_disk_that_fills_while_writing_leaves_nothing(tmp_path, faces, monkeypatch):
    def filling_open(path, mode="r", **kwargs):
        return _FillingFile(path, "w") if mode == "wb" else open(path, mode, **kwargs)

    monkeypatch.setattr(prepare_module, "open", filling_open, raising=False)
    with pytest.raises(FaceganError, match="the disk filled up while writing .*nothing was kept"):
        prepare(str(faces), tmp_path / "out", size=32, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 4}, "--size must be between 8 and 1024"),
        ({"crop": -5}, "--crop must be a positive number"),
        ({"filter": "nearest"}, "--filter must be one of"),
        ({"split": "holdout"}, "--split must be one of"),
        ({"split": "train"}, "--split train applies to CelebA only"),
    ],
)
def test_bad_options_are_one_sentence(tmp_path, faces, kwargs, message):
    with pytest.raises(FaceganError, match=message):
        prepare(str(faces), tmp_path / "out", progress=False, **kwargs)


def test_bad_sources_are_one_sentence(tmp_path):
    with pytest.raises(FaceganError, match="does not exist"):
        prepare(str(tmp_path / "nowhere"), tmp_path / "out", progress=False)
    (tmp_path / "photo.txt").write_text("x")
    with pytest.raises(FaceganError, match="is a file but not a zip archive"):
        prepare(str(tmp_path / "photo.txt"), tmp_path / "out", progress=False)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(FaceganError, match="not a zip archive|not a readable zip"):
        prepare(str(tmp_path / "broken.zip"), tmp_path / "out", progress=False)


def test_an_output_that_is_a_file_is_refused(tmp_path, faces):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(FaceganError, match="is a file; --out must name a directory"):
        prepare(str(faces), tmp_path / "taken", progress=False)
