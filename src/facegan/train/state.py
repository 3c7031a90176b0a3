"""The training state: models, optimizers, the noise generator and counters; built, saved and restored.

A checkpoint is this state serialised (`TrainState.to_checkpoint`); `restore_state` loads one into
a freshly built state, so a resumed run continues bit-identically on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from facegan import distributed
from facegan.conditions import LabelTable
from facegan.config import TrainConfig
from facegan.models import build_models
from facegan.precision import Precision, resolve_precision
from facegan.train.cputime import CpuClock
from facegan.train.ema import EMA, standing_statistics

FP32 = Precision("fp32", "cpu")


@dataclass
class TrainState:
    """Everything that changes while training; a checkpoint is this, serialised."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    noise: torch.Generator  # draws every latent vector, flip and augmentation, so resuming restores it exactly
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    step: int = 0  # G updates so far
    precision: Precision = FP32
    # One scaler, always: active for float16, a pass-through (enabled=False) in every other format.
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))
    compiled: tuple[nn.Module, nn.Module] | None = None  # torch.compile'd G and D sharing the weights
    parallel: tuple[nn.Module, nn.Module] | None = None  # under torchrun: G and D each in DistributedDataParallel
    ema: EMA | None = None  # the moving average of G, when config.ema_kimg > 0
    d_updates: int = 0  # D updates so far (more than `step` with several D steps per G step)
    lr_scale: float = 1.0  # lowered by each divergence rollback; multiplies the configured (and scheduled) rates
    # A conditional run's training labels (their joint distribution), saved in every checkpoint so
    # that sampling can draw the attributes a user leaves unnamed; set from the data, never restored.
    labels: LabelTable | None = None
    # The run's CPU time (train/cputime.py): carried in every checkpoint as "cpu_s", but never restored by a
    # rollback (restore_state leaves it alone), since the time a diverged stretch took was spent all the same.
    # Under torchrun each rank counts its own process; rank 0 writes the checkpoints, so its total is the run's.
    cpu: CpuClock = field(default_factory=CpuClock)

    @property
    def models(self) -> tuple[nn.Module, nn.Module]:
        """The G and D that the step runs: the compiled ones when compiled."""
        return self.parallel or self.compiled or (self.generator, self.discriminator)

    @property
    def sampling_generator(self) -> nn.Module:
        """The G that grids, samples and metrics use: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.generator

    def refresh_ema_statistics(self, config: TrainConfig) -> None:
        """Give the moving average BatchNorm statistics of its own (standing statistics), when there is one.

        EMA.update copies G's running statistics, which fit G's weights, not the average's. The loop
        calls this before every grid, metric and checkpoint, so the checkpoint's "generator_ema"
        carries them to everything that reads it (sample, export, evaluate, serve, audit). The next
        update copies G's again, so training itself, and a resume, are exactly as without it.
        """
        if self.ema is not None and not self.ema.standing:  # once per update: an epoch end that also saves, or a stop, pays once
            standing_statistics(self.ema.module, config.latent_dim, labels=self.labels)
            self.ema.standing = True

    def to_checkpoint(self, config: TrainConfig, fixed_noise: torch.Tensor) -> dict:
        """Tensors and plain data only, so it loads with weights_only=True."""
        return {
            "config": config.to_dict(),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "noise_rng": self.noise.get_state(),
            # Every rank's noise (gathered: each draws its own latents), so a resume at the same world size is exact.
            "noise_rng_ranks": distributed.gather(self.noise.get_state().cpu()),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "d_updates": self.d_updates,
            "lr_scale": self.lr_scale,
            "cpu_s": self.cpu.seconds(),
            "fixed_noise": fixed_noise.cpu(),
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
            **({"generator_ema": self.ema.state_dict()} if self.ema is not None else {}),
            **({"labels": self.labels.to_dict()} if self.labels is not None else {}),
        }


def build_state(config: TrainConfig, resolution: int, device: torch.device) -> TrainState:
    """Fresh models (DCGAN initialisation), Adam optimizers and the noise generator, seeded."""
    torch.manual_seed(config.seed)
    generator, discriminator = build_models(config.model, config.latent_dim, config.g_width, config.d_width, resolution,
                                            d_norm=config.d_norm, spectral_norm=config.spectral_norm,
                                            num_attributes=len(config.condition), aux_classifier=bool(config.aux_weight))
    generator = generator.to(device, memory_format=torch.channels_last)
    discriminator = discriminator.to(device, memory_format=torch.channels_last)
    # Fused Adam on a GPU, foreach on the CPU: a few kernels per step for all tensors instead of
    # several per parameter. Optimizer state stays float32 whatever the precision.
    adam = dict(betas=config.betas, **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, **adam)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, **adam)
    noise = torch.Generator(device=device).manual_seed(config.seed + distributed.rank())  # each rank its own draws
    precision = resolve_precision(config.precision, device)
    return TrainState(generator, discriminator, opt_g, opt_d, noise, precision=precision, scaler=precision.scaler(),
                      compiled=compile_models(generator, discriminator, config.compile, device),
                      ema=EMA(generator) if config.ema_kimg > 0 else None)


def compile_models(generator: nn.Module, discriminator: nn.Module, mode: str,
                   device: torch.device) -> tuple[nn.Module, nn.Module] | None:
    """torch.compile'd G and D where it pays: on CUDA, where launches of small kernels dominate.

    The compiled modules share their parameters with the originals, so checkpoints and the
    optimizers see the plain modules' state_dicts (no `_orig_mod.` prefixes).
    """
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    options = {"mode": "reduce-overhead"} if mode == "cudagraphs" else {}
    return torch.compile(generator, **options), torch.compile(discriminator, **options)


def restore_state(state: TrainState, checkpoint: dict) -> bool:
    """Load a checkpoint's tensors into a freshly built state; True when its noise was re-seeded because the
    checkpoint was written by another number of processes (each rank draws its own noise)."""
    state.generator.load_state_dict(checkpoint["generator"])
    state.discriminator.load_state_dict(checkpoint["discriminator"])
    state.opt_g.load_state_dict(checkpoint["opt_g"])
    state.opt_d.load_state_dict(checkpoint["opt_d"])
    noise_states = checkpoint.get("noise_rng_ranks", [checkpoint["noise_rng"]])
    reseeded = len(noise_states) != distributed.world_size()
    if reseeded:  # same schedule, new draws: seeded by the seed, rank and step, so the resume is still reproducible
        config_seed = checkpoint["config"].get("seed", 0)
        state.noise.manual_seed(hash((config_seed, distributed.rank(), checkpoint["step"])) & (2**63 - 1))
    else:
        state.noise.set_state(noise_states[distributed.rank()])
    if state.scaler.is_enabled() and "scaler" in checkpoint:
        state.scaler.load_state_dict(checkpoint["scaler"])
    if state.ema is not None:  # a run that turns the EMA on when resumed starts it from G
        state.ema.load_state_dict(checkpoint.get("generator_ema", checkpoint["generator"]))
    state.epoch, state.batch_in_epoch, state.step = checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["step"]
    state.d_updates = checkpoint.get("d_updates", state.step)
    state.lr_scale = checkpoint.get("lr_scale", 1.0)
    return reseeded
