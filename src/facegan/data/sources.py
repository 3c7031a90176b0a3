"""Files under a directory or inside a zip archive, read the same way.

Every reader above this one (CelebA layouts, image folders) works on relative POSIX paths, so a
zip is read in place, without extracting, exactly as its unpacked folder would be.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from facegan.errors import FaceganError

# The largest file read as one image (a zip can declare a 1 GiB member in 1 MB): larger ones are
# skipped, from their declared size, before a byte is read. A 6000x4000 JPEG is about 10 MB.
MAX_IMAGE_BYTES = 256 * 2**20
# The first bytes of the formats facegan prepares (data/images.py's IMAGE_SUFFIXES).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")


class Unreadable(OSError):
    """A file that is not read as an image (too large, or not an image by its first bytes); str() says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.strerror = reason


def _bytes(count: int) -> str:
    """A size as people read it: 8 MiB, 40 KiB, 300 bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:,.0f} {unit}"
    return f"{count} bytes"


def looks_like_an_image(head: bytes) -> bool:
    """Whether a file's first 12 bytes begin a JPEG, PNG, BMP or WebP."""
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")

# Folders and files that operating systems and archivers add beside real content.
_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}


def is_junk(rel: str) -> bool:
    """True for operating-system litter (macOS resource forks, thumbnails, hidden files)."""
    return any(part in _JUNK_PARTS or part.startswith(".") for part in PurePosixPath(rel).parts)


def _escapes(name: str) -> bool:
    """True for a zip member name that points outside the archive's own folder (zip slip)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


class SourceTree:
    """A read-only set of files addressed by relative POSIX paths."""

    path: Path

    def list_files(self) -> list[str]:
        """All file paths in the tree, sorted."""
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        """The bytes of one file."""
        raise NotImplementedError

    def describe(self, rel: str) -> str:
        """A path a user can recognise, for messages and manifests."""
        return str(self.path / rel)

    def size(self, rel: str) -> int:
        """The size of one file in bytes (a zip member's declared size)."""
        raise NotImplementedError

    @contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """One file as a stream of bytes."""
        raise NotImplementedError
        yield

    def read_image(self, rel: str, limit: int | None = None) -> bytes:
        """The bytes of an image file: its size and first bytes checked before the rest is read, at most `limit` bytes."""
        limit = MAX_IMAGE_BYTES if limit is None else limit
        size = self.size(rel)
        if size > limit:
            raise Unreadable(f"it is {_bytes(size)}, more than the {_bytes(limit)} facegan reads as one image")
        with self.open(rel) as stream:
            head = stream.read(12)
            if not looks_like_an_image(head):
                raise Unreadable("its first bytes are not those of a JPEG, PNG, WebP or BMP file")
            data = head + stream.read(limit + 1 - len(head))  # never more than the limit, whatever was declared
        if len(data) > limit:
            raise Unreadable(f"it holds more than the {_bytes(limit)} facegan reads as one image")
        return data


class DirTree(SourceTree):
    """The files under a directory, recursively, following symlinks to files."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def list_files(self) -> list[str]:
        found = []
        for top, dirs, files in os.walk(self.path):
            dirs.sort()
            rel_top = os.path.relpath(top, self.path)
            for name in files:
                rel = name if rel_top == "." else f"{rel_top}/{name}"
                found.append(rel.replace(os.sep, "/"))
        return sorted(found)

    def read(self, rel: str) -> bytes:
        return (self.path / rel).read_bytes()

    def size(self, rel: str) -> int:
        return (self.path / rel).stat().st_size

    @contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        with open(self.path / rel, "rb") as stream:
            yield stream


class ZipTree(SourceTree):
    """The members of a zip archive, read in place."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._owner = 0  # pid that opened _zip

    def _archive(self) -> zipfile.ZipFile:
        # One handle per process: forked workers would otherwise share the parent's file
        # offset and read each other's members (seen as CRC errors).
        if self._zip is None or self._owner != os.getpid():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as error:
                raise FaceganError(f"{self.path} is not a readable zip archive ({error}).") from None
            self._owner = os.getpid()
        return self._zip

    def __getstate__(self) -> dict:
        return {"path": self.path, "_zip": None, "_owner": 0}

    def list_files(self) -> list[str]:
        # Nothing is ever extracted, but a member that would land outside the archive's folder when
        # extracted (absolute, a drive, or `..`) is no image of this collection: never listed.
        return sorted(info.filename for info in self._archive().infolist()
                      if not info.is_dir() and not _escapes(info.filename))

    def read(self, rel: str) -> bytes:
        return self._archive().read(rel)

    def size(self, rel: str) -> int:
        return self._archive().getinfo(rel).file_size

    @contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        with self._archive().open(rel) as stream:
            yield stream

    def describe(self, rel: str) -> str:
        return f"{self.path}:{rel}"


def open_tree(path: str | os.PathLike) -> SourceTree:
    """A directory or a zip file as a SourceTree; a clear error for anything else."""
    path = Path(path).expanduser()
    if path.is_dir():
        return DirTree(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            return ZipTree(path)
        raise FaceganError(f"{path} is a file but not a zip archive; give a folder of images or a .zip.")
    raise FaceganError(f"{path} does not exist; give a folder of images, a .zip, or `synthetic`.")
