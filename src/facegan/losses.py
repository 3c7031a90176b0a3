"""GAN losses as pure functions of D's logits, chosen by name.

Each entry is (d_loss(real_logits, fake_logits), g_loss(fake_logits)). Logits, never
probabilities: softplus is BCE on logits computed stably, where Sigmoid + BCELoss saturates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def bce_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE for D: -log D(x) - log(1 - D(G(z))), averaged over each batch."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def bce_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating BCE for G: -log D(G(z))."""
    return F.softplus(-fake_logits).mean()


LossPair = tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
LOSSES: dict[str, LossPair] = {
    "bce": (bce_d, bce_g),
}
