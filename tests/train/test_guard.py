"""facegan.train.guard: one trainer per run, signals that only ask to stop, divergence noticed, full disks as one sentence."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
import torch

from facegan.errors import FaceganError
from facegan.train.guard import (
    LOCK_FILE,
    DivergenceGuard,
    StopRequest,
    run_lock,
    stop_on_signals,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and SIGTERM are POSIX")

HOLDER = f"process {os.getpid()} on {socket.gethostname()}"


def test_the_run_lock_names_its_holder_and_refuses_a_second(tmp_path):
    (tmp_path / LOCK_FILE).write_text("x" * 300)  # a longer, older holder's line must not survive
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == HOLDER + "\n"
        refused = rf"^{tmp_path} is being trained by {HOLDER} \(it holds {tmp_path / LOCK_FILE}\); wait for it to finish or stop it, then resume\.$"
        with pytest.raises(FaceganError, match=refused), run_lock(tmp_path):
            pass
        assert (tmp_path / LOCK_FILE).read_text() == HOLDER + "\n"  # the refused one changed nothing
    with run_lock(tmp_path):  # released on leaving, and the file stays
        pass
    assert (tmp_path / LOCK_FILE).exists()


def test_the_run_lock_is_refused_while_another_process_holds_it_and_free_once_it_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", (f"import fcntl, os, time\nfd = os.open({str(tmp_path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
                                "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'process 1 on elsewhere')\n"
                                "print('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FaceganError, match=r"is being trained by process 1 on elsewhere \(it holds"), run_lock(tmp_path):
            pass
    finally:
        holder.kill()  # as kill -9: the kernel releases the lock
        holder.wait()
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == HOLDER + "\n"


def _holder(tmp_path, line: str, seconds: float) -> subprocess.Popen:
    """Another process holding tmp_path's lock for `seconds` under the holder's `line`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (f"import fcntl, os, time\nfd = os.open({str(tmp_path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
                                f"fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, {line.encode()!r})\n"
                                f"print('held', flush=True)\ntime.sleep({seconds})\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_restarted_torchrun_attempt_waits_for_its_dead_predecessors_lock_but_never_for_another_job(tmp_path):
    holder = _holder(tmp_path, "process 1 on elsewhere (torchrun job J)", 1.0)  # exits (as if killed) after 1 s
    try:
        with pytest.raises(FaceganError, match=r"is being trained by process 1 on elsewhere \(torchrun job J\)"), \
                run_lock(tmp_path, job="K", wait_s=30):  # another job's lock: refused at once
            pass
        with run_lock(tmp_path, job="J", wait_s=30):  # the same job's: waited for until its holder is gone
            assert holder.poll() is not None
            assert (tmp_path / LOCK_FILE).read_text() == f"{HOLDER} (torchrun job J)\n"
    finally:
        holder.kill()
        holder.wait()
    holder = _holder(tmp_path, "process 1 on elsewhere (torchrun job J)", 60)
    try:  # and only for wait_s: a live holder keeps its run
        with pytest.raises(FaceganError, match="is being trained by"), run_lock(tmp_path, job="J", wait_s=0.5):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_signals_inside_only_set_the_request_and_the_first_one_wins():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals() as request:
        assert not request and request.name == ""
        os.kill(os.getpid(), signal.SIGTERM)
        assert request and request.signum == signal.SIGTERM and request.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while saving changes nothing
        assert request.name == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with stop_on_signals() as request:
        os.kill(os.getpid(), signal.SIGINT)
        assert request.name == "SIGINT"


def test_outside_the_main_thread_no_handler_is_installed():
    seen = {}

    def worker():
        with stop_on_signals() as request:
            seen["request"] = request
            seen["handler"] = signal.getsignal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert isinstance(seen["request"], StopRequest) and not seen["request"] and seen["handler"] is before


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_the_guard_flags_a_nonfinite_loss_until_reset(bad):
    guard = DivergenceGuard(torch.device("cpu"))
    assert guard.every_step and guard.check() is None
    guard.observe(torch.tensor(0.7), torch.tensor(1.2))
    assert guard.check() is None
    guard.observe(torch.tensor(0.7), torch.tensor([1.0, bad]))  # one bad value among several losses
    guard.observe(torch.tensor(0.5))  # a later good step does not clear it
    assert guard.check() == "a non-finite loss" and guard.check(read=True) == "a non-finite loss"
    guard.reset()
    assert guard.check() is None


def test_the_guard_names_a_nonfinite_weight_of_a_checkpoint_about_to_be_saved():
    guard = DivergenceGuard(torch.device("cpu"))
    good = {"generator": {"w": torch.ones(3)}, "step": 4}
    assert guard.check(checkpoint=good) is None
    bad = {"generator": {"w": torch.ones(3)}, "discriminator": {"b": torch.tensor([0.0, float("inf")])}}
    assert guard.check(checkpoint=bad) == "non-finite values in discriminator.b"
    guard.observe(torch.tensor(float("nan")))
    assert guard.check(checkpoint=bad) == "a non-finite loss"  # the loss is reported first


def test_on_an_accelerator_the_flag_is_read_only_when_asked():
    assert not DivergenceGuard(torch.device("meta")).every_step  # any device but the CPU
    guard = DivergenceGuard(torch.device("cpu"))
    guard.every_step = False  # as on a GPU, where reading the flag would synchronise every step
    guard.observe(torch.tensor(float("nan")))
    assert guard.check() is None  # not read: no synchronisation between log steps
    assert guard.check(read=True) == "a non-finite loss"
