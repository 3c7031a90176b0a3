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
    G, D = build_models("dcgan", 100, 8, 8, 32)
    with pytest.raises(ValueError, match=r"expected latent vectors of shape \(B, 100\), got \(2, 64\)"):
        G(torch.randn(2, 64))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\), got \(2, 3, 64, 64\)"):
        D(torch.randn(2, 3, 64, 64))


def test_default_options_build_exactly_the_seed_models():
    torch.manual_seed(0)
    default = build_models("dcgan", 100, 8, 8, 32)
    torch.manual_seed(0)
    explicit = build_models("dcgan", 100, 8, 8, 32, d_norm="batch", spectral_norm=False)
    for a, b in zip(default, explicit):
        assert list(a.state_dict()) == list(b.state_dict())
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert [name for name, _ in default[1].named_parameters()] == [
        "blocks.0.conv.weight", "blocks.1.conv.weight", "blocks.1.norm.weight", "blocks.1.norm.bias",
        "blocks.2.conv.weight", "blocks.2.norm.weight", "blocks.2.norm.bias", "head.weight",
    ]


@pytest.mark.parametrize("norm, layer", [("none", None), ("layer", nn.GroupNorm), ("batch", nn.BatchNorm2d)])
def test_discriminator_norm_options(norm, layer):
    _, D = build_models("dcgan", 100, 8, 8, 32, d_norm=norm)
    norms = [m for m in D.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(norms) == (0 if layer is None else 2) and all(isinstance(m, layer) for m in norms)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == (norm == "none") for c in convs)  # biases only where nothing else shifts
    # Without batch statistics each image's logit is its own: it does not change with its batch-mates.
    x = torch.randn(4, 3, 32, 32)
    if norm != "batch":
        torch.testing.assert_close(D(x)[:2], D(x[:2]))
    with pytest.raises(ValueError, match="norm must be one of"):
        dcgan.Discriminator(8, 32, norm="instance")


def test_spectral_norm_option_wraps_every_discriminator_convolution_after_init():
    torch.manual_seed(0)
    _, D = build_models("dcgan", 100, 8, 8, 32, d_norm="none", spectral_norm=True)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(hasattr(c, "parametrizations") for c in convs)
    # The paper's N(0, 0.02) initialisation reached the underlying weights, not a temporary.
    originals = torch.cat([c.parametrizations.weight.original.flatten() for c in convs])
    assert originals.std().item() == pytest.approx(0.02, rel=0.1)
    D(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(c.parametrizations.weight.original.grad is not None for c in convs)
