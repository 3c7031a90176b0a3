"""One training step: the D update, then (when due) the G update, on a batch of reals and their labels.

Nothing here reads a value back to the host, so a GPU never waits on the CPU. The models run
under the state's precision (autocast); logits are cast to float32 before any loss, so losses,
penalties, weight gradients and optimizer state are float32. With DiffAugment on, D sees only
augmented images, real and generated alike, in both updates (Zhao et al. 2020).

With --aux-weight, D's attribute head learns the real images' labels (`aux_d`, binary cross-entropy
per attribute) and G is trained to make it see, in G's images, the labels G was given (`aux_g`), as
AC-GAN. D's head learns from real images only, as StarGAN's does: taught on fakes too, it would
learn G's mistakes as well, and ask less of G.

Every random draw (flips, latents, augmentation, the penalty's interpolation) comes from the
state's one noise generator, in a fixed order, so a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from facegan import distributed
from facegan.augment import diff_augment, random_flip
from facegan.config import TrainConfig
from facegan.errors import FaceganWarning
from facegan.losses import LOSSES, gradient_penalty, r1_penalty
from facegan.train.ema import beta_for
from facegan.train.state import TrainState, restore_state

# What a step returns besides the losses and D's logits, when it is on: scalars the loop logs and checks.
EXTRA_TERMS = ("gp", "r1", "aux_d", "aux_g")


def update_discriminator(state: TrainState, reals: torch.Tensor, labels: torch.Tensor | None, config: TrainConfig, *,
             keep_fakes: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One D update on a batch of reals and as many fakes; returns detached results and the fakes.

    With `keep_fakes` the fakes keep G's graph, so the G update that follows reuses them
    (DCGAN's one D step per G step); otherwise they are made without it.
    """
    d_loss, _ = LOSSES[config.loss]
    G, D = state.models
    augment = _augmenter(config, state.noise)
    if config.flip:
        reals = random_flip(reals, state.noise)
    z = torch.randn(len(reals), config.latent_dim, generator=state.noise, device=reals.device)
    lazy_r1 = config.r1_gamma > 0 and state.d_updates % config.r1_every == 0
    # Real and generated images in separate batches, as DCGAN does (BatchNorm per batch).
    with state.precision.autocast():
        with torch.set_grad_enabled(keep_fakes):
            fakes = G(z, labels)
        reals_seen = reals.detach().requires_grad_(lazy_r1)
        real_logits, real_attributes = _judge(D, augment(reals_seen), labels, bool(config.aux_weight))
        real_logits = real_logits.float()
        fake_logits = D(augment(fakes.detach()), labels).float()
    loss_d = d_loss(real_logits, fake_logits)
    total_d, penalties = loss_d, {}
    if real_attributes is not None:
        penalties["aux_d"] = _attribute_loss(real_attributes, labels)
        total_d = total_d + config.aux_weight * penalties["aux_d"]
    # float16 computes the penalties in float32: their second-order gradients underflow otherwise.
    with state.precision.autocast() if not state.scaler.is_enabled() else contextlib.nullcontext():
        if config.gp_weight:
            critic = lambda x: D(augment(x), labels)  # the penalty is on what D is trained on
            penalties["gp"] = gradient_penalty(critic, reals, fakes.detach().float(), state.noise).float()
            total_d = total_d + config.gp_weight * penalties["gp"]
        if lazy_r1:
            # R1 on the images before augmentation, as StyleGAN2-ADA; times the interval for laziness.
            penalties["r1"] = r1_penalty(real_logits, reals_seen).float()
            total_d = total_d + (config.r1_gamma / 2) * config.r1_every * penalties["r1"]
    state.opt_d.zero_grad(set_to_none=True)
    _backward_and_step(total_d, state.opt_d, state.scaler)
    state.d_updates += 1
    out = {"loss_d": loss_d.detach(), "real_logits": real_logits.detach(), "fake_logits": fake_logits.detach(),
           **{name: value.detach() for name, value in penalties.items()}}
    return out, fakes


def update_generator(state: TrainState, fakes: torch.Tensor | None, labels: torch.Tensor | None, config: TrainConfig,
             batch: int) -> dict[str, torch.Tensor]:
    """One G update through the just-updated D, on the D update's fakes or (None) `batch` new ones; then the EMA.

    D's weights are frozen meanwhile: the backward pass then skips their gradients, which this
    update would only throw away (2.48 -> 2.27 GFLOP per image for DCGAN-64).
    """
    _, g_loss = LOSSES[config.loss]
    G, D = state.models
    augment = _augmenter(config, state.noise)
    out = {}
    # Under torchrun D also skips the all-reduce: none of its gradients exist (stylegan2-ada's ddp_sync).
    with frozen(state.discriminator), distributed.no_sync(D):
        with state.precision.autocast():
            if fakes is None:
                z = torch.randn(batch, config.latent_dim, generator=state.noise, device=state.noise.device)
                fakes = G(z, labels)
            logits, attributes = _judge(D, augment(fakes), labels, bool(config.aux_weight))
            loss_g = g_loss(logits.float())
        total_g = loss_g
        if attributes is not None:
            out["aux_g"] = _attribute_loss(attributes, labels)
            total_g = total_g + config.aux_weight * out["aux_g"]
        state.opt_g.zero_grad(set_to_none=True)
        _backward_and_step(total_g, state.opt_g, state.scaler)
    state.step += 1
    if state.ema is not None:
        distributed.average_buffers(state.generator)  # BatchNorm statistics differ per rank: one EMA on every rank
        images = state.step * config.batch_size
        state.ema.update(state.generator, beta_for(config.ema_kimg * 1000, config.batch_size, images, config.ema_rampup))
    return {"loss_g": loss_g.detach(), **{name: value.detach() for name, value in out.items()}}


def train_step(state: TrainState, reals: torch.Tensor, config: TrainConfig, update_g: bool = True,
               labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loop's D update and, when `update_g`, its G update, as one call; returns detached tensors."""
    reuse = update_g and config.d_steps == 1
    out, fakes = update_discriminator(state, reals, labels, config, keep_fakes=reuse)
    if update_g:
        out |= update_generator(state, fakes if reuse else None, labels, config, len(reals))
    state.scaler.update()
    return out


def eager_if_compile_fails(step: Callable[[], dict[str, torch.Tensor]], state: TrainState,
                           config: TrainConfig) -> dict[str, torch.Tensor]:
    """`step()`, compiled models' first training step, where torch.compile builds their kernels.

    Where that fails, the step is undone and trained again without compiling, with a warning, rather
    than the run ending: a compiler bug of one torch version should not cost a run. The run is then
    exactly the run of --compile off (tested).

    Seen on an H200 with torch 2.11.0+cu130: inductor asserts a wrong stride for the channels_last
    weight gradient of DCGAN's first transposed convolution (the latent's 1x1 to 4x4). With that one
    weight contiguous it compiles, but nothing has measured compiling faster than eager there yet.
    """
    before = copy.deepcopy(state.to_checkpoint(config, torch.empty(0)))
    try:
        return step()
    # Dynamo's own errors, inductor's (RuntimeError subclasses) and the asserts of its generated code.
    except (torch._dynamo.exc.TorchDynamoException, RuntimeError, AssertionError) as error:
        restore_state(state, before)
        state.compiled = None
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"
        warnings.warn(FaceganWarning(f"torch.compile failed on this torch ({torch.__version__}) at the first step "
                                     f"({reason}), so the run trains without it, as with --compile off."), stacklevel=2)
        return step()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """The module's parameters need no gradient inside the block (they still pass gradients through)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def _judge(D: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
           aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """D's logits for `images`, and with `aux` its attribute head's logits (else None)."""
    return D(images, labels, aux=True) if aux else (D(images, labels), None)


def _attribute_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of D's attribute logits against the labels, averaged over images and attributes."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def _augmenter(config: TrainConfig, noise: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """DiffAugment with the run's policy, drawing from the run's noise; the identity when off."""
    if not config.augment:
        return lambda x: x
    return lambda x: diff_augment(x, config.augment, noise)


def _backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward and step through the scaler (a pass-through unless float16 is on)."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
