"""Training batches as uint8 tensors on the training device, with no DataLoader.

A prepared dataset is already decoded, so a batch is an index lookup. On the CPU it is read
from the memory map (resident memory does not grow with the dataset beyond the page cache).
On a GPU the whole array is copied to device memory once, when it fits, and each batch is
gathered there: no host-to-device copy per step and no worker processes. Either way the batch
stays uint8 until the device turns it into floats, a quarter of the bytes moved.

Every batch is a pair (images, labels): labels are the chosen attributes of the same rows as a
float (B, K) tensor of 0s and 1s on the device, or None when no attribute is chosen.

Balanced training (`balance`): an epoch is as many draws, with replacement, as the data has
images, each combination of the balanced attributes drawn equally often, so a group of 4% is
seen as often as the rest. Within a group every image is equally likely.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from facegan.conditions import LabelTable, describe
from facegan.data import PreparedDataset
from facegan.errors import FaceganError, FaceganWarning

Batch = tuple[torch.Tensor, "torch.Tensor | None"]

# Keep the dataset on the GPU only when it uses at most this share of the free memory, leaving
# the rest for activations (CelebA at 64x64 is 2.5 GB; an 80 GB GPU holds it easily).
_RESIDENT_SHARE = 0.25
# A balanced group with fewer images than this, each drawn at least REPEATS times an epoch, is warned about.
FEW_IMAGES, REPEATS = 100, 2
# So is any group whose images are each drawn this often an epoch: on synthetic faces, --balance Pale_Skin
# drew the 780 pale faces of 20,000 about 13 times an epoch each, and G lost much of its variety (README).
MANY_REPEATS = 10


class BatchSource:
    """Epochs of (uint8 (B, H, W, 3) images, float (B, K) labels or None) on `device`, in the order PreparedDataset gives."""

    def __init__(self, dataset: PreparedDataset, device: torch.device, *, attributes: Sequence[str] = (),
                 balance: Sequence[str] = (), resident: bool | None = None) -> None:
        self.dataset = dataset
        self.device = device
        self.attributes = list(attributes)
        self._weights = balance_weights(dataset, list(balance)) if balance else None
        if resident is None:
            resident = device.type == "cuda" and dataset.images.nbytes <= _RESIDENT_SHARE * torch.cuda.mem_get_info(device)[0]
        self.resident = resident
        self._labels = _label_columns(dataset, self.attributes)  # float32 (N, K) in host memory, or None
        self._images = _copy_to(dataset.images, device) if resident else None
        if resident and self._labels is not None:
            self._labels = self._labels.to(device)

    def epoch(
        self, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1, skip: int = 0,
    ) -> Iterator[Batch]:
        """The batches of one epoch, starting after the first `skip` (to resume mid-epoch exactly)."""
        if self._weights is None:
            indices = self.dataset.epoch_indices(batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        else:
            indices = balanced_indices(self._weights, batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        for batch in indices[skip:]:
            if self._images is not None:
                rows = torch.from_numpy(batch).to(self.device, non_blocking=True)
                yield self._images[rows], (self._labels[rows] if self._labels is not None else None)
                continue
            images = torch.from_numpy(self.dataset.take(batch))
            labels = self._labels[torch.from_numpy(batch)] if self._labels is not None else None
            if self.device.type == "cuda":
                images = images.pin_memory()
            yield images.to(self.device, non_blocking=True), (labels.to(self.device) if labels is not None else None)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Full batches each rank draws per epoch."""
        return len(self.dataset) // world_size // batch_size

    def label_table(self) -> LabelTable | None:
        """The joint distribution of the chosen attributes over the data, or None when none are chosen."""
        if self._labels is None:
            return None
        return LabelTable.from_rows(self.attributes, self._labels.cpu().numpy() > 0.5)


def balance_weights(dataset: PreparedDataset, names: list[str]) -> np.ndarray:
    """Each image's probability of being drawn, so that every combination of `names` is drawn equally often.

    A combination no image has is an error (it cannot be drawn at all); one with fewer than
    FEW_IMAGES images, each drawn REPEATS or more times an epoch, is a warning: G may memorise them.
    So is one of any size whose images are each drawn MANY_REPEATS or more times an epoch.
    """
    columns = _label_columns(dataset, names).numpy() > 0.5
    combos = list(itertools.product([False, True], repeat=len(names)))  # combination i has number i below
    group = columns @ (1 << np.arange(len(names))[::-1])  # each image's combination, as a number
    counts = np.bincount(group, minlength=2 ** len(names))
    for combo, count in zip(combos, counts):
        values = dict(zip(names, combo))
        if count == 0:
            raise FaceganError(f"no image of {dataset.path} has {describe(values)}, so --balance {','.join(names)} "
                               "cannot draw that combination; balance fewer attributes.")
        share = len(dataset) / len(combos) / count
        if count < FEW_IMAGES and share >= REPEATS:
            warnings.warn(FaceganWarning(
                f"only {count} images have {describe(values)}; balanced, each is drawn about {share:.0f} times an epoch, "
                "so G may learn those few faces by heart."), stacklevel=2)
        elif share >= MANY_REPEATS:
            warnings.warn(FaceganWarning(
                f"{count} images have {describe(values)}; balanced, each is drawn about {share:.0f} times an epoch, "
                "so G may lose variety and repeat a few faces."), stacklevel=2)
    weights = 1.0 / (len(combos) * counts[group])
    return weights / weights.sum()


def balanced_indices(weights: np.ndarray, batch_size: int, *, seed: int, epoch: int, rank: int = 0,
                     world_size: int = 1) -> list[np.ndarray]:
    """One balanced epoch's batches: len(weights) draws with replacement, each rank its own share, as epoch_indices splits."""
    order = np.random.default_rng([seed, epoch, 1]).choice(len(weights), size=len(weights), p=weights)
    order = order[rank::world_size]
    stop = len(order) - len(order) % batch_size
    return [np.sort(order[start : start + batch_size]) for start in range(0, stop, batch_size)]


def _label_columns(dataset: PreparedDataset, attributes: list[str]) -> torch.Tensor | None:
    """The chosen attribute columns as float32 (N, K), or None when none are chosen."""
    if not attributes:
        return None
    if dataset.attributes is None:
        raise FaceganError(f"{dataset.path} holds no attributes, so it cannot give {', '.join(attributes)}; "
                           "prepare a source that has them (CelebA, synthetic faces, or a folder with labels).")
    missing = [name for name in attributes if name not in dataset.attribute_names]
    if missing:
        raise FaceganError(f"{dataset.path} has no attribute {', '.join(missing)}; it has {', '.join(dataset.attribute_names)}.")
    columns = [dataset.attribute_names.index(name) for name in attributes]
    return torch.from_numpy(np.ascontiguousarray(dataset.attributes[:, columns], dtype=np.float32))


def _copy_to(images: np.ndarray, device: torch.device, chunk: int = 8192) -> torch.Tensor:
    """The whole memory-mapped array on `device`, copied in chunks (never two full copies in RAM)."""
    out = torch.empty(images.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = torch.from_numpy(np.array(images[start : start + chunk]))
    return out


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> float (B, 3, H, W) in [-1, 1], channels_last.

    Permuting NHWC memory gives channels_last strides for free, and float() keeps them.
    """
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)
