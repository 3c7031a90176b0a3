"""torchrun with real processes on the CPU (gloo): the same run as one process, exact resumes, agreed stops, faults.

Each launch is `python -m torch.distributed.run --standalone` (a free port of its own) with two
ranks of one thread each, on tiny models and data32 (96 images, a global batch of 16: 8 per rank).
Starting processes is most of what these tests cost, so launches are shared: one 2-epoch run serves
the resume tests, and one worker launch checks both the models and fid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARGS, assert_identical

SRC = Path(__file__).resolve().parents[2] / "src"
WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS_PER_EPOCH = 6  # 96 images / a global batch of 16, at any world size

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "FACEGAN_DIST_TIMEOUT": "30"}


def _launch(ranks: int, *args: str, cwd: Path, script: Path | None = None,
            torchrun: tuple[str, ...] = ()) -> subprocess.Popen:
    """`facegan ARGS` on `ranks` processes: torchrun (with `torchrun`'s options) for 2 or more, a plain
    `python -m facegan` for 1."""
    target = [str(script)] if script is not None else ["-m", "facegan"]
    launcher = (["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *torchrun]
                if ranks > 1 else [])
    command = [sys.executable, *launcher, *target, *args]
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(ranks: int, *args: str, cwd: Path, script: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    process = _launch(ranks, *args, cwd=cwd, script=script)
    out, err = process.communicate(timeout=240)
    if ok:
        assert process.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _train(ranks: int, data: Path, runs: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    runs.parent.mkdir(parents=True, exist_ok=True)
    return _run(ranks, "train", *TINY_ARGS, "--data", str(data), "--runs-dir", str(runs), *args, cwd=runs.parent, ok=ok)


def _only_run(runs: Path) -> Path:
    (run,) = list(runs.iterdir())  # rank 0 made one run directory; no other rank made its own
    return run


def _latest(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "latest.pt", weights_only=True)


def _workers(launcher: subprocess.Popen, attempt: int = 0) -> dict[int, int]:
    """RANK -> pid of the processes torchrun started (its children) for `attempt` (its restart count), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = dict(item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item)
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher.pid and b"RANK" in environ and int(environ.get(b"TORCHELASTIC_RESTART_COUNT", b"0")) == attempt:
            found[int(environ[b"RANK"])] = int(entry.name)
    return found


def _kill(launcher: subprocess.Popen, rank: int, attempt: int = 0) -> float:
    """kill -9 one rank of `attempt` (waiting for torchrun to have started it); the time it was killed."""
    _wait_for(lambda: rank in _workers(launcher, attempt), launcher)
    os.kill(_workers(launcher, attempt)[rank], signal.SIGKILL)
    return time.monotonic()


def _rank_stderr(logs: Path, attempt: int, rank: int) -> str:
    """What one rank of one attempt wrote to stderr (torchrun --log-dir LOGS --redirects 2)."""
    (path,) = logs.glob(f"*/attempt_{attempt}/{rank}/stderr.log")
    return path.read_text()


def _saved_after(path: Path, before: int | None) -> Callable[[], bool]:
    """A condition: `path` exists and was replaced since its st_mtime_ns was `before` (None: not there yet)."""
    def saved() -> bool:
        try:
            return path.stat().st_mtime_ns != before
        except FileNotFoundError:
            return False
    return saved


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _steps(run: Path) -> list[int]:
    """The steps of stats.jsonl's training records, in order (but a last line cut short by a kill -9)."""
    lines = [line for line in (run / "stats.jsonl").read_text().splitlines() if '"kimg"' in line]
    if lines and not lines[-1].endswith("}"):
        lines.pop()
    return [json.loads(line)["step"] for line in lines]


def _one_sentence(stderr: str) -> str:
    """A survivor's stderr: no traceback, and facegan's one sentence (returned) saying it lost contact."""
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = [line for line in stderr.splitlines() if line.startswith("facegan: error:")]
    assert "lost contact with the other processes" in line, line
    return line


def _wait_for(condition, launcher: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out waiting for training to start"
        time.sleep(0.1)


# The run every resume test starts from: 2 epochs on 2 ranks, latest.pt refreshed every 2 steps.
STRAIGHT = ("--epochs", "2", "--checkpoint-steps", "2")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data32) -> Path:
    """A run trained for 2 epochs on 2 ranks without a stop (read it; copy it before resuming)."""
    runs = tmp_path_factory.mktemp("straight") / "runs"
    _train(2, data32, runs, *STRAIGHT)
    return _only_run(runs)


def _at_epoch_one(run: Path, runs: Path) -> Path:
    """A copy of `run` as a run stopped after its first epoch would stand: epoch-0001.pt its newest checkpoint."""
    copy = runs / run.name
    shutil.copytree(run, copy)
    for name in ("latest.pt", "epoch-0002.pt"):
        for path in (copy / "checkpoints").glob(f"{name}*"):  # the checkpoint and its hash file
            path.unlink()
    return copy


@pytest.fixture(scope="module")
def two_to_one(tmp_path_factory, data32, straight) -> tuple[Path, str]:
    """`straight` stopped after its first epoch and resumed on 1 process to its end, and that launch's stderr
    (copy the run before resuming it again)."""
    runs = tmp_path_factory.mktemp("two-to-one") / "runs"
    run = _at_epoch_one(straight, runs)
    return run, _train(1, data32, runs, "--resume", str(run), "--epochs", "2").stderr


# ----------------------------------------------------------------------------- the same run as one process


def test_two_ranks_of_16_are_one_process_of_32_with_sync_bn_and_fid_is_the_same(tmp_path, data32):
    specs = ["dcgan:dcgan:sync_bn=true", "wgan-gp:wgan-gp:sync_bn=true",
             "r1:dcgan:sync_bn=true,d_norm=layer,r1_gamma=1.0,r1_every=2", "dcgan-local-bn:dcgan",
             "aux:dcgan:sync_bn=true,condition=Smiling+Male,aux_weight=1.0", f"fid:{data32}"]
    for ranks in (1, 2):
        (tmp_path / str(ranks)).mkdir()
        _run(ranks, str(tmp_path / str(ranks)), *specs, cwd=tmp_path, script=WORKER)
    for name in ("dcgan", "wgan-gp", "r1", "dcgan-local-bn", "aux"):
        alone, shared = (torch.load(tmp_path / str(ranks) / f"{name}.pt") for ranks in (1, 2))
        worst = max((alone[part][key].float() - shared[part][key].float()).abs().max().item()
                    for part in ("generator", "discriminator") for key in alone[part])
        if name == "dcgan-local-bn":
            # BatchNorm over each rank's 8 + 8 images is another function than over 32: the weights part
            # (by much more than rounding), but the losses stay close.
            assert worst > 1e-4
            for a, b in zip(alone["losses"], shared["losses"]):
                assert b["loss_d"] == pytest.approx(a["loss_d"], rel=0.1) and b["loss_g"] == pytest.approx(a["loss_g"], rel=0.1)
        else:
            assert worst < 1e-5, f"{name}: the weights differ by up to {worst}"
            for a, b in zip(alone["losses"], shared["losses"]):
                assert b == pytest.approx(a, rel=1e-4, abs=1e-5), name

    # Distributed fid of a tiny G (ddp_fid_worker.py) equals one process's.
    alone, shared = (json.loads((tmp_path / str(ranks) / "fid.json").read_text()) for ranks in (1, 2))
    assert np.array_equal(np.array(alone["fake"]), np.array(shared["fake"]))  # the same images, in the same order
    assert shared["values"] == alone["values"] and alone["values"]["fid64"] > 0
    # Rank 0 measured the 64 real images (one chunk of 1,024 rows: not split) and, twice, batches 0, 2, 4, 6 of
    # the fakes in batches of 10 (34 images); alone, every image.
    assert (alone["measured"], shared["measured"]) == (3 * 64, 64 + 2 * 34)


# ----------------------------------------------------------------------------- resume


def test_resume_at_two_ranks_is_bit_identical_and_only_rank_zero_writes(tmp_path, data32, straight):
    resumed = tmp_path / "resumed" / "runs"
    run = _at_epoch_one(straight, resumed)
    result = _train(2, data32, resumed, "--resume", str(run), *STRAIGHT)
    assert "re-seeded" not in result.stderr
    assert_identical(straight, run)
    assert sorted(p.name for p in straight.parents[1].iterdir()) == ["runs"]  # nothing beside the one run
    checkpoint = _latest(straight)
    assert checkpoint["step"] == 2 * STEPS_PER_EPOCH and len(checkpoint["noise_rng_ranks"]) == 2
    assert not torch.equal(*checkpoint["noise_rng_ranks"])  # each rank its own noise
    records = [line for line in (straight / "stats.jsonl").read_text().splitlines() if '"kimg"' in line]
    assert len(records) == 2 * STEPS_PER_EPOCH  # one writer: one record per step, not one per rank
    assert '"kimg": 0.192' in records[-1]  # 12 steps x the global batch of 16


def test_resume_from_two_ranks_to_one_continues_the_schedule_and_says_it_reseeds(two_to_one):
    run, stderr = two_to_one
    assert "re-seeded" in stderr
    checkpoint = _latest(run)
    assert checkpoint["step"] == 2 * STEPS_PER_EPOCH and len(checkpoint["noise_rng_ranks"]) == 1
    assert _steps(run) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    # From one to two again: test_resume_from_one_to_two_then_sigterm_restart_and_kill_9, which shares the launch.


def test_a_batch_the_ranks_cannot_share_is_refused_in_one_sentence():
    from facegan import distributed
    from facegan.errors import FaceganError

    assert distributed.per_rank_batch(128, 8) == 16
    with pytest.raises(FaceganError, match=r"^--batch-size 15 is the global batch and must divide evenly among the 2 "
                                           r"processes; use a multiple of 2, such as 14\.$"):
        distributed.per_rank_batch(15, 2)


# ----------------------------------------------------------------------------- stops and faults


def test_a_new_run_restarted_by_torchrun_after_kill_9_resumes_its_checkpoint_and_finishes(tmp_path, data32, straight):
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    launcher = _launch(2, "train", *TINY_ARGS, "--data", str(data32), "--runs-dir", str(runs), *STRAIGHT, cwd=tmp_path,
                       torchrun=("--max-restarts", "1", "--log-dir", str(logs), "--redirects", "2"))
    _wait_for(lambda: runs.exists() and any(runs.glob("*/checkpoints/latest.pt")), launcher)
    config = (_only_run(runs) / "config.json").read_text()
    _kill(launcher, rank=1)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err[-3000:]
    run = _only_run(runs)  # the restarted processes made no run of their own: they resumed the job's
    assert list(logs.glob("*/attempt_1/0")), "torchrun did not restart the processes"
    line = _one_sentence(_rank_stderr(logs, 0, 0))  # rank 0 of attempt 0, whose peer was killed
    assert "rank 0 lost contact" in line and f"{run.name}/checkpoints/latest.pt" in line and "by themselves" in line
    # Resumed from the checkpoint, not started again: each step logged once, the config as it was, and the whole
    # run bit for bit the one that never stopped.
    assert _steps(run) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert (run / "config.json").read_text() == config
    assert_identical(straight, run)


def test_resume_from_one_to_two_then_sigterm_restart_and_kill_9(tmp_path, two_to_one):
    """One launch, four faults' worth: `torchrun --max-restarts 1 ... train --resume RUN` of a run last written by
    1 process; a SIGTERM to one rank stops both at one step with a checkpoint (exit 143, which torchrun counts as
    a failure); the restarted processes resume that checkpoint; a kill -9 then, with no restarts left, ends the
    job within a minute, the survivor in one sentence."""
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    run = runs / two_to_one[0].name
    shutil.copytree(two_to_one[0], run)
    latest = run / "checkpoints" / "latest.pt"
    written_by_one = _mtime(latest)
    launcher = _launch(2, "train", *TINY_ARGS, "--resume", str(run), "--epochs", "1000", cwd=tmp_path,
                       torchrun=("--max-restarts", "1", "--log-dir", str(logs), "--redirects", "2"))
    _wait_for(lambda: len(_steps(run)) > 2 * STEPS_PER_EPOCH + 1, launcher)  # training on 2 ranks
    os.kill(_workers(launcher)[1], signal.SIGTERM)

    # Both ranks stopped at the same step; rank 0 (for rank 1's signal) wrote the checkpoint there.
    _wait_for(lambda: _workers(launcher, attempt=1), launcher)  # torchrun restarted the processes
    stopped = [re.findall(r"stopped by SIGTERM.*? at step (\d+)", _rank_stderr(logs, 0, rank)) for rank in (0, 1)]
    assert len(stopped[0]) == len(stopped[1]) == 1 and stopped[0] == stopped[1], stopped
    step = int(stopped[0][0])
    assert "on another process" in _rank_stderr(logs, 0, 0)
    assert "re-seeded" in _rank_stderr(logs, 0, 0)  # 1 process wrote the checkpoint, 2 resume it
    checkpoint = _latest(run)  # read while attempt 1 starts up, before it saves
    assert checkpoint["step"] == step > 2 * STEPS_PER_EPOCH and len(checkpoint["noise_rng_ranks"]) == 2
    assert _mtime(latest) != written_by_one

    # Attempt 1 resumed it: its first epoch-end checkpoint comes, and every step is logged once from the run's start.
    # A stop at an epoch's last step is closed by the resume first, rewriting the same step: wait for a later one.
    before = _mtime(latest)
    _wait_for(lambda: _saved_after(latest, before)() and _latest(run)["step"] > step, launcher)
    killed = _kill(launcher, rank=0, attempt=1)
    launcher.communicate(timeout=90)
    assert launcher.returncode != 0 and time.monotonic() - killed < 60  # no restarts left: the job ends, failed
    line = _one_sentence(_rank_stderr(logs, 1, 1))  # rank 1 of attempt 1, whose rank 0 was killed
    assert "rank 1 lost contact" in line and f"resume with `torchrun ... -m facegan train --resume {run}`" in line
    steps = _steps(run)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > step
    assert _latest(run)["step"] > step
