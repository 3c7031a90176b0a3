"""Attribute conditioning: conditional BatchNorm for G, a projection head for D.

A condition is a float tensor c (B, K): one column per attribute, 1 where it is present and 0
where it is absent. Each attribute has one learned vector for "present" and another for
"absent", so absence is a condition too, and an image's vectors are the sum over its attributes:
with `presence(c)` = [c, 1 - c] (B, 2K), that sum is one matrix product, presence(c) @ E. Values
between 0 and 1 mix the two vectors, which a demo's slider may use.

- `ConditionalBatchNorm2d` (de Vries et al. 2017; Miyato & Koyama 2018's G): BatchNorm without
  its own affine, then gain 1 + presence(c) @ G and bias presence(c) @ B, per channel. Both
  tables start at zero, so a new conditional G starts as an unconditional one with BatchNorm's
  default affine (1, 0). With c None the tables are skipped: that is the same unconditional
  BatchNorm.
- `Projection` (Miyato & Koyama 2018): D's logit gains <presence(c) @ E, pooled features>. It is
  a bias-free Linear layer, so that the builder's spectral normalisation covers it as their
  code normalises its embedding. With c None it adds nothing.
- `AttributeHead` (Odena et al. 2017's AC-GAN; StarGAN's attribute term): one logit per
  attribute from D's last features (DCGAN's 4x4 map flattened, as its logit reads it; ResNet's
  pooled ones), asked for with `D(x, c, aux=True)`. The training step teaches it the real images'
  attributes and asks G's images to show theirs (train/step.py): the projection alone only says
  whether an image fits its condition, which G could long ignore (README, "Who gets generated:
  CelebA"). Built only for --aux-weight above 0, so earlier checkpoints load.
"""

from __future__ import annotations

import torch
from torch import nn


def presence(c: torch.Tensor) -> torch.Tensor:
    """(B, K) labels in [0, 1] -> (B, 2K): the present columns, then the absent ones."""
    return torch.cat([c, 1 - c], dim=1)


def check_condition(c: torch.Tensor | None, num_attributes: int, batch: int) -> None:
    """Raise ValueError unless c is None or a (batch, num_attributes) tensor, and unless a model without
    attributes gets None."""
    if c is None:
        return
    if num_attributes == 0:
        raise ValueError("this model was built without conditioning; call it without a condition c (c=None)")
    if c.ndim != 2 or tuple(c.shape) != (batch, num_attributes):
        raise ValueError(f"expected a condition of shape ({batch}, {num_attributes}), got {tuple(c.shape)}")


def normalise(norm: nn.Module, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """A block's norm applied: conditional ones take c; a plain (or Sync) BatchNorm takes x alone."""
    return norm(x, c) if isinstance(norm, ConditionalBatchNorm2d) else norm(x)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d whose per-channel gain and bias come from the condition."""

    def __init__(self, channels: int, num_attributes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Parameter(torch.zeros(2 * num_attributes, channels))  # added to 1
        self.bias = nn.Parameter(torch.zeros(2 * num_attributes, channels))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) normalised, then scaled and shifted per image by its condition."""
        h = self.bn(x)
        if c is None:
            return h
        p = presence(c).to(h.dtype)
        gain = 1 + p @ self.gain.to(h.dtype)
        bias = p @ self.bias.to(h.dtype)
        return h * gain[:, :, None, None] + bias[:, :, None, None]


class Projection(nn.Module):
    """The projection discriminator's class term: <presence(c) @ E, features> per image."""

    def __init__(self, features: int, num_attributes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(2 * num_attributes, features, bias=False)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, pooled: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B, F) pooled features and (B, K) labels -> (B,) terms to add to the logits."""
        return (self.embed(presence(c).to(pooled.dtype)) * pooled).sum(dim=1)


class AttributeHead(nn.Module):
    """D's auxiliary classifier: (B, F) features, or a (B, C, H, W) map read whole, -> (B, K) logits, one per attribute."""

    def __init__(self, features: int, num_attributes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, num_attributes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of each attribute being present (flattened here: only when asked for, off D's hot path)."""
        return self.linear(features.flatten(1))


def with_attributes(logits: torch.Tensor, features: torch.Tensor, head: AttributeHead | None,
                    aux: bool) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A D's return: its logits alone, or with `aux` also its attribute head's logits (ValueError without a head)."""
    if not aux:
        return logits
    if head is None:
        raise ValueError("this discriminator was built without an attribute head (aux_classifier=False); "
                         "call it without aux=True")
    return logits, head(features)
