"""Which attribute values to ask a conditional generator for.

A run conditioned on K attributes keeps the training labels' joint distribution as a
`LabelTable`: each distinct combination of the K values and how many training images have it
(at most 2**K rows, so it travels in every checkpoint and export). Asking for some values
("Smiling=1,Male=0") fixes those columns and draws the others from the training rows that
match: the joint distribution given the named values, as real faces have them. No face with a
combination is still generated, from the other attributes' overall distribution, with a warning.

`grid_conditions` gives the rows of a conditional run's per-epoch grid: all absent, each
attribute alone, all present; the same noise runs along each row, so one picture shows each
attribute switching on and off.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from facegan.errors import FaceganError, FaceganWarning


def parse_attrs(text: str, names: Sequence[str]) -> dict[str, bool]:
    """'Smiling=1,Male=0' -> {'Smiling': True, 'Male': False}, each name one of `names`."""
    wanted: dict[str, bool] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or value not in ("0", "1"):
            raise FaceganError(f"--attrs takes NAME=1 or NAME=0 separated by commas; {part!r} is neither.")
        if name not in names:
            have = ", ".join(names) if names else "no attributes (it is unconditional)"
            raise FaceganError(f"this run was not conditioned on {name!r}; it was conditioned on {have}.")
        if name in wanted:
            raise FaceganError(f"--attrs names {name} more than once.")
        wanted[name] = value == "1"
    return wanted


def describe(values: Mapping[str, bool]) -> str:
    """{'Smiling': True} -> 'Smiling=1'."""
    return ",".join(f"{name}={int(v)}" for name, v in values.items())


@dataclasses.dataclass(frozen=True, eq=False)
class LabelTable:
    """The training labels of a conditional run: distinct combinations (M, K) and their counts (M,)."""

    names: tuple[str, ...]
    combos: np.ndarray  # bool (M, K), unique rows
    counts: np.ndarray  # int64 (M,), each > 0

    @classmethod
    def from_rows(cls, names: Sequence[str], rows: np.ndarray) -> LabelTable:
        """The table of labels `rows` (N, K), one column per name."""
        rows = np.asarray(rows, dtype=bool).reshape(len(rows), len(names))
        combos, counts = np.unique(rows, axis=0, return_counts=True)
        return cls(tuple(names), combos.astype(bool), counts.astype(np.int64))

    def to_dict(self) -> dict:
        """Plain JSON data: combinations as strings of 0s and 1s."""
        return {"names": list(self.names), "combos": ["".join("1" if v else "0" for v in row) for row in self.combos],
                "counts": [int(n) for n in self.counts]}

    @classmethod
    def from_dict(cls, data: object, source: str = "the file") -> LabelTable:
        """The inverse of to_dict; a damaged table is one sentence naming `source`."""
        try:
            names = tuple(data["names"])
            combos = np.array([[ch == "1" for ch in text] for text in data["combos"]], dtype=bool).reshape(-1, len(names))
            counts = np.array(data["counts"], dtype=np.int64)
            ok = (all(isinstance(n, str) for n in names) and len(counts) == len(combos) > 0 and (counts > 0).all()
                  and all(isinstance(t, str) and len(t) == len(names) and set(t) <= {"0", "1"} for t in data["combos"]))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise FaceganError(f"{source} holds a damaged table of training labels; export or train the run again.")
        return cls(names, combos, counts)

    def rate(self, name: str) -> float:
        """The share of training images with attribute `name`."""
        column = self.combos[:, self.names.index(name)]
        return float(self.counts[column].sum() / self.counts.sum())

    def matching(self, fixed: Mapping[str, bool]) -> int:
        """Training images whose labels have every value in `fixed`."""
        return int(self.counts[self._matches(fixed)].sum())

    def _matches(self, fixed: Mapping[str, bool]) -> np.ndarray:
        keep = np.ones(len(self.combos), dtype=bool)
        for name, value in fixed.items():
            keep &= self.combos[:, self.names.index(name)] == value
        return keep

    def draw(self, count: int, seed: int, fixed: Mapping[str, bool] | None = None) -> np.ndarray:
        """float32 (count, K) labels: `fixed`'s values, the rest drawn from the training rows that match them.

        The draw depends on the seed alone (NumPy's generator), so a seed gives the same labels on
        any device. A combination no training image has is generated anyway, with a warning.
        """
        fixed = dict(fixed or {})
        unknown = [name for name in fixed if name not in self.names]
        if unknown:
            raise FaceganError(f"this run was not conditioned on {unknown[0]!r}; it was conditioned on {', '.join(self.names)}.")
        keep = self._matches(fixed)
        if not keep.any():
            warnings.warn(FaceganWarning(
                f"no training image has {describe(fixed)}; generating it anyway, with the other attributes drawn from "
                "all training images: expect it to look less like the request."), stacklevel=2)
            keep = np.ones(len(self.combos), dtype=bool)
        weights = self.counts[keep] / self.counts[keep].sum()
        rows = self.combos[keep][np.random.default_rng(seed).choice(int(keep.sum()), size=count, p=weights)]
        labels = rows.astype(np.float32)
        for name, value in fixed.items():
            labels[:, self.names.index(name)] = float(value)
        return labels


def grid_conditions(names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The rows of a conditional grid and their captions: none, each attribute alone, all (K + 2 rows; 2 for K = 1)."""
    k = len(names)
    rows = [np.zeros(k, dtype=np.float32)]
    captions = ["none"]
    for i, name in enumerate(names):
        row = np.zeros(k, dtype=np.float32)
        row[i] = 1
        rows.append(row)
        captions.append(name)
    if k > 1:
        rows.append(np.ones(k, dtype=np.float32))
        captions.append("all")
    return captions, np.stack(rows)
