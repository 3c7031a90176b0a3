"""Checkpoints: everything needed to continue a run exactly, written atomically, read safely.

Each checkpoint NAME.pt has a hash file NAME.pt.sha256 beside it (JSON: the SHA-256 of the
checkpoint and of the file it replaced). The hash file is renamed into place just before the
checkpoint, so whenever a process dies both the old and the new checkpoint verify: a file under
a final name is either complete and verified, or refused as damaged, never ambiguous.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from facegan.errors import FaceganError, FaceganWarning
from facegan.files import fsync_directory, other_process_alive, sha256_file

FORMAT = "facegan-checkpoint"
FORMAT_VERSION = 1
HASH_FORMAT = "facegan-checkpoint-sha256"
LATEST = "latest.pt"
_EPOCH_FILE = re.compile(r"epoch-(\d{4,})\.pt$")


class DamagedCheckpoint(FaceganError):
    """A checkpoint that is truncated, corrupted or does not match its stored hash: an older one may do."""


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / "checkpoints"


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint taken after `epoch` epochs."""
    return f"epoch-{epoch:04d}.pt"


def hash_path(path: Path) -> Path:
    """The hash file of a checkpoint: NAME.pt.sha256 beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` atomically, with its hash file; the old file survives any failure.

    Refuses a state holding NaN or infinite values: a diverged model is never saved.
    """
    path = Path(path)
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise FaceganError(f"refusing to save {path}: {bad} holds NaN or infinite values (training diverged); "
                           "the previous checkpoint is kept.")
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        with open(temporary, "wb") as stream:
            torch.save({"format": FORMAT, "version": FORMAT_VERSION, **state}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        # First the hash file, naming both the new checkpoint and the one still in place, then
        # the checkpoint: a kill between the two renames leaves the old checkpoint, still verified.
        _write_hash(path, sha256_file(temporary), previous=_verified_sha256(path))
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except (OSError, RuntimeError) as error:
        temporary.unlink(missing_ok=True)
        reason = getattr(error, "strerror", None) or _first_line(error)
        raise FaceganError(
            f"could not write the checkpoint {path} ({reason}); the previous checkpoint is intact: "
            "free some disk space and resume."
        ) from None


def verify_checkpoint(path: Path) -> bool:
    """Check a checkpoint against its hash file: True if it matches, False if it has none (written
    by an older facegan, or copied alone); raises DamagedCheckpoint if it does not match."""
    path = Path(path)
    record = _read_hash(path)
    if record is None:
        return False
    try:
        digest = sha256_file(path)
    except FileNotFoundError:
        raise FaceganError(f"there is no checkpoint at {path}.") from None
    except IsADirectoryError:
        raise FaceganError(f"{path} is a directory, not a checkpoint file.") from None
    if digest not in (record.get("sha256"), record.get("previous_sha256")):
        raise DamagedCheckpoint(
            f"{path} is damaged or not a checkpoint (its SHA-256 does not match the one in {hash_path(path).name}: "
            "it was cut short or changed after it was written)."
        )
    return True


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint: check its hash, unpickle with weights_only=True (no code runs), check its format."""
    path = Path(path)
    if path.is_dir():
        raise FaceganError(f"{path} is a directory, not a checkpoint file.")
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FaceganError(f"there is no checkpoint at {path}.") from None
    except pickle.UnpicklingError as error:
        # A pickle naming a function or class beyond tensors and plain data is refused (it could run
        # code); other unpickling failures are damaged bytes. torch's message suggests
        # weights_only=False: never repeat that advice to a user.
        wanted = re.search(r"GLOBAL (\S+)", str(error))
        if wanted is None:
            raise DamagedCheckpoint(f"{path} is damaged or not a checkpoint (it is not a readable pickle).") from None
        raise FaceganError(
            f"{path} was refused: it asks to import {wanted.group(1)}, which could run code when loaded; "
            "load only checkpoints written by facegan."
        ) from None
    except Exception as error:  # noqa: BLE001 - torch reports damaged bytes as RuntimeError, EOFError, KeyError, IndexError...
        raise DamagedCheckpoint(f"{path} is damaged or not a checkpoint ({_first_line(error)}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FaceganError(f"{path} is not a facegan checkpoint.")
    if state.get("version") != FORMAT_VERSION:
        raise FaceganError(
            f"{path} is a checkpoint of format {state.get('version')}; this facegan reads format "
            f"{FORMAT_VERSION}: use the facegan version that wrote it."
        )
    return state


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """A run's checkpoints, newest first: latest.pt, then epoch-NNNN.pt from the highest epoch down."""
    directory = checkpoint_dir(Path(run_dir))
    epochs = [(int(match.group(1)), path) for path in directory.glob("epoch-*.pt")
              if (match := _EPOCH_FILE.fullmatch(path.name)) and path.is_file()]
    latest = [directory / LATEST] if (directory / LATEST).is_file() else []
    return latest + [path for _, path in sorted(epochs, reverse=True)]


def newest_good_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint of a run that is intact, loaded; None if the run has none.

    A damaged one is skipped with a warning on stderr naming it and why, and the one before it
    tried; if all are damaged, a FaceganError says so.
    """
    candidates = checkpoints_newest_first(run_dir)
    if not candidates:
        return None
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
        except DamagedCheckpoint as error:
            warnings.warn(f"{error} Trying an older checkpoint.", FaceganWarning, stacklevel=2)
            continue
        if not hash_path(path).exists():
            warnings.warn(f"{path} has no {hash_path(path).name} (written by an older facegan); using it unverified.",
                          FaceganWarning, stacklevel=2)
        return path, checkpoint
    raise FaceganError(
        f"all {len(candidates)} checkpoints of {run_dir} are damaged (see the warnings above); the run cannot "
        "continue: start a new run."
    )


NOT_A_RUN = "give a run directory (runs/NNNNN-preset) or a checkpoint file"


def resolve_checkpoint(source: str | os.PathLike) -> tuple[Path, dict]:
    """A run directory's newest intact checkpoint, or a checkpoint file, loaded: what sample, export and evaluate read."""
    source = Path(source).expanduser()
    if source.is_dir():
        found = newest_good_checkpoint(source)
        if found is None:
            raise FaceganError(f"{source} holds no checkpoint; give a run directory that has trained at least one epoch.")
        return found
    if not source.exists():
        raise FaceganError(f"{source} does not exist; {NOT_A_RUN}.")
    return source, load_checkpoint(source)


def nonfinite_tensor(tree: object) -> str | None:
    """The name of the first floating-point tensor in a nested dict/list holding NaN or infinity, or None."""
    named = list(_floating_tensors(tree, ""))
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for _, tensor in named:
        flags.setdefault(tensor.device, []).append(torch.isfinite(tensor).all())
    # One host-device synchronisation per device, not one per tensor.
    if all(bool(torch.stack(found).all()) for found in flags.values()):
        return None
    return next(name for name, tensor in named if not bool(torch.isfinite(tensor).all()))


# ----------------------------------------------------------------------------- helpers


def _floating_tensors(tree: object, prefix: str):
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() or tree.is_complex():
            yield prefix or "a tensor", tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _floating_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _floating_tensors(value, f"{prefix}.{index}" if prefix else str(index))


def _read_hash(path: Path) -> dict | None:
    """The hash file's record, None if there is none."""
    try:
        record = json.loads(hash_path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("format") != HASH_FORMAT or not isinstance(record.get("sha256"), str):
        raise DamagedCheckpoint(f"{path} cannot be verified: its hash file {hash_path(path).name} is damaged.")
    return record


def _verified_sha256(path: Path) -> str | None:
    """The SHA-256 of the checkpoint now at `path` if it is intact (or predates hash files), else None."""
    if not path.is_file():
        return None
    digest = sha256_file(path)
    try:
        record = _read_hash(path)
    except DamagedCheckpoint:
        return None
    if record is None or digest in (record.get("sha256"), record.get("previous_sha256")):
        return digest
    return None  # a damaged file must not be vouched for


def _write_hash(path: Path, digest: str, previous: str | None) -> None:
    """Write the hash file of `path` atomically (temporary file, fsync, rename, directory fsync)."""
    target = hash_path(path)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    record = {"format": HASH_FORMAT, "file": path.name, "sha256": digest, "previous_sha256": previous}
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(record, indent=1) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete what a killed writer of `path` left (.NAME.tmp-PID, .NAME.sha256.tmp-PID); live writers' stay."""
    for stale in path.parent.glob(f".{path.name}*.tmp-*"):
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and other_process_alive(int(pid)):
            continue
        stale.unlink(missing_ok=True)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:160]
