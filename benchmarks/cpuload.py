"""Account for CPU time on the machine, to tell how much of it went to somebody else.

``Meter`` snapshots the machine's busy CPU time (/proc/stat: user + nice + system + irq +
softirq; steal and idle left out), the CPU time of a process tree, and that of this
process's reaped children (``wrk``, the (a) subprocess). Background = machine busy - the
tree - the children, in CPUs (1.0 = one core kept busy by processes not under test).
Interrupt time is counted as busy because the kernel charges loopback networking done in
a process's context to that process too; what is left over (interrupts on idle CPUs) makes
the figure a slight overestimate, never an underestimate.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from pinning import PROC, descendants

TICK = float(os.sysconf("SC_CLK_TCK"))


def machine_busy_s() -> float:
    fields = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / TICK


def tree_cpu_s(root: int | None) -> float:
    if root is None:
        return 0.0
    total = 0
    for pid in descendants(root):
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Snapshot:
    wall: float
    busy: float
    tree: float
    children: float


class Meter:
    """Measure background CPU use while the process tree ``root`` is under test."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root
        self.start = self._snap()

    def _snap(self) -> Snapshot:
        return Snapshot(time.monotonic(), machine_busy_s(), tree_cpu_s(self.root), children_cpu_s())

    def spent(self) -> tuple[float, float]:
        """CPU seconds since the start: (the tree under test, this process's reaped
        children, e.g. ``wrk``)."""
        end = self._snap()
        return end.tree - self.start.tree, end.children - self.start.children

    def background_cpus(self) -> float:
        end = self._snap()
        ours = (end.tree - self.start.tree) + (end.children - self.start.children)
        foreign = (end.busy - self.start.busy) - ours
        return max(0.0, foreign) / max(end.wall - self.start.wall, 1e-3)


def wait_for_quiet(threshold: float, max_wait: float, sample_s: float = 1.0) -> float:
    """Wait until the machine's busy CPU (in CPUs) drops below ``threshold``, at most
    ``max_wait`` seconds (0: do not wait); return the load of the last sample."""
    if max_wait <= 0:
        return 0.0
    deadline = time.monotonic() + max_wait
    while True:
        meter = Meter()
        time.sleep(sample_s)
        load = meter.background_cpus()
        if load < threshold or time.monotonic() >= deadline:
            return load
