"""Speed and memory of `facegan prepare`, and of drawing batches from a prepared dataset.

    python benchmarks/prepare.py                  # full scale: 202,599 CelebA images (~2.5 GB written)
    python benchmarks/prepare.py --images 20000   # quicker
    python benchmarks/prepare.py --images 128 --faces 16 --baseline 16 --batches 1   # a smoke run in seconds (the tests')

Real CelebA: an official-layout tree of N symlinks that cycle over the real sample's JPEGs in
../shared/data/celeba, named 000001.jpg ... so that the complete annotation files match every
row, exactly as a full download would. The files are read from the page cache, so this measures
decoding, not the disk. Each run is a separate `facegan prepare` process; its peak resident
memory is the largest of the process and its workers. Baselines, in the same run: a plain
single-process loop (Pillow open, convert, crop, resize, full-size decoding), as the seed projects
write it, and single-process synthetic rendering.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CELEBA = Path(os.environ.get("FACEGAN_SHARED_DATA", ROOT.parent / "shared" / "data")) / "celeba"
TARGETS = {"celeba": 1_500, "synthetic": 2_000, "batches": 50_000}


def build_tree(root: Path, count: int) -> Path:
    """An official-layout CelebA of `count` images, symlinked from the real sample."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    sample = sorted((CELEBA / "img_align_celeba").iterdir())
    for i in range(count):
        (images / f"{i + 1:06d}.jpg").symlink_to(sample[i % len(sample)])
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"):
        (root / name).symlink_to(CELEBA / name)
    return root


# Runs `facegan prepare` and prints the peak RSS (KiB) of itself and of its worker processes.
_MEASURED = (
    "import resource, sys\n"
    "from facegan.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "usage = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]\n"
    "print(max(usage))\n"
    "sys.exit(code)\n"
)


def run_prepare(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB, largest process) of one `facegan prepare` run."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _MEASURED, "prepare", *args, "--quiet"],
                            check=True, capture_output=True, text=True)
    return time.perf_counter() - start, int(result.stdout.split()[-1]) / 1024


def plain_loop(files: list[Path]) -> float:
    """Images/s of the seeds' way: one process, full-size decode, crop, resize."""
    start = time.perf_counter()
    for path in files:
        image = Image.open(path).convert("RGB")
        image = image.crop((0, 20, 178, 198)).resize((64, 64), Image.Resampling.BILINEAR)
        np.asarray(image)
    return len(files) / (time.perf_counter() - start)


def batch_rate(path: Path, batches: int, sort: bool) -> float:
    """Images/s of shuffled batches of 128 (facegan's reader, or plain unsorted fancy indexing)."""
    from facegan.data import open_prepared

    dataset = open_prepared(path)
    np.asarray(dataset.images[: min(len(dataset), 50_000)]).sum()  # warm the page cache
    start = time.perf_counter()
    if sort:
        for i, batch in enumerate(dataset.batches(128, seed=1)):
            if i + 1 == batches:
                break
    else:
        order = np.random.default_rng(1).permutation(len(dataset))
        for i in range(batches):
            np.asarray(dataset.images[order[i * 128 : (i + 1) * 128]])
    return batches * 128 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=202_599, help="CelebA images to prepare (default: all 202,599)")
    parser.add_argument("--faces", type=int, default=50_000, help="synthetic faces to render (default 50,000)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--baseline", type=int, default=None,
                        help="images each single-process baseline decodes or renders (default 1,500 JPEGs, 4,096 faces)")
    parser.add_argument("--batches", type=int, default=400, help="shuffled batches of 128 to draw (default 400)")
    args = parser.parse_args()
    jpegs, renders = (args.baseline, args.baseline) if args.baseline else (1500, 4096)
    if not CELEBA.exists():
        sys.exit(f"the real CelebA sample is not at {CELEBA}")
    work = Path(tempfile.mkdtemp(prefix="facegan-bench-", dir=args.workdir))
    rows = []
    try:
        tree = build_tree(work / "celeba", args.images)
        sample = sorted((CELEBA / "img_align_celeba").iterdir())[:jpegs]
        plain_loop(sample[:100])  # warm up
        baseline = plain_loop(sample)
        seconds, peak = run_prepare([str(tree), "--out", str(work / "c64")])
        rate = args.images / seconds
        rows.append(("CelebA JPEGs -> 64x64", f"{args.images:,}", seconds, rate, baseline, TARGETS["celeba"], peak))

        from facegan.data.synthetic import render_faces

        render_faces(0, 0, min(256, renders))  # warm up
        start = time.perf_counter()
        for first in range(0, renders, 1024):  # the chunk size prepare's workers use
            render_faces(0, first, min(1024, renders - first))
        single = renders / (time.perf_counter() - start)
        seconds, peak = run_prepare(["synthetic", "--count", str(args.faces), "--out", str(work / "s64")])
        rows.append(("synthetic faces 64x64", f"{args.faces:,}", seconds, args.faces / seconds, single, TARGETS["synthetic"], peak))

        plain = batch_rate(work / "c64", args.batches, sort=False)
        rate = batch_rate(work / "c64", args.batches, sort=True)
        drawn = args.batches * 128
        rows.append(("shuffled batches of 128", f"{drawn:,}", drawn / rate, rate, plain, TARGETS["batches"], float("nan")))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nfacegan prepare on {os.cpu_count()} cores (baseline: plain single-process loop, same run)\n")
    header = f"{'what':<26}{'images':>10}{'seconds':>10}{'images/s':>11}{'baseline/s':>12}{'ratio':>7}{'target/s':>10}{'met':>5}{'peak RSS MiB':>14}"
    print(header)
    print("-" * len(header))
    for what, count, seconds, rate, base, target, peak in rows:
        peak_text = "-" if np.isnan(peak) else f"{peak:,.0f}"
        print(f"{what:<26}{count:>10}{seconds:>10.1f}{rate:>11,.0f}{base:>12,.0f}{rate / base:>6.1f}x"
              f"{target:>10,}{'yes' if rate >= target else 'NO':>5}{peak_text:>14}")


if __name__ == "__main__":
    main()
