"""DCGAN shapes and initialisation, at the seed sizes and as parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facegan.models import build_models, dcgan


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("latent_dim", [100, 128])
def test_shapes_at_every_resolution(resolution, latent_dim):
    G, D = build_models("dcgan", latent_dim, 8, 8, resolution)
    images = G(torch.randn(3, latent_dim))
    assert images.shape == (3, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1  # Tanh
    assert D(images).shape == (3,)


def test_the_seed_architecture_at_64():
    G, D = build_models("dcgan", 100, 64, 64, 64)
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    # BatchNorm everywhere but D's first layer; LeakyReLU(0.2) in D, ReLU in G; no Sigmoid anywhere.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 4
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, nn.Sigmoid) for m in [*G.modules(), *D.modules()])
    assert sum(p.numel() for p in G.parameters()) == 3_576_704  # pytorch/examples' netG at nz=100
    assert sum(p.numel() for p in D.parameters()) == 2_765_568  # and its netD


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    G, D = build_models("dcgan", 100, 64, 64, 64)
    weights = torch.cat([m.weight.flatten() for m in [*G.modules(), *D.modules()] if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert weights.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    bn = [m for m in [*G.modules(), *D.modules()] if isinstance(m, nn.BatchNorm2d)]
    gammas = torch.cat([m.weight.flatten() for m in bn])
    assert gammas.mean().item() == pytest.approx(1.0, abs=2e-3) and gammas.std().item() == pytest.approx(0.02, rel=0.1)
    assert all(torch.all(m.bias == 0) for m in bn)


def test_bad_resolution_and_latent_shape():
    with pytest.raises(ValueError, match="4 times a power of two"):
        dcgan.stages(48)
    G, _ = build_models("dcgan", 100, 8, 8, 32)
    with pytest.raises(AssertionError):
        G(torch.randn(2, 64))
