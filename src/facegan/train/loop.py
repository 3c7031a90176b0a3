"""The training loop: one function, the steps named, every artifact a user watches.

A run directory holds config.json, stats.jsonl, fixed_noise.pt, samples/, plots/ and
checkpoints/. Only rank 0 writes; every rank draws its own share of each epoch's batches, so
the loop can later run under torchrun unchanged.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facegan import plots, viz
from facegan.config import TrainConfig, changed_on_resume, validate
from facegan.data import PreparedDataset, open_prepared
from facegan.errors import FaceganError
from facegan.losses import LOSSES
from facegan.models import build_models
from facegan.train.checkpoint import (
    LATEST, checkpoint_dir, epoch_checkpoint_name, latest_checkpoint, load_checkpoint, save_checkpoint,
)

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
    return torch.device(name)


def to_model_input(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], channels_last (NHWC memory, no copy)."""
    tensor = torch.from_numpy(batch).to(device, non_blocking=True).permute(0, 3, 1, 2)
    return tensor.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


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
            "fixed_noise": fixed_noise.cpu(),
        }


def build_state(config: TrainConfig, resolution: int, device: torch.device) -> TrainState:
    """Fresh models (DCGAN initialisation), Adam optimizers and the noise generator, seeded."""
    torch.manual_seed(config.seed)
    generator, discriminator = build_models(config.model, config.latent_dim, config.g_width, config.d_width, resolution)
    generator = generator.to(device, memory_format=torch.channels_last)
    discriminator = discriminator.to(device, memory_format=torch.channels_last)
    # foreach Adam: one kernel per step for all tensors instead of one per parameter.
    adam = dict(betas=config.betas, foreach=True)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, **adam)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, **adam)
    noise = torch.Generator(device=device).manual_seed(config.seed)
    return TrainState(generator, discriminator, opt_g, opt_d, noise)


def restore_state(state: TrainState, checkpoint: dict) -> None:
    """Load a checkpoint's tensors into a freshly built state."""
    state.generator.load_state_dict(checkpoint["generator"])
    state.discriminator.load_state_dict(checkpoint["discriminator"])
    state.opt_g.load_state_dict(checkpoint["opt_g"])
    state.opt_d.load_state_dict(checkpoint["opt_d"])
    state.noise.set_state(checkpoint["noise_rng"])
    state.epoch, state.batch_in_epoch, state.step = checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["step"]


def train_step(state: TrainState, reals: torch.Tensor, loss: str, latent_dim: int) -> dict[str, torch.Tensor]:
    """One D update and one G update on a batch of reals; returns detached tensors (no host sync)."""
    d_loss, g_loss = LOSSES[loss]
    G, D = state.generator, state.discriminator
    z = torch.randn(len(reals), latent_dim, generator=state.noise, device=reals.device)

    # Update D: real and generated images in separate batches, as DCGAN does (BatchNorm per batch).
    fakes = G(z)
    real_logits = D(reals)
    fake_logits = D(fakes.detach())
    loss_d = d_loss(real_logits, fake_logits)
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()

    # Update G: through the just-updated D.
    loss_g = g_loss(D(fakes))
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    state.step += 1
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
            "real_logits": real_logits.detach(), "fake_logits": fake_logits.detach()}


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """uint8 images from latent vectors, in eval mode (BatchNorm's running statistics)."""
    was_training = generator.training
    generator.eval()
    try:
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
    """
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    is_main = rank == 0
    validate(config)
    device = resolve_device(config.device)

    checkpoint, run_dir = None, None  # run_dir stays None on ranks other than 0: they write nothing
    if resume is not None:
        run_dir = Path(resume)
        checkpoint = _checkpoint_to_resume(run_dir, config)
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
        restore_state(state, checkpoint)
        fixed_noise = checkpoint["fixed_noise"].to(device)
    else:
        fixed_noise = torch.randn(config.grid_size, config.latent_dim, generator=torch.Generator().manual_seed(config.seed + 1)).to(device)
        if is_main:
            run_dir = new_run_dir(Path(config.runs_dir), config.preset)
            config.save(run_dir / "config.json")
            torch.save(fixed_noise.cpu(), run_dir / "fixed_noise.pt")
            reals = dataset.take(np.arange(min(config.grid_size, len(dataset))))
            viz.save_png(viz.make_grid(reals), run_dir / "samples" / "reals.png")
    stats_path = run_dir / "stats.jsonl" if is_main else None
    if is_main and checkpoint is not None:
        _truncate_stats(stats_path, state.step)  # drop what was logged after the checkpoint
    if is_main and progress:
        print(f"training {config.preset} on {dataset.path} ({len(dataset):,} images of {dataset.resolution}px) "
              f"on {device}; run directory {run_dir}", file=sys.stderr)

    steps_per_epoch = len(dataset) // world_size // config.batch_size
    while state.epoch < config.epochs:
        epoch = state.epoch
        batches = dataset.batches(config.batch_size, seed=config.seed, epoch=epoch, rank=rank, world_size=world_size)
        batches = itertools.islice(batches, state.batch_in_epoch, None)  # resume mid-epoch exactly
        bar = tqdm(batches, total=steps_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                   unit="batch", disable=not (progress and is_main), dynamic_ncols=True, leave=False)
        probabilities: list[tuple[torch.Tensor, torch.Tensor]] = []
        sums = {"loss_d": 0.0, "loss_g": 0.0, "n": 0}
        started, images_seen = time.perf_counter(), 0
        for batch in bar:
            reals = to_model_input(batch, device)
            out = train_step(state, reals, config.loss, config.latent_dim)
            state.batch_in_epoch += 1
            images_seen += len(batch)
            if state.batch_in_epoch > steps_per_epoch - config.histogram_batches:
                probabilities.append((torch.sigmoid(out["real_logits"]), torch.sigmoid(out["fake_logits"])))
            if state.step % config.log_every == 0:
                # The only host-device synchronisation: values are read back when logged.
                record = _record(state, out, epoch, images_seen / (time.perf_counter() - started), config, world_size)
                sums["loss_d"] += record["loss_d"]
                sums["loss_g"] += record["loss_g"]
                sums["n"] += 1
                if is_main:
                    _append_stats(stats_path, record)
                    bar.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}",
                                    img_s=f"{record['images_per_s']:.0f}")
            if is_main and config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0:
                save_checkpoint(state.to_checkpoint(config, fixed_noise), checkpoint_dir(run_dir) / LATEST)
            if stop_after_steps is not None and state.step >= stop_after_steps:
                bar.close()
                return run_dir
        bar.close()
        state.epoch += 1
        state.batch_in_epoch = 0
        if is_main:
            _end_of_epoch(run_dir, config, state, dataset, fixed_noise, probabilities)
            rate = images_seen / (time.perf_counter() - started)
            losses = (f"loss_d {sums['loss_d'] / sums['n']:.3f}  loss_g {sums['loss_g'] / sums['n']:.3f}  " if sums["n"] else "")
            if progress:
                print(f"epoch {state.epoch}/{config.epochs}  step {state.step}  {losses}{rate:.0f} img/s  "
                      f"-> {run_dir / 'samples' / f'epoch-{state.epoch:04d}.png'}", file=sys.stderr)
    return run_dir


def _record(state: TrainState, out: dict, epoch: int, rate: float, config: TrainConfig, world_size: int) -> dict:
    return {
        "step": state.step,
        "epoch": epoch + 1,
        "kimg": state.step * config.batch_size * world_size / 1000,
        "loss_d": float(out["loss_d"]),
        "loss_g": float(out["loss_g"]),
        "d_real": float(torch.sigmoid(out["real_logits"]).mean()),
        "d_fake": float(torch.sigmoid(out["fake_logits"]).mean()),
        "lr_g": state.opt_g.param_groups[0]["lr"],
        "lr_d": state.opt_d.param_groups[0]["lr"],
        "images_per_s": rate * world_size,
    }


def _append_stats(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


def _truncate_stats(path: Path, step: int) -> None:
    """Keep only the records up to `step`, so a resumed run's log has no duplicated steps."""
    if not path.exists():
        return
    kept = [r for r in plots.read_stats(path) if r.get("step", 0) <= step]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(temporary, path)


def _end_of_epoch(run_dir: Path, config: TrainConfig, state: TrainState, dataset: PreparedDataset,
                  fixed_noise: torch.Tensor, probabilities: list) -> None:
    """Grid, plots and checkpoints after each epoch (rank 0 only)."""
    epoch = state.epoch
    fakes = generate(state.generator, fixed_noise)
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


def resume_config(run_dir: Path, overrides: dict) -> TrainConfig:
    """A run's saved config with the user's changes (e.g. more --epochs) applied and validated."""
    if not (Path(run_dir) / "config.json").exists():
        raise FaceganError(f"{run_dir} is not a facegan run directory (no config.json); give a directory under runs/.")
    saved = TrainConfig.load(Path(run_dir) / "config.json").to_dict()
    config = TrainConfig.from_dict({**saved, **{k: v for k, v in overrides.items() if v is not None}})
    validate(config)
    return config


def _checkpoint_to_resume(run_dir: Path, config: TrainConfig) -> dict:
    """The run's latest checkpoint, refusing changes to what fixed the run's models and data."""
    path = latest_checkpoint(run_dir)
    if path is None:
        raise FaceganError(f"{run_dir} has no checkpoint yet, so there is nothing to resume; start a new run.")
    checkpoint = load_checkpoint(path)
    changed = changed_on_resume(TrainConfig.from_dict(checkpoint["config"]), config)
    if changed:
        raise FaceganError(
            f"cannot resume {run_dir} with a different {', '.join(changed)}: these fix the models and data "
            "of a run; start a new run instead."
        )
    return checkpoint
