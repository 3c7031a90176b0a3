"""facegan.train.checkpoint: round trips, the .sha256 file, damaged files refused, and falling back to an older checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facegan.errors import FaceganError, FaceganWarning
from facegan.train.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    DamagedCheckpoint,
    checkpoint_dir,
    checkpoints_newest_first,
    epoch_checkpoint_name,
    hash_path,
    load_checkpoint,
    newest_good_checkpoint,
    nonfinite_tensor,
    save_checkpoint,
    verify_checkpoint,
)


def state(step: int) -> dict:
    return {"step": step, "generator": {"w": torch.arange(6.0).reshape(2, 3) * step, "n": torch.tensor([step])},
            "opt": {"state": {0: {"exp_avg": torch.full((3,), 0.5)}}, "param_groups": [{"lr": 2e-4}]},
            "rng": torch.ByteTensor([1, 2, 3]), "config": {"preset": "dcgan", "betas": [0.5, 0.999]}}


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_saved_state_loads_back_equal_with_its_format_added(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "latest.pt"  # folders are made
    save_checkpoint(state(3), path)
    loaded = load_checkpoint(path)
    assert (loaded["format"], loaded["version"]) == (FORMAT, FORMAT_VERSION)
    assert torch.equal(loaded["generator"]["w"], state(3)["generator"]["w"]) and loaded["generator"]["n"].item() == 3
    assert torch.equal(loaded["opt"]["state"][0]["exp_avg"], torch.full((3,), 0.5))
    assert loaded["opt"]["param_groups"] == [{"lr": 2e-4}] and loaded["config"] == state(3)["config"]
    assert torch.equal(loaded["rng"], torch.ByteTensor([1, 2, 3])) and loaded["step"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt", "latest.pt.sha256"]  # no temporaries


def test_the_hash_file_names_the_checkpoint_and_the_one_it_replaced(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(state(1), path)
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    record = json.loads(hash_path(path).read_text())
    assert hash_path(path) == tmp_path / "latest.pt.sha256"
    assert record == {"format": "facegan-checkpoint-sha256", "file": "latest.pt", "sha256": first, "previous_sha256": None}
    save_checkpoint(state(2), path)
    record = json.loads(hash_path(path).read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() != first
    assert record["previous_sha256"] == first
    assert verify_checkpoint(path) is True


def test_the_old_checkpoint_still_verifies_after_a_kill_between_the_two_renames(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(state(1), path)
    old = path.read_bytes()
    save_checkpoint(state(2), path)
    path.write_bytes(old)  # as if killed after the hash file was renamed, before the checkpoint was
    assert verify_checkpoint(path) is True and load_checkpoint(path)["step"] == 1


def test_a_changed_byte_or_a_damaged_hash_file_is_refused_as_damaged(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(state(1), path)
    flip_a_byte(path)
    with pytest.raises(DamagedCheckpoint, match=r"latest\.pt is damaged or not a checkpoint \(its SHA-256 does not match "
                                                r"the one in latest\.pt\.sha256"):
        load_checkpoint(path)
    save_checkpoint(state(1), tmp_path / "other.pt")
    hash_path(tmp_path / "other.pt").write_text("{not json")
    with pytest.raises(DamagedCheckpoint, match=r"other\.pt cannot be verified: its hash file other\.pt\.sha256 is damaged"):
        load_checkpoint(tmp_path / "other.pt")
    assert issubclass(DamagedCheckpoint, FaceganError)


def test_a_checkpoint_without_hash_file_loads_unverified(tmp_path):
    path = tmp_path / "old.pt"
    save_checkpoint(state(4), path)
    hash_path(path).unlink()
    assert verify_checkpoint(path) is False and load_checkpoint(path)["step"] == 4


def test_what_is_not_a_facegan_checkpoint_is_one_sentence(tmp_path):
    torch.save({"format": "someone-else", "weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(FaceganError, match=r"other\.pt is not a facegan checkpoint\.$"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": FORMAT, "version": FORMAT_VERSION + 1}, tmp_path / "newer.pt")
    with pytest.raises(FaceganError, match=rf"newer\.pt is a checkpoint of format {FORMAT_VERSION + 1}; this facegan reads "
                                           rf"format {FORMAT_VERSION}: use the facegan version that wrote it\."):
        load_checkpoint(tmp_path / "newer.pt")
    with pytest.raises(FaceganError, match=r"there is no checkpoint at .*missing\.pt\."):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FaceganError, match=r"is a directory, not a checkpoint file\."):
        load_checkpoint(tmp_path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DamagedCheckpoint, match=r"text\.pt is damaged or not a checkpoint"):
        load_checkpoint(tmp_path / "text.pt")


def test_a_state_holding_nan_or_inf_is_never_saved(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(state(1), path)
    before = path.read_bytes()
    bad = state(2)
    bad["opt"]["state"][0]["exp_avg"][1] = float("nan")
    with pytest.raises(FaceganError, match=r"refusing to save .*latest\.pt: opt\.state\.0\.exp_avg holds NaN or infinite "
                                           r"values \(training diverged\); the previous checkpoint is kept\."):
        save_checkpoint(bad, path)
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1


def test_nonfinite_tensor_names_the_first_bad_floating_tensor():
    assert nonfinite_tensor(state(1)) is None
    assert nonfinite_tensor({"a": [torch.ones(2), torch.tensor([1.0, float("-inf")])]}) == "a.1"
    assert nonfinite_tensor({"g": {"x": torch.ones(1), "y": torch.tensor([float("nan")])}, "d": torch.tensor(float("inf"))}) == "g.y"
    assert nonfinite_tensor(torch.tensor([float("nan")])) == "a tensor"
    assert nonfinite_tensor({"steps": torch.tensor([2**62]), "n": 3, "s": "nan"}) is None  # integers and plain data
    assert nonfinite_tensor({"c": torch.tensor([complex(float("nan"), 0)])}) == "c"


def test_checkpoints_are_ordered_latest_then_epochs_by_number(tmp_path):
    folder = checkpoint_dir(tmp_path)
    assert folder == tmp_path / "checkpoints"
    assert checkpoints_newest_first(tmp_path) == []
    folder.mkdir()
    for epoch in (2, 9999, 10000, 1):
        (folder / epoch_checkpoint_name(epoch)).write_bytes(b"")
    (folder / "epoch-0005.pt").mkdir()  # a folder, not a checkpoint
    for name in ("epoch-3.pt", "epoch-0007.pt.sha256", "best.pt", ".epoch-0008.pt.tmp-1"):
        (folder / name).write_bytes(b"")
    assert epoch_checkpoint_name(3) == "epoch-0003.pt"
    assert [p.name for p in checkpoints_newest_first(tmp_path)] == ["epoch-10000.pt", "epoch-9999.pt", "epoch-0002.pt", "epoch-0001.pt"]
    assert checkpoints_newest_first(tmp_path)[0] == folder / "epoch-10000.pt"
    (folder / "latest.pt").write_bytes(b"")
    assert checkpoints_newest_first(tmp_path)[0] == folder / "latest.pt"


def test_the_newest_good_checkpoint_skips_a_damaged_one_with_a_warning(tmp_path, recwarn):
    folder = checkpoint_dir(tmp_path)
    assert newest_good_checkpoint(tmp_path) is None
    for epoch in (1, 2):
        save_checkpoint(state(epoch), folder / epoch_checkpoint_name(epoch))
    save_checkpoint(state(3), folder / "latest.pt")
    path, loaded = newest_good_checkpoint(tmp_path)
    assert path == folder / "latest.pt" and loaded["step"] == 3 and len(recwarn) == 0
    flip_a_byte(folder / "latest.pt")
    with pytest.warns(FaceganWarning) as warned:
        path, loaded = newest_good_checkpoint(tmp_path)
    assert path == folder / "epoch-0002.pt" and loaded["step"] == 2
    (message,) = [str(w.message) for w in warned]
    assert "latest.pt is damaged" in message and message.endswith("Trying an older checkpoint.")
    hash_path(folder / "epoch-0002.pt").unlink()
    with pytest.warns(FaceganWarning, match=r"has no epoch-0002\.pt\.sha256 \(written by an older facegan\); using it unverified"):
        path, loaded = newest_good_checkpoint(tmp_path)
    assert path == folder / "epoch-0002.pt"
    (folder / "epoch-0002.pt").write_bytes((folder / "epoch-0002.pt").read_bytes()[:300])  # cut short, and unverifiable
    flip_a_byte(folder / "epoch-0001.pt")
    with pytest.raises(FaceganError, match=r"all 3 checkpoints of .* are damaged \(see the warnings above\); the run cannot "
                                           r"continue: start a new run\."):
        newest_good_checkpoint(tmp_path)


def test_saving_removes_what_a_killed_writer_left_but_not_a_live_writers_files(tmp_path):
    path = tmp_path / "latest.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".latest.pt.tmp-{int(dead.stdout)}"
    stale_hash = tmp_path / f".latest.pt.sha256.tmp-{int(dead.stdout)}"
    live = tmp_path / f".latest.pt.tmp-{os.getppid()}"  # a process that runs: a concurrent writer's file
    for leftover in (stale, stale_hash, live):
        leftover.write_bytes(b"partial")
    save_checkpoint(state(1), path)
    assert not stale.exists() and not stale_hash.exists() and live.exists()
    assert load_checkpoint(path)["step"] == 1
