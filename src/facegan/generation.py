"""From a trained generator to uint8 images: the one path that grids, `sample`, metrics and exports share.

- `latents(count, dim, seed)`: the same latent vectors for a seed on any device; `latent_batches` the
  same vectors a batch at a time, drawn `LATENT_CHUNK` at a time, so no count is held at once.
- `generate(G, z)`: images as a saved PNG holds them, in eval mode.
- `sampler(G, dim)`: a sampling function `(count, seed) -> uint8 batches`, what metrics take; for a
  conditional G with its `LabelTable`, the labels are drawn from the seed as well (any values in
  `fixed`, the rest from the training labels that match).
- `load_generator(source)`: the G to sample from in a run directory, a checkpoint or an exported
  .safetensors file (its moving average when the run keeps one). Nothing is sized from a file's
  numbers before they are checked: the configuration is validated, the weights' names and shapes
  are compared with the generator it describes (built on the meta device, where nothing is
  allocated), and weights holding NaN or infinity are refused. `load_label_table(source)`: a
  conditional run's training labels, from the same places; `load_generator_and_labels` both from one read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.overrides import TorchFunctionMode

from facegan.conditions import LabelTable
from facegan.config import NAME_LISTS, TrainConfig, validate
from facegan.errors import FaceganError
from facegan.models import build_models
from facegan.models.dcgan import rename_old_keys
from facegan.precision import Precision
from facegan.train.checkpoint import nonfinite_tensor, resolve_checkpoint

# A sampling function: `count` images of latents drawn from `seed`, uint8 (N, H, W, 3), as one array
# or as batches that together hold `count` (so metrics of 50k images never hold them all).
SampleFn = Callable[[int, int], "np.ndarray | Iterable[np.ndarray]"]

EXPORT_FORMAT = "facegan-generator"
EXPORT_VERSION = 1
EXPORT_SUFFIX = ".safetensors"
WEIGHTS = ("ema", "raw")  # which G of a checkpoint: its moving average (when kept), or the trained weights
# The metadata a file must hold to be read (export also writes weights, epoch and step, which
# describe it and decide nothing); a file lacking any is refused, and so is a configuration lacking
# any setting: nothing read from a file takes a default.
EXPORT_METADATA = ("format", "version", "config")
# Latent vectors drawn at a time when sampling: at most LATENT_CHUNK x latent_dim floats are held
# (4096 x 512 floats: 8 MB). A multiple of 16, which keeps a chunked draw equal to one draw of all
# (latent_batches says why).
LATENT_CHUNK = 4096


def latents(count: int, latent_dim: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The same latent vectors for a seed on any device (drawn on the CPU, then moved)."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)


def latent_batches(count: int, latent_dim: int, seed: int, batch_size: int, device: torch.device | str = "cpu", *,
                   chunk: int | None = None) -> Iterator[torch.Tensor]:
    """The vectors of `latents(count, latent_dim, seed)`, in batches of `batch_size` (the last may be
    smaller), drawn `chunk` at a time, so a count of millions never holds all its latents at once.

    They are the very numbers of one draw of all `count`: PyTorch's CPU normal sampler fills a
    tensor with uniform numbers in order, then turns each 16 of them into normals (the last 16
    drawn afresh when the size is no multiple of 16), so draws of whole multiples of 16 numbers
    continue one stream; a tail of fewer than 16 numbers joins the draw before it. A seed's images
    for a count are therefore those of one draw, at any batch size or chunk, as before chunks
    (tests/test_bad_input_runs.py checks this against one draw, so a PyTorch that draws otherwise
    is noticed). As with one draw, the first n of a larger count need not equal a count of n.
    """
    chunk = chunk or LATENT_CHUNK
    assert chunk > 0 and chunk % 16 == 0, f"chunk must be a positive multiple of 16, not {chunk}"
    generator = torch.Generator().manual_seed(seed)
    pending: list[torch.Tensor] = []
    held = drawn = 0
    while drawn < count:
        rest = count - drawn
        size = rest if rest <= chunk or (rest - chunk) * latent_dim < 16 else chunk
        block = torch.randn(size, latent_dim, generator=generator)
        drawn += size
        while len(block):
            pending.append(block[: batch_size - held])
            held += len(pending[-1])
            block = block[len(pending[-1]) :]
            if held == batch_size:
                yield torch.cat(pending).to(device)
                pending, held = [], 0
    if pending:
        yield torch.cat(pending).to(device)


def truncate(z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
    """Latents pulled towards the mean latent by `psi` (the truncation trick): mean + psi * (z - mean).

    Latents are drawn from N(0, I), whose mean is exactly the zero vector, so no mean is estimated:
    z' = psi * z. psi 1 returns `z` itself (every result is bit-identical to sampling without it);
    smaller psi trades diversity for typical, cleaner faces; 0 gives the one mean face.
    """
    if not 0.0 <= psi <= 1.0:
        raise FaceganError(f"--truncation must be between 0 and 1, not {psi}.")
    return z if psi == 1.0 else z * psi


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] (B, 3, H, W) -> uint8 (B, H, W, 3), as a saved PNG holds it."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def generate(generator: nn.Module, z: torch.Tensor, batch_size: int = 256, precision: Precision | None = None,
             labels: torch.Tensor | None = None) -> np.ndarray:
    """uint8 images from latent vectors (and, for a conditional G, labels), in eval mode (BatchNorm's running statistics).

    `precision` (default float32) lets bulk sampling use bf16 where it is fast; the result is
    quantised to uint8 either way, so they differ by at most a grey level here and there.
    """
    was_training = generator.training
    generator.eval()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    chunks = z.split(batch_size)
    conditions = labels.split(batch_size) if labels is not None else [None] * len(chunks)
    try:
        with torch.inference_mode(), autocast():
            # an unconditional call for c None: any generator module works here, not only facegan's
            return np.concatenate([to_uint8(generator(chunk) if c is None else generator(chunk, c))
                                   for chunk, c in zip(chunks, conditions)])
    finally:
        generator.train(was_training)


def sampler(generator: nn.Module, latent_dim: int, *, batch_size: int = 500, precision: Precision | None = None,
            labels: LabelTable | None = None, fixed: Mapping[str, bool] | None = None,
            truncation: float = 1.0) -> SampleFn:
    """The sampling function of a generator: `(count, seed)` -> batches of at most `batch_size` uint8 images.

    Latents come from `latent_batches` (so a seed and count mean the same images at any batch
    size) and images are made a batch at a time: memory is bounded by the batch, not the count.
    A conditional G needs its training `labels`: each image's condition is drawn from them for
    the seed (`fixed` values held), all `count` at once (K floats an image), then split likewise.
    `truncation` < 1 pulls each latent towards the mean (`truncate`).
    """
    device = next(generator.parameters()).device
    truncate(torch.zeros(1), truncation)  # a bad psi is refused now, not at the first batch
    if labels is None and getattr(generator, "num_attributes", 0):
        raise ValueError("a conditional generator samples with its training labels (labels=LabelTable)")

    def sample(count: int, seed: int, shard: tuple[int, int] = (0, 1)) -> Iterator[np.ndarray]:
        # shard (i, n): only every n-th batch from the i-th, for one of n processes (the latents stay the same)
        conditions = (torch.from_numpy(labels.draw(count, seed, fixed)).split(batch_size) if labels is not None
                      else itertools.repeat(None))
        return (generate(generator, truncate(z, truncation), batch_size, precision=precision,
                         labels=c if c is None else c.to(device))
                for b, (z, c) in enumerate(zip(latent_batches(count, latent_dim, seed, batch_size, device), conditions))
                if b % shard[1] == shard[0])

    return sample


# ----------------------------------------------------------------------------- loading


def load_generator(source: str | os.PathLike, device: torch.device | str = "cpu", *,
                   which: str = "ema") -> tuple[nn.Module, TrainConfig]:
    """G in eval mode from a run directory (its newest intact checkpoint), a checkpoint file, or a
    .safetensors file written by `facegan export`; with its configuration.

    `which="ema"` (the default) is the generator to sample from: the moving average when the run
    keeps one, else G itself; `which="raw"` is always G's own trained weights.
    """
    generator, config, _ = _load(source, device, which, labels=False)
    return generator, config


def load_generator_and_labels(source: str | os.PathLike, device: torch.device | str = "cpu", *,
                              which: str = "ema") -> tuple[nn.Module, TrainConfig, LabelTable | None]:
    """`load_generator` and `load_label_table` from one read of the file: G, its configuration and its training labels."""
    return _load(source, device, which, labels=True)


def _load(source: str | os.PathLike, device: torch.device | str, which: str,
          labels: bool) -> tuple[nn.Module, TrainConfig, LabelTable | None]:
    if which not in WEIGHTS:
        raise ValueError(f"which must be one of {WEIGHTS}, not {which!r}")
    path = Path(source).expanduser()
    if path.suffix.lower() == EXPORT_SUFFIX and path.is_file():
        weights, config, metadata = _read_exported(path)
        data = _exported_labels(metadata)
    else:
        if not path.exists():
            raise FaceganError(f"{path} does not exist; give a run directory (runs/NNNNN-preset), a checkpoint file "
                               "or a .safetensors file from `facegan export`.")
        path, checkpoint = resolve_checkpoint(path)
        config, data = checkpoint_config(path, checkpoint), checkpoint.get("labels")
        weights = checkpoint["generator"]
        if which == "ema" and isinstance(checkpoint.get("generator_ema"), dict):
            weights = checkpoint["generator_ema"]
    generator = build_generator(config, weights, path)
    table = _label_table(path, config, data) if labels else None
    return generator.to(device, memory_format=torch.channels_last).eval(), config, table


def load_label_table(source: str | os.PathLike) -> LabelTable | None:
    """The training labels of a conditional run, checkpoint or exported file; None for an unconditional one."""
    path = Path(source).expanduser()
    if path.suffix.lower() == EXPORT_SUFFIX and path.is_file():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                metadata = file.metadata() or {}
        except (SafetensorError, OSError, ValueError):
            metadata = {}
        config, data = _exported_config(path, metadata), _exported_labels(metadata)
    else:
        path, checkpoint = resolve_checkpoint(path)
        config, data = checkpoint_config(path, checkpoint), checkpoint.get("labels")
    return _label_table(path, config, data)


def _exported_labels(metadata: dict[str, str]) -> object:
    try:
        return json.loads(metadata["labels"]) if "labels" in metadata else None
    except ValueError:
        return {}  # damaged: LabelTable.from_dict says so in one sentence


def _label_table(path: Path, config: TrainConfig, data: object) -> LabelTable | None:
    """The checked label table of a file whose configuration and label data were read; None when unconditional."""
    if not config.condition:
        return None
    if data is None:
        raise FaceganError(f"{path} is conditioned on {', '.join(config.condition)} but holds no table of its training "
                           "labels; export it again from its run.")
    table = LabelTable.from_dict(data, str(path))
    if table.names != config.condition:
        raise FaceganError(f"{path} holds training labels of {', '.join(table.names)}, but its generator is conditioned "
                           f"on {', '.join(config.condition)}; export it again from its run.")
    return table


def checkpoint_config(path: Path, checkpoint: dict) -> TrainConfig:
    """The validated configuration a checkpoint holds; one sentence when it lacks G or the configuration is damaged."""
    if not isinstance(checkpoint.get("config"), dict) or not isinstance(checkpoint.get("generator"), dict):
        raise FaceganError(f"{path} is not a complete facegan checkpoint (it lacks the generator or its configuration).")
    try:
        config = TrainConfig.from_dict(checkpoint["config"])
        validate(config)
    except (TypeError, ValueError, AttributeError) as error:
        raise FaceganError(f"{path} holds a damaged configuration ({error}).") from None
    return config


def build_generator(config: TrainConfig, weights: Mapping[str, torch.Tensor], source: Path) -> nn.Module:
    """The configuration's G holding `weights`; one sentence if they do not fit it or are not finite.

    G is built on the meta device and the checked weights are put in its place, so neither a
    configuration nor a file can make it allocate more than the weights themselves hold.
    """
    generator = expected_generator(config, source)
    expected = generator.state_dict()
    if not all(isinstance(tensor, torch.Tensor) for tensor in weights.values()):
        raise FaceganError(f"the weights in {source} do not fit a {config.model} generator of its own configuration "
                           "(some are not tensors).")
    check_shapes({name: tuple(tensor.shape) for name, tensor in weights.items()}, expected, config, source)
    check_finite(weights, source)
    generator.load_state_dict({name: weights[name].to(expected[name].dtype) for name in expected}, assign=True)
    return generator


class _Unfilled(TorchFunctionMode):
    """Leaves out weight initialisation: on the meta device there is nothing to fill, and PyTorch's
    meta `normal_` costs seconds on first use (it imports its compiler)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" or func in (torch.Tensor.normal_, torch.Tensor.uniform_):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def expected_generator(config: TrainConfig, source: Path) -> nn.Module:
    """The configuration's G on the meta device: its weights' names, shapes and types, with nothing allocated."""
    if config.resolution is None:
        raise FaceganError(f"{source} holds a configuration without a resolution; it was not written by a training run.")
    try:
        # D is not wanted: the smallest one the family builds (G does not depend on D's settings).
        with torch.device("meta"), _Unfilled():
            generator, _ = build_models(config.model, config.latent_dim, config.g_width, 1, config.resolution,
                                        d_norm=None, spectral_norm=False, num_attributes=len(config.condition))
    except (RuntimeError, ValueError, OverflowError) as error:  # e.g. a size past what a tensor can count
        raise FaceganError(f"{source} describes a {config.model} generator that cannot be built "
                           f"({str(error).strip().splitlines()[0][:160]}).") from None
    return generator


def check_shapes(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, torch.Tensor], config: TrainConfig,
                 source: Path) -> None:
    """One sentence unless the weights' names and shapes are exactly those of the configuration's G."""
    missing = [name for name in expected if name not in shapes]
    unexpected = [name for name in shapes if name not in expected]
    wrong = [f"{name} is {list(shapes[name])}, not {list(expected[name].shape)}"
             for name in expected if name in shapes and tuple(shapes[name]) != tuple(expected[name].shape)]
    problems = ([f"it lacks {_few(missing)}"] if missing else []) + ([f"it holds no such {_few(unexpected)}"] if unexpected else [])
    if problems or wrong:
        described = f"latent {config.latent_dim}, g-width {config.g_width}, {config.resolution}px"
        raise FaceganError(f"the weights in {source} do not fit a {config.model} generator of its own configuration "
                           f"({described}): {'; '.join(problems + wrong[:3])}.")


def check_finite(weights: Mapping[str, torch.Tensor], source: Path) -> None:
    """One sentence if a weight holds NaN or infinity (such a G makes black or meaningless images)."""
    bad = nonfinite_tensor(dict(weights))
    if bad is not None:
        raise FaceganError(f"{source} holds weights that are not finite numbers ({bad} has NaN or infinity), so it "
                           "would make only black or meaningless images; use a checkpoint from before the run went "
                           "wrong, or export it again.")


def _few(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def read_exported(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], TrainConfig]:
    """The weights and configuration of a file written by `facegan export`; no code runs.

    Its format, version and configuration must be there, with every setting (none takes a
    default); the configuration is validated as a run's is, and the tensors' names and shapes are
    checked against the generator it describes before any tensor is read. Weights that are not
    finite are refused.
    """
    tensors, config, _ = _read_exported(Path(path))
    return tensors, config


def _read_exported(path: Path) -> tuple[dict[str, torch.Tensor], TrainConfig, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            config = _exported_config(path, metadata)
            model = expected_generator(config, path)
            names = list(file.keys())  # a safe_open handle, not a dict
            shapes = {name: tuple(file.get_slice(name).get_shape()) for name in names}
            rename_old_keys(model, shapes, "")  # files exported before the models had named blocks
            check_shapes(shapes, model.state_dict(), config, path)
            tensors = {name: file.get_tensor(name) for name in names}
    except FileNotFoundError:
        raise FaceganError(f"{path} does not exist; give a file written by `facegan export`.") from None
    except (SafetensorError, OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise FaceganError(f"{path} is damaged or not a safetensors file ({first}).") from None
    rename_old_keys(model, tensors, "")
    check_finite(tensors, path)
    return tensors, config, metadata


def _exported_config(path: Path, metadata: dict[str, str]) -> TrainConfig:
    """The validated configuration in an exported file's metadata; one sentence for anything missing or wrong."""
    if metadata.get("format") != EXPORT_FORMAT:
        raise FaceganError(f"{path} is not a facegan generator (its metadata names no facegan format); "
                           "make one with `facegan export RUN --out FILE`.")
    if metadata.get("version") != str(EXPORT_VERSION):
        raise FaceganError(f"{path} is a generator of format {metadata.get('version')}; this facegan reads format "
                           f"{EXPORT_VERSION}: use the facegan version that wrote it.")
    missing = [key for key in EXPORT_METADATA if key not in metadata]
    if missing:
        raise FaceganError(f"{path} lacks the metadata {_few(missing)} that `facegan export` writes; export it again.")
    try:
        values = json.loads(metadata["config"])
    except ValueError as error:
        raise FaceganError(f"{path} holds a damaged configuration (not JSON: {error}); export it again.") from None
    if not isinstance(values, dict):
        raise FaceganError(f"{path} holds a damaged configuration (a JSON {type(values).__name__}, not an object); "
                           "export it again.")
    # Settings added since format 1 began, whose absence means what older files are: unconditional
    # (no attribute lists), trained in one process (no sync_bn), with no CPU budget and measured on
    # the training data, without D's attribute head (max_cpu_minutes, eval_data, aux_weight: training
    # settings only). Every other setting must be there.
    later = (*NAME_LISTS, "sync_bn", "max_cpu_minutes", "eval_data", "aux_weight")
    absent = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in values and f.name not in later]
    if absent:  # never a default: a missing width or size would quietly build another generator
        raise FaceganError(f"{path} holds a configuration without {_few(absent)}; export it again.")
    try:
        config = TrainConfig.from_dict(values)
        validate(config)  # exactly as a run's configuration is checked
    except FaceganError as error:
        raise FaceganError(f"{path} holds a damaged configuration ({str(error).rstrip('.')}); export it again.") from None
    except (ValueError, TypeError, AttributeError) as error:
        raise FaceganError(f"{path} holds a damaged configuration ({error}); export it again.") from None
    return config
