"""The audit: Wilson intervals, the confusion correction, combinations, and a whole audit of a tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from facegan.audit import (
    audit_run,
    combinations,
    correct,
    corrected_combinations,
    corrected_rate,
    format_report,
    rate,
    wilson,
)
from facegan.classifier import save_classifier, train_classifier
from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.train.loop import train
from tests.conftest import run_cli, tiny


def test_wilson_against_known_values():
    # Wilson 95% for 5 of 10 is [0.2366, 0.7634]; 0 of 10 is [0, 0.2775]; 81 of 263 is [0.2553, 0.3662].
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson(81, 263) == pytest.approx((0.25527, 0.36619), abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_correction_on_a_hand_computed_case():
    # TPR 0.9, FPR 0.1: an observed 0.42 is a true (0.42 - 0.1) / 0.8 = 0.4.
    assert correct(0.42, 0.9, 0.1) == pytest.approx(0.4)
    assert correct(0.05, 0.9, 0.1) == 0.0 and correct(0.95, 0.9, 0.1) == 1.0  # clipped
    assert correct(0.5, 0.55, 0.45) is None  # TPR - FPR 0.1: a near-chance classifier is not corrected
    observed = rate(np.array([1] * 42 + [0] * 58, bool))
    fixed = corrected_rate(observed, 0.9, 0.1)
    assert fixed["rate"] == pytest.approx(0.4)
    assert fixed["low"] == pytest.approx((observed["low"] - 0.1) / 0.8)
    assert fixed["high"] == pytest.approx((observed["high"] - 0.1) / 0.8)
    assert "not corrected" in corrected_rate(observed, 0.55, 0.45)["note"]


def test_combinations_and_their_correction():
    flags = np.array([[0, 0], [0, 1], [1, 1], [1, 1]], bool)
    assert combinations(flags).tolist() == [0.25, 0.25, 0.0, 0.5]
    # A perfect classifier changes nothing; a noisy one maps true shares to observed ones that the correction undoes.
    assert corrected_combinations(combinations(flags), [1, 1], [0, 0]) == pytest.approx(combinations(flags))
    true = np.array([0.1, 0.2, 0.3, 0.4])
    confusion = np.kron([[0.9, 0.2], [0.1, 0.8]], [[0.95, 0.3], [0.05, 0.7]])
    assert corrected_combinations(confusion @ true, [0.8, 0.7], [0.1, 0.05]) == pytest.approx(true)
    assert corrected_combinations(true, [0.5, 0.9], [0.45, 0.1]) is None


@pytest.fixture(scope="module")
def audited(tmp_path_factory, one_thread):
    """A one-epoch tiny run on 64 synthetic 32px faces, and a classifier of two attributes trained on them."""
    root = tmp_path_factory.mktemp("audit")
    data = prepare("synthetic", root / "s32", count=64, size=32, progress=False)
    run = train(tiny(root, data, epochs=1, grid_size=4), progress=False)
    classifier = train_classifier(open_prepared(data), ["Male", "Smiling"], epochs=1, width=8, batch_size=16,
                                  precision="fp32")
    return run, save_classifier(classifier, root / "c.safetensors"), data


def test_audit_writes_its_report_and_chart(audited):
    run, classifier, _ = audited
    report = audit_run(run, classifier, count=64, groups=["Male", "Smiling"], pr=False, device="cpu")
    saved = json.loads((run / "audit" / "report.json").read_text())
    assert (run / "audit" / "rates.png").stat().st_size > 1000
    assert set(saved["attributes"]) == {"Male", "Smiling"}
    row = saved["attributes"]["Male"]
    for key in ("labels", "classifier_real", "classifier_generated"):
        assert set(row[key]) == {"rate", "low", "high", "count"}
        assert row[key]["low"] <= row[key]["rate"] <= row[key]["high"]
    assert row["classifier_generated"]["count"] == 64 and row["labels"]["count"] == 64
    assert "corrected_generated" in row and "ratio" in row and "accuracy" in row["classifier_heldout"]
    shares = [r["labels"]["rate"] for r in saved["groups"]["combinations"]]
    generated = [r["classifier_generated"]["rate"] for r in saved["groups"]["combinations"]]
    assert len(shares) == 4 and sum(shares) == pytest.approx(1) and sum(generated) == pytest.approx(1)
    assert "classifier held-out accuracy: Male" in format_report(report)


def test_audit_refuses_what_does_not_fit(audited, tmp_path, capsys):
    run, classifier, data = audited
    with pytest.raises(FaceganError, match="does not know"):
        audit_run(run, classifier, count=16, groups=["Bald"], pr=False, device="cpu")
    other = prepare("synthetic", tmp_path / "s64", count=32, size=64, progress=False)
    wrong = save_classifier(train_classifier(open_prepared(other), ["Male"], epochs=1, width=8, batch_size=16,
                                             precision="fp32"), tmp_path / "c64.safetensors")
    with pytest.raises(FaceganError, match="reads 64px images but the run makes 32px"):
        audit_run(run, wrong, count=16, pr=False, device="cpu")
    result = run_cli(["audit", str(run), "--classifier", str(classifier), "-n", "32", "--no-pr", "--device", "cpu",
                      "--quiet"], capsys)
    assert result.code == 0, result.err
    assert "corrected gen" in result.out and "Smiling" in result.out
    result = run_cli(["audit", str(Path(data)), "--classifier", str(classifier), "--quiet"], capsys)
    assert result.code == 1 and "not a run directory" in result.err


def test_group_precision_recall_measures_big_groups_only(audited, network, monkeypatch):
    from facegan import audit

    run, classifier, _ = audited
    monkeypatch.setattr(audit, "PR_MIN_IMAGES", 12)
    monkeypatch.setattr(audit, "PR_MAX_IMAGES", 14)  # Inception on a CPU: as few images as k-NN manifolds allow
    report = audit_run(run, classifier, count=40, groups=["Male"], network=network.path, device="cpu")
    groups = report["precision_recall"]["groups"]
    assert [(g["attribute"], g["value"]) for g in groups] == [("Male", 1), ("Male", 0)]
    for group in groups:
        if min(group["real_images"], group["generated_images"]) >= 12:
            assert 0 <= group["precision"] <= 1 and 0 <= group["recall"] <= 1
            assert group["real_images_used"] <= 14 and group["generated_images_used"] <= 14
        else:
            assert "not measured" in group["note"]
    assert "precision" in format_report(report)


def test_conditional_accuracy_of_a_real_conditional_run(audited, tmp_path):
    # A tiny run conditioned on Male and Eyeglasses; the classifier knows Male (and Smiling), not Eyeglasses.
    from facegan import audit
    from facegan.classifier import load_classifier
    from facegan.generation import load_generator_and_labels

    _, classifier, data = audited
    run = train(tiny(tmp_path, data, epochs=1, grid_size=4, condition=("Male", "Eyeglasses")), progress=False)
    generator, config, table = load_generator_and_labels(run)
    result = audit.conditional_accuracy(run, generator, config, table, load_classifier(classifier), 64, 0)
    assert result["attributes"] == ["Male"] and result["not_classified"] == ["Eyeglasses"]
    one, zero = result["rows"]
    assert one["samples"] == zero["samples"] == 32  # -n split over one attribute x two values
    for row in (one, zero):
        assert 0 <= row["observed"]["low"] <= row["observed"]["rate"] <= row["observed"]["high"] <= 1