"""The training loop: one function, its phases named, every artifact a user watches.

A run directory holds config.json, stats.jsonl, fixed_noise.pt, samples/, plots/ and
checkpoints/ (train/rundir.py). Only rank 0 writes; every rank draws its own share of each
epoch's batches. The step itself is train/step.py, the state train/state.py, the guards
against signals, divergence and full disks train/guard.py.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facegan import distributed, plots, viz
from facegan.conditions import grid_conditions
from facegan.config import RESOLUTIONS, TrainConfig, validate
from facegan.data import PreparedDataset, open_prepared
from facegan.data.builtin import open_data
from facegan.errors import FaceganError, FaceganWarning, Interrupted
from facegan.files import reporting_disk_errors
from facegan.generation import generate, sampler
from facegan.metrics.evaluate import (
    append_metrics,
    evaluate,
    read_metrics,
    require_images,
)
from facegan.metrics.names import parse_metrics
from facegan.runtime import out_of_memory_as_error, resolve_device
from facegan.train import cputime
from facegan.train.batches import BatchSource, to_model_input
from facegan.train.checkpoint import (
    LATEST,
    checkpoint_dir,
    epoch_checkpoint_name,
    newest_good_checkpoint,
    save_checkpoint,
)
from facegan.train.guard import (
    DivergenceGuard,
    StopRequest,
    roll_back,
    run_lock,
    stop_on_signals,
)
from facegan.train.pictures import PictureBudget
from facegan.train.rundir import (
    STATS,
    append_stats,
    checkpoint_to_resume,
    job_run_dir,
    require_run_dir,
    resume_config,
    start_run_dir,
    truncate_stats,
    warn_if_finished,
)
from facegan.train.schedule import lr_factor, set_lr
from facegan.train.state import TrainState, build_state, restore_state
from facegan.train.step import EXTRA_TERMS, eager_if_compile_fails, train_step

BEST = "best.pt"  # the checkpoint best on the first --eval metric
log = logging.getLogger(__name__)

# Called after each epoch's grid and checkpoint (progress_fn) and after every step (abort_fn: True
# ends the run there, as a crash would, without refreshing latest.pt), as stylegan2-ada's loop takes them.
ProgressFn = Callable[[TrainState], None]
AbortFn = Callable[[TrainState], bool]


def train(config: TrainConfig, *, resume: Path | None = None, progress: bool = True, rank: int | None = None,
          world_size: int | None = None, progress_fn: ProgressFn | None = None,
          abort_fn: AbortFn | None = None) -> Path | None:
    """Train (or resume) a run; return its directory (None on ranks other than 0, whose `rank` and
    `world_size` default to torchrun's). One process trains a run at a time (a lock); SIGTERM and SIGINT
    stop at the next step, after writing latest.pt (Interrupted); a NaN rolls back to the last good checkpoint."""
    cpu_started = cputime.process_cpu_seconds()  # the run's CPU time counts from here
    with contextlib.ExitStack() as held:  # the process group, the run's lock and signal handlers, released however training ends
        # Under torchrun, join the process group first: every rank then knows its rank and its device.
        if held.enter_context(distributed.process_group(resolve_device(config.device))):
            rank, world_size = distributed.rank(), distributed.world_size()
        rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
        run: _Run | None = None
        if world_size > 1:  # a dead peer ends this rank in one sentence that names the checkpoint to go on from
            held.enter_context(distributed.lost_contact_as_error("training", lambda: _resume_hint(run)))
        batch = distributed.per_rank_batch(config.batch_size, world_size)  # --batch-size is the global batch
        # Resume or start.
        if resume is None and distributed.restart_count():
            resume, config = _restarted_run(config, rank == 0, progress)
        run = _resume_or_start(config, resume, rank == 0, progress, held, world_size, cpu_started)
        state, run_dir = run.state, run.run_dir
        stop = held.enter_context(stop_on_signals())  # from here on SIGTERM and SIGINT stop at a step boundary
        guard, source = DivergenceGuard(run.device), run.source
        steps_per_epoch = source.steps_per_epoch(batch, world_size)  # the same at any world size
        total_g_steps = max(1, config.epochs * (steps_per_epoch // config.d_steps))  # the end of any lr decay
        batches, meter = None, None
        # Under torchrun every rank would have to agree on a fallback to eager: there a compile error ends the run.
        unproven_compile = state.compiled is not None and state.parallel is None
        while state.epoch < config.epochs and not run.budget_spent:
            # Fetch the next batch, in the epoch's own order from where the state stands (a new
            # epoch, a resume mid-epoch, a rollback).
            if batches is None and state.batch_in_epoch == steps_per_epoch:
                # Resumed at an epoch's last batch, whose epoch-end save a kill prevented: close that epoch first.
                if diverged := _finish_epoch(state, config, run, guard):
                    run.roll_back(config, guard, diverged)
                continue
            if batches is None:
                batches = source.epoch(batch, seed=config.seed, epoch=state.epoch, rank=rank,
                                       world_size=world_size, skip=state.batch_in_epoch)
                meter = _EpochMeter.start(state, config, steps_per_epoch, progress and run_dir is not None, world_size)
            images, labels = next(batches)
            # Every batch updates D; every d_steps-th batch of an epoch also updates G. Logging and
            # step checkpoints count G updates, so they happen on those batches.
            update_g = (state.batch_in_epoch + 1) % config.d_steps == 0
            if update_g:
                set_learning_rates(state, config, total_g_steps)
            step = functools.partial(train_step, state, to_model_input(images), config, update_g, labels)
            # Compiled models build their kernels at the first step: checked there.
            out = eager_if_compile_fails(step, state, config) if unproven_compile else step()
            unproven_compile = False
            state.batch_in_epoch += 1

            # Maintenance: log, check, save, stop.
            # The loss flag is read on the host only where that costs no extra sync (CPU, log steps)
            # and, with every weight, before anything is saved: nothing diverged is ever written.
            guard.observe(*(out[k] for k in ("loss_d", "loss_g", *EXTRA_TERMS) if k in out))
            logging_now = update_g and state.step % config.log_every == 0
            saving = bool(update_g and config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0)
            epoch_done = state.batch_in_epoch == steps_per_epoch
            stopping = bool(stop)  # read once: a signal between two reads would find no checkpoint made
            if world_size > 1:  # a signal on any rank, or a NaN on any, stops or rolls back every rank at this step
                stopping, nonfinite = distributed.any_rank(stopping, guard.nonfinite, device=run.device)
                guard.nonfinite.fill_(nonfinite)
            if saving or stopping:
                state.refresh_ema_statistics(config)  # what a checkpoint's moving average is sampled with
            snapshot = state.to_checkpoint(config, run.fixed_noise) if saving or stopping else None
            diverged = _agreed(guard.check(read=saving or stopping or logging_now, checkpoint=snapshot), snapshot)
            if not diverged:
                meter.observe(out, state, config, len(images), logging_now, run_dir)
                if saving:
                    if run_dir is not None:
                        save_checkpoint(snapshot, checkpoint_dir(run_dir) / LATEST)
                    run.saved_latest()
                if stopping:
                    _stop_at_signal(stop, state, snapshot, run_dir, saved=saving, meter=meter)
                if epoch_done:  # every weight is checked before the epoch's grid and checkpoints are made
                    diverged = _finish_epoch(state, config, run, guard)
            if diverged:  # nothing of a diverged step or epoch is drawn or saved
                meter.close()
                run.roll_back(config, guard, diverged)
                batches = None  # the restored state's epoch, from its position
                continue
            if epoch_done:
                meter.finish(state, config, run_dir, progress, run.pictures if run.plots_due else None)
                batches = None
                if run.budget_spent and run_dir is not None and progress:
                    log.info(f"stopped after epoch {state.epoch}: the run's CPU time, {state.cpu.seconds() / 60:.1f} min, "
                             f"has reached --max-cpu-minutes {config.max_cpu_minutes:g}; a resume with a larger one continues")
                if progress_fn is not None:
                    progress_fn(state)
            if abort_fn is not None and abort_fn(state):
                meter.close()
                return run_dir
    return run_dir


def _agreed(diverged: str | None, checked: object) -> str | None:
    """Why any rank found a divergence, on every rank (a gather only when a checkpoint's weights were checked:
    the loss flag is agreed already)."""
    if checked is None or not distributed.active():
        return diverged
    return next((reason for reason in distributed.gather(diverged) if reason), None)


# ----------------------------------------------------------------------------- resume or start


@dataclass
class _Run:
    """What the loop works on: the state, its data and noise, and where it writes (None on other ranks)."""

    state: TrainState
    device: torch.device
    dataset: PreparedDataset
    source: BatchSource  # batches of the data, with the run's labels, balanced when asked
    fixed_noise: torch.Tensor
    run_dir: Path | None
    last_good: Path | None  # the checkpoint a divergence rolls back to; None: the run's start
    checkpoints: Path | None  # the run's checkpoint folder, known on every rank (rank 0 writes it, all read it back)
    eval_data: PreparedDataset | None = None  # what --eval-every measures against; None: the training data
    rollbacks: int = 0  # by this invocation
    budget_spent: bool = False  # the run's CPU time reached --max-cpu-minutes at an epoch end: it stops there
    pictures: PictureBudget = field(default_factory=PictureBudget)  # when an epoch's plots are drawn
    plots_due: bool = True  # whether the epoch just finished draws them

    def saved_latest(self) -> None:
        """latest.pt was just written (by rank 0): a divergence now rolls back to it, on every rank."""
        if self.checkpoints is not None:  # None: a rank simulated without a process group, which sees no run directory
            self.last_good = self.checkpoints / LATEST

    def roll_back(self, config: TrainConfig, guard: DivergenceGuard, reason: str) -> None:
        """Restore the last good checkpoint with lower learning rates (guard.roll_back), counting the rollbacks."""
        self.rollbacks = roll_back(self.state, config, guard, self.rollbacks, reason, last_good=self.last_good,
                                   fixed_noise=self.fixed_noise, run_dir=self.run_dir)


def _restarted_run(config: TrainConfig, is_main: bool, progress: bool) -> tuple[Path | None, TrainConfig]:
    """A new run's directory, to resume, and its config when torchrun has restarted the workers (--max-restarts):
    the one this job's first attempt started, found by the job's mark (rank 0 looks, every rank learns it).
    (None, config) when that attempt saved no checkpoint: the run starts again."""
    found = None
    if is_main and distributed.job_id() is not None:
        found = job_run_dir(Path(config.runs_dir), distributed.job_id())
        found = found if found is not None and newest_good_checkpoint(found) is not None else None
    found = distributed.broadcast(found)
    if found is None:
        return None, config
    if is_main and progress:
        log.info(f"torchrun restarted the processes (restart {distributed.restart_count()}); resuming {found}, "
                 "which this job started, from its newest intact checkpoint")
    return found, resume_config(found, {})  # the command line is the first attempt's, so its config.json is the run's


def _resume_hint(run: _Run | None) -> str:
    """What a rank that lost its peers says about going on: the last complete checkpoint and who resumes it."""
    if run is None or run.last_good is None or run.checkpoints is None:
        return "no checkpoint of this run was complete yet, so it has to start again"
    run_dir = run.checkpoints.parent
    if distributed.restart_count() < int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")):
        return f"the last complete checkpoint is {run.last_good}, which torchrun's restarted processes resume by themselves"
    return f"the last complete checkpoint is {run.last_good}; resume with `torchrun ... -m facegan train --resume {run_dir}`"


def _resume_or_start(config: TrainConfig, resume: Path | None, is_main: bool, progress: bool,
                     held: contextlib.ExitStack, world_size: int, cpu_started: float) -> _Run:
    """The state of a resumed run (its newest intact checkpoint) or of a new one (a new run directory on rank 0)."""
    validate(config)
    device = resolve_device(config.device)
    held.enter_context(out_of_memory_as_error(  # CUDA's error as one sentence naming what to lower
        f"training at --batch-size {config.batch_size} (g-width {config.g_width}, d-width {config.d_width})",
        f"the run's last checkpoint is intact, but a run's batch size is fixed at its start, so start a new run "
        f"with a lower --batch-size, such as {max(1, config.batch_size // 2)}, or lower --g-width and --d-width"))
    checkpoint, run_dir, last_good = None, None, None
    if resume is not None:
        run_dir = Path(resume)
        require_run_dir(run_dir)
        if is_main:  # a restarted attempt waits for its dead predecessor's lock to be released (guard.run_lock)
            held.enter_context(run_lock(run_dir, job=distributed.job_id(),
                                        wait_s=distributed.TIMEOUT_S if distributed.restart_count() else 0.0))
        last_good, checkpoint = checkpoint_to_resume(run_dir, config)
    elif config.data is not None:
        config.data = str(Path(config.data).expanduser().resolve())  # config.json must work from anywhere
    dataset = _training_data(config, progress and is_main, world_size)
    eval_data = _eval_data(config, dataset)  # refused, like the training data, before a run directory exists
    # Labels the data lacks, or a balance it cannot draw, are refused before a run directory exists.
    source = BatchSource(dataset, device, attributes=config.condition, balance=config.balance)
    if checkpoint is not None and is_main:
        warn_if_finished(run_dir, checkpoint, config)  # after every other check, so it never precedes an error
    state = build_state(config, dataset.resolution, device)
    state.labels = source.label_table()
    if checkpoint is not None:
        try:
            reseeded = restore_state(state, checkpoint)
        except (RuntimeError, KeyError, ValueError) as error:
            raise FaceganError(f"{last_good} does not fit the models of its own configuration "
                               f"({str(error).strip().splitlines()[0][:160]}); it is not a usable checkpoint.") from None
        if reseeded and is_main:
            warnings.warn(f"{last_good} was written by {len(checkpoint.get('noise_rng_ranks', [0]))} process(es) and "
                          f"resumes on {world_size}: the schedule and batches continue as they were, but each rank's noise "
                          "is re-seeded (from the seed, its rank and the step), so the run is no longer bit-identical "
                          "to one that never changed its world size.", FaceganWarning, stacklevel=3)
        _resume_learning_rates(state, config, checkpoint)
        state.cpu = cputime.CpuClock(cputime.carried_seconds(checkpoint), cpu_started)
        fixed_noise = checkpoint["fixed_noise"].to(device)
        if not is_main:
            run_dir = None  # other ranks write nothing
        else:
            truncate_stats(run_dir / STATS, state.step)  # drop what was logged after the checkpoint
    else:
        state.cpu = cputime.CpuClock(0.0, cpu_started)
        fixed_noise = torch.randn(config.grid_size, config.latent_dim,
                                  generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
        if is_main:
            run_dir = start_run_dir(config, fixed_noise, dataset, job=distributed.job_id())
            held.enter_context(run_lock(run_dir, job=distributed.job_id()))
    state.parallel = distributed.parallel(state.generator, state.discriminator, device, sync_bn=config.sync_bn)
    checkpoints = distributed.broadcast(checkpoint_dir(run_dir) if run_dir is not None else None)
    if is_main and progress:
        log.info(f"training {config.preset} on {dataset.path} ({len(dataset):,} images of {dataset.resolution}px) "
                 f"on {device} ({state.precision.name}){f' x {world_size} processes' if world_size > 1 else ''}; run directory {run_dir}")
    budget_spent = checkpoint is not None and _spent_at_resume(run_dir, checkpoint, config, is_main)
    return _Run(state, device, dataset, source, fixed_noise, run_dir, last_good, checkpoints, eval_data,
                budget_spent=budget_spent)


def _eval_data(config: TrainConfig, dataset: PreparedDataset) -> PreparedDataset | None:
    """The prepared dataset --eval-every measures against (None: the training data), checked against the run's resolution."""
    if config.eval_data is None:
        return None
    config.eval_data = str(Path(config.eval_data).expanduser().resolve())  # the checkpoint's config works from anywhere
    reference = open_prepared(config.eval_data)
    if reference.resolution != dataset.resolution:
        raise FaceganError(f"--eval-data {reference.path} holds {reference.resolution}x{reference.resolution} images but the "
                           f"run trains at {dataset.resolution}x{dataset.resolution}; give data prepared at --size "
                           f"{dataset.resolution}, as the training data was.")
    if config.eval_every:
        require_images(f"--eval-data {reference.path}", len(reference), parse_metrics(config.evaluate))
    return reference


def _spent_at_resume(run_dir: Path | None, checkpoint: dict, config: TrainConfig, is_main: bool) -> bool:
    """Whether a resumed run has already spent its --max-cpu-minutes (said in a warning: nothing is trained).

    Only a checkpoint at an epoch's end can have spent it (the loop stops there); one taken mid-epoch
    finishes its epoch first.
    """
    if not config.max_cpu_minutes:
        return False
    if "cpu_s" not in checkpoint and is_main:
        warnings.warn(f"{run_dir} was checkpointed before facegan counted CPU time, so --max-cpu-minutes counts from "
                      "this resume (the time it trained before is unknown and taken as 0).", FaceganWarning, stacklevel=3)
    spent = cputime.carried_seconds(checkpoint)
    if checkpoint["batch_in_epoch"] or spent < config.max_cpu_minutes * 60:
        return False
    if is_main:
        warnings.warn(f"{run_dir} has already spent {spent / 60:.1f} CPU minutes, its --max-cpu-minutes "
                      f"{config.max_cpu_minutes:g}, so there is nothing to train; give a larger --max-cpu-minutes "
                      "to train on.", FaceganWarning, stacklevel=3)
    return True


def _training_data(config: TrainConfig, progress: bool, world_size: int) -> PreparedDataset:
    """The run's prepared data, checked against its resolution and batch size; fixes config.resolution."""
    dataset = open_data(config.data, config.synthetic_count, config.resolution, progress=progress)
    if config.resolution is not None and config.resolution != dataset.resolution:
        raise FaceganError(
            f"the data is {dataset.resolution}x{dataset.resolution} but the run is configured for "
            f"{config.resolution}x{config.resolution}; use data prepared at --size {config.resolution}."
        )
    if dataset.resolution not in RESOLUTIONS:
        raise FaceganError(f"{dataset.path} holds {dataset.resolution}x{dataset.resolution} images, a size the models "
                           f"cannot be built at; prepare the source again with --size 32, 64 or 128 (any of "
                           f"{', '.join(map(str, RESOLUTIONS))}).")
    config.resolution = dataset.resolution
    if len(dataset) < config.batch_size:
        raise FaceganError(f"the data has {len(dataset)} images, fewer than one batch of {config.batch_size}; "
                           "lower --batch-size.")
    return dataset


def _resume_learning_rates(state: TrainState, config: TrainConfig, checkpoint: dict) -> None:
    """A resume keeps the checkpoint's learning rates (lowered by any rollback) unless the user gives new ones."""
    if (config.lr_g, config.lr_d) != (checkpoint["config"].get("lr_g"), checkpoint["config"].get("lr_d")):
        state.lr_scale = 1.0  # new rates replace the lowered ones
        for optimizer, key in ((state.opt_g, "lr_g"), (state.opt_d, "lr_d")):
            for group in optimizer.param_groups:
                group["lr"] = getattr(config, key)


def set_learning_rates(state: TrainState, config: TrainConfig, total_g_steps: int) -> None:
    """Both optimizers' rates for the next G update: configured x schedule x any rollback's lowering."""
    factor = lr_factor(state.step, total_g_steps, config.lr_schedule, config.lr_decay_start) * state.lr_scale
    set_lr(state.opt_g, [config.lr_g], factor)
    set_lr(state.opt_d, [config.lr_d], factor)


# ----------------------------------------------------------------------------- maintenance


@dataclass
class _EpochMeter:
    """One epoch's progress bar, logged records, D's probabilities for the histogram, and speed."""

    bar: tqdm
    steps_per_epoch: int
    world_size: int = 1
    probabilities: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    losses: list[tuple[float, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    images: int = 0

    @classmethod
    def start(cls, state: TrainState, config: TrainConfig, steps_per_epoch: int, show: bool, world_size: int) -> _EpochMeter:
        """A meter, with its bar, for the rest of the state's epoch."""
        bar = tqdm(total=steps_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{config.epochs}",
                   unit="batch", disable=not show, dynamic_ncols=True, leave=False)
        return cls(bar, steps_per_epoch, world_size)

    def observe(self, out: dict, state: TrainState, config: TrainConfig, images: int, logging_now: bool,
                run_dir: Path | None) -> None:
        """Count a step; keep the epoch's last probabilities; on log steps read the values back and record them."""
        self.bar.update(1)
        self.images += images
        if config.loss == "bce" and state.batch_in_epoch > self.steps_per_epoch - config.histogram_batches:
            self.probabilities.append((torch.sigmoid(out["real_logits"]), torch.sigmoid(out["fake_logits"])))
        if not logging_now:
            return
        if self.world_size > 1:  # the global batch's losses and penalties, not rank 0's share of it
            out = out | distributed.mean_over_ranks({k: out[k] for k in ("loss_d", "loss_g", *EXTRA_TERMS) if k in out})
        # The only host-device synchronisation: values are read back when logged.
        record = _record(state, out, self.images / (time.perf_counter() - self.started), config, self.world_size)
        self.losses.append((record["loss_d"], record["loss_g"]))
        if run_dir is not None:
            append_stats(run_dir / STATS, record)
            self.bar.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}",
                                 img_s=f"{record['images_per_s']:.0f}")

    def close(self) -> None:
        """Take the bar off the screen."""
        self.bar.close()

    def finish(self, state: TrainState, config: TrainConfig, run_dir: Path | None, progress: bool,
               pictures: PictureBudget | None) -> None:
        """Close the bar; on rank 0 the epoch's histogram of D's probabilities when plots are due (`pictures`, timing it)
        and, with progress on, one summary line."""
        self.close()
        if run_dir is None:
            return
        if self.probabilities and pictures is not None:
            with pictures.drawing():
                real = torch.cat([p[0] for p in self.probabilities]).float().cpu().numpy()
                fake = torch.cat([p[1] for p in self.probabilities]).float().cpu().numpy()
                _plot_probabilities(real, fake, run_dir, state.epoch)
        if progress:
            rate = self.images / (time.perf_counter() - self.started)
            losses = ""
            if self.losses:
                mean_d, mean_g = np.mean(self.losses, axis=0)
                losses = f"loss_d {mean_d:.3f}  loss_g {mean_g:.3f}  "
            log.info(f"epoch {state.epoch}/{config.epochs}  step {state.step}  {losses}{rate:.0f} img/s  "
                     f"-> {run_dir / 'samples' / f'epoch-{state.epoch:04d}.png'}")


def _record(state: TrainState, out: dict, rate: float, config: TrainConfig, world_size: int) -> dict:
    """One stats.jsonl record: losses, D's logits (and probabilities under BCE), penalties, rates, speed."""
    record = {
        "step": state.step,
        "epoch": state.epoch + 1,
        "kimg": state.d_updates * config.batch_size / 1000,  # real images D has seen, on all ranks (the global batch)
        "loss_d": float(out["loss_d"]),
        "loss_g": float(out["loss_g"]),
        "logit_real": float(out["real_logits"].mean()),
        "logit_fake": float(out["fake_logits"].mean()),
    }
    if config.loss == "bce":  # D's output is a probability only under BCE
        record["d_real"] = float(torch.sigmoid(out["real_logits"]).mean())
        record["d_fake"] = float(torch.sigmoid(out["fake_logits"]).mean())
    record.update({name: float(out[name]) for name in EXTRA_TERMS if name in out})
    record.update({"lr_g": state.opt_g.param_groups[0]["lr"], "lr_d": state.opt_d.param_groups[0]["lr"],
                   "images_per_s": rate * world_size,  # wall-clock speed
                   "cpu_s": state.cpu.seconds()})  # the run's CPU time (rank 0's process), over all its resumes
    return record


def _finish_epoch(state: TrainState, config: TrainConfig, run: _Run, guard: DivergenceGuard) -> str | None:
    """Close an epoch: check every weight, then (rank 0) the grid, plots, checkpoints and metrics; why it diverged, or None."""
    state.refresh_ema_statistics(config)  # on every rank: the grid, the metrics and the checkpoint all use them
    diverged = guard.check(read=True, checkpoint=(checkpoint := state.to_checkpoint(config, run.fixed_noise)))
    diverged = _agreed(diverged, checkpoint)
    if diverged:
        return diverged
    distributed.check_consistent(state.generator, state.discriminator)  # the ranks' G and D are one model
    state.epoch += 1
    state.batch_in_epoch = 0
    # The budget is judged on the CPU time the epoch's checkpoint carries, so that a resume of it with the same
    # budget agrees that nothing is left. Rank 0's decides for every rank (each counts its own process).
    run.budget_spent = bool(distributed.broadcast(
        bool(config.max_cpu_minutes) and checkpoint["cpu_s"] >= config.max_cpu_minutes * 60))
    run.plots_due = run.pictures.due(last=state.epoch >= config.epochs or run.budget_spent)
    if run.run_dir is not None:
        checkpoint.update(epoch=state.epoch, batch_in_epoch=0)
        _end_of_epoch(run.run_dir, config, state, run.dataset, run.fixed_noise, checkpoint,
                      run.pictures if run.plots_due else None)
    # A run stopped by its budget is always measured at its stop, due or not: its last model is the one the
    # budget bought, and what a comparison at equal CPU time compares. (A run ending at --epochs is measured
    # only when due, as before.) Every rank measures its share of the images.
    if config.eval_every and (state.epoch % config.eval_every == 0 or run.budget_spent):
        _evaluate_epoch(run.run_dir, config, state, run.eval_data or run.dataset, checkpoint)
    distributed.barrier()  # the other ranks wait (bounded) for rank 0's grid, checkpoint and metrics
    run.saved_latest()
    return None


@reporting_disk_errors("the epoch's samples and plots")
def _end_of_epoch(run_dir: Path, config: TrainConfig, state: TrainState, dataset: PreparedDataset,
                  fixed_noise: torch.Tensor, checkpoint: dict, pictures: PictureBudget | None) -> None:
    """Grid and checkpoints after each epoch (rank 0 only), and the plots when they are due (`pictures`, timing them)."""
    epoch = state.epoch
    if config.condition:
        save_conditional_grid(state.sampling_generator, fixed_noise, config.condition,
                              run_dir / "samples" / f"epoch-{epoch:04d}.png")
        fakes = generate(state.sampling_generator, fixed_noise,
                         labels=torch.from_numpy(state.labels.draw(len(fixed_noise), config.seed)).to(fixed_noise.device))
    else:
        fakes = generate(state.sampling_generator, fixed_noise)
        viz.save_png(viz.make_grid(fakes), run_dir / "samples" / f"epoch-{epoch:04d}.png")
    if pictures is not None:
        with pictures.drawing():
            stats = plots.read_stats(run_dir / STATS) if (run_dir / STATS).exists() else []
            if stats:
                plots.plot_losses(stats, run_dir / "plots" / "losses.png")
            count = min(32, len(fakes), len(dataset))
            reals = dataset.take(np.sort(np.random.default_rng(epoch).choice(len(dataset), count, replace=False)))
            plots.real_vs_fake(reals, fakes[:count], run_dir / "plots" / "real-vs-fake.png")
    save_checkpoint(checkpoint, checkpoint_dir(run_dir) / LATEST)
    if config.checkpoint_every_epochs and epoch % config.checkpoint_every_epochs == 0:
        save_checkpoint(checkpoint, checkpoint_dir(run_dir) / epoch_checkpoint_name(epoch))


def save_conditional_grid(generator: torch.nn.Module, fixed_noise: torch.Tensor, names: tuple[str, ...], path: Path,
                          columns: int = 8) -> Path:
    """A conditional grid: one row per condition of `grid_conditions`, the same fixed noise along every row."""
    captions, conditions = grid_conditions(names)
    z = fixed_noise[:columns]
    rows = len(conditions)
    labels = torch.from_numpy(conditions).repeat_interleave(len(z), dim=0).to(z.device)
    images = generate(generator, z.repeat(rows, 1), labels=labels)
    grid = viz.caption_rows(viz.make_grid(images, nrow=len(z)), captions, images.shape[1])
    return viz.save_png(grid, path)


@reporting_disk_errors("the epoch's probability histogram")
def _plot_probabilities(real: np.ndarray, fake: np.ndarray, run_dir: Path, epoch: int) -> None:
    plots.plot_probabilities(real, fake, run_dir / "plots" / f"probabilities-epoch-{epoch:04d}.png", title=f"epoch {epoch}")


def _evaluate_epoch(run_dir: Path | None, config: TrainConfig, state: TrainState, dataset: PreparedDataset, checkpoint: dict) -> None:
    """Measure the sampling G against `dataset` (--eval-data, else the training data); keep the checkpoint best on the
    first metric against that same dataset as best.pt."""
    metrics = parse_metrics(config.evaluate)
    generator = state.sampling_generator
    with out_of_memory_as_error(f"measuring {config.evaluate} after epoch {state.epoch}",
                                f"the epoch's checkpoint is saved; resume with --eval-every 0 and measure afterwards "
                                f"with `facegan evaluate {run_dir} --metrics {config.evaluate} --batch-size 50`"):
        values = evaluate(sampler(generator, config.latent_dim, labels=state.labels), dataset, metrics,
                          device=next(generator.parameters()).device, seed=config.seed)
    if run_dir is None:  # a rank other than 0: its share is measured, rank 0 records the values
        return
    first = metrics[0]
    primary, sign = first.value_keys()[0], (-1 if first.higher_is_better else 1)
    # Only values against the same reference compare (a resume may change --eval-data); damaged lines set aside, with a warning.
    history = [r for r in read_metrics(run_dir) if primary in r and r.get("dataset") == str(dataset.path)]
    best = min((r[primary] * sign for r in history), default=math.inf)
    kept = checkpoint_dir(run_dir) / epoch_checkpoint_name(state.epoch)
    record = {"step": state.step, "epoch": state.epoch, "kimg": state.d_updates * config.batch_size / 1000,
              "cpu_s": checkpoint["cpu_s"], **values,  # the CPU time that bought the measured checkpoint
              "checkpoint": str(kept if kept.exists() else checkpoint_dir(run_dir) / LATEST), "dataset": str(dataset.path),
              "reference": "eval-data" if config.eval_data is not None else "training data"}
    if values[primary] * sign < best:
        save_checkpoint(checkpoint, checkpoint_dir(run_dir) / BEST)
        record["best"] = True
    append_metrics(run_dir, record)


def _stop_at_signal(stop: StopRequest, state: TrainState, checkpoint: dict, run_dir: Path | None, saved: bool,
                    meter: _EpochMeter) -> None:
    """Write latest.pt (rank 0; unless this step's is already written) and raise Interrupted saying how to resume."""
    meter.close()
    where = f"epoch {state.epoch + 1}, batch {state.batch_in_epoch}"
    signum = stop.signum or signal.SIGTERM  # None: the signal came to another rank
    name = stop.name or f"{signal.Signals(signum).name} on another process"
    if run_dir is None:
        raise Interrupted(f"stopped by {name} at step {state.step} ({where}); rank 0 writes the checkpoint.", signum)
    latest = checkpoint_dir(run_dir) / LATEST
    if not saved:
        save_checkpoint(checkpoint, latest)
    raise Interrupted(f"stopped by {name} at step {state.step} ({where}) and saved {latest}; "
                      f"continue with `facegan train --resume {run_dir}`.", signum)
