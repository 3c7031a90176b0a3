"""Which preset makes the best faces on the same budget? FID, KID, precision and recall per preset.

    python benchmarks/recipes.py                                  # 20 minutes per preset and dataset
    python benchmarks/recipes.py --minutes 4 --samples 1000 --seeds 1 --grids docs/images

For each dataset (the built-in synthetic faces, and the 8,000 real CelebA faces of
../shared/data/celeba-89) the images are split once into a training set and a held-out set that
training never sees. Each preset trains through facegan's own `train()` for the same wall-clock
budget on the CPU: a few timed steps give its speed, and the run gets as many whole epochs as fit
(so that learning-rate decay ends where the run ends). Its generator (the EMA when the preset
keeps one) is then measured against the held-out real images with the standard Inception
network: FID, KID, and precision/recall (low recall shows mode collapse). Every loss of every
step logged is checked for NaN or infinity, and rollbacks are counted. With --seeds N the two
best presets by FID are trained again with seeds 1..N-1 and reported as mean and spread.
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

from facegan.config import PRESETS, from_preset
from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.data.prepared import write_subset
from facegan.metrics.evaluate import evaluate_generator
from facegan.plots import read_stats
from facegan.sample import load_generator
from facegan.train.batches import BatchSource, to_model_input
from facegan.train.loop import build_state, train, train_step

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEGAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def split_dataset(name: str, work: Path, held_out: int) -> tuple[Path, Path]:
    """Prepared training and held-out sets of one source, disjoint."""
    if name == "synthetic":
        full = open_prepared(prepare("synthetic", work / name / "full", count=8_192 + held_out, progress=False))
    elif name == "celeba-89":
        full = open_prepared(prepare(str(SHARED / "celeba-89"), work / name / "full", progress=False))
    else:
        raise SystemExit(f"unknown dataset {name!r}")
    order = np.random.default_rng(0).permutation(len(full))
    train_set = write_subset(full, np.sort(order[held_out:]), work / name / "train")
    test_set = write_subset(full, np.sort(order[:held_out]), work / name / "held-out")
    return train_set.path, test_set.path


def images_per_second(config, data: Path, steps: int = 4) -> float:
    """Training speed of a config, in images drawn per second, as the loop draws them."""
    dataset = open_prepared(data)
    state = build_state(config, dataset.resolution, torch.device(config.device))
    batches = BatchSource(dataset, torch.device(config.device)).epoch(config.batch_size, seed=0, epoch=0)
    for i, batch in enumerate(batches):
        if i == 1:
            start = time.perf_counter()  # the first step pays one-off costs
        if i == steps + 1:
            break
        train_step(state, to_model_input(batch), config, update_g=(i + 1) % config.d_steps == 0)
    return steps * config.batch_size / (time.perf_counter() - start)


def run_preset(preset: str, seed: int, data: Path, held_out: Path, work: Path, minutes: float, metrics: list[str],
               overrides: dict) -> dict:
    """Train one preset for the budget and measure it."""
    config = from_preset(preset, data=str(data), runs_dir=str(work / "runs"), device="cpu", seed=seed, **overrides)
    rate = images_per_second(config, data)
    epochs = max(1, int(minutes * 60 * rate / len(open_prepared(data))))
    config = from_preset(preset, data=str(data), runs_dir=str(work / "runs"), device="cpu", seed=seed, epochs=epochs,
                         **overrides)
    started = time.perf_counter()
    run_dir = train(config, progress=False)
    seconds = time.perf_counter() - started
    stats = read_stats(run_dir / "stats.jsonl")
    losses = [r[k] for r in stats for k in ("loss_d", "loss_g") if k in r]
    generator, saved = load_generator(run_dir, torch.device("cpu"))
    values = evaluate_generator(generator, saved.latent_dim, held_out, metrics, device="cpu", seed=seed)
    return {"preset": preset, "seed": seed, "epochs": epochs, "steps": stats[-1]["step"] if stats else 0,
            "minutes": seconds / 60, "images_per_s": rate, "nan": not all(math.isfinite(v) for v in losses),
            "rollbacks": sum(1 for r in stats if r.get("event") == "rollback"), "run_dir": str(run_dir), **values}


def print_table(dataset: str, rows: list[dict], metrics: list[str], minutes: float) -> None:
    keys = [k for k in rows[0] if k.startswith(("fid", "kid", "pr")) and k != "preset" and not k.endswith("_std")]
    print(f"\n{dataset}: {minutes:g} min of CPU training per run; metrics against held-out real images "
          f"({', '.join(metrics)}); lower FID/KID is better, higher precision/recall is better\n")
    header = f"{'preset':<10}{'seeds':>6}{'epochs':>7}{'G steps':>8}{'min':>6}{'img/s':>7}" + "".join(f"{k:>17}" for k in keys) + f"{'NaN':>5}{'rollbacks':>10}"
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
              f"{group[0]['images_per_s']:>7.0f}" + "".join(f"{c:>17}" for c in cells)
              + f"{'yes' if any(r['nan'] for r in group) else 'no':>5}{sum(r['rollbacks'] for r in group):>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per run (default 20)")
    parser.add_argument("--datasets", default="synthetic,celeba-89")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--samples", type=int, default=2000, help="generated and held-out real images per metric (default 2000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the two best presets (default 3)")
    parser.add_argument("--sngan-width", type=int, default=None,
                        help="g/d width of the sngan preset (default: the preset's, Mimicry's 64, i.e. 1024 channels at 4x4)")
    parser.add_argument("--grids", type=Path, default=None, help="copy each run's last grid here as recipes-DATASET-PRESET.png")
    parser.add_argument("--json", type=Path, default=None, help="also write every row here")
    args = parser.parse_args()
    count = f"{args.samples // 1000}k" if args.samples % 1000 == 0 else str(args.samples)
    metrics = [f"fid{count}", f"kid{count}", f"pr{count}"]
    work = Path(tempfile.mkdtemp(prefix="facegan-recipes-"))
    os.environ["FACEGAN_CACHE"] = str(work / "cache")
    results: dict[str, list[dict]] = {}
    try:
        for dataset in args.datasets.split(","):
            data, held_out = split_dataset(dataset, work, args.samples)
            rows = results.setdefault(dataset, [])
            for preset in args.presets.split(","):
                overrides = {"g_width": args.sngan_width, "d_width": args.sngan_width} if preset == "sngan" and args.sngan_width else {}
                rows.append(run_preset(preset, 0, data, held_out, work, args.minutes, metrics, overrides))
                print(f"{dataset} {preset} seed 0: {json.dumps({k: v for k, v in rows[-1].items() if k != 'run_dir'})}", file=sys.stderr)
                if args.grids is not None:
                    args.grids.mkdir(parents=True, exist_ok=True)
                    grid = sorted((Path(rows[-1]["run_dir"]) / "samples").glob("epoch-*.png"))[-1]
                    shutil.copy(grid, args.grids / f"recipes-{dataset}-{preset}.png")
            best = sorted(rows, key=lambda r: r[metrics[0]])[:2] if args.seeds > 1 else []
            for first in best:
                overrides = {"g_width": args.sngan_width, "d_width": args.sngan_width} if first["preset"] == "sngan" and args.sngan_width else {}
                for seed in range(1, args.seeds):
                    rows.append(run_preset(first["preset"], seed, data, held_out, work, args.minutes, metrics, overrides))
                    print(f"{dataset} {first['preset']} seed {seed}: {rows[-1][metrics[0]]:.2f}", file=sys.stderr)
            if args.json is not None:
                args.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nCPU ({torch.get_num_threads()} threads), torch {torch.__version__}")
    for dataset, rows in results.items():
        print_table(dataset, rows, metrics, args.minutes)


if __name__ == "__main__":
    main()
