"""Where computation happens and where facegan keeps what it makes once: the device and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from facegan.errors import FaceganError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; a named device must exist.

    Under torchrun (LOCAL_RANK set) `auto` and `cuda` mean this process's own GPU, cuda:LOCAL_RANK,
    so the ranks of one machine never share a device.
    """
    if isinstance(name, torch.device):
        return name
    local_rank = os.environ.get("LOCAL_RANK")
    if name in ("auto", "cuda") and local_rank is not None and torch.cuda.is_available():
        return torch.device("cuda", int(local_rank))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FaceganError(f"--device {name} was asked for but PyTorch sees no CUDA GPU; use --device auto or cpu.")
    if name == "mps" and not _mps_available():
        raise FaceganError("--device mps was asked for but Apple's MPS is not available; use --device auto or cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FaceganError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, not {name!r}.") from None


def cache_dir() -> Path:
    """Where built-in data, the FID network and real features are kept once: $FACEGAN_CACHE, else ~/.cache/facegan."""
    base = os.environ.get("FACEGAN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegan"
    return Path(base)
