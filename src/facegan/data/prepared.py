"""Open a prepared dataset and draw batches from it, memory-mapped, without decoding anything."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from facegan.errors import FaceganError
from facegan.paths import real_path

FORMAT = "facegan-dataset"
FORMAT_VERSION = 1
MANIFEST = "dataset.json"
_HASH_BLOCK = 4096  # rows hashed at a time by verify()
# filenames.txt holds one name a line. A name may hold any character a file system allows
# (newlines, bytes that are not UTF-8), so the writer escapes what would break a line or UTF-8,
# and says so in the manifest; files from before the escaping are read as they are.
ESCAPING = "backslash"
_ESCAPE = re.compile(r"[\\\n\r\ud800-\udfff]")
_UNESCAPE = re.compile(r"\\(\\|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")


def escape_name(name: str) -> str:
    """One line of filenames.txt: backslash, LF and CR as \\\\, \\n, \\r; an undecodable byte as \\xNN."""

    def escape(match: re.Match) -> str:
        char = match.group()
        if char in "\\\n\r":
            return {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}[char]
        code = ord(char)
        # os.fsdecode keeps an undecodable byte B as the lone surrogate U+DC00+B (surrogateescape)
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return _ESCAPE.sub(escape, name)


def unescape_name(line: str) -> str:
    """The name escape_name() wrote: os.fsencode() of it gives the file's original bytes."""

    def unescape(match: re.Match) -> str:
        code = match.group(1)
        if code in ("\\", "n", "r"):
            return {"\\": "\\", "n": "\n", "r": "\r"}[code]
        return chr(0xDC00 + int(code[1:], 16)) if code[0] == "x" else chr(int(code[1:], 16))

    return _UNESCAPE.sub(unescape, line)


def write_filenames(path: Path, names: list[str]) -> None:
    """filenames.txt: one escaped name a line, UTF-8, whatever the names hold."""
    path.write_text("".join(escape_name(name) + "\n" for name in names), encoding="utf-8")


class PreparedDataset:
    """A prepared dataset: uint8 images (N, S, S, 3), labels, and the manifest that made them."""

    def __init__(self, path: Path, manifest: dict, images: np.ndarray) -> None:
        self.path = path
        self.manifest = manifest
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.path)!r}, {len(self)} images of {self.resolution}x{self.resolution})"

    @property
    def resolution(self) -> int:
        """Side of the square images in pixels."""
        return int(self.images.shape[1])

    @property
    def attribute_names(self) -> list[str]:
        """Names of the attribute columns, empty when the source had none."""
        return list(self.manifest.get("attribute_names", []))

    @cached_property
    def attributes(self) -> np.ndarray | None:
        """Bool (N, K) attributes, or None when the source had none."""
        return self.label("attributes")

    def label(self, key: str) -> np.ndarray | None:
        """One of the per-image label arrays (attributes, partition, identity, landmarks, bbox)."""
        if key not in self.manifest.get("labels", []):
            return None
        values = np.load(self.path / f"{key}.npy", mmap_mode="r")
        if len(values) != len(self):
            raise FaceganError(f"{self.path / (key + '.npy')} has {len(values)} rows for {len(self)} images; prepare the dataset again.")
        return values

    def attribute(self, name: str) -> np.ndarray:
        """The bool column of one attribute, by its CelebA name."""
        if name not in self.attribute_names:
            raise FaceganError(f"{self.path} has no attribute {name!r}; it has {', '.join(self.attribute_names) or 'none'}.")
        return np.asarray(self.attributes[:, self.attribute_names.index(name)])

    def filenames(self) -> list[str]:
        """The source file of each image, in order (as os.fsdecode names it: os.fsencode gives its bytes)."""
        with open(self.path / "filenames.txt", encoding="utf-8", newline="") as stream:
            lines = stream.read().split("\n")  # "\n" only: splitlines() would also split at U+2028 and others
        if lines and lines[-1] == "":
            lines.pop()
        if self.manifest.get("filenames_escaping") == ESCAPING:
            return [unescape_name(line) for line in lines]
        return [line.removesuffix("\r") for line in lines]

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Images at `indices`, as a uint8 (len(indices), S, S, 3) array in memory."""
        return np.take(self.images, indices, axis=0)

    def epoch_indices(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> list[np.ndarray]:
        """The image indices of each batch of one epoch; each (epoch, rank) gets its own disjoint share."""
        if batch_size <= 0:
            raise FaceganError(f"batch size must be positive, not {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        order = np.random.default_rng([seed, epoch]).permutation(len(self)) if shuffle else np.arange(len(self))
        order = order[rank::world_size]
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        # Sorted indices read the memory map front to back; the batch is a set, so no bias.
        return [np.sort(order[start : start + batch_size]) for start in range(0, stop, batch_size)]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        with_attributes: bool = False,
    ) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of batches of uint8 images (and attributes), in the order of epoch_indices()."""
        if with_attributes and self.attributes is None:
            raise FaceganError(f"{self.path} has no attributes; prepare it from a source that has them.")
        for indices in self.epoch_indices(batch_size, shuffle=shuffle, seed=seed, epoch=epoch, drop_last=drop_last,
                                          rank=rank, world_size=world_size):
            images = self.take(indices)
            yield (images, np.asarray(self.attributes[indices])) if with_attributes else images

    def verify(self) -> None:
        """Recompute the content hash and compare it with the manifest's."""
        if content_hash(self.images, self.attributes, self.attribute_names) != self.manifest.get("content_hash"):
            raise FaceganError(f"{self.path} does not match its content hash: it changed since it was prepared; prepare it again.")


def content_hash(images: np.ndarray, attributes: np.ndarray | None, attribute_names: list[str]) -> str:
    """sha256 of the pixels, then of the attributes and their names: what the manifest records."""
    digest = hashlib.sha256()
    for start in range(0, len(images), _HASH_BLOCK):
        digest.update(np.ascontiguousarray(images[start : start + _HASH_BLOCK]).tobytes())
    if attributes is not None:
        digest.update(np.ascontiguousarray(attributes).tobytes())
        digest.update("\n".join(attribute_names).encode())
    return "sha256:" + digest.hexdigest()


def write_subset(dataset: PreparedDataset, indices: np.ndarray, out: str | os.PathLike) -> PreparedDataset:
    """A prepared dataset of some of `dataset`'s images (e.g. a held-out split), labels and all.

    Its manifest is the original's with the new count and content hash, and names what it was
    taken from, so metrics never mistake a subset's cached statistics for the whole's.
    """
    out = Path(out)
    out.mkdir(parents=True)
    indices = np.asarray(indices)
    images = dataset.take(indices)
    np.save(out / "images.npy", images)
    labels = [key for key in dataset.manifest.get("labels", []) if dataset.label(key) is not None]
    for key in labels:
        np.save(out / f"{key}.npy", np.asarray(dataset.label(key)[indices]))
    if (dataset.path / "filenames.txt").exists():
        names = dataset.filenames()
        write_filenames(out / "filenames.txt", [names[i] for i in indices])
    attributes = np.asarray(dataset.attributes[indices]) if dataset.attributes is not None else None
    manifest = {**dataset.manifest, "count": len(indices), "labels": labels,
                "content_hash": content_hash(images, attributes, dataset.attribute_names), "filenames_escaping": ESCAPING,
                "subset_of": {"path": str(dataset.path), "content_hash": dataset.manifest.get("content_hash"),
                              "count": len(dataset)}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return open_prepared(out)


def open_prepared(path: str | os.PathLike) -> PreparedDataset:
    """Open a directory written by `facegan prepare`, checking that it is complete and consistent."""
    path = Path(path).expanduser()
    real_path(path, "the dataset")  # a symlink loop is one sentence, not "no such directory"
    hint = f"run `facegan prepare SOURCE --out {path}` first"
    if path.is_file():
        raise FaceganError(f"{path} is a file, not a prepared dataset (a directory); {hint}.")
    if not path.is_dir():
        raise FaceganError(f"{path} is not a prepared dataset (no such directory); {hint}.")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FaceganError(f"{path} is not a prepared dataset (it has no {MANIFEST}); {hint}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FaceganError(f"{path / MANIFEST} is damaged (not JSON); prepare the dataset again.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FaceganError(f"{path / MANIFEST} is not a facegan dataset manifest; {hint}.")
    if manifest.get("version") != FORMAT_VERSION:
        raise FaceganError(
            f"{path} was prepared in dataset format {manifest.get('version')}, this facegan reads "
            f"format {FORMAT_VERSION}; prepare it again."
        )
    try:
        images = np.load(path / "images.npy", mmap_mode="r")
    except (FileNotFoundError, ValueError, OSError) as error:
        raise FaceganError(f"{path / 'images.npy'} is missing or damaged ({error}); prepare the dataset again.") from None
    expected = (manifest.get("count"), manifest.get("size"), manifest.get("size"), 3)
    if images.dtype != np.uint8 or images.shape != expected:
        raise FaceganError(
            f"{path / 'images.npy'} holds {images.dtype} {images.shape}, the manifest says uint8 {expected}; "
            "prepare the dataset again."
        )
    return PreparedDataset(path, manifest, images)
