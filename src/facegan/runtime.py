"""Where computation happens and where facegan keeps what it makes once: the device and the cache folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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
        if 0 < torch.cuda.device_count() <= int(local_rank):  # 0: CUDA cannot count its devices; let it say so
            raise FaceganError(f"this process's LOCAL_RANK {local_rank} names GPU {local_rank}, but PyTorch sees "
                               f"{_gpus()}; start at most {torch.cuda.device_count()} processes on this machine "
                               f"(torchrun --nproc-per-node {torch.cuda.device_count()}).")
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
    index = name.removeprefix("cuda:")
    if name.startswith("cuda:") and index.isdigit() and 0 < torch.cuda.device_count() <= int(index):
        raise FaceganError(f"--device {name} names GPU {int(index)}, but PyTorch sees {_gpus()}; use one of those, "
                           "or --device cuda for the first.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FaceganError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, not {name!r}.") from None


def _gpus() -> str:
    """The GPUs PyTorch sees, in words: "1 GPU (cuda:0)", "4 GPUs (cuda:0 to cuda:3)"."""
    count = torch.cuda.device_count()
    return "1 GPU (cuda:0)" if count == 1 else f"{count} GPUs (cuda:0 to cuda:{count - 1})"


@contextlib.contextmanager
def out_of_memory_as_error(doing: str, advice: str) -> Iterator[None]:
    """torch's out-of-memory error as one sentence: what ran out `doing` what, and `advice` (the batch size to lower)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:  # the CUDA allocator's (MPS reports a plain RuntimeError)
        raise FaceganError(f"the GPU ran out of memory {doing}; {advice}.") from None


def cache_dir() -> Path:
    """Where built-in data, the FID network and real features are kept once: $FACEGAN_CACHE, else ~/.cache/facegan."""
    base = os.environ.get("FACEGAN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegan"
    return Path(base)
