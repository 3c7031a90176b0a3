"""SNGAN's ResNet: shapes at small widths, Mimicry's parameter counts, spectral norm on all of D."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from facegan.models import MODELS, apply_spectral_norm, build_models, resnet


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_at_every_resolution(resolution):
    G, D = build_models("resnet", 16, 4, 4, resolution)
    images = G(torch.randn(3, 16))
    assert images.shape == (3, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1  # tanh
    assert D(images).shape == (3,)


def test_channels_follow_mimicry():
    # Mimicry's sngan_64 at ndf = ngf = 16 * width; sngan_128 repeats 16w once more at 4x4.
    assert resnet.stage_channels(64, 64) == [1024, 512, 256, 128, 64]
    assert resnet.stage_channels(64, 128) == [1024, 1024, 512, 256, 128, 64]
    assert resnet.stage_channels(8, 32) == [64, 32, 16, 8]
    _, D = build_models("resnet", 16, 4, 4, 128)
    assert [type(b).__name__ for b in D.blocks] == ["DBlockOptimized"] + ["DBlock"] * 5
    assert [b.downsample for b in D.blocks[1:]] == [True, True, True, True, False] and D.blocks[-1].c_sc is None


def test_parameter_counts_match_mimicry_sngan_64():
    # Counted on torch-mimicry 0.1.16's SNGANGenerator64() and SNGANDiscriminator64() (nz=128,
    # ngf = ndf = 1024); at 128 px its sngan_128 gives 32,150,787 and 29,017,857, as ours does.
    G, D = build_models("resnet", 128, 64, 64, 64)
    assert sum(p.numel() for p in G.parameters()) == 12_220_675
    assert sum(p.numel() for p in D.parameters()) == 10_141_441


def test_every_discriminator_weight_is_spectrally_normalised_and_none_of_g():
    G, D = build_models("resnet", 16, 4, 4, 64)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 2 + 1 + 4 * 3 + 1  # optimised block, 4 blocks with shortcuts, the logit
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in G.modules())
    _, D = build_models("resnet", 16, 4, 4, 64, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in D.modules())
    with pytest.raises(ValueError, match="d_norm must be 'none'"):
        build_models("resnet", 16, 4, 4, 64, d_norm="batch")


def test_xavier_initialisation_and_zero_biases():
    torch.manual_seed(0)
    G, _ = build_models("resnet", 16, 16, 16, 32)
    c1 = G.blocks[0].c1  # xavier-uniform with gain sqrt(2): bound sqrt(2) * sqrt(6 / (fan_in + fan_out))
    fan = c1.weight[0].numel() + c1.weight.shape[0] * 9
    bound = 2**0.5 * (6 / fan) ** 0.5
    assert c1.weight.abs().max() <= bound and c1.weight.abs().max() > 0.95 * bound
    assert all(torch.all(m.bias == 0) for m in G.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_forward_backward_in_channels_last():
    # The training loop runs G and D channels_last: it must compute what the contiguous layout does.
    torch.manual_seed(0)
    G, D = build_models("resnet", 16, 4, 4, 32)
    z, reals = torch.randn(4, 16), torch.randn(4, 3, 32, 32)

    def step(G, D, reals):
        fakes = G(z)
        loss = D(reals).mean() - D(fakes).mean()
        loss.backward()
        return fakes, loss, [p.grad for p in [*G.parameters(), *D.parameters()]]

    # Copies made before any forward: spectral norm's power iteration then starts from the same vectors.
    G_last, D_last = (copy.deepcopy(m).to(memory_format=torch.channels_last) for m in (G, D))
    fakes, loss, grads = step(G, D, reals)
    fakes_last, loss_last, grads_last = step(G_last, D_last, reals.contiguous(memory_format=torch.channels_last))
    assert fakes_last.is_contiguous(memory_format=torch.channels_last)  # it really ran channels_last
    assert G_last.blocks[0].c1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(g is not None and torch.isfinite(g).all() for g in grads_last)
    assert any(g.abs().sum() > 0 for g in grads_last)
    # Only the order of the convolutions' sums differs: seen, 3e-6 on the images and 2e-7 on the
    # gradients; a layout mistake would differ by whole units.
    torch.testing.assert_close(fakes_last, fakes, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(loss_last, loss, rtol=1e-3, atol=1e-5)
    for g_last, g in zip(grads_last, grads, strict=True):
        torch.testing.assert_close(g_last, g, rtol=1e-3, atol=1e-5)


def test_spectral_norm_makes_the_largest_singular_value_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 5, 4), nn.Flatten(), nn.LazyLinear(7))
    model(torch.randn(1, 3, 8, 8))  # materialise the lazy layer before normalising it
    with torch.no_grad():
        for m in model:
            if hasattr(m, "weight"):
                m.weight.mul_(10)  # far from 1 to begin with
    apply_spectral_norm(model)
    for _ in range(20):  # train mode: each forward is one more power iteration
        model(torch.randn(2, 3, 8, 8))
    model.eval()
    for m, dim in [(model[0], 0), (model[1], 1), (model[3], 0)]:
        matrix = m.weight.detach().movedim(dim, 0).flatten(1)  # how torch reshapes each kind
        assert torch.linalg.matrix_norm(matrix, ord=2).item() == pytest.approx(1.0, abs=1e-2)
    assert apply_spectral_norm(model) is model  # idempotent: already-normalised layers are left alone
    assert len(model[0].parametrizations.weight) == 1


def test_registry_lists_both_families():
    assert set(MODELS) == {"dcgan", "resnet"}
