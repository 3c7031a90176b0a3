"""Small file-system helpers shared by the writers that must survive a crash (prepare, checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path


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
