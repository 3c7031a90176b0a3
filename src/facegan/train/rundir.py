"""A run directory: numbering new ones, what a resume may change, and the stats file.

    runs/NNNNN-preset/  config.json  fixed_noise.pt  stats.jsonl  samples/  plots/  checkpoints/  [torchrun-job]

Only rank 0 writes here. A resume reads config.json, applies the user's changes and refuses
those that would change what fixed the run's models and data.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from facegan import plots, viz
from facegan.config import TrainConfig, changed_on_resume, validate
from facegan.data import PreparedDataset
from facegan.errors import FaceganError, FaceganWarning
from facegan.files import reporting_disk_errors, write_atomically
from facegan.paths import output_dir
from facegan.train.checkpoint import newest_good_checkpoint

STATS = "stats.jsonl"
JOB = "torchrun-job"  # the rendezvous id of the torchrun job that started the run
_CHECKPOINT_KEYS = ("config", "generator", "discriminator", "opt_g", "opt_d", "noise_rng", "epoch", "batch_in_epoch",
                    "step", "fixed_noise")


def new_run_dir(runs_dir: Path, preset: str) -> Path:
    """runs/NNNNN-preset, numbered after the highest run already there."""
    output_dir(runs_dir, "--runs-dir")
    runs_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[:5]) for p in runs_dir.iterdir() if p.name[:5].isdigit()]
    number = max(numbers, default=0) + 1
    while True:
        path = runs_dir / f"{number:05d}-{preset}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took this number meanwhile
            number += 1


def start_run_dir(config: TrainConfig, fixed_noise: torch.Tensor, dataset: PreparedDataset,
                  job: str | None = None) -> Path:
    """A new run directory holding the resolved config, the fixed noise and a grid of real images
    (and, under torchrun, the job that started it, so that its restarted workers find it: `job_run_dir`)."""
    run_dir = new_run_dir(Path(config.runs_dir), config.preset)
    if job is not None:  # first, so an attempt killed at any later point is found by the next
        write_atomically(run_dir / JOB, lambda temporary: temporary.write_text(f"{job}\n", encoding="utf-8"))
    config.save(run_dir / "config.json")
    torch.save(fixed_noise.cpu(), run_dir / "fixed_noise.pt")
    reals = dataset.take(np.arange(min(config.grid_size, len(dataset))))
    viz.save_png(viz.make_grid(reals), run_dir / "samples" / "reals.png")
    return run_dir


def job_run_dir(runs_dir: Path, job: str) -> Path | None:
    """The newest run directory under `runs_dir` that torchrun job `job` started, or None."""
    def started_by_job(path: Path) -> bool:
        try:
            return (path / JOB).read_text(encoding="utf-8").strip() == job
        except OSError:  # no mark: started without torchrun, or by a version that made none
            return False

    found = [path for path in runs_dir.iterdir() if path.name[:5].isdigit() and started_by_job(path)] if runs_dir.is_dir() else []
    return max(found, key=lambda path: int(path.name[:5]), default=None)


def require_run_dir(run_dir: Path) -> None:
    """Refuse, in one sentence, what is not a run directory."""
    if run_dir.is_file():
        raise FaceganError(f"{run_dir} is a file; --resume takes a run directory (runs/NNNNN-preset), not a checkpoint.")
    if not (run_dir / "config.json").is_file():
        raise FaceganError(f"{run_dir} is not a facegan run directory (no config.json); give a directory under runs/.")


def resume_config(run_dir: Path, overrides: dict) -> TrainConfig:
    """A run's saved config with the user's changes (e.g. more --epochs) applied and validated."""
    require_run_dir(Path(run_dir))
    saved = TrainConfig.load(Path(run_dir) / "config.json").to_dict()
    try:
        config = TrainConfig.from_dict({**saved, **{k: v for k, v in overrides.items() if v is not None}})
        validate(config)
    except (TypeError, ValueError, AttributeError) as error:  # a hand-edited config.json of the wrong types
        raise FaceganError(f"{Path(run_dir) / 'config.json'} is damaged ({error}); fix it or start a new run.") from None
    return config


def checkpoint_to_resume(run_dir: Path, config: TrainConfig) -> tuple[Path, dict]:
    """The run's newest intact checkpoint and its path, refusing changes to what fixed the run's models and data."""
    found = newest_good_checkpoint(run_dir)
    if found is None:
        raise FaceganError(f"{run_dir} has no checkpoint yet, so there is nothing to resume; start a new run.")
    path, checkpoint = found
    missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise FaceganError(f"{path} is not a complete facegan checkpoint (it lacks {', '.join(missing)}).")
    changed = changed_on_resume(TrainConfig.from_dict(checkpoint["config"]), config)
    if changed:
        raise FaceganError(
            f"cannot resume {run_dir} with a different {', '.join(changed)}: these fix the models and data "
            "of a run; start a new run instead."
        )
    _require_epochs_left(run_dir, path, checkpoint, config)
    return path, checkpoint


def _require_epochs_left(run_dir: Path, path: Path, checkpoint: dict, config: TrainConfig) -> None:
    """Refuse a total of epochs the run has already passed: it would train nothing and say "done"."""
    epoch, batch = checkpoint["epoch"], checkpoint["batch_in_epoch"]
    if not isinstance(epoch, int) or not isinstance(batch, int):
        raise FaceganError(f"{path} is not a complete facegan checkpoint (its epoch is {epoch!r}, batch {batch!r}).")
    if epoch > config.epochs or (epoch == config.epochs and batch > 0):
        where = f"epoch {epoch}" + (f" and {batch} batches into epoch {epoch + 1}" if batch else "")
        raise FaceganError(f"{run_dir} is already at {where} ({path.name}), past --epochs {config.epochs}, so nothing "
                           f"would be trained; --epochs is the run's total from its start, so {_more(run_dir, epoch)}.")


def warn_if_finished(run_dir: Path, checkpoint: dict, config: TrainConfig) -> bool:
    """Warn, and return True, when a resumed run has already trained exactly its --epochs: there is nothing to train.

    Called once everything else about the resume has been checked, so the warning never precedes an error.
    """
    epoch = checkpoint["epoch"]
    if epoch != config.epochs or checkpoint["batch_in_epoch"]:
        return False
    warnings.warn(f"{run_dir} has already trained its {epoch} epoch{'s' if epoch != 1 else ''} (--epochs "
                  f"{config.epochs}), so there is nothing to train; --epochs is the run's total from its start, "
                  f"so {_more(run_dir, epoch)}.", FaceganWarning, stacklevel=2)
    return True


def _more(run_dir: Path, epoch: int) -> str:
    return f"`facegan train --resume {run_dir} --epochs {epoch + 10}` trains 10 more"


@reporting_disk_errors(STATS)
def append_stats(path: Path, record: dict) -> None:
    """Add one record to stats.jsonl."""
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


@reporting_disk_errors(STATS)
def truncate_stats(path: Path, step: int) -> None:
    """Keep only the records up to `step`, so a resumed run's log has no duplicated steps.

    Damaged lines (not JSON records, or a step that is not a number) are set aside in
    stats.jsonl.damaged with a warning, never lost and never fatal: the run resumes with the rest.
    """
    if not path.exists():
        return
    records, damaged = plots.read_records(path, valid=lambda record: _step_of(record) is not None)
    if damaged:
        plots.set_aside_damaged(path, damaged, len(records))
    kept = [r for r in records if _step_of(r) <= step]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _step_of(record: dict) -> float | None:
    """A record's step (0 for events, which have none); None when it is there but not a finite number."""
    value = record.get("step", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None
