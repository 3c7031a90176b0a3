"""Small file-system helpers shared by the writers that must survive a crash or a full disk."""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from facegan.errors import FaceganError

_HASH_BLOCK = 1 << 20


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


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex, read in blocks (checkpoints and networks are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


_ADVICE = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some of your disk quota",
    errno.EROFS: "choose a writable place",
    errno.EACCES: "fix the permissions",
    errno.EPERM: "fix the permissions",
}


def describe_os_error(error: Exception, what: str, then: str) -> str:
    """One sentence for an OSError while writing `what`: the file, the reason, what to do `then`."""
    target = getattr(error, "filename", None) or what
    reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    advice = _ADVICE.get(getattr(error, "errno", None), "check the disk")
    return f"could not write {target} ({reason}); {advice}, {then}."


def reporting_disk_errors(what: str, then: str = "then resume the run: its last checkpoint is intact") -> Callable:
    """Decorate a writer so that an OSError (a full disk, a read-only one) becomes one FaceganError sentence."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except OSError as error:
                raise FaceganError(describe_os_error(error, what, then)) from None

        return wrapper

    return decorate
