"""The models with named blocks compute exactly what 3bf9834's did, and load what it saved.

Two references. tests/models/old/dcgan.py and resnet.py are 3bf9834's src/facegan/models/dcgan.py
and resnet.py, copied unchanged (old resnet imports `stages` from today's dcgan.py, which is
unchanged): built side by side in one process, the old and new models are compared bit for bit.
The files tests/models/old/*.pt and *_generator.safetensors were written by that commit's own
code, by tests/models/old/make_old_files.py (its docstring says exactly how and what they hold),
with OMP_NUM_THREADS=1 on an x86-64 CPU; those are loaded into today's models. Tensors that are
only copied (loaded weights) must match them exactly; computed ones (outputs, gradients, the
buffers a pass moves) to 1e-5 (CLOSE), because another thread count or CPU runs the convolution
and matrix kernels (oneDNN, BLAS) with their sums in another order. On the machine that wrote
them, with one thread, they match exactly; with two threads, differences of up to 1.5e-6 were
seen (the batch-of-2 BatchNorms amplify them), so 1e-6 would be too tight.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from facegan.generation import load_generator
from facegan.models import apply_spectral_norm, build_models
from facegan.train.ema import EMA

OLD = Path(__file__).resolve().parent / "old"
CLOSE = {"rtol": 1e-5, "atol": 1e-5}


def _old_module(name: str):
    spec = importlib.util.spec_from_file_location(f"old_{name}", OLD / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


old_dcgan, old_resnet = _old_module("dcgan"), _old_module("resnet")


def build_old(family: str, latent_dim: int, width: int, resolution: int, d_norm=None, spectral_norm=None):
    """3bf9834's build_dcgan / build_resnet (models/__init__.py), with that commit's classes."""
    if family == "dcgan":
        G, D = old_dcgan.Generator(latent_dim, width, resolution), old_dcgan.Discriminator(width, resolution, norm=d_norm or "batch")
        G.apply(old_dcgan.init_weights)
        D.apply(old_dcgan.init_weights)
        if spectral_norm:
            apply_spectral_norm(D)
    else:
        G, D = old_resnet.Generator(latent_dim, width, resolution), old_resnet.Discriminator(width, resolution)
        if spectral_norm is None or spectral_norm:
            apply_spectral_norm(D)
    return G, D


def renamed(model: nn.Module, key: str) -> str:
    """An old state-dict key as `model` names it now."""
    for old, new in model.old_names().items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    return key


def one_pass(G: nn.Module, D: nn.Module, z: torch.Tensor, x: torch.Tensor) -> dict:
    """What make_old_files.py records of a train-mode pass, then G(z) and D(x) in eval mode."""
    fakes = G(z)
    fake_logits, real_logits = D(fakes), D(x)
    (fake_logits.mean() - real_logits.mean()).backward()
    record = {"fakes": fakes.detach(), "fake_logits": fake_logits.detach(), "real_logits": real_logits.detach(),
              "generator_grads": [p.grad for p in G.parameters()], "discriminator_grads": [p.grad for p in D.parameters()]}
    G.eval(), D.eval()
    with torch.no_grad():
        record.update(eval_images=G(z), eval_logits=D(x))
    G.train(), D.train()
    return record


def assert_equal_lists(actual: list, expected: list, close: bool = False) -> None:
    """Tensors equal one by one, bit for bit, or to CLOSE with `close`."""
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        if close:
            torch.testing.assert_close(a, b, **CLOSE)
        else:
            assert torch.equal(a, b)


CONFIGS = [
    ("dcgan", 32, {}),
    ("dcgan", 8, {}),  # no upsampling block: the projection, then the last layer
    ("dcgan", 32, {"d_norm": "layer"}),
    ("dcgan", 32, {"d_norm": "none", "spectral_norm": True}),  # no norm layers: the old indices shift
    ("dcgan", 32, {"spectral_norm": True}),
    ("resnet", 32, {}),
    ("resnet", 64, {"spectral_norm": False}),
]


@pytest.mark.parametrize("family, resolution, options", CONFIGS)
def test_same_weights_order_outputs_and_gradients_as_3bf9834(family, resolution, options):
    torch.manual_seed(0)
    old = build_old(family, 8, 4, resolution, **options)
    torch.manual_seed(0)
    new = build_models(family, 8, 4, 4, resolution, **options)
    for old_model, new_model in zip(old, new):
        # The same names, in the same order (saved optimizer states are indexed by it), and values.
        assert [name for name, _ in new_model.named_parameters()] == [renamed(new_model, n) for n, _ in old_model.named_parameters()]
        assert list(new_model.state_dict()) == [renamed(new_model, key) for key in old_model.state_dict()]
        assert_equal_lists(list(new_model.state_dict().values()), list(old_model.state_dict().values()))
    z, x = torch.randn(3, 8), torch.randn(3, 3, resolution, resolution)
    before, after = one_pass(*old, z, x), one_pass(*new, z, x)
    for key in before:
        assert_equal_lists(after[key] if isinstance(after[key], list) else [after[key]],
                           before[key] if isinstance(before[key], list) else [before[key]])
    for old_model, new_model in zip(old, new):  # BatchNorm statistics and spectral norm's vectors moved alike
        assert_equal_lists(list(new_model.state_dict().values()), list(old_model.state_dict().values()))


@pytest.mark.parametrize("family, resolution, options", CONFIGS)
def test_state_dicts_of_3bf9834_load(family, resolution, options):
    torch.manual_seed(0)
    old = build_old(family, 8, 4, resolution, **options)
    z, x = torch.randn(3, 8), torch.randn(3, 3, resolution, resolution)
    expected = one_pass(*old, z, x)  # moves the buffers away from their initial values
    torch.manual_seed(1)  # other weights than the old ones
    new = build_models(family, 8, 4, 4, resolution, **options)
    for old_model, new_model in zip(old, new):
        new_model.load_state_dict(old_model.state_dict())  # strict: every key found a place
        assert_equal_lists(list(new_model.state_dict().values()), list(old_model.state_dict().values()))
        new_model.eval()
    with torch.no_grad():
        assert torch.equal(new[0](z), expected["eval_images"]) and torch.equal(new[1](x), expected["eval_logits"])


def test_new_state_dicts_load_unchanged_and_nested_old_ones_too():
    torch.manual_seed(0)
    G, D = build_models("dcgan", 8, 4, 4, 32, spectral_norm=True)
    torch.manual_seed(1)
    G2, D2 = build_models("dcgan", 8, 4, 4, 32, spectral_norm=True)
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    assert_equal_lists(list(D2.state_dict().values()), list(D.state_dict().values()))
    # Under a prefix (a wrapper module), old keys are renamed below the prefix only.
    torch.manual_seed(0)
    _, old_D = build_old("dcgan", 8, 4, 32, spectral_norm=True)
    wrapper = nn.ModuleDict({"main": D2})  # a prefix that looks like an old key's start
    wrapper.load_state_dict({f"main.{key}": value for key, value in old_D.state_dict().items()})
    assert_equal_lists(list(D2.state_dict().values()), list(old_D.state_dict().values()))


FILES = ["dcgan", "dcgan_sn", "resnet"]


def old_file(name: str) -> dict:
    return torch.load(OLD / f"{name}.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", FILES)
def test_old_files_hold_what_todays_models_compute(name):
    saved = old_file(name)
    torch.manual_seed(0)
    G, D = build_models(saved["options"]["name"], 8, 4, 4, 16, spectral_norm=saved["options"].get("spectral_norm"))
    for model, role in [(G, "generator"), (D, "discriminator")]:
        old_names = saved[f"{role}_parameters"]
        assert [name for name, _ in model.named_parameters()] == [renamed(model, n) for n in old_names]
        # A pass does not change parameters: the saved ones are the initial ones.
        assert_equal_lists(list(model.parameters()), [saved[role][n] for n in old_names], close=True)
    computed = one_pass(G, D, saved["z"], saved["x"])
    for key, value in computed.items():
        assert_equal_lists(value if isinstance(value, list) else [value], saved[key] if isinstance(value, list) else [saved[key]],
                           close=True)
    for model, role in [(G, "generator"), (D, "discriminator")]:
        assert list(model.state_dict()) == [renamed(model, key) for key in saved[role]]
        assert_equal_lists(list(model.state_dict().values()), list(saved[role].values()), close=True)


@pytest.mark.parametrize("name", FILES)
def test_old_files_load_into_todays_models_and_the_ema(name):
    saved = old_file(name)
    torch.manual_seed(1)  # other weights than the saved ones
    G, D = build_models(saved["options"]["name"], 8, 4, 4, 16, spectral_norm=saved["options"].get("spectral_norm"))
    ema = EMA(G)  # a deep copy of G, as the training loop makes before resuming into it
    G.load_state_dict(saved["generator"])
    D.load_state_dict(saved["discriminator"])
    ema.load_state_dict(saved["generator"])
    for model, role in [(G, "generator"), (D, "discriminator"), (ema.module, "generator")]:
        assert_equal_lists([model.state_dict()[renamed(model, key)] for key in saved[role]], list(saved[role].values()))
        model.eval()
    with torch.no_grad():
        torch.testing.assert_close(G(saved["z"]), saved["eval_images"], **CLOSE)
        torch.testing.assert_close(ema.module(saved["z"]), saved["eval_images"], **CLOSE)
        torch.testing.assert_close(D(saved["x"]), saved["eval_logits"], **CLOSE)


@pytest.mark.parametrize("family", ["dcgan", "resnet"])
def test_generators_exported_by_3bf9834_still_sample(family):
    saved = old_file(family)
    G, config = load_generator(OLD / f"{family}_generator.safetensors", torch.device("cpu"))  # `facegan sample`'s way
    assert (config.model, config.latent_dim, config.resolution) == (family, 8, 16)
    with torch.no_grad():  # channels_last, as load_generator leaves it: other kernels again
        torch.testing.assert_close(G(saved["z"]), saved["eval_images"], **CLOSE)
