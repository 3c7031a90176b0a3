"""Mixed precision: which number format the models compute in, chosen per machine.

Only the convolutions run in the low-precision format (through autocast). Weights, BatchNorm
statistics, losses and optimizer state stay in float32: autocast leaves parameters alone, and
the loop casts logits to float32 before any loss is taken. float16 needs a gradient scaler
(its range is narrow); bfloat16 has float32's range and needs none.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from facegan.errors import FaceganError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def fast_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 convolutions natively (not emulated through float32).

    CPUs need AVX-512 BF16 or AMX (oneDNN then uses bf16 instructions; without them bf16 is
    slower than float32). NVIDIA GPUs need compute capability 8.0 (Ampere) or newer.
    """
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    return False


@dataclass(frozen=True)
class Precision:
    """A resolved precision: the autocast dtype (None for float32) and the device it applies to."""

    name: str  # fp32, bf16 or fp16
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None when everything runs in float32."""
        return _DTYPES.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context in which the models' forward passes run."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """The step's gradient scaler: active for float16 (whose gradients underflow without one), a pass-through otherwise."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto` picks bf16 where the hardware runs it fast, else fp32; a named precision is checked."""
    if name not in PRECISIONS:
        raise FaceganError(f"precision must be one of {', '.join(PRECISIONS)}, not {name!r}.")
    if name == "auto":
        name = "bf16" if fast_bf16(device) else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise FaceganError("--precision bf16 was asked for but this GPU does not support bfloat16; use fp16 or fp32.")
    if name != "fp32" and device.type == "mps":
        raise FaceganError("--precision bf16/fp16 is not supported on Apple's MPS by facegan; use fp32 (or auto).")
    return Precision(name, device.type)
