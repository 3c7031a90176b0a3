"""Does the dcgan preset really learn? SWD between generated and real faces, epoch by epoch.

    python benchmarks/learn.py                         # ~10 minutes per dataset on the CPU
    python benchmarks/learn.py --minutes 3 --datasets synthetic
    python benchmarks/learn.py --minutes 0 --datasets synthetic --faces 32 --width 8 --batch 16 --samples 16   # one epoch, seconds

For each dataset it trains the dcgan preset with facegan's own loop (one `train`, whose progress_fn
measures after each epoch and whose abort_fn ends it) for a fixed wall-clock budget; after every
epoch it measures the sliced
Wasserstein distance over Laplacian-pyramid patches (Karras et al. 2018) between 2,048 generated
images and 2,048 real ones. The figure needs no pretrained network; lower is better, and it must
fall clearly. Datasets: 8,192 built-in synthetic faces, and the 8,000 real CelebA faces of
../shared/data/celeba-89 (89x109, centre-cropped to 89x89, resized to 64x64).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.generation import generate, latents
from facegan.metrics.swd import swd
from facegan.train.loop import train
from facegan.train.state import build_state

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEGAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def prepare_dataset(name: str, work: Path, faces: int = 8_192) -> Path:
    """A prepared 64x64 dataset for one of the benchmark's sources (prepared once per run of the script)."""
    if (work / name / "dataset.json").exists():
        return work / name
    if name == "synthetic":
        return prepare("synthetic", work / "synthetic", count=faces, progress=False)
    if name == "celeba-89":
        return prepare(str(SHARED / "celeba-89"), work / "celeba-89", progress=False)
    raise SystemExit(f"unknown dataset {name!r}")


def measure(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """SWD (x1e3) per pyramid level and their average."""
    return swd(real, fake, seed=0)


def run(name: str, work: Path, minutes: float, samples: int, grids: Path | None, precision: str = "auto",
        faces: int = 8_192, overrides: dict | None = None) -> list[dict]:
    """Train for `minutes` of wall clock and return one row per epoch (epoch 0 = initialisation).

    At least one epoch is trained, however small `minutes`; `overrides` change the dcgan preset.
    """
    data = prepare_dataset(name, work, faces)
    dataset = open_prepared(data)
    rng = np.random.default_rng(0)
    real = dataset.take(np.sort(rng.choice(len(dataset), min(samples, len(dataset)), replace=False)))
    # As many epochs as the budget holds: the run stops itself after the last one that fits.
    config = from_preset("dcgan", data=str(data), runs_dir=str(work / "runs" / precision), epochs=10_000, device="cpu",
                         precision=precision, **(overrides or {}))

    state = build_state(config, dataset.resolution, torch.device("cpu"))
    z = latents(samples, config.latent_dim, 12345)
    rows = [{"epoch": 0, "step": 0, "minutes": 0.0, **measure(real, generate(state.generator, z))}]
    print(f"{name}: {len(dataset):,} images; epoch 0 (initialisation) swd_avg {rows[0]['swd_avg']:.2f}", file=sys.stderr)

    # One run; after each epoch, progress_fn measures (off the clock) and decides whether another fits the budget.
    clock = {"trained": 0.0, "since": time.perf_counter(), "stop": False}

    def after_epoch(state) -> None:
        epoch_seconds = time.perf_counter() - clock["since"]
        clock["trained"] += epoch_seconds
        rows.append({"epoch": state.epoch, "step": state.step, "minutes": clock["trained"] / 60,
                     **measure(real, generate(state.sampling_generator, z))})
        print(f"{name}: epoch {state.epoch} step {state.step} {clock['trained'] / 60:.1f} min "
              f"swd_avg {rows[-1]['swd_avg']:.2f}", file=sys.stderr)
        clock["stop"] = clock["trained"] + epoch_seconds > minutes * 60
        clock["since"] = time.perf_counter()

    run_dir = train(config, progress=False, progress_fn=after_epoch, abort_fn=lambda state: clock["stop"])
    if grids is not None and run_dir is not None:
        grids.mkdir(parents=True, exist_ok=True)
        final = max((run_dir / "samples").glob("epoch-*.png"))
        shutil.copy(final, grids / f"learn-{name}.png")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per dataset (default 10)")
    parser.add_argument("--datasets", default="synthetic,celeba-89", help="comma-separated: synthetic, celeba-89")
    parser.add_argument("--samples", type=int, default=2048, help="generated and real images per SWD (default 2048)")
    parser.add_argument("--precision", default="auto",
                        help="comma-separated precisions to train with, e.g. fp32,bf16 to compare them (default auto)")
    parser.add_argument("--grids", type=Path, default=None, help="copy each final sample grid here as learn-NAME.png")
    parser.add_argument("--faces", type=int, default=8_192, help="synthetic faces to train on (default 8,192)")
    parser.add_argument("--width", type=int, default=None, help="G and D width (default the dcgan preset's, 64)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default the dcgan preset's, 128)")
    args = parser.parse_args()
    overrides = {"g_width": args.width, "d_width": args.width, "batch_size": args.batch}  # from_preset drops None
    work = Path(tempfile.mkdtemp(prefix="facegan-learn-"))
    os.environ["FACEGAN_CACHE"] = str(work / "cache")
    results = {}
    try:
        for name in args.datasets.split(","):
            for precision in args.precision.split(","):
                label = name if "," not in args.precision else f"{name} {precision}"
                results[label] = run(name, work, args.minutes, args.samples, args.grids, precision, args.faces, overrides)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\ndcgan preset, CPU ({torch.get_num_threads()} threads), {args.minutes:g} min per dataset; "
          f"SWD x1e3 between {args.samples} generated and {args.samples} real 64x64 images (lower is better)\n")
    for name, rows in results.items():
        levels = [k for k in rows[0] if k.startswith("swd") and k != "swd_avg"]
        header = f"{'dataset':<16}{'epoch':>6}{'step':>7}{'minutes':>9}" + "".join(f"{k:>9}" for k in levels) + f"{'swd_avg':>9}"
        print(header)
        print("-" * len(header))
        for row in rows:
            print(f"{name:<16}{row['epoch']:>6}{row['step']:>7}{row['minutes']:>9.1f}"
                  + "".join(f"{row[k]:>9.2f}" for k in levels) + f"{row['swd_avg']:>9.2f}")
        first, last = rows[0]["swd_avg"], rows[-1]["swd_avg"]
        print(f"{name}: swd_avg {first:.2f} -> {last:.2f} ({last / first:.2f}x of the untrained generator's)\n")


if __name__ == "__main__":
    main()
