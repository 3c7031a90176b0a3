"""`facegan train`'s options come from TrainConfig's fields, and every choice list from its registry."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from facegan import augment, losses, models, precision
from facegan.cli import build_parser, main
from facegan.config import COMPILE_MODES, PRESETS, TrainConfig, from_preset
from facegan.errors import FaceganError
from facegan.models import dcgan
from facegan.train import schedule

# Every flag of `facegan train` before its options were generated, and the field each sets.
TODAYS_FIELD_FLAGS = {
    "--data": "data", "--condition": "condition", "--balance": "balance", "--epochs": "epochs", "--batch-size": "batch_size", "--latent-dim": "latent_dim",
    "--g-width": "g_width", "--d-width": "d_width", "--lr-g": "lr_g", "--lr-d": "lr_d", "--seed": "seed",
    "--device": "device", "--sync-bn": "sync_bn", "--runs-dir": "runs_dir", "--precision": "precision", "--compile": "compile",
    "--synthetic-count": "synthetic_count", "--checkpoint-every": "checkpoint_every_epochs",
    "--checkpoint-steps": "checkpoint_every_steps", "--log-every": "log_every", "--max-rollbacks": "max_rollbacks",
    "--rollback-lr-factor": "rollback_lr_factor", "--model": "model", "--loss": "loss", "--d-steps": "d_steps",
    "--gp-weight": "gp_weight", "--r1-gamma": "r1_gamma", "--d-norm": "d_norm", "--spectral-norm": "spectral_norm",
    "--ema-kimg": "ema_kimg", "--augment": "augment", "--flip": "flip", "--lr-schedule": "lr_schedule",
    "--lr-decay-start": "lr_decay_start", "--eval-every": "eval_every", "--eval": "evaluate",
    # Added since (issue 18): a CPU-time budget, and a reference for --eval-every other than the training data.
    "--max-cpu-minutes": "max_cpu_minutes", "--eval-data": "eval_data",
    # (issue 15): D's attribute head, AC-GAN's auxiliary classifier.
    "--aux-weight": "aux_weight",
}
CLI_ONLY = {"-h", "--preset", "--resume", "--lr", "--beta1", "--beta2", "--quiet"}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def _train_actions() -> list[argparse.Action]:
    return _subparser(build_parser(), "train")._actions


def _action(flag: str, command: str = "train") -> argparse.Action:
    return next(a for a in _subparser(build_parser(), command)._actions if flag in a.option_strings)


def _help(flag: str, command: str = "train") -> str:
    """An option's help as `--help` shows it (choices and registry names filled in)."""
    parser = _subparser(build_parser(), command)
    action = next(a for a in parser._actions if flag in a.option_strings)
    return parser._get_formatter()._expand_help(action)


def _option_fields() -> list[dataclasses.Field]:
    return [field for field in dataclasses.fields(TrainConfig) if "help" in field.metadata]


def test_the_flags_are_todays():
    flags = {a.option_strings[0]: a.dest for a in _train_actions()}
    assert {flag: dest for flag, dest in flags.items() if flag not in CLI_ONLY} == TODAYS_FIELD_FLAGS
    assert set(flags) - set(TODAYS_FIELD_FLAGS) == CLI_ONLY
    assert {field.name for field in _option_fields()} == set(TODAYS_FIELD_FLAGS.values())


def test_every_option_field_has_exactly_one_flag_whose_help_names_its_default():
    actions = _train_actions()
    for field in _option_fields():
        (action,) = [a for a in actions if a.dest == field.name]
        assert action.default is None, field.name  # an unset flag leaves the preset's value
        default = field.default
        if default is None:
            expected = f"(default: {field.metadata['unset']})"
        elif isinstance(default, bool):
            expected = f"(default {'on' if default else 'off'})"
        else:
            expected = f"(default {'none' if default in ('', ()) else f'{default:g}' if isinstance(default, float) else default})"
        assert _help(action.option_strings[0]).endswith(expected), (field.name, _help(action.option_strings[0]))
    assert _help("--epochs") == "epochs in total (default 5)"
    assert _help("--checkpoint-every").endswith("0 = latest only (default 1)")
    assert _help("--lr") == "learning rate of both G and D (default 0.0002)"
    assert _help("--beta2") == "Adam beta2 (default 0.999)"
    assert _help("--flip").endswith("(default off)") and _help("--augment").endswith("(default none)")


def test_the_help_takes_defaults_from_the_dataclass(monkeypatch):
    epochs = next(field for field in dataclasses.fields(TrainConfig) if field.name == "epochs")
    monkeypatch.setattr(epochs, "default", 9)
    assert _help("--epochs") == "epochs in total (default 9)"


def _value(field: dataclasses.Field) -> tuple[list[str], object]:
    """Arguments that set `field`, and the value they give it."""
    meta = field.metadata
    if meta.get("type") == "bool":
        return [], True
    if "choices" in meta:
        return [meta["choices"]()[-1]], meta["choices"]()[-1]
    return {"positive": (["3"], 3), "natural": (["2"], 2), "float": (["0.25"], 0.25),
            "names": (["x, y"], ("x", "y"))}.get(meta.get("type"), (["x"], "x"))


@pytest.mark.parametrize("field", _option_fields(), ids=lambda field: field.name)
def test_each_flag_sets_its_field(field):
    flag = next(a.option_strings[0] for a in _train_actions() if a.dest == field.name)
    arguments, value = _value(field)
    assert getattr(build_parser().parse_args(["train", flag, *arguments]), field.name) == value


@pytest.fixture
def trained(monkeypatch) -> list[TrainConfig]:
    """The configs `facegan train` would train (the loop itself replaced)."""
    from facegan.train import loop

    configs = []
    monkeypatch.setattr(loop, "train", lambda config, resume=None, progress=True: configs.append(config))
    return configs


def _train(argv: list[str], trained: list[TrainConfig]) -> TrainConfig:
    assert main(["train", *argv, "--quiet"]) == 0
    return trained.pop()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--checkpoint-every", "3"], {"checkpoint_every_epochs": 3}),
        (["--checkpoint-steps", "50"], {"checkpoint_every_steps": 50}),
        (["--eval-every", "2", "--eval", "kid2k"], {"eval_every": 2, "evaluate": "kid2k"}),
        (["--lr", "1e-3"], {"lr_g": 1e-3, "lr_d": 1e-3}),
        (["--lr", "1e-3", "--lr-d", "4e-4"], {"lr_g": 1e-3, "lr_d": 4e-4}),
        (["--beta2", "0.99"], {"betas": (0.5, 0.99)}),
        (["--preset", "wgan-gp", "--beta1", "0.1"], {"betas": (0.1, 0.9)}),
        (["--preset", "facegan", "--no-flip"], {"flip": False, "ema_kimg": 10.0}),
        (["--spectral-norm", "--d-norm", "none"], {"spectral_norm": True, "d_norm": "none"}),
        (["--augment", "color,cutout", "--lr-schedule", "cosine"], {"augment": "color,cutout", "lr_schedule": "cosine"}),
    ],
)
def test_a_flag_reaches_the_config(trained, argv, expected):
    config = _train(argv, trained)
    assert {name: getattr(config, name) for name in expected} == expected


@pytest.mark.parametrize("preset", PRESETS)
def test_unset_flags_leave_a_presets_values_alone(trained, preset):
    assert _train(["--preset", preset], trained) == from_preset(preset)
    assert _train(["--preset", preset, "--epochs", "2"], trained) == from_preset(preset, epochs=2)


def test_unset_flags_leave_a_resumed_runs_config_alone(trained, tmp_path):
    saved = from_preset("sngan", epochs=7, checkpoint_every_epochs=0, flip=True, eval_every=3)
    saved.save(tmp_path / "config.json")
    assert _train(["--resume", str(tmp_path)], trained) == saved
    assert _train(["--resume", str(tmp_path), "--epochs", "9"], trained) == dataclasses.replace(saved, epochs=9)


def test_the_choices_are_the_registries():
    registries = {"--model": models.MODELS, "--loss": losses.LOSSES, "--d-norm": dcgan.NORMS,
                  "--lr-schedule": schedule.SCHEDULES, "--precision": precision.PRECISIONS, "--compile": COMPILE_MODES}
    for flag, registry in registries.items():
        assert tuple(_action(flag).choices) == tuple(registry), flag
    assert tuple(_action("--precision", "sample").choices) == precision.PRECISIONS
    assert ",".join(augment.POLICIES) in _help("--augment")


def test_a_name_added_to_a_registry_is_a_valid_choice_everywhere(monkeypatch, trained, capsys):
    monkeypatch.setitem(losses.LOSSES, "relativistic", losses.LOSSES["hinge"])
    assert _train(["--loss", "relativistic"], trained).loss == "relativistic"
    with pytest.raises(FaceganError, match="unknown loss 'ragan'; choose one of bce, lsgan, wgan, hinge, relativistic."):
        from_preset("dcgan", loss="ragan")

    monkeypatch.setattr(precision, "PRECISIONS", (*precision.PRECISIONS, "fp8"))
    assert build_parser().parse_args(["train", "--precision", "fp8"]).precision == "fp8"
    assert build_parser().parse_args(["sample", "run", "--out", "x.png", "--precision", "fp8"]).precision == "fp8"
    with pytest.raises(FaceganError, match="precision must be auto, fp32, bf16, fp16 or fp8, not 'fp4'."):
        from_preset("dcgan", precision="fp4")

    monkeypatch.setattr(schedule, "SCHEDULES", (*schedule.SCHEDULES, "step"))
    assert from_preset("dcgan", lr_schedule="step").lr_schedule == "step"
    with pytest.raises(FaceganError, match="lr-schedule must be constant, linear, cosine or step, not 'exp'."):
        from_preset("dcgan", lr_schedule="exp")

    monkeypatch.setitem(augment.POLICIES, "noise", ())
    assert from_preset("dcgan", augment="color,noise").augment == "color,noise"
    assert "color,translation,cutout,noise" in _help("--augment")
    with pytest.raises(FaceganError, match="augment is a comma-separated subset of color,translation,cutout,noise."):
        from_preset("dcgan", augment="blur")

    with pytest.raises(SystemExit):
        main(["train", "--d-norm", "group"])
    err = capsys.readouterr().err
    assert "invalid choice: 'group'" in err and all(name in err for name in dcgan.NORMS)
