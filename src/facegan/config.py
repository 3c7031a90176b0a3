"""Training configuration: one typed dataclass, presets as small deltas, one validate()."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from facegan.errors import FaceganError
from facegan.files import write_atomically


@dataclass
class TrainConfig:
    """Everything that decides a training run; written to the run directory as config.json."""

    preset: str = "dcgan"
    # Data: a prepared dataset, or None for the built-in synthetic faces (prepared once, cached).
    data: str | None = None
    synthetic_count: int = 10_240
    resolution: int | None = None  # None: the data's; fixed in config.json once a run starts
    # Model: DCGAN of Radford et al.; width is the channel count of G's last and D's first layer.
    model: str = "dcgan"
    latent_dim: int = 100
    g_width: int = 64
    d_width: int = 64
    d_norm: str | None = None  # D's normalisation: batch, layer or none; None = the family's own (dcgan: batch)
    spectral_norm: bool | None = None  # spectral normalisation of D's weights; None = the family's own (resnet: on)
    # Optimisation: the seeds' recipe (Adam 2e-4, betas (0.5, 0.999), batch 128, BCE on logits).
    loss: str = "bce"
    batch_size: int = 128
    epochs: int = 5
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    # Beyond DCGAN, each off by default: D updates per G update (each on its own batch of reals),
    # WGAN-GP's gradient penalty weight, R1's gamma (applied lazily every r1_every D updates),
    # an EMA of G (half-life in thousands of images) that grids, samples and metrics then use,
    # DiffAugment on everything D sees, horizontal flips of reals, and learning-rate decay to 0
    # (from lr_decay_start, a fraction of the run's G updates).
    d_steps: int = 1
    gp_weight: float = 0.0
    r1_gamma: float = 0.0
    r1_every: int = 16
    ema_kimg: float = 0.0
    ema_rampup: float | None = None
    augment: str = ""
    flip: bool = False
    lr_schedule: str = "constant"
    lr_decay_start: float = 0.0
    seed: int = 0
    # Where and how.
    device: str = "auto"
    # Number format of the models' arithmetic: auto = bf16 where the hardware runs it natively
    # (AVX-512 BF16/AMX CPUs, Ampere+ GPUs), else fp32. Weights, BatchNorm statistics, losses
    # and optimizer state are float32 in every mode.
    precision: str = "auto"
    # torch.compile of G and D: auto = on for CUDA (where kernel launches dominate), off on the
    # CPU (measured: no gain there, and minutes of compilation); cudagraphs = compiled and
    # replayed as CUDA graphs (torch.compile's reduce-overhead mode).
    compile: str = "auto"
    runs_dir: str = "runs"
    checkpoint_every_epochs: int = 1  # keep checkpoints/epoch-NNNN.pt every N epochs; 0 = only latest.pt
    checkpoint_every_steps: int = 0  # also refresh latest.pt every N steps; 0 = at epoch ends only
    log_every: int = 10  # steps between stats.jsonl records
    grid_size: int = 64  # images in each per-epoch sample grid (from the fixed noise)
    # Quality tracked while training: every eval_every epochs (0 = never) the metrics in `evaluate`
    # (e.g. fid2k,kid2k) are measured against the training data with the standard Inception
    # network, appended to metrics.jsonl, and the checkpoint best on the first one is kept as best.pt.
    eval_every: int = 0
    evaluate: str = "fid2k"
    histogram_batches: int = 4  # last batches of each epoch whose D probabilities are histogrammed
    # Divergence: a NaN or infinite loss or weight rolls the run back to its last good checkpoint
    # with both learning rates multiplied by rollback_lr_factor, at most max_rollbacks times per invocation.
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5

    def to_dict(self) -> dict:
        """Plain JSON data."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The inverse of to_dict; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaceganError(f"unknown configuration keys: {', '.join(unknown)}.")
        data = dict(data)
        if "betas" in data:
            if not isinstance(data["betas"], (list, tuple)):
                raise FaceganError(f"betas must be two numbers in [0, 1), not {data['betas']!r}.")
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as indented JSON, atomically (a killed process leaves the old file or the new one)."""
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config.json written by save()."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FaceganError(f"cannot read the configuration {path}: {error}.") from None
        if not isinstance(data, dict):
            raise FaceganError(f"the configuration {path} is damaged: it holds a JSON {type(data).__name__}, not an object.")
        return cls.from_dict(data)


# Each preset holds only what differs from TrainConfig's defaults.
PRESETS: dict[str, dict] = {
    # The seeds' recipe: Radford et al. 2016, as pytorch/examples' dcgan.
    "dcgan": {},
    # Least-squares GAN (Mao et al. 2017): the DCGAN models, a = 0, b = c = 1.
    "lsgan": {"loss": "lsgan"},
    # WGAN-GP (Gulrajani et al. 2017, Algorithm 1): a critic without BatchNorm (layer norm, as
    # the paper suggests), gradient penalty 10, 5 critic updates per G update, Adam 1e-4, (0, 0.9).
    "wgan-gp": {"loss": "wgan", "d_norm": "layer", "gp_weight": 10.0, "d_steps": 5, "lr_g": 1e-4, "lr_d": 1e-4,
                "betas": (0.0, 0.9)},
    # SNGAN (Miyato et al. 2018) as Mimicry trains it on CelebA 64x64 (FID 5.71 over 50k samples):
    # ResNet G and D, spectral norm in D, hinge loss, 5 D updates per G update, latent 128,
    # batch 64, Adam 2e-4 with (0, 0.9), linear decay to 0.
    "sngan": {"model": "resnet", "loss": "hinge", "latent_dim": 128, "batch_size": 64, "d_steps": 5,
              "betas": (0.0, 0.9), "lr_schedule": "linear"},
    # facegan's recommendation for short budgets: the DCGAN models and loss, plus what helps at any
    # length of run: an EMA of G (half-life 10k images, ramped up over the first 5% of images
    # seen), horizontal flips of reals, and linear decay of both rates over the second half.
    # Chosen by reasoning so far: benchmarks/recipes.py compares it with the others on the same
    # budget, but the budgets measured yet (README) are too short to tell any preset apart.
    "facegan": {"flip": True, "ema_kimg": 10.0, "ema_rampup": 0.05, "lr_schedule": "linear", "lr_decay_start": 0.5},
}

# What the models can be built at: 4x4 doubled n times (models/dcgan.py's stages()).
RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)

# Settings that must not change when a run is resumed: they decide the models' shapes or the
# meaning of the saved optimizer state.
RESUME_FIXED = ("model", "latent_dim", "g_width", "d_width", "d_norm", "spectral_norm", "resolution", "loss", "batch_size", "seed", "data", "synthetic_count")


def from_preset(name: str, **overrides) -> TrainConfig:
    """A validated config: the preset's delta over the defaults, then the user's overrides."""
    if name not in PRESETS:
        raise FaceganError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}, "preset": name}
    config = TrainConfig.from_dict(values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Refuse nonsense, with one sentence naming the setting and what is allowed."""
    from facegan.losses import LOSSES
    from facegan.models import MODELS

    def positive(name: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise FaceganError(f"{name} must be a positive number, not {value}.")

    for name in ("batch_size", "epochs", "latent_dim", "g_width", "d_width", "synthetic_count", "log_every", "grid_size"):
        positive(name.replace("_", "-"), getattr(config, name))
        if not isinstance(getattr(config, name), int):
            raise FaceganError(f"{name.replace('_', '-')} must be a whole number, not {getattr(config, name)}.")
    positive("lr-g", config.lr_g)
    positive("lr-d", config.lr_d)
    if not (isinstance(config.rollback_lr_factor, (int, float)) and 0 < config.rollback_lr_factor < 1):
        raise FaceganError(f"rollback-lr-factor must be a number between 0 and 1 (exclusive), not {config.rollback_lr_factor}.")
    if config.preset not in PRESETS:  # it names the run directory: never a path
        raise FaceganError(f"unknown preset {config.preset!r}; choose one of {', '.join(PRESETS)}.")
    if len(config.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in config.betas):
        raise FaceganError(f"betas must be two numbers in [0, 1), not {config.betas}.")
    for name in ("checkpoint_every_epochs", "checkpoint_every_steps", "histogram_batches", "seed", "max_rollbacks"):
        if not isinstance(getattr(config, name), int) or isinstance(getattr(config, name), bool):
            raise FaceganError(f"{name.replace('_', '-')} must be a whole number, not {getattr(config, name)!r}.")
        if getattr(config, name) < 0:
            raise FaceganError(f"{name.replace('_', '-')} must be 0 or more, not {getattr(config, name)}.")
    if config.model not in MODELS:
        raise FaceganError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}.")
    if config.loss not in LOSSES:
        raise FaceganError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}.")
    if config.resolution is not None and config.resolution not in RESOLUTIONS:
        raise FaceganError(f"resolution must be a power of two from 8 to 1024 (32, 64, 128 are usual), not {config.resolution}.")
    if config.d_norm not in (None, "batch", "layer", "none"):
        raise FaceganError(f"d-norm must be batch, layer or none, not {config.d_norm!r}.")
    if config.model == "resnet" and config.d_norm not in (None, "none"):
        raise FaceganError(f"the resnet model's D has no normalisation layers; d-norm {config.d_norm!r} cannot apply.")
    if config.gp_weight and config.d_norm in (None, "batch") and config.model == "dcgan":
        raise FaceganError("the gradient penalty needs a D without BatchNorm (it couples the images of a batch); "
                           "set d-norm to layer or none.")
    for name in ("d_steps", "r1_every"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            raise FaceganError(f"{name.replace('_', '-')} must be a whole number of at least 1, not {getattr(config, name)!r}.")
    for name in ("gp_weight", "r1_gamma", "ema_kimg"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise FaceganError(f"{name.replace('_', '-')} must be 0 (off) or a positive number, not {value!r}.")
    if config.ema_rampup is not None and not (isinstance(config.ema_rampup, (int, float)) and config.ema_rampup > 0):
        raise FaceganError(f"ema-rampup must be a positive number or null, not {config.ema_rampup!r}.")
    unknown = [p for p in config.augment.split(",") if p.strip() and p.strip() not in ("color", "translation", "cutout")]
    if unknown:
        raise FaceganError(f"unknown augmentation {unknown[0]!r}; augment is a comma-separated subset of color,translation,cutout.")
    if config.lr_schedule not in ("constant", "linear", "cosine"):
        raise FaceganError(f"lr-schedule must be constant, linear or cosine, not {config.lr_schedule!r}.")
    if not (isinstance(config.lr_decay_start, (int, float)) and 0 <= config.lr_decay_start < 1):
        raise FaceganError(f"lr-decay-start must be a fraction in [0, 1), not {config.lr_decay_start!r}.")
    if not isinstance(config.eval_every, int) or isinstance(config.eval_every, bool) or config.eval_every < 0:
        raise FaceganError(f"eval-every must be 0 (never) or a whole number of epochs, not {config.eval_every!r}.")
    if config.eval_every:
        from facegan.metrics.names import parse_metrics

        parse_metrics(config.evaluate)  # one sentence for a bad name, before any training
    if config.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise FaceganError(f"precision must be auto, fp32, bf16 or fp16, not {config.precision!r}.")
    if config.compile not in ("auto", "on", "off", "cudagraphs"):
        raise FaceganError(f"compile must be auto, on, off or cudagraphs, not {config.compile!r}.")
    if not isinstance(config.device, str) or (config.device not in ("auto", "cpu", "cuda", "mps") and not config.device.startswith("cuda:")):
        raise FaceganError(f"device must be auto, cpu, cuda, cuda:N or mps, not {config.device!r}.")


def changed_on_resume(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """The settings fixed at a run's start that a resume request would change."""
    return [name for name in RESUME_FIXED if getattr(saved, name) != getattr(requested, name)]

