"""Latent arithmetic: an attribute's direction in latent space, faces moved along it, and how well that works.

- `fit_direction`: N latents of a seed are made into faces and scored by an attribute classifier;
  the direction is the mean latent of the faces it scores high minus that of those it scores low
  (probability >= 0.5 against < 0.5, or with `quantile` q the top q against the bottom q).
  `difference_of_means` is that last step, pure.
- The direction is saved beside the run (RUN/directions/ATTRIBUTE.safetensors) with what it was
  fitted with: the attribute, N, the seed, the classifier's path and SHA-256, latent_dim and a hash
  of G's weights. A later call asking for the same is given the saved one; one asking otherwise
  (another classifier, N, checkpoint...) fits it again, as `refit` does.
- `arithmetic`: a grid (a row per seed, a column per multiple of the direction, centred on the
  seed's own latent, the middle column) and the attribute's rate along the steps: for each
  multiple, the share of M fresh latents (drawn from seed + 1, never the fit's) that the classifier
  calls positive once moved by it, with 95% Wilson intervals. Written as FILE.png and FILE.json.
- `analogy`: the DCGAN paper's demonstration, (A, not B) - (neither) + (B, not A), each term the
  mean latent of three faces the classifier scores so (smiling woman - neutral woman + neutral man
  = smiling man), drawn to FILE-analogy.png, with how often such sums show A, B and both.

A conditional run's faces are drawn with labels from its training labels, as `sample` does (the
values in `attrs` held); a latent's labels stay the same along its row, so only the latent moves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from facegan import viz
from facegan.audit import rate
from facegan.classifier import Classifier, load_classifier, predict
from facegan.conditions import LabelTable, describe, parse_attrs
from facegan.errors import FaceganError, FaceganWarning
from facegan.files import sha256_file, write_atomically
from facegan.generation import (
    generate,
    latent_batches,
    latents,
    load_generator_and_labels,
)
from facegan.paths import output_file
from facegan.runtime import resolve_device

FORMAT = "facegan-direction"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
MAX_FIT = 50_000  # latents held at once to fit (50k x 512 floats: 100 MB)
MAX_MEASURE = 20_000
MAX_SEEDS = 32
MAX_STEPS = 25
ANALOGY_EXEMPLARS = 3  # faces averaged a term, as in the DCGAN paper
ANALOGY_SIDE = 128  # the analogy's faces are enlarged to about this many pixels, so its captions fit above them
MIN_SIDE = 20  # fewer faces than this on one side: the mean is mostly noise (warned, not refused)
BATCH = 256
# What must match for a saved direction to be reused.
FIT_KEYS = ("attribute", "count", "seed", "quantile", "attrs", "classifier_sha256", "latent_dim", "generator_hash")


# ----------------------------------------------------------------------------- the direction


def difference_of_means(z: torch.Tensor, probabilities: np.ndarray, quantile: float | None = None
                        ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """mean(z[high]) - mean(z[low]) of latents (N, D) scored (N,), and the two bool masks.

    high / low: probability >= 0.5 / < 0.5, or with `quantile` q the top and bottom q of the scores
    (round(q N) each, at least one). Either side empty: the direction is NaN (the caller refuses).
    """
    assert z.ndim == 2 and len(z) == len(probabilities), f"expected (N, D) latents and N scores, got {tuple(z.shape)}, {len(probabilities)}"
    p = np.asarray(probabilities, np.float64)
    if quantile is None:
        high, low = p >= 0.5, p < 0.5
    else:
        order = np.argsort(p, kind="stable")
        k = max(1, round(quantile * len(p)))
        low, high = np.zeros(len(p), bool), np.zeros(len(p), bool)
        low[order[:k]], high[order[len(p) - k :]] = True, True

    def mean(mask: np.ndarray) -> torch.Tensor:  # NaN for an empty side
        return z[torch.from_numpy(mask)].double().mean(dim=0)

    return (mean(high) - mean(low)).float(), high, low


def scores_of(generator: nn.Module, classifier: Classifier, z: torch.Tensor, labels: torch.Tensor | None = None,
              batch_size: int = BATCH) -> np.ndarray:
    """The classifier's probabilities (N, K) of its attributes on the faces of latents z (N, D) (and labels, if conditional)."""
    device = next(generator.parameters()).device
    out = []
    for start in range(0, len(z), batch_size):
        c = None if labels is None else labels[start : start + batch_size].to(device)
        images = generate(generator, z[start : start + batch_size].to(device), batch_size, labels=c)
        out.append(predict(classifier, images, batch_size=batch_size))
    return np.concatenate(out) if out else np.zeros((0, len(classifier.attributes)), np.float32)


def attribute_scores(generator: nn.Module, classifier: Classifier, column: int, z: torch.Tensor,
                     labels: torch.Tensor | None = None, batch_size: int = BATCH) -> np.ndarray:
    """The classifier's probability (N,) of attribute `column` on the faces of latents z (N, D)."""
    return scores_of(generator, classifier, z, labels, batch_size)[:, column]


def fit_direction(generator: nn.Module, latent_dim: int, classifier: Classifier, attribute: str, *, count: int = 2000,
                  seed: int = 0, quantile: float | None = None, labels: LabelTable | None = None,
                  fixed: Mapping[str, bool] | None = None, classifier_name: str = "the classifier") -> dict:
    """The direction of `attribute` over `count` latents of `seed`: {"direction": (D,) tensor, "high", "low", "norm",
    "scores": the classifier's (count, K) probabilities of every attribute on those faces}."""
    column = classifier_column(classifier, attribute, classifier_name)
    check_fit(count, quantile)
    z = torch.cat(list(latent_batches(count, latent_dim, seed, BATCH)))
    c = torch.from_numpy(labels.draw(count, seed, fixed)) if labels is not None else None
    every = scores_of(generator, classifier, z, c)
    scores = every[:, column]
    direction, high, low = difference_of_means(z, scores, quantile)
    for side, mask, word in (("high", high, "at or above"), ("low", low, "below")):
        if not mask.any():
            raise FaceganError(f"none of the {count:,} faces scores {word} 0.5 for {attribute} by {classifier_name} "
                               f"(the {side} side is empty), so there is no direction between the two sides; "
                               "try --quantile 0.2, more faces (-n) or another attribute.")
    small = min(int(high.sum()), int(low.sum()))
    if small < MIN_SIDE:
        split = f"the top and bottom {quantile:.0%} of scores" if quantile is not None else "probability 0.5"
        warnings.warn(FaceganWarning(
            f"only {small} of {count:,} faces are on the {'high' if high.sum() == small else 'low'} side ({split}) of "
            f"{attribute}; the mean of so few is noisy, and so is the direction: raise -n or use --quantile."), stacklevel=2)
    return {"direction": direction, "high": int(high.sum()), "low": int(low.sum()), "norm": float(direction.norm()),
            "mean_score": float(scores.mean()), "scores": every}


def check_fit(count: int, quantile: float | None) -> None:
    """One sentence for a count or quantile no direction can be fitted with."""
    if not 2 <= count <= MAX_FIT:
        raise FaceganError(f"-n must be from 2 to {MAX_FIT:,} latents to fit a direction over, not {count:,}.")
    if quantile is not None and not (math.isfinite(quantile) and 0 < quantile <= 0.5):
        raise FaceganError(f"--quantile must be above 0 and at most 0.5 (the top and bottom share), not {quantile}.")


def classifier_column(classifier: Classifier, attribute: str, name: str = "the classifier") -> int:
    """The column of `attribute` in the classifier's outputs; one sentence listing what it knows if it has none."""
    if attribute not in classifier.attributes:
        raise FaceganError(f"{name} does not know {attribute!r}; it knows {', '.join(classifier.attributes)}.")
    return classifier.attributes.index(attribute)


def weights_hash(generator: nn.Module) -> str:
    """A SHA-256 of G's weights (names and float32 bytes): the same G from a run, a checkpoint or an export."""
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the saved direction


def directions_dir(source: str | os.PathLike) -> Path:
    """Where a source's directions are kept: RUN/directions for a run or a checkpoint in one, FILE-directions beside a file."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path / "directions"
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file():
        return path.parent.parent / "directions"
    return path.parent / f"{path.stem}-directions"


def save_direction(path: Path, direction: torch.Tensor, metadata: Mapping[str, object]) -> Path:
    """The direction (D,) as safetensors, its fit in the metadata (JSON values), atomically."""
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION), **{k: json.dumps(v) for k, v in metadata.items()}}
    tensor = direction.detach().to("cpu", torch.float32).contiguous()
    return write_atomically(path, lambda target: save_file({"direction": tensor}, str(target), metadata=meta))


def load_direction(path: str | os.PathLike) -> tuple[torch.Tensor, dict]:
    """A saved direction and its fit; one sentence for a damaged or foreign file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            raw = file.metadata() or {}
            if raw.get("format") != FORMAT or raw.get("version") != str(FORMAT_VERSION):
                raise FaceganError(f"{path} is not a facegan direction of format {FORMAT_VERSION}; delete it or add --refit.")
            direction = file.get_tensor("direction")
        metadata = {k: json.loads(v) for k, v in raw.items() if k not in ("format", "version")}
    except (SafetensorError, OSError, ValueError, KeyError) as error:  # ValueError: JSON too
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        raise FaceganError(f"{path} is damaged ({first}); add --refit to fit the direction again.") from None
    if direction.ndim != 1 or not torch.isfinite(direction).all():
        raise FaceganError(f"{path} holds no finite direction vector; add --refit to fit it again.")
    return direction, metadata


# ----------------------------------------------------------------------------- moving along it


def multiples(steps: int, scale: float) -> list[float]:
    """`steps` multiples of the direction from -scale to +scale; steps is odd, so the middle one is 0 (the seed's own face)."""
    if steps < 3 or steps > MAX_STEPS or steps % 2 == 0:
        raise FaceganError(f"--steps must be odd and from 3 to {MAX_STEPS} (the middle column is the seed's own face), not {steps}.")
    if not math.isfinite(scale) or scale <= 0:
        raise FaceganError(f"--scale must be a positive number of directions, not {scale}.")
    values = np.linspace(-scale, scale, steps)
    values[steps // 2] = 0.0  # exactly
    return [float(v) for v in values]


def rates_along(generator: nn.Module, classifier: Classifier, column: int, direction: torch.Tensor, steps: Sequence[float],
                z: torch.Tensor, labels: torch.Tensor | None = None) -> list[dict]:
    """For each multiple m, the share of latents z (M, D) classified positive once moved to z + m * direction."""
    rows = []
    for m in steps:
        scores = attribute_scores(generator, classifier, column, z + m * direction, labels)
        rows.append({"multiple": m, **rate(scores >= 0.5), "mean_probability": float(scores.mean())})
    return rows


def captioned(images: np.ndarray, rows: Sequence[str], columns: Sequence[Sequence[str]]) -> np.ndarray:
    """A make_grid of len(columns) faces a row, each row named on the left and each column on top (lines of text)."""
    size = images.shape[1]
    grid = viz.caption_rows(viz.make_grid(images, nrow=len(columns)), list(rows), size)
    left = grid.shape[1] - (2 + len(columns) * (size + 2))
    lines = max(len(c) for c in columns)
    header = Image.new("RGB", (grid.shape[1], 2 + 12 * lines), "white")
    draw, font = ImageDraw.Draw(header), ImageFont.load_default()
    for i, caption in enumerate(columns):
        for j, text in enumerate(caption):
            draw.text((left + 2 + i * (size + 2) + size // 2, 7 + 12 * j), text, fill="black", font=font, anchor="mm")
    return np.concatenate([np.asarray(header), grid], axis=0)


def grid_picture(images: np.ndarray, seeds: Sequence[int], steps: Sequence[float]) -> np.ndarray:
    """A row per seed, a column per multiple, the seeds named on the left and the multiples on top."""
    return captioned(images, [f"seed {s}" for s in seeds], [[f"{m:+g}" if m else "0"] for m in steps])


# ----------------------------------------------------------------------------- the DCGAN paper's analogy


def check_analogy(vector: str, other: str) -> None:
    """One sentence for an analogy of an attribute with itself."""
    if vector == other:
        raise FaceganError(f"--analogy needs an attribute other than --vector {vector}, such as Male for Smiling.")


def analogy(generator: nn.Module, latent_dim: int, classifier: Classifier, vector: str, other: str, *, count: int = 2000,
            seed: int = 0, trials: int = 200, exemplars: int = ANALOGY_EXEMPLARS, classifier_name: str = "the classifier",
            scores: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(VECTOR, not OTHER) - (neither) + (OTHER, not VECTOR), each term the mean latent of `exemplars` faces the classifier
    scores so, among `count` latents of `seed` (a smiling woman - a neutral woman + a neutral man = a smiling man).

    The picture: a row per exemplar (its three faces and their sum) and a row of the means; the figures: how often the
    result of `trials` random choices of exemplars shows VECTOR, OTHER and both, against how often a random face does.
    `scores`: the classifier's (count, K) probabilities on those latents' faces, when already known (a fresh fit's).
    """
    check_analogy(vector, other)
    cv, co = classifier_column(classifier, vector, classifier_name), classifier_column(classifier, other, classifier_name)
    check_fit(count, None)
    if not 1 <= trials <= MAX_MEASURE:
        raise FaceganError(f"--trials must be from 1 to {MAX_MEASURE:,}, not {trials:,}.")
    z = torch.cat(list(latent_batches(count, latent_dim, seed, BATCH)))
    if scores is None:
        scores = scores_of(generator, classifier, z)
    assert scores.shape == (count, len(classifier.attributes)), f"scores {scores.shape} for {count} faces"
    scores = scores.astype(np.float64)
    pv, po = scores[:, cv], scores[:, co]
    kinds = [(True, False, 1.0), (False, False, -1.0), (False, True, 1.0)]  # (shows VECTOR, shows OTHER, sign)
    terms = [(f"{vector}={int(v)},{other}={int(o)}", (pv if v else 1 - pv) * (po if o else 1 - po), sign)
             for v, o, sign in kinds]
    pools = [np.flatnonzero(((pv >= 0.5) == v) & ((po >= 0.5) == o)) for v, o, _ in kinds]
    short = [f"{name} has {len(pool)}" for (name, _, _), pool in zip(terms, pools) if len(pool) < exemplars]
    if short:
        raise FaceganError(f"the analogy needs {exemplars} faces of each kind among the {count:,} scored, but "
                           f"{' and '.join(short)}; raise -n, or choose attributes this generator mixes.")
    # The picture: each term's most typical faces (highest probability of its kind), as the paper chose clear ones.
    chosen = [pool[np.argsort(-typical[pool], kind="stable")[:exemplars]] for (_, typical, _), pool in zip(terms, pools)]
    def signed_sum(rows: Sequence[np.ndarray]) -> torch.Tensor:
        """A - B + C of the terms' mean latents, each term's mean over its `rows` of z."""
        return sum(sign * z[torch.from_numpy(np.asarray(r))].mean(0) for (_, _, sign), r in zip(terms, rows))

    # A row per exemplar (its three faces, then their own sum), and a row of the three means and theirs.
    means = signed_sum(chosen)[None]
    rows = torch.cat([torch.stack([*(z[int(term[i])] for term in chosen), signed_sum([term[i : i + 1] for term in chosen])])
                      for i in range(exemplars)]
                     + [torch.stack([z[torch.from_numpy(term)].mean(0) for term in chosen]), means])
    device = next(generator.parameters()).device
    images = generate(generator, rows.to(device))
    scale = max(1, ANALOGY_SIDE // images.shape[1])  # room for the captions: faces enlarged, nearest-neighbour
    images = np.kron(images, np.ones((1, scale, scale, 1), np.uint8))
    captions = [[f"{sign}{vector}={int(v)}", f"{other}={int(o)}"] for (v, o, _), sign in zip(kinds, ("", "- ", "+ "))]
    picture = captioned(images, [f"face {i + 1}" for i in range(exemplars)] + [f"mean of {exemplars}"],
                        [*captions, [f"= {vector}=1 ?", f"{other}=1 ?"]])
    mean_scores = scores_of(generator, classifier, means)[0]

    # How well it works: random exemplars of each kind (seed's own generator), their sum classified.
    rng = np.random.default_rng(seed)
    sums = torch.stack([signed_sum([rng.choice(pool, exemplars, replace=False) for pool in pools]) for _ in range(trials)])
    found = scores_of(generator, classifier, sums) >= 0.5
    figures = {
        "vector": vector, "other": other, "count": count, "seed": seed, "exemplars": exemplars,
        "terms": [{"kind": name, "sign": int(sign), "faces": len(pool)} for (name, _, sign), pool in zip(terms, pools)],
        "mean_result": {vector: float(mean_scores[cv]), other: float(mean_scores[co])},
        "trials": trials,
        "result_rates": {vector: rate(found[:, cv]), other: rate(found[:, co]), "both": rate(found[:, cv] & found[:, co])},
        "random_face_rate_both": float(((pv >= 0.5) & (po >= 0.5)).mean()),
    }
    return picture, figures


def arithmetic(
    source: str | os.PathLike,
    attribute: str,
    classifier: str | os.PathLike | Classifier,
    out: str | os.PathLike,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3),
    steps: int = 9,
    scale: float = 2.0,
    count: int = 2000,
    measure: int = 1000,
    seed: int = 0,
    quantile: float | None = None,
    attrs: str | None = None,
    refit: bool = False,
    analogy_with: str | None = None,
    trials: int = 200,
    device: str = "auto",
) -> dict:
    """Fit (or reuse) the direction of `attribute`, draw its grid to `out` (.png) and its rates to out's .json; the report."""
    out = output_file(out, "--out", suffixes=(".png",))
    if not 1 <= len(seeds) <= MAX_SEEDS or any(s < 0 for s in seeds):
        raise FaceganError(f"--seeds needs 1 to {MAX_SEEDS} seeds of 0 or more, not {len(seeds)}.")
    if not 0 <= measure <= MAX_MEASURE:
        raise FaceganError(f"--measure must be from 0 to {MAX_MEASURE:,} fresh faces a step, not {measure:,}.")
    along = multiples(steps, scale)
    check_fit(count, quantile)
    if analogy_with is not None and not 1 <= trials <= MAX_MEASURE:
        raise FaceganError(f"--trials must be from 1 to {MAX_MEASURE:,}, not {trials:,}.")
    if Path(source).suffix.lower() == ".onnx":
        raise FaceganError(f"{source} is an ONNX file; latent arithmetic runs G in torch: give its run or a .safetensors export.")
    torch_device = resolve_device(device)
    classifier_path = None if isinstance(classifier, Classifier) else Path(classifier).expanduser()
    model = classifier if classifier_path is None else load_classifier(classifier_path, torch_device)
    name = str(classifier_path) if classifier_path else "the classifier"
    column = classifier_column(model, attribute, name)
    generator, config, table = load_generator_and_labels(source, torch_device)
    if model.resolution != config.resolution:
        raise FaceganError(f"the classifier {name} reads {model.resolution}px images but {source} makes "
                           f"{config.resolution}px ones; train a classifier at {config.resolution}px.")
    fixed = parse_attrs(attrs or "", config.condition)
    if analogy_with is not None:
        check_analogy(attribute, analogy_with)
        classifier_column(model, analogy_with, name)
        if config.condition:  # its faces' labels would differ from term to term; --attrs sets attributes there directly
            raise FaceganError(f"--analogy works on unconditional runs; {source} is conditioned on "
                               f"{', '.join(config.condition)}, so ask for them with --attrs instead.")

    # Fit the direction, or reuse the saved one fitted the same way.
    asked = {"attribute": attribute, "count": count, "seed": seed, "quantile": quantile, "attrs": describe(fixed),
             "classifier_sha256": sha256_file(classifier_path) if classifier_path else "",
             "latent_dim": config.latent_dim, "generator_hash": weights_hash(generator)}
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", attribute):  # it names a file: a classifier's metadata must not pick the path
        raise FaceganError(f"the attribute {attribute!r} cannot name a file; use a classifier whose attributes are plain names.")
    saved = directions_dir(source) / f"{attribute}{SUFFIX}"
    direction, fit, reused, why = _saved_fit(saved, asked, refit)
    scores = None
    if direction is None:
        fitted = fit_direction(generator, config.latent_dim, model, attribute, count=count, seed=seed, quantile=quantile,
                               labels=table, fixed=fixed, classifier_name=name)
        direction, scores = fitted.pop("direction"), fitted.pop("scores")
        fit = {**asked, **fitted, "classifier": str(classifier_path or ""), "source": str(source),
               "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        save_direction(saved, direction, fit)
    assert direction.shape == (config.latent_dim,), f"direction {tuple(direction.shape)} for latent_dim {config.latent_dim}"
    if analogy_with is not None:  # before the grid and the rates: a generator that never mixes the two fails early
        picture, figures = analogy(generator, config.latent_dim, model, attribute, analogy_with, count=count, seed=seed,
                                   trials=trials, classifier_name=name, scores=scores)
        figures = {"file": str(viz.save_png(picture, out.with_name(f"{out.stem}-analogy.png"))), **figures}

    # The grid: each seed's latent (as `sample -n 1 --seed S` draws it) moved along the direction.
    device_of = next(generator.parameters()).device
    rows = torch.cat([latents(1, config.latent_dim, s) for s in seeds])
    steps_t = torch.tensor(along).reshape(1, -1, 1)
    z = (rows[:, None, :] + steps_t * direction).reshape(-1, config.latent_dim)
    c = _labels_of(table, seeds, fixed, len(along))
    images = generate(generator, z.to(device_of), labels=None if c is None else c.to(device_of))
    viz.save_png(grid_picture(images, seeds, along), out)

    # How well it works: fresh latents (seed + 1: none of the fit's) moved by each multiple, classified.
    measured = []
    if measure:
        fresh = latents(measure, config.latent_dim, seed + 1)
        fresh_labels = torch.from_numpy(table.draw(measure, seed + 1, fixed)) if table is not None else None
        measured = rates_along(generator, model, column, direction, along, fresh, fresh_labels)
    report = {
        "format": "facegan-arithmetic", "version": 1, "attribute": attribute, "source": str(source),
        "classifier": str(classifier_path or "(in memory)"),
        "classifier_heldout": {k: model.heldout.get(attribute, {}).get(k) for k in ("accuracy", "balanced_accuracy", "tpr", "fpr")},
        "direction": {"file": str(saved), "reused": reused, "refit_because": why,
                      **{k: fit.get(k) for k in ("count", "seed", "quantile", "attrs", "high", "low", "norm",
                                                 "latent_dim", "classifier_sha256", "generator_hash", "time")}},
        "grid": {"file": str(out), "seeds": list(seeds), "multiples": along},
        "rates": {"samples": measure, "seed": seed + 1, "threshold": 0.5, "steps": measured},
        "condition": list(config.condition), "attrs": describe(fixed),
    }
    if analogy_with is not None:
        report["analogy"] = figures
    write_atomically(out.with_suffix(".json"),
                     lambda path: path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8"))
    return report


def _saved_fit(path: Path, asked: Mapping[str, object], refit: bool) -> tuple[torch.Tensor | None, dict, bool, str | None]:
    """(direction, its fit, True, None) when `path` holds a fit of exactly `asked`; else (None, {}, False, why)."""
    if refit:
        return None, {}, False, "--refit" if path.exists() else None
    if not path.exists():
        return None, {}, False, None
    direction, fit = load_direction(path)
    differs = [key for key in FIT_KEYS if fit.get(key) != asked[key]]
    if differs:
        return None, {}, False, f"the saved one was fitted with another {', '.join(differs)}"
    return direction, fit, True, None


def _labels_of(table: LabelTable | None, seeds: Sequence[int], fixed: Mapping[str, bool], repeat: int) -> torch.Tensor | None:
    """A conditional grid's labels: each seed's own draw (as `sample -n 1 --seed S`), the same along its row."""
    if table is None:
        return None
    rows = np.concatenate([table.draw(1, s, fixed) for s in seeds])
    return torch.from_numpy(np.repeat(rows, repeat, axis=0))


def format_rates(report: dict) -> str:
    """The rates along the steps as a table (also for pasting into notes), and the analogy's figures if it was drawn."""
    d, r = report["direction"], report["rates"]
    held = report["classifier_heldout"]
    accuracy = f"{held['accuracy']:.1%}" if isinstance(held.get("accuracy"), (int, float)) else "-"
    where = ("reused " if d["reused"] else "saved to ") + d["file"]
    lines = [(f"{report['attribute']} direction: mean latent of {d['high']:,} faces scored high minus {d['low']:,} "
              f"scored low (of {d['count']:,}; |direction| {d['norm']:.3f}; {where})"),
             f"classifier {report['classifier']} (held-out accuracy on {report['attribute']}: {accuracy})"]
    if not r["steps"]:
        lines.append("(no rates measured: --measure 0)")
    else:
        lines += [f"rate of {report['attribute']} in {r['samples']:,} fresh faces (seed {r['seed']}) moved by each multiple:",
                  f"{'multiple':>8} {'rate':>7} {'95% interval':>17} {'mean p':>7}"]
        for row in r["steps"]:
            lines.append(f"{row['multiple']:>+8.2f} {row['rate']:>7.1%} {'[' + format(row['low'], '.1%') + ', ' + format(row['high'], '.1%') + ']':>17} "
                         f"{row['mean_probability']:>7.3f}")
    if "analogy" in report:
        a = report["analogy"]
        (v, o), rates = (a["vector"], a["other"]), a["result_rates"]
        lines += ["", (f"analogy ({a['terms'][0]['kind']}) - ({a['terms'][1]['kind']}) + ({a['terms'][2]['kind']}), "
                       f"each the mean of {a['exemplars']} faces: the mean faces' sum scores {v} {a['mean_result'][v]:.2f}, "
                       f"{o} {a['mean_result'][o]:.2f}"),
                  (f"over {a['trials']} random choices of faces the sum shows {v} {rates[v]['rate']:.1%}, {o} "
                   f"{rates[o]['rate']:.1%}, both {rates['both']['rate']:.1%} (a random face shows both: "
                   f"{a['random_face_rate_both']:.1%}); picture {a['file']}")]
    return "\n".join(lines)

