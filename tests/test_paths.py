"""facegan.paths: which output files and folders are accepted before anything is written, and the sentences for the rest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from facegan import paths
from facegan.errors import FaceganError
from facegan.paths import output_dir, output_file


def test_output_file_accepts_a_new_file_in_a_folder_that_exists_or_can_be_made(tmp_path):
    assert output_file(tmp_path / "grid.png", "--out", (".png",)) == tmp_path / "grid.png"
    deep = tmp_path / "a" / "b" / "grid.png"
    assert output_file(deep, "--out", (".png",)) == deep
    assert not (tmp_path / "a").exists()  # checked, not made
    assert output_file(tmp_path / "grid.PNG", "--out", (".png",)).name == "grid.PNG"  # suffixes in any case
    assert output_file(tmp_path / "anything", "--out") == tmp_path / "anything"  # no suffixes: any name
    (tmp_path / "old.png").write_bytes(b"x")
    assert output_file(tmp_path / "old.png", "--out", (".png",)) == tmp_path / "old.png"  # replacing a file is fine


def test_output_file_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_file("~/grid.png", "--out", (".png",)) == tmp_path / "grid.png"


def test_output_file_refuses_another_suffix_naming_the_option_and_the_choices(tmp_path):
    with pytest.raises(FaceganError, match=rf"^--out {re.escape(str(tmp_path))}/g\.jpg must be a file name ending in \.png or \.safetensors\.$"):
        output_file(tmp_path / "g.jpg", "--out", (".png", ".safetensors"))


def test_output_file_refuses_a_folder_and_suggests_a_file_in_it(tmp_path):
    folder = tmp_path / "grids.png"  # a folder that even has the right suffix
    folder.mkdir()
    with pytest.raises(FaceganError, match=rf"^--out {re.escape(str(folder))} is a directory; give a file name, such as "
                                           rf"{re.escape(str(folder / 'name.png'))}\.$"):
        output_file(folder, "--out", (".png",))
    with pytest.raises(FaceganError, match=r"is a directory; give a file name, such as .*/name\.$"):
        output_file(tmp_path, "--to")


def test_output_file_refuses_a_folder_that_cannot_be_made_under_a_file(tmp_path):
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(FaceganError, match=rf"^--out: {re.escape(str(tmp_path / 'notes'))} is a file, so "
                                           rf"{re.escape(str(tmp_path / 'notes' / 'sub'))} cannot be made\.$"):
        output_file(tmp_path / "notes" / "sub" / "grid.png", "--out", (".png",))


def test_output_file_and_dir_refuse_a_folder_without_write_permission(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    # As os.access answers for a read-only folder (root may write anywhere, so it is asked, not made).
    monkeypatch.setattr(paths.os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(FaceganError, match=rf"^--out: cannot write in {re.escape(str(locked))} \(permission denied\)\.$"):
        output_file(locked / "grid.png", "--out", (".png",))
    with pytest.raises(FaceganError, match=r"cannot write in .*locked \(permission denied\)"):
        output_dir(locked / "new" / "deeper", "--out")  # the nearest folder that exists is the one asked
    assert output_dir(tmp_path / "elsewhere", "--out") == tmp_path / "elsewhere"


def test_output_dir_accepts_a_folder_that_exists_or_can_be_made(tmp_path):
    assert output_dir(tmp_path, "--out") == tmp_path
    assert output_dir(tmp_path / "x" / "y", "--out") == tmp_path / "x" / "y"
    assert not (tmp_path / "x").exists()  # checked, not made
    assert output_dir(str(tmp_path / "s"), "--out") == tmp_path / "s"  # a string is a path too


def test_output_dir_refuses_a_file_and_a_folder_under_a_file(tmp_path):
    (tmp_path / "grid.png").write_bytes(b"png")
    with pytest.raises(FaceganError, match=rf"^--out {re.escape(str(tmp_path / 'grid.png'))} is a file; give a directory\.$"):
        output_dir(tmp_path / "grid.png", "--out")
    with pytest.raises(FaceganError, match=rf"^--runs-dir: {re.escape(str(tmp_path / 'grid.png'))} is a file, so .* cannot be made\.$"):
        output_dir(tmp_path / "grid.png" / "runs", "--runs-dir")


def test_a_relative_path_is_checked_from_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    assert output_dir("fresh/runs", "--out") == Path("fresh/runs")
    with pytest.raises(FaceganError, match="taken is a file, so taken/runs cannot be made"):
        output_dir("taken/runs", "--out")
