"""Opening prepared datasets and drawing batches from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """100 flat-colour images whose red channel is the index: a batch tells which rows it holds."""
    root = tmp_path_factory.mktemp("ds")
    for i in range(100):
        Image.new("RGB", (16, 16), (i, 255 - i, 7)).save(root / f"{i:03d}.png")
    return prepare(str(root), root.parent / "prepared", size=8, progress=False)


def rows_of(batch: np.ndarray) -> list[int]:
    return batch[:, 0, 0, 0].tolist()


def test_open_gives_a_memory_map(dataset_dir):
    dataset = open_prepared(dataset_dir)
    assert isinstance(dataset.images, np.memmap) and dataset.images.shape == (100, 8, 8, 3)
    assert len(dataset) == 100 and dataset.resolution == 8 and rows_of(dataset.images[:3]) == [0, 1, 2]
    assert "100 images of 8x8" in repr(dataset)


def test_an_epoch_visits_every_image_once(dataset_dir):
    dataset = open_prepared(dataset_dir)
    seen = [row for b in dataset.batches(10, seed=3) for row in rows_of(b)]
    assert sorted(seen) == list(range(100))
    assert seen != list(range(100))  # shuffled


def test_shuffling_is_deterministic_per_seed_and_epoch(dataset_dir):
    dataset = open_prepared(dataset_dir)
    first = lambda **kw: rows_of(next(dataset.batches(10, **kw)))
    assert first(seed=1, epoch=0) == first(seed=1, epoch=0)
    assert first(seed=1, epoch=0) != first(seed=1, epoch=1)
    assert first(seed=1, epoch=0) != first(seed=2, epoch=0)


def test_drop_last_and_partial_batches(dataset_dir):
    dataset = open_prepared(dataset_dir)
    assert [len(b) for b in dataset.batches(32)] == [32, 32, 32]
    assert [len(b) for b in dataset.batches(32, drop_last=False)] == [32, 32, 32, 4]
    unshuffled = np.concatenate(list(dataset.batches(32, shuffle=False, drop_last=False)))
    assert np.array_equal(unshuffled, dataset.images)


def test_each_rank_draws_its_own_disjoint_batches(dataset_dir):
    dataset = open_prepared(dataset_dir)
    shares = [[row for b in dataset.batches(10, seed=5, rank=r, world_size=4, drop_last=False) for row in rows_of(b)]
              for r in range(4)]
    assert all(len(share) == 25 for share in shares)
    assert sorted(row for share in shares for row in share) == list(range(100))


def test_batches_with_attributes_stay_aligned(tmp_path, official_subset):
    dataset = open_prepared(prepare(str(official_subset), tmp_path / "c", size=16, progress=False))
    names = dataset.filenames()
    for images, attributes in dataset.batches(16, seed=0, with_attributes=True):
        for image, row in zip(images, attributes):
            index = next(i for i in range(len(dataset)) if np.array_equal(dataset.images[i], image))
            assert np.array_equal(dataset.attributes[index], row), names[index]
    assert dataset.attribute("Male").dtype == bool
    with pytest.raises(FaceganError, match="has no attribute 'Moustache'"):
        dataset.attribute("Moustache")


def test_attributes_requested_where_there_are_none(dataset_dir):
    with pytest.raises(FaceganError, match="has no attributes"):
        next(open_prepared(dataset_dir).batches(4, with_attributes=True))
    with pytest.raises(FaceganError, match="batch size must be positive"):
        next(open_prepared(dataset_dir).batches(0))


def test_verify_detects_a_changed_image(tmp_path, dataset_dir):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in dataset_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    open_prepared(copy).verify()
    with open(copy / "images.npy", "r+b") as stream:
        stream.seek(-1, 2)
        last = stream.read(1)
        stream.seek(-1, 2)
        stream.write(bytes([last[0] ^ 1]))  # one bit of the last pixel
    with pytest.raises(FaceganError, match="does not match its content hash"):
        open_prepared(copy).verify()


def _damaged(tmp_path: Path, dataset_dir: Path, change) -> Path:
    copy = tmp_path / "damaged"
    copy.mkdir()
    for path in dataset_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    change(copy)
    return copy


def _edit_manifest(**changes):
    def change(path: Path) -> None:
        manifest = json.loads((path / "dataset.json").read_text())
        manifest.update(changes)
        (path / "dataset.json").write_text(json.dumps(manifest))

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: (p / "dataset.json").unlink(), "not a prepared dataset .* run `facegan prepare"),
        (lambda p: (p / "dataset.json").write_text("{half"), "is damaged"),
        (_edit_manifest(format="something-else"), "not a facegan dataset manifest"),
        (_edit_manifest(version=99), "dataset format 99"),
        (_edit_manifest(count=5), "the manifest says"),
        (lambda p: (p / "images.npy").write_bytes((p / "images.npy").read_bytes()[:-100]), "missing or damaged|the manifest says"),
        (lambda p: (p / "images.npy").unlink(), "missing or damaged"),
    ],
    ids=["no-manifest", "bad-json", "wrong-format", "newer-version", "count-mismatch", "truncated", "no-images"],
)
def test_damaged_datasets_are_refused_in_one_sentence(tmp_path, dataset_dir, change, message):
    with pytest.raises(FaceganError, match=message):
        open_prepared(_damaged(tmp_path, dataset_dir, change))


def test_a_path_that_is_not_a_dataset(tmp_path):
    with pytest.raises(FaceganError, match="no such directory"):
        open_prepared(tmp_path / "nowhere")


def test_a_subset_is_a_prepared_dataset_of_its_own(dataset_dir, tmp_path):
    from facegan.data.prepared import write_subset

    dataset = open_prepared(dataset_dir)
    held_out = write_subset(dataset, np.arange(90, 100), tmp_path / "held-out")
    assert len(held_out) == 10 and rows_of(held_out.images[:]) == list(range(90, 100))
    held_out.verify()  # its own content hash, recomputed
    assert held_out.manifest["content_hash"] != dataset.manifest["content_hash"]
    assert held_out.manifest["subset_of"] == {"path": str(dataset.path), "content_hash": dataset.manifest["content_hash"],
                                              "count": 100}
    assert held_out.filenames() == [dataset.filenames()[i] for i in range(90, 100)]
