"""SNGAN's ResNet (Miyato et al. 2018), as Mimicry's `sngan_64` and `sngan_128` build it.

G: a linear layer to a 4x4 map, one upsampling residual block per 2x stage, then
BatchNorm-ReLU-conv3x3-tanh. D: an "optimised" first block (conv-ReLU-conv-pool, shortcut
pool-conv1x1), then residual blocks (ReLU-conv-ReLU-conv-pool), ReLU, a sum over pixels and
one linear logit. Width is the channel count of G's last and D's first stage; channels double
per stage towards 4x4 up to 16 x width, so width 64 is Mimicry's model (ngf = ndf = 1024) at
64 and 128 pixels. Spectral normalisation of D is applied by the builder (models.build_models)
after initialisation, so that its power iteration starts from the final weights.

Where this differs from Mimicry's code: the 1x1 shortcut convolutions run at the lower
resolution, which changes only the cost (a 1x1 convolution commutes with bilinear upsampling
and with average pooling); and D's blocks give their shortcut the input as it came, as the
original Chainer code does, where Mimicry's in-place ReLU rectifies the shortcut's input too.
Upsampling is bilinear as in Mimicry (the Chainer original used nearest); biases start at 0,
as Chainer's do (Mimicry leaves PyTorch's default).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from facegan.models.dcgan import stages

MAX_MULTIPLIER = 16  # channels stop doubling at 16 x width, as in Mimicry's 64 and 128 px models


def stage_channels(width: int, resolution: int) -> list[int]:
    """Channels from the 4x4 stage to the full-resolution one: [16w, 8w, 4w, 2w, w] at 64 px."""
    n = stages(resolution)
    return [width * min(2**i, MAX_MULTIPLIER) for i in range(n, -1, -1)]


def _xavier(module: nn.Conv2d | nn.Linear, gain: float) -> None:
    nn.init.xavier_uniform_(module.weight, gain)
    nn.init.zeros_(module.bias)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class GBlock(nn.Module):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus an upsampled 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.b1 = nn.BatchNorm2d(in_channels)
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.b2 = nn.BatchNorm2d(out_channels)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        # Residual convolutions get gain sqrt(2) for the ReLUs before them; the shortcut is linear.
        _xavier(self.c1, math.sqrt(2))
        _xavier(self.c2, math.sqrt(2))
        _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(_upsample(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        return h + _upsample(self.c_sc(x))


class DBlock(nn.Module):
    """ReLU-conv3x3-ReLU-conv3x3(-avgpool), plus a 1x1-conv (pooled) shortcut when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.c1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)  # hidden channels = in, as Mimicry
        self.c2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        _xavier(self.c1, math.sqrt(2))
        _xavier(self.c2, math.sqrt(2))
        self.c_sc: nn.Conv2d | None = None
        if downsample or in_channels != out_channels:
            self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
            _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        shortcut = x
        if self.downsample:
            h, shortcut = F.avg_pool2d(h, 2), F.avg_pool2d(shortcut, 2)
        if self.c_sc is not None:
            shortcut = self.c_sc(shortcut)
        return h + shortcut


class DBlockOptimized(nn.Module):
    """D's first block: conv3x3-ReLU-conv3x3-avgpool, shortcut avgpool-conv1x1 (no ReLU on pixels)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        _xavier(self.c1, math.sqrt(2))
        _xavier(self.c2, math.sqrt(2))
        _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class Generator(nn.Module):
    """Latent vectors (B, latent_dim) -> images (B, 3, R, R) in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, width: int = 64, resolution: int = 64) -> None:
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, resolution
        channels = stage_channels(width, resolution)
        self.l1 = nn.Linear(latent_dim, 4 * 4 * channels[0])
        self.blocks = nn.Sequential(*[GBlock(a, b) for a, b in itertools.pairwise(channels)])
        self.b_out = nn.BatchNorm2d(channels[-1])
        self.c_out = nn.Conv2d(channels[-1], 3, 3, 1, 1)
        _xavier(self.l1, 1.0)
        _xavier(self.c_out, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.latent_dim, f"expected (B, {self.latent_dim}), got {tuple(z.shape)}"
        h = self.blocks(self.l1(z).view(len(z), -1, 4, 4))
        return torch.tanh(self.c_out(F.relu(self.b_out(h))))


class Discriminator(nn.Module):
    """Images (B, 3, R, R) -> one logit per image (B,).

    After the first block, each block doubles the channels and halves the resolution until the
    channels reach 16 x width; further blocks keep both (Mimicry: 2x2 at 64 px, 4x4 at 128 px).
    """

    def __init__(self, width: int = 64, resolution: int = 64) -> None:
        super().__init__()
        self.resolution = resolution
        channels = stage_channels(width, resolution)[::-1]
        blocks: list[nn.Module] = [DBlockOptimized(3, channels[0])]
        blocks += [DBlock(a, b, downsample=a != b) for a, b in itertools.pairwise(channels)]
        self.blocks = nn.Sequential(*blocks)
        self.l_out = nn.Linear(channels[-1], 1)
        _xavier(self.l_out, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1:] == (3, self.resolution, self.resolution), f"got {tuple(x.shape)}"
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling, as SNGAN
        return self.l_out(h).flatten()
