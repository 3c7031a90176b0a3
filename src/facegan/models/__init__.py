"""Model families by name: each builds a (generator, discriminator) pair from a config."""

from __future__ import annotations

from torch import nn

from facegan.models import dcgan


def build_dcgan(latent_dim: int, g_width: int, d_width: int, resolution: int) -> tuple[nn.Module, nn.Module]:
    """DCGAN G and D, initialised as the paper says."""
    generator = dcgan.Generator(latent_dim, g_width, resolution)
    discriminator = dcgan.Discriminator(d_width, resolution)
    generator.apply(dcgan.init_weights)
    discriminator.apply(dcgan.init_weights)
    return generator, discriminator


MODELS = {"dcgan": build_dcgan}


def build_models(name: str, latent_dim: int, g_width: int, d_width: int, resolution: int) -> tuple[nn.Module, nn.Module]:
    """The (G, D) pair of a model family."""
    return MODELS[name](latent_dim, g_width, d_width, resolution)
