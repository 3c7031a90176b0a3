"""An exponential moving average of G's weights, the generator to sample from and to evaluate.

Averaging the last few thousand images' worth of G's weights smooths out the oscillation of
adversarial training (Yazici et al. 2019; StyleGAN2's G_ema). Buffers (BatchNorm's running
statistics) are copied, not averaged, as StyleGAN2 does.

Copied statistics describe G's activations, not the average's: `standing_statistics` recomputes
them from the average's own activations (BigGAN's "standing statistics"), which measured FID-1k
278.6 against 296.5 with the copied ones on a `facegan` run (issue 18).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from facegan.conditions import LabelTable

# BigGAN's standing statistics use 16 accumulations; 64 latents a batch keep each batch's
# statistics close to training's (batch 32 to 128) at a cost of 1,024 forward passes of G.
STANDING_BATCHES = 16
STANDING_BATCH_SIZE = 64
STANDING_SEED = 2018  # any fixed seed: the statistics are then a function of the weights alone


def beta_for(half_life_images: float, batch_size: int, images_seen: int | None = None, rampup: float | None = None) -> float:
    """The per-step decay whose weights halve every `half_life_images` images (StyleGAN2's ema_kimg).

    StyleGAN2 uses a half-life of 10,000 images: beta = 0.5 ** (batch / 10_000), 0.9912 at batch
    128. With `rampup` (StyleGAN2-ADA uses 0.05) the half-life is at most rampup x images_seen,
    so the average forgets the random initial weights quickly early in training.
    """
    if rampup is not None:
        if images_seen is None:
            raise ValueError("a ramp-up needs images_seen")
        half_life_images = min(half_life_images, images_seen * rampup)
    if half_life_images <= 0:
        return 0.0  # no history yet: the average is the model itself
    return 0.5 ** (batch_size / half_life_images)


class EMA:
    """A frozen copy of a model whose parameters follow the model's: ema = beta ema + (1 - beta) model."""

    def __init__(self, model: nn.Module) -> None:
        # Create it after the model is on its device and in its memory format: the copy keeps both.
        self.module = copy.deepcopy(model).requires_grad_(False)
        self._names = [name for name, _ in model.named_parameters()]
        # Whether the copy's BatchNorm statistics are standing ones of its present weights
        # (TrainState.refresh_ema_statistics): every update and load makes them stale.
        self.standing = False

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        """Move every parameter a fraction 1 - beta of the way to the model's; copy the buffers."""
        assert 0 <= beta <= 1 and math.isfinite(beta), f"beta must be in [0, 1], not {beta}"
        names, params = zip(*model.named_parameters())
        assert list(names) == self._names, "the model's parameters are not those the EMA was made from"
        torch._foreach_lerp_(list(self.module.parameters()), list(params), 1.0 - beta)
        for average, buffer in zip(self.module.buffers(), model.buffers()):
            average.copy_(buffer)
        self.standing = False

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged model's tensors, for a checkpoint's "generator_ema"."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what state_dict() gave."""
        self.module.load_state_dict(state)
        self.standing = False


@torch.no_grad()
def standing_statistics(generator: nn.Module, latent_dim: int, *, labels: LabelTable | None = None,
                        seed: int = STANDING_SEED, batches: int = STANDING_BATCHES,
                        batch_size: int = STANDING_BATCH_SIZE) -> int:
    """Recompute every BatchNorm's running statistics of `generator` from its own activations; return their count.

    Each norm's statistics are reset and, with momentum None, become the plain average of
    `batches` batches' statistics of G's activations for latents (and, for a conditional G,
    labels drawn from its training `labels`) from `seed`: the same for the same weights and seed.
    Only the norms run in train mode; the weights, the momenta and G's mode are as they were. A G
    without BatchNorm is left alone (0).
    """
    norms = [m for m in generator.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    if getattr(generator, "num_attributes", 0) and labels is None:
        raise ValueError("a conditional generator's statistics need its training labels (labels=LabelTable)")
    device = next(generator.parameters()).device
    noise = torch.Generator().manual_seed(seed)  # on the CPU: the same latents on any device
    conditions = (torch.from_numpy(labels.draw(batches * batch_size, seed)).split(batch_size) if labels is not None
                  else [None] * batches)
    was_training, momenta = generator.training, [m.momentum for m in norms]
    generator.eval()
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches, weighting each alike
            norm.train()
        for c in conditions:
            z = torch.randn(batch_size, latent_dim, generator=noise).to(device)
            generator(z) if c is None else generator(z, c.to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        generator.train(was_training)
    return len(norms)
