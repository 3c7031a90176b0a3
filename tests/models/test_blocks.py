"""Both families' named blocks and their condition c: refused, in one clear sentence, by models built without one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facegan.models import build_models, resnet

FAMILIES = ["dcgan", "resnet"]


@pytest.mark.parametrize("family", FAMILIES)
def test_generator_is_a_projection_upsampling_blocks_and_to_rgb(family):
    G, _ = build_models(family, 8, 4, 4, 32)
    assert [name for name, _ in G.named_children()] == ["project", "blocks", "to_rgb"]
    assert isinstance(G.blocks, nn.ModuleList) and len(G.blocks) == (2 if family == "dcgan" else 3)
    G.eval()  # the same BatchNorm statistics for both passes
    z = torch.randn(2, 8)
    h = G.project(z[:, :, None, None], None) if family == "dcgan" else G.project(z).view(2, -1, 4, 4)
    assert h.shape[2:] == (4, 4)
    for block in G.blocks:
        h = block(h, None)  # every block takes (x, c): the seam for conditional BatchNorm
    assert torch.equal(G.to_rgb(h, None), G(z))


@pytest.mark.parametrize("family", FAMILIES)
def test_discriminator_is_features_then_a_head(family):
    _, D = build_models(family, 8, 4, 4, 32)
    x = torch.randn(3, 3, 32, 32)
    D.eval()  # eval: spectral norm reuses its estimate, so both calls see the same weights
    features = D.features(x)
    # dcgan: the last hidden map, width * 2**(stages - 1) channels at 4x4; resnet: pooled, its last block's channels.
    assert features.shape == ((3, 16, 4, 4) if family == "dcgan" else (3, resnet.stage_channels(4, 32)[0]))
    assert torch.equal(D.head(features).flatten(), D(x))
    assert D(x, None).shape == (3,)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_condition_is_refused_by_models_built_without_one(family):
    G, D = build_models(family, 8, 4, 4, 32)
    c = torch.zeros(2, 40)
    with pytest.raises(ValueError, match="built without conditioning"):
        G(torch.randn(2, 8), c)
    with pytest.raises(ValueError, match="built without conditioning"):
        D(torch.randn(2, 3, 32, 32), c=c)
    with pytest.raises(ValueError, match="built without conditioning"):
        D.features(torch.randn(2, 3, 32, 32), c)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_shapes_are_value_errors_that_name_the_expected_shape(family):
    # ValueError, not assert: `python -O` strips asserts, and then a conv fails deep inside.
    G, D = build_models(family, 8, 4, 4, 32)
    with pytest.raises(ValueError, match=r"expected latent vectors of shape \(B, 8\), got \(2, 16\)"):
        G(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"expected latent vectors of shape \(B, 8\), got \(2, 8, 1, 1\)"):
        G(torch.randn(2, 8, 1, 1))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\), got \(2, 3, 64, 64\)"):
        D(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\), got \(3, 32, 32\)"):
        D.features(torch.randn(3, 32, 32))
