"""Files under a directory or inside a zip archive, read the same way.

Every reader above this one (CelebA layouts, image folders) works on relative POSIX paths, so a
zip is read in place, without extracting, exactly as its unpacked folder would be.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

from facegan.errors import FaceganError

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
