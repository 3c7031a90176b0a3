"""files.write_atomically: the old file or the new one, never half of one, and nothing left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from facegan.files import write_atomically


def test_it_writes_through_a_hidden_temporary_that_keeps_the_suffix(tmp_path):
    seen = []

    def write(temporary: Path) -> None:
        seen.append(temporary)
        temporary.write_text("new")

    out = write_atomically(tmp_path / "deeper" / "picture.png", write)
    assert out == tmp_path / "deeper" / "picture.png"
    assert out.read_text() == "new"
    (temporary,) = seen
    assert temporary.parent == out.parent and temporary.name.startswith(".picture.png.")
    assert temporary.suffix == ".png"  # writers that choose the format by the name still see PNG
    assert sorted(p.name for p in out.parent.iterdir()) == ["picture.png"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")

    def write(temporary: Path) -> None:
        temporary.write_text("half of the ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, write)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_the_new_file_gets_the_umask_permissions_not_private_ones(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "grid.png", lambda temporary: temporary.write_bytes(b"x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_two_writes_of_one_name_use_different_temporaries(tmp_path):
    names = []
    for text in ("first", "second"):
        write_atomically(tmp_path / "a.txt", lambda temporary, text=text: (names.append(temporary.name), temporary.write_text(text)))
    assert names[0] != names[1]
    assert (tmp_path / "a.txt").read_text() == "second"
