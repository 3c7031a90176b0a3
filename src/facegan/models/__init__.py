"""Model families by name: each builds a (generator, discriminator) pair from a config.

Every builder takes (latent_dim, g_width, d_width, resolution), two options for D, each None
for the family's own choice: `d_norm` ("batch", "layer" or "none") and `spectral_norm`, and
`num_attributes`: 0 for unconditional models, K for G(z, c) and D(x, c) conditioned on K attributes,
and `aux_classifier`: whether a conditional D also has an attribute head (`D(x, c, aux=True)`).
DCGAN defaults to BatchNorm without spectral normalisation (the paper), ResNet to no
normalisation layer with spectral normalisation (SNGAN).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from facegan.models import dcgan, resnet

SN_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalise the weight of every Conv2d, ConvTranspose2d and Linear in `module`.

    Call it after initialisation: registration runs 15 power iterations on the weights as they
    are, then each forward in train mode runs one more; eval mode reuses the last estimate.
    The weights' parameters become `<layer>.parametrizations.weight.original`.
    """
    for layer in list(module.modules()):
        if isinstance(layer, SN_LAYERS) and not parametrize.is_parametrized(layer, "weight"):
            _spectral_norm(layer)  # dim 1 for transposed convolutions, 0 otherwise (torch's choice)
    return module


def build_dcgan(
    latent_dim: int, g_width: int, d_width: int, resolution: int, *, d_norm: str | None = None, spectral_norm: bool | None = None,
    num_attributes: int = 0, aux_classifier: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """DCGAN G and D, initialised as the paper says; D optionally spectrally normalised."""
    generator = dcgan.Generator(latent_dim, g_width, resolution, num_attributes)
    discriminator = dcgan.Discriminator(d_width, resolution, norm=d_norm or "batch", num_attributes=num_attributes,
                                        aux_classifier=aux_classifier)
    generator.apply(dcgan.init_weights)
    discriminator.apply(dcgan.init_weights)
    if spectral_norm:
        apply_spectral_norm(discriminator)
    return generator, discriminator


def build_resnet(
    latent_dim: int, g_width: int, d_width: int, resolution: int, *, d_norm: str | None = None, spectral_norm: bool | None = None,
    num_attributes: int = 0, aux_classifier: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """SNGAN's ResNet G and D (xavier-initialised); D spectrally normalised unless told not to."""
    if d_norm not in (None, "none"):
        raise ValueError(f"the resnet discriminator has no normalisation layers; d_norm must be 'none', not {d_norm!r}")
    generator = resnet.Generator(latent_dim, g_width, resolution, num_attributes)
    discriminator = resnet.Discriminator(d_width, resolution, num_attributes, aux_classifier)
    if spectral_norm is None or spectral_norm:
        apply_spectral_norm(discriminator)
    return generator, discriminator


Builder = Callable[..., tuple[nn.Module, nn.Module]]
MODELS: dict[str, Builder] = {"dcgan": build_dcgan, "resnet": build_resnet}


def build_models(
    name: str,
    latent_dim: int,
    g_width: int,
    d_width: int,
    resolution: int,
    *,
    d_norm: str | None = None,
    spectral_norm: bool | None = None,
    num_attributes: int = 0,
    aux_classifier: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """The (G, D) pair of a model family, conditioned on `num_attributes` attributes (0: none), D with an
    attribute head when `aux_classifier`; None options take the family's defaults."""
    return MODELS[name](latent_dim, g_width, d_width, resolution, d_norm=d_norm, spectral_norm=spectral_norm,
                        num_attributes=num_attributes, aux_classifier=aux_classifier)
