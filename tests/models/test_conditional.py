"""Conditional models: conditional BatchNorm in G, a projection head in D, for both families."""

from __future__ import annotations

import pytest
import torch

from facegan.models import build_models
from facegan.models.conditional import ConditionalBatchNorm2d, presence

FAMILIES = ("dcgan", "resnet")


def _pair(family: str, k: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_models(family, 8, 8, 8, 32, num_attributes=k)


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes(family):
    G, D = _pair(family, 3)
    c = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    images = G(torch.randn(2, 8), c)
    assert images.shape == (2, 3, 32, 32)
    assert D(images, c).shape == (2,)
    with pytest.raises(ValueError, match=r"condition of shape \(2, 3\)"):
        G(torch.randn(2, 8), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"condition of shape \(2, 3\)"):
        D(images, torch.zeros(3, 3))


@pytest.mark.parametrize("family", FAMILIES)
def test_with_no_condition_they_equal_the_unconditional_models(family):
    conditional = _pair(family, 3)
    plain = _pair(family, 0)
    for cond, uncond in zip(conditional, plain):
        weights = {k: v for k, v in cond.state_dict().items()}
        target = uncond.state_dict()
        # The unconditional models' BatchNorm affine at (1, 0): a conditional BatchNorm with no condition.
        for name in list(target):
            if name.endswith(".weight") and name[: -len(".weight")] + ".running_mean" in target and name not in weights:
                target[name] = torch.ones_like(target[name])
                target[name[: -len(".weight")] + ".bias"] = torch.zeros_like(target[name])
        for name in target:
            for candidate in (name, name.replace(".running", ".bn.running").replace(".num_batches", ".bn.num_batches")):
                if candidate in weights and weights[candidate].shape == target[name].shape:
                    target[name] = weights[candidate]
                    break
        uncond.load_state_dict(target)
    (G, D), (G0, D0) = conditional, plain
    z, x = torch.randn(4, 8), torch.randn(4, 3, 32, 32)
    for train in (True, False):
        for model in (G, D, G0, D0):
            model.train(train)
        assert torch.allclose(G(z, None), G0(z), atol=1e-6)
        assert torch.allclose(D(x, None), D0(x), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_condition_changes_the_output(family):
    G, D = _pair(family, 2)
    # Learned tables, as after training (they start at zero).
    for module in G.modules():
        if isinstance(module, ConditionalBatchNorm2d):
            torch.nn.init.normal_(module.gain, 0, 0.5)
            torch.nn.init.normal_(module.bias, 0, 0.5)
    G.eval()
    D.eval()
    z = torch.randn(1, 8).repeat(2, 1)
    on_off = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    images = G(z, on_off)
    assert (images[0] - images[1]).abs().max() > 1e-3  # the same noise, another condition
    x = images[:1].detach().repeat(2, 1, 1, 1)
    logits = D(x, on_off)
    assert (logits[0] - logits[1]).abs() > 1e-6  # the projection term
    with torch.no_grad():
        # one sample's logit does not depend on the others' (up to the rounding of kernels chosen by batch size)
        torch.testing.assert_close(D(x, on_off)[0], D(x[:1], on_off[:1])[0], rtol=1e-5, atol=1e-6)


def test_presence_has_a_vector_for_present_and_one_for_absent():
    assert presence(torch.tensor([[1.0, 0.0]])).tolist() == [[1.0, 0.0, 0.0, 1.0]]

