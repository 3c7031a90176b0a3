"""DCGAN (Radford et al. 2016): transposed convolutions up, strided convolutions down.

Resolution, width and latent size are parameters: a resolution of 4 * 2**n has n stages.
At 64x64 with width 64, G goes 100 -> 512x4x4 -> 256x8x8 -> 128x16x16 -> 64x32x32 -> 3x64x64
and D mirrors it, exactly as pytorch/examples' dcgan and the seed projects build it.

D's normalisation is an option because losses disagree about it: BatchNorm (the paper's) couples
the images of a batch, which WGAN-GP's per-image gradient penalty forbids; Gulrajani et al.
recommend layer normalisation or none there, and spectral normalisation usually replaces it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def stages(resolution: int) -> int:
    """Number of 2x up- or down-sampling stages between 4x4 and `resolution`."""
    n = math.log2(resolution / 4)
    if resolution < 8 or n != int(n):
        raise ValueError(f"resolution must be 4 times a power of two, at least 8 (32, 64, 128), not {resolution}")
    return int(n)


class Generator(nn.Module):
    """Latent vectors (B, latent_dim) -> images (B, 3, R, R) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, width: int = 64, resolution: int = 64) -> None:
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, resolution
        n = stages(resolution)
        channels = width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, channels, 4, 1, 0, bias=False),  # project to 4x4
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.latent_dim, f"expected (B, {self.latent_dim}), got {tuple(z.shape)}"
        return self.main(z[:, :, None, None])


NORMS = ("batch", "layer", "none")


class Discriminator(nn.Module):
    """Images (B, 3, R, R) -> one logit per image (B,).

    `norm` is what follows each inner convolution: "batch" (the paper's), "layer" (GroupNorm
    with one group: per-image statistics over channels and pixels) or "none" (convolutions then
    get biases, as nothing else shifts their outputs).
    """

    def __init__(self, width: int = 64, resolution: int = 64, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
        self.resolution = resolution
        n = stages(resolution)
        bias = norm == "none"
        # No normalisation on the first layer, as in the paper.
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1, bias=bias), nn.LeakyReLU(0.2, inplace=True)]
        channels = width
        for _ in range(n - 1):
            layers.append(nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=bias))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(channels * 2))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, channels * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0, bias=bias))  # 4x4 -> one logit, no Sigmoid
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1:] == (3, self.resolution, self.resolution), f"got {tuple(x.shape)}"
        return self.main(x).flatten()


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: convolutions N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
