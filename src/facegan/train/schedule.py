"""Learning-rate schedules: a factor of the configured rate as a function of the step.

Decaying to zero at the end (BigGAN's and StudioGAN's linear decay) lets a fixed budget of
steps finish on a settled G instead of wherever the last oscillation left it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SCHEDULES = ("constant", "linear", "cosine")  # what lr_factor computes; the choices of --lr-schedule


def lr_factor(step: int, total_steps: int, kind: str, start_fraction: float = 0.0) -> float:
    """1 until start_fraction x total_steps, then down to 0 at total_steps ("constant" stays 1).

    "linear" falls in a straight line, "cosine" along half a cosine. `step` counts the updates
    done so far, so the first update uses lr_factor(0, ...) = 1 and the factor at total_steps
    is 0; steps beyond the total stay at 0.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if total_steps <= 0 or not 0 <= start_fraction < 1:
        raise ValueError(f"need total_steps > 0 and 0 <= start_fraction < 1, not {total_steps} and {start_fraction}")
    if kind == "constant":
        return 1.0
    start = start_fraction * total_steps
    progress = min(max((step - start) / (total_steps - start), 0.0), 1.0)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float) -> None:
    """Set each param group's rate to its base rate times `factor` (base rates from the config, not the groups)."""
    assert len(base_lrs) == len(optimizer.param_groups), f"{len(base_lrs)} base rates for {len(optimizer.param_groups)} groups"
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
