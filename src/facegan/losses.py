"""GAN losses as pure functions of D's logits, chosen by name; gradient penalties beside them.

Each entry is (d_loss(real_logits, fake_logits), g_loss(fake_logits)). Logits, never
probabilities: softplus is BCE on logits computed stably, where Sigmoid + BCELoss saturates.
Only `bce` makes sigmoid(logit) a probability; the other losses' D outputs are scores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def bce_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE for D: -log D(x) - log(1 - D(G(z))), averaged over each batch."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def bce_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating BCE for G: -log D(G(z))."""
    return F.softplus(-fake_logits).mean()


def lsgan_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least squares for D (Mao et al. 2017, a=0, b=c=1): 0.5 E[(D(x)-1)^2] + 0.5 E[D(G(z))^2]."""
    return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()


def lsgan_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least squares for G: 0.5 E[(D(G(z))-1)^2]; its gradient fades only as fakes reach the real target."""
    return 0.5 * (fake_logits - 1).square().mean()


def wgan_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic: E[D(G(z))] - E[D(x)]; needs a Lipschitz D (gradient penalty or SN)."""
    return fake_logits.mean() - real_logits.mean()


def wgan_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Wasserstein (and hinge) generator: -E[D(G(z))]."""
    return -fake_logits.mean()


def hinge_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge for D (Lim & Ye 2017; SNGAN, BigGAN): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


LossPair = tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
LOSSES: dict[str, LossPair] = {
    "bce": (bce_d, bce_g),
    "lsgan": (lsgan_d, lsgan_g),
    "wgan": (wgan_d, wgan_g),
    "hinge": (hinge_d, wgan_g),  # G's hinge loss is the Wasserstein one
}


def gradient_penalty(
    discriminator: nn.Module, reals: torch.Tensor, fakes: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """WGAN-GP's two-sided penalty (Gulrajani et al. 2017): E[(||grad D(x_hat)||_2 - 1)^2].

    x_hat is a uniformly random point on the segment between each real and fake image (one draw
    per image, from `generator`, which must live on the images' device). The graph is kept
    (create_graph=True) so that backward() reaches D's weights. The caller multiplies by the
    weight (lambda = 10 in the paper) and adds it to D's loss; the critic must not use BatchNorm,
    whose batch coupling breaks the per-image gradient the penalty constrains.
    """
    assert reals.shape == fakes.shape and reals.ndim == 4, f"got {tuple(reals.shape)} and {tuple(fakes.shape)}"
    alpha = torch.rand(len(reals), 1, 1, 1, generator=generator, device=reals.device, dtype=reals.dtype)
    x_hat = torch.lerp(fakes.detach(), reals.detach(), alpha).requires_grad_(True)
    (grads,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return (grads.flatten(1).norm(2, dim=1) - 1).square().mean()


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018) as StyleGAN2 computes it: E_x[ ||grad_x D(x)||_2^2 ].

    The squared gradient norm is summed over each image's pixels and channels and averaged over
    the batch; no factor 1/2 is applied here. `reals` must have had requires_grad set before D
    was run on them (real_logits = D(reals)). The caller multiplies by gamma / 2 and, with lazy
    regularisation every k D steps, also by k (StyleGAN2: gamma ~ 0.01-10 depending on the data,
    k = 16). The graph is kept so that backward() reaches D's weights.
    """
    assert reals.requires_grad, "set reals.requires_grad_(True) before computing D(reals)"
    (grads,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
    return grads.square().flatten(1).sum(1).mean()
