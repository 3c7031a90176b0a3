"""What a `prepare` run will read: the list of files, their labels, and what was left out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facegan.data.sources import SourceTree


@dataclass
class Plan:
    """Everything a source contributes to a prepared dataset, before any image is decoded."""

    source: str  # what the user gave, for the manifest
    kind: str  # "celeba", "folder" or "synthetic"
    layout: str  # e.g. "official", "kaggle-zip", "folder", "zip", "procedural"
    tree: SourceTree | None = None
    files: list[str] = field(default_factory=list)  # paths inside `tree`, in output order
    names: list[str] = field(default_factory=list)  # what filenames.txt records for each
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # per-file arrays, same order
    attribute_names: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}, pre-decode
    info: dict = field(default_factory=dict)  # extra manifest entries (annotations used, ...)
    count: int = 0  # synthetic only: how many faces to render
    seed: int = 0  # synthetic only

    def __len__(self) -> int:
        return self.count if self.kind == "synthetic" else len(self.files)
