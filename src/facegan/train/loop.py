"""The training loop: one function, the steps named, every artifact a user watches.

A run directory holds config.json, stats.jsonl, fixed_noise.pt, samples/, plots/ and
checkpoints/. Only rank 0 writes; every rank draws its own share of each epoch's batches, so
the loop can later run under torchrun unchanged.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facegan import plots, viz
from facegan.augment import diff_augment, random_flip
from facegan.config import TrainConfig, changed_on_resume, validate
from facegan.data import PreparedDataset, open_prepared
from facegan.errors import FaceganError, Interrupted
from facegan.files import write_atomically
from facegan.losses import LOSSES, gradient_penalty, r1_penalty
from facegan.models import build_models
from facegan.paths import output_dir
from facegan.train.batches import BatchSource, to_model_input
from facegan.train.checkpoint import (
    LATEST,
    checkpoint_dir,
    epoch_checkpoint_name,
    load_checkpoint,
    newest_good_checkpoint,
    save_checkpoint,
)
from facegan.train.ema import EMA, beta_for
from facegan.train.guard import (
    DivergenceGuard,
    StopRequest,
    reporting_disk_errors,
    run_lock,
    stop_on_signals,
)
from facegan.train.precision import Precision, resolve_precision
from facegan.train.schedule import lr_factor, set_lr

FP32 = Precision("fp32", "cpu")
BEST = "best.pt"  # the checkpoint best on the first --eval metric
SYNTHETIC_SEED = 0  # the built-in dataset is always the same faces; the run's seed drives training


# ----------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FaceganError(f"--device {name} was asked for but PyTorch sees no CUDA GPU; use --device auto or cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise FaceganError("--device mps was asked for but Apple's MPS is not available; use --device auto or cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FaceganError(f"device must be auto, cpu, cuda, cuda:N or mps, not {name!r}.") from None


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] (B, 3, H, W) -> uint8 (B, H, W, 3), as a saved PNG holds it."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def cache_dir() -> Path:
    """Where built-in data is prepared once: $FACEGAN_CACHE, else ~/.cache/facegan."""
    base = os.environ.get("FACEGAN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegan"
    return Path(base)


def open_training_data(config: TrainConfig, progress: bool) -> PreparedDataset:
    """The prepared dataset of a config: its --data, or the synthetic faces (prepared on first use)."""
    if config.data is not None:
        return open_prepared(config.data)
    from facegan.data.prepare import prepare

    resolution = config.resolution or 64
    path = cache_dir() / f"synthetic-{config.synthetic_count}-{resolution}px-seed{SYNTHETIC_SEED}"
    if not (path / "dataset.json").exists():
        if progress:
            print(f"preparing {config.synthetic_count:,} synthetic faces once, into {path}", file=sys.stderr)
        prepare("synthetic", path, count=config.synthetic_count, size=resolution, seed=SYNTHETIC_SEED, progress=progress, force=True)
    return open_prepared(path)


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


@dataclass
class TrainState:
    """Everything that changes while training; a checkpoint is this, serialised."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    noise: torch.Generator  # draws every latent vector, so resuming restores it exactly
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    step: int = 0  # G updates so far
    precision: Precision = FP32
    scaler: torch.amp.GradScaler | None = None  # float16 only
    compiled: tuple[nn.Module, nn.Module] | None = None  # torch.compile'd G and D sharing the weights
    ema: EMA | None = None  # the moving average of G, when config.ema_kimg > 0
    d_updates: int = 0  # D updates so far (more than `step` with several D steps per G step)
    lr_scale: float = 1.0  # lowered by each divergence rollback; multiplies the configured (and scheduled) rates

    def to_checkpoint(self, config: TrainConfig, fixed_noise: torch.Tensor) -> dict:
        """Tensors and plain data only, so it loads with weights_only=True."""
        return {
            "config": config.to_dict(),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "noise_rng": self.noise.get_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "d_updates": self.d_updates,
            "lr_scale": self.lr_scale,
            "fixed_noise": fixed_noise.cpu(),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            **({"generator_ema": self.ema.state_dict()} if self.ema is not None else {}),
        }


def build_state(config: TrainConfig, resolution: int, device: torch.device) -> TrainState:
    """Fresh models (DCGAN initialisation), Adam optimizers and the noise generator, seeded."""
    torch.manual_seed(config.seed)
    generator, discriminator = build_models(config.model, config.latent_dim, config.g_width, config.d_width, resolution,
                                            d_norm=config.d_norm, spectral_norm=config.spectral_norm)
    generator = generator.to(device, memory_format=torch.channels_last)
    discriminator = discriminator.to(device, memory_format=torch.channels_last)
    # Fused Adam on a GPU, foreach on the CPU: a few kernels per step for all tensors instead of
    # several per parameter. Optimizer state stays float32 whatever the precision.
    adam = dict(betas=config.betas, **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, **adam)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, **adam)
    noise = torch.Generator(device=device).manual_seed(config.seed)
    precision = resolve_precision(config.precision, device)
    return TrainState(generator, discriminator, opt_g, opt_d, noise, precision=precision, scaler=precision.scaler(),
                      compiled=_compile(generator, discriminator, config.compile, device),
                      ema=EMA(generator) if config.ema_kimg > 0 else None)


def _compile(generator: nn.Module, discriminator: nn.Module, mode: str, device: torch.device) -> tuple[nn.Module, nn.Module] | None:
    """torch.compile'd G and D where it pays: on CUDA, where launches of small kernels dominate.

    The compiled modules share their parameters with the originals, so checkpoints and the
    optimizers see the plain modules' state_dicts (no `_orig_mod.` prefixes).
    """
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    options = {"mode": "reduce-overhead"} if mode == "cudagraphs" else {}
    return torch.compile(generator, **options), torch.compile(discriminator, **options)


def restore_state(state: TrainState, checkpoint: dict) -> None:
    """Load a checkpoint's tensors into a freshly built state."""
    state.generator.load_state_dict(checkpoint["generator"])
    state.discriminator.load_state_dict(checkpoint["discriminator"])
    state.opt_g.load_state_dict(checkpoint["opt_g"])
    state.opt_d.load_state_dict(checkpoint["opt_d"])
    state.noise.set_state(checkpoint["noise_rng"])
    if state.scaler is not None and "scaler" in checkpoint:
        state.scaler.load_state_dict(checkpoint["scaler"])
    if state.ema is not None:  # a run that turns the EMA on when resumed starts it from G
        state.ema.load_state_dict(checkpoint.get("generator_ema", checkpoint["generator"]))
    state.epoch, state.batch_in_epoch, state.step = checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["step"]
    state.d_updates = checkpoint.get("d_updates", state.step)
    state.lr_scale = checkpoint.get("lr_scale", 1.0)


def train_step(state: TrainState, reals: torch.Tensor, config: TrainConfig, update_g: bool = True) -> dict[str, torch.Tensor]:
    """One D update on a batch of reals and, when `update_g`, one G update; returns detached tensors.

    Nothing here reads a value back to the host, so a GPU never waits on the CPU. The models run
    under the state's precision (autocast); logits are cast to float32 before any loss, so losses,
    penalties, weight gradients and optimizer state are float32. With DiffAugment on, D sees only
    augmented images, real and generated alike, in both updates (Zhao et al. 2020).
    """
    d_loss, g_loss = LOSSES[config.loss]
    G, D = state.compiled or (state.generator, state.discriminator)
    noise = state.noise
    augment = (lambda x: diff_augment(x, config.augment, noise)) if config.augment else (lambda x: x)
    if config.flip:
        reals = random_flip(reals, noise)
    z = torch.randn(len(reals), config.latent_dim, generator=noise, device=reals.device)
    # G's graph is kept only when this batch's fakes also update G (DCGAN's one-D-step-per-G-step
    # reuse); with several D steps per G step, D-only steps generate without it.
    reuse = update_g and config.d_steps == 1
    lazy_r1 = config.r1_gamma > 0 and state.d_updates % config.r1_every == 0

    # Update D: real and generated images in separate batches, as DCGAN does (BatchNorm per batch).
    with state.precision.autocast():
        with torch.set_grad_enabled(reuse):
            fakes = G(z)
        reals_seen = reals.detach().requires_grad_(lazy_r1)
        real_logits = D(augment(reals_seen)).float()
        fake_logits = D(augment(fakes.detach())).float()
    loss_d = d_loss(real_logits, fake_logits)
    total_d = loss_d
    penalties = {}
    with state.precision.autocast() if state.scaler is None else contextlib.nullcontext():  # fp16: penalties in fp32
        if config.gp_weight:
            critic = lambda x: D(augment(x))  # the penalty is on what D is trained on
            penalties["gp"] = gradient_penalty(critic, reals, fakes.detach().float(), noise).float()
            total_d = total_d + config.gp_weight * penalties["gp"]
        if lazy_r1:
            # R1 on the images before augmentation, as StyleGAN2-ADA; times the interval for laziness.
            penalties["r1"] = r1_penalty(real_logits, reals_seen).float()
            total_d = total_d + (config.r1_gamma / 2) * config.r1_every * penalties["r1"]
    state.opt_d.zero_grad(set_to_none=True)
    _backward_and_step(total_d, state.opt_d, state.scaler)
    state.d_updates += 1
    out = {"loss_d": loss_d.detach(), "real_logits": real_logits.detach(), "fake_logits": fake_logits.detach(),
           **{name: value.detach() for name, value in penalties.items()}}
    if not update_g:
        if state.scaler is not None:
            state.scaler.update()
        return out

    # Update G: through the just-updated D (on the same fakes, or on new ones after D-only steps).
    # D's weights are frozen meanwhile: the backward pass then skips their gradients, which this
    # update would only throw away (2.48 -> 2.27 GFLOP per image for DCGAN-64).
    with _frozen(state.discriminator):
        with state.precision.autocast():
            if not reuse:
                fakes = G(torch.randn(len(reals), config.latent_dim, generator=noise, device=reals.device))
            loss_g = g_loss(D(augment(fakes)).float())
        state.opt_g.zero_grad(set_to_none=True)
        _backward_and_step(loss_g, state.opt_g, state.scaler)
    if state.scaler is not None:
        state.scaler.update()
    state.step += 1
    if state.ema is not None:
        images = state.step * config.batch_size
        state.ema.update(state.generator, beta_for(config.ema_kimg * 1000, config.batch_size, images, config.ema_rampup))
    out["loss_g"] = loss_g.detach()
    return out


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """The module's parameters need no gradient inside the block (they still pass gradients through)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def _backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and step, through the float16 gradient scaler when there is one."""
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)


def sampling_generator(state: TrainState) -> nn.Module:
    """The G that grids, samples and metrics use: the moving average when there is one."""
    return state.ema.module if state.ema is not None else state.generator


def generate(generator: nn.Module, z: torch.Tensor, batch_size: int = 256, precision: Precision | None = None) -> np.ndarray:
    """uint8 images from latent vectors, in eval mode (BatchNorm's running statistics).

    `precision` (default float32) lets bulk sampling use bf16 where it is fast; the result is
    quantised to uint8 either way, so they differ by at most a grey level here and there.
    """
    was_training = generator.training
    generator.eval()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    try:
        with torch.inference_mode(), autocast():
            return np.concatenate([to_uint8(generator(chunk)) for chunk in z.split(batch_size)])
    finally:
        generator.train(was_training)


# ----------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig,
    *,
    resume: Path | None = None,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    stop_after_steps: int | None = None,
) -> Path | None:
    """Train (or resume) a run; return its directory (None on ranks other than 0).

    `rank` and `world_size` default to torchrun's RANK and WORLD_SIZE. `stop_after_steps` ends
    the run early once that many steps are done, as an interruption would (latest.pt is not
    refreshed), for time-boxed runs and tests.

    Only one process trains a run directory at a time (a lock). SIGTERM and SIGINT stop training
    at the next step boundary, after writing latest.pt, by raising Interrupted. A NaN or infinite
    loss or weight rolls the run back to its last good checkpoint with lower learning rates.
    """
    with contextlib.ExitStack() as held:  # the run's lock and signal handlers, released however training ends
        return _train(config, held, resume, progress, rank, world_size, stop_after_steps)


def _train(config: TrainConfig, held: contextlib.ExitStack, resume: Path | None, progress: bool, rank: int | None,
           world_size: int | None, stop_after_steps: int | None) -> Path | None:
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    is_main = rank == 0
    validate(config)
    device = resolve_device(config.device)

    checkpoint, run_dir = None, None  # run_dir stays None on ranks other than 0: they write nothing
    last_good = None  # the checkpoint a divergence rolls back to; None: the run's start
    if resume is not None:
        run_dir = Path(resume)
        _require_run_dir(run_dir)
        if is_main:
            held.enter_context(run_lock(run_dir))
        last_good, checkpoint = _checkpoint_to_resume(run_dir, config)
    elif config.data is not None:
        config.data = str(Path(config.data).expanduser().resolve())  # config.json must work from anywhere
    dataset = open_training_data(config, progress and is_main)
    if config.resolution is not None and config.resolution != dataset.resolution:
        raise FaceganError(
            f"the data is {dataset.resolution}x{dataset.resolution} but the run is configured for "
            f"{config.resolution}x{config.resolution}; use data prepared at --size {config.resolution}."
        )
    config.resolution = dataset.resolution
    if len(dataset) < config.batch_size * world_size:
        raise FaceganError(f"the data has {len(dataset)} images, fewer than one batch of {config.batch_size} per process; lower --batch-size.")

    state = build_state(config, dataset.resolution, device)
    if checkpoint is not None:
        try:
            restore_state(state, checkpoint)
        except (RuntimeError, KeyError, ValueError) as error:
            raise FaceganError(f"{last_good} does not fit the models of its own configuration "
                               f"({str(error).strip().splitlines()[0][:160]}); it is not a usable checkpoint.") from None
        _resume_learning_rates(state, config, checkpoint)
        fixed_noise = checkpoint["fixed_noise"].to(device)
    else:
        fixed_noise = torch.randn(config.grid_size, config.latent_dim, generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
        if is_main:
            run_dir = new_run_dir(Path(config.runs_dir), config.preset)
            held.enter_context(run_lock(run_dir))
            config.save(run_dir / "config.json")
            torch.save(fixed_noise.cpu(), run_dir / "fixed_noise.pt")
            reals = dataset.take(np.arange(min(config.grid_size, len(dataset))))
            viz.save_png(viz.make_grid(reals), run_dir / "samples" / "reals.png")
    stats_path = run_dir / "stats.jsonl" if is_main else None
    if is_main and checkpoint is not None:
        _truncate_stats(stats_path, state.step)  # drop what was logged after the checkpoint
    if is_main and progress:
        print(f"training {config.preset} on {dataset.path} ({len(dataset):,} images of {dataset.resolution}px) "
              f"on {device} ({state.precision.name}); run directory {run_dir}", file=sys.stderr)

    stop = held.enter_context(stop_on_signals())  # from here on SIGTERM and SIGINT stop at a step boundary
    guard, rollbacks = DivergenceGuard(device), 0
    source = BatchSource(dataset, device)
    steps_per_epoch = source.steps_per_epoch(config.batch_size, world_size)
    total_g_steps = max(1, config.epochs * (steps_per_epoch // config.d_steps))  # the end of any lr decay
    while state.epoch < config.epochs:
        epoch = state.epoch
        batches = source.epoch(config.batch_size, seed=config.seed, epoch=epoch, rank=rank, world_size=world_size,
                               skip=state.batch_in_epoch)  # resume mid-epoch exactly
        bar = tqdm(batches, total=steps_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="batch", disable=not (progress and is_main), dynamic_ncols=True, leave=False)
        probabilities: list[tuple[torch.Tensor, torch.Tensor]] = []
        sums = {"loss_d": 0.0, "loss_g": 0.0, "n": 0}
        started, images_seen = time.perf_counter(), 0
        rolled_back = False
        for batch in bar:
            # Every batch updates D; every d_steps-th batch of an epoch also updates G. Logging and
            # step checkpoints count G updates, so they happen on those batches.
            update_g = (state.batch_in_epoch + 1) % config.d_steps == 0
            if update_g:
                set_learning_rates(state, config, total_g_steps)
            out = train_step(state, to_model_input(batch), config, update_g)
            state.batch_in_epoch += 1
            images_seen += len(batch)
            # Divergence: the loss flag is read on the host only where that costs no extra sync
            # (CPU, log steps) and, with every weight, before anything is saved.
            guard.observe(*(out[k] for k in ("loss_d", "loss_g", "gp", "r1") if k in out))
            logging = update_g and state.step % config.log_every == 0
            saving = bool(is_main and update_g and config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0)
            checkpoint = state.to_checkpoint(config, fixed_noise) if saving or stop else None  # checked, then saved
            diverged = guard.check(read=saving or bool(stop) or logging, checkpoint=checkpoint)
            if diverged:
                rollbacks = _roll_back(state, config, guard, rollbacks, diverged, last_good, fixed_noise, stats_path, run_dir)
                rolled_back = True
                break
            if config.loss == "bce" and state.batch_in_epoch > steps_per_epoch - config.histogram_batches:
                probabilities.append((torch.sigmoid(out["real_logits"]), torch.sigmoid(out["fake_logits"])))
            if logging:
                # The only host-device synchronisation: values are read back when logged.
                record = _record(state, out, epoch, images_seen / (time.perf_counter() - started), config, world_size)
                sums["loss_d"] += record["loss_d"]
                sums["loss_g"] += record["loss_g"]
                sums["n"] += 1
                if is_main:
                    _append_stats(stats_path, record)
                    bar.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}",
                                    img_s=f"{record['images_per_s']:.0f}")
            if saving:
                save_checkpoint(checkpoint, checkpoint_dir(run_dir) / LATEST)
                last_good = checkpoint_dir(run_dir) / LATEST
            if stop:
                bar.close()
                _stop_at_signal(stop, state, checkpoint, run_dir, saved=saving)
            if stop_after_steps is not None and state.step >= stop_after_steps:
                bar.close()
                return run_dir
        bar.close()
        if not rolled_back:  # nothing of a diverged epoch is drawn or saved
            diverged = guard.check(read=True, checkpoint=state.to_checkpoint(config, fixed_noise))
            if diverged:
                rollbacks = _roll_back(state, config, guard, rollbacks, diverged, last_good, fixed_noise, stats_path, run_dir)
                rolled_back = True
        if rolled_back:
            continue
        state.epoch += 1
        state.batch_in_epoch = 0
        if is_main:
            _end_of_epoch(run_dir, config, state, dataset, fixed_noise, probabilities)
            last_good = checkpoint_dir(run_dir) / LATEST
            rate = images_seen / (time.perf_counter() - started)
            losses = (f"loss_d {sums['loss_d'] / sums['n']:.3f}  loss_g {sums['loss_g'] / sums['n']:.3f}  " if sums["n"] else "")
            if progress:
                print(f"epoch {state.epoch}/{config.epochs}  step {state.step}  {losses}{rate:.0f} img/s  "
                      f"-> {run_dir / 'samples' / f'epoch-{state.epoch:04d}.png'}", file=sys.stderr)
    return run_dir


def _record(state: TrainState, out: dict, epoch: int, rate: float, config: TrainConfig, world_size: int) -> dict:
    record = {
        "step": state.step,
        "epoch": epoch + 1,
        "kimg": state.d_updates * config.batch_size * world_size / 1000,  # real images D has seen
        "loss_d": float(out["loss_d"]),
        "loss_g": float(out["loss_g"]),
        "logit_real": float(out["real_logits"].mean()),
        "logit_fake": float(out["fake_logits"].mean()),
    }
    if config.loss == "bce":  # D's output is a probability only under BCE
        record["d_real"] = float(torch.sigmoid(out["real_logits"]).mean())
        record["d_fake"] = float(torch.sigmoid(out["fake_logits"]).mean())
    record.update({name: float(out[name]) for name in ("gp", "r1") if name in out})
    record.update({"lr_g": state.opt_g.param_groups[0]["lr"], "lr_d": state.opt_d.param_groups[0]["lr"],
                   "images_per_s": rate * world_size})
    return record


def set_learning_rates(state: TrainState, config: TrainConfig, total_g_steps: int) -> None:
    """Both optimizers' rates for the next G update: configured x schedule x any rollback's lowering."""
    factor = lr_factor(state.step, total_g_steps, config.lr_schedule, config.lr_decay_start) * state.lr_scale
    set_lr(state.opt_g, [config.lr_g], factor)
    set_lr(state.opt_d, [config.lr_d], factor)


@reporting_disk_errors("stats.jsonl")
def _append_stats(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


@reporting_disk_errors("stats.jsonl")
def _truncate_stats(path: Path, step: int) -> None:
    """Keep only the records up to `step`, so a resumed run's log has no duplicated steps."""
    if not path.exists():
        return
    kept = [r for r in plots.read_stats(path) if r.get("step", 0) <= step]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


@reporting_disk_errors("the epoch's samples and plots")
def _end_of_epoch(run_dir: Path, config: TrainConfig, state: TrainState, dataset: PreparedDataset,
                  fixed_noise: torch.Tensor, probabilities: list) -> None:
    """Grid, plots and checkpoints after each epoch (rank 0 only)."""
    epoch = state.epoch
    fakes = generate(sampling_generator(state), fixed_noise)
    viz.save_png(viz.make_grid(fakes), run_dir / "samples" / f"epoch-{epoch:04d}.png")
    if probabilities:
        real = torch.cat([p[0] for p in probabilities]).float().cpu().numpy()
        fake = torch.cat([p[1] for p in probabilities]).float().cpu().numpy()
        plots.plot_probabilities(real, fake, run_dir / "plots" / f"probabilities-epoch-{epoch:04d}.png", title=f"epoch {epoch}")
    stats = plots.read_stats(run_dir / "stats.jsonl") if (run_dir / "stats.jsonl").exists() else []
    if stats:
        plots.plot_losses(stats, run_dir / "plots" / "losses.png")
    count = min(32, len(fakes), len(dataset))
    reals = dataset.take(np.sort(np.random.default_rng(epoch).choice(len(dataset), count, replace=False)))
    plots.real_vs_fake(reals, fakes[:count], run_dir / "plots" / "real-vs-fake.png")
    checkpoint = state.to_checkpoint(config, fixed_noise)
    save_checkpoint(checkpoint, checkpoint_dir(run_dir) / LATEST)
    if config.checkpoint_every_epochs and epoch % config.checkpoint_every_epochs == 0:
        save_checkpoint(checkpoint, checkpoint_dir(run_dir) / epoch_checkpoint_name(epoch))
    if config.eval_every and epoch % config.eval_every == 0:
        _evaluate_epoch(run_dir, config, state, dataset, checkpoint)


def _evaluate_epoch(run_dir: Path, config: TrainConfig, state: TrainState, dataset: PreparedDataset, checkpoint: dict) -> None:
    """Measure the sampling G against the training data; keep the checkpoint best on the first metric as best.pt."""
    from facegan.metrics.evaluate import (
        append_metrics,
        evaluate_generator,
        parse_metrics,
    )

    metrics = parse_metrics(config.evaluate)
    values = evaluate_generator(sampling_generator(state), config.latent_dim, dataset, metrics, seed=config.seed)
    primary = metrics[0].value_keys()[0]
    higher_is_better = metrics[0].kind == "pr"  # precision: more is better; FID and KID: less
    history = [r for r in plots.read_stats(run_dir / "metrics.jsonl") if primary in r] if (run_dir / "metrics.jsonl").exists() else []
    best = min((r[primary] * (-1 if higher_is_better else 1) for r in history), default=math.inf)
    kept = checkpoint_dir(run_dir) / epoch_checkpoint_name(state.epoch)
    record = {"step": state.step, "epoch": state.epoch, "kimg": state.d_updates * config.batch_size / 1000, **values,
              "checkpoint": str(kept if kept.exists() else checkpoint_dir(run_dir) / LATEST), "dataset": str(dataset.path)}
    if values[primary] * (-1 if higher_is_better else 1) < best:
        save_checkpoint(checkpoint, checkpoint_dir(run_dir) / BEST)
        record["best"] = True
    append_metrics(run_dir, record)


def resume_config(run_dir: Path, overrides: dict) -> TrainConfig:
    """A run's saved config with the user's changes (e.g. more --epochs) applied and validated."""
    _require_run_dir(Path(run_dir))
    saved = TrainConfig.load(Path(run_dir) / "config.json").to_dict()
    try:
        config = TrainConfig.from_dict({**saved, **{k: v for k, v in overrides.items() if v is not None}})
        validate(config)
    except (TypeError, ValueError, AttributeError) as error:  # a hand-edited config.json of the wrong types
        raise FaceganError(f"{Path(run_dir) / 'config.json'} is damaged ({error}); fix it or start a new run.") from None
    return config


def _require_run_dir(run_dir: Path) -> None:
    if run_dir.is_file():
        raise FaceganError(f"{run_dir} is a file; --resume takes a run directory (runs/NNNNN-preset), not a checkpoint.")
    if not (run_dir / "config.json").is_file():
        raise FaceganError(f"{run_dir} is not a facegan run directory (no config.json); give a directory under runs/.")


_CHECKPOINT_KEYS = ("config", "generator", "discriminator", "opt_g", "opt_d", "noise_rng", "epoch", "batch_in_epoch",
                    "step", "fixed_noise")


def _checkpoint_to_resume(run_dir: Path, config: TrainConfig) -> tuple[Path, dict]:
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
    return path, checkpoint


def _resume_learning_rates(state: TrainState, config: TrainConfig, checkpoint: dict) -> None:
    """A resume keeps the checkpoint's learning rates (lowered by any rollback) unless the user gives new ones."""
    if (config.lr_g, config.lr_d) != (checkpoint["config"].get("lr_g"), checkpoint["config"].get("lr_d")):
        state.lr_scale = 1.0  # new rates replace the lowered ones
        for optimizer, key in ((state.opt_g, "lr_g"), (state.opt_d, "lr_d")):
            for group in optimizer.param_groups:
                group["lr"] = getattr(config, key)


def _roll_back(state: TrainState, config: TrainConfig, guard: DivergenceGuard, rollbacks: int, reason: str,
               last_good: Path | None, fixed_noise: torch.Tensor, stats_path: Path | None, run_dir: Path | None) -> int:
    """Restore the last good checkpoint (or the run's start) with lower learning rates; return the rollbacks so far."""
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
    if stats_path is not None:
        _truncate_stats(stats_path, state.step)  # the diverged steps' records go; the event stays
        _append_stats(stats_path, {"event": "rollback", "reason": reason, "from_step": at_step, "to_step": state.step,
                                   "rollback": rollbacks, "lr_g": lr_g, "lr_d": lr_d})
    print(f"facegan: warning: training diverged ({reason} at step {at_step}); rolled back to step {state.step} "
          f"with learning rates G {lr_g:.2e}, D {lr_d:.2e} (rollback {rollbacks} of at most {config.max_rollbacks}).",
          file=sys.stderr)
    return rollbacks


def _stop_at_signal(stop: StopRequest, state: TrainState, checkpoint: dict, run_dir: Path | None, saved: bool) -> None:
    """Write latest.pt (rank 0; unless this step's is already written) and raise Interrupted saying how to resume."""
    where = f"epoch {state.epoch + 1}, batch {state.batch_in_epoch}"
    if run_dir is None:
        raise Interrupted(f"stopped by {stop.name} at step {state.step} ({where}); rank 0 writes the checkpoint.", stop.signum)
    latest = checkpoint_dir(run_dir) / LATEST
    if not saved:
        save_checkpoint(checkpoint, latest)
    raise Interrupted(f"stopped by {stop.name} at step {state.step} ({where}) and saved {latest}; "
                      f"continue with `facegan train --resume {run_dir}`.", stop.signum)
