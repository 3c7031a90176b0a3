"""What keeps a run alive on shared, preemptible machines: a lock, signals, divergence, full disks.

- `run_lock`: one trainer per run directory. fcntl.flock is released by the kernel when its
  process dies, so a `kill -9` never leaves a stale lock behind.
- `stop_on_signals`: SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C) only set a flag; the
  loop reads it at the next step boundary, writes a checkpoint and stops cleanly.
- `DivergenceGuard`: notices a non-finite loss or weight, so the loop can roll back instead of
  saving NaNs.
- `reporting_disk_errors`: a full (or read-only) disk ends in one sentence, not a traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from facegan.errors import FaceganError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None

LOCK_FILE = "train.lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while training in it; refuse, naming the holder, if another process has it."""
    if fcntl is None:
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
            raise FaceganError(
                f"{run_dir} is being trained by {holder} (it holds {path}); wait for it to finish or stop it, "
                "then resume."
            ) from None
        # Written after locking, so it names the holder; read only to say who holds the lock.
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock; the file stays, so no unlink races with a waiting process


class StopRequest:
    """Set by SIGTERM or SIGINT; the training loop reads it at each step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        """SIGTERM or SIGINT."""
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While inside, SIGTERM and SIGINT set the yielded request instead of killing; restored after."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # only the main thread may install handlers; signals then act as they did
        return

    def handler(signum: int, frame) -> None:
        # A second Ctrl-C while the checkpoint is written changes nothing: the write finishes.
        if request.signum is None:
            request.signum = signum

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for number, old in previous.items():
            signal.signal(number, old if old is not None else signal.SIG_DFL)


class DivergenceGuard:
    """Notices non-finite losses and weights, with no host-device synchronisation in a GPU step.

    Each step's losses are folded into a flag on the device. It is read every step on the CPU,
    where reading is free, and otherwise only when asked: at log steps and before every save.
    """

    def __init__(self, device: torch.device) -> None:
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.every_step = device.type == "cpu"

    def observe(self, *losses: torch.Tensor) -> None:
        """Fold one step's losses into the flag (device-side)."""
        for loss in losses:
            self.nonfinite |= ~torch.isfinite(loss.detach()).all()

    def check(self, read: bool = False, checkpoint: dict | None = None) -> str | None:
        """Why training has diverged, or None: the loss flag (read when `read`, or every step on the
        CPU) and, when given, every floating-point tensor of a checkpoint about to be saved."""
        if (read or self.every_step) and bool(self.nonfinite):
            return "a non-finite loss"
        if checkpoint is not None:
            from facegan.train.checkpoint import nonfinite_tensor

            name = nonfinite_tensor(checkpoint)
            if name is not None:
                return f"non-finite values in {name}"
        return None

    def reset(self) -> None:
        """Forget what was observed (after a rollback)."""
        self.nonfinite.zero_()


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
