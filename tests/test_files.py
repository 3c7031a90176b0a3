"""files: atomic writes (the old file or the new one, never half of one, nothing left behind), file hashes, disk errors as sentences."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from facegan.errors import FaceganError
from facegan.files import (
    describe_os_error,
    reporting_disk_errors,
    sha256_file,
    write_atomically,
)


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


def test_sha256_file_is_hashlib_s_over_the_whole_file(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@reporting_disk_errors("the images", then="then sample again")
def write(error: Exception | None = None, value: int = 1) -> int:
    """Writes nothing; raises `error` if given."""
    if error is not None:
        raise error
    return value


def test_a_full_disk_becomes_one_sentence_naming_the_file_and_what_to_do():
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/00001/samples/x.png")
    with pytest.raises(FaceganError, match=r"^could not write /runs/00001/samples/x\.png \(No space left on device\); free some "
                                           r"disk space, then sample again\.$") as caught:
        write(full)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no traceback chained to it
    with pytest.raises(FaceganError, match=r"^could not write the images \(Read-only file system\); choose a writable place, then "
                                           r"sample again\.$"):
        write(OSError(errno.EROFS, "Read-only file system"))


def test_other_errors_and_return_values_pass_through_the_decorator():
    assert write(value=5) == 5 and write.__name__ == "write" and write.__doc__ == "Writes nothing; raises `error` if given."
    with pytest.raises(ValueError, match="not a disk error"):
        write(ValueError("not a disk error"))


@pytest.mark.parametrize("code, advice", [(errno.EDQUOT, "free some of your disk quota"), (errno.EACCES, "fix the permissions"),
                                          (errno.EPERM, "fix the permissions"), (errno.EIO, "check the disk")])
def test_each_kind_of_disk_error_gets_its_advice(code, advice):
    message = describe_os_error(OSError(code, os.strerror(code), "/x"), "the checkpoint", "then resume")
    assert message == f"could not write /x ({os.strerror(code)}); {advice}, then resume."
    assert describe_os_error(OSError("odd\nsecond line"), "the plot", "then retry") == \
        "could not write the plot (odd); check the disk, then retry."
