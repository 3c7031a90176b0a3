"""Sample an exported .onnx generator with onnxruntime and NumPy, without importing PyTorch.

Latents come from NumPy's generator (`numpy.random.default_rng(seed).standard_normal`), since
torch.randn is not there without torch: a seed therefore gives other faces here than through
`facegan sample RUN` (same distribution, other numbers). The file's metadata_props (written by
`facegan export --format onnx`) give the latent size and, for conditional runs, the condition names.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from facegan import viz
from facegan.errors import FaceganError
from facegan.paths import output_file

MAX_IMAGES = 1024  # one grid, as facegan.sample.MAX_GRID_IMAGES (not imported: sample imports torch)


def open_onnx(path: str | os.PathLike):
    """An onnxruntime session for an exported generator and its facegan metadata; one sentence if it is not one."""
    try:
        import onnxruntime
    except ImportError:
        raise FaceganError("sampling an .onnx file needs onnxruntime; install it with `pip install -e '.[onnx]'`.") from None
    path = Path(path)
    if not path.is_file():
        raise FaceganError(f"{path} does not exist; give a file written by `facegan export RUN --format onnx`.")
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        Fail,
        InvalidArgument,
        InvalidGraph,
        InvalidProtobuf,
    )

    try:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, RuntimeError, OSError) as error:  # a damaged file
        raise FaceganError(f"{path} is damaged or not an ONNX model ({str(error).splitlines()[0][:160]}).") from None
    metadata = session.get_modelmeta().custom_metadata_map
    if metadata.get("format") != "facegan-generator" or "latent_dim" not in metadata:
        raise FaceganError(f"{path} is not a facegan generator (its metadata names no facegan format); make one with "
                           "`facegan export RUN --format onnx --out FILE.onnx`.")
    return session, metadata


def onnx_latents(count: int, latent_dim: int, seed: int, truncation: float = 1.0) -> np.ndarray:
    """float32 (count, latent_dim) latents of NumPy's generator for a seed, truncated by psi (the mean is 0)."""
    if not 0.0 <= truncation <= 1.0:
        raise FaceganError(f"--truncation must be between 0 and 1, not {truncation}.")
    z = np.random.default_rng(seed).standard_normal((count, latent_dim), dtype=np.float32)
    return z if truncation == 1.0 else z * np.float32(truncation)


def generate_onnx(session, metadata: dict[str, str], z: np.ndarray, conditions: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) images of an ONNX generator for latents z (and conditions c for a conditional one)."""
    names = json.loads(metadata.get("conditions", "[]"))
    feeds = {"z": z.astype(np.float32)}
    if names:
        feeds["c"] = (conditions if conditions is not None else np.zeros((len(z), len(names)))).astype(np.float32)
    images = session.run(["images"], feeds)[0]
    return np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def sample_onnx(path: str | os.PathLike, count: int, out: str | os.PathLike, *, seed: int = 0,
                truncation: float = 1.0, batch_size: int = 256) -> Path:
    """A grid of `count` faces from an .onnx generator, written to `out` (.png)."""
    if not 0 < count <= MAX_IMAGES:
        raise FaceganError(f"-n must be from 1 to {MAX_IMAGES:,} for an .onnx file (one grid), not {count:,}.")
    out = output_file(out, "--out", suffixes=(".png",))
    session, metadata = open_onnx(path)
    z = onnx_latents(count, int(metadata["latent_dim"]), seed, truncation)
    images = np.concatenate([generate_onnx(session, metadata, z[i : i + batch_size]) for i in range(0, count, batch_size)])
    return viz.save_png(viz.make_grid(images, nrow=min(count, max(1, round(math.sqrt(count))))), out)
