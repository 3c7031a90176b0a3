"""Measure a generator: sample, take Inception features, compute FID / KID / precision-recall.

Metric names carry their sample count (`fid10k`, `kid2k`, `pr10k`, `fid500`): that many
generated images, and as many real ones (all of them when the dataset is smaller). The real
images of a count are a fixed random subset (seed 0) of the dataset, so the same count always
means the same images. Their features are cached in `<cache>/inception-features/` under a key
of (dataset content hash, count, resize mode, network SHA-256); the file records its key and is
used only when every part matches, so other settings are never silently reused.

Generated images come from a sampling function `(count, seed) -> uint8 images`, as clean-fid
takes a generator function: `facegan.generation.sampler(G, latent_dim)` makes one that quantises
exactly as saved PNGs are. Results go to `<run>/metrics.jsonl`, one record per measured
checkpoint, and `<run>/plots/metrics.png` is redrawn from that file.

For the training loop: `evaluate(sampler(G, dim), dataset, ["fid2k"], device=...)` returns the
values; `append_metrics(run_dir, record)` writes them and redraws the plot.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facegan import distributed, plots, viz
from facegan.data import PreparedDataset, open_prepared
from facegan.data.builtin import open_data
from facegan.errors import FaceganError, FaceganWarning
from facegan.files import write_atomically
from facegan.generation import SampleFn, load_generator_and_labels, sampler
from facegan.metrics import fid as fid_math
from facegan.metrics.inception import RESIZE_MODE, Inception, features, load_inception
from facegan.metrics.names import VALUE_KEY, Metric, as_metrics
from facegan.runtime import cache_dir, out_of_memory_as_error, resolve_device
from facegan.train.checkpoint import (
    NOT_A_RUN,
    checkpoints_newest_first,
    load_checkpoint,
    resolve_checkpoint,
)

FID_MIN_SAMPLES = 2048  # below the feature dimension the covariance is singular and FID strongly biased
# The fewest images each kind of metric can be computed from at all (a covariance needs 2; precision
# and recall need more than their k nearest neighbours).
MIN_IMAGES = {"fid": 2, "kid": 2, "pr": fid_math.PR_NEIGHBOURS + 1}
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = Path("plots") / "metrics.png"
DEFAULT_METRICS = ("fid10k",)
CACHE_FORMAT = "facegan-inception-features"
CACHE_VERSION = 1
REAL_SUBSET_SEED = 0


def warn(message: str) -> None:
    """A FaceganWarning (the CLI prints each once, as `facegan: warning: ...`)."""
    warnings.warn(message, FaceganWarning, stacklevel=3)


def warn_small_fid(name: str, count: int) -> None:
    """Warn that an FID of fewer than 2,048 samples is biased upwards."""
    if count < FID_MIN_SAMPLES:
        warn(f"{name} uses {count:,} samples, fewer than {FID_MIN_SAMPLES:,}: the covariance of 2048-d features is "
             "singular, so FID is strongly biased upwards and only comparable at the same count.")


# ----------------------------------------------------------------------------- real features, cached


def real_subset(dataset: PreparedDataset, count: int) -> np.ndarray:
    """Sorted indices of the `count` real images a metric uses: all, or a fixed random subset."""
    if count >= len(dataset):
        return np.arange(len(dataset))
    return np.sort(np.random.default_rng(REAL_SUBSET_SEED).permutation(len(dataset))[:count])


def cache_key(dataset: PreparedDataset, count: int, network: Inception) -> dict | None:
    """What the cached real features of (dataset, count, network) depend on; None when uncacheable."""
    content = dataset.manifest.get("content_hash")
    if not content:
        return None
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "dataset": content, "count": int(count),
            "resize": RESIZE_MODE, "network": network.sha256, "subset_seed": REAL_SUBSET_SEED}


def cache_path(key: dict) -> Path:
    """Where the features of a key are cached."""
    dataset = key["dataset"].removeprefix("sha256:")[:16]
    return cache_dir() / "inception-features" / f"{dataset}-{key['count']}-{key['resize']}-{key['network'][:12]}.npz"


def _read_cached(path: Path, key: dict) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            stored_key = json.loads(str(stored["key"]))
            values = stored["features"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as error:
        warn(f"the cached features {path} are unreadable ({error}); computing them again.")
        return None
    if stored_key != key:
        differ = sorted(k for k in set(key) | set(stored_key) if key.get(k) != stored_key.get(k))
        warn(f"the cached features {path} were made with a different {', '.join(differ)}; computing them again.")
        return None
    if values.shape != (key["count"], 2048) or values.dtype != np.float32:
        warn(f"the cached features {path} hold {values.dtype} {values.shape}, not float32 ({key['count']}, 2048); "
             "computing them again.")
        return None
    return values


def _write_cached(path: Path, key: dict, values: np.ndarray) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as stream:  # a stream, since np.savez adds .npz to a name without it
            np.savez(stream, key=np.array(json.dumps(key, sort_keys=True)), features=values)

    try:
        write_atomically(path, write)
    except OSError as error:
        warn(f"could not cache the real features in {path} ({error.strerror or error}); they will be computed again next time.")


def real_features(dataset: PreparedDataset, count: int, network: Inception, *, batch_size: int | None = None,
                  progress: bool = False) -> np.ndarray:
    """float32 (min(count, N), 2048) features of the dataset's real images for a count, from the cache if it matches."""
    indices = real_subset(dataset, count)
    key = cache_key(dataset, len(indices), network)
    cached = _read_cached(cache_path(key), key) if key is not None else None
    if not distributed.any_rank(cached is None, device=torch.device("cpu"))[0]:  # every rank has them (or is alone)
        return cached
    step = 1024  # memory-mapped rows read at a time
    rank, ranks = distributed.rank(), distributed.world_size()
    batches = (dataset.take(indices[i : i + step]) for b, i in enumerate(range(0, len(indices), step)) if b % ranks == rank)
    values = _shared_features(network, batches, batch_size=batch_size, progress=progress, total=len(indices))
    if key is not None and rank == 0:
        _write_cached(cache_path(key), key, values)
    return values


def _shared_features(network: Inception, mine: Iterable[np.ndarray], *, batch_size: int | None, progress: bool,
                     total: int) -> np.ndarray:
    """Features of every rank's batches in their order, from this rank's share: batches rank, rank + n, rank + 2n...
    (each measured as one process measures it, so the result is the one process's)."""
    ranks = distributed.world_size()
    if ranks == 1:
        return features(network, mine, batch_size=batch_size, progress=progress, total=total)
    share = [features(network, array, batch_size=batch_size) for array in mine]
    shares = distributed.gather(share)
    ordered = [shares[b % ranks][b // ranks] for b in range(sum(len(s) for s in shares))]
    return np.concatenate(ordered) if ordered else np.zeros((0, 2048), np.float32)


# ----------------------------------------------------------------------------- generated features


def generated_features(sample: SampleFn, count: int, network: Inception, *, seed: int = 0,
                       batch_size: int | None = None, progress: bool = False) -> np.ndarray:
    """float32 (count, 2048) features of the `count` images `sample(count, seed)` makes."""
    ranks = distributed.world_size()
    if ranks > 1 and "shard" in inspect.signature(sample).parameters:  # each rank makes and measures its share
        images = sample(count, seed, shard=(distributed.rank(), ranks))
        values = _shared_features(network, images, batch_size=batch_size, progress=progress, total=count)
    else:
        images = sample(count, seed)
        batches = [images] if isinstance(images, np.ndarray) else images
        values = features(network, batches, batch_size=batch_size, progress=progress, total=count)
    if len(values) != count:
        raise ValueError(f"the sampling function made {len(values)} images when asked for {count}")
    return values


def compute_metrics(metrics: Sequence[Metric], real: dict[int, np.ndarray], fake: np.ndarray,
                    seed: int = 0) -> dict[str, float]:
    """Values of each metric from real features per count and generated features (the first `count` used)."""
    values: dict[str, float] = {}
    for metric in metrics:
        r, f = real[metric.count], fake[: metric.count]
        if metric.kind == "fid":
            warn_small_fid(metric.name, min(len(r), len(f)))
            values[metric.name] = fid_math.frechet_distance(fid_math.gaussian_stats(r), fid_math.gaussian_stats(f))
        elif metric.kind == "kid":
            values[metric.name], values[f"{metric.name}_std"] = fid_math.kernel_inception_distance(r, f, seed=seed)
        else:
            values[f"{metric.name}_precision"], values[f"{metric.name}_recall"] = fid_math.precision_recall(r, f)
    return values


def require_images(where: str, count: int, metrics: Sequence[Metric]) -> None:
    """One sentence, before any network runs, when `count` images are too few for a metric at all."""
    need = max(MIN_IMAGES[m.kind] for m in metrics)
    if count < need:
        names = ", ".join(m.name for m in metrics if MIN_IMAGES[m.kind] == need)
        raise FaceganError(f"{where} holds {count} image{'s' if count != 1 else ''}, too few for {names}, which needs "
                           f"at least {need} (and thousands to mean much); give a larger dataset.")


def out_of_memory(batch_size: int | None) -> contextlib.AbstractContextManager[None]:
    """The GPU's out-of-memory error as one sentence naming --batch-size (the Inception network's images at once)."""
    size = f"{batch_size} images" if batch_size else "its default batch of images"
    lower = max(1, (batch_size or 200) // 4)
    return out_of_memory_as_error(f"running the Inception network on {size} at once",
                                  f"lower --batch-size (say to {lower})")


def as_network(network: Inception | str | os.PathLike | None, device: torch.device, progress: bool) -> Inception:
    """A loaded network as it is, or the one a path (None: the standard one) names, loaded on `device`."""
    if isinstance(network, Inception):
        return network
    return load_inception(network, device, progress=progress)


def evaluate(
    sample: SampleFn,
    dataset: PreparedDataset | str | os.PathLike,
    metrics: str | Sequence[str] | Sequence[Metric],
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    network: Inception | str | os.PathLike | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metric values of the images a sampling function makes, against a prepared dataset, e.g. {"fid2k": 41.3}.

    `sample(count, seed)` returns uint8 (N, H, W, 3) images, or batches of them. For the training
    loop as much as for `facegan evaluate`: the network is loaded once per process, and the real
    features come from the cache after the first call. `device` runs the Inception network.
    """
    metrics = as_metrics(metrics)
    dataset = dataset if isinstance(dataset, PreparedDataset) else open_prepared(dataset)
    require_images(str(dataset.path), len(dataset), metrics)
    inception = as_network(network, resolve_device(device), progress)
    real = {}
    for count in sorted({m.count for m in metrics}):
        real[count] = real_features(dataset, count, inception, batch_size=batch_size, progress=progress)
        if len(real[count]) < count:
            warn(f"{dataset.path} has {len(dataset):,} images, so metrics of {count:,} samples compare all of "
                 f"them with {count:,} generated images.")
    fake = generated_features(sample, max(m.count for m in metrics), inception, seed=seed,
                              batch_size=batch_size, progress=progress)
    return compute_metrics(metrics, real, fake, seed=seed)


# ----------------------------------------------------------------------------- runs


def _run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint file belongs to, if it sits in one."""
    run = checkpoint.parent.parent
    return run if checkpoint.parent.name == "checkpoints" and (run / "config.json").exists() else None


def _checkpoints(run: Path, which: str | os.PathLike | None) -> list[Path]:
    """The checkpoint files to measure: `which` (a file), every one of the run (`all`), or its newest intact one."""
    if which is not None and str(which) != "all":
        path = Path(which).expanduser()
        if not path.is_file():
            raise FaceganError(f"--checkpoint {path} is not a file; give a checkpoint of the run, or `all`.")
        return [path]
    if run.is_file():
        return [run]
    if which is None:
        return [resolve_checkpoint(run)[0]]
    if not run.is_dir():
        raise FaceganError(f"{run} does not exist; {NOT_A_RUN}.")
    found = list(reversed(checkpoints_newest_first(run)))
    if not found:
        raise FaceganError(f"{run} holds no checkpoint; give a run directory that has trained at least one epoch.")
    return found


def _describe(path: Path, run_dir: Path | None) -> dict:
    """Step, epoch, kimg and CPU seconds of a checkpoint (kimg from the run's stats.jsonl when it has that step;
    cpu_s None for a checkpoint written before facegan counted CPU time)."""
    if path.suffix.lower() != ".pt":
        return {"step": None, "epoch": None, "kimg": None, "cpu_s": None}
    checkpoint = load_checkpoint(path)
    step, epoch = checkpoint.get("step"), checkpoint.get("epoch")
    batch = (checkpoint.get("config") or {}).get("batch_size")
    kimg = step * batch / 1000 if isinstance(step, int) and isinstance(batch, int) else None
    stats = run_dir / "stats.jsonl" if run_dir is not None else None
    if stats is not None and stats.exists():  # counts every rank's images in multi-GPU runs; damaged lines left out
        kimg = next((r["kimg"] for r in plots.read_records(stats)[0] if r.get("step") == step and "kimg" in r), kimg)
    return {"step": step, "epoch": epoch, "kimg": kimg, "cpu_s": checkpoint.get("cpu_s")}


def evaluate_run(
    run: str | os.PathLike,
    *,
    dataset: str | os.PathLike | None = None,
    metrics: str | Sequence[str] | Sequence[Metric] = DEFAULT_METRICS,
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    network: str | os.PathLike | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Measure a run's newest checkpoint (or `checkpoint`, or `all`); one record per checkpoint, also
    appended to the run's metrics.jsonl, with plots/metrics.png redrawn."""
    parsed = as_metrics(metrics)
    run = Path(run).expanduser()
    paths = _checkpoints(run, checkpoint)  # a wrong path fails before the network loads
    torch_device = resolve_device(device)
    # Under torchrun every rank makes and measures its share of the images; rank 0 writes the records.
    with distributed.process_group(torch_device):
        progress = progress and distributed.rank() == 0
        inception = load_inception(network, torch_device, progress=progress)
        records: list[dict] = []
        for path in paths:
            run_dir = run if (run / "config.json").is_file() else _run_dir_of(path)
            described = _describe(path, run_dir)
            if path.name == "latest.pt" and any(r["step"] == described["step"] for r in records):
                continue  # `all`: latest.pt is usually the last epoch's checkpoint again
            generator, config, labels = load_generator_and_labels(path, torch_device)
            data = open_data(dataset if dataset is not None else config.data, config.synthetic_count, config.resolution,
                             progress=progress)
            if data.resolution != config.resolution:
                warn(f"the generator makes {config.resolution}px images and {data.path} holds {data.resolution}px ones; "
                     "both are resized to 299px, but the comparison is unusual.")
            with out_of_memory(batch_size):
                values = evaluate(sampler(generator, config.latent_dim, labels=labels), data, parsed, device=torch_device, seed=seed,
                                  network=inception, batch_size=batch_size, progress=progress)
            record = {**described, **values, "checkpoint": str(path), "dataset": str(data.path),
                      "real_images": {m.name: min(m.count, len(data)) for m in parsed}, "seed": seed,
                      "network": inception.sha256, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            if run_dir is not None and distributed.rank() == 0:
                append_metrics(run_dir, record)
            records.append(record)
    return records


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The intact records of run_dir/metrics.jsonl ([] when there is none), in order.

    Damaged lines are moved, as they were, to metrics.jsonl.damaged with a warning, and the file is
    rewritten with the intact records, so the next record appended to it is never lost.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records, damaged = plots.read_records(path)
    if damaged:
        plots.set_aside_damaged(path, damaged, len(records))
        text = "".join(json.dumps(r) + "\n" for r in records)
        write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return records


def append_metrics(run_dir: str | os.PathLike, record: dict) -> Path:
    """Append one record to run_dir/metrics.jsonl and redraw run_dir/plots/metrics.png from the whole file.

    Damaged lines already there are set aside first (read_metrics); a plot that cannot be drawn
    is a warning, since the record, what was measured, is already safe.
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    records = [*read_metrics(run_dir), record]
    # A last line without its newline (a hand edit) must not swallow the new record.
    cut = path.exists() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(("\n" if cut else "") + json.dumps(record) + "\n")
    try:
        plot_metrics(records, run_dir / PLOT_FILE)
    except ValueError as error:  # e.g. a hand-edited value that is not a number
        warn(f"could not redraw {run_dir / PLOT_FILE} from {path} ({error}); the new record is kept.")
    return path


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1)


def metric_keys(records: Iterable[dict]) -> list[str]:
    """The plotted metric keys found in records (standard deviations left out), in first-seen order."""
    keys: list[str] = []
    for record in records:
        for key in record:
            if (VALUE_KEY.fullmatch(key) and key not in keys
                    and isinstance(record[key], (int, float))):
                keys.append(key)
    return keys


def plot_metrics(records: list[dict], path: str | os.PathLike) -> Path | None:
    """Every metric over training, one panel each, stacked into one PNG; None when there is nothing to plot."""
    keys = metric_keys(records)
    if not keys:
        return None
    with tempfile.TemporaryDirectory() as folder:
        panels = [np.asarray(Image.open(plots.plot_metric(records, key, Path(folder) / f"{key}.png")).convert("RGB"))
                  for key in keys]
    width = max(panel.shape[1] for panel in panels)
    panels = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    return viz.save_png(np.concatenate(panels), path)


def plot_runs(runs: Sequence[str | os.PathLike], metric: str | None = None, x: str = "cpu-minutes",
              out: str | os.PathLike | None = None) -> Path:
    """A metric of runs' metrics.jsonl over training (`facegan plot`): one line per run, and per reference where a run
    was measured against several; by default the first run's first metric, to RUN/plots/METRIC-X.png for one run."""
    if x not in plots.X_AXES:
        raise FaceganError(f"--x must be one of {', '.join(plots.X_AXES)}, not {x!r}.")
    paths = [Path(run).expanduser() for run in runs]
    if out is None and len(paths) > 1:
        raise FaceganError("several runs make one comparison picture: name it with --out, e.g. --out fid.png.")
    records = {}
    for run in paths:
        if not (run / METRICS_FILE).is_file():
            raise FaceganError(f"{run} has no {METRICS_FILE}; train it with --eval-every N, or run `facegan evaluate {run}`.")
        records[run] = read_metrics(run)
    if metric is None:
        found = metric_keys(records[paths[0]])
        if not found:
            raise FaceganError(f"{paths[0] / METRICS_FILE} records no metric value to plot.")
        metric = found[0]
    curves, steps = {}, None
    for run, rows in records.items():
        references = list(dict.fromkeys(r.get("dataset") for r in rows if metric in r))
        if not references:
            raise FaceganError(f"{run / METRICS_FILE} has no {metric} value; it records {', '.join(metric_keys(rows)) or 'none'}.")
        labels = [run.name if len(references) == 1 else f"{run.name} ({Path(str(reference)).name})" for reference in references]
        for label, reference in zip(labels, references):
            chosen = [r for r in rows if r.get("dataset") == reference]
            curves[label] = plots.metric_curve(chosen, metric, x)
            if len(paths) == 1 and len(references) == 1 and x == "cpu-minutes":
                steps = plots.metric_curve(chosen, "step", x)  # G steps at the same CPU minutes, for the top edge
        if not any(curves[label][0].size for label in labels):
            hint = (" (runs trained before facegan counted CPU time record none); plot it with --x steps"
                    if x == "cpu-minutes" else "")
            raise FaceganError(f"{run / METRICS_FILE} has no {metric} value with its {plots.X_AXES[x][0]}{hint}.")
    target = Path(out) if out is not None else paths[0] / "plots" / f"{metric}-{x}.png"
    return plots.plot_runs(curves, metric, target, x=x, steps=steps)


# ----------------------------------------------------------------------------- printing


def format_table(records: Sequence[dict], metrics: str | Sequence[str] | Sequence[Metric]) -> str:
    """Records as an aligned text table: checkpoint, epoch, step, kimg, then each value."""
    keys = [key for metric in as_metrics(metrics) for key in metric.value_keys()]
    header = ["checkpoint", "epoch", "step", "kimg", *keys]

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
        return str(value)

    rows = [[Path(r["checkpoint"]).name, *(cell(r.get(k)) for k in header[1:])] for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("-" * len(lines[0]))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)
