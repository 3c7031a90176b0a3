"""Which preset makes the best faces on the same budget? FID, KID, precision and recall per preset.

    python benchmarks/recipes.py                                  # 20 minutes per preset and dataset
    python benchmarks/recipes.py --minutes 4 --samples 1000 --seeds 1 --grids docs/images
    # how the README's table is made: two datasets side by side on two cores, one thread each,
    # in sittings that continue the committed results files (run the same two lines again)
    for d in celeba-89 synthetic; do
      python benchmarks/recipes.py --threads 1 --minutes 15 --samples 1000 --sngan-width 16 \
        --presets dcgan,facegan,lsgan,wgan-gp,sngan --datasets $d \
        --results benchmarks/results/recipes-$d.json --work /tmp/recipes-work-$d &
    done; wait
    python benchmarks/recipes.py --report --results benchmarks/results/recipes-celeba-89.json
    # the fast preset confirmed against dcgan and facegan: 20 minutes, 3 seeds each
    python benchmarks/recipes.py --threads 2 --minutes 20 --samples 1000 --seeds 3 --every-preset-seeds \
      --presets dcgan,facegan,fast --datasets celeba-89 --results benchmarks/results/recipes-celeba-89-fast.json
    # the README's longer comparison of dcgan and facegan (one cost per image, so equal epochs)
    python benchmarks/recipes.py --threads 2 --same-epochs 12 --samples 1000 --seeds 1 \
      --presets dcgan,facegan --datasets celeba-89 --results benchmarks/results/recipes-celeba-89-12epochs.json

For each dataset (the built-in synthetic faces, and the 8,000 real CelebA faces of
../shared/data/celeba-89) the images are split once into a training set and a held-out set that
training never sees. Each preset trains through facegan's own `train()` for the same wall-clock
budget on the CPU: its speed is timed once, before any run of the dataset starts (all presets
in turns, a median over cycles), and each of its runs gets the whole number of epochs
nearest to the budget at that speed (so that learning-rate decay ends where the run ends). With
--same-epochs N every preset trains N epochs instead, for presets of one cost per image. Each
run's generator (the EMA when the preset keeps one) is then measured against the held-out real
images with the standard Inception network: FID, KID, and precision/recall (low recall shows
mode collapse). Every loss of every step logged is checked for NaN or infinity, and rollbacks
are counted. With --seeds N the two best presets by FID (seed 0) are trained again with seeds
1..N-1 and reported as mean and spread.

The whole benchmark is hours of CPU, more than one sitting. `--results FILE` keeps the plan (the
settings, the number format, each preset's measured speed and epochs) and every finished run, and
is rewritten after each run; run the same command again and it continues: finished runs are
skipped and every later run of a preset trains the epochs planned for it, on whatever machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from facegan.config import PRESETS, TrainConfig, from_preset
from facegan.data import PreparedDataset, open_prepared
from facegan.data.prepare import prepare
from facegan.data.prepared import write_subset
from facegan.files import write_atomically
from facegan.generation import load_generator_and_labels, sampler
from facegan.metrics.evaluate import evaluate
from facegan.plots import read_stats
from facegan.precision import resolve_precision
from facegan.runtime import resolve_device
from facegan.train.batches import BatchSource, to_model_input
from facegan.train.checkpoint import newest_good_checkpoint
from facegan.train.loop import train
from facegan.train.state import build_state
from facegan.train.step import train_step

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEGAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def split_dataset(name: str, work: Path, held_out: int) -> tuple[Path, Path]:
    """Prepared training and held-out sets of one source, disjoint; made once per work folder."""
    train_dir, test_dir = work / name / "train", work / name / "held-out"
    if (train_dir / "dataset.json").exists() and (test_dir / "dataset.json").exists():
        return train_dir, test_dir
    shutil.rmtree(work / name, ignore_errors=True)  # a split cut short: make it again
    if name == "synthetic":
        full = open_prepared(prepare("synthetic", work / name / "full", count=8_192 + held_out, progress=False))
    elif name == "celeba-89":
        # with CelebA's attributes (the official file names these ids), so conditional runs can use the split too
        full = open_prepared(prepare(str(SHARED / "celeba-89"), work / name / "full", progress=False,
                                     labels=SHARED / "celeba" / "list_attr_celeba.txt"))
    else:
        raise SystemExit(f"unknown dataset {name!r}")
    return split_prepared(full, train_dir, test_dir, held_out)


def split_prepared(full: PreparedDataset, train_dir: Path, test_dir: Path, held_out: int) -> tuple[Path, Path]:
    """A prepared dataset's seeded split (the same for the same images): the rest to train on, `held_out` to measure with."""
    order = np.random.default_rng(0).permutation(len(full))
    train_set = write_subset(full, np.sort(order[held_out:]), train_dir)
    test_set = write_subset(full, np.sort(order[:held_out]), test_dir)
    return train_set.path, test_set.path


def images_per_second(configs: dict[str, TrainConfig], data: Path, cycles: int = 12) -> dict[str, float]:
    """Training speed of each config, in images drawn per second, as the loop draws them.

    A cycle is one G update with its D updates (d_steps batches). The first two cycles of each
    config pay one-off costs and are not timed; its speed is that of the median of the next ones,
    `cycles` batches' worth (at least 4 cycles). The configs take turns, one cycle each, so that a
    slow spell of a shared machine falls on all of them alike. That still leaves noise: one DCGAN
    cycle took 2.2 to 4.4 s here, and two identical configs timed together measured 48.6 and 52.6
    images/s (with the fastest cycle in place of the median, 48.6 and 52.0). For presets of one
    cost per image, --same-epochs compares them without timing.
    """
    dataset = open_prepared(data)
    timings = {}
    for name, config in configs.items():
        device = resolve_device(config.device)
        batches = iter(BatchSource(dataset, device).epoch(config.batch_size, seed=0, epoch=0))
        timings[name] = (config, device, build_state(config, dataset.resolution, device), batches, [])
    for turn in range(2 + max(4, cycles // min(c.d_steps for c in configs.values()))):
        for config, device, state, batches, seconds in timings.values():
            if turn >= 2 + max(4, cycles // config.d_steps):
                continue  # this config has had its cycles
            start = time.perf_counter()
            for i in range(config.d_steps):
                images, labels = next(batches)
                train_step(state, to_model_input(images), config, update_g=i == config.d_steps - 1, labels=labels)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the steps are queued, not done, until the GPU says so
            seconds.append(time.perf_counter() - start)
    return {name: config.d_steps * config.batch_size / statistics.median(seconds[2:])
            for name, (config, _, _, _, seconds) in timings.items()}


def preset_config(preset: str, data: Path, work: Path, overrides: dict, **settings):
    return from_preset(preset, data=str(data), runs_dir=str(work / "runs"), **overrides, **settings)


def run_preset(preset: str, seed: int, epochs: int, data: Path, held_out: Path, work: Path, metrics: list[str],
               settings: dict, abort_fn=None) -> dict:
    """Train one preset for its planned epochs (or until `abort_fn`, as train() takes it, says stop) and measure
    its sampling generator, from its newest checkpoint, against the held-out set."""
    config = preset_config(preset, data, work, settings, seed=seed, epochs=epochs)
    return {"preset": preset, "seed": seed, "epochs": epochs, **run_config(config, held_out, metrics, abort_fn)}


def run_config(config: TrainConfig, held_out: Path, metrics: list[str], abort_fn=None) -> dict:
    """Train one configuration and measure its sampling generator (a conditional one with conditions drawn from its
    training labels), from its newest checkpoint, against the held-out set."""
    started = time.perf_counter()
    run_dir = train(config, progress=False, abort_fn=abort_fn)
    seconds = time.perf_counter() - started
    stats = read_stats(run_dir / "stats.jsonl")
    losses = [r[k] for r in stats for k in ("loss_d", "loss_g") if k in r]
    device = resolve_device(config.device)
    generator, saved, labels = load_generator_and_labels(run_dir, device)
    values = evaluate(sampler(generator, saved.latent_dim, labels=labels), held_out, metrics, device=device, seed=config.seed)
    return {"steps": newest_good_checkpoint(run_dir)[1]["step"], "minutes": seconds / 60,
            "nan": not all(math.isfinite(v) for v in losses),
            "rollbacks": sum(1 for r in stats if r.get("event") == "rollback"), "run_dir": str(run_dir), **values}


def print_table(dataset: str, plan: dict, rows: list[dict], metrics: list[str]) -> None:
    keys = [k for k in rows[0] if k.startswith(tuple(metrics)) and not k.endswith("_std")]
    where = "CPU" if plan.get("device", "cpu") == "cpu" else plan["device"].upper()
    budget = f"{plan['same_epochs']} epochs" if plan.get("same_epochs") else f"{plan['minutes']:g} min"
    print(f"\n{dataset}: {budget} of {where} training per run ({plan['threads']} thread(s), {plan['precision']}), "
          f"metrics against {plan['samples']:,} held-out real images ({', '.join(metrics)}); "
          "lower FID/KID is better, higher precision/recall is better\n")
    header = (f"{'preset':<10}{'seeds':>6}{'epochs':>7}{'G steps':>8}{'min':>6}{'img/s':>7}" + "".join(f"{k:>17}" for k in keys)
              + f"{'NaN':>5}{'rollbacks':>10}")
    print(header)
    print("-" * len(header))
    by_preset: dict[str, list[dict]] = {}
    for row in rows:
        by_preset.setdefault(row["preset"], []).append(row)
    for preset, group in by_preset.items():
        cells = []
        for key in keys:
            values = [r[key] for r in group]
            cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}")
        print(f"{preset:<10}{len(group):>6}{group[0]['epochs']:>7}{group[0]['steps']:>8}{statistics.mean(r['minutes'] for r in group):>6.1f}"
              f"{plan['images_per_s'][preset]:>7.1f}" + "".join(f"{c:>17}" for c in cells)
              + f"{'yes' if any(r['nan'] for r in group) else 'no':>5}{sum(r['rollbacks'] for r in group):>10}")
    if "dcgan" not in by_preset or len(by_preset) == 1:
        return
    fid, recall = metrics[0], f"{metrics[2]}_recall"
    mean = {p: {k: statistics.mean(r[k] for r in group) for k in (fid, recall)} for p, group in by_preset.items()}
    base = mean["dcgan"]
    print()
    for preset in (p for p in by_preset if p != "dcgan"):  # each recipe against the seeds' own
        ours = mean[preset]
        print(f"{preset} vs dcgan: {fid} {ours[fid]:.2f} vs {base[fid]:.2f} "
              f"({'lower' if ours[fid] < base[fid] else 'not lower'}), recall "
              f"{ours[recall]:.3f} vs {base[recall]:.3f} "
              f"({'not lower' if ours[recall] >= base[recall] else 'lower'})")


def contact_sheet(grids: Path, dataset: str, presets: list[str], out: Path) -> Path | None:
    """One picture for a dataset, written to `out`: the first two rows of each preset's last grid (seed 0), labelled."""
    strips = []
    for preset in presets:
        path = grids / f"recipes-{dataset}-{preset}.png"
        if path.exists():
            grid = Image.open(path).convert("RGB")
            cell = (grid.width - 2) // 8  # make_grid's 8 columns of image + 2 px padding
            strips.append((preset, grid.crop((0, 0, grid.width, 2 * cell + 2))))
    if not strips:
        return None
    label = 90
    sheet = Image.new("RGB", (label + strips[0][1].width, sum(s.height for _, s in strips)), "white")
    draw = ImageDraw.Draw(sheet)
    top = 0
    for preset, strip in strips:
        sheet.paste(strip, (label, top))
        draw.text((6, top + strip.height // 2 - 6), preset, fill="black")
        top += strip.height
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def last_grids_sheet(runs: dict[str, Path], out: Path) -> Path | None:
    """contact_sheet of each named run's last fixed-noise grid (RUN/samples/epoch-*.png), labelled with its name;
    None when no run has a grid on this machine. Runs of one seed and latent size share their fixed noise, so the
    rows compare recipes face for face."""
    with tempfile.TemporaryDirectory() as folder:
        names = []
        for name, run in runs.items():
            grids = sorted((run / "samples").glob("epoch-*.png"))
            if grids:
                names.append(name)
                shutil.copy(grids[-1], Path(folder) / f"recipes-runs-{name}.png")
        return contact_sheet(Path(folder), "runs", names, out)


def load_results(path: Path | None, results: dict | None, settings: dict) -> dict:
    """The results read from `path` to continue, or new ones; refuses those made with other settings."""
    if results is None:
        return {"settings": settings, "datasets": {}}
    results["settings"].setdefault("device", "cpu")  # files from before --device were all made on the CPU
    results["settings"].setdefault("same_epochs", None)  # and those from before --same-epochs were timed
    mismatched = [k for k in settings if k in FIXED and results["settings"].get(k) != settings[k]]
    if mismatched:
        made = ", ".join(f"{k}={results['settings'][k]!r}" for k in mismatched)
        raise SystemExit(f"{path} was made with other settings ({made}); give the same ones to continue it, "
                         "or another --results file.")
    return results


def metric_names(samples: int) -> list[str]:
    """FID, KID and precision/recall named by their sample count, e.g. fid2k."""
    count = f"{samples // 1000}k" if samples % 1000 == 0 else str(samples)
    return [f"fid{count}", f"kid{count}", f"pr{count}"]


# What a results file's runs must share with the runs that continue it.
FIXED = ("minutes", "same_epochs", "samples", "sngan_width", "precision", "device")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per run (default 20)")
    parser.add_argument("--same-epochs", type=int, default=None, metavar="N",
                        help="train every preset N epochs instead of --minutes: the same images seen, so the same "
                             "compute for presets of one cost per image (dcgan and facegan), with no timing noise")
    parser.add_argument("--datasets", default="synthetic,celeba-89")
    parser.add_argument("--presets", default=",".join(PRESETS), help="presets, in the order to train them")
    parser.add_argument("--samples", type=int, default=2000, help="generated and held-out real images per metric (default 2000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the two best presets (default 3)")
    parser.add_argument("--every-preset-seeds", action="store_true",
                        help="train every preset with every one of --seeds, not only the two best")
    parser.add_argument("--sngan-width", type=int, default=None,
                        help="g/d width of the sngan preset (default: the preset's, Mimicry's 64, i.e. 1024 channels at 4x4)")
    parser.add_argument("--precision", default=None,
                        help="number format of every run (default: a continued file's, else what auto picks on this machine)")
    parser.add_argument("--grids", type=Path, default=None, help="copy each run's last grid here as recipes-DATASET-PRESET[-seedN].png")
    parser.add_argument("--results", "--json", type=Path, default=None,
                        help="JSON file of the plan (settings, each preset's epochs) and every finished run, written after each "
                             "run; an existing one is continued: finished runs are skipped and the planned epochs kept")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the splits, runs and cached real features (default: a temporary one, removed at the end)")
    parser.add_argument("--device", default="cpu", help="where to train and measure: cpu (default), cuda, auto")
    parser.add_argument("--compile", default="off",
                        help="torch.compile of G and D, as `facegan train --compile` (default off: compiling takes minutes of the budget)")
    parser.add_argument("--report", action="store_true", help="only print the tables of --results")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="with --report and --grids: write DIR/RESULTS.png (RESULTS-DATASET.png where the file holds several "
                             "datasets), two rows of each preset's last grid")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per run (default: torch's); 1 lets two datasets run side by side on two cores")
    args = parser.parse_args()
    if args.same_epochs is not None and args.same_epochs < 1:
        parser.error(f"--same-epochs must be a whole number of epochs, 1 or more, not {args.same_epochs}.")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    saved = json.loads(args.results.read_text()) if args.results is not None and args.results.exists() else None
    if args.report:  # the tables of a results file, with the settings it was made with
        if saved is None:
            raise SystemExit("--report needs --results FILE, a results file this benchmark wrote.")
        results = saved
        for dataset, entry in results["datasets"].items():
            print_table(dataset, {**results["settings"], **entry}, entry["rows"], metric_names(results["settings"]["samples"]))
            if args.grids is not None and args.sheet is not None:
                name = args.results.stem if len(results["datasets"]) == 1 else f"{args.results.stem}-{dataset}"
                contact_sheet(args.grids, dataset, list(entry["epochs"]), args.sheet / f"{name}.png")
        return
    metrics = metric_names(args.samples)
    precision = args.precision or (saved["settings"]["precision"] if saved is not None else None)
    device = resolve_device(args.device)
    settings = {"minutes": None if args.same_epochs else args.minutes, "same_epochs": args.same_epochs,
                "samples": args.samples, "sngan_width": args.sngan_width, "device": device.type,
                "precision": precision or resolve_precision("auto", device).name, "threads": torch.get_num_threads()}
    results = load_results(args.results, saved, settings)
    work = args.work or Path(tempfile.mkdtemp(prefix="facegan-recipes-"))
    os.environ["FACEGAN_CACHE"] = str(work / "cache")

    def overrides(preset: str) -> dict:
        widths = {"g_width": args.sngan_width, "d_width": args.sngan_width} if preset == "sngan" and args.sngan_width else {}
        return {**widths, "precision": settings["precision"], "device": device.type, "compile": args.compile}

    def finish(dataset: str, entry: dict, preset: str, seed: int, data: Path, held_out: Path) -> None:
        if any(r["preset"] == preset and r["seed"] == seed for r in entry["rows"]):
            return  # measured in an earlier sitting
        entry["rows"].append(run_preset(preset, seed, entry["epochs"][preset], data, held_out, work, metrics, overrides(preset)))
        print(f"{dataset} {preset} seed {seed}: {json.dumps({k: v for k, v in entry['rows'][-1].items() if k != 'run_dir'})}",
              file=sys.stderr, flush=True)
        if args.results is not None:  # after every run: a long benchmark stopped early keeps its rows
            text = json.dumps(results, indent=1)
            write_atomically(args.results, lambda temporary: temporary.write_text(text, encoding="utf-8"))
        if args.grids is not None:
            args.grids.mkdir(parents=True, exist_ok=True)
            grid = max((Path(entry["rows"][-1]["run_dir"]) / "samples").glob("epoch-*.png"))
            shutil.copy(grid, args.grids / f"recipes-{dataset}-{preset}{f'-seed{seed}' if seed else ''}.png")

    try:
        for dataset in args.datasets.split(","):
            data, held_out = split_dataset(dataset, work, args.samples)
            presets = args.presets.split(",")
            entry = results["datasets"].get(dataset)
            if entry is not None and set(entry["epochs"]) != set(presets):
                raise SystemExit(f"{args.results} planned {dataset} for the presets {', '.join(entry['epochs'])}; "
                                 "continue it with those, or start another --results file.")
            if entry is None:
                # Every preset's speed is measured once, before any training, in turns (so under
                # the same conditions), and each gets the whole epochs nearest to the budget at its
                # speed (so that learning-rate decay ends where the run ends); every seed of it, in
                # any later sitting, trains that many.
                rates = images_per_second({p: preset_config(p, data, work, overrides(p), seed=0) for p in presets}, data)
                epochs = {p: args.same_epochs or max(1, round(args.minutes * 60 * r / len(open_prepared(data)))) for p, r in rates.items()}
                entry = results["datasets"][dataset] = {"images_per_s": rates, "epochs": epochs, "rows": []}
                print(f"{dataset} images/s: {json.dumps({p: round(r, 1) for p, r in rates.items()})}, epochs: {json.dumps(epochs)}",
                      file=sys.stderr, flush=True)
            for preset in presets:
                finish(dataset, entry, preset, 0, data, held_out)
            firsts = sorted((r for r in entry["rows"] if r["seed"] == 0), key=lambda r: r[metrics[0]])
            firsts = firsts if args.every_preset_seeds else firsts[:2]
            for seed in range(1, args.seeds):
                for first in firsts:
                    finish(dataset, entry, first["preset"], seed, data, held_out)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"\n{where}, torch {torch.__version__}")
    for dataset, entry in results["datasets"].items():
        print_table(dataset, {**results["settings"], **entry}, entry["rows"], metrics)


if __name__ == "__main__":
    main()
