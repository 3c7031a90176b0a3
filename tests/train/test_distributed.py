"""torchrun with real processes on the CPU (gloo): the same run as one process, exact resumes, agreed stops, faults.

Each test starts `python -m torch.distributed.run --standalone` (a free port of its own) with two
ranks of one thread each, on tiny models and data32 (96 images, a global batch of 16: 8 per rank).
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


def _launch(ranks: int, *args: str, cwd: Path, script: Path | None = None) -> subprocess.Popen:
    """`facegan ARGS` on `ranks` processes: torchrun for 2 or more, a plain `python -m facegan` for 1."""
    target = [str(script)] if script is not None else ["-m", "facegan"]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
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


def _workers(launcher: subprocess.Popen) -> dict[int, int]:
    """RANK -> pid of the processes torchrun started (its children), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher.pid:
            ranks = [item[5:] for item in environ if item.startswith(b"RANK=")]
            if ranks:
                found[int(ranks[0])] = int(entry.name)
    return found


def _wait_for(condition, launcher: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out waiting for training to start"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def one_epoch_on_two(tmp_path_factory, data32) -> Path:
    """A run trained for 1 epoch on 2 ranks (copy it before resuming)."""
    runs = tmp_path_factory.mktemp("two") / "runs"
    _train(2, data32, runs, "--epochs", "1")
    return _only_run(runs)


# ----------------------------------------------------------------------------- the same run as one process


def test_two_ranks_of_16_are_one_process_of_32_with_sync_bn(tmp_path):
    specs = ["dcgan:dcgan:sync_bn=true", "wgan-gp:wgan-gp:sync_bn=true",
             "r1:dcgan:sync_bn=true,d_norm=layer,r1_gamma=1.0,r1_every=2", "dcgan-local-bn:dcgan"]
    for ranks in (1, 2):
        (tmp_path / str(ranks)).mkdir()
        _run(ranks, str(tmp_path / str(ranks)), *specs, cwd=tmp_path, script=WORKER)
    for name in ("dcgan", "wgan-gp", "r1", "dcgan-local-bn"):
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


# ----------------------------------------------------------------------------- resume


def test_resume_at_two_ranks_is_bit_identical_and_only_rank_zero_writes(tmp_path, data32, one_epoch_on_two):
    straight = tmp_path / "straight" / "runs"
    _train(2, data32, straight, "--epochs", "2")
    resumed = tmp_path / "resumed" / "runs"
    shutil.copytree(one_epoch_on_two, resumed / one_epoch_on_two.name)
    result = _train(2, data32, resumed, "--resume", str(resumed / one_epoch_on_two.name), "--epochs", "2")
    assert "re-seeded" not in result.stderr
    assert_identical(_only_run(straight), _only_run(resumed))
    assert sorted(p.name for p in (tmp_path / "straight").iterdir()) == ["runs"]  # nothing beside the one run
    checkpoint = _latest(_only_run(straight))
    assert checkpoint["step"] == 2 * STEPS_PER_EPOCH and len(checkpoint["noise_rng_ranks"]) == 2
    assert not torch.equal(*checkpoint["noise_rng_ranks"])  # each rank its own noise
    records = [line for line in (_only_run(straight) / "stats.jsonl").read_text().splitlines() if '"kimg"' in line]
    assert len(records) == 2 * STEPS_PER_EPOCH  # one writer: one record per step, not one per rank
    assert '"kimg": 0.192' in records[-1]  # 12 steps x the global batch of 16


def test_resume_across_world_sizes_continues_the_schedule_and_says_it_reseeds(tmp_path, data32, one_epoch_on_two):
    two_to_one = tmp_path / "a" / "runs"
    shutil.copytree(one_epoch_on_two, two_to_one / one_epoch_on_two.name)
    result = _train(1, data32, two_to_one, "--resume", str(two_to_one / one_epoch_on_two.name), "--epochs", "2")
    assert "re-seeded" in result.stderr
    assert _latest(_only_run(two_to_one))["step"] == 2 * STEPS_PER_EPOCH

    # The same run, its second epoch written by 1 process, resumed on 2 again.
    result = _train(2, data32, two_to_one, "--resume", str(_only_run(two_to_one)), "--epochs", "3")
    assert "re-seeded" in result.stderr
    checkpoint = _latest(_only_run(two_to_one))
    assert checkpoint["step"] == 3 * STEPS_PER_EPOCH and len(checkpoint["noise_rng_ranks"]) == 2


def test_a_batch_the_ranks_cannot_share_is_refused_in_one_sentence():
    from facegan import distributed
    from facegan.errors import FaceganError

    assert distributed.per_rank_batch(128, 8) == 16
    with pytest.raises(FaceganError, match=r"^--batch-size 15 is the global batch and must divide evenly among the 2 "
                                           r"processes; use a multiple of 2, such as 14\.$"):
        distributed.per_rank_batch(15, 2)


# ----------------------------------------------------------------------------- stops and faults


def test_sigterm_to_one_rank_stops_both_at_the_same_step_with_a_checkpoint(tmp_path, data32):
    runs = tmp_path / "runs"
    launcher = _launch(2, "train", *TINY_ARGS, "--data", str(data32), "--runs-dir", str(runs), "--epochs", "1000",
                       cwd=tmp_path)
    _wait_for(lambda: runs.exists() and any(runs.glob("*/stats.jsonl")), launcher)
    os.kill(_workers(launcher)[1], signal.SIGTERM)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    steps = re.findall(r"stopped by SIGTERM.*? at step (\d+)", err)
    assert len(steps) == 2 and len(set(steps)) == 1, err[-3000:]
    assert "on another process" in err  # rank 0 stopped for rank 1's signal
    assert _latest(_only_run(runs))["step"] == int(steps[0])


def test_kill_9_of_one_rank_ends_the_job_within_a_minute_and_the_run_resumes(tmp_path, data32):
    runs = tmp_path / "runs"
    launcher = _launch(2, "train", *TINY_ARGS, "--data", str(data32), "--runs-dir", str(runs), "--epochs", "1000",
                       "--checkpoint-steps", "2", cwd=tmp_path)
    _wait_for(lambda: runs.exists() and any(runs.glob("*/checkpoints/latest.pt")), launcher)
    os.kill(_workers(launcher)[1], signal.SIGKILL)
    killed = time.monotonic()
    launcher.communicate(timeout=90)
    assert launcher.returncode != 0 and time.monotonic() - killed < 60
    run = _only_run(runs)
    epoch = _latest(run)["epoch"]
    _train(2, data32, runs, "--resume", str(run), "--epochs", str(epoch + 1))
    assert _latest(run)["epoch"] == epoch + 1


# ----------------------------------------------------------------------------- metrics


def test_fid_on_two_ranks_equals_one_process(tmp_path, data32):
    worker = Path(__file__).with_name("ddp_fid_worker.py")
    for ranks in (1, 2):
        _run(ranks, str(data32), str(tmp_path / f"{ranks}.json"), cwd=tmp_path, script=worker)
    alone, shared = (json.loads((tmp_path / f"{ranks}.json").read_text()) for ranks in (1, 2))
    assert np.array_equal(np.array(alone["fake"]), np.array(shared["fake"]))  # the same images, in the same order
    assert shared["values"] == alone["values"] and alone["values"]["fid64"] > 0
    # Rank 0 measured the 64 real images (one chunk of 1,024 rows: not split) and, twice, batches 0, 2, 4, 6 of
    # the fakes in batches of 10 (34 images); alone, every image.
    assert (alone["measured"], shared["measured"]) == (3 * 64, 64 + 2 * 34)
