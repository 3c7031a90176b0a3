"""BatchSource: each batch is (uint8 images, float labels of the chosen attributes) of the same rows, resumable mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.train.batches import BatchSource, to_model_input

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """96 synthetic faces at 16 px, with their attributes."""
    return open_prepared(prepare("synthetic", tmp_path_factory.mktemp("b") / "s16", count=96, size=16, progress=False))


def test_images_and_labels_are_the_rows_of_each_batch(faces):
    chosen = ["Smiling", "Male", "Eyeglasses"]
    columns = [faces.attribute_names.index(name) for name in chosen]
    source = BatchSource(faces, CPU, attributes=chosen)
    batches = list(source.epoch(16, seed=3, epoch=1))
    assert len(batches) == source.steps_per_epoch(16) == 6
    for (images, labels), rows in zip(batches, faces.epoch_indices(16, seed=3, epoch=1)):
        assert images.dtype == torch.uint8 and torch.equal(images, torch.from_numpy(faces.take(rows)))
        assert labels.dtype == torch.float32 and labels.shape == (16, 3)
        assert torch.equal(labels, torch.from_numpy(faces.attributes[rows][:, columns].astype(np.float32)))
    # every image of the epoch once, and the labels vary (so a column mix-up would show)
    assert sorted(np.concatenate(faces.epoch_indices(16, seed=3, epoch=1))) == list(range(96))
    assert 0 < torch.cat([labels for _, labels in batches]).mean() < 1


def test_no_attributes_means_no_labels(faces):
    images, labels = next(iter(BatchSource(faces, CPU).epoch(8, seed=0, epoch=0)))
    assert labels is None and images.shape == (8, 16, 16, 3)


def test_skip_resumes_mid_epoch_with_the_same_batches(faces):
    source = BatchSource(faces, CPU, attributes=["Young"])
    whole = list(source.epoch(16, seed=0, epoch=2))
    rest = list(source.epoch(16, seed=0, epoch=2, skip=4))
    assert len(rest) == 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(whole[4:], rest))


def test_the_resident_copy_gives_the_same_batches(faces):
    """The GPU path (the whole array copied to the device once) tested on the CPU: same images, same labels."""
    mapped = list(BatchSource(faces, CPU, attributes=["Male", "Bangs"]).epoch(16, seed=1, epoch=0))
    resident = BatchSource(faces, CPU, attributes=["Male", "Bangs"], resident=True)
    assert resident.resident
    for (a, la), (b, lb) in zip(mapped, resident.epoch(16, seed=1, epoch=0)):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_unknown_attributes_are_refused_naming_the_ones_there(faces):
    with pytest.raises(FaceganError, match=r"has no attribute Dimples; it has .*Smiling"):
        BatchSource(faces, CPU, attributes=["Smiling", "Dimples"])


def test_to_model_input_is_channels_last_in_minus_one_to_one():
    images = torch.tensor([0, 255, 128], dtype=torch.uint8).repeat(2, 4, 4, 1)  # (2, 4, 4, 3)
    x = to_model_input(images)
    assert x.shape == (2, 3, 4, 4) and x.is_contiguous(memory_format=torch.channels_last)
    assert x[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)  # float32
