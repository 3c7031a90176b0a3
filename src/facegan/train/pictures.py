"""When an epoch's plots are drawn: every epoch, unless drawing them would cost more than a small share of the run.

The loss curve, the real-vs-generated sheet and D's histogram take about 0.8 s of matplotlib an epoch. On a CPU an
epoch takes minutes and they are drawn every time. On a GPU an epoch of a few thousand faces trains in under a second,
and drawing them every epoch would more than double the run (benchmarks/gpu.py measured a 6,000-image epoch at 0.4 s
of training and about 1.5 s of grid, plots and checkpoint). So they are skipped at an epoch end where the time spent
drawing them so far is above SHARE of the run's time; the first and the last epoch always draw them. The fixed-noise
grid and the checkpoint are made every epoch regardless; what is skipped never changes the training itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

SHARE = 0.05  # of the wall time since the run (this invocation) began


@dataclass
class PictureBudget:
    """The time this invocation has spent drawing plots, against the time it has run."""

    share: float = field(default_factory=lambda: SHARE)
    clock: Callable[[], float] = time.perf_counter
    started: float = field(default=None)  # type: ignore[assignment]  # set from the clock when None
    spent: float = 0.0
    drawn: int = 0  # how many times plots were drawn

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    def due(self, last: bool) -> bool:
        """Whether this epoch's plots are drawn: the first and the `last`, and any other while they stay within budget."""
        return last or self.drawn == 0 or self.spent <= self.share * (self.clock() - self.started)

    @contextmanager
    def drawing(self) -> Iterator[None]:
        """Count the time of what is drawn inside as the plots' (the loop wraps the epoch's plots and its histogram)."""
        began = self.clock()
        try:
            yield
        finally:
            self.spent += self.clock() - began
            self.drawn += 1
