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

G is `project` (a linear layer to 4x4), `blocks` and `to_rgb`; D is `blocks` and the pooling,
run by `features`, and `head` (one logit per image). As in dcgan.py, both take an optional
condition c (B, K), used when built with `num_attributes` K > 0: the BatchNorms of G's blocks
become conditional (Miyato & Koyama's code keeps the last one, `to_rgb.norm`, unconditional, and
so does this), and D's logit gains the projection term <embed(c), features>; with `aux_classifier`
D also has an attribute head on its features (`D(x, c, aux=True)`). Built with K = 0 they
are the unconditional models and refuse a c. Until 3bf9834 G's layers were `l1`, `b_out`,
`c_out` and D's logit `l_out`; `rename_old_keys` lets those state dicts load.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from facegan.models.conditional import (
    AttributeHead,
    ConditionalBatchNorm2d,
    Projection,
    check_condition,
    normalise,
    with_attributes,
)
from facegan.models.dcgan import (
    check_images,
    check_latents,
    rename_old_keys,
    stages,
)

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

    def __init__(self, in_channels: int, out_channels: int, num_attributes: int = 0) -> None:
        super().__init__()
        norm = (lambda n: ConditionalBatchNorm2d(n, num_attributes)) if num_attributes else nn.BatchNorm2d
        self.b1 = norm(in_channels)
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.b2 = norm(out_channels)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0)
        # Residual convolutions get gain sqrt(2) for the ReLUs before them; the shortcut is linear.
        _xavier(self.c1, math.sqrt(2))
        _xavier(self.c2, math.sqrt(2))
        _xavier(self.c_sc, 1.0)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, 2H, 2W); b1 and b2 take c when they are conditional."""
        h = self.c1(_upsample(F.relu(normalise(self.b1, x, c))))
        h = self.c2(F.relu(normalise(self.b2, h, c)))
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
        """(B, in, H, W) -> (B, out, H/2, W/2) when downsampling, else (B, out, H, W)."""
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
        """(B, in, H, W) -> (B, out, H/2, W/2)."""
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class ToRGB(nn.Module):
    """BatchNorm-ReLU-conv3x3-tanh: G's last stage, to 3 channels in [-1, 1]."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, 3, 3, 1, 1)  # initialised by Generator, after all its layers exist

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in, H, W) -> images (B, 3, H, W); c is unused."""
        return torch.tanh(self.conv(F.relu(self.norm(x))))


class Generator(nn.Module):
    """Latent vectors (B, latent_dim) -> images (B, 3, R, R) in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, width: int = 64, resolution: int = 64, num_attributes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.resolution, self.num_attributes = latent_dim, resolution, num_attributes
        channels = stage_channels(width, resolution)
        self.project = nn.Linear(latent_dim, 4 * 4 * channels[0])
        self.blocks = nn.ModuleList(GBlock(a, b, num_attributes) for a, b in itertools.pairwise(channels))
        self.to_rgb = ToRGB(channels[-1])
        # Only now, as before the blocks had names: each layer's default initialisation drew from
        # the RNG when it was created, so this order keeps a seed's initial weights.
        _xavier(self.project, 1.0)
        _xavier(self.to_rgb.conv, 1.0)
        self.register_load_state_dict_pre_hook(rename_old_keys)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Images for latents `z` and, for a conditional G, labels `c` (None: no condition term)."""
        check_latents(z, self.latent_dim)
        check_condition(c, self.num_attributes, len(z))
        h = self.project(z).view(len(z), -1, 4, 4)
        for block in self.blocks:
            h = block(h, c)
        return self.to_rgb(h, c)

    def old_names(self) -> dict[str, str]:
        """The submodule paths of 3bf9834's G that have other names now."""
        return {"l1": "project", "b_out": "to_rgb.norm", "c_out": "to_rgb.conv"}


class Discriminator(nn.Module):
    """Images (B, 3, R, R) -> one logit per image (B,).

    After the first block, each block doubles the channels and halves the resolution until the
    channels reach 16 x width; further blocks keep both (Mimicry: 2x2 at 64 px, 4x4 at 128 px).
    """

    def __init__(self, width: int = 64, resolution: int = 64, num_attributes: int = 0,
                 aux_classifier: bool = False) -> None:
        super().__init__()
        self.resolution, self.num_attributes = resolution, num_attributes
        channels = stage_channels(width, resolution)[::-1]
        blocks: list[nn.Module] = [DBlockOptimized(3, channels[0])]
        blocks += [DBlock(a, b, downsample=a != b) for a, b in itertools.pairwise(channels)]
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels[-1], 1)
        _xavier(self.head, 1.0)
        self.projection = Projection(channels[-1], num_attributes) if num_attributes else None
        if self.projection is not None:  # xavier, as SNGAN's projection embedding
            nn.init.xavier_uniform_(self.projection.embed.weight)
        self.attributes = AttributeHead(channels[-1], num_attributes) if num_attributes and aux_classifier else None
        if self.attributes is not None:
            _xavier(self.attributes.linear, 1.0)
        self.register_load_state_dict_pre_hook(rename_old_keys)

    def features(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features of images `x`: (B, 16 * width) at 64 and 128 px (the last block's channels)."""
        check_images(x, self.resolution)
        check_condition(c, self.num_attributes, len(x))
        h = x
        for block in self.blocks:
            h = block(h)
        return F.relu(h).sum(dim=(2, 3))  # global sum pooling, as SNGAN

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, *,
                aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One logit per image; a conditional D adds its projection term for labels `c` (None: none).
        With `aux`, also its attribute head's (B, K) logits."""
        h = self.features(x, c)
        logits = self.head(h).flatten()
        if self.projection is not None and c is not None:
            logits = logits + self.projection(h, c)
        return with_attributes(logits, h, self.attributes, aux)

    def old_names(self) -> dict[str, str]:
        """The submodule paths of 3bf9834's D that have other names now."""
        return {"l_out": "head"}
