"""The attribute classifier: it learns, it is measured on held-out rows, and its file round-trips or is refused."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from facegan.classifier import (
    augment,
    confusion,
    load_classifier,
    predict,
    resolve_attributes,
    save_classifier,
    split_rows,
    train_classifier,
)
from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """400 synthetic 32px faces: Eyeglasses and Wearing_Hat are big, plain shapes at this size."""
    return prepare("synthetic", tmp_path_factory.mktemp("cls") / "s32", count=400, size=32, progress=False)


@pytest.fixture(scope="module")
def trained(faces, one_thread):
    # The first recipe (flips only, light weight decay, no auxiliary attributes): the defaults' shifts and 11 more
    # attributes to learn are for thousands of images, and 44 steps at width 8 leave Male at chance with them.
    return train_classifier(open_prepared(faces), ["Male", "Smiling", "Eyeglasses"], epochs=4, width=8, batch_size=32,
                            precision="fp32", shift=0, weight_decay=5e-4, auxiliary=False, flip_average=False)


def test_confusion_on_known_numbers():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    predicted = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    figures = confusion(truth, predicted)
    assert figures["accuracy"] == pytest.approx(0.8)
    assert figures["tpr"] == pytest.approx(0.75) and figures["fnr"] == pytest.approx(0.25)
    assert figures["fpr"] == pytest.approx(1 / 6)
    assert figures["balanced_accuracy"] == pytest.approx((0.75 + 5 / 6) / 2)


def test_split_is_seeded_ninety_percent_without_partitions(faces):
    dataset = open_prepared(faces)
    train, heldout, how = split_rows(dataset, seed=3)
    assert how == "seeded-90%:3" and len(heldout) == 40 and len(train) == 360
    assert not set(train) & set(heldout)
    assert np.array_equal(split_rows(dataset, seed=3)[1], heldout)


def test_learns_a_plain_attribute(trained):
    print({name: round(row["balanced_accuracy"], 3) for name, row in trained.heldout.items()})
    male = trained.heldout["Male"]
    assert male["count"] == 40 and 0 < male["positives"] < 40
    assert male["balanced_accuracy"] > 0.75, male


def test_round_trip_keeps_weights_and_metadata(trained, faces, tmp_path):
    path = save_classifier(trained, tmp_path / "c.safetensors")
    loaded = load_classifier(path)
    assert loaded.attributes == ["Male", "Smiling", "Eyeglasses"] and loaded.resolution == 32
    assert loaded.data_hash == open_prepared(faces).manifest["content_hash"]
    assert loaded.heldout == json.loads(json.dumps(trained.heldout))
    images = open_prepared(faces).take(np.arange(8))
    a, b = predict(trained, images), predict(loaded, images)
    assert a.shape == (8, 3) and a.dtype == np.float32 and np.allclose(a, b, atol=1e-5)
    assert ((a >= 0) & (a <= 1)).all()


def test_wrong_files_are_one_sentence(trained, tmp_path):
    path = save_classifier(trained, tmp_path / "c.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FaceganError, match="damaged or not a safetensors"):
        load_classifier(corrupt)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other), metadata={"format": "facegan-generator"})
    with pytest.raises(FaceganError, match="not a facegan attribute classifier"):
        load_classifier(other)
    tensors = load_file(str(path))
    tensors.pop("head.bias")
    shaped = tmp_path / "shaped.safetensors"
    save_file(tensors, str(shaped), metadata=trained.metadata)
    with pytest.raises(FaceganError, match="do not fit"):
        load_classifier(shaped)
    with pytest.raises(FaceganError, match="is not a file"):
        load_classifier(tmp_path / "absent.safetensors")
    with pytest.raises(FaceganError, match="reads uint8 images of 32x32x3"):
        predict(trained, np.zeros((2, 64, 64, 3), np.uint8))


def test_attribute_names_are_checked(faces):
    dataset = open_prepared(faces)
    assert "Smiling" in resolve_attributes(dataset, None)
    with pytest.raises(FaceganError, match="more than once"):
        resolve_attributes(dataset, ["Male", "Male"])
    with pytest.raises(FaceganError, match="no attribute Nose"):
        resolve_attributes(dataset, ["Nose"])


def test_cli_prints_the_table(faces, tmp_path, capsys, one_thread):
    out = tmp_path / "c.safetensors"
    result = run_cli(["classifier", "train", "--data", str(faces), "--attrs", "Wearing_Hat", "--epochs", "1",
                      "--width", "8", "--precision", "fp32", "--out", str(out), "--quiet"], capsys)
    assert result.code == 0, result.err
    assert "balanced" in result.out and "Wearing_Hat" in result.out and out.is_file()
    assert not math.isnan(load_classifier(out).heldout["Wearing_Hat"]["accuracy"])


def test_augment_flips_and_shifts_within_the_frame():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    rng = np.random.default_rng(0)
    out = augment(x, rng, shift=2)
    assert out.shape == x.shape
    # Every output pixel is one of the input's (edges are repeated, never zeros) and most images moved.
    assert set(out.unique().tolist()) <= set(x.unique().tolist())
    moved = [not (torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))) for i in range(2)]
    assert any(moved)
    assert torch.equal(augment(x, np.random.default_rng(1), shift=0).abs().sum(), x.abs().sum())


def test_auxiliary_attributes_leave_a_head_of_the_asked_for_ones(faces, one_thread, tmp_path):
    classifier = train_classifier(open_prepared(faces), ["Male"], epochs=1, width=8, batch_size=64, precision="fp32",
                                  auxiliary=True)
    assert classifier.net.head.out_features == 1 and list(classifier.heldout) == ["Male"]
    assert json.loads(classifier.metadata["auxiliary"]) == len(open_prepared(faces).attribute_names) - 1
    loaded = load_classifier(save_classifier(classifier, tmp_path / "c.safetensors"))
    assert loaded.flip_average and loaded.net.head.out_features == 1


def test_files_from_before_flip_averaging_load_without_it(trained, tmp_path):
    path = save_classifier(trained, tmp_path / "c.safetensors")
    metadata = {key: value for key, value in trained.metadata.items() if key not in ("flip_average", "shift", "auxiliary")}
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata=metadata)
    loaded = load_classifier(old)
    assert not loaded.flip_average
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    mirrored = dataclasses.replace(loaded, flip_average=True)
    assert not np.allclose(predict(loaded, images), predict(mirrored, images), atol=1e-6)
    assert np.allclose(predict(mirrored, images), predict(mirrored, images[:, :, ::-1].copy()), atol=1e-5)
