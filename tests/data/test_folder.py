"""Any folder or zip of images: recursive, every format, bad files skipped and listed."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.data import open_prepared
from facegan.data.prepare import prepare
from facegan.errors import FaceganError


def _write(path: Path, image: Image.Image, format: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=format)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Faces as users keep them: nested, mixed formats and modes, with litter and broken files."""
    rng = np.random.default_rng(1)
    root = tmp_path / "faces"
    rgb = lambda w, h: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    _write(root / "a.jpg", rgb(120, 150), "JPEG")
    _write(root / "b.PNG", rgb(80, 80).convert("RGBA"), "PNG")
    _write(root / "nested" / "c.webp", rgb(90, 70), "WEBP")
    _write(root / "nested" / "deeper" / "d.bmp", rgb(64, 64).convert("L"), "BMP")
    _write(root / "e.jpeg", Image.new("CMYK", (70, 70), (10, 200, 30, 0)), "JPEG")
    good = io.BytesIO()
    rgb(100, 100).save(good, format="JPEG")
    (root / "truncated.jpg").write_bytes(good.getvalue()[:500])
    (root / "readme.txt").write_text("these are my faces")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def test_a_messy_folder_prepares_and_lists_what_it_skipped(tmp_path, messy_folder):
    dataset = open_prepared(prepare(str(messy_folder), tmp_path / "out", size=32, progress=False))
    assert len(dataset) == 5
    assert dataset.filenames() == ["a.jpg", "b.PNG", "e.jpeg", "nested/c.webp", "nested/deeper/d.bmp"]
    skipped = {s["file"]: s["reason"] for s in dataset.manifest["skipped"]}
    assert skipped["readme.txt"] == "not a supported image type (.txt)"
    assert skipped["truncated.jpg"].startswith("unreadable")
    assert ".DS_Store" not in skipped and dataset.manifest["ignored_system_files"] == 1
    assert dataset.manifest["kind"] == "folder" and dataset.attributes is None


def test_a_zip_of_the_folder_gives_the_same_array(tmp_path, messy_folder):
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(messy_folder.rglob("*")):
            if path.is_file():
                out.write(path, path.relative_to(messy_folder).as_posix())
    from_folder = open_prepared(prepare(str(messy_folder), tmp_path / "f", size=32, progress=False))
    from_zip = open_prepared(prepare(str(archive), tmp_path / "z", size=32, progress=False))
    assert from_zip.manifest["layout"] == "zip"
    assert np.array_equal(from_folder.images, from_zip.images)


def test_real_half_resolution_faces(tmp_path, celeba_89_dir):
    # A folder of 89x109 CelebA faces: the largest centred square is the half-size 178 crop.
    subset = tmp_path / "faces"
    subset.mkdir()
    for path in sorted(celeba_89_dir.iterdir())[:50]:
        (subset / path.name).symlink_to(path)
    dataset = open_prepared(prepare(str(subset), tmp_path / "out", progress=False))
    assert len(dataset) == 50 and dataset.manifest["crop"]["box"] == [0, 10, 89, 99]
    assert 60 < dataset.images.mean() < 200


def test_an_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceganError, match="is empty"):
        prepare(str(tmp_path / "empty"), tmp_path / "out", progress=False)


def test_a_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no faces here")
    with pytest.raises(FaceganError, match="holds 1 files but no images"):
        prepare(str(tmp_path / "docs"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_folder_of_only_broken_images_is_an_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(FaceganError, match="none of the 1 images .* could be read"):
        prepare(str(tmp_path / "bad"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_crop_larger_than_the_images_skips_them(tmp_path, messy_folder):
    dataset = open_prepared(prepare(str(messy_folder), tmp_path / "out", crop=100, size=32, progress=False))
    assert dataset.filenames() == ["a.jpg"]  # the only image at least 100 pixels on each side
    reasons = [s["reason"] for s in dataset.manifest["skipped"]]
    assert "80x80 is smaller than the 100x100 crop" in reasons
