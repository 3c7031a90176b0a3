"""fid64 of a tiny untrained G against data32, under torchrun (2 ranks) or alone, for test_distributed.py.

    python ddp_fid_worker.py DATA OUT     (or `fid:DATA` among ddp_worker.py's runs, in the same launch)

A stand-in feature network (a fixed projection of each image's pixels, per image, so the split
of batches cannot change a value) keeps the Inception network's minutes out of the test; the
split, the gather and their order are facegan's own. Rank 0 writes the values and the features.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import torch

from facegan import distributed
from facegan.generation import sampler
from facegan.metrics import evaluate as evaluate_module
from facegan.models import build_models

PROJECTION = np.random.default_rng(0).standard_normal((32 * 32 * 3, 16)).astype(np.float32)
seen: list[np.ndarray] = []


def stand_in_features(network, images, *, batch_size=None, progress=False, total=None) -> np.ndarray:
    arrays = [images] if isinstance(images, np.ndarray) else list(images)
    out = [np.asarray(a, np.float32).reshape(len(a), -1) @ PROJECTION / 255 for a in arrays]
    seen.extend(out)
    return np.concatenate(out) if out else np.zeros((0, 16), np.float32)


def main(data: str, out: str) -> None:
    with distributed.process_group(torch.device("cpu")):
        measure(data, out)


def measure(data: str, out: str) -> None:
    """fid64 of the tiny G (in the process group, if any); rank 0 writes OUT."""
    evaluate_module.features = stand_in_features
    network = SimpleNamespace(sha256="stand-in-for-a-test" + "0" * 40)
    evaluate_module.as_network = lambda network_, device, progress: network
    torch.manual_seed(0)
    generator, _ = build_models("dcgan", 16, 8, 8, 32)
    generator.eval()
    sample = sampler(generator, 16, batch_size=10)  # 7 batches of at most 10: uneven shares
    values = evaluate_module.evaluate(sample, data, ["fid64"], device="cpu", seed=3)
    fake = evaluate_module.generated_features(sample, 64, network, seed=3)
    if distributed.rank() == 0:
        with open(out, "w") as stream:
            json.dump({"values": values, "fake": fake.tolist(), "measured": sum(map(len, seen))}, stream)


if __name__ == "__main__":
    main(*sys.argv[1:])
