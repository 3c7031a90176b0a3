"""DCGAN (Radford et al. 2016): transposed convolutions up, strided convolutions down.

Resolution, width and latent size are parameters: a resolution of 4 * 2**n has n stages.
At 64x64 with width 64, G goes 100 -> 512x4x4 -> 256x8x8 -> 128x16x16 -> 64x32x32 -> 3x64x64
and D mirrors it, exactly as pytorch/examples' dcgan and the seed projects build it.

D's normalisation is an option because losses disagree about it: BatchNorm (the paper's) couples
the images of a batch, which WGAN-GP's per-image gradient penalty forbids; Gulrajani et al.
recommend layer normalisation or none there, and spectral normalisation usually replaces it.

G is `project` (the latent to 4x4), `blocks` (one 2x upsampling each) and `to_rgb`; D is `blocks`,
run by `features`, and `head` (one logit per image). Both take an optional condition c, a float
tensor (B, K) of labels. Built with `num_attributes` K > 0 they use it (models/conditional.py):
every BatchNorm of G is conditional, and D's logit gains a projection term <embed(c), the 4x4
features summed over pixels> (Miyato & Koyama 2018). With `aux_classifier`, D also has an
attribute head on the 4x4 features: `D(x, c, aux=True)` also returns one logit per attribute.
Built with K = 0 (the default) they are the paper's models, layer for layer and draw for draw
from the RNG, and refuse a c. Until 3bf9834 G and D were one nn.Sequential, `main`;
`rename_old_keys` lets state dicts of that time load.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from facegan.models.conditional import (
    AttributeHead,
    ConditionalBatchNorm2d,
    Projection,
    check_condition,
    normalise,
    with_attributes,
)


def stages(resolution: int) -> int:
    """Number of 2x up- or down-sampling stages between 4x4 and `resolution`."""
    n = math.log2(resolution / 4)
    if resolution < 8 or n != int(n):
        raise ValueError(f"resolution must be 4 times a power of two, at least 8 (32, 64, 128), not {resolution}")
    return int(n)


def check_latents(z: torch.Tensor, latent_dim: int) -> None:
    """Raise ValueError unless `z` is a batch of latent vectors (B, latent_dim)."""
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise ValueError(f"expected latent vectors of shape (B, {latent_dim}), got {tuple(z.shape)}")


def check_images(x: torch.Tensor, resolution: int) -> None:
    """Raise ValueError unless `x` is a batch of images (B, 3, resolution, resolution)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, resolution, resolution):
        raise ValueError(f"expected images of shape (B, 3, {resolution}, {resolution}), got {tuple(x.shape)}")


def rename_old_keys(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *_: object) -> None:
    """Load-state-dict pre-hook: rename the keys of a state dict saved before the blocks had names.

    `module.old_names()` maps old submodule paths to new ones; a key under an old path (its
    weights, buffers and spectral norm's `parametrizations.weight.original`) moves to the new
    path. Checkpoints, G's moving average and exported generators all load through here.
    """
    for old, new in module.old_names().items():
        for key in [key for key in state_dict if key.startswith(f"{prefix}{old}.")]:
            state_dict[f"{prefix}{new}{key[len(prefix) + len(old):]}"] = state_dict.pop(key)


class GBlock(nn.Module):
    """ConvTranspose2d(4x4)-BatchNorm-ReLU: 2x upsampling, or the latent's 1x1 to 4x4 with `project`.

    With `num_attributes` > 0 the BatchNorm is conditional on c.
    """

    def __init__(self, in_channels: int, out_channels: int, project: bool = False, num_attributes: int = 0) -> None:
        super().__init__()
        stride, padding = (1, 0) if project else (2, 1)
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride, padding, bias=False)
        self.norm: nn.Module = (ConditionalBatchNorm2d(out_channels, num_attributes) if num_attributes
                                else nn.BatchNorm2d(out_channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, 2H, 2W), or (B, latent, 1, 1) -> (B, out, 4, 4)."""
        return self.act(normalise(self.norm, self.conv(x), c))


class ToRGB(nn.Module):
    """ConvTranspose2d(4x4) 2x up to 3 channels, then Tanh: G's last layer, without a norm."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, 3, 4, 2, 1, bias=False)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in, H, W) -> images (B, 3, 2H, 2W) in [-1, 1]; c is unused."""
        return self.act(self.conv(x))


class Generator(nn.Module):
    """Latent vectors (B, latent_dim) -> images (B, 3, R, R) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, width: int = 64, resolution: int = 64, num_attributes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.resolution, self.num_attributes = latent_dim, resolution, num_attributes
        n = stages(resolution)
        channels = [width * 2**i for i in range(n - 1, -1, -1)]  # [8w, 4w, 2w, w] at 64 px
        # Created in the order of the old nn.Sequential, so a seed gives the same initial weights
        # and parameters() keeps the order that saved optimizer states are indexed by.
        self.project = GBlock(latent_dim, channels[0], project=True, num_attributes=num_attributes)
        self.blocks = nn.ModuleList(GBlock(a, b, num_attributes=num_attributes) for a, b in itertools.pairwise(channels))
        self.to_rgb = ToRGB(channels[-1])
        self.register_load_state_dict_pre_hook(rename_old_keys)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Images for latents `z` and, for a conditional G, labels `c` (None: no condition term)."""
        check_latents(z, self.latent_dim)
        check_condition(c, self.num_attributes, len(z))
        h = self.project(z[:, :, None, None], c)
        for block in self.blocks:
            h = block(h, c)
        return self.to_rgb(h, c)

    def old_names(self) -> dict[str, str]:
        """The submodule paths of 3bf9834's G (`main.<i>`) and their names now."""
        # Its nn.Sequential held conv, BatchNorm, ReLU per block, then the last conv and Tanh.
        blocks = ["project", *(f"blocks.{i}" for i in range(len(self.blocks)))]
        layers = [f"{block}.{layer}" for block in blocks for layer in ("conv", "norm", "act")] + ["to_rgb.conv", "to_rgb.act"]
        return {f"main.{i}": layer for i, layer in enumerate(layers)}


NORMS = ("batch", "layer", "none")


class DBlock(nn.Module):
    """Conv2d(4x4, stride 2)-norm-LeakyReLU(0.2): halves the resolution; `norm` as Discriminator's."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=bias)
        self.norm: nn.Module | None = None
        if norm == "batch":
            self.norm = nn.BatchNorm2d(out_channels)
        elif norm == "layer":
            self.norm = nn.GroupNorm(1, out_channels)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H/2, W/2)."""
        h = self.conv(x)
        if self.norm is not None:
            h = self.norm(h)
        return self.act(h)


class Discriminator(nn.Module):
    """Images (B, 3, R, R) -> one logit per image (B,).

    `norm` is what follows each inner convolution: "batch" (the paper's), "layer" (GroupNorm
    with one group: per-image statistics over channels and pixels) or "none" (convolutions then
    get biases, as nothing else shifts their outputs).
    """

    def __init__(self, width: int = 64, resolution: int = 64, norm: str = "batch", num_attributes: int = 0,
                 aux_classifier: bool = False) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
        self.resolution, self.num_attributes = resolution, num_attributes
        n = stages(resolution)
        bias = norm == "none"
        channels = [width * 2**i for i in range(n)]  # [w, 2w, 4w, 8w] at 64 px
        # No normalisation on the first layer, as in the paper. Created in the old nn.Sequential's
        # order, as G's layers are.
        blocks = [DBlock(3, width, "none", bias)] + [DBlock(a, b, norm, bias) for a, b in itertools.pairwise(channels)]
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels[-1], 1, 4, 1, 0, bias=bias)  # 4x4 -> one logit, no Sigmoid
        self.projection = Projection(channels[-1], num_attributes) if num_attributes else None
        # On the 4x4 features as they lie, as `head` reads them: pooled, they would lose where things are.
        self.attributes = AttributeHead(channels[-1] * 16, num_attributes) if num_attributes and aux_classifier else None
        self.register_load_state_dict_pre_hook(rename_old_keys)

    def features(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden activations for images `x`: (B, width * 2**(stages - 1), 4, 4); 512x4x4 at 64 px, width 64."""
        check_images(x, self.resolution)
        check_condition(c, self.num_attributes, len(x))
        h = x
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, *,
                aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One logit per image; a conditional D adds its projection term for labels `c` (None: none).
        With `aux`, also its attribute head's (B, K) logits."""
        h = self.features(x, c)
        logits = self.head(h).flatten()
        if self.projection is not None and c is not None:
            logits = logits + self.projection(h.sum(dim=(2, 3)), c)
        return with_attributes(logits, h, self.attributes, aux)

    def old_names(self) -> dict[str, str]:
        """The submodule paths of 3bf9834's D (`main.<i>`) and their names now."""
        # Its nn.Sequential held conv, norm (where there is one) and LeakyReLU per block, then the
        # logit's conv.
        layers = [f"blocks.{i}.{name}" for i, block in enumerate(self.blocks)
                  for name in ("conv", "norm", "act") if getattr(block, name) is not None]
        return {f"main.{i}": layer for i, layer in enumerate([*layers, "head"])}


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: convolutions N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:  # a conditional BatchNorm's gain starts at 1 itself
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
