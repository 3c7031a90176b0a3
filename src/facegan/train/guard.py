"""What keeps a run alive on shared, preemptible machines: a lock, signals, divergence, full disks.

- `run_lock`: one trainer per run directory. fcntl.flock is released by the kernel when its
  process dies, so a `kill -9` never leaves a stale lock behind.
- `stop_on_signals`: SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C) only set a flag; the
  loop reads it at the next step boundary, writes a checkpoint and stops cleanly.
- `DivergenceGuard`: notices a non-finite loss or weight, so the loop can roll back instead of
  saving NaNs; `roll_back` restores the last good checkpoint with lower learning rates.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from facegan.config import TrainConfig
from facegan.errors import FaceganError, FaceganWarning
from facegan.train.checkpoint import load_checkpoint, nonfinite_tensor
from facegan.train.rundir import STATS, append_stats, truncate_stats
from facegan.train.state import TrainState, build_state, restore_state

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None

LOCK_FILE = "train.lock"


@contextmanager
def run_lock(run_dir: Path, *, job: str | None = None, wait_s: float = 0.0) -> Iterator[None]:
    """Hold `run_dir`'s lock while training in it; refuse, naming the holder, if another process has it.

    `job` (torchrun's rendezvous id) goes into the holder's line. A restarted torchrun attempt passes
    `wait_s`: a lock held by a process of the same job is its dead attempt's rank 0, which torchrun is
    still stopping (SIGTERM, then SIGKILL after a grace period); that lock is waited for, up to `wait_s`,
    never broken. flock is released only when its holder has exited, so a live trainer keeps its run.
    """
    if fcntl is None:
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
                if job is not None and holder.endswith(f"(torchrun job {job})") and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise FaceganError(
                    f"{run_dir} is being trained by {holder} (it holds {path}); wait for it to finish or stop it, "
                    "then resume."
                ) from None
        # Written after locking, so it names the holder; read only to say who holds the lock.
        os.ftruncate(descriptor, 0)
        line = f"process {os.getpid()} on {socket.gethostname()}" + (f" (torchrun job {job})" if job else "")
        os.pwrite(descriptor, f"{line}\n".encode(), 0)
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
            name = nonfinite_tensor(checkpoint)
            if name is not None:
                return f"non-finite values in {name}"
        return None

    def reset(self) -> None:
        """Forget what was observed (after a rollback)."""
        self.nonfinite.zero_()


def roll_back(state: TrainState, config: TrainConfig, guard: DivergenceGuard, rollbacks: int, reason: str, *,
              last_good: Path | None, fixed_noise: torch.Tensor, run_dir: Path | None) -> int:
    """Restore the last good checkpoint (or the run's start) with lower learning rates; return the rollbacks so far.

    After `config.max_rollbacks` of them the run ends in one sentence saying how to go on. The
    diverged steps' records leave stats.jsonl (rank 0); a `rollback` event takes their place.
    """
    at_step = state.step
    if rollbacks >= config.max_rollbacks:
        lower = state.opt_g.param_groups[0]["lr"] * config.rollback_lr_factor
        advice = (f"resume from its last good checkpoint with a lower learning rate, as in "
                  f"`facegan train --resume {run_dir} --lr {lower:.1e}`" if last_good is not None and run_dir is not None
                  else f"start again with a lower learning rate (--lr {lower:.1e})")
        raise FaceganError(f"training diverged ({reason} at step {at_step}) after {rollbacks} rollback{'' if rollbacks == 1 else 's'} "
                           f"(max-rollbacks {config.max_rollbacks}); {advice}.")
    lowered = [[group["lr"] * config.rollback_lr_factor for group in opt.param_groups] for opt in (state.opt_g, state.opt_d)]
    lr_scale = state.lr_scale * config.rollback_lr_factor  # what the schedule multiplies from now on
    if last_good is not None:
        checkpoint = load_checkpoint(last_good)
    else:  # nothing saved yet: the run's start, rebuilt from its seed
        checkpoint = build_state(config, config.resolution, fixed_noise.device).to_checkpoint(config, fixed_noise)
    restore_state(state, checkpoint)
    state.lr_scale = lr_scale
    for optimizer, rates in zip((state.opt_g, state.opt_d), lowered):
        for group, lr in zip(optimizer.param_groups, rates):
            group["lr"] = lr
    guard.reset()
    rollbacks += 1
    lr_g, lr_d = lowered[0][0], lowered[1][0]
    if run_dir is not None:
        truncate_stats(run_dir / STATS, state.step)
        append_stats(run_dir / STATS, {"event": "rollback", "reason": reason, "from_step": at_step, "to_step": state.step,
                                       "rollback": rollbacks, "lr_g": lr_g, "lr_d": lr_d,
                                       "cpu_s": state.cpu.seconds()})  # not rolled back: the diverged steps' time was spent
    warnings.warn(f"training diverged ({reason} at step {at_step}); rolled back to step {state.step} "
                  f"with learning rates G {lr_g:.2e}, D {lr_d:.2e} (rollback {rollbacks} of at most {config.max_rollbacks}).",
                  FaceganWarning, stacklevel=2)
    return rollbacks
