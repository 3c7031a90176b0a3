"""Who gets generated: each attribute's rate in a run's faces against its training data, with the classifier's errors corrected.

For each attribute of the classifier, four rates with 95% Wilson intervals: the training labels';
the classifier's on real images it was not trained on; the classifier's on generated images; and
that last one corrected for the classifier's own held-out confusion, (observed - FPR) / (TPR - FPR)
(Teo et al., "On Measuring Fairness in Generative Models": classifier-based bias figures are biased
by classifier error). The corrected interval is the Wilson interval's endpoints put through the
same correction. Named groups (`--groups Male,Pale_Skin`) get the rate of each combination, and,
where a group has PR_MIN_IMAGES real and generated images, the precision and recall of its
generated faces against its real ones: a group whose faces are all alike has a low recall.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from facegan.classifier import Classifier, load_classifier, predict, split_rows
from facegan.conditions import LabelTable
from facegan.data.builtin import open_data
from facegan.data.prepared import PreparedDataset
from facegan.errors import FaceganError
from facegan.files import write_atomically
from facegan.generation import load_generator_and_labels, sampler
from facegan.plots import new_figure, save_figure, style_axes
from facegan.runtime import resolve_device

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
# Below this TPR - FPR the correction divides by almost nothing (a classifier near chance): not applied.
MIN_SEPARATION = 0.2
# Precision/recall of a group needs this many real and generated images (k-NN manifolds of fewer are noise).
PR_MIN_IMAGES = 200
# Real and generated images of a group whose Inception features are used, at most (CPU time).
PR_MAX_IMAGES = 1000
REPORT_FORMAT = "facegan-audit"
REPORT_VERSION = 1


# ----------------------------------------------------------------------------- the statistics


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (NaNs for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # clipped so the interval always holds p itself (rounding at p = 0 or 1)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def correct(observed: float, tpr: float, fpr: float) -> float | None:
    """The true rate behind an observed one, (observed - FPR) / (TPR - FPR), clipped to [0, 1]; None when TPR - FPR < MIN_SEPARATION."""
    separation = tpr - fpr
    if not math.isfinite(separation) or separation < MIN_SEPARATION:
        return None
    return float(min(1.0, max(0.0, (observed - fpr) / separation)))


def rate(flags: np.ndarray) -> dict:
    """The share of True in `flags`, with its count and 95% Wilson interval."""
    flags = np.asarray(flags, bool)
    k, n = int(flags.sum()), len(flags)
    low, high = wilson(k, n)
    return {"rate": k / n if n else math.nan, "low": low, "high": high, "count": n}


def corrected_rate(observed: dict, tpr: float, fpr: float) -> dict:
    """An observed rate (with interval) corrected for the classifier's confusion, endpoints corrected the same way."""
    value = correct(observed["rate"], tpr, fpr)
    if value is None:
        return {"rate": None, "low": None, "high": None,
                "note": f"not corrected: TPR - FPR is {tpr - fpr:.3f}, under {MIN_SEPARATION} (the classifier barely separates)"}
    return {"rate": value, "low": correct(observed["low"], tpr, fpr), "high": correct(observed["high"], tpr, fpr)}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None where either is missing or b is 0."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


def combinations(flags: np.ndarray) -> np.ndarray:
    """The share of rows in each combination of K bool columns, in itertools.product((0, 1), repeat=K) order."""
    flags = np.asarray(flags, bool)
    k = flags.shape[1]
    index = (flags * (1 << np.arange(k - 1, -1, -1))).sum(axis=1)
    return np.bincount(index, minlength=1 << k) / max(1, len(flags))


def corrected_combinations(observed: np.ndarray, tprs: Sequence[float], fprs: Sequence[float]) -> np.ndarray | None:
    """True combination shares behind observed ones, assuming the classifier errs on each attribute independently given
    the truth: the confusion of the combinations is the Kronecker product of each attribute's 2x2 confusion, inverted,
    clipped at 0 and renormalised. None where an attribute's TPR - FPR is under MIN_SEPARATION."""
    matrix = np.ones((1, 1))
    for tpr, fpr in zip(tprs, fprs):
        if not math.isfinite(tpr - fpr) or tpr - fpr < MIN_SEPARATION:
            return None
        # rows: observed 0/1, columns: true 0/1
        matrix = np.kron(matrix, np.array([[1 - fpr, 1 - tpr], [fpr, tpr]]))
    true = np.clip(np.linalg.solve(matrix, observed), 0, None)
    return true / true.sum() if true.sum() > 0 else None


# ----------------------------------------------------------------------------- the audit


def _run_dir(run: Path) -> Path:
    if (run / "config.json").is_file():
        return run
    if run.is_file() and run.parent.name == "checkpoints" and (run.parent.parent / "config.json").is_file():
        return run.parent.parent
    raise FaceganError(f"{run} is not a run directory or a checkpoint inside one; the audit writes into RUN/audit.")


def _require_match(classifier: Classifier, dataset: PreparedDataset, resolution: int, path: Path) -> None:
    missing = [name for name in classifier.attributes if name not in dataset.attribute_names]
    if missing:
        raise FaceganError(f"the classifier {path} knows {', '.join(missing)}, which {dataset.path} has no labels for; "
                           f"it has {', '.join(dataset.attribute_names) or 'no attributes'}.")
    if classifier.resolution != resolution or dataset.resolution != resolution:
        raise FaceganError(f"the classifier {path} reads {classifier.resolution}px images but the run makes {resolution}px "
                           f"ones (its data: {dataset.resolution}px); train a classifier at {resolution}px.")


def real_heldout(classifier: Classifier, dataset: PreparedDataset) -> tuple[np.ndarray, str]:
    """Indices of real images the classifier was not trained on: its held-out rows when it was trained on this
    data, else every image (none of them were its training rows)."""
    if classifier.data_hash and classifier.data_hash == dataset.manifest.get("content_hash"):
        seed = int(classifier.split.rsplit(":", 1)[1]) if classifier.split.startswith("seeded") else 0
        return split_rows(dataset, seed)[1], f"the classifier's held-out rows ({classifier.split})"
    return np.arange(len(dataset)), "every image (the classifier was trained on other data)"


def _groups(classifier: Classifier, dataset: PreparedDataset, groups: Sequence[str] | None) -> list[str]:
    if not groups:
        return []
    twice = sorted({g for g in groups if list(groups).count(g) > 1})
    if twice:
        raise FaceganError(f"--groups names {', '.join(twice)} more than once.")
    unknown = [g for g in groups if g not in classifier.attributes]
    if unknown:
        raise FaceganError(f"--groups names {', '.join(unknown)}, which the classifier does not know; "
                           f"it knows {', '.join(classifier.attributes)}.")
    if len(groups) > 4:
        raise FaceganError(f"--groups takes at most 4 attributes (16 combinations), not {len(groups)}.")
    return list(groups)


def audit_run(
    run: str | os.PathLike,
    classifier: str | os.PathLike | Classifier,
    *,
    data: str | os.PathLike | None = None,
    count: int = 10_000,
    groups: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "auto",
    pr: bool = True,
    network: str | os.PathLike | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict:
    """Audit a run's generator; the report is also written to RUN/audit/report.json, its chart to RUN/audit/rates.png."""
    run = Path(run).expanduser()
    run_dir = _run_dir(run)
    torch_device = resolve_device(device)
    classifier_path = Path(classifier) if not isinstance(classifier, Classifier) else Path("(in memory)")
    model = classifier if isinstance(classifier, Classifier) else load_classifier(classifier_path, torch_device)
    generator, config, table = load_generator_and_labels(run, torch_device)  # a conditional run: labels as in training
    dataset = open_data(data if data is not None else config.data, config.synthetic_count, config.resolution)
    _require_match(model, dataset, int(config.resolution), classifier_path)
    named = _groups(model, dataset, groups)
    names = model.attributes
    columns = [dataset.attribute_names.index(name) for name in names]
    labels = np.asarray(dataset.attributes)[:, columns].astype(bool)

    # Classify real held-out images and generated ones.
    heldout, heldout_what = real_heldout(model, dataset)
    real_predicted = predict(model, dataset.take(heldout)) >= 0.5
    batches = list(sampler(generator, config.latent_dim, batch_size=500, labels=table)(count, seed))
    fake_images = np.concatenate(batches)
    fake_predicted = predict(model, fake_images) >= 0.5

    attributes = {}
    for k, name in enumerate(names):
        figures = model.heldout[name]
        labelled, real, fake = rate(labels[:, k]), rate(real_predicted[:, k]), rate(fake_predicted[:, k])
        fixed = corrected_rate(fake, figures["tpr"], figures["fpr"])
        attributes[name] = {
            "labels": labelled, "classifier_real": real, "classifier_generated": fake, "corrected_generated": fixed,
            "ratio": ratio(fixed["rate"], labelled["rate"]), "ratio_observed": ratio(fake["rate"], real["rate"]),
            "classifier_heldout": {key: figures[key] for key in ("accuracy", "balanced_accuracy", "tpr", "fpr")},
        }
    report = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "run": str(run_dir), "dataset": str(dataset.path),
        "dataset_images": len(dataset), "classifier": str(classifier_path), "classifier_split": model.split,
        "real_heldout": {"images": len(heldout), "which": heldout_what}, "generated": count, "seed": seed,
        "condition": list(getattr(config, "condition", ()) or ()), "min_separation": MIN_SEPARATION,
        "classifier_accuracy": model.accuracy_line(), "attributes": attributes,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if report["condition"]:
        report["conditional"] = conditional_accuracy(run, generator, config, table, model, count, seed)
    if named:
        report["groups"] = _intersections(model, named, labels, fake_predicted)
        if pr:
            report["precision_recall"] = _group_precision_recall(named, names, labels, fake_predicted, dataset, fake_images,
                                                                 torch_device, network, batch_size, progress)
    out = run_dir / "audit"
    write_atomically(out / "report.json", lambda path: path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8"))
    plot_rates(report, out / "rates.png")
    return report


def conditional_accuracy(run: Path, generator: torch.nn.Module, config, table: LabelTable | None, model: Classifier,
                         count: int, seed: int) -> dict:
    """For a conditional run: per conditioned attribute the classifier knows and per value, the share of samples asked
    for that value that show it ("Smiling=1 gives a smile in 93% of samples"), observed and corrected.

    The other attributes are drawn from the training labels' joint distribution given the fixed one, as `sample` does.
    """
    if table is None:
        raise FaceganError(f"{run} is conditioned on {', '.join(config.condition)} but holds no label table to draw "
                           "conditions from; it was trained by an older facegan.")
    known = [name for name in config.condition if name in model.attributes]
    each = max(1, count // max(1, 2 * len(known)))
    rows = []
    for name in known:
        figures = model.heldout[name]
        k = model.attributes.index(name)
        for value in (1, 0):
            sample = sampler(generator, config.latent_dim, batch_size=500, labels=table, fixed={name: bool(value)})
            shows = predict(model, np.concatenate(list(sample(each, seed)))) [:, k] >= 0.5
            observed = rate(shows == bool(value))
            positive = corrected_rate(rate(shows), figures["tpr"], figures["fpr"])
            if positive["rate"] is None or value:
                fixed = positive
            else:  # the share that shows its absence is one minus the share that shows it
                fixed = {"rate": 1 - positive["rate"], "low": 1 - positive["high"], "high": 1 - positive["low"]}
            rows.append({"attribute": name, "value": value, "samples": each, "observed": observed, "corrected": fixed})
    return {"attributes": known, "not_classified": [n for n in config.condition if n not in model.attributes],
            "rows": rows}


def _intersections(model: Classifier, named: list[str], labels: np.ndarray, fake: np.ndarray) -> dict:
    columns = [model.attributes.index(name) for name in named]
    real_shares = combinations(labels[:, columns])
    fake_shares = combinations(fake[:, columns])
    fixed = corrected_combinations(fake_shares, [model.heldout[n]["tpr"] for n in named],
                                   [model.heldout[n]["fpr"] for n in named])
    rows = []
    for index, values in enumerate(itertools.product((0, 1), repeat=len(named))):
        real_n = round(real_shares[index] * len(labels))
        fake_n = round(fake_shares[index] * len(fake))
        rows.append({
            "combination": {name: int(v) for name, v in zip(named, values)},
            "labels": {"rate": float(real_shares[index]), **dict(zip(("low", "high"), wilson(real_n, len(labels))))},
            "classifier_generated": {"rate": float(fake_shares[index]), **dict(zip(("low", "high"), wilson(fake_n, len(fake))))},
            "corrected_generated": float(fixed[index]) if fixed is not None else None,
        })
    return {"attributes": named, "combinations": rows,
            "correction": "joint confusion as the product of each attribute's (independent errors)" if fixed is not None
            else f"not corrected: an attribute's TPR - FPR is under {MIN_SEPARATION}"}


def _group_precision_recall(named: list[str], names: list[str], labels: np.ndarray, fake: np.ndarray,
                            dataset: PreparedDataset, fake_images: np.ndarray, device: torch.device,
                            network: str | os.PathLike | None, batch_size: int | None, progress: bool) -> dict:
    """Precision and recall of each attribute value's generated faces (as the classifier assigns them) against the real
    faces labelled with it, for groups with PR_MIN_IMAGES of each; others are listed as too small."""
    from facegan.metrics.fid import precision_recall
    from facegan.metrics.inception import features, load_inception

    inception = load_inception(network, device, progress=progress)
    rng = np.random.default_rng(0)
    # Each group uses at most PR_MAX_IMAGES of its generated images; their union is put through Inception once.
    chosen = {}
    for name in named:
        k = names.index(name)
        for value in (1, 0):
            chosen[name, value] = (np.flatnonzero(labels[:, k] == bool(value)), np.flatnonzero(fake[:, k] == bool(value)))
    used = sorted({int(i) for real_rows, fake_rows in chosen.values() if min(len(real_rows), len(fake_rows)) >= PR_MIN_IMAGES
                   for i in fake_rows[:PR_MAX_IMAGES]})
    fake_features = dict(zip(used, features(inception, fake_images[used], batch_size=batch_size, progress=progress)))
    results = []
    for (name, value), (real_rows, fake_rows) in chosen.items():
        entry = {"attribute": name, "value": value, "real_images": len(real_rows), "generated_images": len(fake_rows)}
        if min(len(real_rows), len(fake_rows)) < PR_MIN_IMAGES:
            entry["note"] = f"fewer than {PR_MIN_IMAGES} images: not measured"
            results.append(entry)
            continue
        real_rows = np.sort(rng.choice(real_rows, min(len(real_rows), PR_MAX_IMAGES), replace=False))
        fake_rows = fake_rows[:PR_MAX_IMAGES]
        real_features = features(inception, dataset.take(real_rows), batch_size=batch_size, progress=progress)
        entry["precision"], entry["recall"] = precision_recall(real_features, np.stack([fake_features[int(i)] for i in fake_rows]))
        entry["real_images_used"], entry["generated_images_used"] = len(real_rows), len(fake_rows)
        results.append(entry)
    return {"min_images": PR_MIN_IMAGES, "max_images": PR_MAX_IMAGES, "groups": results}


# ----------------------------------------------------------------------------- showing it


def _percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _with_interval(entry: dict) -> str:
    if entry.get("rate") is None:
        return "-"
    return f"{_percent(entry['rate'])} [{_percent(entry['low'])}, {_percent(entry['high'])}]"


def format_report(report: dict) -> str:
    """The audit as text tables: rates per attribute, combinations of the groups, and each group's precision/recall."""
    lines = [(f"audit of {report['run']}: {report['generated']:,} generated images, {report['dataset_images']:,} training "
             f"labels, {report['real_heldout']['images']:,} real images classified ({report['real_heldout']['which']})"),
             f"classifier held-out accuracy: {report['classifier_accuracy']}", "",
             (f"{'attribute':<14} {'labels':>22} {'classifier real':>22} {'classifier gen':>22} {'corrected gen':>22} "
             f"{'gen/real':>8} {'clf acc (bal)':>14}")]
    notes = []
    for name, row in report["attributes"].items():
        lines.append(f"{name:<14} {_with_interval(row['labels']):>22} {_with_interval(row['classifier_real']):>22} "
                     f"{_with_interval(row['classifier_generated']):>22} {_with_interval(row['corrected_generated']):>22} "
                     f"{'-' if row['ratio'] is None else format(row['ratio'], '.2f'):>8} "
                     f"{_percent(row['classifier_heldout']['accuracy']) + ' (' + _percent(row['classifier_heldout']['balanced_accuracy']) + ')':>14}")
        if "note" in row["corrected_generated"]:
            notes.append(f"{name}: {row['corrected_generated']['note']}")
    lines += notes
    lines.append("(gen/real: the corrected generated rate over the labels' rate; intervals are 95% Wilson)")
    if "conditional" in report:
        lines += ["", f"{'asked for':<24} {'shows it':>22} {'corrected':>22}"]
        for row in report["conditional"]["rows"]:
            lines.append(f"{row['attribute'] + '=' + str(row['value']):<24} {_with_interval(row['observed']):>22} "
                         f"{_with_interval(row['corrected']):>22}")
        if report["conditional"]["not_classified"]:
            lines.append(f"(not measured, the classifier does not know: {', '.join(report['conditional']['not_classified'])})")
    if "groups" in report:
        groups = report["groups"]
        lines += ["", f"{'combination':<34} {'labels':>8} {'generated':>10} {'corrected':>10}"]
        for row in groups["combinations"]:
            combo = ",".join(f"{k}={v}" for k, v in row["combination"].items())
            lines.append(f"{combo:<34} {_percent(row['labels']['rate']):>8} {_percent(row['classifier_generated']['rate']):>10} "
                         f"{_percent(row['corrected_generated']):>10}")
        lines.append(f"(correction: {groups['correction']})")
    if "precision_recall" in report:
        lines += ["", f"{'group':<24} {'real':>7} {'generated':>10} {'precision':>10} {'recall':>8}"]
        for row in report["precision_recall"]["groups"]:
            group = f"{row['attribute']}={row['value']}"
            measured = "precision" in row
            lines.append(f"{group:<24} {row['real_images']:>7,} {row['generated_images']:>10,} "
                         f"{_percent(row['precision']) if measured else '-':>10} {_percent(row['recall']) if measured else '-':>8}"
                         + ("" if measured else f"  {row['note']}"))
    return "\n".join(lines)


def plot_rates(report: dict, path: str | os.PathLike) -> Path:
    """A bar chart of each attribute's four rates with their 95% intervals."""
    names = list(report["attributes"])
    series = [("labels", "training labels", "#4c72b0"), ("classifier_real", "classifier on real", "#8fb0d8"),
              ("classifier_generated", "classifier on generated", "#dd8452"),
              ("corrected_generated", "generated, corrected", "#c44e52")]
    figure = new_figure((max(6.0, 1.3 * len(names) + 2), 4.2))
    ax = figure.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (key, label, colour) in enumerate(series):
        values, low, high = [], [], []
        for name in names:
            entry = report["attributes"][name][key]
            value = entry.get("rate")
            values.append(math.nan if value is None else value)
            # max(0, ...): at a rate of exactly 0 or 1 an endpoint can differ from it by rounding
            low.append(0.0 if value is None else max(0.0, value - entry["low"]))
            high.append(0.0 if value is None else max(0.0, entry["high"] - value))
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label, color=colour,
               yerr=[low, high], capsize=2, error_kw={"linewidth": 0.8})
    style_axes(ax)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of images")
    ax.set_title(f"who gets generated: {report['generated']:,} samples (95% Wilson intervals)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return save_figure(figure, path)

