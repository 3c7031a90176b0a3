"""Small file-system helpers shared by the writers that must survive a crash or a full disk."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Let `write` fill a temporary file beside `path`, fsync it, and rename it onto `path`.

    A killed process or a full disk leaves the old file or the new one under `path`, never half
    of one, and no temporary file behind (unless the process is killed mid-write). The temporary
    file is in the same folder, so the rename stays within one file system; hidden and unique to
    the call, so concurrent writers of one file never share it; and it ends in the final name's
    suffix, for writers that choose a format by it. It is created with mode 0o666 (not mkstemp's
    0o600), so the final file gets the umask's usual permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the data is on disk before the name points at it
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def fsync_directory(directory: Path) -> None:
    """Make a rename into `directory` durable: fsync the directory itself, not only the file."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def other_process_alive(pid: int) -> bool:
    """Whether another process `pid` still runs (so its temporary files are not stale).

    This process counts as not alive: what it left under its own PID is from an earlier attempt.
    """
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
