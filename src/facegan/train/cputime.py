"""The training process's own CPU time, carried across resumes: what `cpu_s` records and --max-cpu-minutes counts.

User plus system time, as `time` reports it, so that runs sharing a machine compare fairly (wall time
counts the other runs' turns too). A run's total is what its checkpoint carries (every earlier
invocation's time) plus this process's time since `train()` began: imports and argument parsing
before it (a few seconds, the same for every invocation) are not counted, and neither is anything
of another `train()` in the same process (tests and benchmarks train several runs in one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

try:
    import resource
except ImportError:  # Windows: os.times() has the same two counts, at the clock's coarser resolution
    resource = None


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, every thread's (torch's intra-op threads included).

    Child processes are not counted (the loop starts none; torch.compile's worker processes, on a
    GPU, are left out). Tests replace this function to make minutes pass without spending them.
    """
    if resource is not None:  # microseconds, where os.times() counts clock ticks of 10 ms
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    times = os.times()
    return times.user + times.system


def _now() -> float:
    return process_cpu_seconds()  # looked up when called, so a test's replacement is the one read


@dataclass
class CpuClock:
    """A run's CPU seconds: those carried from its checkpoint plus this process's since `started`."""

    carried: float = 0.0  # spent by the run's earlier invocations (and the process that wrote its checkpoint)
    started: float = field(default_factory=_now)  # this process's CPU time when the clock began

    def seconds(self) -> float:
        """The run's CPU seconds so far."""
        return self.carried + process_cpu_seconds() - self.started


def carried_seconds(checkpoint: dict) -> float:
    """The CPU seconds a checkpoint carries; 0 for one written before they were counted.

    0 rather than unknown: that run's earlier time was never measured, and a budget has to count
    from somewhere, so its `cpu_s` and --max-cpu-minutes count from the first resume that measures
    (a lower bound of what it spent; the loop warns when a budget is given).
    """
    value = checkpoint.get("cpu_s", 0.0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0.0
