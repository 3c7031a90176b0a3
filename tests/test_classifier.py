"""The attribute classifier: it learns, it is measured on held-out rows, and its file round-trips or is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from facegan.classifier import (
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
    return train_classifier(open_prepared(faces), ["Male", "Smiling", "Eyeglasses"], epochs=4, width=8, batch_size=32,
                            precision="fp32")


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
