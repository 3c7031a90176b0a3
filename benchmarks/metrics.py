"""How fast are the metrics? Inception features per second, and the statistics' math.

    python benchmarks/metrics.py                  # about 5 minutes on a 2-core CPU
    python benchmarks/metrics.py --quick          # fewer repeats and no SciPy sqrtm row

Table 1: the Inception network at 299x299 in float32, eval and inference mode: the TorchScript
file as shipped against facegan's rebuild (BatchNorm folded into the convolutions), in
NCHW and channels_last memory (the input's, and for the rebuild also the weights'), at several
batch sizes; then `features()` end to end
from uint8 64x64 images (the resize to 299 included). Each rate is the best of a few timed
passes, because other processes on a shared machine slow single passes down unevenly.
Table 2: the statistics on 10,000 x 2048 features (FID, KID with 100 subsets of 1,000,
precision/recall with k=3), and scipy.linalg.sqrtm, the reference implementations' way.
On a CUDA GPU it also times 50,000 images end to end.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch

from facegan.metrics import fid
from facegan.metrics.inception import INPUT_SIZE, features, load_inception


def best_rate(run, images: int, repeats: int) -> float:
    """Images per second of the fastest of `repeats` timed calls (after one warm-up call)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return images / best


def network_rows(device: torch.device, batch_sizes: list[int], repeats: int) -> list[tuple]:
    network = load_inception(device=device)
    nchw = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
    script = torch.jit.load(str(network.path), map_location=device).eval()
    # (name, model, memory format of the input; the rebuilds' weights are in the same format)
    variants = [("TorchScript file", script, "NCHW"), ("TorchScript file", script, "channels_last"),
                ("facegan rebuild", nchw, "NCHW"), ("facegan rebuild", network, "channels_last")]
    rows = []
    for batch in batch_sizes:
        x = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device) * 1.9921875 - 1
        for name, model, layout in variants:
            data = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x.contiguous()

            def run(model=model, data=data):
                with torch.inference_mode():
                    model(data)
                    if device.type == "cuda":
                        torch.cuda.synchronize()

            rows.append((name, layout, batch, best_rate(run, batch, repeats)))
            print(f"  {name:17s} {layout:14s} batch {batch:3d}: {rows[-1][3]:8.2f} images/s", flush=True)
    return rows


def end_to_end_rows(device: torch.device, count: int, batch_sizes: list[int | None], repeats: int) -> list[tuple]:
    network = load_inception(device=device)
    images = np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
    rows = []
    for batch in batch_sizes:
        rate = best_rate(lambda batch=batch: features(network, images, batch_size=batch), count, repeats)
        rows.append(("features() from uint8 64x64", "channels_last", batch or "default", rate))
        print(f"  features() end to end, batch {batch or 'default'}: {rate:8.2f} images/s", flush=True)
    return rows


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def math_rows(with_scipy: bool, count: int = 10_000, dim: int = 2048) -> list[tuple[str, float, str]]:
    """(what, seconds, value) of the statistics on `count` x `dim` features (the tests call it small)."""
    rng = np.random.default_rng(0)
    # Inception-like: non-negative, skewed, correlated through a shared mixing matrix.
    mixing = rng.normal(size=(dim, dim)).astype(np.float32) / 45
    real = np.abs(rng.normal(size=(count, dim)).astype(np.float32) @ mixing) ** 1.5
    fake = np.abs(rng.normal(size=(count, dim)).astype(np.float32) @ mixing * 1.02) ** 1.5
    rows = []
    seconds, (a, b) = timed(lambda: (fid.gaussian_stats(real), fid.gaussian_stats(fake)))
    rows.append((f"mean and covariance, 2 x {count:,} x {dim}", seconds, ""))
    seconds, value = timed(fid.frechet_distance, a, b)
    rows.append(("FID from statistics (Cholesky + eigvalsh)", seconds, f"{value:.4f}"))
    small_a, small_b = fid.gaussian_stats(real[: count // 5]), fid.gaussian_stats(fake[: count // 5])
    seconds, value = timed(fid.frechet_distance, small_a, small_b)
    rows.append((f"FID, {count // 5:,} samples: singular (eigh path)", seconds, f"{value:.4f}"))
    if with_scipy:
        import scipy.linalg

        seconds, root = timed(scipy.linalg.sqrtm, a.sigma @ b.sigma)
        value = np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(root).real
        rows.append(("FID with scipy.linalg.sqrtm (reference way)", seconds, f"{value:.4f}"))
    seconds, (mean, std) = timed(fid.kernel_inception_distance, real, fake)
    rows.append((f"KID, 100 subsets of {min(count, 1000):,}", seconds, f"{mean:.5f} +- {std:.5f}"))
    seconds, (precision, recall) = timed(fid.precision_recall, real, fake)
    rows.append((f"precision/recall, k=3, {count:,} each", seconds, f"{precision:.4f} / {recall:.4f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed pass each, no SciPy sqrtm row")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} "
          f"(other processes share this machine's cores)", flush=True)

    cpu = torch.device("cpu")
    print("\nmeasuring the network on the CPU ...", flush=True)
    rows = network_rows(cpu, [8, 16, 32, 64], repeats) + end_to_end_rows(cpu, 96, [None, 32], repeats)
    print(f"\nInception-v3 features on the CPU, 299x299, float32 (best of {repeats} passes)")
    print(f"{'network':29s} {'memory':14s} {'batch':>7s} {'images/s':>9s}")
    print("-" * 62)
    for name, layout, batch, rate in rows:
        print(f"{name:29s} {layout:14s} {batch!s:>7s} {rate:9.2f}")

    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        print(f"\nmeasuring on {torch.cuda.get_device_name(gpu)} ...", flush=True)
        gpu_rows = network_rows(gpu, [64, 200, 500], repeats)
        network = load_inception(device=gpu)
        images = np.random.default_rng(0).integers(0, 256, (50_000, 64, 64, 3), dtype=np.uint8)
        features(network, images[:1000])
        torch.cuda.synchronize()
        seconds, _ = timed(features, network, images)
        print(f"\nInception-v3 features on {torch.cuda.get_device_name(gpu)}, float32 (TF32 off)")
        print(f"{'network':29s} {'memory':14s} {'batch':>7s} {'images/s':>9s}")
        print("-" * 62)
        for name, layout, batch, rate in gpu_rows:
            print(f"{name:29s} {layout:14s} {batch!s:>7s} {rate:9.1f}")
        print(f"50,000 uint8 64x64 images end to end (features(), default batch): {seconds:.1f} s, "
              f"{50_000 / seconds:,.0f} images/s")

    print("\nmeasuring the statistics ...", flush=True)
    print(f"\n{'statistics on 10,000 x 2048 features':45s} {'seconds':>8s}  value")
    print("-" * 72)
    for name, seconds, value in math_rows(not args.quick):
        print(f"{name:45s} {seconds:8.2f}  {value}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
