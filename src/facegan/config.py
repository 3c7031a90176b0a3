"""Training configuration: one typed dataclass, presets as small deltas, one validate()."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from facegan.errors import FaceganError
from facegan.files import write_atomically

COMPILE_MODES = ("auto", "on", "off", "cudagraphs")
_R1_EVERY = 16  # D updates between lazy R1 penalties (named in --r1-gamma's help)
AUX_WEIGHT = 1.0  # a conditional run's --aux-weight unless it names one (AC-GAN's weight)


# The names a setting may take come from the registries that implement them. Those import torch,
# and this module does not, so they are read when asked for (by validate() and the parser).
def _models() -> tuple[str, ...]:
    from facegan.models import MODELS

    return tuple(MODELS)


def _norms() -> tuple[str, ...]:
    from facegan.models.dcgan import NORMS

    return tuple(NORMS)


def _losses() -> tuple[str, ...]:
    from facegan.losses import LOSSES

    return tuple(LOSSES)


def _policies() -> tuple[str, ...]:
    from facegan.augment import POLICIES

    return tuple(POLICIES)


def _schedules() -> tuple[str, ...]:
    from facegan.train.schedule import SCHEDULES

    return tuple(SCHEDULES)


def _precisions() -> tuple[str, ...]:
    from facegan.precision import PRECISIONS

    return tuple(PRECISIONS)


def _compile_modes() -> tuple[str, ...]:
    return COMPILE_MODES


# What `facegan train` needs to make a field an option, in the field's metadata (read by the CLI):
#   help      the option's help, without its default: the parser appends the field's default. A field
#             without help is no option (preset, resolution, betas, ... are set otherwise or not at all).
#   flag      the option's name, when it is not --name-with-dashes
#   metavar   the value's name in the help, when it is not the field's name
#   type      how the value is read: "positive" (a whole number > 0), "natural" (>= 0), "float",
#             "bool" (an --x/--no-x pair), "names" (comma-separated, a tuple); none: text
#   choices   a function giving the names the value may take (a registry's keys)
#   subset_of a function giving the names a comma-separated value may combine
#   unset     what the default None means, for the help
#   group     "recipe" for the options each preset sets (the help's "beyond DCGAN" group)
OPTION_KEYS = ("help", "flag", "metavar", "type", "choices", "subset_of", "unset", "group")


def _option(default, text: str, **metadata):
    """A TrainConfig field that is also a `facegan train` option, with `text` as its help (see OPTION_KEYS)."""
    unknown = set(metadata) - set(OPTION_KEYS)
    assert not unknown, f"unknown option metadata {sorted(unknown)}"
    return dataclasses.field(default=default, metadata={"help": text, **metadata})


@dataclass
class TrainConfig:
    """Everything that decides a training run; written to the run directory as config.json."""

    preset: str = "dcgan"
    # Data: a prepared dataset, or None for the built-in synthetic faces (prepared once, cached).
    data: str | None = _option(None, "a prepared dataset, from `facegan prepare`", unset="built-in synthetic faces")
    synthetic_count: int = _option(10_240, "synthetic faces when no --data", type="positive")
    resolution: int | None = None  # None: the data's; fixed in config.json once a run starts
    # Attributes of the data: G(z, c) and D(x, c) are conditioned on `condition` (conditional
    # BatchNorm and a projection head), and `balance` draws every combination of its attributes
    # equally often (with replacement), so that a rare group is seen as often as a common one.
    condition: tuple[str, ...] = _option((), "attributes to condition G and D on, e.g. Smiling,Male,Eyeglasses",
                                         metavar="ATTRS", type="names")
    balance: tuple[str, ...] = _option((), "attributes whose every combination is drawn equally often, e.g. Pale_Skin",
                                       metavar="ATTRS", type="names")
    # AC-GAN's auxiliary classifier (Odena et al. 2017) beside the projection: D also learns the real
    # images' attributes, and G is also trained to make D see the attributes it was asked for.
    # None, in configurations written before it existed, is off; from_preset makes it AUX_WEIGHT for a
    # conditional run and 0 otherwise (README: without it, CelebA's conditions barely held).
    aux_weight: float | None = _option(None, "weight of D's attribute classifier, learnt on real images and asked "
                                             "of G's (AC-GAN); needs --condition; 0 = off", type="float", metavar="W",
                                       unset="1 with --condition, 0 without")
    # Model: DCGAN of Radford et al.; width is the channel count of G's last and D's first layer.
    model: str = _option("dcgan", "model family", choices=_models, group="recipe")
    latent_dim: int = _option(100, "latent vector size; 128 is common", type="positive")
    g_width: int = _option(64, "channels of G's last layer", type="positive")
    d_width: int = _option(64, "channels of D's first layer", type="positive")
    d_norm: str | None = _option(None, "D's normalisation layers", choices=_norms, group="recipe",
                                 unset="the model family's own: batch for dcgan, none for resnet")
    spectral_norm: bool | None = _option(None, "spectral normalisation in D", type="bool", group="recipe",
                                         unset="the model family's own: off for dcgan, on for resnet")
    # Optimisation: the seeds' recipe (Adam 2e-4, betas (0.5, 0.999), batch 128, BCE on logits).
    loss: str = _option("bce", "GAN loss", choices=_losses, group="recipe")
    batch_size: int = _option(128, "images per step", type="positive")
    epochs: int = _option(5, "epochs in total", type="positive")
    # A budget of the training process's own CPU time (user + system, summed over every invocation of
    # the run, as train/cputime.py counts it): the run stops, as a finished one, at the first epoch end
    # that has reached it. --epochs still caps it; a resume with a larger budget continues.
    max_cpu_minutes: float = _option(0.0, "stop at the first epoch end where the run's CPU time (user + system, "
                                          "over all its resumes) has reached N minutes; --epochs still caps it; 0 = no limit",
                                     metavar="N", type="float")
    lr_g: float = _option(2e-4, "learning rate of G", type="float")
    lr_d: float = _option(2e-4, "learning rate of D", type="float")
    betas: tuple[float, float] = (0.5, 0.999)  # --beta1 and --beta2
    # Beyond DCGAN, each off by default: D updates per G update (each on its own batch of reals),
    # WGAN-GP's gradient penalty weight, R1's gamma (applied lazily every r1_every D updates),
    # an EMA of G (half-life in thousands of images) that grids, samples and metrics then use,
    # DiffAugment on everything D sees, horizontal flips of reals, and learning-rate decay to 0
    # (from lr_decay_start, a fraction of the run's G updates).
    d_steps: int = _option(1, "D updates per G update, each on its own batch", type="positive", group="recipe")
    gp_weight: float = _option(0.0, "WGAN-GP gradient penalty weight, 0 = off; needs --d-norm layer or none",
                               type="float", group="recipe")
    r1_gamma: float = _option(0.0, f"R1 penalty gamma, applied lazily every {_R1_EVERY} D updates; 0 = off",
                              type="float", group="recipe")
    r1_every: int = _R1_EVERY
    ema_kimg: float = _option(0.0, "half-life of G's moving average in thousands of images; 0 = off",
                              type="float", group="recipe")
    ema_rampup: float | None = None
    augment: str = _option("", "DiffAugment policy for everything D sees", subset_of=_policies, group="recipe")
    flip: bool = _option(False, "random horizontal flips of real images", type="bool", group="recipe")
    lr_schedule: str = _option("constant", "learning-rate decay to 0 at the end", choices=_schedules, group="recipe")
    lr_decay_start: float = _option(0.0, "fraction of the run after which the decay starts", type="float", group="recipe")
    seed: int = _option(0, "seed of initialisation, noise and batch order", type="natural")
    # Where and how.
    device: str = _option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    # Under torchrun: BatchNorm over the global batch instead of each process's share (torchrun only).
    sync_bn: bool = _option(False, "under torchrun, BatchNorm statistics over all processes' images", type="bool")
    # Number format of the models' arithmetic: auto = bf16 where the hardware runs it natively
    # (AVX-512 BF16/AMX CPUs, Ampere+ GPUs), else fp32. Weights, BatchNorm statistics, losses
    # and optimizer state are float32 in every mode.
    precision: str = _option("auto", "number format of the models' arithmetic: auto = bf16 where the hardware "
                                     "runs it natively, else fp32", choices=_precisions)
    # torch.compile of G and D: auto = on for CUDA (where kernel launches dominate), off on the
    # CPU (measured: no gain there, and minutes of compilation); cudagraphs = compiled and
    # replayed as CUDA graphs (torch.compile's reduce-overhead mode).
    compile: str = _option("auto", "torch.compile G and D: auto = on for CUDA, off on the CPU; cudagraphs = "
                                   "compiled and replayed as CUDA graphs", choices=_compile_modes)
    runs_dir: str = _option("runs", "where run directories are made")
    checkpoint_every_epochs: int = _option(1, "keep checkpoints/epoch-NNNN.pt every N epochs besides latest.pt; "
                                              "0 = latest only", flag="--checkpoint-every", type="natural")
    checkpoint_every_steps: int = _option(0, "also refresh latest.pt every N steps; 0 = at epoch ends only",
                                          flag="--checkpoint-steps", type="natural")
    log_every: int = _option(10, "steps between stats.jsonl records", type="positive")
    grid_size: int = 64  # images in each per-epoch sample grid (from the fixed noise)
    # Quality tracked while training: every eval_every epochs (0 = never) the metrics in `evaluate`
    # (e.g. fid2k,kid2k) are measured against the training data (or eval_data) with the standard Inception
    # network, appended to metrics.jsonl, and the checkpoint best on the first one is kept as best.pt.
    eval_every: int = _option(0, "measure quality every N epochs, 0 = never; results in metrics.jsonl, "
                                 "best checkpoint kept", metavar="EPOCHS", type="natural")
    evaluate: str = _option("fid2k", "what --eval-every measures, e.g. fid2k or fid2k,kid2k,pr2k",
                            flag="--eval", metavar="METRICS")
    # What --eval-every measures against: a prepared dataset of the run's resolution (a held-out split,
    # so that memorising the training images does not score), or None for the training data itself.
    eval_data: str | None = _option(None, "a prepared dataset that --eval-every measures against, such as a held-out "
                                          "split, at the run's resolution", metavar="DIR", unset="the training data")
    histogram_batches: int = 4  # last batches of each epoch whose D probabilities are histogrammed
    # Divergence: a NaN or infinite loss or weight rolls the run back to its last good checkpoint
    # with both learning rates multiplied by rollback_lr_factor, at most max_rollbacks times per invocation.
    max_rollbacks: int = _option(3, "times a diverged run (NaN or infinite loss) rolls back to its last good "
                                    "checkpoint", type="natural")
    rollback_lr_factor: float = _option(0.5, "learning rates are multiplied by this at each rollback", type="float")

    def to_dict(self) -> dict:
        """Plain JSON data."""
        data = dataclasses.asdict(self)
        for name in ("betas", *NAME_LISTS):
            data[name] = list(getattr(self, name))
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
        for name in NAME_LISTS:
            if name in data:
                if not isinstance(data[name], (list, tuple)) or not all(isinstance(v, str) for v in data[name]):
                    raise FaceganError(f"{name} must be a list of attribute names, not {data[name]!r}.")
                data[name] = tuple(data[name])
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


# Fields that hold attribute names: a tuple here, a list in JSON, comma-separated on the command line.
NAME_LISTS = ("condition", "balance")

# Each preset holds only what differs from TrainConfig's defaults.
# `fast`'s delta, which `long` builds on.
_FAST = {"g_width": 32, "d_width": 32, "batch_size": 32}

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
    # The DCGAN models and loss, plus what was expected to help at any length of run: an EMA of G
    # (half-life 10k images, ramped up over the first 5% of images seen), horizontal flips of reals,
    # and linear decay of both rates over the second half. Chosen by reasoning; measured since, it is
    # not better than dcgan beyond the seeds' spread at 20 CPU-minutes (README), and `fast` is.
    "facegan": {"flip": True, "ema_kimg": 10.0, "ema_rampup": 0.05, "lr_schedule": "linear", "lr_decay_start": 0.5},
    # The best recipe of benchmarks/search.py at 20 CPU-minutes on 7,000 CelebA faces (README):
    # the seeds' models, loss and optimiser at half the width (a quarter of the FLOPs per image)
    # and batch 32: about 17x the G updates of dcgan for the same CPU time, and FID-1k 106 against
    # dcgan's 313 (one seed each). Still 64x64 faces, from scratch.
    "fast": _FAST,
    # `fast` for runs of hours, once 7,000 faces have been seen dozens of times: DiffAugment (Zhao et
    # al. 2020; color, translation and cutout, on reals and fakes before D) so that D cannot memorise
    # the data, an EMA of G (half-life 10k images) and flips. Measured at 2 CPU-hours beside dcgan on
    # one host (README "Longer runs"): FID-1k 67.5 against 94.0 (28% below).
    "long": {**_FAST, "augment": "color,translation,cutout", "ema_kimg": 10.0, "flip": True},
}

# Sizes past which a setting cannot fit any machine facegan runs on; refused before anything is
# allocated (config.json, a checkpoint or an exported file can carry any number). Change them here.
LIMITS = {"latent_dim": 4096, "g_width": 1024, "d_width": 1024, "grid_size": 1024}
_LIMIT_REASONS = {
    "latent_dim": "the seeds use 100 or 128, and G's first layer grows with it",
    "g_width": "G's widest layer is this times 2^(stages - 1) channels (8 times at 64 px), its weights that squared",
    "d_width": "D's widest layer is this times 2^(stages - 1) channels (8 times at 64 px), its weights that squared",
    "grid_size": "each epoch's grid is one picture of that many images",
}

# What the models can be built at: 4x4 doubled n times (models/dcgan.py's stages()).
RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)

# Settings that must not change when a run is resumed: they decide the models' shapes or the
# meaning of the saved optimizer state.
RESUME_FIXED = ("model", "latent_dim", "g_width", "d_width", "d_norm", "spectral_norm", "resolution", "loss", "batch_size", "seed", "data", "synthetic_count",
                "condition", "balance", "aux_weight")


def from_preset(name: str, **overrides) -> TrainConfig:
    """A validated config: the preset's delta over the defaults, then the user's overrides."""
    if name not in PRESETS:
        raise FaceganError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}, "preset": name}
    if values.get("aux_weight") is None:
        values["aux_weight"] = AUX_WEIGHT if values.get("condition") else 0.0
    config = TrainConfig.from_dict(values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Refuse nonsense, with one sentence naming the setting and what is allowed."""
    def positive(name: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise FaceganError(f"{name} must be a positive number, not {value}.")

    for name in ("batch_size", "epochs", "latent_dim", "g_width", "d_width", "synthetic_count", "log_every", "grid_size"):
        positive(name.replace("_", "-"), getattr(config, name))
        if not isinstance(getattr(config, name), int):
            raise FaceganError(f"{name.replace('_', '-')} must be a whole number, not {getattr(config, name)}.")
    for name, limit in LIMITS.items():
        if getattr(config, name) > limit:
            raise FaceganError(f"{name.replace('_', '-')} {getattr(config, name):,} is more than facegan allows ({limit:,}): "
                               f"{_LIMIT_REASONS[name]}.")
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
    if config.model not in _models():
        raise FaceganError(f"unknown model {config.model!r}; choose one of {', '.join(_models())}.")
    if config.loss not in _losses():
        raise FaceganError(f"unknown loss {config.loss!r}; choose one of {', '.join(_losses())}.")
    if config.resolution is not None and config.resolution not in RESOLUTIONS:
        raise FaceganError(f"resolution must be a power of two from 8 to 1024 (32, 64, 128 are usual), not {config.resolution}.")
    if config.d_norm not in (None, *_norms()):
        raise FaceganError(f"d-norm must be {_either(_norms())}, not {config.d_norm!r}.")
    if config.model == "resnet" and config.d_norm not in (None, "none"):
        raise FaceganError(f"the resnet model's D has no normalisation layers; d-norm {config.d_norm!r} cannot apply.")
    if config.gp_weight and config.d_norm in (None, "batch") and config.model == "dcgan":
        raise FaceganError("the gradient penalty needs a D without BatchNorm (it couples the images of a batch); "
                           "set d-norm to layer or none.")
    for name in ("d_steps", "r1_every"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            raise FaceganError(f"{name.replace('_', '-')} must be a whole number of at least 1, not {getattr(config, name)!r}.")
    for name in ("gp_weight", "r1_gamma", "ema_kimg", "aux_weight"):
        value = getattr(config, name)
        if name == "aux_weight" and value is None:  # a configuration from before it: off
            continue
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise FaceganError(f"{name.replace('_', '-')} must be 0 (off) or a positive number, not {value!r}.")
    if config.ema_rampup is not None and not (isinstance(config.ema_rampup, (int, float)) and config.ema_rampup > 0):
        raise FaceganError(f"ema-rampup must be a positive number or null, not {config.ema_rampup!r}.")
    unknown = [p for p in config.augment.split(",") if p.strip() and p.strip() not in _policies()]
    if unknown:
        raise FaceganError(f"unknown augmentation {unknown[0]!r}; augment is a comma-separated subset of {','.join(_policies())}.")
    if config.lr_schedule not in _schedules():
        raise FaceganError(f"lr-schedule must be {_either(_schedules())}, not {config.lr_schedule!r}.")
    if not (isinstance(config.lr_decay_start, (int, float)) and 0 <= config.lr_decay_start < 1):
        raise FaceganError(f"lr-decay-start must be a fraction in [0, 1), not {config.lr_decay_start!r}.")
    if not isinstance(config.eval_every, int) or isinstance(config.eval_every, bool) or config.eval_every < 0:
        raise FaceganError(f"eval-every must be 0 (never) or a whole number of epochs, not {config.eval_every!r}.")
    if not (isinstance(config.max_cpu_minutes, (int, float)) and not isinstance(config.max_cpu_minutes, bool)
            and math.isfinite(config.max_cpu_minutes) and config.max_cpu_minutes >= 0):
        raise FaceganError(f"max-cpu-minutes must be 0 (no limit) or a positive number of minutes, not {config.max_cpu_minutes!r}.")
    if config.eval_data is not None and (not isinstance(config.eval_data, str) or not config.eval_data):
        raise FaceganError(f"eval-data must be the path of a prepared dataset, not {config.eval_data!r}.")
    if config.eval_every:
        from facegan.metrics.names import parse_metrics

        parse_metrics(config.evaluate)  # one sentence for a bad name, before any training
    for name in NAME_LISTS:
        names = getattr(config, name)
        flag = name.replace("_", "-")
        if any(not isinstance(n, str) or not n or n != n.strip() or "," in n for n in names):
            raise FaceganError(f"{flag} must name attributes, separated by commas, not {','.join(map(str, names))!r}.")
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise FaceganError(f"{flag} names {', '.join(twice)} more than once.")
    if config.aux_weight and not config.condition:
        raise FaceganError("aux-weight trains D to tell the attributes of --condition, so it needs --condition; "
                           "name the attributes, or leave aux-weight at 0.")
    if config.precision not in _precisions():
        raise FaceganError(f"precision must be {_either(_precisions())}, not {config.precision!r}.")
    if config.compile not in COMPILE_MODES:
        raise FaceganError(f"compile must be {_either(COMPILE_MODES)}, not {config.compile!r}.")
    if not isinstance(config.device, str) or (config.device not in ("auto", "cpu", "cuda", "mps") and not config.device.startswith("cuda:")):
        raise FaceganError(f"device must be auto, cpu, cuda, cuda:N or mps, not {config.device!r}.")


def _either(names: tuple[str, ...]) -> str:
    """'a, b or c'."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def changed_on_resume(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """The settings fixed at a run's start that a resume request would change."""
    return [name for name in RESUME_FIXED if getattr(saved, name) != getattr(requested, name)]

