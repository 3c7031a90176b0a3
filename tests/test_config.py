"""Configuration: presets, validation, JSON round trip, what a resume may change."""

from __future__ import annotations

import pytest

from facegan.config import LIMITS, TrainConfig, changed_on_resume, from_preset
from facegan.errors import FaceganError


def test_the_dcgan_preset_is_the_seeds_recipe():
    config = from_preset("dcgan")
    assert (config.latent_dim, config.g_width, config.d_width, config.batch_size) == (100, 64, 64, 128)
    assert (config.lr_g, config.lr_d, config.betas, config.loss) == (2e-4, 2e-4, (0.5, 0.999), "bce")


def test_json_round_trip(tmp_path):
    config = from_preset("dcgan", epochs=7, latent_dim=128)
    config.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr_g": -1e-4}, "lr-g must be a positive number"),
        ({"lr_d": float("nan")}, "lr-d must be a positive number"),
        ({"batch_size": 0}, "batch-size must be a positive number"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
        ({"betas": (0.5, 1.5)}, "betas must be two numbers"),
        ({"device": "tpu"}, "device must be auto"),
        ({"resolution": 48}, "resolution must be a power of two"),
        ({"loss": "hinge2"}, "unknown loss"),
        ({"checkpoint_every_epochs": -1}, "checkpoint-every-epochs must be 0 or more"),
    ],
)
def test_nonsense_is_refused_in_one_sentence(overrides, message):
    with pytest.raises(FaceganError, match=message):
        from_preset("dcgan", **overrides)


def test_unknown_preset_and_keys():
    with pytest.raises(FaceganError, match="unknown preset 'stylegan9'"):
        from_preset("stylegan9")
    with pytest.raises(FaceganError, match="unknown configuration keys: colour"):
        TrainConfig.from_dict({"colour": "blue"})


def test_what_a_resume_may_change():
    saved = from_preset("dcgan")
    assert changed_on_resume(saved, from_preset("dcgan", epochs=50, device="cpu")) == []
    assert changed_on_resume(saved, from_preset("dcgan", latent_dim=128, batch_size=64)) == ["latent_dim", "batch_size"]


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("latent_dim", 100_000_000, r"latent-dim 100,000,000 is more than facegan allows \(4,096\)"),
    ("g_width", 1_000_000, r"g-width 1,000,000 is more than facegan allows \(1,024\)"),
    ("d_width", 1_025, r"d-width 1,025 is more than facegan allows \(1,024\)"),
    ("grid_size", 10_000, r"grid-size 10,000 is more than facegan allows \(1,024\)"),
])
def test_sizes_that_cannot_fit_are_refused_before_anything_is_built(setting, value, message):
    with pytest.raises(FaceganError, match=message):
        from_preset("dcgan", **{setting: value})
    assert getattr(from_preset("dcgan", **{setting: LIMITS[setting]}), setting) == LIMITS[setting]  # the limit itself is allowed
