"""--aux-weight: D's attribute head (AC-GAN) learns the real images' labels, and G learns to show its own."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_ARGS, run_cli, tiny

from facegan.config import TrainConfig, from_preset, validate
from facegan.errors import FaceganError
from facegan.models import build_models
from facegan.train.state import build_state
from facegan.train.step import train_step, update_discriminator

FAMILIES = ("dcgan", "resnet")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_head_gives_a_logit_per_attribute_and_leaves_the_logits_alone(family):
    torch.manual_seed(0)
    G, D = build_models(family, 8, 8, 8, 32, num_attributes=3, aux_classifier=True)
    _, plain = build_models(family, 8, 8, 8, 32, num_attributes=3)
    missing, unexpected = plain.load_state_dict(D.state_dict(), strict=False)
    assert not missing and unexpected and all(".attributes." in name or name.startswith("attributes.") for name in unexpected)
    D.eval(), plain.eval()
    c = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    x = G(torch.randn(2, 8), c).detach()
    logits, attributes = D(x, c, aux=True)
    assert logits.shape == (2,) and attributes.shape == (2, 3)
    torch.testing.assert_close(logits, plain(x, c))
    torch.testing.assert_close(D(x, c), logits)
    with pytest.raises(ValueError, match="without an attribute head"):
        plain(x, c, aux=True)


def test_an_unconditional_discriminator_has_no_head():
    _, D = build_models("dcgan", 8, 8, 8, 32, aux_classifier=True)  # nothing to classify: no head is built
    assert not any("attributes" in name for name, _ in D.named_parameters())
    with pytest.raises(ValueError, match="without an attribute head"):
        D(torch.zeros(1, 3, 32, 32), aux=True)


def test_aux_weight_needs_a_condition_and_a_sensible_weight(tmp_path, data32, capsys):
    with pytest.raises(FaceganError, match="needs --condition"):
        from_preset("fast", aux_weight=1.0)
    with pytest.raises(FaceganError, match="aux-weight must be 0"):
        from_preset("fast", condition=("Smiling",), aux_weight=-1.0)
    result = run_cli(["train", "--data", str(data32), "--aux-weight", "1", "--runs-dir", str(tmp_path / "runs"),
                      *TINY_ARGS], capsys)
    assert result.code == 1 and result.err.count("\n") == 1 and "needs --condition" in result.err


def test_a_conditional_run_has_the_head_unless_told_otherwise():
    assert from_preset("fast", condition=("Smiling",)).aux_weight == 1.0
    assert from_preset("fast", condition=("Smiling",), aux_weight=0.0).aux_weight == 0.0
    assert from_preset("fast", condition=("Smiling",), aux_weight=0.5).aux_weight == 0.5
    assert from_preset("fast").aux_weight == 0.0
    # A configuration written before the head existed has none (None), so its checkpoints load as they were.
    saved = from_preset("fast", condition=("Smiling",)).to_dict()
    del saved["aux_weight"]
    old = TrainConfig.from_dict(saved)
    validate(old)
    _, D = build_state(old, 32, torch.device("cpu")).models
    assert old.aux_weight is None and D.attributes is None


def _labelled_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose two attributes anyone can read: red or blue (the first), bright top half or bottom (the second)."""
    labels = torch.randint(0, 2, (n, 2), generator=generator).float()
    images = torch.full((n, 3, 8, 8), -0.5)
    red = labels[:, 0].bool()
    images[red, 0] = 0.8
    images[~red, 2] = 0.8
    top = labels[:, 1].bool()
    images[top, :, :4] += 0.4
    images[~top, :, 4:] += 0.4
    return images + 0.05 * torch.randn(images.shape, generator=generator), labels


def _shows(images: torch.Tensor) -> torch.Tensor:
    """The attributes images show, by the rule that made the real ones."""
    red = images[:, 0].mean(dim=(1, 2)) > images[:, 2].mean(dim=(1, 2))
    top = images[:, :, :4].mean(dim=(1, 2, 3)) > images[:, :, 4:].mean(dim=(1, 2, 3))
    return torch.stack([red, top], dim=1).float()


def _state(aux_weight: float):
    config = from_preset("fast", condition=("Red", "Top"), aux_weight=aux_weight, g_width=8, d_width=8,
                         batch_size=32, device="cpu", lr_g=1e-3, lr_d=1e-3)
    return config, build_state(config, 8, torch.device("cpu"))


def test_the_head_learns_the_real_labels(one_thread):
    config, state = _state(1.0)
    data = torch.Generator().manual_seed(1)
    for _ in range(120):
        out, _ = update_discriminator(state, *_labelled_batch(32, data), config, keep_fakes=False)
    assert float(out["aux_d"]) < 0.2  # from log 2 = 0.69 at the start
    state.discriminator.eval()
    images, labels = _labelled_batch(256, data)
    with torch.no_grad():
        _, attributes = state.discriminator(images, labels, aux=True)
    accuracy = ((attributes > 0).float() == labels).float().mean(dim=0)
    assert (accuracy > 0.95).all(), accuracy


def test_g_comes_to_show_what_it_is_asked_for(one_thread):
    """The same short run with and without the head. Both learn the colour at once; the layout (bright top
    or bottom) only the run whose G is asked by D's head to show it."""
    shown = {}
    for weight in (0.0, 2.0):
        config, state = _state(weight)
        data = torch.Generator().manual_seed(2)
        for _ in range(400):
            reals, labels = _labelled_batch(32, data)
            out = train_step(state, reals, config, labels=labels)
        if weight:
            assert {"aux_d", "aux_g"} <= set(out) and float(out["aux_g"]) < 0.4  # log 2 = 0.69 at the start
        asked = torch.randint(0, 2, (512, 2), generator=torch.Generator().manual_seed(3)).float()
        state.generator.eval()
        with torch.no_grad():
            images = state.generator(torch.randn(512, config.latent_dim, generator=torch.Generator().manual_seed(4)), asked)
        shown[weight] = (_shows(images) == asked).float().mean(dim=0).tolist()  # [red, top]
    assert shown[0.0][0] > 0.95 and shown[2.0][0] > 0.95, shown
    assert shown[0.0][1] < 0.6 and shown[2.0][1] > 0.8, shown  # a coin toss without the head


def test_resume_refuses_another_aux_weight(tmp_path, data32, capsys, one_thread):
    from facegan.train.loop import train

    run = train(tiny(tmp_path, data32, condition=("Smiling",), aux_weight=1.0, epochs=1), progress=False)
    stats = (run / "stats.jsonl").read_text().splitlines()
    assert '"aux_d"' in stats[-1] and '"aux_g"' in stats[-1]
    result = run_cli(["train", "--resume", str(run), "--aux-weight", "0.5", "--epochs", "2", *TINY_ARGS], capsys)
    assert result.code == 1 and "different aux_weight" in result.err
