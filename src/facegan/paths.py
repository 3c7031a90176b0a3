"""Checks on the paths a user gives, made before anything is read or written."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from facegan.errors import FaceganError


def output_file(path: str | os.PathLike, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """A file to write: named with one of `suffixes`, not a directory, in a directory that exists or can be made."""
    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise FaceganError(f"{option} {path} must be a file name ending in {' or '.join(suffixes)}.")
    if path.is_dir():
        example = path / f"name{suffixes[0] if suffixes else ''}"
        raise FaceganError(f"{option} {path} is a directory; give a file name, such as {example}.")
    _require_creatable(path.parent, option)
    return path


def output_dir(path: str | os.PathLike, option: str) -> Path:
    """A directory to write into: not a file, and either there or possible to make."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise FaceganError(f"{option} {path} is a file; give a directory.")
    _require_creatable(path, option)
    return path


def _require_creatable(directory: Path, option: str) -> None:
    """The nearest existing ancestor of `directory` must be a directory we may write in."""
    for parent in (directory, *directory.absolute().parents):
        if parent.exists():
            if not parent.is_dir():
                raise FaceganError(f"{option}: {parent} is a file, so {directory} cannot be made.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FaceganError(f"{option}: cannot write in {parent} (permission denied).")
            return



def real_path(path: str | os.PathLike, option: str) -> Path:
    """`path` made absolute with every symlink followed; a symlink loop on the way is one sentence."""
    path = Path(path).expanduser()
    try:
        os.stat(path)
        looped = False
    except OSError as error:
        looped = error.errno == errno.ELOOP
    if not looped:
        try:
            return path.resolve()
        except RuntimeError:  # Python before 3.13 says "Symlink loop" this way
            pass
    raise FaceganError(f"{option} {path} leads into a symlink loop (links that point at each other); "
                       "fix or remove the link, or give the real path.")
