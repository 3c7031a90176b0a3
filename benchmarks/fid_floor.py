"""What an FID of 300 means: FID, precision and recall of real faces, spoiled on purpose, and of a run's generators.

    python benchmarks/fid_floor.py --train /tmp/recipes-work-celeba-89/celeba-89/train \
        --held-out /tmp/recipes-work-celeba-89/celeba-89/held-out --run /tmp/recipes-work-celeba-89/runs/00013-facegan

Against `count` held-out real images, with the standard Inception network: `count` training images as they are,
with Gaussian noise (sd 25 grey levels), and blurred to 16x16 and back; then, with --run, the run's raw G, its EMA
with the BatchNorm statistics of G copied in (what checkpoints held before standing statistics), and its EMA as
saved, with BatchNorm statistics recomputed from its own activations (BigGAN's standing statistics; train/ema.py). The prepared sets are those of benchmarks/recipes.py's --work folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from facegan.data import open_prepared
from facegan.generation import load_generator, sampler
from facegan.metrics import fid as fid_math
from facegan.metrics.evaluate import generated_features, real_features
from facegan.metrics.inception import features, load_inception
from facegan.train.checkpoint import resolve_checkpoint


def blurred(images: np.ndarray, size: int = 16) -> np.ndarray:
    """Each image down to size x size and back up, bilinear: the detail of a 16-pixel face."""
    side = images.shape[1]
    return np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.BILINEAR).resize((side, side), Image.BILINEAR))
                     for i in images])


def noisy(images: np.ndarray, sd: float = 25.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sd, images.shape)
    return np.clip(images.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def with_statistics_of(ema: nn.Module, generator: nn.Module) -> nn.Module:
    """The EMA with the BatchNorm buffers of the raw G: what checkpoints held before standing statistics."""
    buffers = dict(generator.named_buffers())
    with torch.no_grad():
        for name, buffer in ema.named_buffers():
            buffer.copy_(buffers[name])
    return ema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True, help="a prepared training set")
    parser.add_argument("--held-out", type=Path, required=True, help="a prepared held-out set, the reference")
    parser.add_argument("--run", type=Path, default=None, help="a run directory whose generators to measure too")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    network = load_inception(device=torch.device("cpu"))
    reference = real_features(open_prepared(args.held_out), args.count, network)
    train = open_prepared(args.train).take(np.arange(args.count))
    rows = {name: features(network, iter([images]), total=len(images))
            for name, images in (("training reals", train), ("... + noise sd 25", noisy(train)), ("... blurred to 16x16", blurred(train)))}
    if args.run is not None:
        path, checkpoint = resolve_checkpoint(args.run)
        generator, config = load_generator(path, "cpu", which="raw")
        kinds = [("raw G", generator)]
        if "generator_ema" in checkpoint:
            ema, _ = load_generator(path, "cpu", which="ema")  # saved with standing statistics
            copied, _ = load_generator(path, "cpu", which="ema")
            kinds += [("EMA (G's BN statistics)", with_statistics_of(copied, generator)),
                      ("EMA (standing BN statistics)", ema)]
        for name, model in kinds:
            rows[f"{name}, step {checkpoint['step']}"] = generated_features(sampler(model, config.latent_dim),
                                                                           args.count, network)
    print(f"\nagainst {len(reference):,} held-out real images of {args.held_out}\n")
    print(f"{'images':<40}{'FID':>9}{'precision':>11}{'recall':>8}")
    reference_stats = fid_math.gaussian_stats(reference)
    for name, values in rows.items():
        precision, recall = fid_math.precision_recall(reference, values)
        print(f"{name:<40}{fid_math.frechet_distance(reference_stats, fid_math.gaussian_stats(values)):>9.1f}{precision:>11.3f}{recall:>8.3f}")


if __name__ == "__main__":
    main()
