"""Metric names and their parsing: `fid10k`, `kid2k`, `pr10k`, `fid500`. Importable without torch.

A name carries its sample count: that many generated images, and as many real ones (all of
them when the dataset is smaller). Configs check names with this module before any training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from facegan.errors import FaceganError

KINDS = ("fid", "kid", "pr")
_NAME = re.compile(r"(fid|kid|pr)(\d+)(k?)")
# Every real image a metric compares is kept in memory as a 2048-d float32 feature (8 KB), and so is
# every generated one: 1,000,000 of each is 16 GB, more than any machine facegan runs on should give.
MAX_COUNT = 1_000_000
# The keys a metric's values take in results (standard deviations aside), for plotting.
VALUE_KEY = re.compile(r"(fid|kid)\d+k?|pr\d+k?_(precision|recall)")


@dataclass(frozen=True)
class Metric:
    """A metric and its sample count, e.g. Metric("fid10k", "fid", 10000)."""

    name: str
    kind: str
    count: int

    def value_keys(self) -> list[str]:
        """The keys of its values in a result: kid adds a standard deviation, pr is two numbers."""
        return {"fid": [self.name], "kid": [self.name, f"{self.name}_std"],
                "pr": [f"{self.name}_precision", f"{self.name}_recall"]}[self.kind]

    @property
    def higher_is_better(self) -> bool:
        """Precision and recall grow with quality; FID and KID shrink."""
        return self.kind == "pr"


def parse_metrics(names: str | Sequence[str]) -> list[Metric]:
    """`fid10k,kid10k,pr10k` (or a list of such names) -> Metrics, in order, without repeats."""
    if isinstance(names, str):
        names = names.split(",")
    parsed: list[Metric] = []
    for raw in names:
        name = raw.strip().lower()
        match = _NAME.fullmatch(name)
        if match is None:
            raise FaceganError(f"unknown metric {raw.strip()!r}: give fid, kid or pr followed by a sample count, "
                               "such as fid10k, kid2k, pr10k or fid500.")
        count = int(match.group(2)) * (1000 if match.group(3) else 1)
        if count < 4:
            raise FaceganError(f"{name} measures {count} images; give at least 4 (2,048 or more for FID).")
        if count > MAX_COUNT:
            raise FaceganError(f"{name} measures {count:,} images, more than the {MAX_COUNT:,} facegan allows "
                               "(their features alone would take 16 GB or more); fid50k is the usual largest.")
        if name not in [m.name for m in parsed]:
            parsed.append(Metric(name, match.group(1), count))
    if not parsed:
        raise FaceganError("no metric given; name one or more, such as --metrics fid10k,kid10k,pr10k.")
    return parsed


def as_metrics(metrics: str | Sequence[str] | Sequence[Metric]) -> list[Metric]:
    """Metrics given as parsed ones, one comma-separated string, or a list of names."""
    if not isinstance(metrics, str) and metrics and all(isinstance(m, Metric) for m in metrics):
        return list(metrics)  # type: ignore[arg-type]
    return parse_metrics(metrics)  # type: ignore[arg-type]
