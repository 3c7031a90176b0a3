"""Faults a long run meets, each survived: kill -9 (also mid-checkpoint), SIGTERM and SIGINT,
damaged checkpoints, full disks, divergence, and a second trainer in the same run directory.

The kill tests start real training processes and kill them; docs/reliability.md lists each
fault with the test that shows it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import STEPS_PER_EPOCH, TINY_ARGS, assert_identical, run_cli, tiny
from PIL import Image

from facegan import plots, viz
from facegan.errors import FaceganError, FaceganWarning, Interrupted
from facegan.train import checkpoint as checkpoint_module
from facegan.train import rundir
from facegan.train import step as step_module
from facegan.train.checkpoint import (
    DamagedCheckpoint,
    load_checkpoint,
    nonfinite_tensor,
    save_checkpoint,
    verify_checkpoint,
)
from facegan.train.guard import DivergenceGuard, run_lock
from facegan.train.loop import train
from facegan.train.rundir import resume_config

# Tiny models train several times faster on one thread of a busy 2-core machine; the child
# processes get one too (OMP_NUM_THREADS), so their steps and ours agree bit for bit.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data32) -> Path:
    """An uninterrupted two-epoch run, to compare interrupted and resumed runs with."""
    return train(tiny(tmp_path_factory.mktemp("straight"), data32, epochs=2), progress=False)


def assert_nothing_corrupt(run: Path) -> None:
    """Every file under its final name in a run directory is complete: checkpoints verify and load,
    pictures decode, the configuration and the stats parse."""
    for path in sorted(run.rglob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue  # hidden temporaries of a killed writer: ignored, and cleaned by the next save
        if path.suffix == ".pt" and path.parent.name == "checkpoints":
            assert verify_checkpoint(path), path
            load_checkpoint(path)
        elif path.suffix == ".png":
            Image.open(path).load()
        elif path.name == "config.json":
            json.loads(path.read_text())
    plots.read_stats(run / "stats.jsonl")


# ----------------------------------------------------------------------------- kill -9

# A child training process whose Nth write of latest.pt stops at a chosen moment and waits to be
# killed: half-way through writing the temporary file, or between renaming the hash file and
# renaming the checkpoint into place.
CHILD = r"""
import os, sys, time
import facegan.train.checkpoint as checkpoint
from facegan.cli import main

moment, at = os.environ["HANG_MOMENT"], int(os.environ["HANG_AT"])
saves = {"n": 0}

def hang():
    print("HANGING", flush=True)
    time.sleep(600)

if moment == "mid-write":
    real_save = checkpoint.torch.save
    def save(obj, stream):
        if ".latest.pt.tmp-" in getattr(stream, "name", ""):
            saves["n"] += 1
            if saves["n"] == at:
                import io
                buffer = io.BytesIO()
                real_save(obj, buffer)
                stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                stream.flush()
                hang()
        real_save(obj, stream)
    checkpoint.torch.save = save
else:  # between the two renames
    real_replace = os.replace
    def replace(source, target):
        if str(target).endswith("latest.pt"):
            saves["n"] += 1
            if saves["n"] == at:
                hang()
        real_replace(source, target)
    os.replace = replace

sys.exit(main(sys.argv[1:]))
"""


def child_env(**extra: str) -> dict:
    """The environment of a child trainer: this one's (PYTHONPATH, the session's FACEGAN_CACHE), one thread."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"the child exited ({process.returncode}) before printing {text!r}: {process.stderr.read()}")
    raise AssertionError(f"the child did not print {text!r} within {timeout} s")


@pytest.mark.parametrize("moment", ["mid-write", "between-renames"])
def test_kill_9_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tmp_path, capsys, data32, straight, moment):
    runs = tmp_path / "runs"
    argv = ["train", "--data", str(data32), "--epochs", "2", "--runs-dir", str(runs), "--checkpoint-steps", "1", *TINY_ARGS]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *argv], env=child_env(HANG_MOMENT=moment, HANG_AT="4"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = runs / "00001-dcgan"
    try:
        wait_for_line(child, "HANGING")  # the 4th write of latest.pt (step 4) has begun
        if moment == "mid-write":
            # While it trains, a second trainer of the same run refuses, naming the first.
            code, _, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
            assert code == 1 and f"is being trained by process {child.pid}" in err and err.count("\n") == 1
    finally:
        child.kill()  # SIGKILL: no handler, no cleanup
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [f".latest.pt.tmp-{child.pid}"]
    # latest.pt is the step-3 checkpoint: complete, and verified (by the hash file's "previous"
    # entry when the kill fell between the two renames).
    assert verify_checkpoint(run / "checkpoints" / "latest.pt")
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 3
    assert_nothing_corrupt(run)

    # The lock died with its process: resume at once, and finish exactly as if never killed.
    code, _, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 0, err
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # cleaned by the next save
    assert_identical(straight, run)
    assert_nothing_corrupt(run)


# A fork server: imports facegan once (seconds), then forks one trainer per line of stdin
# ({"argv", "log", "slow_write"}) in milliseconds, and reports its pid and, once it has ended, its
# exit code (-9: killed). Each trainer says on its log at which step training resumed; with
# slow_write, its first checkpoint write says so and stops half-way for a while, as on a slow
# disk, so that a kill lands in it.
FORK_SERVER = r"""
import io, json, os, sys, time, traceback
import torch
from matplotlib.figure import Figure
import facegan.plots, facegan.sample
import facegan.train.checkpoint as checkpoint
import facegan.train.loop
import facegan.train.step as step_module
from facegan.cli import main

# What a first run loads lazily, loaded here once: torch._dynamo (by Adam), matplotlib's fonts.
torch.optim.Adam([torch.zeros(1, requires_grad=True)])
figure = Figure()
figure.add_subplot().set_title("warm")
figure.savefig(io.BytesIO(), format="png")

def trainer(argv, log, slow_write):
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    real_step, real_save = step_module.update_generator, checkpoint.torch.save
    def step(state, *args, **kwargs):
        if not step.__dict__.setdefault("said", False):
            step.said = True
            print(f"resumed at step {state.step}", flush=True)
        return real_step(state, *args, **kwargs)
    def save(obj, stream):
        if not slow_write or save.__dict__.setdefault("done", False):
            return real_save(obj, stream)
        save.done = True
        print(f"writing {os.path.basename(getattr(stream, 'name', ''))}", flush=True)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        stream.write(data[: len(data) // 2])
        stream.flush()
        time.sleep(2)
        stream.write(data[len(data) // 2 :])
    step_module.update_generator, checkpoint.torch.save = step, save
    code = 1
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        trainer(**json.loads(line))
    print(json.dumps({"pid": pid}), flush=True)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}), flush=True)
"""

# Where each kill of one run falls, in order: (what it waits for, then how many seconds more).
# ("step", n): stats.jsonl has step n (one line per step); ("write", 0): the trainer's first
# checkpoint write is half-way (and waits there); ("start", 0): the trainer was just started.
KILLS = [
    ("step", 2, 0.0),  # a fresh run, in or just before step 2's checkpoint write
    ("start", 0, 0.05),  # a resume starting up: the lock, loading the checkpoint, cutting stats.jsonl
    ("write", 0, 0.0),  # inside a checkpoint write, half of it on disk
    ("step", 5, 0.02),  # mid epoch 1: a step or its write
    ("step", 6, 0.15),  # the end of epoch 1: the grid, the plots, epoch-0001.pt
    ("write", 0, 0.0),  # inside a checkpoint write again
    ("step", 9, 0.0),  # mid epoch 2
    ("step", 10, 0.03),  # near the end, but not so near that the run could finish first
]


def read(path: Path) -> str:
    """What a file written by a running trainer holds so far ("" before it is created)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def logged_steps(stats: Path) -> int:
    """Steps in stats.jsonl so far (one line each, with log_every 1)."""
    return read(stats).count("\n")


def wait_until(condition, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the trainer did not reach {what} within {timeout} s: {read(log)}")
        time.sleep(0.002)


def test_kill_9_at_any_moment_leaves_nothing_corrupt(tmp_path, capsys, data32, straight, monkeypatch):
    """One run, killed eight times at moments spread over its 12 steps (start-up, steps, checkpoint
    writes, the end of an epoch), each time resumed from where it stood; then finished."""
    runs = tmp_path / "runs"
    run, stats = runs / "00001-dcgan", runs / "00001-dcgan" / "stats.jsonl"
    latest = run / "checkpoints" / "latest.pt"
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], env=child_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    step = 0  # latest.pt's step: where the next trainer resumes
    try:
        for i, (trigger, n, then) in enumerate(KILLS):
            argv = (["train", "--resume", str(run), "--quiet"] if i else
                    ["train", "--data", str(data32), "--epochs", "2", "--runs-dir", str(runs), "--checkpoint-steps", "1", *TINY_ARGS])
            log = tmp_path / f"trainer-{i}.log"
            server.stdin.write(json.dumps({"argv": argv, "log": str(log), "slow_write": trigger == "write"}) + "\n")
            server.stdin.flush()
            pid = json.loads(server.stdout.readline())["pid"]
            if trigger == "step":
                wait_until(lambda n=n: logged_steps(stats) >= n and latest.exists(), f"step {n}", log)
            elif trigger == "write":
                wait_until(lambda log=log: "writing " in read(log), "a checkpoint write", log)
            time.sleep(then)
            try:
                os.kill(pid, signal.SIGKILL)  # no handler, no cleanup
            except ProcessLookupError:
                pass  # it ended by itself: its exit code below says how
            returncode = json.loads(server.stdout.readline())["returncode"]
            said = log.read_text()
            assert returncode == -signal.SIGKILL, f"kill {i} ({trigger} {n}): the trainer exited with {returncode}: {said}"
            # Quiet, it says only where it resumed (from latest.pt: no warning that it was damaged
            # and an older checkpoint used instead) and where its slowed write went.
            assert all(line == f"resumed at step {step}" or line.startswith("writing ") for line in said.splitlines()), \
                f"kill {i}: the trainer should have resumed at step {step}: {said}"
            if trigger == "write":  # killed half-way through: latest.pt is still the one it resumed from
                assert load_checkpoint(latest)["step"] == step
            assert_nothing_corrupt(run)
            step, before = load_checkpoint(latest)["step"], step
            assert step >= before
    finally:
        server.kill()
        server.communicate()

    # The last resume, here, continues from the last complete checkpoint and ends as if never killed.
    first_steps = []
    real_step = step_module.update_generator
    monkeypatch.setattr(step_module, "update_generator", lambda state, *a, **k: (first_steps.append(state.step), real_step(state, *a, **k))[1])
    code, _, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 0 and err == "", err
    assert first_steps[:1] in ([step], [])  # none: killed in the last epoch's end, after the last step
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # cleaned by the next save
    assert_identical(straight, run)
    assert_nothing_corrupt(run)
    # Each step logged once, as the uninterrupted run logged it.
    strip = lambda path: [{k: v for k, v in r.items() if k not in ("images_per_s", "cpu_s")} for r in plots.read_stats(path)]
    assert strip(stats) == strip(straight / "stats.jsonl")


# ----------------------------------------------------------------------------- SIGTERM, SIGINT


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_save_a_checkpoint_and_say_how_to_resume(tmp_path, capsys, data32, signum, exit_code):
    runs = tmp_path / "runs"
    argv = ["-m", "facegan.cli", "train", "--data", str(data32), "--epochs", "1000", "--runs-dir", str(runs), *TINY_ARGS]
    child = subprocess.Popen([sys.executable, *argv], env=child_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    stats = runs / "00001-dcgan" / "stats.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (stats.exists() and stats.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    run = runs / "00001-dcgan"
    name = signal.Signals(signum).name
    assert child.returncode == exit_code, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"facegan: stopped by {name} at step ")
    assert f"`facegan train --resume {run}`" in err
    step = int(err.split(" at step ")[1].split()[0])
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert checkpoint["step"] == step and step >= 2
    assert_nothing_corrupt(run)
    # It continues from there.
    epochs = checkpoint["epoch"] + 1
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", str(epochs), "--quiet"], capsys)
    assert code == 0, err
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == epochs * STEPS_PER_EPOCH


def test_a_signal_stops_at_the_step_boundary_and_a_second_one_cannot_break_the_write(tmp_path, data32, monkeypatch):
    original_step, original_save = step_module.update_generator, checkpoint_module.torch.save
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def step(state, *args, **kwargs):
        out = original_step(state, *args, **kwargs)
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a preemption, mid-epoch
        return out

    def save(obj, stream):
        if ".tmp-" in getattr(stream, "name", ""):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the checkpoint is written
        original_save(obj, stream)

    monkeypatch.setattr(step_module, "update_generator", step)
    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 3 .*`facegan train --resume") as stopped:
        train(tiny(tmp_path, data32, epochs=2), progress=False)
    assert stopped.value.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers restored
    monkeypatch.undo()
    run = tmp_path / "runs" / "00001-dcgan"
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 3
    assert train(resume_config(run, {}), resume=run, progress=False) == run


# ----------------------------------------------------------------------------- damaged checkpoints


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(data[: len(data) // 3])
    else:  # one flipped byte in the middle, same size
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_and_resume_falls_back_to_the_previous_good_one(tmp_path, capsys, data32, straight):
    run = train(tiny(tmp_path, data32, epochs=2), progress=False)
    checkpoints = run / "checkpoints"
    damage(checkpoints / "latest.pt", "flip")
    damage(checkpoints / "epoch-0002.pt", "truncate")
    with pytest.raises(DamagedCheckpoint, match="latest.pt is damaged .*SHA-256 does not match"):
        load_checkpoint(checkpoints / "latest.pt")
    code, _, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 0, err
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(line.startswith("facegan: warning: ") for line in warnings)
    assert "latest.pt is damaged" in warnings[0] and "epoch-0002.pt is damaged" in warnings[1]
    # Epoch 2 was trained again from epoch-0001.pt: the same result as never damaged.
    assert_identical(straight, run)
    assert [r["step"] for r in plots.read_stats(run / "stats.jsonl")] == list(range(1, 13))


def test_when_every_checkpoint_is_damaged_resume_says_so(tmp_path, capsys, data32):
    run = train(tiny(tmp_path, data32, epochs=1), progress=False)
    for path in (run / "checkpoints").glob("*.pt"):
        damage(path, "truncate")
    code, _, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 1 and err.splitlines()[-1].startswith("facegan: error: all 2 checkpoints of")


def test_a_checkpoint_without_a_hash_file_is_used_unverified_with_a_warning(tmp_path, capsys, data32):
    run = train(tiny(tmp_path, data32, epochs=1), progress=False)
    for path in (run / "checkpoints").glob("*.sha256"):
        path.unlink()  # as a checkpoint written before hash files
    assert verify_checkpoint(run / "checkpoints" / "latest.pt") is False
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "2", "--quiet"], capsys)
    assert code == 0 and "has no latest.pt.sha256 (written by an older facegan); using it unverified" in err
    assert verify_checkpoint(run / "checkpoints" / "latest.pt")  # rewritten with its hash


def test_stale_temporaries_are_ignored_and_cleaned(tmp_path):
    path = tmp_path / "checkpoints" / "latest.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = path.with_name(f".latest.pt.tmp-{int(dead.stdout)}")
    stale.write_bytes(b"half a checkpoint")
    assert load_checkpoint(path)["step"] == 1
    save_checkpoint({"step": 2, "weights": torch.ones(3)}, path)
    assert not stale.exists() and load_checkpoint(path)["step"] == 2


# ----------------------------------------------------------------------------- full disk


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("what", ["checkpoint", "samples", "plots", "stats"])
def test_a_full_disk_is_one_sentence_and_the_previous_checkpoint_survives(tmp_path, capsys, data32, monkeypatch, what):
    runs = tmp_path / "runs"
    assert run_cli(["train", "--data", str(data32), "--epochs", "1", "--runs-dir", str(runs), *TINY_ARGS], capsys)[0] == 0
    run = runs / "00001-dcgan"
    if what == "checkpoint":
        def full(obj, stream):
            stream.write(b"partial")
            no_space()
        monkeypatch.setattr(checkpoint_module.torch, "save", full)
    elif what == "samples":
        monkeypatch.setattr(viz, "save_png", no_space)
    elif what == "plots":
        monkeypatch.setattr(plots, "plot_losses", no_space)
    else:
        real_open = open
        monkeypatch.setattr(rundir, "open", lambda path, *a, **k: no_space() if Path(path).name == "stats.jsonl" else real_open(path, *a, **k),
                            raising=False)
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "2", "--quiet"], capsys)
    monkeypatch.undo()
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("facegan: error: could not write") and "No space left on device" in err
    assert "free some disk space" in err
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert checkpoint["step"] == STEPS_PER_EPOCH and verify_checkpoint(run / "checkpoints" / "latest.pt")
    assert_nothing_corrupt(run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- divergence


def poison_at(monkeypatch, steps: set[int] | None, *, weights: bool = True, loss: bool = True, once: bool = True) -> list[int]:
    """Make the G update diverge at `steps` (None: from the first of them on, always): NaN weights and/or a NaN loss."""
    original, hits = step_module.update_generator, []

    def step(state, *args, **kwargs):
        out = original(state, *args, **kwargs)
        if state.step in steps and not (once and state.step in hits):
            hits.append(state.step)
            if weights:
                with torch.no_grad():
                    next(state.generator.parameters()).fill_(float("nan"))
            if loss:
                out = {**out, "loss_g": torch.tensor(float("nan"))}
        return out

    monkeypatch.setattr(step_module, "update_generator", step)
    return hits


def test_a_nan_rolls_back_to_the_last_good_checkpoint_with_lower_learning_rates(tmp_path, data32, monkeypatch):
    hits = poison_at(monkeypatch, {8})  # in epoch 2; the last good checkpoint is epoch 1's (step 6)
    with pytest.warns(FaceganWarning, match=r"training diverged \(a non-finite loss at step 8\); rolled back to step 6"):
        run = train(tiny(tmp_path, data32, epochs=2), progress=False)
    assert hits == [8]
    records = plots.read_stats(run / "stats.jsonl")
    events = [r for r in records if r.get("event") == "rollback"]
    assert [r.pop("cpu_s") > 0 for r in events] == [True]  # the CPU time spent, diverged steps included
    assert events == [{"event": "rollback", "reason": "a non-finite loss", "from_step": 8, "to_step": 6, "rollback": 1,
                       "lr_g": 1e-4, "lr_d": 1e-4}]
    steps = [r["step"] for r in records if "step" in r]
    assert steps == list(range(1, 13))  # the diverged steps' records were dropped, then logged again
    assert all(r["lr_g"] == 1e-4 for r in records if r.get("step", 0) > 6)
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert checkpoint["step"] == 12 and checkpoint["opt_g"]["param_groups"][0]["lr"] == 1e-4
    assert nonfinite_tensor(checkpoint) is None
    # A resume keeps the lowered rate; a new --lr replaces it.
    resumed = train(resume_config(run, {"epochs": 3}), resume=run, progress=False)
    assert load_checkpoint(resumed / "checkpoints" / "latest.pt")["opt_g"]["param_groups"][0]["lr"] == 1e-4
    train(resume_config(run, {"epochs": 4, "lr_g": 3e-5}), resume=run, progress=False)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["opt_g"]["param_groups"][0]["lr"] == 3e-5


def test_before_any_checkpoint_a_nan_rolls_back_to_the_start(tmp_path, data32, monkeypatch):
    poison_at(monkeypatch, {2})
    run = train(tiny(tmp_path, data32, epochs=1), progress=False)
    event = next(r for r in plots.read_stats(run / "stats.jsonl") if r.get("event"))
    assert (event["from_step"], event["to_step"]) == (2, 0)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == STEPS_PER_EPOCH


def test_divergence_that_persists_stops_after_max_rollbacks_and_never_saves_nan(tmp_path, data32, monkeypatch):
    poison_at(monkeypatch, set(range(8, 100)), once=False)
    config = tiny(tmp_path, data32, epochs=3, max_rollbacks=2, checkpoint_every_steps=1)
    with pytest.raises(FaceganError, match=r"training diverged \(a non-finite loss at step 8\) after 2 rollbacks "
                                           r"\(max-rollbacks 2\); resume .* --lr 2.5e-05"):
        train(config, progress=False)
    run = tmp_path / "runs" / "00001-dcgan"
    assert len([r for r in plots.read_stats(run / "stats.jsonl") if r.get("event") == "rollback"]) == 2
    for path in (run / "checkpoints").glob("*.pt"):
        assert nonfinite_tensor(load_checkpoint(path)) is None
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 7


def test_nan_weights_with_a_finite_loss_are_caught_before_saving(tmp_path, data32, monkeypatch):
    # A NaN in BatchNorm's running statistics changes no training loss but would ruin every sample.
    original = step_module.update_generator

    def step(state, *args, **kwargs):
        out = original(state, *args, **kwargs)
        if state.step == 5 and not getattr(step, "done", False):
            step.done = True
            buffer = next(b for name, b in state.generator.named_buffers() if name.endswith("running_var"))
            buffer.fill_(float("nan"))
        return out

    monkeypatch.setattr(step_module, "update_generator", step)
    run = train(tiny(tmp_path, data32, epochs=1, checkpoint_every_steps=3), progress=False)
    event = next(r for r in plots.read_stats(run / "stats.jsonl") if r.get("event"))
    assert event["reason"].startswith("non-finite values in generator.") and event["reason"].endswith("running_var")
    assert (event["from_step"], event["to_step"]) == (6, 3)
    assert nonfinite_tensor(load_checkpoint(run / "checkpoints" / "latest.pt")) is None


def test_a_huge_learning_rate_diverges_for_real_and_stops_in_one_sentence(tmp_path, capsys, data32):
    argv = ["train", "--data", str(data32), "--epochs", "2", "--runs-dir", str(tmp_path / "runs"), "--lr", "1e30",
            "--max-rollbacks", "1", *TINY_ARGS]
    code, _, err = run_cli(argv, capsys)
    lines = err.splitlines()
    assert code == 1 and "Traceback" not in err
    assert lines[0].startswith("facegan: warning: training diverged") and "rollback 1 of at most 1" in lines[0]
    assert lines[-1].startswith("facegan: error: training diverged") and "after 1 rollback " in lines[-1]


def test_save_checkpoint_refuses_nan_and_the_guard_reads_the_flag_only_when_asked():
    with pytest.raises(FaceganError, match=r"refusing to save .*generator.w holds NaN"):
        save_checkpoint({"generator": {"w": torch.tensor([1.0, float("inf")])}}, Path("/nonexistent/never.pt"))
    guard = DivergenceGuard(torch.device("cpu"))
    guard.every_step = False  # as on a GPU: no host-device sync until a log step or a save
    guard.observe(torch.tensor(1.0), torch.tensor(float("nan")))
    assert guard.check() is None
    assert guard.check(read=True) == "a non-finite loss"
    guard.reset()
    assert guard.check(read=True) is None


# ----------------------------------------------------------------------------- the lock


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path, capsys, data32):
    run = train(tiny(tmp_path, data32, epochs=1), progress=False)
    with run_lock(run):  # as a first trainer holds it (another process: see the kill -9 test)
        code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "2", "--quiet"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"is being trained by process {os.getpid()}" in err and "train.lock" in err
    assert run_cli(["train", "--resume", str(run), "--epochs", "2", "--quiet"], capsys)[0] == 0  # released
