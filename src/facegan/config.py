"""Training configuration: one typed dataclass, presets as small deltas, one validate()."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from facegan.errors import FaceganError


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
    # Optimisation: the seeds' recipe (Adam 2e-4, betas (0.5, 0.999), batch 128, BCE on logits).
    loss: str = "bce"
    batch_size: int = 128
    epochs: int = 5
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 0
    # Where and how.
    device: str = "auto"
    runs_dir: str = "runs"
    checkpoint_every_epochs: int = 1  # keep checkpoints/epoch-NNNN.pt every N epochs; 0 = only latest.pt
    checkpoint_every_steps: int = 0  # also refresh latest.pt every N steps; 0 = at epoch ends only
    log_every: int = 10  # steps between stats.jsonl records
    grid_size: int = 64  # images in each per-epoch sample grid (from the fixed noise)
    histogram_batches: int = 4  # last batches of each epoch whose D probabilities are histogrammed

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
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config.json written by save()."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            raise FaceganError(f"cannot read the configuration {path}: {error}.") from None


# Each preset holds only what differs from TrainConfig's defaults.
PRESETS: dict[str, dict] = {
    "dcgan": {},
}

# Settings that must not change when a run is resumed: they decide the models' shapes or the
# meaning of the saved optimizer state.
RESUME_FIXED = ("model", "latent_dim", "g_width", "d_width", "resolution", "loss", "batch_size", "seed", "data", "synthetic_count")


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
    if len(config.betas) != 2 or not all(0 <= b < 1 for b in config.betas):
        raise FaceganError(f"betas must be two numbers in [0, 1), not {config.betas}.")
    for name in ("checkpoint_every_epochs", "checkpoint_every_steps", "histogram_batches"):
        if getattr(config, name) < 0:
            raise FaceganError(f"{name.replace('_', '-')} must be 0 or more, not {getattr(config, name)}.")
    if config.model not in MODELS:
        raise FaceganError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}.")
    if config.loss not in LOSSES:
        raise FaceganError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}.")
    if config.resolution is not None and config.resolution not in (8, 16, 32, 64, 128, 256, 512, 1024):
        raise FaceganError(f"resolution must be a power of two from 8 to 1024 (32, 64, 128 are usual), not {config.resolution}.")
    if config.device not in ("auto", "cpu", "cuda", "mps") and not config.device.startswith("cuda:"):
        raise FaceganError(f"device must be auto, cpu, cuda, cuda:N or mps, not {config.device!r}.")


def changed_on_resume(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """The settings fixed at a run's start that a resume request would change."""
    return [name for name in RESUME_FIXED if getattr(saved, name) != getattr(requested, name)]

